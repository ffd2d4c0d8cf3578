//! OIDC mode end to end: the real binary against the test provider, with a cookie-keeping
//! client that follows redirects the way a browser does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use sandport_testkit::oidc::{JwksMode, TestProvider};
use sandport_testkit::sandbox_server;

use crate::harness::{send_body, Gateway, Reply};

const CLIENT_ID: &str = "sandport-test-client";
const CLIENT_SECRET: &str = "client-secret-0123456789";
const ALICE_CONVERSATION: &str = "0123456789abcdef0123456789abcdef";
const BOB_CONVERSATION: &str = "fedcba9876543210fedcba9876543210";
const ASSERTION_KEY: &str = "assertion-key-0123456789abcdef";

/// The provider, an in-process upstream (the app and both sandboxes) and the gateway.
struct World {
    provider: TestProvider,
    upstream: SocketAddr,
    gateway: Gateway,
    _dir: tempfile::TempDir,
}

impl World {
    /// Replaces the browser's `id_token` cookies with expired copies, minted at once.
    fn expire_id_token(&self, browser: &mut Browser) {
        let mut replaced = 0;
        for ((_, name), value) in browser.cookies.iter_mut() {
            if name == "id_token" {
                *value = self.provider.mint_expired_copy(value);
                replaced += 1;
            }
        }
        assert!(replaced > 0, "the browser holds no id_token");
    }

    async fn start(extra_identity: &str) -> World {
        let provider = TestProvider::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
        provider.set_user("alice", "alice@example.test", true);
        let upstream = sandbox_server::spawn_local().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, CLIENT_SECRET).unwrap();
        let assertion = dir.path().join("assertion-key");
        std::fs::write(&assertion, ASSERTION_KEY).unwrap();
        let config = format!(
            "[routing]\nbase_domain = \"sandport.test\"\n[app]\nupstream = \"http://{upstream}\"\n\
             [identity]\nmode = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret_file = \"{}\"\nassertion_key_file = \"{}\"\nprovider_timeout_secs = 1\n{extra_identity}\n\
             [discovery]\nbackend = \"static\"\n\
             [[discovery.sandboxes]]\nconversation_id = \"{ALICE_CONVERSATION}\"\nuser_id = \"alice\"\naddress = \"127.0.0.1\"\n\
             [[discovery.sandboxes]]\nconversation_id = \"{BOB_CONVERSATION}\"\nuser_id = \"bob\"\naddress = \"127.0.0.1\"\n",
            provider.issuer(),
            secret.display(),
            assertion.display()
        );
        let gateway = Gateway::start(&config);
        gateway.wait_ready().await;
        World {
            provider,
            upstream,
            gateway,
            _dir: dir,
        }
    }

    fn app(&self) -> String {
        format!("http://sandport.test:{}", self.gateway.addr.port())
    }

    fn runtime(&self, conversation: &str) -> String {
        format!(
            "http://{}-{conversation}.runtime.sandport.test:{}",
            self.upstream.port(),
            self.gateway.addr.port()
        )
    }

    fn browser(&self) -> Browser {
        Browser {
            gateway: self.gateway.addr,
            provider: self.provider.addr(),
            cookies: HashMap::new(),
        }
    }
}

/// A cookie-keeping client. Cookies are host-only unless they carry `Domain`.
struct Browser {
    gateway: SocketAddr,
    provider: SocketAddr,
    /// (host, name) → value.
    cookies: HashMap<(String, String), String>,
}

/// How a request is made, as a browser would mark it.
#[derive(Clone, Copy)]
enum Mode {
    Navigate,
    Fetch,
}

