//! Authorization: may this principal use this sandbox? Pure, and fail closed: a sandbox
//! without an owner label is refused to everyone.

use crate::discovery::Sandbox;
use crate::identity::Principal;

/// Why access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("sandbox has no owner label")]
    Unlabelled,
    #[error("principal does not own the sandbox")]
    NotOwner,
}

/// Checks ownership: the sandbox's `user_id` label must equal the principal, exactly.
pub fn check(principal: &Principal, sandbox: &Sandbox) -> Result<(), Denied> {
    match sandbox.owner.as_deref() {
        None | Some("") => Err(Denied::Unlabelled),
        Some(owner) if owner == principal.user_id => Ok(()),
        Some(_) => Err(Denied::NotOwner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::SandboxState;

    fn sandbox(owner: Option<&str>) -> Sandbox {
        Sandbox {
            conversation: "0".repeat(32),
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
        Principal {
            user_id: user_id.into(),
            email: None,
            email_verified: None,
        }
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
            ("anonymous", Some("anonymous"), Ok(())),
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
