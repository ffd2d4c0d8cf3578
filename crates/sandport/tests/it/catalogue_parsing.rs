//! Parsing hostile input on the wire: the real binary must answer a clear 4xx and keep serving,
//! never panic a connection task.

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use sandport_testkit::oidc::TestProvider;
use sandport_testkit::sandbox_server;

use crate::harness::{connect, get, send, Gateway};

const CLIENT_ID: &str = "sandport-test-client";
const CLIENT_SECRET: &str = "client-secret-0123456789";
const CONVERSATION: &str = "0123456789abcdef0123456789abcdef";

/// The test provider, a local upstream and a gateway in OIDC mode with one sandbox of `alice`.
async fn oidc_gateway() -> (TestProvider, SocketAddr, Gateway, tempfile::TempDir) {
    let provider = TestProvider::start(CLIENT_ID, CLIENT_SECRET).await.unwrap();
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let assertion = dir.path().join("assertion-key");
    std::fs::write(&assertion, "assertion-key-0123456789abcdef").unwrap();
    let config = format!(
        "[routing]\nbase_domain = \"sandport.test\"\n[app]\nupstream = \"http://{upstream}\"\n\
         [identity]\nmode = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"{}\"\nassertion_key_file = \"{}\"\n\
         [discovery]\nbackend = \"static\"\n\
         [[discovery.sandboxes]]\nconversation_id = \"{CONVERSATION}\"\nuser_id = \"alice\"\naddress = \"127.0.0.1\"\n",
        provider.issuer(),
        secret.display(),
        assertion.display()
    );
    let gateway = Gateway::start(&config);
    gateway.wait_ready().await;
    (provider, upstream, gateway, dir)
}

/// `/_sandport/runtime-auth?host=` for a percent-encoded host, as a logged-in user asks it.
fn runtime_auth(
    gateway: &Gateway,
    encoded_host: &str,
    id_token: &str,
) -> http::Request<Full<Bytes>> {
    get(
        &format!("sandport.test:{}", gateway.addr.port()),
        &format!("/_sandport/runtime-auth?host={encoded_host}&rd=%2F"),
    )
    .header("cookie", format!("id_token={id_token}"))
    .body(Full::new(Bytes::new()))
    .unwrap()
}

