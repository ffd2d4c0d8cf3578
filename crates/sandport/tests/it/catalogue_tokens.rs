//! The hardening catalogue's JWT cases (group F) against the real binary in OIDC mode: `alg`
//! spellings, unknown-kid floods, embedded key headers, time claims, issuers, structurally
//! broken and tampered tokens. Each test holds a table of inputs; every hostile row gets 401
//! (or, for bytes no header may hold, the listener's 400) and a valid control gets 200.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::catalogue_identity::{app_host, ConnectCounter, OidcWorld, ALICE, BOB};
use crate::harness::{connect, get};

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// The three segments of a compact JWT.
fn segments(token: &str) -> (String, String, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT: {token}");
    (parts[0].into(), parts[1].into(), parts[2].into())
}

/// `token` as a bearer and as the `id_token` cookie: both must get 401, and the app (which
/// echoes what it receives) is never reached.
async fn assert_refused(w: &OidcWorld, name: &str, token: &str) {
    let bearer = format!("Bearer {token}");
    let cookie = format!("id_token={token}");
    for (header, value) in [("authorization", &bearer), ("cookie", &cookie)] {
        let started = Instant::now();
        let reply = w.api(&[(header, value.as_str())]).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{name} as {header}: {}",
            reply.text()
        );
        assert!(
            !reply.text().contains("\"headers\""),
            "{name}: the app answered"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name} as {header} took {:?}",
            started.elapsed()
        );
    }
}

