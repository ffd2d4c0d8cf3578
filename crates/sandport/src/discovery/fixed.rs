//! The static backend: sandboxes listed in the configuration, for development and benchmarks
//! without Docker. They are always running and never change.

use super::{Event, Sandbox, SandboxState, Store};
use crate::config::StaticSandbox;

/// Loads the listed sandboxes into the store once.
pub fn load(store: &Store, sandboxes: &[StaticSandbox]) {
    store.apply(Event::Restarted(sandboxes.iter().map(sandbox_of).collect()));
}

fn sandbox_of(entry: &StaticSandbox) -> Sandbox {
    let name = entry
        .name
        .clone()
        .unwrap_or_else(|| format!("static-{}", entry.conversation_id));
    Sandbox {
        conversation: entry.conversation_id.clone(),
        owner: entry.user_id.clone().filter(|owner| !owner.is_empty()),
        container_id: name.clone(),
        name,
        created: 0,
        state: SandboxState::Running,
        address: Some(entry.address),
        ports: Vec::new(),
    }
}
