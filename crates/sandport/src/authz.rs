//! Authorization: may this principal use this sandbox? Pure, and fail closed: a sandbox
//! without an owner label, or labelled with a placeholder such as `anonymous` (see
//! [`identity::PLACEHOLDERS`](crate::identity::is_placeholder)), is refused to everyone.

use crate::discovery::Sandbox;
use crate::identity::{is_placeholder, Principal};

/// Why access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("sandbox has no owner label, or a placeholder one")]
    Unlabelled,
    #[error("principal does not own the sandbox")]
    NotOwner,
}

/// Checks ownership: the sandbox's `user_id` label must equal the principal, exactly.
pub fn check(principal: &Principal, sandbox: &Sandbox) -> Result<(), Denied> {
    match sandbox.owner.as_deref() {
        None => Err(Denied::Unlabelled),
        Some(owner) if is_placeholder(owner) => Err(Denied::Unlabelled),
        Some(owner) if principal.user_id == owner => Ok(()),
        Some(_) => Err(Denied::NotOwner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::SandboxState;
    use crate::identity::UserId;

    fn sandbox(owner: Option<&str>) -> Sandbox {
        Sandbox {
            conversation: crate::routing::ConversationId::parse(&"0".repeat(32)).unwrap(),
            owner: owner.map(str::to_owned),
            container_id: "c".into(),
            name: "n".into(),
            created: 0,
            state: SandboxState::Running,
            address: None,
            ports: Vec::new(),
        }
    }

    fn principal(user_id: &str) -> Principal {
        Principal::user(UserId::parse(user_id).unwrap())
    }

    #[test]
    fn table() {
        let cases = [
            ("alice", Some("alice"), Ok(())),
            ("alice", Some("bob"), Err(Denied::NotOwner)),
            ("alice", Some("Alice"), Err(Denied::NotOwner)),
            ("alice", Some("alice "), Err(Denied::NotOwner)),
            ("alice", None, Err(Denied::Unlabelled)),
            ("alice", Some(""), Err(Denied::Unlabelled)),
            ("alice", Some("anonymous"), Err(Denied::Unlabelled)),
            ("alice", Some(" "), Err(Denied::Unlabelled)),
            ("alice", Some("NULL"), Err(Denied::Unlabelled)),
            ("alice", Some("undefined"), Err(Denied::Unlabelled)),
            ("alice", Some("-"), Err(Denied::Unlabelled)),
        ];
        for (user, owner, expected) in cases {
            assert_eq!(
                check(&principal(user), &sandbox(owner)),
                expected,
                "{user} {owner:?}"
            );
        }
    }
}
