//! Streams that stop moving (catalogue 29) and sandboxes that die under an open stream
//! (catalogue 89): every wait is bounded, the client sees an abort and never a clean end,
//! and the upstream side is closed rather than kept.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sandport_testkit::docker::{random_conversation_id, SandboxImage, TestNetwork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    docker_config, labelled_sandbox, static_config, websocket, Gateway, STATIC_CONVERSATION, TOKEN,
};

/// The idle timeout the stall tests run with: every wait below is measured against it.
const IDLE_SECS: u64 = 1;

/// A gateway whose sandbox (and app) is `upstream`, with a one-second idle timeout.
async fn gateway_to(upstream: SocketAddr) -> Gateway {
    let extra = format!("[proxy]\nidle_timeout_secs = {IDLE_SECS}\n");
    let gateway = Gateway::start(&static_config(upstream, &extra));
    gateway.wait_ready().await;
    gateway
}

/// A raw upstream listener on loopback, a gateway to it, and the upstream's port.
async fn raw_upstream_and_gateway() -> (TcpListener, Gateway, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let gw = gateway_to(listener.local_addr().unwrap()).await;
    (listener, gw, port)
}

/// A client connection that has sent the head of a request to `port` (and `then`).
async fn client_sent(gw: &Gateway, method: &str, port: u16, extra: &str, then: &str) -> TcpStream {
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    let request = format!("{}{then}", head(gw, method, port, extra));
    client.write_all(request.as_bytes()).await.unwrap();
    client
}

/// The head of a request to the static sandbox's `port`.
fn head(gw: &Gateway, method: &str, port: u16, extra: &str) -> String {
    format!(
        "{method} /runtime/{STATIC_CONVERSATION}/{port}/ HTTP/1.1\r\nhost: sandport.test:{}\r\n\
         authorization: Bearer {TOKEN}\r\n{extra}\r\n",
        gw.addr.port()
    )
}

/// Reads until the peer closes or `limit` passes; returns the bytes and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (seen, false),
        }
    }
}

/// Reads a request head from the upstream side, returning the bytes read so far.
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the gateway closed before sending a head");
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

fn status_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn catalogue_29_an_upstream_that_never_answers_gets_504_and_is_closed() {
    let (listener, gw, port) = raw_upstream_and_gateway().await;
    let mut client = client_sent(&gw, "GET", port, "", "").await;
    let (mut upstream, _) = listener.accept().await.unwrap();
    read_head(&mut upstream).await;
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut answer))
        .await
        .expect("an answer within the deadline")
        .unwrap();
    assert_eq!(status_of(&answer[..n]), "504");
    assert!(started.elapsed() < Duration::from_secs(IDLE_SECS + 3));
    // The upstream's connection is closed, not left open behind the 504.
    let (_, closed) = read_until_closed(&mut upstream, Duration::from_secs(3)).await;
    assert!(
        closed,
        "the upstream connection was left open after the 504"
    );
}

#[tokio::test]
async fn catalogue_29_an_upload_the_upstream_never_reads_gets_504_and_is_closed() {
    let (listener, gw, port) = raw_upstream_and_gateway().await;
    let client = TcpStream::connect(gw.addr).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let length = 100 * 1024 * 1024;
    let request = head(&gw, "POST", port, &format!("content-length: {length}\r\n"));
    writer.write_all(request.as_bytes()).await.unwrap();
    // The client sends as fast as it is let; the upstream reads nothing at all.
    let uploading = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        while writer.write_all(&chunk).await.is_ok() {}
    });
    let (mut upstream, _) = listener.accept().await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), reader.read(&mut answer))
        .await
        .expect("an answer once the upload has stalled")
        .unwrap();
    assert_eq!(status_of(&answer[..n]), "504");
    uploading.abort();
    // Read what the gateway managed to send: the connection ends instead of staying open.
    let (seen, closed) = read_until_closed(&mut upstream, Duration::from_secs(5)).await;
    assert!(
        closed,
        "the upstream connection was left open after the 504"
    );
    assert!(seen.len() < length, "the upload never completed upstream");
}

