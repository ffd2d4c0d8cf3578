//! The hardening catalogue's lifecycle cases: the SIGTERM drain seen on the wire (WebSocket
//! close codes, HTTP/2 GOAWAY), a restart on a socket passed by the service manager, and idle
//! keep-alive connections reaped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use sandport_testkit::sandbox_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{eventually, get, static_config, Gateway, STATIC_CONVERSATION as CID, TOKEN};

/// Catalogue 110: a WebSocket still open at the grace deadline is told "going away" (1001)
/// both ways, the client in an unmasked close frame and the upstream in a masked one, before
/// the TCP close; the process exits 0 within grace + 1 s.
#[tokio::test]
async fn catalogue_110_websockets_get_close_1001_both_ways_at_the_grace_deadline() {
    let (upstream, received) = recording_websocket_upstream().await;
    let app = sandbox_server::spawn_local().await.unwrap();
    let mut gw =
        Gateway::start_with_server_keys(&static_config(app, ""), "shutdown_grace_secs = 1\n");
    gw.wait_ready().await;
    let host = crate::harness::runtime_host(upstream.port(), CID, &gw);
    let (mut ws, _) = crate::harness::websocket(gw.addr, &host, "/socket").await;
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::text("ping")).await.unwrap();

    let signalled = Instant::now();
    gw.signal("TERM");
    let closing = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("no close frame within 5 s");
    let closed_after = signalled.elapsed();
    let Some(Ok(Message::Close(Some(frame)))) = closing else {
        panic!("expected a close frame, got {closing:?}");
    };
    assert_eq!(frame.code, CloseCode::Away);
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed before the grace deadline: {closed_after:?}"
    );
    let upstream_bytes = tokio::time::timeout(Duration::from_secs(5), received)
        .await
        .expect("the upstream connection was never closed")
        .unwrap();
    assert_eq!(
        last_masked_close_code(&upstream_bytes),
        Some(1001),
        "{upstream_bytes:02x?}"
    );
    let (_, status, stderr) = gw.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{stderr}");
    let exited_after = signalled.elapsed();
    assert!(
        exited_after < Duration::from_secs(2),
        "exit took {exited_after:?} after SIGTERM, grace 1 s"
    );
}

/// Catalogue 110: at SIGTERM an HTTP/2 connection gets GOAWAY at once, while its stream in
/// flight still completes with 200; then the connection closes and the process exits 0
/// within grace + 1 s.
#[tokio::test]
async fn catalogue_110_http2_gets_goaway_at_sigterm_and_its_stream_completes() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let mut gw =
        Gateway::start_with_server_keys(&static_config(upstream, ""), "shutdown_grace_secs = 5\n");
    gw.wait_ready().await;
    let authority = crate::harness::runtime_host(upstream.port(), CID, &gw);
    let h2 = RawH2::open(gw.addr, &authority, "/__sandbox/slow?ms=1500").await;
    eventually(
        "the slow request forwarded",
        Duration::from_secs(5),
        || async { gw.metric("sandport_upstream_connections_total", "").await >= 1.0 },
    )
    .await;

    let signalled = Instant::now();
    gw.signal("TERM");
    let frames = h2.frames_until_eof(Duration::from_secs(10)).await;
    let goaway = frames
        .iter()
        .find(|frame| frame.kind == GOAWAY)
        .unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
    assert!(
        goaway.at.duration_since(signalled) < Duration::from_millis(500),
        "GOAWAY came {:?} after SIGTERM",
        goaway.at.duration_since(signalled)
    );
    let headers = frames
        .iter()
        .find(|frame| frame.kind == HEADERS && frame.stream == 1)
        .unwrap_or_else(|| panic!("no response: {frames:?}"));
    assert_eq!(headers.payload.first(), Some(&0x88), "not :status 200");
    let body: Vec<u8> = frames
        .iter()
        .filter(|frame| frame.kind == DATA && frame.stream == 1)
        .flat_map(|frame| frame.payload.clone())
        .collect();
    assert_eq!(body, b"slow");
    assert!(headers.at > goaway.at, "the stream ended before the GOAWAY");
    let (_, status, stderr) = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    let exited_after = signalled.elapsed();
    assert!(
        exited_after < Duration::from_secs(6),
        "exit took {exited_after:?} after SIGTERM, grace 5 s"
    );
}

