//! The static backend: the real binary routing to an in-process upstream on loopback.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use sandport_testkit::sandbox_server;

use crate::harness::{eventually, get, send, send_body, Gateway, TOKEN};

const OWNED: &str = "0123456789abcdef0123456789abcdef";
const FOREIGN: &str = "fedcba9876543210fedcba9876543210";
const UNLABELLED: &str = "00000000000000000000000000000000";
const UNKNOWN: &str = "11111111111111111111111111111111";

/// A gateway whose three static sandboxes and app all live on one in-process upstream.
async fn world(extra: &str) -> (Gateway, u16) {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let config = format!(
        "[routing]\nbase_domain = \"sandport.test\"\n\
         [app]\nupstream = \"http://{upstream}\"\n\
         [identity]\ntoken = \"{TOKEN}\"\nuser_id = \"alice\"\n\
         [discovery]\nbackend = \"static\"\n\
         [[discovery.sandboxes]]\nconversation_id = \"{OWNED}\"\nuser_id = \"alice\"\naddress = \"127.0.0.1\"\n\
         [[discovery.sandboxes]]\nconversation_id = \"{FOREIGN}\"\nuser_id = \"bob\"\naddress = \"127.0.0.1\"\n\
         [[discovery.sandboxes]]\nconversation_id = \"{UNLABELLED}\"\naddress = \"127.0.0.1\"\n\
         {extra}"
    );
    let gateway = Gateway::start(&config);
    gateway.wait_ready().await;
    (gateway, upstream.port())
}

/// A port nothing listens on: bound, then released (a refused connection is the point).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn authed(host: &str, target: &str) -> http::request::Builder {
    get(host, target).header("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn both_route_forms_forward_the_raw_target() {
    let (gw, port) = world("").await;
    let main = format!("sandport.test:{}", gw.addr.port());
    for target in ["/a%2Fb//c/../d?x=%20&y=1", "/", "/%2e%2e/x?"] {
        let reply = send(
            gw.addr,
            authed(&main, &format!("/runtime/{OWNED}/{port}{target}")),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["target"], target);
        let host = format!("{port}-{OWNED}.runtime.sandport.test:{}", gw.addr.port());
        let reply = send(gw.addr, authed(&host, target)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["target"], target);
        let headers = reply.json()["headers"].to_string();
        assert!(
            headers.contains(&format!("[\"host\",\"{host}\"]")),
            "{headers}"
        );
    }
    // An empty rest is "/".
    let reply = send(gw.addr, authed(&main, &format!("/runtime/{OWNED}/{port}")))
        .await
        .unwrap();
    assert_eq!(reply.json()["target"], "/");
}

