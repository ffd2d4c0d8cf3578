//! The sandbox server served in-process on loopback (no Docker involved).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sandport_testkit::docker::wait_for_http_blocking;
use sandport_testkit::sandbox_server::{self, download_byte};
use serde_json::Value;
use tokio::net::TcpStream;

async fn get(
    addr: std::net::SocketAddr,
    path: &str,
) -> (hyper::http::response::Parts, bytes::Bytes) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "local.test")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let res = sender.send_request(req).await.expect("response");
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.expect("body").to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_local_serves_echo_and_download() {
    let addr = sandbox_server::spawn_local().await.expect("spawn");
    tokio::task::spawn_blocking(move || wait_for_http_blocking(addr, Duration::from_secs(5)))
        .await
        .expect("join")
        .expect("ready");

    let (parts, body) = get(addr, "/x/%2e%2e/y?z=%41").await;
    assert_eq!(parts.status, 200);
    let echo: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echo["target"], "/x/%2e%2e/y?z=%41");
    assert_eq!(echo["port"], addr.port());
    assert_eq!(echo["hostname"], "sandbox-local");

    let (parts, body) = get(addr, "/__sandbox/download?bytes=200000").await;
    assert_eq!(parts.headers["content-length"], "200000");
    assert_eq!(body.len(), 200_000);
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == download_byte(i as u64)));
}
