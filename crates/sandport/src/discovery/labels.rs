//! Docker container summaries → [`Sandbox`]: the label schema and the address choice.
//!
//! Pure. A container is a sandbox when its `conversation_id` label is 32 lowercase hex
//! characters; its owner is the `user_id` label (missing or empty means unowned, which
//! authorization refuses). The address is the configured network's IP; else the first
//! non-empty IP of the networks sorted by name; a container on the host network is reached
//! on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};

use super::{PortMapping, Sandbox, SandboxState, CONVERSATION_LABEL, OWNER_LABEL};
use crate::routing::ConversationId;

/// Why a listed container is not a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("container has no id")]
    NoId,
    #[error("no conversation_id label")]
    NoConversationLabel,
    #[error("conversation_id label is not 32 lowercase hex characters")]
    MalformedConversation,
}

/// Converts one container summary.
pub fn sandbox_from_summary(
    summary: &ContainerSummary,
    network: Option<&str>,
) -> Result<Sandbox, Ignored> {
    let container_id = summary.id.clone().ok_or(Ignored::NoId)?;
    let labels = summary.labels.as_ref();
    let label = |name: &str| labels.and_then(|labels| labels.get(name));
    let conversation = label(CONVERSATION_LABEL).ok_or(Ignored::NoConversationLabel)?;
    let conversation = ConversationId::parse(conversation).ok_or(Ignored::MalformedConversation)?;
    let owner = label(OWNER_LABEL)
        .filter(|owner| !owner.is_empty())
        .cloned();
    let name = summary
        .names
        .as_ref()
        .and_then(|names| names.first())
        .map(|name| name.trim_start_matches('/').to_owned())
        .unwrap_or_default();
    Ok(Sandbox {
        conversation,
        owner,
        name,
        created: summary.created.unwrap_or(0),
        state: state_of(summary.state),
        address: address_of(summary, network),
        ports: ports_of(summary),
        container_id,
    })
}

fn state_of(state: Option<ContainerSummaryStateEnum>) -> SandboxState {
    match state {
        Some(ContainerSummaryStateEnum::RUNNING) => SandboxState::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => SandboxState::Paused,
        _ => SandboxState::Stopped,
    }
}

fn address_of(summary: &ContainerSummary, network: Option<&str>) -> Option<IpAddr> {
    let host_mode = summary
        .host_config
        .as_ref()
        .and_then(|host_config| host_config.network_mode.as_deref())
        == Some("host");
    if host_mode {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let networks = summary.network_settings.as_ref()?.networks.as_ref()?;
    let ip_of = |name: &str| {
        networks
            .get(name)
            .and_then(|endpoint| endpoint.ip_address.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
    };
    if let Some(ip) = network.and_then(ip_of) {
        return Some(ip);
    }
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names.into_iter().find_map(|name| ip_of(name))
}

fn ports_of(summary: &ContainerSummary) -> Vec<PortMapping> {
    let mut ports: Vec<PortMapping> = summary
        .ports
        .iter()
        .flatten()
        .map(|port| PortMapping {
            private: port.private_port,
            public: port.public_port,
        })
        .collect();
    ports.sort_by_key(|p| (p.private, p.public));
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerSummaryHostConfig, ContainerSummaryNetworkSettings, EndpointSettings, PortSummary,
    };
    use std::collections::HashMap;

    const CID: &str = "7c15e423fbd44f8f8bf483a481daa4d9";

    fn summary(labels: &[(&str, &str)], networks: &[(&str, &str)]) -> ContainerSummary {
        ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/oh-agent-server-x".into()]),
            created: Some(42),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(
                    networks
                        .iter()
                        .map(|(name, ip)| {
                            (
                                (*name).to_owned(),
                                EndpointSettings {
                                    ip_address: Some((*ip).to_owned()),
                                    ..Default::default()
                                },
                            )
                        })
                        .collect::<HashMap<_, _>>(),
                ),
            }),
            ports: Some(vec![PortSummary {
                private_port: 8000,
                public_port: Some(32768),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn labels_make_a_sandbox() {
        let s = summary(
            &[("conversation_id", CID), ("user_id", "alice")],
            &[("bridge", "172.17.0.5")],
        );
        let sandbox = sandbox_from_summary(&s, None).unwrap();
        assert_eq!(sandbox.conversation.as_str(), CID);
        assert_eq!(sandbox.owner.as_deref(), Some("alice"));
        assert_eq!(sandbox.name, "oh-agent-server-x");
        assert_eq!(sandbox.address, Some("172.17.0.5".parse().unwrap()));
        assert_eq!(
            sandbox.ports,
            vec![PortMapping {
                private: 8000,
                public: Some(32768)
            }]
        );
    }

    #[test]
    fn empty_owner_is_unowned_and_bad_ids_are_ignored() {
        let s = summary(&[("conversation_id", CID), ("user_id", "")], &[]);
        assert_eq!(sandbox_from_summary(&s, None).unwrap().owner, None);
        let s = summary(&[("conversation_id", &CID.to_uppercase())], &[]);
        assert_eq!(
            sandbox_from_summary(&s, None),
            Err(Ignored::MalformedConversation)
        );
        let s = summary(&[("user_id", "alice")], &[]);
        assert_eq!(
            sandbox_from_summary(&s, None),
            Err(Ignored::NoConversationLabel)
        );
    }

    #[test]
    fn address_choice_is_deterministic() {
        let networks = [("zeta", "10.0.0.9"), ("alpha", ""), ("beta", "10.0.0.2")];
        let s = summary(&[("conversation_id", CID)], &networks);
        let pick = |network| sandbox_from_summary(&s, network).unwrap().address;
        assert_eq!(pick(None), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(pick(Some("zeta")), Some("10.0.0.9".parse().unwrap()));
        assert_eq!(pick(Some("missing")), Some("10.0.0.2".parse().unwrap()));

        let mut host = summary(&[("conversation_id", CID)], &[("host", "")]);
        host.host_config = Some(ContainerSummaryHostConfig {
            network_mode: Some("host".into()),
            ..Default::default()
        });
        assert_eq!(
            sandbox_from_summary(&host, None).unwrap().address,
            Some("127.0.0.1".parse().unwrap())
        );
        let none = summary(&[("conversation_id", CID)], &[("alpha", "")]);
        assert_eq!(sandbox_from_summary(&none, None).unwrap().address, None);
    }
}
