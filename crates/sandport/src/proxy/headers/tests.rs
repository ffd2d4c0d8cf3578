use super::*;
use crate::identity::{Secret, TokenAuth};

const TOKEN: &str = "local-token-local-token";

fn auth() -> Authenticator {
    Authenticator::Token(TokenAuth {
        token: Secret::new(TOKEN.into()),
        user_id: crate::identity::UserId::parse("local").unwrap(),
    })
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    headers
}

static PEER: std::sync::LazyLock<Peer> =
    std::sync::LazyLock::new(|| Peer::new("192.0.2.7".parse().unwrap()));
static PUBLIC_AUTHORITY: HeaderValue = HeaderValue::from_static("5000-x.runtime.example.com");

fn forwarding(websocket: bool) -> Forwarding<'static> {
    Forwarding {
        peer: &PEER,
        keep_forwarded_chain: false,
        external_scheme: crate::routing::Scheme::Https,
        public_authority: &PUBLIC_AUTHORITY,
        websocket,
        app_principal: None,
        app_assertion: None,
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[test]
fn identity_and_hop_by_hop_never_reach_a_sandbox() {
    let mut h = headers(&[
        ("x-cognito-user-id", "mallory"),
        ("X-Cognito-Email", "m@example.com"),
        ("x-cognito-anything", "x"),
        ("x-origin-verify", "edge-secret"),
        ("authorization", &format!("Bearer {TOKEN}")),
        (
            "cookie",
            &format!("app=1; sandport_token={TOKEN}; id_token=a.b.c"),
        ),
        (
            "cookie",
            "refresh_token=r; sandport_runtime=s; sandport_login=l",
        ),
        ("x-sandport-identity", "forged"),
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "h2c"),
        ("transfer-encoding", "chunked"),
        ("proxy-authorization", "Basic x"),
        ("x-forwarded-for", "203.0.113.9"),
        ("accept", "*/*"),
    ]);
    prepare_upstream(&mut h, &forwarding(false), &auth());
    for gone in [
        "x-cognito-user-id",
        "x-cognito-email",
        "x-cognito-anything",
        "x-origin-verify",
        "x-sandport-identity",
        "authorization",
        "connection",
        "x-secret-hop",
        "keep-alive",
        "upgrade",
        "transfer-encoding",
        "proxy-authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(values(&h, "cookie"), ["app=1"]);
    assert_eq!(values(&h, "x-forwarded-for"), ["192.0.2.7"]);
    assert_eq!(values(&h, "x-forwarded-proto"), ["https"]);
    assert_eq!(
        values(&h, "x-forwarded-host"),
        ["5000-x.runtime.example.com"]
    );
    assert_eq!(values(&h, "host"), ["5000-x.runtime.example.com"]);
    assert_eq!(values(&h, "accept"), ["*/*"]);
}

#[test]
fn foreign_authorization_is_the_app_s_business() {
    let mut h = headers(&[("authorization", "Bearer someone-elses-token")]);
    prepare_upstream(&mut h, &forwarding(false), &auth());
    assert_eq!(values(&h, "authorization"), ["Bearer someone-elses-token"]);
}

#[test]
fn upgrades_are_websocket_only() {
    assert!(is_websocket_upgrade(&headers(&[
        ("upgrade", "WebSocket"),
        ("connection", "keep-alive, Upgrade")
    ])));
    assert!(!is_websocket_upgrade(&headers(&[
        ("upgrade", "h2c"),
        ("connection", "upgrade")
    ])));
    assert!(!is_websocket_upgrade(&headers(&[("upgrade", "websocket")])));
    let mut h = headers(&[
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "k"),
    ]);
    prepare_upstream(&mut h, &forwarding(true), &auth());
    assert_eq!(values(&h, "connection"), ["upgrade"]);
    assert_eq!(values(&h, "upgrade"), ["websocket"]);
    assert_eq!(values(&h, "sec-websocket-key"), ["k"]);
}

#[test]
fn the_app_gets_the_verified_identity_only() {
    let principal = Principal {
        user_id: crate::identity::UserId::parse("alice").unwrap(),
        email: Some("a@example.com".into()),
        email_verified: Some(true),
    };
    let mut h = headers(&[
        ("x-cognito-user-id", "mallory"),
        ("x-cognito-user-id", "eve"),
    ]);
    let mut f = forwarding(false);
    f.app_principal = Some(&principal);
    prepare_upstream(&mut h, &f, &auth());
    assert_eq!(values(&h, "x-cognito-user-id"), ["alice"]);
    assert_eq!(values(&h, "x-cognito-email"), ["a@example.com"]);
    assert_eq!(values(&h, "x-cognito-email-verified"), ["true"]);
}

