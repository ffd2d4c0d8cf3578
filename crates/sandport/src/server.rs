//! The client-facing listener: one acceptor handing each connection to the least-loaded
//! worker thread; optional TLS; HTTP/1.1 and HTTP/2 on one port; and a graceful drain.
//!
//! Every hyper builder gets a timer (without one, timeouts silently do nothing). The protocol
//! sniff of the auto builder has no timeout of its own, so a connection that has not completed
//! a first request within `header_read_timeout` is closed here, and so is one with no request
//! in flight for `idle_timeout` (HTTP/2 has no idle timeout of its own).
//!
//! The listener is bound here, or handed over by the service manager (systemd socket
//! activation), so that a restart never refuses a connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::proxy::{Gateway, Peer};

/// Listener settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// Client connections served at once, over all workers.
    pub max_connections: usize,
}

/// Binds the client listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Listening sockets handed over by the service manager (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`, from fd 3): the one named `admin` is the admin listener, any other the
/// client listener. Both are `None` when nothing was handed over.
#[derive(Debug, Default)]
pub struct Inherited {
    pub client: Option<std::net::TcpListener>,
    pub admin: Option<std::net::TcpListener>,
}

/// Takes the sockets the service manager passed, if they are meant for this process. A socket
/// that is not a TCP socket, or two for the same role, is an error: serving on something else
/// than what the unit says would be worse than not starting.
pub fn inherited_listeners() -> anyhow::Result<Inherited> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut passed = listenfd::ListenFd::from_env();
    let mut inherited = Inherited::default();
    for index in 0..passed.len() {
        let name = names.get(index).map_or("", String::as_str);
        let listener = passed
            .take_tcp_listener(index)
            .with_context(|| format!("LISTEN_FDS: socket {index} ({name:?})"))?
            .with_context(|| format!("LISTEN_FDS: socket {index} ({name:?}) is missing"))?;
        listener.set_nonblocking(true)?;
        let (role, slot) = if name == "admin" {
            ("admin", &mut inherited.admin)
        } else {
            ("client", &mut inherited.client)
        };
        anyhow::ensure!(
            slot.replace(listener).is_none(),
            "LISTEN_FDS: more than one {role} socket (name the admin one \"admin\" in LISTEN_FDNAMES)"
        );
    }
    Ok(inherited)
}

/// An accepted connection on its way to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    /// One of `max_connections`, held until the connection ends.
    permit: OwnedSemaphorePermit,
    /// Counts the connection against its worker until it ends.
    load: LoadGuard,
}

/// The acceptor's handle on one worker: where to send connections, and how many it holds.
#[derive(Debug)]
pub struct Worker {
    connections: mpsc::UnboundedSender<Handoff>,
    load: Arc<AtomicUsize>,
}

/// Decrements a worker's connection count when the connection ends, however it ends.
struct LoadGuard(Arc<AtomicUsize>);

impl LoadGuard {
    fn new(load: &Arc<AtomicUsize>) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(load))
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts `count` worker threads, each with a single-threaded runtime and its own gateway (so
/// its own upstream pool): a connection handed to a worker is read, proxied and answered on
/// that thread, with no hand-offs between threads. Each runtime stays up until `stopped`
/// fires, so the connections it serves can drain.
pub fn spawn_workers(
    count: usize,
    make_gateway: Arc<dyn Fn() -> Gateway + Send + Sync>,
    config: &Config,
    tls: Option<TlsAcceptor>,
    signals: &Shutdown,
    stopped: &CancellationToken,
) -> std::io::Result<(Vec<Worker>, Vec<std::thread::JoinHandle<()>>)> {
    let mut workers = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    for index in 0..count.max(1) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let thread = WorkerThread {
            index,
            connections: receiver,
            make_gateway: Arc::clone(&make_gateway),
            config: config.clone(),
            tls: tls.clone(),
            signals: signals.clone(),
            stopped: stopped.clone(),
        };
        threads.push(thread.spawn()?);
        workers.push(Worker {
            connections: sender,
            load: Arc::default(),
        });
    }
    Ok((workers, threads))
}

/// What one worker thread needs, moved onto it.
struct WorkerThread {
    index: usize,
    connections: mpsc::UnboundedReceiver<Handoff>,
    make_gateway: Arc<dyn Fn() -> Gateway + Send + Sync>,
    config: Config,
    tls: Option<TlsAcceptor>,
    signals: Shutdown,
    stopped: CancellationToken,
}

impl WorkerThread {
    /// Builds the runtime here, so a failure to build it is the caller's error, not a panic
    /// on the thread.
    fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("sandport-worker-{}", self.index))
            .spawn(move || runtime.block_on(self.run()))
    }

    async fn run(self) {
        let gateway = Arc::new((self.make_gateway)());
        let (index, connections) = (self.index, self.connections);
        serve_handed(
            index,
            connections,
            gateway,
            self.config,
            self.tls,
            self.signals,
        )
        .await;
        self.stopped.cancelled().await;
    }
}

