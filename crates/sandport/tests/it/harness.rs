use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub const TOKEN: &str = "integration-test-token-0123456789";
/// The one sandbox of [`static_config`], owned by `alice`.
pub const STATIC_CONVERSATION: &str = "0123456789abcdef0123456789abcdef";

/// Token mode for `alice`, static discovery with [`STATIC_CONVERSATION`] on loopback, and the
/// app upstream at `upstream`; `extra` is appended.
pub fn static_config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[routing]\nbase_domain = \"sandport.test\"\n[app]\nupstream = \"http://{upstream}\"\n\
         [identity]\ntoken = \"{TOKEN}\"\nuser_id = \"alice\"\n\
         [discovery]\nbackend = \"static\"\n\
         [[discovery.sandboxes]]\nconversation_id = \"{STATIC_CONVERSATION}\"\nuser_id = \"alice\"\naddress = \"127.0.0.1\"\n{extra}"
    )
}

/// A running `sandport serve` with its own config file, killed on drop.
pub struct Gateway {
    child: Child,
    /// Everything the gateway wrote to stderr so far, drained by a thread: an undrained pipe
    /// fills up and blocks the gateway's logging.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// While set, nobody reads the gateway's stderr: its pipe fills up, as with a stuck log
    /// collector.
    stderr_paused: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the binary with `[server]`/`[admin]` on loopback port 0 plus `config`; the bound
    /// addresses are read from the gateway's `sandport listening` log line.
    pub fn start(config: &str) -> Gateway {
        Self::start_with_server_keys(config, "")
    }