#[tokio::test]
async fn ownership_and_errors_use_the_documented_bodies() {
    let (gw, port) = world("").await;
    let main = format!("sandport.test:{}", gw.addr.port());
    let cases = [
        (
            authed(&main, &format!("/runtime/{FOREIGN}/{port}/")),
            403,
            "Access denied: you do not own this conversation\n",
        ),
        (
            authed(&main, &format!("/runtime/{UNLABELLED}/{port}/")),
            403,
            "Access denied: container not properly labeled with owner\n",
        ),
        (
            authed(&main, &format!("/runtime/{UNKNOWN}/{port}/")),
            404,
            &format!("No container found for conversation {UNKNOWN}\n") as &str,
        ),
        (
            get(&main, &format!("/runtime/{OWNED}/{port}/")),
            401,
            "Authentication required. Please login at the main application first.\n",
        ),
        // Identity first: an anonymous caller cannot tell unknown from foreign.
        (
            get(&main, &format!("/runtime/{UNKNOWN}/{port}/")),
            401,
            "Authentication required. Please login at the main application first.\n",
        ),
        (
            authed(&main, &format!("/runtime/{port}/")),
            404,
            "Not found\n",
        ),
        (
            authed(&main, &format!("/runtime/{OWNED}/0{port}/")),
            404,
            "Not found\n",
        ),
        (
            authed(&main, &format!("/runtime/{}/{port}/", OWNED.to_uppercase())),
            404,
            "Not found\n",
        ),
    ];
    for (request, status, body) in cases {
        let reply = send(gw.addr, request).await.unwrap();
        assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
        assert_eq!(reply.text(), body);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
}

#[tokio::test]
async fn closed_ports_answer_502_204_or_a_retrying_page() {
    let (gw, _) = world("").await;
    let closed = closed_port();
    let main = format!("sandport.test:{}", gw.addr.port());
    let target = format!("/runtime/{OWNED}/{closed}/api");
    let reply = send(gw.addr, authed(&main, &target)).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.text(),
        format!("Upstream not reachable for conversation {OWNED}\n")
    );

    let probe = authed(&main, &target)
        .header("origin", "http://sandport.test")
        .header("accept", "application/json");
    let reply = send(gw.addr, probe).await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    let navigation = authed(&main, &target).header("sec-fetch-mode", "navigate");
    let reply = send(gw.addr, navigation).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        reply.text().contains("http-equiv=\"refresh\""),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn identity_and_sandport_credentials_never_reach_a_sandbox() {
    let (gw, port) = world("").await;
    let host = format!("{port}-{OWNED}.runtime.sandport.test:{}", gw.addr.port());
    let request = get(&host, "/")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("cookie", format!("app=1; sandport_token={TOKEN}"))
        .header("x-cognito-user-id", "mallory")
        .header("x-cognito-email", "m@example.com")
        .header("x-origin-verify", "guess")
        .header("x-forwarded-for", "203.0.113.66");
    let reply = send(gw.addr, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let headers = reply.json()["headers"].to_string().to_lowercase();
    for leaked in [
        "x-cognito",
        "x-origin-verify",
        "authorization",
        TOKEN,
        "203.0.113.66",
    ] {
        assert!(
            !headers.contains(leaked),
            "{leaked} reached the sandbox: {headers}"
        );
    }
    assert!(headers.contains("[\"cookie\",\"app=1\"]"), "{headers}");
    assert!(
        headers.contains("[\"x-forwarded-for\",\"127.0.0.1\"]"),
        "{headers}"
    );
    assert!(
        headers.contains("[\"x-forwarded-proto\",\"http\"]"),
        "{headers}"
    );
}

#[tokio::test]
async fn the_app_gets_the_verified_identity_and_token_mode_gates_it() {
    let (gw, _) = world("").await;
    let main = format!("sandport.test:{}", gw.addr.port());
    let reply = send(gw.addr, get(&main, "/api/x")).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let spoofed = authed(&main, "/api/x?q=1").header("x-cognito-user-id", "mallory");
    let reply = send(gw.addr, spoofed).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["target"], "/api/x?q=1");
    let headers = reply.json()["headers"].to_string();
    assert!(
        headers.contains("[\"x-cognito-user-id\",\"alice\"]"),
        "{headers}"
    );
    assert!(!headers.contains("mallory"), "{headers}");
}

#[tokio::test]
async fn a_query_token_becomes_a_cookie_once() {
    let (gw, port) = world("").await;
    let host = format!("{port}-{OWNED}.runtime.sandport.test:{}", gw.addr.port());
    let reply = send(
        gw.addr,
        get(&host, &format!("/page?a=1&sandport_token={TOKEN}&b=2")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some("/page?a=1&b=2"));
    let cookie = reply.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with(&format!("sandport_token={TOKEN};")),
        "{cookie}"
    );
    // The base domain carries it to the runtime hosts under it (one site for browsers).
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("; Domain=sandport.test"),
        "{cookie}"
    );

    let with_cookie = get(&host, "/page").header("cookie", format!("sandport_token={TOKEN}"));
    assert_eq!(
        send(gw.addr, with_cookie).await.unwrap().status,
        StatusCode::OK
    );
    let wrong = get(&host, "/page?sandport_token=wrong-token-wrong-token");
    assert_eq!(
        send(gw.addr, wrong).await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bodies_above_the_limit_get_413() {
    let (gw, port) = world("[proxy]\nbody_limit_bytes = 1024\n").await;
    let main = format!("sandport.test:{}", gw.addr.port());
    let target = format!("/runtime/{OWNED}/{port}/upload");
    let small = authed(&main, &target).method("POST");
    let reply = send_body(gw.addr, small, Bytes::from(vec![b'a'; 1024]))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_len"], 1024);
    let big = authed(&main, &target).method("POST");
    let reply = send_body(gw.addr, big, Bytes::from(vec![b'a'; 1025]))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn h2c_requests_reach_the_upstream_as_http11_with_the_public_host() {
    let (gw, port) = world("").await;
    let mut sender = crate::harness::h2c_sender(gw.addr).await;
    let authority = format!("{port}-{OWNED}.runtime.sandport.test:{}", gw.addr.port());
    let request = http::Request::get(format!("http://{authority}/h2?x=1"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["target"], "/h2?x=1");
    assert!(echo["headers"]
        .to_string()
        .contains(&format!("[\"host\",\"{authority}\"]")));
}

/// Catalogue 36: an HTTP/2 field value with leading or trailing whitespace is malformed
/// (RFC 9113 §8.2.1): 400, never re-emitted upstream; the same connection keeps serving.
#[tokio::test]
async fn catalogue_36_h2_field_values_with_surrounding_whitespace_are_refused() {
    let (gw, port) = world("").await;
    let mut sender = crate::harness::h2c_sender(gw.addr).await;
    let authority = format!("{port}-{OWNED}.runtime.sandport.test:{}", gw.addr.port());
    let request = |value: &'static str| {
        http::Request::get(format!("http://{authority}/h2"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("x-padded", http::HeaderValue::from_static(value))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    for value in [" leading", "trailing ", "\ttab", " both "] {
        let response = sender.send_request(request(value)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{value:?}");
    }
    let response = sender.send_request(request("in side")).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "inner whitespace is fine"
    );
}

#[tokio::test]
async fn ambiguous_hosts_are_refused() {
    let (gw, _) = world("").await;
    let two_hosts = authed("sandport.test", "/").header("host", "evil.test");
    assert_eq!(
        send(gw.addr, two_hosts).await.unwrap().status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn admin_endpoints() {
    let (gw, _) = world("").await;
    let health = send(gw.admin, get("localhost", "/health")).await.unwrap();
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), "OK");
    assert_eq!(health.headers.get_all("content-type").iter().count(), 1);
    let ready = send(gw.admin, get("localhost", "/ready")).await.unwrap();
    assert_eq!(ready.status, StatusCode::OK);
    let main = format!("sandport.test:{}", gw.addr.port());
    let _ = send(gw.addr, get(&main, "/")).await.unwrap();
    let metrics = send(gw.admin, get("localhost", "/metrics"))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("sandport_requests_total{route=\"app\",status=\"401\"}"),
        "{metrics}"
    );
    // The public listener never serves the admin endpoints.
    let public = send(gw.addr, authed(&main, "/metrics")).await.unwrap();
    assert!(!public.text().contains("sandport_requests_total"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let (mut gw, port) = world("").await;
    let main = format!("sandport.test:{}", gw.addr.port());
    let addr = gw.addr;
    let slow = tokio::spawn(send(
        addr,
        authed(
            &main,
            &format!("/runtime/{OWNED}/{port}/__sandbox/slow?ms=800"),
        ),
    ));
    // In flight once the gateway has opened its upstream connection for it.
    eventually(
        "the slow request forwarded",
        Duration::from_secs(5),
        || async { gw.metric("sandport_upstream_connections_total", "").await >= 1.0 },
    )
    .await;
    let started = Instant::now();
    gw.signal("TERM");
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request was cut"
    );
    assert_eq!(reply.text(), "slow");
    let (_, status, stderr) = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drain took {:?}",
        started.elapsed()
    );
    // New connections are refused once draining started.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Catalogue 112: SIGHUP (a closed terminal, a log rotator) would end the process by
/// default; sandport logs that it ignores it and keeps serving.
#[tokio::test]
async fn sighup_is_logged_and_ignored() {
    let (gw, port) = world("").await;
    let main = format!("sandport.test:{}", gw.addr.port());
    gw.signal("HUP");
    gw.wait_for_log_line("the SIGHUP warning", |line| line.contains("SIGHUP ignored"))
        .await;
    let reply = send(gw.addr, authed(&main, &format!("/runtime/{OWNED}/{port}/")))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "sandport stopped serving after SIGHUP"
    );
}

/// Catalogue 80: every answer sandport makes itself (401, 403, 404, 502, the 204 probe)
/// carries the protective headers, and none reflects the hostile path it was asked for.
#[tokio::test]
async fn catalogue_80_sandports_own_answers_are_protected_and_reflect_no_input() {
    let (gw, _) = world("").await;
    let closed = closed_port();
    let main = format!("sandport.test:{}", gw.addr.port());
    let script = "%3Cscript%3Ealert(1)%3C/script%3E";
    let cases = [
        (
            get(&main, &format!("/runtime/{OWNED}/5000/{script}")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            authed(&main, &format!("/runtime/{FOREIGN}/5000/{script}")),
            StatusCode::FORBIDDEN,
        ),
        (
            authed(&main, &format!("/runtime/{UNKNOWN}/5000/{script}")),
            StatusCode::NOT_FOUND,
        ),
        (
            // a malformed runtime path is 404 (docs/security.md, "Odd runtime paths")
            authed(&main, &format!("/runtime/{script}/5000/")),
            StatusCode::NOT_FOUND,
        ),
        (
            authed(&main, &format!("/runtime/{OWNED}/{closed}/{script}")),
            StatusCode::BAD_GATEWAY,
        ),
        (
            authed(&main, &format!("/runtime/{OWNED}/{closed}/{script}"))
                .header("origin", "http://sandport.test")
                .header("accept", "application/json"),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (request, status) in cases {
        let reply = send(gw.addr, request).await.unwrap();
        assert_eq!(reply.status, status, "{}", reply.text());
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
            ("content-security-policy", "frame-ancestors 'none'"),
        ] {
            assert_eq!(reply.header(name), Some(value), "{status}: {name}");
        }
        if status != StatusCode::NO_CONTENT {
            assert_eq!(
                reply.header("content-type"),
                Some("text/plain; charset=utf-8"),
                "{status}"
            );
        }
        let text = reply.text().to_ascii_lowercase();
        assert!(
            !text.contains("script") && !text.contains('<'),
            "{status}: {text}"
        );
    }
}
