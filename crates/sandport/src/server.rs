//! The client-facing listener: one acceptor handing each connection to the least-loaded
//! worker thread; optional TLS; HTTP/1.1 and HTTP/2 on one port; and a graceful drain.
//!
//! Every hyper builder gets a timer (without one, timeouts silently do nothing). The protocol
//! sniff of the auto builder has no timeout of its own, so a connection that has not completed
//! a first request within `header_read_timeout` is closed here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::proxy::{Gateway, Peer};

/// Listener settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub header_read_timeout: Duration,
    /// Client connections served at once, over all workers.
    pub max_connections: usize,
}

/// Binds the client listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let (make_gateway, config, tls) = (Arc::clone(&make_gateway), config.clone(), tls.clone());
        let (signals, stopped) = (signals.clone(), stopped.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sandport-worker-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let gateway = Arc::new(make_gateway());
                    serve_handed(index, receiver, gateway, config, tls, signals).await;
                    stopped.cancelled().await;
                });
            })?;
        workers.push(Worker {
            connections: sender,
            load: Arc::default(),
        });
        threads.push(thread);
    }
    Ok((workers, threads))
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
    max_connections: usize,
    signals: Shutdown,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot accept connections");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = signals.shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = signals.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted.and_then(|(stream, peer)| {
            let _ = stream.set_nodelay(true);
            Ok((stream.into_std()?, peer))
        }) {
            Ok(pair) => pair,
            Err(error) => {
                // Out of descriptors or similar: back off briefly rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(worker) = workers
            .iter()
            .filter(|worker| !worker.connections.is_closed())
            .min_by_key(|worker| worker.load.load(Ordering::Relaxed))
        else {
            tracing::error!("no worker is running; closing the listener");
            return;
        };
        let handoff = Handoff {
            stream,
            peer,
            permit,
            load: LoadGuard::new(&worker.load),
        };
        if worker.connections.send(handoff).is_err() {
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
        let Handoff {
            stream,
            peer,
            permit,
            load,
        } = handoff;
        // Registers the socket with this worker's reactor.
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, %peer, "cannot serve an accepted connection");
                continue;
            }
        };
        let connection = Connection {
            gateway: Arc::clone(&gateway),
            builder: Arc::clone(&builder),
            peer,
            header_read_timeout: config.header_read_timeout,
            signals: signals.clone(),
        };
        let (tls, gauge) = (tls.clone(), open.clone());
        signals.connections.spawn(async move {
            let _held = (permit, load);
            gauge.increment(1.0);
            match tls {
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(connection.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => connection.drive(TokioIo::new(stream)).await,
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => connection.drive(TokioIo::new(stream)).await,
            }
            gauge.decrement(1.0);
        });
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
    signals: Shutdown,
}

impl Connection {
    async fn drive<I>(self, io: TokioIo<I>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let seen_request = Arc::new(AtomicBool::new(false));
        let service = {
            let seen_request = Arc::clone(&seen_request);
            let gateway = Arc::clone(&self.gateway);
            let peer = Arc::new(Peer::new(self.peer.ip()));
            service_fn(move |request| {
                seen_request.store(true, Ordering::Relaxed);
                let (gateway, peer) = (Arc::clone(&gateway), Arc::clone(&peer));
                async move { Ok::<_, Infallible>(gateway.handle(request, &peer).await) }
            })
        };
        let connection = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let first_request_deadline = tokio::time::sleep(self.header_read_timeout);
        tokio::pin!(first_request_deadline);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, peer = %self.peer, "connection ended with an error");
                    }
                    return;
                }
                () = self.signals.shutdown.cancelled(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = &mut first_request_deadline, if !closing && !seen_request.load(Ordering::Relaxed) => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = self.signals.hard_stop.cancelled() => return,
            }
        }
    }
}
