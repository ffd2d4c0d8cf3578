//! The runtime host parser, fed directly and through the OIDC `?host=` hand-off (the query is
//! percent-decoded first, so any UTF-8 reaches the parser). Input: `domain\nhost-or-query`; an
//! empty first line means `runtime.example.com`.
//!
//! Invariants: no panic on any UTF-8 (multi-byte characters included); a parsed host is ASCII,
//! names a well-formed conversation and a non-zero port, and round-trips through
//! `build_runtime_origin`; the domain compares case-insensitively.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sandport::routing::{self, ConversationId};

fuzz_target!(|data: &[u8]| {
    let (domain, rest) = common::split_line(data);
    let Ok(domain) = std::str::from_utf8(domain) else {
        return;
    };
    // The parser must not panic whatever the domain; the invariants hold for the domains the
    // configuration accepts (`validate_domain`, then lowercased).
    let domain = if domain.is_empty() {
        "runtime.example.com".to_owned()
    } else if sandport::config::is_domain_name(domain) {
        domain.to_ascii_lowercase()
    } else {
        if let Ok(host) = std::str::from_utf8(rest) {
            let _ = routing::parse_runtime_host(domain, host);
        }
        return;
    };
    let domain = domain.as_str();
    if let Ok(host) = std::str::from_utf8(rest) {
        check(domain, host);
        check(domain, &host.to_ascii_lowercase());
    }
    // The hand-off on the app host, `/_sandport/runtime-auth?host=…`, as the gateway reads it:
    // percent-decoded, the port cut at the last `:`, lowercased.
    for (name, value) in form_urlencoded::parse(rest) {
        if name == "host" {
            let runtime_name = value
                .rsplit_once(':')
                .map_or(&*value, |(name, _)| name)
                .to_ascii_lowercase();
            check(domain, &runtime_name);
        }
    }
});

fn check(domain: &str, host: &str) {
    let Some((conversation, port)) = routing::parse_runtime_host(domain, host) else {
        return;
    };
    assert!(host.is_ascii(), "{host:?}");
    assert!(ConversationId::parse(conversation.as_str()).is_some());
    assert_ne!(port, 0);
    assert!(host.contains(conversation.as_str()));
    assert_eq!(
        routing::parse_runtime_host(&domain.to_ascii_uppercase(), host),
        Some((conversation.clone(), port)),
        "domain case"
    );
    let origin = routing::build_runtime_origin(routing::Scheme::Http, domain, Some(8080), &conversation, port);
    let authority = origin.strip_prefix("http://").expect("scheme");
    let name = authority.strip_suffix(":8080").expect("port");
    assert_eq!(
        routing::parse_runtime_host(domain, name),
        Some((conversation, port)),
        "round trip through {origin:?}"
    );
}
