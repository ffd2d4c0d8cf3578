//! The listener itself: TLS with ALPN, slow and silent clients, the drain with open tunnels,
//! and structured access logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sandport_testkit::sandbox_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{static_config, Gateway, STATIC_CONVERSATION as CID, TOKEN};

#[tokio::test]
async fn tls_serves_h2_and_http11_by_alpn() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["sandport.test".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let gw = Gateway::start_with_server_keys(&static_config(upstream, ""), &extra);
    gw.wait_ready().await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    for (alpn, version) in [
        (b"h2".to_vec(), http::Version::HTTP_2),
        (b"http/1.1".to_vec(), http::Version::HTTP_11),
    ] {
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("sandport.test").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let authority = format!("sandport.test:{}", gw.addr.port());
        let target = format!("/runtime/{CID}/{}/tls?x=1", upstream.port());
        let response = if version == http::Version::HTTP_2 {
            let (mut sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            let request = http::Request::get(format!("https://{authority}{target}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(connection);
            let request = http::Request::get(&target)
                .header("host", &authority)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            sender.send_request(request).await.unwrap()
        };
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["target"], "/tls?x=1");
        assert!(echo["headers"]
            .to_string()
            .contains("[\"x-forwarded-proto\",\"https\"]"));
    }
}

#[tokio::test]
async fn slow_and_silent_clients_are_closed_by_the_header_timeout() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = Gateway::start_with_server_keys(
        &static_config(upstream, ""),
        "header_read_timeout_secs = 1\n",
    );
    gw.wait_ready().await;
    let partial_head = b"GET / HTTP/1.1\r\nHost: sandport.test\r\nX-Slow: ".as_slice();
    for sent in [
        b"".as_slice(),
        b"G".as_slice(),
        b"PRI * HTTP/2.0\r\n".as_slice(),
        partial_head,
    ] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let started = Instant::now();
        let mut buffer = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        let elapsed = started.elapsed();
        assert!(
            read.is_ok(),
            "{:?}: still open after 5 s",
            String::from_utf8_lossy(sent)
        );
        assert!(
            elapsed >= Duration::from_millis(800),
            "{:?} closed too early: {elapsed:?}",
            String::from_utf8_lossy(sent)
        );
    }
}

/// The first-request deadline is for connections that never send a request: an h2 connection
/// in use keeps serving past it (no GOAWAY after `header_read_timeout_secs`).
#[tokio::test]
async fn a_connection_in_use_outlives_the_first_request_deadline() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = Gateway::start_with_server_keys(
        &static_config(upstream, ""),
        "header_read_timeout_secs = 1\n",
    );
    gw.wait_ready().await;
    let mut sender = crate::harness::h2c_sender(gw.addr).await;
    let target = format!(
        "http://{}-{CID}.runtime.sandport.test:{}/",
        upstream.port(),
        gw.addr.port()
    );
    // One request every 100 ms on the one connection, for three deadlines' worth of time.
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(3) {
        pace.tick().await;
        let request = http::Request::get(&target)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap_or_else(|error| {
            panic!(
                "request {served} after {:?} failed: {error}",
                started.elapsed()
            )
        });
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        served += 1;
    }
    assert!(
        !sender.is_closed(),
        "the connection was closed after {served} requests"
    );
}

