//! The Docker container summary → sandbox conversion. Input: a mode line, then either a
//! container summary as Docker's JSON (mode `json`) or `key=value` label lines (any other mode;
//! a mode containing `n` passes `bridge` as the configured network, `h` sets host networking).
//!
//! Invariants: a sandbox's conversation is a well-formed id, its owner is never empty, its
//! name has no leading `/`, its ports are sorted and unique, a host-network container is at
//! loopback, and it serialises (the admin API and `routes` print it).

#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use bollard::models::{ContainerSummary, ContainerSummaryHostConfig};
use libfuzzer_sys::fuzz_target;
use sandport::discovery::labels::sandbox_from_summary;
use sandport::routing::ConversationId;

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = common::split_line(data);
    let network = mode.contains(&b'n').then_some("bridge");
    let summary = if mode == b"json" {
        match serde_json::from_slice::<ContainerSummary>(rest) {
            Ok(summary) => summary,
            Err(_) => return,
        }
    } else {
        let text = String::from_utf8_lossy(rest);
        let labels: HashMap<String, String> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        ContainerSummary {
            id: Some("fuzz".into()),
            names: Some(vec![format!("/{}", labels.len())]),
            labels: Some(labels),
            host_config: mode.contains(&b'h').then(|| ContainerSummaryHostConfig {
                network_mode: Some("host".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let Ok(sandbox) = sandbox_from_summary(&summary, network) else {
        return;
    };
    // the sandbox's id is its label, parsed
    let label = summary
        .labels
        .as_ref()
        .and_then(|labels| labels.get("conversation_id"));
    assert_eq!(
        label.map(String::as_str),
        Some(sandbox.conversation.as_str())
    );
    assert!(ConversationId::parse(sandbox.conversation.as_str()).is_some());
    assert_ne!(sandbox.owner.as_deref(), Some(""));
    assert!(!sandbox.name.starts_with('/'));
    assert_eq!(Some(&sandbox.container_id), summary.id.as_ref());
    assert!(sandbox
        .ports
        .windows(2)
        .all(|w| (w[0].private, w[0].public) < (w[1].private, w[1].public)));
    let host_mode = summary
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        == Some("host");
    if host_mode {
        assert_eq!(sandbox.address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    serde_json::to_string(&sandbox).expect("a sandbox serialises");
});