/// Catalogue 111: two sandports serve one listening socket passed as fd 3 (systemd socket
/// activation); the first is sent SIGTERM and the second started while clients keep
/// connecting. No connection is refused, every request gets 200, the first exits 0, and the
/// second serves (its `server.listen`, the address the test holds, is not bound).
#[tokio::test]
async fn catalogue_111_a_restart_on_a_passed_socket_refuses_no_connection() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let config = format!(
        "[server]\nlisten = \"{addr}\"\nshutdown_grace_secs = 5\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         {}",
        static_config(upstream, "[log]\nformat = \"json\"\n")
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("sandport.toml");
    std::fs::write(&config_path, config).unwrap();

    let mut first = Activated::start(&socket, &config_path).await;
    assert_eq!(
        first.listen, addr,
        "the passed socket is not the one served"
    );
    let clients = ClientLoop::start(addr, format!("/runtime/{CID}/{}/", upstream.port()));
    clients.wait_for_successes(50).await;
    first.signal_term();
    let second = Activated::start(&socket, &config_path).await;
    let (took, status, stderr) = first.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "the first exited with {status}: {stderr}");
    let before = clients.successes();
    clients.wait_for_successes(before + 50).await;
    let outcome = clients.stop().await;
    assert_eq!(outcome.refused, 0, "refused connections: {outcome:?}");
    assert_eq!(outcome.failed, 0, "failed exchanges: {outcome:?}");
    assert_eq!(outcome.not_ok, 0, "answers other than 200: {outcome:?}");
    let served_by_second = second.requests_served().await;
    assert!(served_by_second >= 50.0, "{served_by_second}");
    println!("restart: {outcome:?}, the first drained in {took:?}");
}

/// Catalogue 106: keep-alive connections with no request in flight for `idle_timeout_secs`
/// (5,000 HTTP/1.1, 500 HTTP/2) are closed, HTTP/1.1 by EOF and HTTP/2 after GOAWAY, while a
/// slow request on its own connection outlives the timeout; the gateway's descriptors return
/// to their baseline.
#[tokio::test]
async fn catalogue_106_idle_keep_alive_connections_are_reaped_and_fds_return_to_baseline() {
    const HTTP1: usize = 5_000;
    const HTTP2: usize = 500;
    let upstream = sandbox_server::spawn_local().await.unwrap();
    // The header timeout (which also bounds HTTP/1.1 idle time) is kept out of the way.
    let gw = Gateway::start_with_server_keys(
        &static_config(upstream, ""),
        "idle_timeout_secs = 10\nheader_read_timeout_secs = 60\n",
    );
    gw.wait_ready().await;
    let baseline = open_fds(gw.pid());
    let slow_target = format!("/runtime/{CID}/{}/__sandbox/slow?ms=11500", upstream.port());
    let slow = tokio::spawn(crate::harness::send(
        gw.addr,
        get("sandport.test", &slow_target).header("authorization", format!("Bearer {TOKEN}")),
    ));
    // Answered by sandport itself (an unknown conversation): no upstream descriptors.
    let target = format!("/runtime/{}/5000/x", "0".repeat(32));
    let opened = Instant::now();
    let mut http1 = Vec::new();
    for _ in 0..HTTP1 / 100 {
        let batch = (0..100).map(|_| idle_http1_connection(gw.addr, &target));
        http1.extend(futures_util::future::join_all(batch).await);
    }
    let batch = (0..HTTP2).map(|_| RawH2::open(gw.addr, "sandport.test", &target));
    let http2 = futures_util::future::join_all(batch).await;
    let open = open_fds(gw.pid());
    let opening = opened.elapsed();
    println!("{HTTP1} + {HTTP2} connections opened in {opening:?}");
    assert!(
        opening < Duration::from_secs(10),
        "opening took {opening:?}"
    );
    assert!(
        open >= baseline + HTTP1 + HTTP2,
        "{open} open, baseline {baseline}"
    );

    let reap = async {
        for mut stream in http1 {
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
        }
        let mut without_goaway = 0;
        for h2 in http2 {
            let frames = h2.frames_until_eof(Duration::from_secs(20)).await;
            without_goaway += usize::from(!frames.iter().any(|frame| frame.kind == GOAWAY));
        }
        without_goaway
    };
    let without_goaway = tokio::time::timeout(Duration::from_secs(20), reap)
        .await
        .expect("idle connections still open 20 s later");
    assert_eq!(
        without_goaway, 0,
        "HTTP/2 connections closed without GOAWAY"
    );
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK, "a request in flight was cut");
    eventually(
        "descriptors back to baseline",
        Duration::from_secs(5),
        || async { open_fds(gw.pid()) <= baseline + 10 },
    )
    .await;
}

