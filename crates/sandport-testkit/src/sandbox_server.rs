//! The sandbox test server: a small, deterministic HTTP/WebSocket upstream.
//!
//! It runs as PID 1 of a `FROM scratch` container (binary `sandbox-server`, see
//! [`crate::docker::SandboxImage`]) and can also be served in-process with [`serve`] for tests
//! that need an upstream without Docker.
//!
//! Every listener serves HTTP/1.1 and h2c (prior knowledge) with upgrades enabled.
//!
//! # Endpoints
//!
//! Anything whose path does not start with `/__sandbox/` is the **echo** endpoint: it answers
//! `200 application/json` with
//!
//! ```json
//! {"port": 8000, "method": "POST", "target": "/a%2Fb?x=%20", "version": "HTTP/1.1",
//!  "headers": [["host", "example"], ["x-dup", "1"], ["x-dup", "2"]],
//!  "body_len": 3, "body_sha256": "<64 lowercase hex>", "hostname": "<container hostname>"}
//! ```
//!
//! - `port`: the local port of the listener that accepted the connection.
//! - `target`: the request-target as received. HTTP/1.1 origin-form targets are kept byte for byte
//!   (no percent-decoding, no dot-segment or slash normalisation; hyper's parser does not normalise).
//!   Absolute-form targets are rendered from the parsed URI; for HTTP/2 it is `:path`.
//! - `headers`: every request header with lowercase names, values decoded as UTF-8 (lossy).
//!   Names appear in order of first appearance; all values of one name are listed together in
//!   the order received (this is how hyper's `HeaderMap` stores them).
//! - `body_len` / `body_sha256`: computed while streaming; the body is never buffered whole.
//! - `hostname`: `$HOSTNAME`, else `/proc/sys/kernel/hostname` (the short container id under Docker).
//!
//! The `/__sandbox/` endpoints:
//!
//! | Path | Response |
//! |---|---|
//! | `/__sandbox/ws` | WebSocket echo: each text/binary message is sent back unchanged; pings are answered; a close is answered with a close. |
//! | `/__sandbox/ws-headers` | WebSocket: first sends one text message holding the echo JSON of the upgrade request (`body_len` 0), then echoes like `/__sandbox/ws`. |
//! | `/__sandbox/sse?n=N&interval_ms=M` | `200 text/event-stream`, N events `data: <i>\n\n` for i = 0..N, the first at once and the next ones M ms apart, each flushed as its own chunk; then the body ends. Defaults n=5, interval_ms=100. |
//! | `/__sandbox/download?bytes=N` | `200 application/octet-stream`, `Content-Length: N`, byte i is `(i % 251) as u8`, streamed in 64 KiB chunks. |
//! | `/__sandbox/set-cookie?c=..&c=..` | `200 text/plain` body `ok`, one `Set-Cookie` header per `c` (form-urlencoded, decoded), verbatim and in order. |
//! | `/__sandbox/status?code=N&location=..&refresh=..` | status N (200..=999) with body `status N`, plus `Location`/`Refresh` when given. |
//! | `/__sandbox/html` | `200 text/html; charset=utf-8`, the page in [`HTML_PAGE`]. |
//! | `/__sandbox/slow?ms=M` | waits M ms (default 1000), then `200 text/plain` body `slow`. |
//!
//! An unknown `/__sandbox/` path gives `404`; a malformed parameter gives `400` with a plain-text
//! reason. WebSocket endpoints answer `400` to a request that is not a WebSocket upgrade.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Environment variable holding the comma-separated list of ports to listen on.
pub const PORTS_ENV: &str = "SANDBOX_PORTS";
/// Ports used when [`PORTS_ENV`] is unset or empty.
pub const DEFAULT_PORTS: &[u16] = &[5000, 8000, 8001];
/// The exact body of `/__sandbox/html`.
pub const HTML_PAGE: &str = "<!doctype html><html><head><title>sandbox</title></head><body><a href=\"http://localhost:5000/x\">x</a></body></html>";
/// Size of the chunks `/__sandbox/download` produces.
pub const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Response body type of the sandbox server.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// Byte `i` of the `/__sandbox/download` stream.
pub fn download_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Parses a `SANDBOX_PORTS` value: comma-separated ports, blanks ignored; empty means defaults.
pub fn parse_ports(value: &str) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port: u16 = part
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid port {part:?} in {PORTS_ENV}: {e}"))?;
        ports.push(port);
    }
    if ports.is_empty() {
        ports.extend_from_slice(DEFAULT_PORTS);
    }
    Ok(ports)
}