#[tokio::test]
async fn multi_byte_runtime_auth_hosts_get_400_and_the_connection_keeps_serving() {
    let (provider, upstream, gateway, _dir) = oidc_gateway().await;
    let id_token = provider.mint(provider.standard_claims("alice"));
    let good_host = format!("{}-{CONVERSATION}.runtime.sandport.test", upstream.port());
    let hostile = [
        // `é` straddles the offset where the label would end and the domain begin.
        "a%C3%A9runtime.sandport.test".to_owned(),
        format!("5000-{CONVERSATION}%C3%A9runtime.sandport.test"),
        format!("5000-{CONVERSATION}.runtime.sandport.t%C3%A9st"),
        "%F0%9F%98%80.runtime.sandport.test".to_owned(),
        "%C3%A9".to_owned(),
        // Not even UTF-8 once decoded.
        "a%FF%FEruntime.sandport.test".to_owned(),
    ];
    let mut connection = connect(gateway.addr).await;
    for host in &hostile {
        let response = connection
            .send_request(runtime_auth(&gateway, host, &id_token))
            .await
            .unwrap_or_else(|error| panic!("?host={host}: the connection broke: {error}"));
        let status = response.status();
        response.into_body().collect().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "?host={host}");
        // The same connection still serves a well-formed request.
        connection.ready().await.unwrap();
        let response = connection
            .send_request(runtime_auth(&gateway, &good_host, &id_token))
            .await
            .unwrap_or_else(|error| panic!("after ?host={host}: {error}"));
        assert_eq!(response.status(), StatusCode::FOUND, "after ?host={host}");
        response.into_body().collect().await.unwrap();
        connection.ready().await.unwrap();
    }
    // And so does the server, on a fresh connection.
    let reply = send(
        gateway.addr,
        get(&format!("sandport.test:{}", gateway.addr.port()), "/api/x")
            .header("cookie", format!("id_token={id_token}")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

/// A local upstream and a ready gateway for alice with it as her sandbox (and the app).
async fn static_gateway() -> (SocketAddr, Gateway) {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = Gateway::start(&crate::harness::static_config(upstream, ""));
    gw.wait_ready().await;
    (upstream, gw)
}

/// The status line of one raw HTTP/1.1 GET (any request-target, any Host), as alice.
async fn raw_status(gateway: SocketAddr, host: &str, target: &str) -> (u16, String) {
    raw_exchange(
        gateway,
        &format!("GET {target} HTTP/1.1\r\nhost: {host}\r\n"),
        "connection: close\r\n",
    )
    .await
}

/// Sends `start` (request line and headers) plus alice's token and `more` headers; returns the
/// status and everything the gateway wrote before closing.
async fn raw_exchange(gateway: SocketAddr, start: &str, more: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let request = format!(
        "{start}authorization: Bearer {}\r\n{more}\r\n",
        crate::harness::TOKEN
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the gateway answers and closes")
    .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Catalogue 41-44: empty segments, matrix parameters, case and non-canonical ports in the
/// path form never reach a sandbox or the app (whose 200 would be the SPA); an upper-case
/// runtime host is lower-cased before matching and routes to its owner's sandbox.
#[tokio::test]
async fn catalogue_41_to_44_odd_runtime_paths_never_reach_an_upstream() {
    let (upstream, gw) = static_gateway().await;
    let a = crate::harness::STATIC_CONVERSATION;
    let port = upstream.port();
    let host = format!("sandport.test:{}", gw.addr.port());
    // the well-formed request works, so the refusals below are about the form
    let (status, text) = raw_status(gw.addr, &host, &format!("/runtime/{a}/{port}/")).await;
    assert_eq!(status, 200, "{text}");
    let upper = a.to_ascii_uppercase();
    let odd = [
        // 41: empty segments
        format!("//runtime/{a}/{port}/"),
        format!("/runtime//{a}/{port}/"),
        format!("/runtime/{a}//{port}/"),
        // 42: matrix parameters and suffixes
        format!("/runtime/{a};x=y/{port}/"),
        format!("/runtime/{a}/{port};jsessionid=1/"),
        format!("/runtime/{a}/..;/{a}/{port}/"),
        // 43: paths are case-sensitive
        format!("/RUNTIME/{a}/{port}/"),
        format!("/Runtime/{a}/{port}/"),
        format!("/runtime/{upper}/{port}/"),
        // 44: only canonical decimal ports 1-65535
        format!("/runtime/{a}/0{port}/"),
        format!("/runtime/{a}/0/"),
        format!("/runtime/{a}/65536/"),
        format!("/runtime/{a}/99999999999999999999/"),
        format!("/runtime/{a}/-1/"),
        format!("/runtime/{a}/+{port}/"),
        format!("/runtime/{a}/{port}.0/"),
        format!("/runtime/{a}/0x50/"),
        format!(
            "/runtime/{a}/%3{}{}/",
            &port.to_string()[..1],
            &port.to_string()[1..]
        ),
        format!("/runtime/{a}/%EF%BC%95%EF%BC%90%EF%BC%90%EF%BC%90/"),
    ];
    let mut reached = Vec::new();
    for target in &odd {
        let (status, text) = raw_status(gw.addr, &host, target).await;
        // 400 or 404 from sandport itself; 200 would be the sandbox server or the app
        if !(status == 400 || status == 404) || text.contains("\"path\"") {
            reached.push(format!(
                "{target} -> {status}: {}",
                text.lines().next().unwrap_or("")
            ));
        }
    }
    assert!(
        reached.is_empty(),
        "reached an upstream or was not refused:\n{}",
        reached.join("\n")
    );
    // 43: an upper-case runtime host is the same host
    let runtime_host = format!("{port}-{}.RUNTIME.SANDPORT.TEST:{}", a, gw.addr.port());
    let (status, text) = raw_status(gw.addr, &runtime_host, "/").await;
    assert_eq!(status, 200, "{text}");
}

/// One rule for upgrades: a WebSocket opens with GET; a POST asking for one is malformed (400),
/// neither upgraded nor passed on as a plain request.
#[tokio::test]
async fn a_websocket_upgrade_with_another_method_is_refused() {
    let (upstream, gw) = static_gateway().await;
    let a = crate::harness::STATIC_CONVERSATION;
    let host = format!("sandport.test:{}", gw.addr.port());
    for method in ["POST", "PUT", "DELETE"] {
        let (status, text) = raw_exchange(
            gw.addr,
            &format!(
                "{method} /runtime/{a}/{}/ws HTTP/1.1\r\nhost: {host}\r\n",
                upstream.port()
            ),
            "upgrade: websocket\r\nconnection: upgrade\r\nconnection: close\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\ncontent-length: 0\r\n",
        )
        .await;
        assert_eq!(status, 400, "{method}: {text}");
    }
    let (status, text) = raw_status(
        gw.addr,
        &host,
        &format!("/runtime/{a}/{}/", upstream.port()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

/// Catalogue 12, 13: CONNECT and TRACE get 405 and a closed connection, and nothing is dialled
/// (a listener standing in for a Docker TCP port sees no connection); authority-form and
/// asterisk-form targets get 400 and a closed connection; `OPTIONS *` is answered by sandport
/// (404), never forwarded, and the connection goes on.
#[tokio::test]
async fn catalogue_12_13_connect_trace_and_odd_target_forms_are_refused_and_never_forwarded() {
    let docker_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    docker_port.set_nonblocking(true).unwrap();
    let docker_addr = docker_port.local_addr().unwrap();
    let (upstream, gw) = static_gateway().await;
    let a = crate::harness::STATIC_CONVERSATION;
    let app_host = format!("sandport.test:{}", gw.addr.port());
    let runtime_host = format!(
        "{}-{a}.runtime.sandport.test:{}",
        upstream.port(),
        gw.addr.port()
    );
    let cookie = "cookie: id_token=secret-token-value\r\n";
    let cases = [
        (
            format!("CONNECT {docker_addr} HTTP/1.1\r\nhost: {docker_addr}\r\n"),
            405,
        ),
        (
            "CONNECT 169.254.169.254:80 HTTP/1.1\r\nhost: 169.254.169.254:80\r\n".to_owned(),
            405,
        ),
        (
            format!("TRACE / HTTP/1.1\r\nhost: {app_host}\r\n{cookie}"),
            405,
        ),
        (
            format!("TRACE / HTTP/1.1\r\nhost: {runtime_host}\r\n{cookie}"),
            405,
        ),
        (
            format!("GET {app_host} HTTP/1.1\r\nhost: {app_host}\r\n"),
            400,
        ),
        (format!("GET * HTTP/1.1\r\nhost: {app_host}\r\n"), 400),
    ];
    let forwarded = || gw.metric("sandport_upstream_response_seconds_count", "");
    let before = forwarded().await;
    for (start, expected) in &cases {
        // no `connection: close` from the client: closing is the gateway's decision here
        let (status, text) = raw_exchange(gw.addr, start, "").await;
        let line = start.lines().next().unwrap_or_default();
        assert_eq!(status, *expected, "{line}: {text}");
        assert!(
            !text.contains("secret-token-value"),
            "{line} echoed the cookie"
        );
        if *expected == 405 {
            assert!(
                text.to_ascii_lowercase().contains("allow: get"),
                "{line}: {text}"
            );
        }
    }
    for host in [&app_host, &runtime_host] {
        // OPTIONS * keeps the connection: the request after it on the same one is served
        let pipelined = format!(
            "OPTIONS * HTTP/1.1\r\nhost: {host}\r\n\r\nGET /runtime/{a}/{}/ HTTP/1.1\r\nhost: {app_host}\r\n",
            upstream.port()
        );
        let (status, text) = raw_exchange(gw.addr, &pipelined, "connection: close\r\n").await;
        assert_eq!(status, 404, "{text}");
        assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
    }
    // one forwarded request per pipelined GET, none for the refused ones
    assert_eq!(
        forwarded().await - before,
        2.0,
        "a refused request reached an upstream"
    );
    assert_eq!(
        docker_port.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "sandport connected to the address CONNECT named"
    );
}

/// Catalogue 17: 101 headers, one 100 KiB cookie and 300 KiB of headers get 431, a 16 KiB
/// request-target 414, each with the connection closed; the limits leave room for normal
/// requests (a 4 KiB target and 60 headers are served).
#[tokio::test]
async fn catalogue_17_header_and_request_line_limits_answer_431_and_414() {
    let (upstream, gw) = static_gateway().await;
    let a = crate::harness::STATIC_CONVERSATION;
    let host = format!("sandport.test:{}", gw.addr.port());
    let path = format!("/runtime/{a}/{}/", upstream.port());
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let some: String = (0..60).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big_cookie = format!("cookie: c={}\r\n", "a".repeat(100 * 1024));
    let big_headers: String = (0..30)
        .map(|i| format!("x-big{i}: {}\r\n", "b".repeat(10 * 1024)))
        .collect();
    let long_target = format!("{path}?q={}", "q".repeat(16 * 1024));
    let normal_target = format!("{path}?q={}", "q".repeat(4 * 1024));
    let cases = [
        (path.clone(), many, 431),
        (path.clone(), big_cookie, 431),
        (path.clone(), big_headers, 431),
        (long_target, String::new(), 414),
        (normal_target, some, 200),
    ];
    for (target, headers, expected) in cases {
        let start = format!("GET {target} HTTP/1.1\r\nhost: {host}\r\n{headers}");
        // closing is the gateway's decision for the refusals: no `connection: close` sent
        let more = if expected == 200 {
            "connection: close\r\n"
        } else {
            ""
        };
        let (status, text) = raw_exchange(gw.addr, &start, more).await;
        let summary = format!(
            "{} bytes of target, {} of headers",
            target.len(),
            headers.len()
        );
        assert_eq!(
            status,
            expected,
            "{summary}: {}",
            text.lines().next().unwrap_or("")
        );
    }
}

/// Catalogue 16: a malformed request (two `Host` headers, a `Host` that is not an authority)
/// with a valid one pipelined behind it gets one 400 and a closed connection; the second
/// request is never served or forwarded.
#[tokio::test]
async fn catalogue_16_nothing_pipelined_after_a_malformed_request_is_served() {
    let (upstream, gw) = static_gateway().await;
    let a = crate::harness::STATIC_CONVERSATION;
    let host = format!("sandport.test:{}", gw.addr.port());
    let valid = format!(
        "GET /runtime/{a}/{}/ HTTP/1.1\r\nhost: {host}\r\n",
        upstream.port()
    );
    let forwarded = || gw.metric("sandport_upstream_response_seconds_count", "");
    let before = forwarded().await;
    for malformed in [
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nhost: evil.test\r\n\r\n"),
        "GET / HTTP/1.1\r\nhost: a b\r\n\r\n".to_owned(),
    ] {
        let (status, text) = raw_exchange(gw.addr, &format!("{malformed}{valid}"), "").await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "a second answer: {text}"
        );
    }
    assert_eq!(
        forwarded().await,
        before,
        "the pipelined request was forwarded"
    );
}
