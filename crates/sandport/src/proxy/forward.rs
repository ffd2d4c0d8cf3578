//! Sending a request upstream: one HTTP/1.1 client per worker, keeping idle keep-alive
//! connections by authority.
//!
//! Why not hyper-util's pooled client: it is built to be shared between threads and spawns a
//! task per request to hand the connection back to its pool. Each worker here owns its client,
//! and a connection goes back to the pool the moment its response body has ended (the
//! [`PooledBody`] wrapper), with no task and no cross-thread handoff.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use tokio_util::sync::CancellationToken;

use super::watch::{ClientBodyTimeout, SandboxEnded, Upload};
use crate::body::{self, chain_holds, is_limit_error, Body};
use crate::error::{BoxError, ProxyError, Upstream};
use crate::metrics;

/// How long an unused connection is kept.
const IDLE_EXPIRY: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream authority; more are closed when they come back.
const MAX_IDLE_PER_AUTHORITY: usize = 256;

/// The upstream client of one worker.
pub struct Client {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connect_timeout", &self.pool.connect_timeout)
            .finish_non_exhaustive()
    }
}

struct Pool {
    connect_timeout: Duration,
    /// Idle senders by authority, the most recently used last.
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
}

/// One upstream connection: the handle requests are sent on, and its connection task.
struct Connection {
    sender: http1::SendRequest<Body>,
    task: AbortHandle,
}