/// Signals for the drain: `shutdown` stops accepting and asks connections to finish their
/// in-flight requests; `hard_stop` drops whatever is still open.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub shutdown: CancellationToken,
    pub hard_stop: CancellationToken,
    pub connections: TaskTracker,
}

/// Loads a PEM certificate chain and key into a TLS acceptor offering h2 and http/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| anyhow::anyhow!("server.tls_cert {}: {error}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| anyhow::anyhow!("server.tls_key {}: {error}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `signals.shutdown` fires and hands each to the worker holding
/// the fewest. A shared accept queue would leave the split to whichever thread wakes first;
/// long-lived keep-alive connections then pile onto one worker while another idles.
pub async fn accept(
    listener: std::net::TcpListener,
    workers: Vec<Worker>,
    (max_connections, tls): (usize, bool),
    signals: Shutdown,
) {
    let Some(listener) = tokio_listener(listener) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let Some(accepted) = accept_one(&listener, &signals).await else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                back_off_after(&error).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refuse_over_capacity(stream, tls);
            continue;
        };
        let Some(worker) = least_loaded(&workers) else {
            tracing::error!("no worker is running; closing the listener");
            return;
        };
        worker.hand_off(stream, peer, permit);
    }
}

/// Registers the listener with the acceptor's runtime; `None` (logged) when it cannot be.
fn tokio_listener(listener: std::net::TcpListener) -> Option<TcpListener> {
    match TcpListener::from_std(listener) {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::error!(%error, "cannot accept connections");
            None
        }
    }
}

/// Out of descriptors or similar: back off briefly rather than spin.
async fn back_off_after(error: &std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// An accepted stream, as a std stream a worker's reactor can take over, and its peer.
type Accepted = (std::net::TcpStream, SocketAddr);

/// The body of the answer past `max_connections` (see [`over_capacity_answer`]).
const OVER_CAPACITY_BODY: &str = "sandport is at its connection limit; retry\n";

/// The answer past `max_connections`, written before the request is read. It is the one
/// response not rendered by `respond`: no worker holds the connection, and there is no request
/// to answer yet. Its headers are the same protective ones.
fn over_capacity_answer() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{OVER_CAPACITY_BODY}",
        OVER_CAPACITY_BODY.len()
    )
}

/// Past `max_connections` a new connection is answered at once and closed, rather than left
/// in the backlog where clients and load balancers cannot tell overload from a hang; the
/// connections already open are not touched. A TLS connection is closed without an answer
/// (a plaintext one would be garbage to it).
fn refuse_over_capacity(stream: std::net::TcpStream, tls: bool) {
    ::metrics::counter!(metrics::CONNECTIONS_REFUSED).increment(1);
    tracing::debug!("connection refused: max_connections reached");
    if tls {
        return;
    }
    let Ok(mut stream) = TcpStream::from_std(stream) else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let answer = async {
            stream.write_all(over_capacity_answer().as_bytes()).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    });
}

/// Accepts one connection; `None` on shutdown.
async fn accept_one(
    listener: &TcpListener,
    signals: &Shutdown,
) -> Option<std::io::Result<Accepted>> {
    let accepted = tokio::select! {
        accepted = listener.accept() => accepted,
        () = signals.shutdown.cancelled() => return None,
    };
    Some(accepted.and_then(|(stream, peer)| {
        let _ = stream.set_nodelay(true);
        Ok((stream.into_std()?, peer))
    }))
}

/// The running worker holding the fewest connections.
fn least_loaded(workers: &[Worker]) -> Option<&Worker> {
    workers
        .iter()
        .filter(|worker| !worker.connections.is_closed())
        .min_by_key(|worker| worker.load.load(Ordering::Relaxed))
}

impl Worker {
    /// Sends a connection to this worker, counting it against the worker from now on.
    fn hand_off(
        &self,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let handoff = Handoff {
            stream,
            peer,
            permit,
            load: LoadGuard::new(&self.load),
        };
        if self.connections.send(handoff).is_err() {
            tracing::warn!(%peer, "worker stopped; connection dropped");
        }
    }
}

/// A worker's loop: serves the connections the acceptor hands it until the acceptor stops.
async fn serve_handed(
    index: usize,
    mut connections: mpsc::UnboundedReceiver<Handoff>,
    gateway: Arc<Gateway>,
    config: Config,
    tls: Option<TlsAcceptor>,
    signals: Shutdown,
) {
    let builder = Arc::new(builder(&config));
    let open = ::metrics::gauge!(metrics::CONNECTIONS_OPEN, "worker" => index.to_string());
    while let Some(handoff) = connections.recv().await {
        let connection = Connection {
            gateway: Arc::clone(&gateway),
            builder: Arc::clone(&builder),
            peer: handoff.peer,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            signals: signals.clone(),
        };
        connection.spawn(handoff, tls.clone(), open.clone());
    }
}

fn builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(64 * 1024)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(250)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(20);
    builder
}

struct Connection {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    peer: SocketAddr,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    signals: Shutdown,
}