/// Ports from the [`PORTS_ENV`] environment variable, or [`DEFAULT_PORTS`].
pub fn ports_from_env() -> anyhow::Result<Vec<u16>> {
    parse_ports(&std::env::var(PORTS_ENV).unwrap_or_default())
}

/// `$HOSTNAME`, else the kernel hostname, else `"unknown"`.
pub fn hostname() -> String {
    if let Ok(h) = std::env::var("HOSTNAME") {
        if !h.is_empty() {
            return h;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Binds `0.0.0.0:port` for every port (port 0 picks a free one).
pub async fn bind_all(ports: &[u16]) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(ports.len());
    for &port in ports {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on 0.0.0.0:{port}: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

#[derive(Debug)]
struct ListenerState {
    port: u16,
    hostname: String,
}

/// Serves the sandbox endpoints on `listener` until the returned future is dropped.
///
/// `hostname` is reported by the echo endpoint. Accept errors (for example running out of file
/// descriptors) are logged and retried; the function only returns if the listener has no local
/// address.
pub async fn serve(listener: TcpListener, hostname: String) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let state = Arc::new(ListenerState { port, hostname });
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("sandbox-server: accept on port {port}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let builder = auto::Builder::new(TokioExecutor::new());
            // Connection errors (client resets, malformed requests) are the client's business.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Spawns [`serve`] on `127.0.0.1:0` in the current runtime and returns the bound address.
///
/// Useful for in-process tests that need an upstream but no container.
pub async fn spawn_local() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, "sandbox-local".to_owned()));
    Ok(addr)
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<ListenerState>,
) -> Result<Response<ResponseBody>, Infallible> {
    let route = req
        .uri()
        .path()
        .strip_prefix("/__sandbox/")
        .map(str::to_owned);
    let response = match route.as_deref() {
        None => echo(req, &state).await,
        Some("ws") => websocket(req, &state, false),
        Some("ws-headers") => websocket(req, &state, true),
        Some("sse") => sse(&req),
        Some("download") => download(&req),
        Some("set-cookie") => set_cookie(&req),
        Some("status") => status(&req),
        Some("html") => html(),
        Some("slow") => slow(&req).await,
        Some(_) => Ok(text(StatusCode::NOT_FOUND, "no such sandbox endpoint\n")),
    };
    Ok(response.unwrap_or_else(|msg| text(StatusCode::BAD_REQUEST, format!("{msg}\n"))))
}

type Handled = Result<Response<ResponseBody>, String>;

fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into()).boxed_unsync()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn query_pairs<B>(req: &Request<B>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    query_pairs(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn number_param<B, T: std::str::FromStr>(
    req: &Request<B>,
    name: &str,
    default: Option<T>,
) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match query_param(req, name) {
        Some(v) => v.parse().map_err(|e| format!("invalid {name}={v:?}: {e}")),
        None => default.ok_or_else(|| format!("missing query parameter {name}")),
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// The echo object without the body fields.
fn describe<B>(
    req: &Request<B>,
    state: &ListenerState,
) -> serde_json::Map<String, serde_json::Value> {
    let target = if req.version() == Version::HTTP_2 {
        req.uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned())
    } else {
        req.uri().to_string()
    };
    let headers: Vec<serde_json::Value> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            serde_json::json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())])
        })
        .collect();
    let mut obj = serde_json::Map::new();
    obj.insert("port".into(), state.port.into());
    obj.insert("method".into(), req.method().as_str().into());
    obj.insert("target".into(), target.into());
    obj.insert("version".into(), version_str(req.version()).into());
    obj.insert("headers".into(), headers.into());
    obj.insert("hostname".into(), state.hostname.clone().into());
    obj
}