impl Browser {
    /// Sends one request to an absolute URL, storing the cookies of the answer.
    async fn request(
        &mut self,
        method: &str,
        url: &str,
        mode: Mode,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let uri: http::Uri = url.parse().unwrap();
        let host = uri.host().unwrap().to_owned();
        let authority = uri.authority().unwrap().to_string();
        let addr = if host == "127.0.0.1" {
            self.provider
        } else {
            self.gateway
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header("host", &authority);
        request = match mode {
            Mode::Navigate => request
                .header("sec-fetch-mode", "navigate")
                .header("accept", "text/html,application/xhtml+xml"),
            Mode::Fetch => request
                .header("sec-fetch-mode", "cors")
                .header("accept", "application/json"),
        };
        let jar: Vec<String> = self
            .cookies
            .iter()
            .filter(|((cookie_host, _), _)| *cookie_host == host)
            .map(|((_, name), value)| format!("{name}={value}"))
            .collect();
        if !jar.is_empty() {
            request = request.header("cookie", jar.join("; "));
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let reply = send_body(addr, request, Bytes::from(body.to_owned()))
            .await
            .unwrap();
        for cookie in reply.headers.get_all("set-cookie") {
            let cookie = cookie.to_str().unwrap();
            assert!(
                !cookie.contains("Domain="),
                "platform cookies must be host-only: {cookie}"
            );
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let key = (host.clone(), name.trim().to_owned());
            if attributes.contains("Max-Age=0") || value.is_empty() {
                self.cookies.remove(&key);
            } else {
                self.cookies.insert(key, value.to_owned());
            }
        }
        reply
    }

    /// Navigates to `url`, following redirects (relative ones on the same origin).
    async fn navigate(&mut self, url: &str) -> (String, Reply) {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let reply = self.request("GET", &url, Mode::Navigate, &[], "").await;
            if !reply.status.is_redirection() {
                return (url, reply);
            }
            let location = reply.header("location").unwrap().to_owned();
            url = if location.starts_with('/') {
                let uri: http::Uri = url.parse().unwrap();
                format!("http://{}{location}", uri.authority().unwrap())
            } else {
                location
            };
        }
        panic!("redirect loop at {url}");
    }

    fn cookie(&self, host: &str, name: &str) -> Option<&String> {
        self.cookies.get(&(host.to_owned(), name.to_owned()))
    }
}

fn echo_headers(reply: &Reply) -> String {
    reply.json()["headers"].to_string()
}

#[tokio::test]
async fn login_round_trip_and_the_app_gets_a_verified_identity() {
    let w = World::start("").await;
    let mut browser = w.browser();
    let (url, reply) = browser
        .navigate(&format!("{}/conversations/x?tab=1", w.app()))
        .await;
    assert_eq!(
        url,
        format!("{}/conversations/x?tab=1", w.app()),
        "returned to where login started"
    );
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let params: HashMap<_, _> = w
        .provider
        .last_authorize_params()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["redirect_uri"], format!("{}/_callback", w.app()));
    assert!(params.contains_key("nonce") && params.contains_key("state"));
    assert!(browser.cookie("sandport.test", "id_token").is_some());
    assert!(browser.cookie("sandport.test", "refresh_token").is_some());
    assert!(
        browser.cookie("sandport.test", "sandport_login").is_none(),
        "login cookie cleared"
    );

