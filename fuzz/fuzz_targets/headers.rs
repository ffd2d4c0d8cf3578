//! The header rules on arbitrary header maps. Input: a flags line, then `name: value` lines.
//! Flag characters: `w` WebSocket, `k` keep the forwarded chain, `p` an app principal, `a` an
//! app assertion, `s` switching protocols (downstream).
//!
//! Invariants after `prepare_upstream`: no hop-by-hop header but the ones sandport sets itself
//! (`te: trailers`, and `connection`/`upgrade` for a WebSocket); no identity header in any
//! spelling (`_`, `.`, any case) except the ones sandport sets, with sandport's values; none of
//! sandport's cookies, read as bytes; no `Authorization` carrying sandport's own token; exactly
//! one `Host` (the public authority), one `X-Forwarded-For`, and no `Forwarded`. After
//! `prepare_downstream`, no hop-by-hop header but `connection`/`upgrade` on a 101.

#![no_main]

#[path = "common.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};

use http::header::{self, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sandport::identity::{self, Authenticator, Principal, Secret, TokenAuth, UserId};
use sandport::proxy::headers::{self as rules, Forwarding, Peer};

const SECRET: &str = "fuzz-secret-fuzz-secret";
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fuzz_target!(|data: &[u8]| {
    let (flags, lines) = common::split_line(data);
    let flag = |c: u8| flags.contains(&c);
    let original = common::header_map(lines);

    let auth = Authenticator::Token(TokenAuth {
        token: Secret::new(SECRET.to_owned()),
        user_id: UserId::parse("alice").expect("user id"),
    });
    let peer = Peer::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));
    let authority = HeaderValue::from_static("app.example.com");
    let principal = Principal::user(UserId::parse("alice").expect("user id"));
    let forwarding = Forwarding {
        peer: &peer,
        keep_forwarded_chain: flag(b'k'),
        external_scheme: sandport::routing::Scheme::Https,
        public_authority: &authority,
        websocket: flag(b'w'),
        app_principal: flag(b'p').then_some(&principal),
        app_assertion: flag(b'a').then_some("assertion"),
    };
    let mut upstream = original.clone();
    rules::prepare_upstream(&mut upstream, &forwarding, &auth);

    for name in HOP_BY_HOP {
        let values: Vec<&[u8]> = upstream
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let allowed: &[&[u8]] = match name {
            "te" => &[b"trailers"],
            "connection" if forwarding.websocket => &[b"upgrade"],
            "upgrade" if forwarding.websocket => &[b"websocket"],
            _ => &[],
        };
        assert!(values.len() <= 1, "{name}: {values:?}");
        assert!(
            values.iter().all(|v| allowed.contains(v)),
            "{name}: {values:?}"
        );
    }
    for (name, value) in &upstream {
        if !rules::is_identity_name(name.as_str()) {
            assert!(
                !reference_identity_name(name.as_str()),
                "{name} not seen as identity"
            );
            continue;
        }
        let expected = match name.as_str() {
            identity::USER_HEADER if forwarding.app_principal.is_some() => "alice",
            identity::EMAIL_HEADER if forwarding.app_principal.is_some() => "",
            identity::EMAIL_VERIFIED_HEADER if forwarding.app_principal.is_some() => "false",
            identity::ASSERTION_HEADER if forwarding.app_assertion.is_some() => "assertion",
            _ => panic!("identity header {name} reached the upstream"),
        };
        assert_eq!(value.as_bytes(), expected.as_bytes(), "{name}");
        assert_eq!(upstream.get_all(name).iter().count(), 1, "{name}");
    }
    for (name, _) in common::cookie_pairs(&upstream) {
        assert!(
            !common::is_own_cookie(&name),
            "own cookie {name:?} forwarded"
        );
    }
    for value in upstream.get_all(header::AUTHORIZATION) {
        assert!(!auth.is_own_authorization(value), "own token forwarded");
    }
    let single = |headers: &HeaderMap, name: &str| headers.get_all(name).iter().count();
    assert_eq!(single(&upstream, "host"), 1);
    assert_eq!(upstream.get(header::HOST), Some(&authority));
    assert_eq!(single(&upstream, "x-forwarded-for"), 1);
    assert_eq!(single(&upstream, "forwarded"), 0);
    if !forwarding.keep_forwarded_chain {
        assert_eq!(upstream.get("x-forwarded-for"), Some(&peer.header));
        assert_eq!(
            upstream.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
    }
    let _ = rules::is_websocket_upgrade(&original);

    let switching = flag(b's');
    let mut downstream = original.clone();
    rules::prepare_downstream(&mut downstream, switching);
    for name in HOP_BY_HOP {
        let count = downstream.get_all(name).iter().count();
        match name {
            "connection" | "upgrade" if switching && original.contains_key(header::UPGRADE) => {
                assert_eq!(count, 1, "{name}")
            }
            _ => assert_eq!(count, 0, "{name} reached the client"),
        }
    }
});

/// An independent spelling of "is an identity header": fold `_` and `.` to `-`, lowercase.
fn reference_identity_name(name: &str) -> bool {
    let folded: String = name
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            other => other.to_ascii_lowercase(),
        })
        .collect();
    folded.starts_with(identity::IDENTITY_HEADER_PREFIX)
        || folded == identity::ORIGIN_VERIFY_HEADER
        || folded == identity::ASSERTION_HEADER
}