/// `token` as a bearer is accepted as alice, and the token itself never reaches the app.
async fn assert_accepted(w: &OidcWorld, name: &str, token: &str) {
    let bearer = format!("Bearer {token}");
    let reply = w.api(&[("authorization", &bearer)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text());
    let seen = reply.json()["headers"].to_string();
    assert!(
        seen.contains(r#"["x-cognito-user-id","alice"]"#),
        "{name}: {seen}"
    );
    assert!(!seen.contains(token), "{name}: the token reached the app");
}

#[tokio::test]
async fn catalogue_61_alg_none_in_any_case_and_unsigned_tokens_are_refused() {
    let w = OidcWorld::start().await;
    let valid = w.token(ALICE);
    let (_, payload, signature) = segments(&valid);
    let kid = w.provider.current_kid();
    let mut table = Vec::new();
    for alg in ["none", "None", "nOnE", "NONE"] {
        let header = b64_json(&json!({"alg": alg, "typ": "JWT", "kid": kid}));
        table.push((
            format!("{alg}, empty signature"),
            format!("{header}.{payload}."),
        ));
        table.push((
            format!("{alg}, no signature segment"),
            format!("{header}.{payload}"),
        ));
        table.push((
            format!("{alg}, a valid token's signature"),
            format!("{header}.{payload}.{signature}"),
        ));
    }
    let (header, _, _) = segments(&valid);
    table.push((
        "RS256 without the signature segment".into(),
        format!("{header}.{payload}"),
    ));
    for (name, token) in &table {
        assert_refused(&w, name, token).await;
    }
    assert_accepted(&w, "the valid token", &valid).await;
}

/// One request per token over a kept-alive connection; the statuses in order.
async fn statuses_over_one_connection(
    addr: std::net::SocketAddr,
    host: String,
    tokens: Vec<String>,
) -> Vec<(StatusCode, Duration)> {
    let mut sender = connect::<Full<Bytes>>(addr).await;
    let mut statuses = Vec::with_capacity(tokens.len());
    for token in tokens {
        let request = get(&host, "/api/x")
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let started = Instant::now();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        statuses.push((status, started.elapsed()));
    }
    statuses
}

#[tokio::test]
async fn catalogue_63_a_flood_of_unknown_kids_makes_only_rate_limited_fetches() {
    let w = OidcWorld::start().await;
    // 1,000 well-formed kids no JWKS holds (the signature is never checked for those).
    let (_, payload, signature) = segments(&w.token(ALICE));
    let flood: Vec<String> = (0..1000)
        .map(|_| {
            let kid = STANDARD.encode(rand::random::<[u8; 32]>());
            let header = b64_json(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}));
            format!("{header}.{payload}.{signature}")
        })
        .collect();
    // Tokens of the cached key, each new to the gateway, sent while the flood runs.
    let valid: Vec<String> = (0..20).map(|_| w.token(ALICE)).collect();
    let before = w.provider.jwks_fetches();
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for chunk in flood.chunks(100) {
        let host = app_host(&w.gateway);
        senders.spawn(statuses_over_one_connection(
            w.gateway.addr,
            host,
            chunk.to_vec(),
        ));
    }
    let host = app_host(&w.gateway);
    let valid_replies = tokio::spawn(statuses_over_one_connection(w.gateway.addr, host, valid));
    let mut refused = 0;
    while let Some(statuses) = senders.join_next().await {
        for (status, _) in statuses.unwrap() {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            refused += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(refused, 1000);
    for (status, took) in valid_replies.await.unwrap() {
        assert_eq!(
            status,
            StatusCode::OK,
            "a cached-key token during the flood"
        );
        assert!(
            took < Duration::from_secs(2),
            "took {took:?} during the flood"
        );
    }
    // At most one fetch per 10 s (the first unknown kid may fetch at once).
    let fetches = w.provider.jwks_fetches() - before;
    let allowed = 1 + elapsed.as_secs() / 10;
    assert!(
        (1..=allowed).contains(&fetches),
        "{fetches} JWKS fetches for the flood in {elapsed:?}"
    );
}

/// Valid claims for alice, signed by a key the test makes itself, with a self-signed
/// certificate for that key in `x5c` and the rest of `header` as given.
fn signed_with_own_certificate(claims: &Value, header: Value) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["attacker.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut header = header;
    header["x5c"] = json!([STANDARD.encode(certificate.der())]);
    let message = format!("{}.{}", b64_json(&header), b64_json(claims));
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap();
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &encoding,
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn catalogue_65_embedded_key_headers_are_ignored_and_never_fetched() {
    let w = OidcWorld::start().await;
    let sentinel = ConnectCounter::start().await;
    let url = format!("http://{}/jwks.json", sentinel.addr);
    let claims = w.provider.standard_claims(ALICE);
    let kid = w.provider.current_kid();
    let jwk = w.provider.attacker_jwk();
    let unknown_kid = STANDARD.encode(rand::random::<[u8; 32]>());
    let attacker = |header: Value| w.provider.mint_with_attacker_key(header, claims.clone());
    let refused = [
        (
            "jku",
            attacker(json!({"alg": "RS256", "kid": kid, "jku": url})),
        ),
        (
            "x5u",
            attacker(json!({"alg": "RS256", "kid": kid, "x5u": url})),
        ),
        (
            "jwk",
            attacker(json!({"alg": "RS256", "kid": kid, "jwk": jwk})),
        ),
        (
            "jwk without kid",
            attacker(json!({"alg": "RS256", "jwk": jwk})),
        ),
        (
            "jku and jwk, unknown kid",
            attacker(json!({"alg": "RS256", "kid": unknown_kid, "jku": url, "jwk": jwk})),
        ),
        (
            "x5c",
            signed_with_own_certificate(&claims, json!({"alg": "RS256", "kid": kid})),
        ),
        (
            "x5c and x5u, no kid",
            signed_with_own_certificate(&claims, json!({"alg": "RS256", "x5u": url})),
        ),
    ];
    for (name, token) in &refused {
        assert_refused(&w, name, token).await;
    }
    // Validly signed tokens carrying the same headers verify by their kid alone.
    let provider_signed = |header: Value| w.provider.mint_with_header(header, claims.clone());
    let accepted = [
        (
            "jku and x5u",
            provider_signed(json!({"alg": "RS256", "kid": kid, "jku": url, "x5u": url})),
        ),
        (
            "jwk",
            provider_signed(json!({"alg": "RS256", "kid": kid, "jwk": jwk})),
        ),
    ];
    for (name, token) in &accepted {
        assert_accepted(&w, name, token).await;
    }
    // Short and bounded: nothing may reach the sentinel, not even late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sentinel.accepted(), 0, "a key URL from a token was fetched");
}

/// Valid claims for alice with `edit` applied, signed by the provider.
fn mint_edited(w: &OidcWorld, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut claims = w.provider.standard_claims(ALICE);
    edit(claims.as_object_mut().unwrap());
    w.provider.mint(claims)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn catalogue_66_time_claims_are_checked_with_a_60_s_leeway() {
    let w = OidcWorld::start().await;
    let now = now_secs();
    let set = |name: &'static str, value: u64| {
        move |m: &mut serde_json::Map<String, Value>| {
            m.insert(name.into(), json!(value));
        }
    };
    let refused = [
        ("exp now-61 s", mint_edited(&w, set("exp", now - 61))),
        ("exp now-3600 s", mint_edited(&w, set("exp", now - 3600))),
        (
            "no exp",
            mint_edited(&w, |m| {
                m.remove("exp");
            }),
        ),
        ("nbf now+120 s", mint_edited(&w, set("nbf", now + 120))),
        ("iat now+1 day", mint_edited(&w, set("iat", now + 86_400))),
        ("iat now+120 s", mint_edited(&w, set("iat", now + 120))),
    ];
    for (name, token) in &refused {
        assert_refused(&w, name, token).await;
    }
    let accepted = [
        ("exp now-30 s", mint_edited(&w, set("exp", now - 30))),
        ("nbf now+30 s", mint_edited(&w, set("nbf", now + 30))),
        ("iat now+30 s", mint_edited(&w, set("iat", now + 30))),
        (
            "no iat",
            mint_edited(&w, |m| {
                m.remove("iat");
            }),
        ),
    ];
    for (name, token) in &accepted {
        assert_accepted(&w, name, token).await;
    }
}

#[tokio::test]
async fn catalogue_67_the_issuer_must_match_byte_for_byte() {
    let w = OidcWorld::start().await;
    let issuer = w.provider.issuer();
    assert!(issuer.starts_with("http://"), "{issuer}");
    let variants = [
        (
            "https instead of http",
            json!(issuer.replacen("http://", "https://", 1)),
        ),
        ("a trailing slash", json!(format!("{issuer}/"))),
        ("upper case", json!(issuer.to_uppercase())),
        (
            "scheme in other case",
            json!(issuer.replacen("http", "Http", 1)),
        ),
        ("another path", json!(format!("{issuer}/other"))),
        ("leading space", json!(format!(" {issuer}"))),
        ("a fragment", json!(format!("{issuer}#"))),
        ("empty", json!("")),
        ("null", Value::Null),
        ("a list", json!([issuer])),
    ];
    for (name, iss) in variants {
        let token = mint_edited(&w, |m| {
            m.insert("iss".into(), iss);
        });
        assert_refused(&w, name, &token).await;
    }
    let missing = mint_edited(&w, |m| {
        m.remove("iss");
    });
    assert_refused(&w, "missing iss", &missing).await;
    assert_accepted(&w, "the exact issuer", &w.token(ALICE)).await;
}

/// Sends raw header bytes on their own connection; the status (0 when the connection closed
/// without one).
async fn raw_status(addr: std::net::SocketAddr, host: &str, header: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/x HTTP/1.1\r\nhost: {host}\r\naccept: application/json\r\n{header}\r\n\
         connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the gateway answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Every structurally broken variant of `valid` the catalogue names, built from its segments.
fn structurally_broken(valid: &str) -> Vec<(&'static str, String)> {
    let (h, p, s) = segments(valid);
    let (p_start, p_end) = p.split_at(p.len() / 2);
    vec![
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{h}.{p}.{s}.{s}")),
        ("the header twice", format!("{h}.{h}.{p}.{s}")),
        ("a trailing dot", format!("{h}.{p}.{s}.")),
        ("five segments", format!("{h}.{p}.{s}.{s}.{s}")),
        ("a `+` in the signature", format!("{h}.{p}.+{}", &s[1..])),
        ("a `/` in the header", format!("/{}.{p}.{s}", &h[1..])),
        ("a `*` in the payload", format!("{h}.{p_start}*{p_end}.{s}")),
        ("a percent-encoded dot", format!("{h}%2E{p}.{s}")),
        ("an inner space", format!("{h}.{p} .{s}")),
        ("padding on the header", format!("{h}=.{p}.{s}")),
        ("padding on the payload", format!("{h}.{p}=.{s}")),
        ("padding on the signature", format!("{h}.{p}.{s}=")),
        ("double padding on the signature", format!("{h}.{p}.{s}==")),
        ("standard base64 of the signature", {
            let bytes = URL_SAFE_NO_PAD.decode(&s).unwrap();
            format!("{h}.{p}.{}", STANDARD.encode(bytes))
        }),
    ]
}

#[tokio::test]
async fn catalogue_69_structurally_broken_tokens_are_refused_without_a_fetch() {
    let w = OidcWorld::start().await;
    let valid = w.token(ALICE);
    let before = w.provider.jwks_fetches();
    for (name, token) in structurally_broken(&valid) {
        assert_refused(&w, name, &token).await;
    }
    // A newline inside the token cannot be in a header: the listener refuses the request
    // (400), or the token is refused (401); it never verifies.
    let (h, p, s) = segments(&valid);
    let host = app_host(&w.gateway);
    for header in [
        format!("authorization: Bearer {h}.{p}\n.{s}"),
        format!("authorization: Bearer {h}.{p}\r\n .{s}"),
        format!("cookie: id_token={h}.{p}\n.{s}"),
        format!("cookie: id_token={h}.{p}\r\n\t.{s}"),
    ] {
        let status = raw_status(w.gateway.addr, &host, &header).await;
        assert!(status == 400 || status == 401, "{header:?}: {status}");
    }
    assert_eq!(
        w.provider.jwks_fetches(),
        before,
        "a broken token caused a JWKS fetch"
    );
    // The gateway kept serving, and the intact token verifies.
    assert_accepted(&w, "the intact token", &valid).await;
}

#[tokio::test]
async fn catalogue_70_tampered_signatures_are_refused() {
    let w = OidcWorld::start().await;
    let valid = w.token(ALICE);
    let (h, p, s) = segments(&valid);
    let flipped = |at: usize| {
        let mut bytes = URL_SAFE_NO_PAD.decode(&s).unwrap();
        bytes[at] ^= 0x01;
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(bytes))
    };
    let signature_length = URL_SAFE_NO_PAD.decode(&s).unwrap().len();
    let (_, _, bob_signature) = segments(&w.token(BOB));
    let mut bob_claims = w.provider.standard_claims(BOB);
    bob_claims["jti"] = json!("spliced");
    let table = [
        ("first signature byte flipped", flipped(0)),
        (
            "middle signature byte flipped",
            flipped(signature_length / 2),
        ),
        ("last signature byte flipped", flipped(signature_length - 1)),
        ("signature stripped, dot kept", format!("{h}.{p}.")),
        ("signature and dot stripped", format!("{h}.{p}")),
        (
            "another token's signature",
            format!("{h}.{p}.{bob_signature}"),
        ),
        (
            "another user's payload under this signature",
            format!("{h}.{}.{s}", b64_json(&bob_claims)),
        ),
    ];
    for (name, token) in &table {
        assert_refused(&w, name, token).await;
    }
    assert_accepted(&w, "the untouched token", &valid).await;
}
