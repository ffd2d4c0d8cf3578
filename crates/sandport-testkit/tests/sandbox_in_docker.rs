//! The sandbox server inside a real container, checked over real sockets.
//!
//! These tests need the Docker engine and fail (never skip) without it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandport_testkit::docker::{
    self, docker_available, random_conversation_id, Container, SandboxImage, TestNetwork,
    NAME_PREFIX, PID_LABEL, TEST_LABEL,
};
use sandport_testkit::sandbox_server::download_byte;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const READY: Duration = Duration::from_secs(15);

/// Image, network and one sandbox container; dropped in reverse order.
struct Sandbox {
    // Field order is drop order: the container first, the image last.
    container: Container,
    net: TestNetwork,
    _image: SandboxImage,
    /// Port 8000 of the container on `net`.
    addr: SocketAddr,
}

async fn sandbox() -> Sandbox {
    docker::sandbox_server_binary().expect("static sandbox-server");
    let started = Instant::now();
    let image = SandboxImage::build().expect("build sandbox image");
    eprintln!("image built in {:?}", started.elapsed());
    let net = TestNetwork::create().expect("create test network");
    let started = Instant::now();
    let container = Container::builder(&image)
        .network(&net)
        .label("conversation_id", random_conversation_id())
        .label("user_id", "user-1")
        .run()
        .expect("run sandbox container");
    let addr = container
        .wait_http(&net, 8000, READY)
        .await
        .expect("sandbox answers HTTP");
    eprintln!("container answering after {:?}", started.elapsed());
    Sandbox {
        container,
        net,
        _image: image,
        addr,
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

async fn send(addr: SocketAddr, req: Request<Body>) -> hyper::Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("send request")
}

fn get(addr: SocketAddr, path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
        .expect("request")
}

async fn body_bytes(res: hyper::Response<hyper::body::Incoming>) -> Bytes {
    res.into_body().collect().await.expect("body").to_bytes()
}

/// Sends raw bytes, reads until the server closes, returns (head, body).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response within 10 s")
        .expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    (
        String::from_utf8_lossy(&buf[..split]).into_owned(),
        buf[split + 4..].to_vec(),
    )
}

fn headers_of(echo: &Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("name").to_owned(),
                pair[1].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

#[test]
fn docker_is_available() {
    assert!(
        docker_available(),
        "the Docker engine must be reachable for the sandport test suite"
    );
}

#[test]
fn sandbox_binary_is_static() {
    let bin = docker::sandbox_server_binary().expect("static sandbox-server");
    docker::check_static_elf(&bin).expect("statically linked");
}

#[tokio::test]
async fn echo_preserves_raw_target_and_headers() {
    let sb = sandbox().await;
    let (head, body) = raw_exchange(
        sb.addr,
        b"GET /a%2Fb//c/../d?x=%20 HTTP/1.1\r\nHost: sandbox.example.test\r\nX-Dup: 1\r\nX-Other: o\r\nX-Dup: 2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let echo: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echo["target"], "/a%2Fb//c/../d?x=%20");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["port"], 8000);
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["body_len"], 0);
    assert_eq!(echo["body_sha256"], hex(&Sha256::digest(b"")));
    assert_eq!(echo["hostname"], sb.container.short_id());
    let headers = headers_of(&echo);
    assert_eq!(headers[0], ("host".into(), "sandbox.example.test".into()));
    let dups: Vec<_> = headers
        .iter()
        .filter(|(n, _)| n == "x-dup")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dups, ["1", "2"]);
    assert!(headers.contains(&("x-other".into(), "o".into())));
}

#[tokio::test]
async fn echo_other_methods_and_targets() {
    let sb = sandbox().await;
    for (request, target, method) in [
        (
            "OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            "*",
            "OPTIONS",
        ),
        (
            "DELETE /%E2%82%AC/;p=1?a=b&a=c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            "/%E2%82%AC/;p=1?a=b&a=c",
            "DELETE",
        ),
        (
            "GET /__sandbox HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            "/__sandbox",
            "GET",
        ),
        (
            "GET http://Other.example:8000/abs%2F?q HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            "http://Other.example:8000/abs%2F?q",
            "GET",
        ),
    ] {
        let (head, body) = raw_exchange(sb.addr, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{request:?}: {head}");
        let echo: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(echo["target"], target, "{request:?}");
        assert_eq!(echo["method"], method, "{request:?}");
    }
}

#[tokio::test]
async fn echo_hashes_a_large_streamed_upload() {
    let sb = sandbox().await;
    const CHUNK: usize = 1024 * 1024;
    const CHUNKS: usize = 50;
    let mut expected = Sha256::new();
    let chunks: Vec<Bytes> = (0..CHUNKS)
        .map(|i| {
            let chunk: Bytes = (0..CHUNK)
                .map(|j| (i * 31 + j * 7) as u8)
                .collect::<Vec<_>>()
                .into();
            expected.update(&chunk);
            chunk
        })
        .collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c))));
    // No Content-Length: sent chunked.
    let req = Request::post("/upload?big=1")
        .header("host", "upload.test")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("request");
    let started = Instant::now();
    let res = send(sb.addr, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    let echo: Value = serde_json::from_slice(&body_bytes(res).await).expect("json");
    eprintln!("50 MiB upload echoed in {:?}", started.elapsed());
    assert_eq!(echo["body_len"], (CHUNK * CHUNKS) as u64);
    assert_eq!(echo["body_sha256"], hex(&expected.finalize()));
    assert_eq!(echo["method"], "POST");
    let headers = headers_of(&echo);
    assert!(headers.contains(&("transfer-encoding".into(), "chunked".into())));
}