    /// Like [`Gateway::start`], with extra lines for the `[server]` table.
    pub fn start_with_server_keys(config: &str, server_keys: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_keys}\n[admin]\nlisten = \"127.0.0.1:0\"\n{config}"
        );
        let config_path = dir.path().join("sandport.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandport"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("SANDPORT_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&stderr);
        let stderr_paused =
            std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let paused = std::sync::Arc::clone(&stderr_paused);
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                {
                    let (flag, resumed) = &*paused;
                    let _running = resumed
                        .wait_while(flag.lock().unwrap(), |paused| *paused)
                        .unwrap();
                }
                let Ok(n) = pipe.read(&mut chunk) else { break };
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let mut gateway = Gateway {
            child,
            stderr,
            stderr_reader: Some(stderr_reader),
            stderr_paused,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            _dir: dir,
        };
        gateway.wait_for_listener();
        gateway
    }

    /// Waits for the `sandport listening` line and takes the bound addresses from it.
    fn wait_for_listener(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.stderr.lock().unwrap().clone();
            if let Some((addr, admin)) = listening_addresses(&text) {
                self.addr = addr;
                self.admin = admin;
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let stderr = self.stderr_text();
                panic!("sandport exited with {status}: {stderr}");
            }
            assert!(Instant::now() < deadline, "sandport did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(response) = send(self.admin, get("localhost", "/ready")).await {
                if response.status == StatusCode::OK {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "sandport never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the gateway wrote to stderr; once it has exited, all of it.
    fn stderr_text(&mut self) -> String {
        if self.child.try_wait().ok().flatten().is_some() {
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
        }
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the gateway process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, returning how long it took and its stderr.
    pub fn wait_exit(&mut self, limit: Duration) -> (Duration, std::process::ExitStatus, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (started.elapsed(), status, self.stderr_text());
            }
            assert!(
                started.elapsed() < limit,
                "sandport did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops or resumes reading the gateway's stderr (the pipe fills up while stopped).
    pub fn pause_stderr(&self, paused: bool) {
        let (flag, resumed) = &*self.stderr_paused;
        *flag.lock().unwrap() = paused;
        resumed.notify_all();
    }

    /// Waits until a line of the gateway's stderr satisfies `matches`. Log lines are written
    /// off the request path, so one lands shortly after the response it describes.
    pub async fn wait_for_log_line(&self, what: &str, matches: impl Fn(&str) -> bool) {
        eventually(what, Duration::from_secs(5), || async {
            self.stderr.lock().unwrap().lines().any(&matches)
        })
        .await;
    }

    /// A metric's value from `/metrics` (sum over label sets matching `filter`).
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        let response = send(self.admin, get("localhost", "/metrics"))
            .await
            .unwrap();
        response
            .text()
            .lines()
            .filter(|line| line.starts_with(name) && line.contains(filter))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The `listen` and `admin` addresses of the `sandport listening` line, in the text format
/// (ANSI colours stripped) or the JSON one.
fn listening_addresses(stderr: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = stderr
        .lines()
        .find(|line| line.contains("sandport listening"))?;
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let field = |name: &str| -> Option<SocketAddr> {
        let json = format!("\"{name}\":\"");
        let text = format!(" {name}=");
        let value = if let Some(at) = plain.find(&json) {
            plain[at + json.len()..].split('"').next()?
        } else {
            let at = plain.find(&text)?;
            plain[at + text.len()..].split_whitespace().next()?
        };
        value.parse().ok()
    };
    Some((field("listen")?, field("admin")?))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the gateway said.
        if std::thread::panicking() {
            let text = self.stderr_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- sandport stderr (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A GET for `target` (sent byte for byte) with `Host: host`.
pub fn get(host: &str, target: &str) -> http::request::Builder {
    Request::get(target).header("host", host)
}

/// Sends one request on a fresh HTTP/1.1 connection and reads the whole response.
pub async fn send(addr: SocketAddr, request: http::request::Builder) -> anyhow::Result<Reply> {
    send_body(addr, request, Bytes::new()).await
}

pub async fn send_body(
    addr: SocketAddr,
    request: http::request::Builder,
    body: Bytes,
) -> anyhow::Result<Reply> {
    send_within(Duration::from_secs(20), addr, request, body).await
}

/// Sends one request and fails if the whole exchange takes longer than `limit`.
pub async fn send_within(
    limit: Duration,
    addr: SocketAddr,
    request: http::request::Builder,
    body: Bytes,
) -> anyhow::Result<Reply> {
    tokio::time::timeout(limit, exchange(addr, request, body))
        .await
        .map_err(|_| anyhow::anyhow!("no response within {limit:?}"))?
}

async fn exchange(
    addr: SocketAddr,
    request: http::request::Builder,
    body: Bytes,
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// The runtime host of a port in the tests' runtime domain.
pub fn runtime_host(port: u16, conversation: &str, gateway: &Gateway) -> String {
    format!(
        "{port}-{conversation}.runtime.sandport.test:{}",
        gateway.addr.port()
    )
}

/// Config for a Docker-backed gateway in token mode for `user`.
pub fn docker_config(user: &str, network: &str) -> String {
    format!(
        "[routing]\nbase_domain = \"sandport.test\"\n\
         [identity]\nmode = \"token\"\nuser_id = \"{user}\"\ntoken = \"{TOKEN}\"\n\
         [discovery]\nbackend = \"docker\"\nnetwork = \"{network}\"\nmax_staleness_secs = 2\n\
         [proxy]\nconnect_timeout_ms = 1000\n"
    )
}

pub use sandport_testkit::eventually;

/// An HTTP/2 (prior knowledge, cleartext) connection to `addr`, driven in the background.
pub async fn h2c_sender(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

/// A streaming HTTP/1.1 connection to `addr`, for tests that read bodies frame by frame.
pub async fn connect<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// A running sandbox container on `network`: labelled with `conversation` (and `owner`, when
/// given), serving the test server on `ports`, and answering HTTP on the first of them.
pub async fn labelled_sandbox(
    image: &sandport_testkit::docker::SandboxImage,
    network: &sandport_testkit::docker::TestNetwork,
    conversation: &str,
    owner: Option<&str>,
    ports: &[u16],
) -> sandport_testkit::docker::Container {
    let mut builder = sandport_testkit::docker::Container::builder(image)
        .network(network)
        .label("conversation_id", conversation)
        .sandbox_ports(ports);
    if let Some(owner) = owner {
        builder = builder.label("user_id", owner);
    }
    let container = builder.run().unwrap();
    container
        .wait_http(network, ports[0], Duration::from_secs(10))
        .await
        .unwrap();
    container
}

/// Opens a WebSocket through the gateway at `addr` to `path` on `host`, with sandport's token.
pub async fn websocket(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request.headers_mut().insert("host", host.parse().unwrap());
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap()
}