/// Catalogue 107: past `max_connections` a new connection gets a 503 at once and is closed;
/// the open ones keep working, the refusal is counted, and a freed slot serves again.
#[tokio::test]
async fn catalogue_107_connections_past_the_cap_get_503_at_once() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = Gateway::start_with_server_keys(&static_config(upstream, ""), "max_connections = 2\n");
    gw.wait_ready().await;
    let target = format!("/runtime/{CID}/{}/", upstream.port());
    let open_one = || async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        (sender, tokio::spawn(connection))
    };
    let request = || {
        http::Request::get(&target)
            .header("host", "sandport.test")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut sender, connection) = open_one().await;
        let response = sender.send_request(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        held.push((sender, connection));
    }
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("the connection past the cap is answered and closed at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{answer}"
    );
    assert_eq!(
        gw.metric("sandport_connections_refused_total", "").await,
        1.0
    );
    // the open connections are untouched
    let response = held[0].0.send_request(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    // a freed slot serves new connections again
    drop(held.pop());
    crate::harness::eventually("a freed slot is reused", Duration::from_secs(5), || async {
        let (mut sender, _connection) = open_one().await;
        sender
            .send_request(request())
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

#[tokio::test]
async fn sigterm_ends_open_websockets_at_the_grace_deadline() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let mut gw =
        Gateway::start_with_server_keys(&static_config(upstream, ""), "shutdown_grace_secs = 1\n");
    gw.wait_ready().await;
    let host = format!(
        "{}-{CID}.runtime.sandport.test:{}",
        upstream.port(),
        gw.addr.port()
    );
    let (mut ws, _) = crate::harness::websocket(gw.addr, &host, "/__sandbox/ws").await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    let started = Instant::now();
    gw.signal("TERM");
    // The tunnel keeps working during the grace period...
    ws.send(Message::text("during")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("during"));
    // ...and is cut at its end; the process then exits.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the tunnel outlived the drain");
    let (_, status, stderr) = gw.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{stderr}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "drain took {took:?}"
    );
    assert!(stderr.contains("grace period over"), "{stderr}");
}

#[tokio::test]
async fn json_access_log_has_one_line_per_request() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let mut gw = Gateway::start(&static_config(upstream, "[log]\nformat = \"json\"\n"));
    gw.wait_ready().await;
    let host = format!("sandport.test:{}", gw.addr.port());
    let target = format!("/runtime/{CID}/{}/logged", upstream.port());
    let request =
        crate::harness::get(&host, &target).header("authorization", format!("Bearer {TOKEN}"));
    assert_eq!(
        crate::harness::send(gw.addr, request).await.unwrap().status,
        StatusCode::OK
    );
    gw.signal("TERM");
    let (_, _, stderr) = gw.wait_exit(Duration::from_secs(10));
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["target"] == "sandport::access")
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = &lines[0];
    assert_eq!(line["route"], "runtime_path");
    assert_eq!(line["conversation"], CID);
    assert_eq!(line["port"], upstream.port());
    assert_eq!(line["upstream"], format!("127.0.0.1:{}", upstream.port()));
    assert_eq!(line["status"], 200);
    assert_eq!(line["decision"], "forward");
    assert_eq!(line["user"], "alice");
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(!stderr.contains(TOKEN), "the token reached the log");
}

/// A log reader that stops reading (a full pipe, a stuck collector) must not stop requests:
/// the access log is written from a bounded queue that drops, and counts, what it cannot hold.
#[tokio::test]
async fn a_stuck_log_reader_never_blocks_requests_and_drops_are_counted() {
    const REQUESTS: usize = 20_000;
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let mut gw = Gateway::start(&static_config(upstream, ""));
    gw.wait_ready().await;
    gw.pause_stderr(true);
    let host = format!("sandport.test:{}", gw.addr.port());
    // a conversation nobody has: sandport answers 404 itself, and logs one line each
    let target = format!("/runtime/{}/5000/x", "0".repeat(32));
    let mut sender = crate::harness::connect::<Empty<Bytes>>(gw.addr).await;
    for i in 0..REQUESTS {
        let request = crate::harness::get(&host, &target)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), async {
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        })
        .await
        .unwrap_or_else(|_| panic!("request {i} waited over 5 s for the log"));
        assert_eq!(response, StatusCode::NOT_FOUND);
    }
    let dropped = gw.metric("sandport_log_lines_dropped_total", "").await;
    assert!(dropped > 0.0, "nothing dropped: was the pipe ever full?");
    gw.pause_stderr(false);
    gw.signal("TERM");
    let (_, _, stderr) = gw.wait_exit(Duration::from_secs(20));
    let written = stderr.matches("sandport::access").count();
    println!("stuck log reader: {written} access lines written, {dropped} lines dropped");
    assert!(written < REQUESTS, "{written}");
    assert!(
        written as f64 + dropped >= REQUESTS as f64,
        "{written} + {dropped}"
    );
}

#[tokio::test]
async fn new_connections_go_to_the_least_loaded_worker() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = Gateway::start_with_server_keys(&static_config(upstream, ""), "workers = 2");
    gw.wait_ready().await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut sender = crate::harness::connect::<Empty<Bytes>>(gw.addr).await;
        let request = http::Request::get(format!("/runtime/{CID}/{}/", upstream.port()))
            .header("host", "sandport.test")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // Kept open: each connection stays on its worker.
        clients.push(sender);
    }
    let open = "sandport_connections_open";
    assert_eq!(gw.metric(open, "worker=\"0\"").await, 4.0);
    assert_eq!(gw.metric(open, "worker=\"1\"").await, 4.0);
    drop(clients);
    crate::harness::eventually("connections closed", Duration::from_secs(5), || async {
        gw.metric(open, "").await == 0.0
    })
    .await;
}