impl Connection {
    fn is_ready(&self) -> bool {
        self.sender.is_ready()
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// Closes a connection whose exchange was abandoned (a timeout dropped it, its response body
/// was dropped before its end): hyper would otherwise keep its task writing an upload nobody
/// waits for, or reading a body nobody reads, for as long as the upstream lets it.
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        self.connection.is_ready() && now.duration_since(self.since) < IDLE_EXPIRY
    }
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Idle>>> {
        // The map holds no invariant a panic could break halfway.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection to `authority`, with the pool's key for it.
    fn checkout(&self, authority: &str) -> Option<(Arc<str>, Connection)> {
        let now = Instant::now();
        let mut idle = self.idle();
        let key = Arc::clone(idle.get_key_value(authority)?.0);
        let senders = idle.get_mut(authority)?;
        while let Some(candidate) = senders.pop() {
            if candidate.usable(now) {
                return Some((key, candidate.connection));
            }
        }
        None
    }

    fn checkin(&self, authority: Arc<str>, connection: Connection) {
        // A connection that is not ready is still sending a request body or is closing.
        if !connection.is_ready() {
            connection.task.abort();
            return;
        }
        let mut idle = self.idle();
        let senders = idle.entry(authority).or_default();
        if senders.len() < MAX_IDLE_PER_AUTHORITY {
            senders.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Drops expired and closed connections, and authorities left with none.
    fn sweep(&self) {
        let now = Instant::now();
        self.idle().retain(|_, senders| {
            senders.retain(|idle| idle.usable(now));
            !senders.is_empty()
        });
    }
}

impl Client {
    /// A client whose connection attempts give up after `connect_timeout`. Inside a Tokio
    /// runtime it also starts the task that closes connections idle for a minute.
    pub fn new(connect_timeout: Duration) -> Self {
        let pool = Arc::new(Pool {
            connect_timeout,
            idle: Mutex::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_until_dropped(Arc::downgrade(&pool)));
        }
        Self { pool }
    }

    /// Sends `request` (origin-form target, `Host` already set) to `authority` on an idle
    /// connection, or a new one. A request an idle connection refused before sending any of
    /// it (the upstream closed it at that moment) is sent again on a new connection.
    async fn request(
        &self,
        authority: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        let request = match self.pool.checkout(authority) {
            Some((key, mut connection)) => {
                let abandoned = AbortOnDrop(Some(connection.task.clone()));
                match connection.sender.try_send_request(request).await {
                    Ok(response) => return Ok(self.pooled(key, connection, response, abandoned)),
                    Err(mut error) => match error.take_message() {
                        Some(request) => request,
                        None => return Err(SendError::Http(error.into_error())),
                    },
                }
            }
            None => request,
        };
        // Boxed: the connect path is rare and its future large; the common path stays small.
        let mut connection = Box::pin(self.connect(authority)).await?;
        let abandoned = AbortOnDrop(Some(connection.task.clone()));
        let response = connection
            .sender
            .send_request(request)
            .await
            .map_err(SendError::Http)?;
        Ok(self.pooled(authority.into(), connection, response, abandoned))
    }

    async fn connect(&self, authority: &str) -> Result<Connection, SendError> {
        let stream = tokio::time::timeout(self.pool.connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| SendError::Connect("connect timed out".into()))?
            .map_err(|error| SendError::Connect(error.into()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| SendError::Connect(error.into()))?;
        ::metrics::counter!(metrics::UPSTREAM_CONNECTIONS).increment(1);
        let task = tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(Connection {
            sender,
            task: task.abort_handle(),
        })
    }

    /// Wraps the response body so that its connection returns to the pool when it ends. A
    /// connection that switched protocols belongs to its tunnel and is never pooled.
    fn pooled(
        &self,
        authority: Arc<str>,
        connection: Connection,
        response: Response<Incoming>,
        abandoned: AbortOnDrop,
    ) -> Response<Body> {
        // From here the body decides: back to the pool at its end, closed if dropped before.
        abandoned.defuse();
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return response.map(body::incoming);
        }
        let checkin = Checkin {
            pool: Arc::downgrade(&self.pool),
            authority,
            connection,
        };
        response.map(|incoming| {
            PooledBody::new(incoming, checkin)
                .map_err(BoxError::from)
                .boxed_unsync()
        })
    }
}

enum SendError {
    Connect(BoxError),
    Http(hyper::Error),
}

/// What a request's exchange is watched for while sandport waits for the response head.
pub struct Watch<'a> {
    /// How long the upstream may go without answering while nothing else moves.
    pub idle_timeout: Duration,
    /// The upload, when the request has a body: its progress extends the wait.
    pub upload: Option<&'a Upload>,
    /// Cancelled when the sandbox stops serving.
    pub ended: Option<&'a CancellationToken>,
}

/// Sends `request` to `authority` and waits for the response head until the upstream has
/// been silent for the idle timeout (an upload that still moves, or waits on the client,
/// keeps it waiting), or the sandbox stops serving.
pub async fn send(
    client: &Client,
    authority: &str,
    request: Request<Body>,
    watch: Watch<'_>,
    upstream: &Upstream,
) -> Result<Response<Body>, ProxyError> {
    let exchange = client.request(authority, request);
    let ended = async {
        match watch.ended {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let response = tokio::select! {
        response = exchange => response,
        () = head_timeout(&watch) => return Err(ProxyError::UpstreamTimeout {
            upstream: upstream.clone(),
        }),
        () = ended => return Err(ProxyError::UpstreamFailed {
            upstream: upstream.clone(),
            source: SandboxEnded.into(),
        }),
    };
    response.map_err(|error| send_error(error, upstream))
}

/// Ends once the upstream has had `idle_timeout` without a response head while the upload
/// (if any) neither moved nor waited on the client.
async fn head_timeout(watch: &Watch<'_>) {
    let started = tokio::time::Instant::now();
    loop {
        let last = watch.upload.map_or(started, Upload::last_progress);
        tokio::time::sleep_until(last + watch.idle_timeout).await;
        let upload_busy = watch
            .upload
            .is_some_and(|upload| upload.waiting_on_client() || upload.last_progress() > last);
        if !upload_busy {
            return;
        }
    }
}

fn send_error(error: SendError, upstream: &Upstream) -> ProxyError {
    match error {
        SendError::Connect(source) => ProxyError::UpstreamUnreachable {
            upstream: upstream.clone(),
            source,
        },
        SendError::Http(error) if is_limit_error(&error) => ProxyError::BodyTooLarge,
        SendError::Http(error) if chain_holds::<ClientBodyTimeout>(&error) => {
            ProxyError::RequestBodyTimeout
        }
        SendError::Http(error) if body::is_client_error(&error) => ProxyError::BadRequestBody,
        SendError::Http(error) => ProxyError::UpstreamFailed {
            upstream: upstream.clone(),
            source: error.into(),
        },
    }
}

async fn sweep_until_dropped(pool: Weak<Pool>) {
    let mut ticks = tokio::time::interval(IDLE_EXPIRY / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

/// A connection waiting for its response body to end.
struct Checkin {
    pool: Weak<Pool>,
    authority: Arc<str>,
    connection: Connection,
}

/// A response body that hands its connection back to the pool once it has been read to the
/// end. Dropped earlier, or failed, the connection is closed (it cannot carry another request
/// before the rest of this body is read).
struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
    ended: bool,
}

impl PooledBody {
    fn new(body: Incoming, checkin: Checkin) -> Self {
        Self {
            body,
            checkin: Some(checkin),
            ended: false,
        }
    }

    fn release(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            match checkin.pool.upgrade() {
                Some(pool) => pool.checkin(checkin.authority, checkin.connection),
                None => checkin.connection.task.abort(),
            }
        }
    }

    fn close(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.connection.task.abort();
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => {
                this.ended = true;
                this.release();
            }
            Some(Err(_)) => this.close(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A server skips polling a body that reports its end (HEAD, 204, a read-out length).
        if self.is_end_stream() {
            self.release();
        } else {
            self.close();
        }
    }
}