#[tokio::test]
async fn every_sandbox_port_answers_with_its_own_number() {
    let sb = sandbox().await;
    for port in [5000u16, 8000, 8001] {
        let addr = SocketAddr::new(sb.addr.ip(), port);
        let res = send(addr, get(addr, "/p")).await;
        let echo: Value = serde_json::from_slice(&body_bytes(res).await).expect("json");
        assert_eq!(echo["port"], port);
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let sb = sandbox().await;
    let stream = TcpStream::connect(sb.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/h2/x%2Fy?q=1", sb.addr))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = sender.send_request(req).await.expect("h2 request");
    assert_eq!(res.status(), StatusCode::OK);
    let echo: Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    assert_eq!(echo["version"], "HTTP/2");
    assert_eq!(echo["target"], "/h2/x%2Fy?q=1");
}

#[tokio::test]
async fn websocket_echoes_text_binary_and_close() {
    let sb = sandbox().await;
    let stream = TcpStream::connect(sb.addr).await.expect("connect");
    let url = format!("ws://{}/__sandbox/ws", sb.addr);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::text("hello")
    );
    let binary = vec![0u8, 1, 2, 254, 255];
    ws.send(Message::binary(binary.clone()))
        .await
        .expect("send binary");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::binary(binary)
    );
    let big = "x".repeat(200_000);
    ws.send(Message::text(big.clone())).await.expect("send big");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::text(big)
    );
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .expect("ping");
    assert_eq!(
        ws.next().await.expect("pong").expect("ok"),
        Message::Pong(Bytes::from_static(b"p"))
    );

    ws.close(None).await.expect("close");
    // The server answers the close, then the stream ends.
    let mut saw_close = false;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(_)) => saw_close = true,
            Ok(other) => panic!("unexpected message after close: {other:?}"),
            Err(e) => panic!("error after close: {e}"),
        }
    }
    assert!(saw_close, "server did not answer the close frame");
}

#[tokio::test]
async fn websocket_headers_endpoint_reports_the_upgrade_request() {
    let sb = sandbox().await;
    let stream = TcpStream::connect(sb.addr).await.expect("connect");
    let mut request = format!("ws://{}/__sandbox/ws-headers?x=%2F", sb.addr)
        .into_client_request()
        .expect("client request");
    request.headers_mut().insert(
        "origin",
        "https://app.example.test".parse().expect("origin"),
    );
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "chat, superchat".parse().expect("protocol"),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat"[..])
    );
    let first = ws.next().await.expect("first message").expect("ok");
    let Message::Text(text) = first else {
        panic!("expected a text message, got {first:?}")
    };
    let echo: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(echo["target"], "/__sandbox/ws-headers?x=%2F");
    assert_eq!(echo["port"], 8000);
    let headers = headers_of(&echo);
    assert!(
        headers.contains(&("origin".into(), "https://app.example.test".into())),
        "{headers:?}"
    );
    assert!(headers.contains(&("host".into(), sb.addr.to_string())));
    assert!(headers.iter().any(|(n, _)| n == "sec-websocket-key"));

    ws.send(Message::text("after")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::text("after")
    );
}

#[tokio::test]
async fn websocket_endpoint_refuses_plain_requests() {
    let sb = sandbox().await;
    let res = send(sb.addr, get(sb.addr, "/__sandbox/ws")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sse_events_arrive_one_by_one_with_spacing() {
    let sb = sandbox().await;
    let started = Instant::now();
    let res = send(sb.addr, get(sb.addr, "/__sandbox/sse?n=5&interval_ms=200")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let mut body = res.into_body();
    let mut text = String::new();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).expect("utf-8"));
            while arrivals.len() < text.matches("\n\n").count() {
                arrivals.push(started.elapsed());
            }
        }
    }
    assert_eq!(
        text,
        "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n"
    );
    assert_eq!(arrivals.len(), 5);
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(150),
            "events too close: {arrivals:?}"
        );
    }
    assert!(arrivals[0] < Duration::from_millis(500), "{arrivals:?}");
}