fn json_response(obj: serde_json::Map<String, serde_json::Value>) -> Response<ResponseBody> {
    let mut body = serde_json::Value::Object(obj).to_string();
    body.push('\n');
    let mut res = Response::new(full(body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

async fn echo(req: Request<Incoming>, state: &ListenerState) -> Handled {
    let mut obj = describe(&req, state);
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading request body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            len += data.len() as u64;
        }
    }
    obj.insert("body_len".into(), len.into());
    obj.insert("body_sha256".into(), hex(&hasher.finalize()).into());
    Ok(json_response(obj))
}

fn header_has_token<B>(req: &Request<B>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn websocket(mut req: Request<Incoming>, state: &ListenerState, send_headers: bool) -> Handled {
    if req.method() != Method::GET
        || !header_has_token(&req, header::UPGRADE, "websocket")
        || !header_has_token(&req, header::CONNECTION, "upgrade")
    {
        return Err(
            "expected a WebSocket upgrade (GET, Upgrade: websocket, Connection: upgrade)".into(),
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("expected Sec-WebSocket-Version: 13".into());
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    let accept = derive_accept_key(key.as_bytes());
    let protocol = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_owned);
    let greeting = send_headers.then(|| {
        let mut obj = describe(&req, state);
        obj.insert("body_len".into(), 0.into());
        obj.insert("body_sha256".into(), hex(&Sha256::digest(b"")).into());
        serde_json::Value::Object(obj).to_string()
    });

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("sandbox-server: websocket upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        websocket_echo(ws, greeting).await;
    });

    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| e.to_string())?,
    );
    if let Some(p) = protocol {
        if let Ok(v) = HeaderValue::from_str(&p) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    Ok(res)
}

async fn websocket_echo<S>(mut ws: WebSocketStream<S>, greeting: Option<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(g) = greeting {
        if ws.send(Message::text(g)).await.is_err() {
            return;
        }
    }
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            // Pings and closes are answered by tungstenite itself on the next read/flush.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn sse(req: &Request<Incoming>) -> Handled {
    let n: u64 = number_param(req, "n", Some(5))?;
    let interval = Duration::from_millis(number_param(req, "interval_ms", Some(100))?);
    let events = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let frame = Frame::data(Bytes::from(format!("data: {i}\n\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    let mut res = Response::new(StreamBody::new(events).boxed_unsync());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(res)
}

/// `DOWNLOAD_CHUNK + 251` pattern bytes: any chunk is a slice of it.
fn pattern() -> Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN
        .get_or_init(|| {
            (0..(DOWNLOAD_CHUNK + 251) as u64)
                .map(download_byte)
                .collect::<Vec<u8>>()
                .into()
        })
        .clone()
}

/// A body of `remaining` pattern bytes starting at stream offset `offset`.
struct PatternBody {
    offset: u64,
    remaining: u64,
    pattern: Bytes,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(DOWNLOAD_CHUNK as u64) as usize;
        let start = (self.offset % 251) as usize;
        let chunk = self.pattern.slice(start..start + len);
        self.offset += len as u64;
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn download(req: &Request<Incoming>) -> Handled {
    let bytes: u64 = number_param(req, "bytes", None)?;
    let body = PatternBody {
        offset: 0,
        remaining: bytes,
        pattern: pattern(),
    };
    let mut res = Response::new(body.boxed_unsync());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
    Ok(res)
}

fn set_cookie(req: &Request<Incoming>) -> Handled {
    let mut res = text(StatusCode::OK, "ok");
    for (k, v) in query_pairs(req) {
        if k == "c" {
            let value =
                HeaderValue::from_str(&v).map_err(|e| format!("invalid cookie {v:?}: {e}"))?;
            res.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(res)
}

fn status(req: &Request<Incoming>) -> Handled {
    let code: u16 = number_param(req, "code", None)?;
    if code < 200 {
        return Err(format!("code must be 200..=999, got {code}"));
    }
    let status = StatusCode::from_u16(code).map_err(|e| format!("invalid code {code}: {e}"))?;
    let mut res = text(status, format!("status {code}"));
    for (param, name) in [("location", header::LOCATION), ("refresh", header::REFRESH)] {
        if let Some(v) = query_param(req, param) {
            let value = HeaderValue::from_str(&v).map_err(|e| format!("invalid {param}: {e}"))?;
            res.headers_mut().insert(name, value);
        }
    }
    Ok(res)
}

fn html() -> Handled {
    let mut res = Response::new(full(HTML_PAGE));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(res)
}

async fn slow(req: &Request<Incoming>) -> Handled {
    let ms: u64 = number_param(req, "ms", Some(1000))?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(text(StatusCode::OK, "slow"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(parse_ports("").unwrap(), DEFAULT_PORTS);
        assert_eq!(parse_ports(" 1, 2,,3 ").unwrap(), vec![1, 2, 3]);
        assert!(parse_ports("1,x").is_err());
        assert!(parse_ports("70000").is_err());
    }

    #[test]
    fn pattern_body_is_continuous() {
        let mut body = PatternBody {
            offset: 0,
            remaining: 3 * DOWNLOAD_CHUNK as u64 + 17,
            pattern: pattern(),
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut i = 0u64;
        while let Poll::Ready(Some(Ok(frame))) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
            let data = frame.into_data().unwrap();
            assert!(data.len() <= DOWNLOAD_CHUNK);
            for b in data.iter() {
                assert_eq!(*b, download_byte(i), "byte {i}");
                i += 1;
            }
        }
        assert_eq!(i, 3 * DOWNLOAD_CHUNK as u64 + 17);
    }
}
