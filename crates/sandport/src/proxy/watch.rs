//! Watching a stream while it flows: an upload that the client stops sending, a response
//! that the upstream stops sending, and a sandbox that stops serving while a stream is open.
//!
//! Each failure becomes a body error, so hyper aborts the message (an HTTP/1.1 connection is
//! closed before its body's end, an HTTP/2 stream is reset): a client never sees a truncated
//! body as a complete one, and nothing waits forever on a peer that vanished.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::body::{Body, BoxError};
use crate::discovery::InFlight;

/// The client sent no part of its request body for the idle timeout while sandport waited.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body for {0:?}")]
pub struct ClientBodyTimeout(pub Duration);

/// The upstream sent no part of its response body for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no response body for {0:?}")]
pub struct UpstreamBodyTimeout(pub Duration);

/// The sandbox the stream was flowing to stopped serving (stopped, removed, readdressed).
#[derive(Debug, thiserror::Error)]
#[error("the sandbox stopped serving")]
pub struct SandboxEnded;

/// What an upload is doing, shared with the wait for the response head: that wait must not
/// call the upstream slow while the upload is still moving, or while it waits on the client.
#[derive(Debug)]
pub struct Upload {
    start: Instant,
    /// Milliseconds from `start` to the last frame the client sent.
    last_frame_ms: AtomicU64,
    waiting_on_client: AtomicBool,
}

impl Upload {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_frame_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_frame_ms.store(millis, Ordering::Relaxed);
    }

    /// When the upload last moved.
    pub fn last_progress(&self) -> Instant {
        self.start + Duration::from_millis(self.last_frame_ms.load(Ordering::Relaxed))
    }

    /// Whether the upload is waiting for the client (whose own timeout then applies).
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }
}

/// An idle timer that is re-armed only when it fires, not on every frame: a frame costs a
/// clock read, and a busy stream never touches the timer wheel.
struct IdleTimer {
    idle: Duration,
    last_frame: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(idle: Duration) -> Self {
        Self {
            idle,
            last_frame: Instant::now(),
            sleep: None,
        }
    }

    fn frame_arrived(&mut self) {
        self.last_frame = Instant::now();
    }

    /// Ready once nothing arrived for the idle time.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.last_frame + self.idle;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            let deadline = self.last_frame + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

/// A request body on its way upstream that fails when the client stalls.
struct WatchedUpload {
    body: Body,
    upload: Arc<Upload>,
    timer: IdleTimer,
}

/// Watches the client's request body: it fails with [`ClientBodyTimeout`] when the client
/// sends nothing for `idle` while sandport wants more. A body that is already complete is
/// returned as it is, with no watch.
pub fn upload(body: Body, idle: Duration) -> (Body, Option<Arc<Upload>>) {
    if body.is_end_stream() {
        return (body, None);
    }
    let upload = Upload::new();
    let watched = WatchedUpload {
        body,
        upload: Arc::clone(&upload),
        timer: IdleTimer::new(idle),
    };
    (watched.boxed_unsync(), Some(upload))
}

impl HttpBody for WatchedUpload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.upload
                    .waiting_on_client
                    .store(false, Ordering::Relaxed);
                this.upload.touch();
                this.timer.frame_arrived();
                Poll::Ready(frame)
            }
            Poll::Pending => {
                this.upload.waiting_on_client.store(true, Ordering::Relaxed);
                std::task::ready!(this.timer.poll_expired(cx));
                Poll::Ready(Some(Err(ClientBodyTimeout(this.timer.idle).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body on its way to the client that fails when the upstream stalls or its
/// sandbox stops serving.
struct WatchedResponse {
    body: Body,
    timer: IdleTimer,
    ended: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Counts this exchange against its sandbox's limit until the body is dropped.
    _in_flight: Option<InFlight>,
}

/// Watches an upstream's response body: it fails with [`UpstreamBodyTimeout`] after `idle`
/// without a frame, and with [`SandboxEnded`] as soon as `ended` (the sandbox's lifetime, when
/// the upstream is a sandbox) is cancelled. `in_flight` is held until the body is done with.
pub fn response(
    body: Body,
    idle: Duration,
    ended: Option<CancellationToken>,
    in_flight: Option<InFlight>,
) -> Body {
    if body.is_end_stream() {
        return body;
    }
    WatchedResponse {
        body,
        timer: IdleTimer::new(idle),
        ended: ended.map(|token| Box::pin(token.cancelled_owned())),
        _in_flight: in_flight,
    }
    .boxed_unsync()
}

impl HttpBody for WatchedResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(ended) = &mut this.ended {
            if ended.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(SandboxEnded.into())));
            }
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.frame_arrived();
                Poll::Ready(frame)
            }
            Poll::Pending => {
                std::task::ready!(this.timer.poll_expired(cx));
                Poll::Ready(Some(Err(UpstreamBodyTimeout(this.timer.idle).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