/// Catalogue 112: a handler that panics (a debug-build hook, `DEBUG_SANDPORT_PANIC_PATH`)
/// ends its own connection only: another connection on the same worker keeps serving, new
/// connections and `/health` are answered, the open-connections gauge forgets the dead one,
/// and the process stays up.
#[tokio::test]
async fn catalogue_112_a_panicking_handler_ends_its_connection_only() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let config = format!(
        "[server]\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        static_config(upstream, "[log]\nformat = \"json\"\n")
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("sandport.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut gw =
        Activated::start_with_env(&socket, &config_path, "DEBUG_SANDPORT_PANIC_PATH=/__panic")
            .await;
    let target = format!("/runtime/{CID}/{}/", upstream.port());
    let request = |path: &str| {
        http::Request::get(path)
            .header("host", "sandport.test")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let mut survivor = crate::harness::connect(addr).await;
    let response = survivor.send_request(request(&target)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let mut victim = crate::harness::connect(addr).await;
    let outcome = victim.send_request(request("/__panic")).await;
    assert!(outcome.is_err(), "the panicking request got {outcome:?}");
    assert!(gw.stderr.lock().unwrap().contains("panicked"));

    let response = survivor.send_request(request(&target)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the other connection");
    let reply = crate::harness::send(
        addr,
        get("sandport.test", &target).header("authorization", format!("Bearer {TOKEN}")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "a new connection");
    let health = crate::harness::send(gw.admin, get("localhost", "/health"))
        .await
        .unwrap();
    assert_eq!(health.status, StatusCode::OK);
    eventually(
        "the dead connection uncounted",
        Duration::from_secs(5),
        || async { gw.metric("sandport_connections_open").await == 1.0 },
    )
    .await;
    assert!(gw.child.try_wait().unwrap().is_none(), "the process exited");
}

/// A keep-alive HTTP/1.1 connection that has had one answer and is left idle.
async fn idle_http1_connection(addr: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: sandport.test\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !whole_answer(&answer) {
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "closed before an answer: {answer:?}");
        answer.extend_from_slice(&chunk[..read]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
    stream
}

/// Whether `answer` holds a whole response head and its `content-length` body.
fn whole_answer(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap();
    answer.len() >= end + 4 + length
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// An upstream that completes one WebSocket handshake, sends the text message `hello`, and
/// returns every byte it then receives, once the connection is closed.
async fn recording_websocket_upstream() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let key = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        stream.write_all(&[0x81, 0x05]).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut received = Vec::new();
        let _ = stream.read_to_end(&mut received).await;
        received
    });
    (addr, task)
}

/// The code of a masked close frame at the end of `bytes` (as a client sends it).
fn last_masked_close_code(bytes: &[u8]) -> Option<u16> {
    let frame = bytes.get(bytes.len().checked_sub(8)?..)?;
    if frame[0] != 0x88 || frame[1] != 0x82 {
        return None;
    }
    let (key, code) = (&frame[2..6], &frame[6..8]);
    Some(u16::from_be_bytes([code[0] ^ key[0], code[1] ^ key[1]]))
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

/// One HTTP/2 frame as received, with when it arrived.
#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
    at: Instant,
}

/// A frame-level HTTP/2 client with one GET on stream 1. It answers SETTINGS and PING, and
/// records every frame, so GOAWAY and its timing can be seen (hyper's client hides them).
struct RawH2 {
    reader: tokio::task::JoinHandle<Vec<Frame>>,
}

impl RawH2 {
    async fn open(addr: SocketAddr, authority: &str, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.extend(hpack_literal(4, path));
        block.extend(hpack_literal(1, authority));
        block.extend(hpack_literal(23, &format!("Bearer {TOKEN}")));
        let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        opening.extend(frame_bytes(SETTINGS, 0, 0, &[]));
        opening.extend(frame_bytes(HEADERS, 0x5, 1, &block)); // END_STREAM | END_HEADERS
        stream.write_all(&opening).await.unwrap();
        Self {
            reader: tokio::spawn(read_frames(stream)),
        }
    }

    async fn frames_until_eof(self, limit: Duration) -> Vec<Frame> {
        tokio::time::timeout(limit, self.reader)
            .await
            .expect("the HTTP/2 connection stayed open")
            .unwrap()
    }
}

async fn read_frames(mut stream: TcpStream) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        let mut header = [0u8; 9];
        if stream.read_exact(&mut header).await.is_err() {
            return frames;
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).await.is_err() {
            return frames;
        }
        let frame = Frame {
            kind: header[3],
            flags: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
            payload,
            at: Instant::now(),
        };
        let ack = match frame.kind {
            SETTINGS | PING if frame.flags & 1 == 0 => Some(frame_bytes(
                frame.kind,
                1,
                0,
                if frame.kind == PING {
                    &frame.payload
                } else {
                    &[]
                },
            )),
            _ => None,
        };
        if let Some(ack) = ack {
            let _ = stream.write_all(&ack).await;
        }
        frames.push(frame);
    }
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut bytes = vec![length[1], length[2], length[3], kind, flags];
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// An HPACK literal without indexing, its name from the static table (`index` below 143)
/// and a short value sent as is.
fn hpack_literal(index: u8, value: &str) -> Vec<u8> {
    let mut bytes = if index < 15 {
        vec![index]
    } else {
        vec![0x0f, index - 15]
    };
    bytes.push(u8::try_from(value.len()).unwrap());
    bytes.extend(value.as_bytes());
    bytes
}

/// A `sandport serve` started the way systemd starts a socket-activated service: the listener
/// as fd 3, with `LISTEN_FDS`, `LISTEN_PID` (the shell's pid, which `exec` keeps) and
/// `LISTEN_FDNAMES`. The test passes the socket as the shell's stdin (std moves it there
/// without `unsafe`), and the shell moves it to fd 3.
struct Activated {
    child: Child,
    stderr: Arc<Mutex<String>>,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Activated {
    async fn start(socket: &std::net::TcpListener, config: &std::path::Path) -> Self {
        Self::start_with_env(socket, config, "").await
    }

    /// Like [`Activated::start`], with `env` (`NAME=value ...`) exported as well.
    async fn start_with_env(
        socket: &std::net::TcpListener,
        config: &std::path::Path,
        env: &str,
    ) -> Self {
        let passed = std::os::fd::OwnedFd::from(socket.try_clone().unwrap());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "export {env} LISTEN_FDS=1 LISTEN_PID=$$ LISTEN_FDNAMES=http; \
                 exec \"$0\" serve --config \"$1\" 3<&0 </dev/null"
            ))
            .arg(env!("CARGO_BIN_EXE_sandport"))
            .arg(config)
            .stdin(Stdio::from(passed))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut chunk = [0u8; 8192];
            while let Ok(read @ 1..) = pipe.read(&mut chunk) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..read]));
            }
        });
        let mut activated = Self {
            child,
            stderr,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        activated.wait_ready().await;
        activated
    }

    /// Waits for the JSON `sandport listening` line, then for `/ready`.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listening = self.stderr.lock().unwrap().lines().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                (line["message"] == "sandport listening").then(|| {
                    let address = |name: &str| line[name].as_str()?.parse().ok();
                    Some((address("listen")?, address("admin")?))
                })?
            });
            if let Some((listen, admin)) = listening {
                (self.listen, self.admin) = (listen, admin);
                break;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sandport exited with {status}: {}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(Instant::now() < deadline, "sandport did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eventually("ready", Duration::from_secs(15), || async {
            crate::harness::send(self.admin, get("localhost", "/ready"))
                .await
                .is_ok_and(|reply| reply.status == StatusCode::OK)
        })
        .await;
    }

    fn signal_term(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> (Duration, std::process::ExitStatus, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (
                    started.elapsed(),
                    status,
                    self.stderr.lock().unwrap().clone(),
                );
            }
            assert!(
                started.elapsed() < limit,
                "sandport did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Requests this process answered, from its metrics.
    async fn requests_served(&self) -> f64 {
        self.metric("sandport_requests_total").await
    }

    /// A metric's value, summed over its label sets.
    async fn metric(&self, name: &str) -> f64 {
        let reply = crate::harness::send(self.admin, get("localhost", "/metrics"))
            .await
            .unwrap();
        reply
            .text()
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the clients saw across a restart.
#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    refused: usize,
    failed: usize,
    not_ok: usize,
}

/// Four clients sending one request per new connection, in a loop, until stopped.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Outcome>>,
}

impl ClientLoop {
    fn start(addr: SocketAddr, target: String) -> Self {
        let (stop, ok) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let tasks = (0..4)
            .map(|_| {
                let (stop, ok, target) = (Arc::clone(&stop), Arc::clone(&ok), target.clone());
                tokio::spawn(async move {
                    let mut outcome = Outcome::default();
                    while !stop.load(Ordering::Relaxed) {
                        let before = outcome.ok;
                        one_request(addr, &target, &mut outcome).await;
                        ok.fetch_add(outcome.ok - before, Ordering::Relaxed);
                    }
                    outcome
                })
            })
            .collect();
        Self { stop, ok, tasks }
    }

    /// Successes so far, over all clients.
    fn successes(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    async fn wait_for_successes(&self, count: usize) {
        eventually("client successes", Duration::from_secs(20), || async {
            self.successes() >= count
        })
        .await;
    }

    async fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Outcome::default();
        for task in self.tasks {
            let outcome = task.await.unwrap();
            total.ok += outcome.ok;
            total.refused += outcome.refused;
            total.failed += outcome.failed;
            total.not_ok += outcome.not_ok;
        }
        total
    }
}

async fn one_request(addr: SocketAddr, target: &str, outcome: &mut Outcome) {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(_) => {
            outcome.refused += 1;
            return;
        }
    };
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::get(target)
            .header("host", "sandport.test")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await?;
        let status = response.status();
        http_body_util::BodyExt::collect(response.into_body()).await?;
        Ok::<_, hyper::Error>(status)
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(StatusCode::OK)) => outcome.ok += 1,
        Ok(Ok(_)) => outcome.not_ok += 1,
        _ => outcome.failed += 1,
    }
}
