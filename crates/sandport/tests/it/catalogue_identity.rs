//! The hardening catalogue's identity cases against the real binary: identity headers in other
//! spellings, bearer tokens, ambiguous credentials, placeholder owners, hostile claims and
//! kids, a cold start without keys, and cross-site browser requests. Named by catalogue id.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use sandport_testkit::oidc::TestProvider;
use sandport_testkit::sandbox_server;
use serde_json::json;

use crate::harness::{
    eventually, get, runtime_host, send, send_body, static_config, Gateway, Reply,
    STATIC_CONVERSATION, TOKEN,
};

const CLIENT_ID: &str = "catalogue-client";
const CLIENT_SECRET: &str = "catalogue-secret-0123456789";
pub(crate) const ALICE: &str = "alice";
pub(crate) const BOB: &str = "bob";

/// Token mode for `alice` with an echoing upstream as the app and the sandbox.
pub(crate) async fn token_world(extra: &str) -> (Gateway, SocketAddr) {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gateway = Gateway::start(&static_config(upstream, extra));
    gateway.wait_ready().await;
    (gateway, upstream)
}

pub(crate) fn app_host(gateway: &Gateway) -> String {
    format!("sandport.test:{}", gateway.addr.port())
}

pub(crate) fn sandbox_path(upstream: SocketAddr, rest: &str) -> String {
    format!("/runtime/{STATIC_CONVERSATION}/{}/{rest}", upstream.port())
}

pub(crate) fn echoed_headers(reply: &Reply) -> String {
    reply.json()["headers"].to_string()
}

/// OIDC mode with the test provider; `alice` owns [`STATIC_CONVERSATION`].
pub(crate) struct OidcWorld {
    pub(crate) provider: TestProvider,
    pub(crate) upstream: SocketAddr,
    pub(crate) gateway: Gateway,
    _dir: tempfile::TempDir,
}

impl OidcWorld {
    pub(crate) async fn start() -> OidcWorld {
        let provider = TestProvider::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
        let upstream = sandbox_server::spawn_local().await.unwrap();
        let (gateway, dir) = start_oidc_gateway(&provider, upstream, "");
        gateway.wait_ready().await;
        OidcWorld {
            provider,
            upstream,
            gateway,
            _dir: dir,
        }
    }

    pub(crate) fn token(&self, sub: &str) -> String {
        self.provider.mint(self.provider.standard_claims(sub))
    }

