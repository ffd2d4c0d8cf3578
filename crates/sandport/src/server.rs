//! The client-facing listener: accept, optional TLS, HTTP/1.1 and HTTP/2 on one port, and a
//! graceful drain.
//!
//! Every hyper builder gets a timer (without one, timeouts silently do nothing). The protocol
//! sniff of the auto builder has no timeout of its own, so a connection that has not completed
//! a first request within `header_read_timeout` is closed here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::proxy::Gateway;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub header_read_timeout: Duration,
    /// Connection cap of each worker.
    pub max_connections: usize,
}

/// Binds the listener once and hands each worker its own handle to it. Every worker accepts
/// from the same queue; unlike `SO_REUSEPORT`, a port already in use fails here instead of
/// being silently shared with another process.
pub fn bind_workers(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let mut listeners = Vec::with_capacity(count.max(1));
    for _ in 1..count.max(1) {
        listeners.push(listener.try_clone()?);
    }
    listeners.push(listener);
    Ok(listeners)
}

/// Runs one accept loop per listener handle, each on its own OS thread with a single-threaded
/// runtime and its own gateway (so its own upstream pool): a request is accepted, proxied and
/// answered on one thread, with no hand-offs between threads. Each runtime stays up until
/// `stopped` fires, so the connections it serves can drain.
pub fn spawn_workers(
    sockets: Vec<std::net::TcpListener>,
    make_gateway: Arc<dyn Fn() -> Gateway + Send + Sync>,
    config: &Config,
    tls: Option<TlsAcceptor>,
    signals: &Shutdown,
    stopped: &CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(index, socket)| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (make_gateway, config, tls) =
                (Arc::clone(&make_gateway), config.clone(), tls.clone());
            let (signals, stopped) = (signals.clone(), stopped.clone());
            std::thread::Builder::new()
                .name(format!("sandport-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => {
                                serve(listener, Arc::new(make_gateway()), config, tls, signals)
                                    .await;
                            }
                            Err(error) => tracing::error!(%error, "worker cannot listen"),
                        }
                        stopped.cancelled().await;
                    });
                })
        })
        .collect()
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

/// Accepts connections until `signals.shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    config: Config,
    tls: Option<TlsAcceptor>,
    signals: Shutdown,
) {
    let builder = Arc::new(builder(&config));
    let slots = Arc::new(Semaphore::new(config.max_connections));
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
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of descriptors or similar: back off briefly rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            gateway: Arc::clone(&gateway),
            builder: Arc::clone(&builder),
            peer,
            header_read_timeout: config.header_read_timeout,
            signals: signals.clone(),
        };
        let tls = tls.clone();
        signals.connections.spawn(async move {
            let _permit = permit;
            let gauge = ::metrics::gauge!(metrics::CONNECTIONS_OPEN);
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
            let peer = self.peer;
            service_fn(move |request| {
                seen_request.store(true, Ordering::Relaxed);
                let gateway = Arc::clone(&gateway);
                async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
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