impl Connection {
    /// Registers the socket with this worker's reactor and serves it on a tracked task, so
    /// the drain waits for it. The connection's slot and load are held until it ends.
    fn spawn(self, handoff: Handoff, tls: Option<TlsAcceptor>, open: ::metrics::Gauge) {
        let Handoff {
            stream,
            peer,
            permit,
            load,
        } = handoff;
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, %peer, "cannot serve an accepted connection");
                return;
            }
        };
        let tracker = self.signals.connections.clone();
        tracker.spawn(async move {
            // Guards, so that a connection ended by a panic is uncounted too.
            let _held = (permit, load, OpenConnection::count(open));
            self.serve(stream, tls).await;
        });
    }

    /// Serves the connection, after a TLS handshake bounded by `header_read_timeout` when
    /// TLS is on.
    async fn serve(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.drive(TokioIo::new(stream)).await;
        };
        let peer = self.peer;
        let handshake = acceptor.accept(stream);
        match tokio::time::timeout(self.header_read_timeout, handshake).await {
            Ok(Ok(stream)) => self.drive(TokioIo::new(stream)).await,
            Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    async fn drive<I>(self, io: TokioIo<I>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let usage = Arc::new(Usage::new());
        let service = {
            let usage = Arc::clone(&usage);
            let gateway = Arc::clone(&self.gateway);
            let peer = Arc::new(Peer::new(self.peer.ip()));
            service_fn(move |request| {
                let in_flight = usage.begin();
                let (gateway, peer) = (Arc::clone(&gateway), Arc::clone(&peer));
                async move {
                    #[cfg(debug_assertions)]
                    panic_if_asked(request.uri().path());
                    let response = gateway.handle(request, &peer).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let connection = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => return self.ended(result),
            () = self.close_requested(&usage) => {
                connection.as_mut().graceful_shutdown();
            }
            () = self.signals.hard_stop.cancelled() => return,
        }
        tokio::select! {
            result = connection.as_mut() => self.ended(result),
            () = self.signals.hard_stop.cancelled() => {}
        }
    }

    /// Resolves when the connection is to finish its in-flight requests and close (HTTP/1.1:
    /// keep-alive ends; HTTP/2: GOAWAY): on shutdown, at the first-request deadline if no
    /// request has arrived by then, or once no request has been in flight for `idle_timeout`.
    async fn close_requested(&self, usage: &Usage) {
        let first_request_missed = async {
            tokio::time::sleep(self.header_read_timeout).await;
            if usage.seen_request.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        // A connection accepted just before shutdown may not have sent its request yet;
        // closing it now would fail a request the client already sent, so it gets that one.
        let shutdown = async {
            self.signals.shutdown.cancelled().await;
            usage.first_request.notified().await;
        };
        tokio::select! {
            () = shutdown => {}
            () = first_request_missed => {}
            () = usage.idle_for(self.idle_timeout) => {
                tracing::debug!(peer = %self.peer, "idle connection closed");
            }
        }
    }

    fn ended(&self, result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
        if let Err(error) = result {
            tracing::debug!(%error, peer = %self.peer, "connection ended with an error");
        }
    }
}

/// What a connection is doing, for the idle timeout and the drain: requests in flight (a
/// response counts until its body has been sent or dropped) and when the last one ended.
#[derive(Debug)]
struct Usage {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request ended, in milliseconds since `opened`.
    last_ended_ms: AtomicU64,
    seen_request: AtomicBool,
    first_request: Notify,
}

impl Usage {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
            seen_request: AtomicBool::new(false),
            first_request: Notify::new(),
        }
    }

    /// A request arrived: it is in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.seen_request.store(true, Ordering::Relaxed);
        self.first_request.notify_one();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ended_ms.load(Ordering::Relaxed))
    }

    /// Completes once no request has been in flight for `limit`. While one is, it checks
    /// again every `limit`, so a connection is closed at most `limit` after its last request.
    async fn idle_for(&self, limit: Duration) {
        loop {
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(limit).await;
                continue;
            }
            let deadline = self.idle_since() + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<Usage>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let usage = &self.0;
        let now = u64::try_from(usage.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        usage.last_ended_ms.fetch_max(now, Ordering::Relaxed);
        usage.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until hyper has sent or dropped it, so a
/// long download or event stream never counts as idle.
struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Counts a connection in the open-connections gauge until dropped.
struct OpenConnection(::metrics::Gauge);

impl OpenConnection {
    fn count(gauge: ::metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Debug builds only: a request for the exact path in `DEBUG_SANDPORT_PANIC_PATH` panics in
/// its handler, so tests can show that a panic ends its own connection and nothing else.
/// Release builds have no such path.
#[cfg(debug_assertions)]
fn panic_if_asked(path: &str) {
    static PATH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let asked = PATH.get_or_init(|| std::env::var("DEBUG_SANDPORT_PANIC_PATH").ok());
    assert!(
        asked.as_deref() != Some(path),
        "panic requested by DEBUG_SANDPORT_PANIC_PATH"
    );
}