#[tokio::test]
async fn download_streams_deterministic_bytes() {
    let sb = sandbox().await;
    const N: u64 = 8 * 1024 * 1024 + 3;
    let res = send(
        sb.addr,
        get(sb.addr, &format!("/__sandbox/download?bytes={N}")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-length").map(|v| v.as_bytes()),
        Some(N.to_string().as_bytes())
    );
    let mut body = res.into_body();
    let mut i: u64 = 0;
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            frames += 1;
            for b in data.iter() {
                assert_eq!(*b, download_byte(i), "byte {i}");
                i += 1;
            }
        }
    }
    assert_eq!(i, N);
    assert!(frames > 1, "download arrived in one frame");

    let res = send(sb.addr, get(sb.addr, "/__sandbox/download?bytes=0")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body_bytes(res).await.is_empty());
    let res = send(sb.addr, get(sb.addr, "/__sandbox/download")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn set_cookie_headers_are_verbatim() {
    let sb = sandbox().await;
    let cookies = [
        "a=1; Path=/; HttpOnly",
        "b=x=y+z%20; Domain=.example.test; SameSite=None; Secure",
        "c=",
    ];
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(cookies.iter().map(|c| ("c", *c)))
        .finish();
    let res = send(
        sb.addr,
        get(sb.addr, &format!("/__sandbox/set-cookie?{query}")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let got: Vec<&str> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(got, cookies);
}

#[tokio::test]
async fn status_location_refresh_html_slow_and_unknown() {
    let sb = sandbox().await;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", "302")
        .append_pair("location", "http://localhost:5000/next?a=b&c=%2F")
        .append_pair("refresh", "0; url=http://localhost:8001/")
        .finish();
    let res = send(sb.addr, get(sb.addr, &format!("/__sandbox/status?{query}"))).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()["location"],
        "http://localhost:5000/next?a=b&c=%2F"
    );
    assert_eq!(res.headers()["refresh"], "0; url=http://localhost:8001/");

    let res = send(sb.addr, get(sb.addr, "/__sandbox/status?code=503")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("location").is_none());
    assert_eq!(body_bytes(res).await, "status 503");

    let res = send(sb.addr, get(sb.addr, "/__sandbox/status?code=204")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(body_bytes(res).await.is_empty());

    let res = send(sb.addr, get(sb.addr, "/__sandbox/status?code=abc")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = send(sb.addr, get(sb.addr, "/__sandbox/html")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        body_bytes(res).await,
        "<!doctype html><html><head><title>sandbox</title></head><body><a href=\"http://localhost:5000/x\">x</a></body></html>"
    );

    let started = Instant::now();
    let res = send(sb.addr, get(sb.addr, "/__sandbox/slow?ms=300")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_bytes(res).await, "slow");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let res = send(sb.addr, get(sb.addr, "/__sandbox/nope")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn docker_stop_is_prompt_and_clean() {
    let sb = sandbox().await;
    let started = Instant::now();
    sb.container.stop().expect("docker stop");
    let took = started.elapsed();
    eprintln!("docker stop took {took:?}");
    assert!(took < Duration::from_secs(2), "docker stop took {took:?}");
    assert_eq!(sb.container.status().expect("status"), "exited");
    let inspect = sb.container.inspect().expect("inspect");
    assert_eq!(inspect["State"]["ExitCode"], 0, "{}", inspect["State"]);
    assert!(sb.container.logs().expect("logs").contains("SIGTERM"));
}

#[tokio::test]
async fn container_lifecycle_and_networks() {
    let sb = sandbox().await;
    let c = &sb.container;
    assert!(c.name().starts_with(NAME_PREFIX));
    let labels = &c.inspect().expect("inspect")["Config"]["Labels"];
    assert_eq!(labels[TEST_LABEL], "1");
    assert_eq!(labels[PID_LABEL], std::process::id().to_string());
    assert_eq!(labels["user_id"], "user-1");
    let conversation = labels["conversation_id"].as_str().expect("label");
    assert_eq!(conversation.len(), 32);

    // Paused: the kernel still accepts the connection but nothing answers.
    c.pause().expect("pause");
    assert_eq!(c.status().expect("status"), "paused");
    let probe = Instant::now();
    assert!(docker::wait_for_http(sb.addr, Duration::from_millis(500))
        .await
        .is_err());
    assert!(
        probe.elapsed() < Duration::from_millis(1500),
        "{:?}",
        probe.elapsed()
    );
    c.unpause().expect("unpause");
    docker::wait_for_http(sb.addr, READY)
        .await
        .expect("answers after unpause");

    // A second network gives a second address.
    let other = TestNetwork::create().expect("second network");
    c.connect(&other).expect("connect");
    let second = c.ip(&other).expect("ip on second network");
    assert_ne!(second, sb.addr.ip());
    docker::wait_for_http(SocketAddr::new(second, 8000), READY)
        .await
        .expect("answers on second network");
    c.disconnect(&other).expect("disconnect");
    assert!(c.ip(&other).is_err());

    c.kill().expect("kill");
    assert_eq!(c.status().expect("status"), "exited");
    assert!(c.ip(&sb.net).is_err(), "a stopped container has no IP");
    c.start().expect("start");
    let addr = c.wait_http(&sb.net, 8000, READY).await.expect("restarted");
    c.restart().expect("restart");
    docker::wait_for_http(addr, READY)
        .await
        .expect("answers after restart");

    let mut renamed = Container::builder_for(
        c.inspect().expect("inspect")["Config"]["Image"]
            .as_str()
            .expect("image"),
    )
    .network(&sb.net)
    .run()
    .expect("second container");
    renamed.rename("renamed-x").expect("rename");
    assert!(renamed
        .name()
        .starts_with(&format!("{NAME_PREFIX}renamed-x")));
    let inspect = renamed.inspect().expect("inspect");
    assert_eq!(inspect["Name"], format!("/{}", renamed.name()));
    renamed.remove().expect("remove");
    assert!(renamed.inspect().is_err());
    drop(renamed);
    drop(other);
}

#[tokio::test]
async fn published_port_maps_to_private_port() {
    let image = SandboxImage::build().expect("image");
    let net = TestNetwork::create().expect("network");
    let c = Container::builder(&image)
        .network(&net)
        .sandbox_ports(&[8000, 8001])
        .publish(8000)
        .publish(8001)
        .run()
        .expect("run");
    for private in [8000u16, 8001] {
        let public = c.published_port(private).expect("published port");
        assert_ne!(public, private);
        let addr = SocketAddr::from(([127, 0, 0, 1], public));
        docker::wait_for_http(addr, READY)
            .await
            .expect("published port answers");
        let res = send(addr, get(addr, "/via-host-port")).await;
        let echo: Value = serde_json::from_slice(&body_bytes(res).await).expect("json");
        assert_eq!(echo["port"], private);
    }
    assert!(c.published_port(5000).is_err());
}

#[tokio::test]
async fn host_network_container_answers_on_loopback() {
    let image = SandboxImage::build().expect("image");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let c = Container::builder(&image)
        .host_network()
        .sandbox_ports(&[port])
        .run()
        .expect("run");
    let net = TestNetwork::create().expect("network");
    assert_eq!(
        c.ip(&net).expect("host ip"),
        std::net::IpAddr::from([127, 0, 0, 1])
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    docker::wait_for_http(addr, READY).await.expect("answers");
    let res = send(addr, get(addr, "/host")).await;
    let echo: Value = serde_json::from_slice(&body_bytes(res).await).expect("json");
    assert_eq!(echo["port"], port);
    c.stop().expect("stop");
}

#[tokio::test]
async fn sweep_removes_only_orphans() {
    let sb = sandbox().await;
    let image_tag = sb.container.inspect().expect("inspect")["Config"]["Image"]
        .as_str()
        .expect("image")
        .to_owned();
    // pid_max is at most 2^22, so this pid never runs.
    let orphan = Container::builder_for(&image_tag)
        .label(PID_LABEL, "4194305")
        .run()
        .expect("orphan container");
    let report = docker::sweep_leftovers().expect("sweep");
    assert!(
        report.containers.iter().any(|id| id == orphan.id()),
        "{report:?}"
    );
    assert!(!report.containers.iter().any(|id| id == sb.container.id()));
    assert!(orphan.inspect().is_err(), "orphan still exists");
    docker::wait_for_http(sb.addr, READY)
        .await
        .expect("own container untouched");
    assert_eq!(sb.container.status().expect("status"), "running");
}

#[tokio::test]
async fn fixtures_clean_up_on_drop() {
    let image = SandboxImage::build().expect("image");
    let tag = image.tag().to_owned();
    assert!(tag.starts_with("sandport-test-sandbox:"));
    let net = TestNetwork::create().expect("network");
    let net_name = net.name().to_owned();
    assert!(net_name.starts_with(NAME_PREFIX));
    let c = Container::builder(&image).network(&net).run().expect("run");
    let id = c.id().to_owned();
    // A panicking test drops its fixtures the same way.
    let result = std::panic::catch_unwind(move || {
        // Dropped in reverse: container, network, image.
        let _image = image;
        let _net = net;
        let _c = c;
        panic!("test failure");
    });
    assert!(result.is_err());
    assert!(docker::docker(["inspect", "--type", "container", &id]).is_err());
    assert!(docker::docker(["network", "inspect", &net_name]).is_err());
    assert!(docker::docker(["image", "inspect", &tag]).is_err());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
