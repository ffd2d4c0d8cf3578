//! Upstream connections: kept and reused across requests of every body shape, never reused
//! once the upstream has closed them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use sandport_testkit::sandbox_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    eventually, send, send_body, static_config, Gateway, STATIC_CONVERSATION as OWNED, TOKEN,
};

const CONNECTIONS: &str = "sandport_upstream_connections_total";

/// One worker, so that every client connection shares one upstream pool.
async fn gateway_to(upstream: SocketAddr) -> Gateway {
    let gateway = Gateway::start_with_server_keys(&static_config(upstream, ""), "workers = 1");
    gateway.wait_ready().await;
    gateway
}

fn runtime_request(
    gw: &Gateway,
    method: Method,
    port: u16,
    target: &str,
) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("/runtime/{OWNED}/{port}{target}"))
        .header("host", format!("sandport.test:{}", gw.addr.port()))
        .header("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn one_connection_serves_sequential_requests_of_every_body_shape() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = gateway_to(upstream).await;
    let port = upstream.port();
    let cases: [(Method, &str, &[u8], StatusCode); 7] = [
        (
            Method::GET,
            "/__sandbox/status?code=200",
            b"",
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/__sandbox/status?code=204",
            b"",
            StatusCode::NO_CONTENT,
        ),
        (
            Method::HEAD,
            "/__sandbox/status?code=200",
            b"",
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/__sandbox/download?bytes=300000",
            b"",
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/__sandbox/sse?n=3&interval_ms=1",
            b"",
            StatusCode::OK,
        ),
        (Method::POST, "/echo", b"a request body", StatusCode::OK),
        (
            Method::GET,
            "/__sandbox/status?code=404",
            b"",
            StatusCode::NOT_FOUND,
        ),
    ];
    for round in 0..3 {
        for (method, target, body, status) in &cases {
            let request = runtime_request(&gw, method.clone(), port, target);
            let reply = send_body(gw.addr, request, Bytes::from_static(body))
                .await
                .unwrap();
            assert_eq!(reply.status, *status, "round {round}: {method} {target}");
        }
    }
    assert_eq!(
        gw.metric(CONNECTIONS, "").await,
        1.0,
        "21 sequential requests should share one upstream connection"
    );
}

#[tokio::test]
async fn a_body_abandoned_midway_takes_its_connection_with_it() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = gateway_to(upstream).await;
    let port = upstream.port();
    // The client reads the head of a large download and hangs up.
    {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "GET /runtime/{OWNED}/{port}/__sandbox/download?bytes=50000000 HTTP/1.1\r\n\
             host: sandport.test:{}\r\nauthorization: Bearer {TOKEN}\r\n\r\n",
            gw.addr.port()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buffer = [0u8; 4096];
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    }
    // The next request gets a clean connection, not one with half a body still in it.
    let reply = send(
        gw.addr,
        runtime_request(&gw, Method::GET, port, "/__sandbox/status?code=200"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "status 200");
    assert_eq!(gw.metric(CONNECTIONS, "").await, 2.0);
}

/// An upstream that promises keep-alive and then closes every connection after one response,
/// with the count of connections it closed.
/// Reads a request head from a raw upstream connection; false when the client went away.
/// Writes raw `request` bytes to the gateway and reads until it closes the connection.
async fn exchange_until_closed(gw: &Gateway, request: &str) -> Vec<u8> {
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut raw))
        .await
        .expect("the gateway answers and closes the connection")
        .unwrap();
    raw
}

async fn read_request_head(stream: &mut tokio::net::TcpStream) -> bool {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    true
}

async fn closing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&closed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if !read_request_head(&mut stream).await {
                    return;
                }
                let response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                let _ = stream.write_all(response.as_bytes()).await;
                // Closed without `Connection: close`, as a server timing out an idle
                // keep-alive connection does.
                drop(stream);
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closed)
}

#[tokio::test]
async fn connections_the_upstream_closed_are_not_reused() {
    let (upstream, closed) = closing_upstream().await;
    let gw = gateway_to(upstream).await;
    for attempt in 0..5 {
        let reply = send(
            gw.addr,
            runtime_request(&gw, Method::GET, upstream.port(), "/"),
        )
        .await
        .unwrap();
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "attempt {attempt}: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "ok");
        // The upstream has closed this connection before the next request is sent.
        eventually("the upstream closed", Duration::from_secs(5), || async {
            closed.load(Ordering::SeqCst) > attempt
        })
        .await;
    }
    assert_eq!(gw.metric(CONNECTIONS, "").await, 5.0);
}

/// Catalogue 20: an upstream response with both `Content-Length` and `Transfer-Encoding:
/// chunked` is framed by its chunks (RFC 9112 §6.3); passing the length on would hand the
/// client a truncated body and leave the rest on the connection as the next "response".
#[tokio::test]
async fn catalogue_20_a_response_with_length_and_chunks_is_reframed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut stream).await {
                    return;
                }
                let response = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\
                                transfer-encoding: chunked\r\n\r\n\
                                12\r\nhello, whole body!\r\n0\r\n\r\n";
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    let gw = gateway_to(upstream).await;
    let request = format!(
        "GET /runtime/{OWNED}/{}/ HTTP/1.1\r\nhost: sandport.test:{}\r\n\
         authorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n",
        upstream.port(),
        gw.addr.port()
    );
    let raw = exchange_until_closed(&gw, &request).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{text}");
    assert!(
        !head.contains("content-length: 5"),
        "the stale length was passed on: {text}"
    );
    assert!(body.contains("hello, whole body!"), "truncated: {text}");
    let framed_by_length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map(|length| length.trim().parse::<usize>().unwrap());
    if let Some(length) = framed_by_length {
        assert_eq!(length, body.len(), "{text}");
    } else {
        assert!(head.contains("transfer-encoding: chunked"), "{text}");
    }
}

/// Catalogue 7 and 8: a chunked request body that breaks its own framing (a bad chunk size, a
/// bare CR, an LF-only chunk line) is the client's error: 400, and the upstream never gets a
/// complete chunked body (no terminating `0` chunk), so it cannot act on a truncated upload.
#[tokio::test]
async fn catalogue_7_8_malformed_chunked_bodies_are_400_and_never_complete_upstream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let received = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                // reads what arrives until the gateway gives up on the connection, and never
                // answers: the request is complete only if the upstream saw its last chunk
                let mut raw = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
                    .await;
                log.lock().unwrap().push(raw);
            });
        }
    });
    let gw = gateway_to(upstream).await;
    for bad_body in [
        "0x2\r\nab\r\n0\r\n\r\n",
        "+2\r\nab\r\n0\r\n\r\n",
        "2\r\r;a\r\nab\r\n0\r\n\r\n",
        "a\r\n0123456789\n0\r\n\r\n",
        "11111111111111111\r\nab\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "POST /runtime/{OWNED}/{}/upload HTTP/1.1\r\nhost: sandport.test:{}\r\n\
             authorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n{bad_body}",
            upstream.port(),
            gw.addr.port()
        );
        let raw = exchange_until_closed(&gw, &request).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 400"), "{bad_body:?}: {text}");
    }
    eventually(
        "the upstream saw every attempt end",
        Duration::from_secs(10),
        || async { received.lock().unwrap().len() == 5 },
    )
    .await;
    for raw in received.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(raw);
        assert!(
            !text.contains("\r\n0\r\n\r\n"),
            "a complete body went upstream: {text:?}"
        );
    }
}
