//! The snapshot of sandboxes and its freshness. Pure apart from the atomic swap and the
//! lifetime tokens it cancels: time is passed in, and nothing here talks to a backend.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::lifetimes::{Lifetime, Lifetimes};
use super::{Event, LookupError, Sandbox, SandboxState};
use crate::routing::ConversationId;

/// An immutable table of sandboxes, indexed by container and by conversation.
#[derive(Debug, Default)]
pub struct Table {
    containers: HashMap<String, Arc<Sandbox>>,
    /// The container that serves each conversation: the newest running one, else the newest.
    by_conversation: HashMap<ConversationId, Arc<Sandbox>>,
    /// Conversations whose containers name more than one owner (or an owner and none).
    contested: HashSet<ConversationId>,
}

impl Table {
    fn from_containers(containers: HashMap<String, Arc<Sandbox>>) -> Self {
        let mut by_conversation: HashMap<ConversationId, Arc<Sandbox>> = HashMap::new();
        for sandbox in containers.values() {
            match by_conversation.get(&sandbox.conversation) {
                Some(current) if !serves_before(sandbox, current) => {}
                _ => {
                    by_conversation.insert(sandbox.conversation.clone(), Arc::clone(sandbox));
                }
            }
        }
        let mut owners: HashMap<&ConversationId, HashSet<Option<&str>>> = HashMap::new();
        for sandbox in containers.values() {
            owners
                .entry(&sandbox.conversation)
                .or_default()
                .insert(sandbox.owner.as_deref());
        }
        let contested = owners
            .into_iter()
            .filter(|(_, owners)| owners.len() > 1)
            .map(|(conversation, _)| conversation.clone())
            .collect();
        Self {
            containers,
            by_conversation,
            contested,
        }
    }

    /// Conversations claimed by containers of different owners, sorted.
    pub fn contested(&self) -> Vec<ConversationId> {
        let mut contested: Vec<ConversationId> = self.contested.iter().cloned().collect();
        contested.sort();
        contested
    }

    /// Applies one event, returning the new table.
    pub fn apply(&self, event: Event) -> Self {
        let containers = match event {
            Event::Restarted(sandboxes) => sandboxes
                .into_iter()
                .map(|s| (s.container_id.clone(), Arc::new(s)))
                .collect(),
            Event::Upserted(sandbox) => {
                let mut containers = self.containers.clone();
                containers.insert(sandbox.container_id.clone(), Arc::new(sandbox));
                containers
            }
            Event::Removed { container_id } => {
                let mut containers = self.containers.clone();
                containers.remove(&container_id);
                containers
            }
        };
        Self::from_containers(containers)
    }

    /// Every sandbox, sorted by conversation then newest first.
    pub fn sandboxes(&self) -> Vec<Arc<Sandbox>> {
        let mut all: Vec<_> = self.containers.values().cloned().collect();
        all.sort_by(|a, b| {
            (&a.conversation, -a.created, a.container_id.as_str()).cmp(&(
                &b.conversation,
                -b.created,
                b.container_id.as_str(),
            ))
        });
        all
    }

    /// Conversations served by more than one running container.
    pub fn duplicates(&self) -> Vec<ConversationId> {
        let mut running: HashMap<&ConversationId, usize> = HashMap::new();
        for sandbox in self.containers.values() {
            if sandbox.state == SandboxState::Running {
                *running.entry(&sandbox.conversation).or_default() += 1;
            }
        }
        let mut duplicates: Vec<ConversationId> = running
            .into_iter()
            .filter(|(_, count)| *count > 1)
            .map(|(conversation, _)| conversation.clone())
            .collect();
        duplicates.sort();
        duplicates
    }

    /// The sandbox that serves a conversation, if it can take traffic.
    pub fn lookup(&self, conversation: &ConversationId) -> Result<Arc<Sandbox>, LookupError> {
        if self.contested.contains(conversation) {
            return Err(LookupError::Contested);
        }
        let sandbox = self
            .by_conversation
            .get(conversation)
            .ok_or(LookupError::NotFound)?;
        match sandbox.state {
            SandboxState::Running if sandbox.address.is_some() => Ok(Arc::clone(sandbox)),
            SandboxState::Running => Err(LookupError::NoAddress),
            SandboxState::Paused => Err(LookupError::Paused),
            SandboxState::Stopped => Err(LookupError::NotFound),
        }
    }