#[test]
fn trusted_chains_are_extended() {
    let mut h = headers(&[
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
    ]);
    let mut f = forwarding(false);
    f.keep_forwarded_chain = true;
    f.external_scheme = crate::routing::Scheme::Http;
    prepare_upstream(&mut h, &f, &auth());
    assert_eq!(values(&h, "x-forwarded-for"), ["203.0.113.9, 192.0.2.7"]);
    assert_eq!(values(&h, "x-forwarded-proto"), ["https"]);
}

#[test]
fn downstream_drops_hop_by_hop_but_keeps_101_upgrade() {
    let mut h = headers(&[
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
        ("content-type", "text/plain"),
    ]);
    prepare_downstream(&mut h, false);
    assert!(h.get("transfer-encoding").is_none() && h.get("connection").is_none());
    assert_eq!(values(&h, "content-type"), ["text/plain"]);
    let mut h = headers(&[
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", "a"),
    ]);
    prepare_downstream(&mut h, true);
    assert_eq!(values(&h, "upgrade"), ["websocket"]);
    assert_eq!(values(&h, "sec-websocket-accept"), ["a"]);
}

#[test]
fn identity_names_spelled_with_underscores_or_dots_are_stripped() {
    let spellings = [
        "X_Cognito_User_Id",
        "X.Cognito.User.Id",
        "x_cognito_user_id",
        "X-Cognito_User.Id",
        "X_COGNITO_EMAIL",
        "x.cognito.email.verified",
        "X_Origin_Verify",
        "x.origin.verify",
        "X_Sandport_Identity",
        "x.sandport-identity",
    ];
    let pairs: Vec<(&str, &str)> = spellings
        .iter()
        .map(|name| (*name, "mallory"))
        .chain([("x-cognitoish", "kept"), ("x_origin", "kept")])
        .collect();
    let mut h = headers(&pairs);
    prepare_upstream(&mut h, &forwarding(false), &auth());
    for name in spellings {
        assert!(h.get(name).is_none(), "{name} was forwarded");
    }
    assert_eq!(values(&h, "x-cognitoish"), ["kept"]);
    assert_eq!(values(&h, "x_origin"), ["kept"]);
}

#[test]
fn identity_name_folding() {
    for name in [
        "x-cognito-user-id",
        "x_cognito_",
        "x.cognito.anything",
        "x-origin-verify",
        "x_origin_verify",
        "x-sandport-identity",
    ] {
        assert!(is_identity_name(name), "{name}");
    }
    for name in [
        "x-cognito",
        "x-origin-verify-2",
        "x-origin-verif",
        "xcognito-user-id",
        "x-sandport",
        "cookie",
    ] {
        assert!(!is_identity_name(name), "{name}");
    }
}

#[test]
fn h2c_settings_never_reach_an_upstream_even_unnamed() {
    let mut h = headers(&[
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
    ]);
    prepare_upstream(&mut h, &forwarding(false), &auth());
    assert!(h.get("http2-settings").is_none() && h.get("upgrade").is_none());
}

#[test]
fn only_one_chunked_coding_is_a_transfer_encoding_sandport_forwards() {
    assert!(is_plain_chunked_or_absent(&headers(&[])));
    for good in [
        &["chunked"][..],
        &["Chunked"],
        &[",chunked"],
        &["chunked, "],
    ] {
        let pairs: Vec<_> = good.iter().map(|v| ("transfer-encoding", *v)).collect();
        assert!(is_plain_chunked_or_absent(&headers(&pairs)), "{good:?}");
    }
    for bad in [
        &["gzip, chunked"][..],
        &["gzip", "chunked"],
        &["chunked", "chunked"],
        &["chunked, chunked"],
        &["identity"],
        &[","],
        &[""],
    ] {
        let pairs: Vec<_> = bad.iter().map(|v| ("transfer-encoding", *v)).collect();
        assert!(!is_plain_chunked_or_absent(&headers(&pairs)), "{bad:?}");
    }
}
