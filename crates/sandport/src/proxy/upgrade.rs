//! WebSocket tunnels: once both sides have switched protocols, splice the two connections.
//!
//! A tunnel ends when both directions reach EOF, when no byte moves either way for the idle
//! timeout, or when shutdown cancels it. Hyper no longer sees upgraded connections, so tunnels
//! are tracked here for the drain and for the open-WebSockets gauge.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;

/// Starts splicing the client and upstream connections once both upgrades complete. The
/// tunnel also ends when `sandbox_ended` (the sandbox's lifetime) is cancelled: a killed
/// container never closes its side.
pub fn spawn_tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Duration,
    tracker: &TaskTracker,
    (cancel, sandbox_ended): (CancellationToken, Option<CancellationToken>),
) {
    tracker.spawn(async move {
        let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let gauge = ::metrics::gauge!(metrics::WEBSOCKETS_OPEN);
        gauge.increment(1.0);
        let activity = Activity::new();
        let mut downstream = Watched::new(TokioIo::new(downstream), activity.clone());
        let mut upstream = Watched::new(TokioIo::new(upstream), activity.clone());
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {
                tracing::debug!(?result, "tunnel closed");
            }
            () = activity.idle_for(idle_timeout) => tracing::debug!("tunnel idle; closed"),
            () = cancel.cancelled() => tracing::debug!("tunnel closed by shutdown"),
            () = ended(sandbox_ended) => tracing::debug!("tunnel closed: the sandbox stopped serving"),
        }
        gauge.decrement(1.0);
    });
}

async fn ended(token: Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled_owned().await,
        None => std::future::pending().await,
    }
}

/// The last time any byte moved through a tunnel.
#[derive(Debug, Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// An I/O object that records activity on every successful read or write.
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    fn new(inner: T, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