    pub(crate) async fn api(&self, headers: &[(&str, &str)]) -> Reply {
        let mut request =
            get(&app_host(&self.gateway), "/api/x").header("accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(self.gateway.addr, request).await.unwrap()
    }
}

/// Starts an OIDC-mode gateway (not waiting for readiness); `extra` goes in `[identity]`.
fn start_oidc_gateway(
    provider: &TestProvider,
    upstream: SocketAddr,
    extra: &str,
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let config = format!(
        "[routing]\nbase_domain = \"sandport.test\"\n[app]\nupstream = \"http://{upstream}\"\n\
         [identity]\nmode = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"{}\"\nprovider_timeout_secs = 1\n{extra}\n\
         [discovery]\nbackend = \"static\"\n\
         [[discovery.sandboxes]]\nconversation_id = \"{STATIC_CONVERSATION}\"\nuser_id = \"{ALICE}\"\naddress = \"127.0.0.1\"\n",
        provider.issuer(),
        secret.display(),
    );
    (Gateway::start(&config), dir)
}

#[tokio::test]
async fn catalogue_52_identity_headers_in_other_spellings_never_reach_upstreams() {
    let (gw, upstream) = token_world("").await;
    let spoofed = [
        ("X_Cognito_User_Id", "mallory-1"),
        ("X.Cognito.User.Id", "mallory-2"),
        ("x_cognito_email", "mallory-3"),
        ("X_Origin_Verify", "mallory-4"),
        ("x.origin.verify", "mallory-5"),
        ("X_SANDPORT_IDENTITY", "mallory-6"),
    ];
    for target in ["/app/page".to_owned(), sandbox_path(upstream, "page")] {
        let mut request =
            get(&app_host(&gw), &target).header("authorization", format!("Bearer {TOKEN}"));
        for (name, value) in spoofed {
            request = request.header(name, value);
        }
        let reply = send(gw.addr, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{target}");
        let seen = echoed_headers(&reply);
        assert!(!seen.contains("mallory"), "h1 {target}: {seen}");
    }
    // HTTP/2 (prior knowledge): the same names, lower-cased as h2 requires.
    let mut sender = crate::harness::h2c_sender(gw.addr).await;
    for target in ["/app/page".to_owned(), sandbox_path(upstream, "page")] {
        let mut request = http::Request::get(format!("http://{}{target}", app_host(&gw)))
            .header("authorization", format!("Bearer {TOKEN}"));
        for (name, value) in spoofed {
            request = request.header(name.to_ascii_lowercase(), value);
        }
        let response = sender
            .send_request(request.body(http_body_util::Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "h2 {target}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen = String::from_utf8_lossy(&body).into_owned();
        assert!(!seen.contains("mallory"), "h2 {target}: {seen}");
        assert!(seen.contains("HTTP/1.1"), "the upstream answered: {seen}");
    }
}

#[tokio::test]
async fn catalogue_57_lowercase_bearer_is_recognised() {
    let w = OidcWorld::start().await;
    let token = w.token(ALICE);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let authorization = format!("{scheme} {token}");
        // The app accepts it as alice ...
        let reply = w.api(&[("authorization", &authorization)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.text());
        assert!(echoed_headers(&reply).contains(r#"["x-cognito-user-id","alice"]"#));
        // ... and neither the app nor the sandbox ever sees sandport's own token.
        assert!(
            !reply.text().contains(&token),
            "{scheme}: forwarded to the app"
        );
        let path = sandbox_path(w.upstream, "x");
        let reply = send(
            w.gateway.addr,
            get(&app_host(&w.gateway), &path).header("authorization", &authorization),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.text());
        assert!(
            !reply.text().contains(&token),
            "{scheme}: forwarded to the sandbox"
        );
    }
    // A third party's credential is not sandport's: it passes untouched.
    let (gw, upstream) = token_world("").await;
    let reply = send(
        gw.addr,
        get(&app_host(&gw), &sandbox_path(upstream, "x"))
            .header("cookie", format!("sandport_token={TOKEN}"))
            .header("authorization", "bearer third-party"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(echoed_headers(&reply).contains(r#"["authorization","bearer third-party"]"#));
    // Token mode: sandport's token in lower case is recognised and never forwarded.
    let reply = send(
        gw.addr,
        get(&app_host(&gw), &sandbox_path(upstream, "x"))
            .header("authorization", format!("bearer {TOKEN}")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.text().contains(TOKEN));
}

#[tokio::test]
async fn catalogue_73_two_authorization_headers_are_refused() {
    let (gw, upstream) = token_world("").await;
    for target in ["/app".to_owned(), sandbox_path(upstream, "x")] {
        let reply = send(
            gw.addr,
            get(&app_host(&gw), &target)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("authorization", format!("Bearer {TOKEN}")),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{target}");
        assert_eq!(
            reply.text(),
            "Bad request: more than one Authorization header\n"
        );
    }
    let w = OidcWorld::start().await;
    let bearer = format!("Bearer {}", w.token(ALICE));
    let reply = w
        .api(&[("authorization", &bearer), ("authorization", "Basic eA==")])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // The query never carries an ID token, and other schemes or an empty bearer are not one.
    for headers in [
        vec![("authorization", "Basic YWxpY2U6eA==")],
        vec![("authorization", "Bearer")],
        vec![],
    ] {
        assert_eq!(
            w.api(&headers).await.status,
            StatusCode::UNAUTHORIZED,
            "{headers:?}"
        );
    }
    let query = format!("/api/x?id_token={}", w.token(ALICE));
    let reply = send(
        w.gateway.addr,
        get(&app_host(&w.gateway), &query).header("accept", "application/json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn catalogue_58_credentials_of_two_users_are_refused_as_ambiguous() {
    let w = OidcWorld::start().await;
    let (alice, bob) = (w.token(ALICE), w.token(BOB));
    let ambiguous =
        "Ambiguous credentials: they name more than one user. Please log out and log in again.\n";
    for headers in [
        vec![("cookie", format!("id_token={alice}; id_token={bob}"))],
        vec![
            ("cookie", format!("id_token={alice}")),
            ("cookie", format!("id_token={bob}")),
        ],
        vec![
            ("cookie", format!("id_token={alice}")),
            ("authorization", format!("Bearer {bob}")),
        ],
    ] {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = w.api(&pairs).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.text(), ambiguous);
        // A navigation is not sent to log in either: that would not clear the other cookie.
        let mut navigation = get(&app_host(&w.gateway), "/").header("sec-fetch-mode", "navigate");
        for (name, value) in &pairs {
            navigation = navigation.header(*name, *value);
        }
        let reply = send(w.gateway.addr, navigation).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(w.provider.authorize_calls(), 0);
    }
    // The same user twice, or one valid token beside a stale one, is fine.
    let alice_again = w.token(ALICE);
    let stale = w.provider.mint_alg_none(w.provider.standard_claims(BOB));
    for cookie in [
        format!("id_token={alice}; id_token={alice_again}"),
        format!("id_token={stale}; id_token={alice}"),
    ] {
        let reply = w.api(&[("cookie", &cookie)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let bearer = format!("Bearer {alice_again}");
    let reply = w
        .api(&[
            ("cookie", &format!("id_token={alice}")),
            ("authorization", &bearer),
        ])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Beyond eight tokens nothing is tried.
    let many: Vec<String> = (0..9).map(|_| format!("id_token={alice}")).collect();
    let reply = w.api(&[("cookie", &many.join("; "))]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // A cookie value is taken byte for byte: a quoted token is not a token. Alone it is no
    // credential; beside a valid one it is skipped like any invalid token, never unquoted into
    // a second user.
    let reply = w.api(&[("cookie", &format!("id_token=\"{alice}\""))]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = w
        .api(&[("cookie", &format!("id_token=\"{bob}\"; id_token={alice}"))])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(echoed_headers(&reply).contains(r#"["x-cognito-user-id","alice"]"#));
    // ... and, quoted or not, it is sandport's cookie: it never reaches a sandbox.
    let reply = send(
        w.gateway.addr,
        get(&app_host(&w.gateway), &sandbox_path(w.upstream, "x")).header(
            "cookie",
            format!("a=1; id_token=\"{bob}\"; id_token={alice}"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let seen = echoed_headers(&reply);
    assert!(seen.contains(r#"["cookie","a=1"]"#), "{seen}");
    assert!(!seen.contains(&bob) && !seen.contains(&alice), "{seen}");
    // 200 cookies: the one token among them is found; 200 tokens are refused untried.
    let fetches = w.provider.jwks_fetches();
    let mut jar: Vec<String> = (0..200).map(|i| format!("c{i}=v{i}")).collect();
    jar.push(format!("id_token={alice}"));
    let reply = w.api(&[("cookie", &jar.join("; "))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let flood: Vec<String> = (0..200).map(|i| format!("id_token=t{i}")).collect();
    let started = std::time::Instant::now();
    let reply = w.api(&[("cookie", &flood.join("; "))]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text(), ambiguous);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(w.provider.jwks_fetches(), fetches);
}

/// A TCP listener that counts the connections it accepts and closes them: an upstream that
/// proves whether anything reached it.
pub(crate) struct ConnectCounter {
    pub(crate) addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

impl ConnectCounter {
    pub(crate) async fn start() -> ConnectCounter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        ConnectCounter { addr, accepted }
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A port nothing listens on: bound, then released (a refused connection is the point).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second sandbox, owned by bob, for the token-mode worlds.
const FOREIGN: &str = "fedcba9876543210fedcba9876543210";

fn foreign_sandbox() -> String {
    format!(
        "[[discovery.sandboxes]]\nconversation_id = \"{FOREIGN}\"\nuser_id = \"{BOB}\"\naddress = \"127.0.0.1\"\n"
    )
}

const UNAUTHENTICATED: &str =
    "Authentication required. Please login at the main application first.\n";
const NOT_OWNER: &str = "Access denied: you do not own this conversation\n";

#[tokio::test]
async fn catalogue_60_probes_from_strangers_get_401_or_403_and_never_reach_a_port() {
    let (gw, _) = token_world(&foreign_sandbox()).await;
    let counter = ConnectCounter::start().await;
    let origin = format!("http://{}", app_host(&gw));
    let bearer = format!("Bearer {TOKEN}");
    let probe = |host: &str, target: &str, authorization: Option<&str>| {
        let mut request = get(host, target)
            .header("origin", &origin)
            .header("accept", "application/json");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request
    };
    for port in [closed_port(), counter.addr.port()] {
        let cases = [
            (STATIC_CONVERSATION, None, 401, UNAUTHENTICATED),
            (FOREIGN, None, 401, UNAUTHENTICATED),
            (
                STATIC_CONVERSATION,
                Some("Bearer wrong"),
                401,
                UNAUTHENTICATED,
            ),
            (FOREIGN, Some(bearer.as_str()), 403, NOT_OWNER),
        ];
        for (conversation, authorization, status, body) in cases {
            let path_form = (app_host(&gw), format!("/runtime/{conversation}/{port}/api"));
            let host_form = (runtime_host(port, conversation, &gw), "/api".to_owned());
            for (host, target) in [path_form, host_form] {
                let reply = send(gw.addr, probe(&host, &target, authorization))
                    .await
                    .unwrap();
                let what = format!("{host}{target} {authorization:?}");
                assert_eq!(reply.status.as_u16(), status, "{what}");
                assert_eq!(reply.text(), body, "{what}");
            }
        }
    }
    assert_eq!(counter.accepted(), 0, "a stranger's probe reached the port");
    // The control: the owner's probe to the closed port is the 204, and to the open one it
    // connects.
    let target = format!("/runtime/{STATIC_CONVERSATION}/{}/api", closed_port());
    let reply = send(gw.addr, probe(&app_host(&gw), &target, Some(&bearer)))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let target = format!("/runtime/{STATIC_CONVERSATION}/{}/api", counter.addr.port());
    send(gw.addr, probe(&app_host(&gw), &target, Some(&bearer)))
        .await
        .unwrap();
    eventually(
        "the owner's probe connects",
        Duration::from_secs(5),
        || async { counter.accepted() >= 1 },
    )
    .await;
}

#[tokio::test]
async fn catalogue_59_placeholder_owners_are_refused_to_everyone() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let owners = ["anonymous", "-", "null", "undefined", "None", " ", "nobody"];
    let conversations: Vec<String> = (0..owners.len()).map(|i| format!("{i:032x}")).collect();
    let mut sandboxes = String::new();
    for (owner, conversation) in owners.iter().zip(&conversations) {
        sandboxes.push_str(&format!(
            "[[discovery.sandboxes]]\nconversation_id = \"{conversation}\"\nuser_id = \"{owner}\"\naddress = \"127.0.0.1\"\n"
        ));
    }
    let gw = Gateway::start(&static_config(upstream, &sandboxes));
    gw.wait_ready().await;
    for (owner, conversation) in owners.iter().zip(&conversations) {
        let target = format!("/runtime/{conversation}/{}/x", upstream.port());
        let reply = send(
            gw.addr,
            get(&app_host(&gw), &target).header("authorization", format!("Bearer {TOKEN}")),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{owner:?}");
        assert_eq!(
            reply.text(),
            "Access denied: container not properly labeled with owner\n",
            "{owner:?}"
        );
    }
    // And no caller can be a placeholder: such a token-mode user id is a configuration error.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sandport.toml");
    std::fs::write(
        &config,
        static_config(upstream, "").replace(
            "user_id = \"alice\"\n[discovery]",
            "user_id = \"anonymous\"\n[discovery]",
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandport"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("identity.user_id"), "{stderr}");
}

#[tokio::test]
async fn catalogue_69_a_signed_sub_that_is_not_a_sane_principal_is_refused() {
    let w = OidcWorld::start().await;
    for sub in [
        "alice\u{1}",
        "alice\r\nx-cognito-user-id: bob",
        "",
        "anonymous",
        "al ice",
        &"a".repeat(257),
    ] {
        let mut claims = w.provider.standard_claims(ALICE);
        claims["sub"] = json!(sub);
        let bearer = format!("Bearer {}", w.provider.mint(claims));
        let reply = w.api(&[("authorization", &bearer)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{sub:?}");
    }
    // The control: the same token with a sane sub is accepted.
    let bearer = format!("Bearer {}", w.token(ALICE));
    assert_eq!(
        w.api(&[("authorization", &bearer)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn catalogue_68_a_token_without_token_use_is_refused() {
    let w = OidcWorld::start().await;
    let mut claims = w.provider.standard_claims(ALICE);
    claims.as_object_mut().unwrap().remove("token_use");
    let bearer = format!("Bearer {}", w.provider.mint(claims.clone()));
    assert_eq!(
        w.api(&[("authorization", &bearer)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    claims["token_use"] = json!("id");
    let bearer = format!("Bearer {}", w.provider.mint(claims));
    assert_eq!(
        w.api(&[("authorization", &bearer)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn catalogue_64_attacker_chosen_kids_never_trigger_a_jwks_refetch() {
    let w = OidcWorld::start().await;
    let fetches = w.provider.jwks_fetches();
    let claims = w.provider.standard_claims(ALICE);
    for kid in [
        json!("../../../../dev/null"),
        json!("' OR 1=1--"),
        json!("k".repeat(8 * 1024)),
        json!("kid\u{7}"),
        json!(42),
        json!({"a": 1}),
    ] {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let bearer = format!(
            "Bearer {}",
            w.provider.mint_with_header(header, claims.clone())
        );
        let reply = w.api(&[("authorization", &bearer)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{kid}");
    }
    assert_eq!(
        w.provider.jwks_fetches(),
        fetches,
        "a malformed kid caused a fetch"
    );
    // The control: a well-formed unknown kid does cause one (rate-limited) refetch.
    let unknown = format!("Bearer {}", w.provider.mint_unknown_kid(claims));
    for _ in 0..3 {
        assert_eq!(
            w.api(&[("authorization", &unknown)]).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(w.provider.jwks_fetches(), fetches + 1);
}

/// How the stand-in JWKS endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JwksFault {
    /// Accepts the connection and closes it without answering.
    Down,
    Hang,
    /// 10 MiB of a JSON string.
    Huge,
    InvalidJson,
    /// Only an `oct` key (which must never become an HMAC secret).
    OnlyOctKeys,
    /// The provider's real keys.
    Healthy,
}

/// A JWKS endpoint with faults, counting the requests it gets.
struct JwksEndpoint {
    addr: SocketAddr,
    fault: Arc<Mutex<JwksFault>>,
    requests: Arc<AtomicU64>,
}

impl JwksEndpoint {
    async fn start(fault: JwksFault, healthy: serde_json::Value) -> JwksEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(fault));
        let requests = Arc::new(AtomicU64::new(0));
        let healthy = Bytes::from(serde_json::to_vec(&healthy).unwrap());
        let (state, count) = (Arc::clone(&fault), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let served = serve_jwks(
                    stream,
                    Arc::clone(&state),
                    Arc::clone(&count),
                    healthy.clone(),
                );
                tokio::spawn(served);
            }
        });
        JwksEndpoint {
            addr,
            fault,
            requests,
        }
    }

    fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn set(&self, fault: JwksFault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Serves one connection. Connection-level faults apply when it opens; the others per request
/// (the client keeps connections alive, so a switch to healthy must reach an open one).
async fn serve_jwks(
    stream: tokio::net::TcpStream,
    fault: Arc<Mutex<JwksFault>>,
    requests: Arc<AtomicU64>,
    healthy: Bytes,
) {
    let at_open = *fault.lock().unwrap();
    match at_open {
        JwksFault::Down => {
            requests.fetch_add(1, Ordering::SeqCst);
            return drop(stream);
        }
        JwksFault::Hang => {
            requests.fetch_add(1, Ordering::SeqCst);
            // The fault under test: a JWKS endpoint that never answers (not synchronisation).
            tokio::time::sleep(Duration::from_secs(600)).await;
            return;
        }
        _ => {}
    }
    let service = hyper::service::service_fn(move |_request| {
        requests.fetch_add(1, Ordering::SeqCst);
        let body = match *fault.lock().unwrap() {
            JwksFault::Huge => Bytes::from(format!("\"{}\"", "x".repeat(10 * 1024 * 1024))),
            JwksFault::InvalidJson => Bytes::from_static(b"{\"keys\": [nope"),
            JwksFault::OnlyOctKeys => Bytes::from_static(
                br#"{"keys":[{"kty":"oct","kid":"hmac","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#,
            ),
            JwksFault::Down | JwksFault::Hang | JwksFault::Healthy => healthy.clone(),
        };
        async move {
            let mut response = http::Response::new(Full::new(body));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

async fn ready_status(gateway: &Gateway) -> StatusCode {
    send(gateway.admin, get("localhost", "/ready"))
        .await
        .map_or(StatusCode::SERVICE_UNAVAILABLE, |reply| reply.status)
}

#[tokio::test]
async fn catalogue_71_112_cold_start_without_keys_is_not_ready_and_says_why() {
    let provider = TestProvider::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let token = provider.mint(provider.standard_claims(ALICE));
    for fault in [
        JwksFault::Down,
        JwksFault::Hang,
        JwksFault::Huge,
        JwksFault::InvalidJson,
        JwksFault::OnlyOctKeys,
    ] {
        let jwks = JwksEndpoint::start(fault, provider.jwks()).await;
        let extra = format!("jwks_uri = \"{}\"\n", jwks.uri());
        let (gw, _dir) = start_oidc_gateway(&provider, upstream, &extra);
        // Two failed fetches have happened (the retry ran): still not ready.
        eventually(
            &format!("{fault:?}: two JWKS fetches"),
            Duration::from_secs(20),
            || async { jwks.requests() >= 2 },
        )
        .await;
        assert_eq!(
            ready_status(&gw).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "{fault:?}"
        );
        let bearer = format!("Bearer {token}");
        for request in [
            get(&app_host(&gw), "/api/x").header("authorization", &bearer),
            get(&app_host(&gw), "/").header("sec-fetch-mode", "navigate"),
            get(
                &app_host(&gw),
                &format!("/runtime/{STATIC_CONVERSATION}/{}/x", upstream.port()),
            )
            .header("cookie", format!("id_token={token}")),
        ] {
            let reply = send(gw.addr, request).await.unwrap();
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{fault:?}");
            assert_eq!(reply.header("retry-after"), Some("2"), "{fault:?}");
            assert_eq!(
                reply.text(),
                "Login is unavailable right now: the identity provider's keys are not loaded\n",
                "{fault:?}"
            );
        }
        assert_eq!(
            provider.authorize_calls(),
            0,
            "{fault:?}: no login was started"
        );
        // Recovery is automatic once the endpoint answers.
        jwks.set(JwksFault::Healthy);
        eventually(
            &format!("{fault:?}: ready after recovery"),
            Duration::from_secs(20),
            || async { ready_status(&gw).await == StatusCode::OK },
        )
        .await;
        let reply = send(
            gw.addr,
            get(&app_host(&gw), "/api/x").header("authorization", &bearer),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{fault:?}");
    }
}

/// A raw WebSocket handshake (status only) to `target`, with `headers`.
async fn handshake(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> StatusCode {
    handshake_on(gw, &app_host(gw), target, headers).await
}

/// [`handshake`] on `host`.
async fn handshake_on(
    gw: &Gateway,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut request = get(host, target)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(gw.addr, request).await.unwrap().status
}

#[tokio::test]
async fn catalogue_74_cookie_websockets_without_origin_are_refused() {
    let (gw, upstream) = token_world("").await;
    let target = sandbox_path(upstream, "__sandbox/ws");
    let cookie = format!("sandport_token={TOKEN}");
    let bearer = format!("Bearer {TOKEN}");
    let app = format!("http://{}", app_host(&gw));
    let cases = [
        (vec![("cookie", cookie.as_str())], StatusCode::FORBIDDEN),
        (
            vec![("cookie", cookie.as_str()), ("origin", "https://evil.test")],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("cookie", cookie.as_str()), ("origin", "null")],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("cookie", cookie.as_str()), ("origin", app.as_str())],
            StatusCode::SWITCHING_PROTOCOLS,
        ),
        (
            vec![("authorization", bearer.as_str())],
            StatusCode::SWITCHING_PROTOCOLS,
        ),
    ];
    for (headers, expected) in cases {
        assert_eq!(
            handshake(&gw, &target, &headers).await,
            expected,
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn catalogue_76_cross_site_writes_with_cookies_never_reach_upstreams() {
    let (gw, upstream) = token_world("").await;
    let cookie = format!("sandport_token={TOKEN}");
    let app = format!("http://{}", app_host(&gw));
    let post = |target: &str, headers: &[(&str, &str)]| {
        let mut request = get(&app_host(&gw), target).method("POST");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    };
    for target in ["/api/save".to_owned(), sandbox_path(upstream, "api/save")] {
        for headers in [
            vec![("cookie", cookie.as_str()), ("origin", "https://evil.test")],
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            let reply = send_body(gw.addr, post(&target, &headers), Bytes::from_static(b"x"))
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{target} {headers:?}");
            assert_eq!(reply.text(), "Cross-origin request refused\n");
        }
        for headers in [
            vec![("cookie", cookie.as_str()), ("origin", app.as_str())],
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![("cookie", cookie.as_str())],
        ] {
            let reply = send_body(gw.addr, post(&target, &headers), Bytes::from_static(b"x"))
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{target} {headers:?}");
        }
        // A cross-site GET is a navigation and passes.
        let reply = send(
            gw.addr,
            get(&app_host(&gw), &target)
                .header("cookie", &cookie)
                .header("sec-fetch-site", "cross-site"),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{target}");
    }
    // The forbidden answers came from sandport: the metric counts them.
    assert_eq!(
        gw.metric("sandport_errors_total", "cross_origin").await,
        4.0
    );
}

/// The provider stops answering after the keys loaded: a browser sent to log in gets the one
/// error map's 503 (counted, logged as an error), never an unlogged page of its own.
#[tokio::test]
async fn a_login_while_the_provider_is_down_is_a_counted_503() {
    let provider = TestProvider::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let keys = JwksEndpoint::start(JwksFault::Healthy, provider.jwks()).await;
    // the issuer's discovery document comes from an endpoint that closes every connection
    let down = JwksEndpoint::start(JwksFault::Down, provider.jwks()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let config = format!(
        "[routing]\nbase_domain = \"sandport.test\"\n[app]\nupstream = \"http://{upstream}\"\n\
         [identity]\nmode = \"oidc\"\nissuer = \"http://{}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"{}\"\nprovider_timeout_secs = 1\njwks_uri = \"{}\"\n\
         [discovery]\nbackend = \"static\"\n[log]\nformat = \"json\"\n",
        down.addr,
        secret.display(),
        keys.uri(),
    );
    let gw = Gateway::start(&config);
    eventually("keys loaded", Duration::from_secs(20), || async {
        ready_status(&gw).await == StatusCode::OK
    })
    .await;
    let reply = send(
        gw.addr,
        get(&app_host(&gw), "/").header("sec-fetch-mode", "navigate"),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(
        reply
            .text()
            .contains("the identity provider does not answer"),
        "{}",
        reply.text()
    );
    assert!(
        gw.metric(
            "sandport_errors_total",
            "reason=\"identity_provider_unavailable\""
        )
        .await
            >= 1.0
    );
    // the access line says what happened, not `forward`
    gw.wait_for_log_line("the access line names the refusal", |line| {
        line.contains(r#""decision":"identity_provider_unavailable""#)
    })
    .await;
}

#[tokio::test]
async fn catalogue_75_websocket_handshakes_need_a_credential_and_ownership() {
    let counter = ConnectCounter::start().await;
    let port = counter.addr.port();
    // OIDC mode: alice owns the conversation, bob does not.
    let w = OidcWorld::start().await;
    let app_origin = format!("http://{}", app_host(&w.gateway));
    let (alice, bob) = (w.token(ALICE), w.token(BOB));
    let expired = w.provider.mint_expired_copy(&alice);
    let unsigned = w.provider.mint_alg_none(w.provider.standard_claims(ALICE));
    let bearer = |token: &str| format!("Bearer {token}");
    let cookie = |token: &str| format!("id_token={token}");
    let path = format!("/runtime/{STATIC_CONVERSATION}/{port}/ws");
    let cases = [
        (vec![], StatusCode::UNAUTHORIZED),
        (vec![("cookie", cookie(&expired))], StatusCode::UNAUTHORIZED),
        (
            vec![("authorization", bearer(&expired))],
            StatusCode::UNAUTHORIZED,
        ),
        (
            vec![("authorization", bearer(&unsigned))],
            StatusCode::UNAUTHORIZED,
        ),
        (vec![("authorization", bearer(&bob))], StatusCode::FORBIDDEN),
        (vec![("cookie", cookie(&bob))], StatusCode::FORBIDDEN),
    ];
    for (headers, expected) in &cases {
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        headers.push(("origin", &app_origin));
        let status = handshake(&w.gateway, &path, &headers).await;
        assert_eq!(status, *expected, "{headers:?}");
    }
    // A runtime host believes only its own session: platform tokens there are no credential.
    let host = runtime_host(port, STATIC_CONVERSATION, &w.gateway);
    let runtime_origin = format!("http://{host}");
    for headers in [
        vec![("origin", runtime_origin.as_str())],
        vec![
            ("origin", runtime_origin.as_str()),
            ("cookie", &cookie(&alice)),
        ],
        vec![
            ("origin", runtime_origin.as_str()),
            ("authorization", &bearer(&alice)),
        ],
    ] {
        let status = handshake_on(&w.gateway, &host, "/ws", &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    // Token mode: no token or a wrong one is 401, someone else's conversation 403.
    let (gw, _) = token_world(&foreign_sandbox()).await;
    let token = bearer(TOKEN);
    for (target, headers, expected) in [
        (STATIC_CONVERSATION, vec![], StatusCode::UNAUTHORIZED),
        (
            STATIC_CONVERSATION,
            vec![("authorization", "Bearer wrong")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            FOREIGN,
            vec![("authorization", token.as_str())],
            StatusCode::FORBIDDEN,
        ),
    ] {
        let path = format!("/runtime/{target}/{port}/ws");
        assert_eq!(
            handshake(&gw, &path, &headers).await,
            expected,
            "{target} {headers:?}"
        );
    }
    assert_eq!(
        counter.accepted(),
        0,
        "a refused handshake reached the sandbox"
    );
    // The control: the owner's handshake is tunnelled to the sandbox.
    handshake(&w.gateway, &path, &[("authorization", &bearer(&alice))]).await;
    eventually(
        "the owner's handshake connects",
        Duration::from_secs(5),
        || async { counter.accepted() >= 1 },
    )
    .await;
}

/// Starts a login by navigating to `start` on the app host, consents at the provider and
/// follows the callback; the `Location` the callback answers.
async fn login_returns_to(w: &OidcWorld, start: &str) -> String {
    let app = app_host(&w.gateway);
    let first = send(
        w.gateway.addr,
        get(&app, start).header("sec-fetch-mode", "navigate"),
    )
    .await
    .unwrap();
    assert_eq!(first.status, StatusCode::FOUND, "{start}: {}", first.text());
    let login_cookie = first
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok()?.split(';').next())
        .find(|pair| pair.starts_with("sandport_login="))
        .unwrap()
        .to_owned();
    let authorize: http::Uri = first.header("location").unwrap().parse().unwrap();
    let consent = send(
        w.provider.addr(),
        get(
            authorize.authority().unwrap().as_ref(),
            authorize.path_and_query().unwrap().as_str(),
        ),
    )
    .await
    .unwrap();
    let callback: http::Uri = consent.header("location").unwrap().parse().unwrap();
    let done = send(
        w.gateway.addr,
        get(&app, callback.path_and_query().unwrap().as_str()).header("cookie", login_cookie),
    )
    .await
    .unwrap();
    assert_eq!(done.status, StatusCode::FOUND, "{start}: {}", done.text());
    done.header("location").unwrap().to_owned()
}

/// The `rd` parameter of a `Location` (decoded).
fn return_parameter(location: &str) -> String {
    let query = location.split_once('?').map_or("", |(_, query)| query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "rd")
        .map(|(_, value)| value.into_owned())
        .unwrap()
}

#[tokio::test]
async fn catalogue_82_return_targets_that_leave_the_origin_return_to_slash() {
    let w = OidcWorld::start().await;
    // The path a login starts from is where the callback returns.
    for start in [
        "/%2F%2Fevil.test",
        "/%2f%2fevil.test/x",
        "/%5Cevil.test",
        "/%09/evil.test",
        "/%252F%252Fevil.test",
    ] {
        assert_eq!(login_returns_to(&w, start).await, "/", "{start}");
    }
    assert_eq!(
        login_returns_to(&w, "/page?x=%2F%2F").await,
        "/page?x=%2F%2F"
    );
    // The runtime hand-off's `rd`, when it starts and when the code is redeemed.
    let app = app_host(&w.gateway);
    let runtime = runtime_host(w.upstream.port(), STATIC_CONVERSATION, &w.gateway);
    let alice = format!("id_token={}", w.token(ALICE));
    for hostile in [
        "/\t/evil.test",
        "/%2F%2Fevil.test",
        "javascript:alert(1)",
        "//evil.test",
        "/\\evil.test",
        "https://evil.test",
        "/\r\nSet-Cookie: x=1",
    ] {
        let rd: String = form_urlencoded::byte_serialize(hostile.as_bytes()).collect();
        let auth = format!("/_sandport/runtime-auth?host={runtime}&rd={rd}");
        let reply = send(w.gateway.addr, get(&app, &auth).header("cookie", &alice))
            .await
            .unwrap();
        assert_eq!(
            reply.status,
            StatusCode::FOUND,
            "{hostile:?}: {}",
            reply.text()
        );
        let redeem = reply.header("location").unwrap().to_owned();
        assert_eq!(return_parameter(&redeem), "/", "{hostile:?}");
        // The code redeemed with the hostile `rd` put back.
        let redeem: http::Uri = redeem.parse().unwrap();
        let code = form_urlencoded::parse(redeem.query().unwrap().as_bytes())
            .find(|(name, _)| name == "code")
            .map(|(_, value)| value.into_owned())
            .unwrap();
        let target = format!("/_sandport/runtime-session?code={code}&rd={rd}");
        let reply = send(w.gateway.addr, get(&runtime, &target)).await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::FOUND,
            "{hostile:?}: {}",
            reply.text()
        );
        assert_eq!(reply.header("location"), Some("/"), "{hostile:?}");
    }
}