#[tokio::test]
async fn catalogue_29_a_dripping_response_is_cut_at_the_idle_timeout() {
    let (listener, gw, port) = raw_upstream_and_gateway().await;
    let mut client = client_sent(&gw, "GET", port, "", "").await;
    let (mut upstream, _) = listener.accept().await.unwrap();
    read_head(&mut upstream).await;
    upstream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nx")
        .await
        .unwrap();
    // One byte every three idle periods: never enough to keep the stream alive.
    let dripping = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3 * IDLE_SECS)).await;
            if upstream.write_all(b"x").await.is_err() {
                return true;
            }
        }
    });
    let started = Instant::now();
    let (seen, closed) = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert!(closed, "the client connection stays open on a stalled body");
    assert!(
        started.elapsed() < Duration::from_secs(3 * IDLE_SECS),
        "cut after {:?}, not at the idle timeout",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &seen[seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert!(
        body.len() < 100,
        "the client sees a truncated body, never a whole one"
    );
    // The upstream side is closed too: its next drip fails.
    let upstream_closed = tokio::time::timeout(Duration::from_secs(10), dripping).await;
    assert!(matches!(upstream_closed, Ok(Ok(true))));
}

#[tokio::test]
async fn catalogue_29_a_client_that_stops_its_upload_gets_408_and_the_upstream_never_completes() {
    let (listener, gw, port) = raw_upstream_and_gateway().await;
    let length = "content-length: 10\r\n";
    let mut client = client_sent(&gw, "POST", port, length, "x").await;
    let (mut upstream, _) = listener.accept().await.unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert_eq!(
        status_of(&answer),
        "408",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(closed, "the client connection is closed after the 408");
    assert!(started.elapsed() < Duration::from_secs(IDLE_SECS + 3));
    let (seen, closed) = read_until_closed(&mut upstream, Duration::from_secs(5)).await;
    assert!(closed, "the upstream connection is closed");
    let text = String::from_utf8_lossy(&seen);
    assert!(
        !text.ends_with("xxxxxxxxxx"),
        "the body never completed upstream"
    );
}

#[tokio::test]
async fn catalogue_29_an_upload_that_keeps_moving_is_not_cut_by_the_idle_timeout() {
    let (listener, gw, port) = raw_upstream_and_gateway().await;
    // Ten bytes over three idle periods: slow, but never idle for a whole period.
    let mut client = client_sent(&gw, "POST", port, "content-length: 10\r\n", "").await;
    let upstream = tokio::spawn(async move {
        let (mut upstream, _) = listener.accept().await.unwrap();
        let mut seen = read_head(&mut upstream).await;
        let body_start = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut buf = [0u8; 64];
        while seen.len() < body_start + 10 {
            let n = upstream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
        upstream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        upstream
    });
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300 * IDLE_SECS)).await;
        client.write_all(b"y").await.unwrap();
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(status_of(&answer[..n]), "200");
    drop(upstream.await.unwrap());
}

/// A download, an SSE stream and a WebSocket to one sandbox, then `kill`: each ends within
/// the deadline with an abort (never a clean end), and the gateway's descriptors return.
#[tokio::test]
async fn catalogue_89_streams_to_a_killed_sandbox_abort_within_a_second() {
    let image = SandboxImage::build().unwrap();
    let network = TestNetwork::create().unwrap();
    let conversation = random_conversation_id();
    let sandbox = labelled_sandbox(&image, &network, &conversation, Some("alice"), &[5000]).await;
    // The idle timeout is long: only the sandbox's death can end these streams in time.
    // (docker_config ends with its [proxy] table.)
    let config = format!(
        "{}idle_timeout_secs = 300\n",
        docker_config("alice", network.name())
    );
    let gw = Gateway::start(&config);
    gw.wait_ready().await;
    let fds_before = open_fds(&gw);

    let base = format!("/runtime/{conversation}/5000/__sandbox");
    let host = format!("sandport.test:{}", gw.addr.port());
    let mut download = open_stream(&gw, &host, &format!("{base}/download?bytes=1073741824")).await;
    let mut sse = open_stream(&gw, &host, &format!("{base}/sse?n=100000&interval_ms=50")).await;
    let (mut ws, _) = websocket(gw.addr, &host, &format!("{base}/ws")).await;

    sandbox.kill().unwrap();
    let killed = Instant::now();
    let (download_ends, sse_ends, ws_ends) = tokio::join!(
        ends_without_completing(&mut download),
        ends_without_completing(&mut sse),
        async {
            let limit = Duration::from_secs(10);
            tokio::time::timeout(limit, async { while let Some(Ok(_)) = ws.next().await {} })
                .await
                .is_ok()
                .then(|| killed.elapsed())
        },
    );
    for (what, ended) in [
        ("download", download_ends),
        ("sse", sse_ends),
        ("websocket", ws_ends),
    ] {
        let after = ended.unwrap_or_else(|| panic!("the {what} never ended"));
        assert!(
            after < Duration::from_millis(1500),
            "the {what} ended {after:?} after the kill"
        );
    }
    drop((download, sse, ws));
    crate::harness::eventually("descriptors back", Duration::from_secs(5), || async {
        open_fds(&gw) <= fds_before
    })
    .await;
}

/// A raw GET whose response head has been read; the stream is left mid-body.
async fn open_stream(gw: &Gateway, host: &str, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let n = stream.read(&mut first).await.unwrap();
    assert_eq!(status_of(&first[..n]), "200");
    stream
}

/// How long after now a stream mid-body took to be closed. A body with a length that ends
/// short, or a chunked body without its last chunk, is an abort; the tests read the bytes
/// only to drain them.
async fn ends_without_completing(stream: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let (seen, closed) = read_until_closed(stream, Duration::from_secs(10)).await;
    assert!(
        !seen.ends_with(b"0\r\n\r\n"),
        "a chunked stream ended cleanly"
    );
    closed.then(|| started.elapsed())
}

fn open_fds(gw: &Gateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .map(Iterator::count)
        .unwrap_or(0)
}
