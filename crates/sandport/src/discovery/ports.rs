//! Port choice inside a sandbox, without probing.
//!
//! The browser asks for port `requested`. The rules, in order:
//! 1. a system port (agent server 8000, VS Code 8001 by default) or a port the container
//!    itself exposes is used as requested;
//! 2. a published host port (`PublicPort`) is translated to its container port (`PrivatePort`),
//!    because the app tells the browser the host port of system services;
//! 3. anything else is used as requested (user apps listen on the number the browser sees).
//!
//! The single connect attempt of the upstream request is the only probe.

use super::Sandbox;

/// Chooses the container port for a requested port.
pub fn choose_port(sandbox: &Sandbox, requested: u16, system_ports: &[u16]) -> u16 {
    if system_ports.contains(&requested) || sandbox.ports.iter().any(|p| p.private == requested) {
        return requested;
    }
    sandbox
        .ports
        .iter()
        .find(|mapping| mapping.public == Some(requested))
        .map_or(requested, |mapping| mapping.private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{PortMapping, SandboxState};

    fn sandbox(ports: &[(u16, Option<u16>)]) -> Sandbox {
        Sandbox {
            conversation: crate::routing::ConversationId::parse(&"0".repeat(32)).unwrap(),
            owner: Some("u".into()),
            container_id: "c".into(),
            name: "n".into(),
            created: 0,
            state: SandboxState::Running,
            address: None,
            ports: ports
                .iter()
                .map(|&(private, public)| PortMapping { private, public })
                .collect(),
        }
    }

    #[test]
    fn rules_in_order() {
        let published = sandbox(&[(8000, Some(32768)), (8001, Some(32769)), (8000, None)]);
        let system = [8000, 8001];
        // Rule 1: system and exposed ports as requested.
        assert_eq!(choose_port(&published, 8000, &system), 8000);
        assert_eq!(choose_port(&published, 8001, &system), 8001);
        // Rule 2: a published host port becomes its container port.
        assert_eq!(choose_port(&published, 32768, &system), 8000);
        assert_eq!(choose_port(&published, 32769, &system), 8001);
        // Rule 3: user apps as requested.
        assert_eq!(choose_port(&published, 38013, &system), 38013);
        assert_eq!(choose_port(&published, 5000, &system), 5000);
        // A system port is never translated, even if it is also some host port.
        let clash = sandbox(&[(9999, Some(8000))]);
        assert_eq!(choose_port(&clash, 8000, &system), 8000);
        assert_eq!(choose_port(&clash, 8000, &[]), 9999);
    }
}