    pub fn get(&self, container_id: &str) -> Option<Arc<Sandbox>> {
        self.containers.get(container_id).cloned()
    }

    pub fn contains(&self, container_id: &str) -> bool {
        self.containers.contains_key(container_id)
    }

    pub fn len(&self) -> usize {
        self.containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }
}

/// Whether `a` should serve its conversation rather than `b`: running beats paused beats
/// stopped; then the newest; then the container id, so the choice never depends on order.
fn serves_before(a: &Sandbox, b: &Sandbox) -> bool {
    let rank = |s: &Sandbox| match s.state {
        SandboxState::Running => 2,
        SandboxState::Paused => 1,
        SandboxState::Stopped => 0,
    };
    (rank(a), a.created, a.container_id.as_str()) > (rank(b), b.created, b.container_id.as_str())
}

/// The shared store: one writer (the backend task), many readers (request handlers).
#[derive(Debug)]
pub struct Store {
    table: ArcSwap<Table>,
    synced: AtomicBool,
    /// Milliseconds since `epoch` when the backend lost track; 0 while fresh.
    stale_since_ms: AtomicU64,
    epoch: Instant,
    max_staleness: Duration,
    lifetimes: Lifetimes,
}

/// The result of a lookup.
pub type Lookup = Result<Arc<Sandbox>, LookupError>;