    let headers = echo_headers(&reply);
    assert!(
        headers.contains("[\"x-cognito-user-id\",\"alice\"]"),
        "{headers}"
    );
    assert!(
        headers.contains("[\"x-cognito-email\",\"alice@example.test\"]"),
        "{headers}"
    );
    assert!(
        headers.contains("[\"x-cognito-email-verified\",\"true\"]"),
        "{headers}"
    );
    assert!(
        !headers.contains("id_token") && !headers.contains("refresh_token"),
        "{headers}"
    );
    let assertion = reply.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == "x-sandport-identity")
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .expect("the app receives the identity assertion");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["app"]);
    validation.set_issuer(&["sandport"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &assertion,
        &jsonwebtoken::DecodingKey::from_secret(ASSERTION_KEY.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "alice");
    assert!(claims["exp"].as_u64().unwrap() <= claims["iat"].as_u64().unwrap() + 60);

    // A forged assertion or identity header from the client never reaches the app.
    let reply = browser
        .request(
            "GET",
            &format!("{}/api/x", w.app()),
            Mode::Fetch,
            &[
                ("x-sandport-identity", "forged"),
                ("x-cognito-user-id", "bob"),
            ],
            "",
        )
        .await;
    let headers = echo_headers(&reply);
    assert!(
        !headers.contains("forged") && !headers.contains("\"bob\""),
        "{headers}"
    );
}

#[tokio::test]
async fn without_a_login_navigations_redirect_and_api_calls_get_401_json() {
    let w = World::start("").await;
    let mut browser = w.browser();
    let reply = browser
        .request(
            "GET",
            &format!("{}/api/conversations", w.app()),
            Mode::Fetch,
            &[],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.text().contains("Authentication required"));
    let reply = browser
        .request("GET", &format!("{}/", w.app()), Mode::Navigate, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert!(reply
        .header("location")
        .unwrap()
        .starts_with(&w.provider.authorization_endpoint()));
    // A runtime path is the app host too: API calls get 401, never a redirect.
    let path = format!(
        "{}/runtime/{ALICE_CONVERSATION}/{}/api",
        w.app(),
        w.upstream.port()
    );
    let reply = browser.request("POST", &path, Mode::Fetch, &[], "{}").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn callbacks_with_bad_state_or_code_and_open_redirects_are_refused() {
    let w = World::start("").await;
    let mut browser = w.browser();
    let callback = format!("{}/_callback", w.app());
    let reply = browser
        .request(
            "GET",
            &format!("{callback}?state=x"),
            Mode::Navigate,
            &[],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.text(), "Missing authorization code\n");
    let reply = browser
        .request(
            "GET",
            &format!("{callback}?code=abc&state=forged"),
            Mode::Navigate,
            &[],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // A state from someone else's login (no matching login cookie in this browser).
    let mut victim = w.browser();
    let start = victim
        .request("GET", &format!("{}/", w.app()), Mode::Navigate, &[], "")
        .await;
    let authorize = start.header("location").unwrap().to_owned();
    let consent = victim
        .request("GET", &authorize, Mode::Navigate, &[], "")
        .await;
    let stolen_callback = consent.header("location").unwrap().to_owned();
    let reply = browser
        .request("GET", &stolen_callback, Mode::Navigate, &[], "")
        .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "login CSRF: state not bound to this browser"
    );
    assert!(browser.cookie("sandport.test", "id_token").is_none());
    // The three refusals went through the error map: counted, by reason.
    let refused = w
        .gateway
        .metric("sandport_errors_total", "reason=\"login_bad_callback\"")
        .await;
    assert_eq!(refused, 3.0, "bad callbacks counted");

    // Open redirects: whatever path started the login, the callback returns on this origin.
    for start in ["//evil.example/x", "/\\evil.example"] {
        let mut browser = w.browser();
        let first = browser
            .request(
                "GET",
                &format!("{}{start}", w.app()),
                Mode::Navigate,
                &[],
                "",
            )
            .await;
        let authorize = first.header("location").unwrap().to_owned();
        let consent = browser
            .request("GET", &authorize, Mode::Navigate, &[], "")
            .await;
        let callback = consent.header("location").unwrap().to_owned();
        let done = browser
            .request("GET", &callback, Mode::Navigate, &[], "")
            .await;
        assert_eq!(done.status, StatusCode::FOUND);
        assert_eq!(done.header("location"), Some("/"), "{start}");
    }
}

#[tokio::test]
async fn expired_tokens_refresh_inline_on_get_post_and_websocket() {
    let w = World::start("clock_skew_secs = 0\n").await;
    let mut browser = w.browser();
    browser.navigate(&format!("{}/", w.app())).await;
    w.expire_id_token(&mut browser);
    let first = browser.cookie("sandport.test", "id_token").unwrap().clone();

    let reply = browser
        .request("GET", &format!("{}/api/x", w.app()), Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let refreshed = browser.cookie("sandport.test", "id_token").unwrap().clone();
    assert_ne!(first, refreshed, "the response carried a new id_token");
    assert_eq!(w.provider.token_calls("refresh_token"), 1);

    // POST: the body is not lost to a redirect.
    let mut expired = w.browser();
    expired.navigate(&format!("{}/", w.app())).await;
    w.expire_id_token(&mut expired);
    let reply = expired
        .request(
            "POST",
            &format!("{}/api/save", w.app()),
            Mode::Fetch,
            &[("content-type", "application/json")],
            "{\"keep\":1}",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_len"], 10);

    // WebSocket handshake with only an expired id_token: refreshed inline, then upgraded.
    let mut ws_browser = w.browser();
    ws_browser.navigate(&format!("{}/", w.app())).await;
    w.expire_id_token(&mut ws_browser);
    let cookie: Vec<String> = ws_browser
        .cookies
        .iter()
        .map(|((_, name), value)| format!("{name}={value}"))
        .collect();
    let url = format!(
        "ws://{}/runtime/{ALICE_CONVERSATION}/{}/__sandbox/ws",
        w.gateway.addr,
        w.upstream.port()
    );
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "host",
        format!("sandport.test:{}", w.gateway.addr.port())
            .parse()
            .unwrap(),
    );
    request
        .headers_mut()
        .insert("origin", w.app().parse().unwrap());
    request
        .headers_mut()
        .insert("cookie", cookie.join("; ").parse().unwrap());
    let stream = tokio::net::TcpStream::connect(w.gateway.addr)
        .await
        .unwrap();
    let (_ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(response
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("id_token=")));

    // A revoked refresh token: the API call gets 401, not a redirect.
    let mut revoked = w.browser();
    revoked.navigate(&format!("{}/", w.app())).await;
    w.expire_id_token(&mut revoked);
    w.provider.revoke_refresh_tokens();
    let reply = revoked
        .request("GET", &format!("{}/api/x", w.app()), Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_clears_cookies_and_cannot_be_triggered_cross_site() {
    let w = World::start("").await;
    let mut browser = w.browser();
    browser.navigate(&format!("{}/", w.app())).await;
    let logout = format!("{}/_logout", w.app());
    let reply = browser
        .request(
            "GET",
            &logout,
            Mode::Navigate,
            &[("sec-fetch-site", "cross-site")],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(browser.cookie("sandport.test", "id_token").is_some());
    let reply = browser
        .request(
            "GET",
            &logout,
            Mode::Navigate,
            &[("sec-fetch-site", "same-origin")],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let location = reply.header("location").unwrap();
    assert!(
        location.starts_with(&w.provider.end_session_endpoint()),
        "{location}"
    );
    assert!(
        location.contains(&format!("client_id={CLIENT_ID}")),
        "{location}"
    );
    assert!(browser.cookie("sandport.test", "id_token").is_none());
    assert!(browser.cookie("sandport.test", "refresh_token").is_none());
    let reply = browser
        .request("GET", &format!("{}/api/x", w.app()), Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_endpoint_keeps_the_previous_json_contract() {
    let w = World::start("").await;
    let mut browser = w.browser();
    let endpoint = format!("{}/_token/refresh", w.app());
    let reply = browser
        .request("GET", &endpoint, Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.text(), r#"{"error":"Method not allowed"}"#);
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = browser
        .request("POST", &endpoint, Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text(), r#"{"error":"No refresh token available"}"#);
    browser.navigate(&format!("{}/", w.app())).await;
    let reply = browser
        .request("POST", &endpoint, Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), r#"{"success":true,"expiresIn":86400}"#);
    w.provider.revoke_refresh_tokens();
    let reply = browser
        .request("POST", &endpoint, Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .text()
            .starts_with(r#"{"error":"Token refresh failed","details":"#),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn jwks_rotation_picks_up_the_new_kid_and_drops_the_old() {
    let w = World::start("").await;
    let mut browser = w.browser();
    browser.navigate(&format!("{}/", w.app())).await;
    let api = format!("{}/api/x", w.app());
    assert_eq!(
        browser
            .request("GET", &api, Mode::Fetch, &[], "")
            .await
            .status,
        StatusCode::OK
    );

    // New kid: picked up by one refetch; tokens of the dropped key stop working.
    let fetches = w.provider.jwks_fetches();
    w.provider.rotate_keys();
    let fresh = w.provider.mint(w.provider.standard_claims("alice"));
    let bearer = format!("Bearer {fresh}");
    let reply = w
        .browser()
        .request("GET", &api, Mode::Fetch, &[("authorization", &bearer)], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(w.provider.jwks_fetches(), fetches + 1);
    let mut old_only = w.browser();
    old_only.cookies = browser.cookies.clone();
    old_only.cookies.retain(|(_, name), _| name == "id_token");
    assert_eq!(
        old_only
            .request("GET", &api, Mode::Fetch, &[], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_unavailable_jwks_keeps_cached_keys_and_refuses_unknown_kids_quickly() {
    let w = World::start("").await;
    let mut browser = w.browser();
    browser.navigate(&format!("{}/", w.app())).await;
    let api = format!("{}/api/x", w.app());
    for mode in [JwksMode::Hang, JwksMode::Unavailable503] {
        w.provider.set_jwks_mode(mode);
        let fetches = w.provider.jwks_fetches();
        let unknown = format!(
            "Bearer {}",
            w.provider
                .mint_unknown_kid(w.provider.standard_claims("alice"))
        );
        let started = std::time::Instant::now();
        let reply = w
            .browser()
            .request("GET", &api, Mode::Fetch, &[("authorization", &unknown)], "")
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{mode:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode:?} took {:?}",
            started.elapsed()
        );
        // The cached key still verifies the logged-in user.
        let reply = browser.request("GET", &api, Mode::Fetch, &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{mode:?}");
        if mode == JwksMode::Hang {
            assert_eq!(
                w.provider.jwks_fetches(),
                fetches + 1,
                "the unknown kid caused one refetch"
            );
        } else {
            assert_eq!(
                w.provider.jwks_fetches(),
                fetches,
                "at most one refetch per 10 s"
            );
        }
    }
}

#[tokio::test]
async fn hostile_tokens_are_all_refused() {
    let w = World::start("").await;
    let api = format!("{}/api/x", w.app());
    let hostile = w.provider.hostile_tokens("alice");
    assert!(hostile.len() >= 12, "the table covers the issue's list");
    for token in hostile {
        let bearer = format!("Bearer {}", token.token);
        let mut browser = w.browser();
        // Some are too large to be a header at all: the listener refuses those itself.
        let reply = browser
            .request("GET", &api, Mode::Fetch, &[("authorization", &bearer)], "")
            .await;
        assert!(
            reply.status == StatusCode::UNAUTHORIZED
                || reply.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{}: {}",
            token.name,
            reply.status
        );
        let cookie = format!("id_token={}", token.token);
        if cookie.len() < 32 * 1024 {
            let reply = browser
                .request("GET", &api, Mode::Fetch, &[("cookie", &cookie)], "")
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{} as a cookie",
                token.name
            );
        }
    }
    // Stale cookies from older pools are skipped: every id_token value is tried in order.
    let valid = w.provider.mint(w.provider.standard_claims("alice"));
    let alg_none = w
        .provider
        .mint_alg_none(w.provider.standard_claims("alice"));
    let cookie = format!("id_token={alg_none}; id_token={valid}");
    let reply = w
        .browser()
        .request("GET", &api, Mode::Fetch, &[("cookie", &cookie)], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn runtime_hosts_get_their_own_session_by_one_time_code() {
    let w = World::start("").await;
    let mut browser = w.browser();
    browser.navigate(&format!("{}/", w.app())).await;
    let runtime = w.runtime(ALICE_CONVERSATION);
    let runtime_host = runtime
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();

    // Non-navigation without a runtime session: 401 as before.
    let reply = browser
        .request("GET", &format!("{runtime}/data"), Mode::Fetch, &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // A navigation goes through the app and comes back with a session.
    let (url, reply) = browser.navigate(&format!("{runtime}/page?x=1")).await;
    assert_eq!(url, format!("{runtime}/page?x=1"));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["target"], "/page?x=1");
    assert!(browser.cookie(&runtime_host, "sandport_runtime").is_some());
    assert!(
        browser.cookie(&runtime_host, "id_token").is_none(),
        "platform tokens stay on the app host"
    );
    let headers = echo_headers(&reply);
    for secret in ["id_token", "refresh_token", "sandport_runtime", "x-cognito"] {
        assert!(
            !headers.contains(secret),
            "{secret} reached the sandbox: {headers}"
        );
    }

    // The code is single-use and bound to its host.
    let auth = format!(
        "{}/_sandport/runtime-auth?host={}&rd=%2F",
        w.app(),
        runtime.trim_start_matches("http://")
    );
    let reply = browser.request("GET", &auth, Mode::Navigate, &[], "").await;
    let redeem = reply.header("location").unwrap().to_owned();
    let mut other = w.browser();
    let other_host = w
        .runtime(ALICE_CONVERSATION)
        .replace(&format!("{}-", w.upstream.port()), "8001-");
    let misplaced = redeem.replace(&runtime, &other_host);
    let reply = other
        .request("GET", &misplaced, Mode::Navigate, &[], "")
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "a code for another runtime host"
    );
    let reply = other.request("GET", &redeem, Mode::Navigate, &[], "").await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "a code already tried elsewhere is gone"
    );
    let reply = browser.request("GET", &auth, Mode::Navigate, &[], "").await;
    let redeem = reply.header("location").unwrap().to_owned();
    assert_eq!(
        other
            .request("GET", &redeem, Mode::Navigate, &[], "")
            .await
            .status,
        StatusCode::FOUND
    );
    assert_eq!(
        other
            .request("GET", &redeem, Mode::Navigate, &[], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "replay"
    );

    // Someone else's conversation: no code.
    let bob = w.runtime(BOB_CONVERSATION);
    let auth = format!(
        "{}/_sandport/runtime-auth?host={}&rd=%2F",
        w.app(),
        bob.trim_start_matches("http://")
    );
    let reply = browser.request("GET", &auth, Mode::Navigate, &[], "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // The runtime cookie is worthless on another runtime host.
    let alice_cookie = browser
        .cookie(&runtime_host, "sandport_runtime")
        .unwrap()
        .clone();
    let bob_host = bob
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let mut thief = w.browser();
    thief
        .cookies
        .insert((bob_host, "sandport_runtime".into()), alice_cookie);
    assert_eq!(
        thief
            .request("GET", &format!("{bob}/"), Mode::Fetch, &[], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn browser_guards_cors_websocket_origin_and_writes_from_runtimes() {
    let w = World::start("").await;
    let mut browser = w.browser();
    browser.navigate(&format!("{}/", w.app())).await;
    let runtime = w.runtime(ALICE_CONVERSATION);
    browser.navigate(&format!("{runtime}/")).await;

    let preflight = browser
        .request(
            "OPTIONS",
            &format!("{runtime}/api"),
            Mode::Fetch,
            &[
                ("origin", &w.app()),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
            ],
            "",
        )
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(&*w.app())
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    let call = browser
        .request(
            "GET",
            &format!("{runtime}/api"),
            Mode::Fetch,
            &[("origin", &w.app())],
            "",
        )
        .await;
    assert_eq!(call.status, StatusCode::OK);
    assert_eq!(call.header("access-control-allow-origin"), Some(&*w.app()));

    let write = browser
        .request(
            "POST",
            &format!("{}/api/settings", w.app()),
            Mode::Fetch,
            &[("origin", &runtime)],
            "{}",
        )
        .await;
    assert_eq!(
        write.status,
        StatusCode::FORBIDDEN,
        "a sandbox page may not write to the app"
    );

    let handshake = |origin: String| {
        let cookie = browser
            .cookies
            .iter()
            .filter(|((host, _), _)| runtime.contains(host.as_str()))
            .map(|((_, name), value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let gateway = w.gateway.addr;
        let host = runtime.trim_start_matches("http://").to_owned();
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{gateway}/__sandbox/ws")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert("host", host.parse().unwrap());
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
            request
                .headers_mut()
                .insert("cookie", cookie.parse().unwrap());
            let stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
            match tokio_tungstenite::client_async(request, stream).await {
                Ok((_, response)) => response.status(),
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status(),
                Err(error) => panic!("{error}"),
            }
        }
    };
    assert_eq!(handshake(w.app()).await, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        handshake(runtime.clone()).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    assert_eq!(
        handshake("http://evil.test".into()).await,
        StatusCode::FORBIDDEN
    );
}
