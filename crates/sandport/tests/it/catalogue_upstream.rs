//! Upstreams that misbehave on the wire (catalogue 21-24): unparseable heads, a fake second
//! response behind a body, a reset mid-body, a flood of interim responses. sandport answers
//! with its own error or a visible abort, and never reuses the poisoned connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{static_config, Gateway, STATIC_CONVERSATION, TOKEN};

/// What a scripted upstream does on its `n`th connection (from 0) once a request head came.
#[derive(Clone, Copy)]
enum Script {
    /// Writes these bytes, then keeps the connection open until the gateway closes it.
    Write(&'static [u8]),
    /// Writes these bytes, then resets the connection (`SO_LINGER` 0).
    WriteThenReset(&'static [u8]),
    /// Writes `count` copies of these bytes, then waits.
    Repeat(&'static [u8], usize),
}

/// An upstream on 127.0.0.1:0 that plays `scripts[n]` on its `n`th connection (the last one
/// for any later connection); returns its address and how many connections it accepted.
async fn scripted(scripts: Vec<Script>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let script = scripts[n.min(scripts.len() - 1)];
            tokio::spawn(play(stream, script));
        }
    });
    (addr, accepted)
}

async fn play(mut stream: TcpStream, script: Script) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    match script {
        Script::Write(bytes) => {
            let _ = stream.write_all(bytes).await;
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Script::WriteThenReset(bytes) => {
            let _ = stream.write_all(bytes).await;
            let _ = stream.flush().await;
            let _ = stream.set_zero_linger();
        }
        Script::Repeat(bytes, count) => {
            for _ in 0..count {
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
            }
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    }
}

/// A gateway whose static sandbox is on loopback, with a one-second idle timeout; every test
/// picks the upstream by the port in the path.
async fn gateway() -> Gateway {
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let extra = "[proxy]\nidle_timeout_secs = 1\n";
    let gateway = Gateway::start(&static_config(unused, extra));
    gateway.wait_ready().await;
    gateway
}

fn request(gw: &Gateway, port: u16, close: bool) -> String {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "GET /runtime/{STATIC_CONVERSATION}/{port}/ HTTP/1.1\r\nhost: sandport.test:{}\r\n\
         authorization: Bearer {TOKEN}\r\n{connection}\r\n",
        gw.addr.port()
    )
}

/// Sends one request with `connection: close` and reads until the gateway closes.
async fn exchange(gw: &Gateway, port: u16) -> String {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(request(gw, port, true).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the gateway answers and closes within the deadline");
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn catalogue_21_an_unparseable_upstream_head_is_a_502_from_sandport() {
    let gw = gateway().await;
    let heads: [&'static [u8]; 6] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-nul: a\0b\r\n\r\n",
        b"hello from HTTP/0.9\r\n",
        b"HTTP/1.1 99 X\r\n\r\n",
    ];
    for head in heads {
        let (upstream, _) = scripted(vec![Script::Write(head)]).await;
        let text = exchange(&gw, upstream.port()).await;
        let shown = String::from_utf8_lossy(head);
        assert!(text.starts_with("HTTP/1.1 502"), "{shown:?} gave: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: text/plain; charset=utf-8"),
            "{shown:?}: not sandport's own answer: {text}"
        );
    }
    let (upstream, _) = scripted(vec![Script::Write(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    assert!(exchange(&gw, upstream.port()).await.ends_with("ok"));
}

#[tokio::test]
async fn catalogue_22_a_fake_second_response_behind_a_body_is_never_served() {
    let gw = gateway().await;
    let (upstream, accepted) = scripted(vec![
        Script::Write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfake"),
        Script::Write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"),
    ])
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let first = request(&gw, upstream.port(), false);
    let second = request(&gw, upstream.port(), true);
    stream.write_all(first.as_bytes()).await.unwrap();
    // The first answer before the second request, so the second could reuse the connection.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).ends_with("hi") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the first answer")
            .unwrap();
        assert!(n > 0, "closed before the first answer");
        seen.extend_from_slice(&buf[..n]);
    }
    stream.write_all(second.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the second answer")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.ends_with("real"), "the second request got: {rest}");
    assert!(!rest.contains("fake"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a new upstream connection"
    );
}

#[tokio::test]
async fn catalogue_23_an_upstream_reset_mid_body_is_an_abort_never_a_clean_end() {
    let gw = gateway().await;
    let scripts: [(&'static [u8], &str); 2] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789",
            "length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
            "chunked",
        ),
    ];
    for (bytes, what) in scripts {
        let (upstream, _) = scripted(vec![Script::WriteThenReset(bytes)]).await;
        let started = Instant::now();
        let text = exchange(&gw, upstream.port()).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: slow abort"
        );
        assert!(text.starts_with("HTTP/1.1 200"), "{what}: {text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        match what {
            "length" => assert!(body.len() < 100, "{what}: a whole body: {text}"),
            _ => assert!(!body.ends_with("0\r\n\r\n"), "{what}: a clean end: {text}"),
        }
    }
}

#[tokio::test]
async fn catalogue_24_a_flood_of_interim_responses_ends_in_504() {
    let gw = gateway().await;
    let hint: &'static [u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n";
    let (upstream, _) = scripted(vec![Script::Repeat(hint, 100_000)]).await;
    let started = Instant::now();
    let text = exchange(&gw, upstream.port()).await;
    assert!(
        text.starts_with("HTTP/1.1 504"),
        "{}",
        &text[..text.len().min(400)]
    );
    assert!(
        text.matches("103 Early Hints").count() <= 1,
        "interim responses are not relayed in bulk"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}