impl Store {
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            synced: AtomicBool::new(false),
            stale_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            max_staleness,
            lifetimes: Lifetimes::default(),
        }
    }

    /// Applies an event. A `Restarted` also marks the store synced and fresh.
    pub fn apply(&self, event: Event) {
        let restarted = matches!(event, Event::Restarted(_));
        let next = self.table.load().apply(event);
        for conversation in next.duplicates() {
            tracing::warn!(
                conversation = %conversation,
                "several running containers carry one conversation id; the newest wins"
            );
        }
        let contested = next.contested();
        if contested != self.table.load().contested() {
            for conversation in &contested {
                tracing::error!(
                    conversation = %conversation,
                    "containers of different owners carry one conversation id; refusing it until one is left"
                );
            }
        }
        metrics::gauge!(crate::metrics::CONTESTED_CONVERSATIONS).set(contested.len() as f64);
        let next = Arc::new(next);
        // Swapped in first: a token handed out from now on sees the new table.
        self.table.store(Arc::clone(&next));
        self.lifetimes.retain_serving(&next);
        if restarted {
            self.synced.store(true, Ordering::Release);
            self.mark_fresh();
        }
    }

    pub fn mark_fresh(&self) {
        self.stale_since_ms.store(0, Ordering::Release);
    }

    /// Records that the backend lost track at `now` (the first loss counts).
    pub fn mark_stale(&self, now: Instant) {
        let since = self.millis(now).max(1);
        let _ = self
            .stale_since_ms
            .compare_exchange(0, since, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether lookups may be answered at `now`.
    pub fn is_usable(&self, now: Instant) -> bool {
        if !self.synced.load(Ordering::Acquire) {
            return false;
        }
        match self.stale_since_ms.load(Ordering::Acquire) {
            0 => true,
            since => {
                self.millis(now).saturating_sub(since)
                    <= u64::try_from(self.max_staleness.as_millis()).unwrap_or(u64::MAX)
            }
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn lookup(&self, conversation: &ConversationId, now: Instant) -> Lookup {
        if !self.is_usable(now) {
            return Err(LookupError::Unavailable);
        }
        self.table.load().lookup(conversation)
    }

    /// The lifetime of `sandbox` at `address`: its token is cancelled as soon as it stops
    /// serving there (stopped, removed, readdressed), so streams to it end then instead of
    /// waiting on a vanished peer; and it counts the exchanges in flight to it.
    pub fn lifetime(&self, sandbox: &Sandbox, address: std::net::IpAddr) -> Lifetime {
        self.lifetimes
            .token(|| self.table.load_full(), sandbox, address)
    }

    pub fn snapshot(&self) -> Arc<Table> {
        self.table.load_full()
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::SandboxState::{Paused, Running, Stopped};

    /// A conversation id from a short hex name ("c1" is c1000…0).
    fn cid(name: &str) -> ConversationId {
        ConversationId::parse(&format!("{name:0<32}")).unwrap()
    }

    fn sandbox(id: &str, conversation: &str, created: i64, state: SandboxState) -> Sandbox {
        Sandbox {
            conversation: cid(conversation),
            owner: Some("alice".into()),
            container_id: id.into(),
            name: format!("name-{id}"),
            created,
            state,
            address: Some("10.0.0.1".parse().unwrap()),
            ports: Vec::new(),
        }
    }

    #[test]
    fn newest_running_container_wins() {
        let table = Table::default().apply(Event::Restarted(vec![
            sandbox("a", "c1", 10, Running),
            sandbox("b", "c1", 20, Running),
            sandbox("c", "c1", 30, Stopped),
        ]));
        assert_eq!(table.lookup(&cid("c1")).unwrap().container_id, "b");
        assert_eq!(table.duplicates(), vec![cid("c1")]);
    }

    #[test]
    fn containers_of_different_owners_refuse_the_conversation_until_one_is_left() {
        let mut squatter = sandbox("b", "c1", 20, Running);
        squatter.owner = Some("bob".into());
        let table = Table::default().apply(Event::Restarted(vec![
            sandbox("a", "c1", 10, Running),
            squatter,
            sandbox("x", "c2", 10, Running),
        ]));
        assert_eq!(table.lookup(&cid("c1")), Err(LookupError::Contested));
        assert_eq!(table.contested(), vec![cid("c1")]);
        assert!(table.lookup(&cid("c2")).is_ok());
        // an unlabelled container with the id contests it too
        let mut unlabelled = sandbox("u", "c2", 30, Stopped);
        unlabelled.owner = None;
        let table = table.apply(Event::Upserted(unlabelled));
        assert_eq!(table.lookup(&cid("c2")), Err(LookupError::Contested));
        let table = table.apply(Event::Removed {
            container_id: "b".into(),
        });
        assert_eq!(table.lookup(&cid("c1")).unwrap().container_id, "a");
    }

    #[test]
    fn events_update_the_table() {
        let table = Table::default().apply(Event::Restarted(vec![sandbox("a", "c1", 1, Running)]));
        let table = table.apply(Event::Upserted(sandbox("a", "c1", 1, Paused)));
        assert_eq!(table.lookup(&cid("c1")), Err(LookupError::Paused));
        let table = table.apply(Event::Upserted(sandbox("a", "c1", 1, Stopped)));
        assert_eq!(table.lookup(&cid("c1")), Err(LookupError::NotFound));
        let table = table.apply(Event::Removed {
            container_id: "a".into(),
        });
        assert!(table.is_empty());
        assert_eq!(table.lookup(&cid("c1")), Err(LookupError::NotFound));
    }

    #[test]
    fn running_without_address_is_an_error() {
        let mut no_ip = sandbox("a", "c1", 1, Running);
        no_ip.address = None;
        let table = Table::default().apply(Event::Restarted(vec![no_ip]));
        assert_eq!(table.lookup(&cid("c1")), Err(LookupError::NoAddress));
    }

    #[test]
    fn staleness_is_bounded() {
        let store = Store::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(store.lookup(&cid("c1"), t0), Err(LookupError::Unavailable));
        store.apply(Event::Restarted(vec![sandbox("a", "c1", 1, Running)]));
        assert!(store.lookup(&cid("c1"), t0).is_ok());
        store.mark_stale(t0 + Duration::from_secs(1));
        assert!(store
            .lookup(&cid("c1"), t0 + Duration::from_secs(5))
            .is_ok());
        assert_eq!(
            store.lookup(&cid("c1"), t0 + Duration::from_secs(7)),
            Err(LookupError::Unavailable)
        );
        // A later loss does not move the first one forward.
        store.mark_stale(t0 + Duration::from_secs(6));
        assert_eq!(
            store.lookup(&cid("c1"), t0 + Duration::from_secs(7)),
            Err(LookupError::Unavailable)
        );
        store.apply(Event::Restarted(vec![]));
        assert_eq!(
            store.lookup(&cid("c1"), t0 + Duration::from_secs(7)),
            Err(LookupError::NotFound)
        );
    }
}
