//! Discovery: where each sandbox lives, kept in an in-memory snapshot.
//!
//! A backend task (Docker, or a static list) is the only writer; request handlers read the
//! snapshot synchronously and never wait for, or call, the backend. When the backend loses
//! track (Docker unreachable, event stream broken) the store is marked stale, and after
//! `max_staleness` lookups fail with [`LookupError::Unavailable`] instead of routing on old data.

mod address_policy;
pub mod docker;
pub mod fixed;
pub mod labels;
mod lifetimes;
mod ports;
mod store;

use std::net::IpAddr;

pub use address_policy::{AddressPolicy, AddressRefusal};
pub use lifetimes::{InFlight, Lifetime};
pub use ports::choose_port;
pub use store::{Lookup, Store, Table};

use crate::routing::ConversationId;

/// The label that marks a container as a sandbox and names its conversation.
pub const CONVERSATION_LABEL: &str = "conversation_id";
/// The label naming the sandbox's owner.
pub const OWNER_LABEL: &str = "user_id";

/// One sandbox container as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sandbox {
    pub conversation: ConversationId,
    /// The `user_id` label; `None` when missing or empty.
    pub owner: Option<String>,
    pub container_id: String,
    pub name: String,
    /// Creation time (Unix seconds): the newest running container of a conversation wins.
    pub created: i64,
    pub state: SandboxState,
    pub address: Option<IpAddr>,
    pub ports: Vec<PortMapping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Running,
    Paused,
    Stopped,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Stopped => "stopped",
        }
    }
}

/// A published port: `public` on the host maps to `private` in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortMapping {
    pub private: u16,
    pub public: Option<u16>,
}

/// Why a lookup found no routable sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The backend has not synced yet, or lost track for longer than the staleness bound.
    #[error("discovery unavailable")]
    Unavailable,
    #[error("no sandbox for the conversation")]
    NotFound,
    #[error("sandbox is paused")]
    Paused,
    #[error("sandbox has no address")]
    NoAddress,
    /// Containers of different owners carry the conversation id: nobody is served until
    /// only one owner is left, rather than picking one.
    #[error("containers of different owners claim the conversation")]
    Contested,
}

/// What the backend tells the store.
#[derive(Debug, Clone)]
pub enum Event {
    /// A full resync: replace everything; anything not listed is gone.
    Restarted(Vec<Sandbox>),
    Upserted(Sandbox),
    Removed {
        container_id: String,
    },
}
