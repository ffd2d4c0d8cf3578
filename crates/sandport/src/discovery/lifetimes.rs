//! The lifetime of each container address that traffic is flowing to.
//!
//! A killed container sends no FIN and no RST: its network namespace is gone, and a stream
//! to it would wait forever. Discovery sees the `die` (or the removal, or a new address)
//! at once, so every stream takes the token of the address it was sent to, and the store
//! cancels the token the moment that address stops serving.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use super::{Sandbox, SandboxState, Table};

/// One container at one address.
type Key = (String, IpAddr);

/// One container address while it serves: the token that ends its streams, and how many
/// exchanges (requests, streams, tunnels) are in flight to it.
#[derive(Debug, Clone, Default)]
pub struct Lifetime {
    pub ended: CancellationToken,
    in_flight: Arc<AtomicUsize>,
}

impl Lifetime {
    fn ended() -> Self {
        let lifetime = Self::default();
        lifetime.ended.cancel();
        lifetime
    }

    /// Admits one more exchange unless `limit` are already in flight; the exchange counts
    /// until the returned guard is dropped.
    pub fn admit(&self, limit: usize) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(Arc::clone(&self.in_flight));
        (before < limit).then_some(guard)
    }
}

/// One exchange in flight to a sandbox; counted until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lifetimes of the container addresses that have had traffic, until each stops serving.
#[derive(Debug, Default)]
pub struct Lifetimes {
    tokens: Mutex<HashMap<Key, Lifetime>>,
}

impl Lifetimes {
    /// The lifetime of `sandbox` at `address`, whose token is cancelled when it stops serving;
    /// cancelled if `current` (the store's table, read under the lock) no longer serves it.
    /// The store swaps in a new table before it calls [`Self::retain_serving`], so a token
    /// handed out here is either cancelled at once or seen by the next retain.
    pub fn token(
        &self,
        current: impl FnOnce() -> std::sync::Arc<Table>,
        sandbox: &Sandbox,
        address: IpAddr,
    ) -> Lifetime {
        let mut tokens = self.tokens();
        if !serves(&current(), &sandbox.container_id, address) {
            return Lifetime::ended();
        }
        tokens
            .entry((sandbox.container_id.clone(), address))
            .or_default()
            .clone()
    }

    /// Cancels the token of every container address `table` no longer serves: the container
    /// is gone, stopped, or has another address. A paused container keeps its connections.
    pub fn retain_serving(&self, table: &Table) {
        self.tokens().retain(|(container_id, address), lifetime| {
            let serving = serves(table, container_id, *address);
            if !serving {
                lifetime.ended.cancel();
            }
            serving
        });
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Lifetime>> {
        // A map of tokens holds no invariant a panic could break halfway.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn serves(table: &Table, container_id: &str, address: IpAddr) -> bool {
    table.get(container_id).is_some_and(|sandbox| {
        sandbox.address == Some(address) && sandbox.state != SandboxState::Stopped
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::discovery::Event;
    use crate::routing::ConversationId;

    fn sandbox(container_id: &str, address: [u8; 4], state: SandboxState) -> Sandbox {
        Sandbox {
            conversation: ConversationId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            owner: Some("alice".into()),
            container_id: container_id.into(),
            name: container_id.into(),
            created: 1,
            state,
            address: Some(IpAddr::from(address)),
            ports: Vec::new(),
        }
    }

    #[test]
    fn tokens_end_when_their_address_stops_serving() {
        let lifetimes = Lifetimes::default();
        let running = sandbox("c1", [10, 0, 0, 2], SandboxState::Running);
        let table = Table::default().apply(Event::Upserted(running.clone()));
        let table = Arc::new(table);
        let token = lifetimes
            .token(|| Arc::clone(&table), &running, running.address.unwrap())
            .ended;
        lifetimes.retain_serving(&table);
        assert!(!token.is_cancelled(), "still running at the same address");

        let paused = sandbox("c1", [10, 0, 0, 2], SandboxState::Paused);
        lifetimes.retain_serving(&table.apply(Event::Upserted(paused)));
        assert!(
            !token.is_cancelled(),
            "a paused container keeps its connections"
        );

        let moved = sandbox("c1", [10, 0, 0, 3], SandboxState::Running);
        lifetimes.retain_serving(&table.apply(Event::Upserted(moved)));
        assert!(
            token.is_cancelled(),
            "a new address ends the old address's streams"
        );
    }

    #[test]
    fn a_stopped_or_removed_container_ends_its_streams() {
        for next in [
            Event::Upserted(sandbox("c1", [10, 0, 0, 2], SandboxState::Stopped)),
            Event::Removed {
                container_id: "c1".into(),
            },
        ] {
            let lifetimes = Lifetimes::default();
            let running = sandbox("c1", [10, 0, 0, 2], SandboxState::Running);
            let table = Table::default().apply(Event::Upserted(running.clone()));
            let current = Arc::new(table.apply(Event::Upserted(running.clone())));
            let token = lifetimes
                .token(|| Arc::clone(&current), &running, running.address.unwrap())
                .ended;
            lifetimes.retain_serving(&table.apply(next));
            assert!(token.is_cancelled());
            assert!(lifetimes.tokens().is_empty(), "the ended entry is dropped");
        }
    }

    #[test]
    fn exchanges_past_the_limit_are_refused_until_one_ends() {
        let lifetime = Lifetime::default();
        let first = lifetime.admit(2).unwrap();
        let _second = lifetime.admit(2).unwrap();
        assert!(lifetime.admit(2).is_none(), "a third is refused");
        drop(first);
        assert!(lifetime.admit(2).is_some(), "a slot freed is taken again");
    }

    #[test]
    fn a_token_asked_for_after_the_address_ended_is_already_cancelled() {
        let lifetimes = Lifetimes::default();
        let running = sandbox("c1", [10, 0, 0, 2], SandboxState::Running);
        let gone = Arc::new(Table::default());
        let token = lifetimes
            .token(|| Arc::clone(&gone), &running, running.address.unwrap())
            .ended;
        assert!(token.is_cancelled());
        assert!(lifetimes.tokens().is_empty());
    }
}
