//! WebSocket tunnels: once both sides have switched protocols, splice the two connections.
//!
//! A tunnel ends when both directions reach EOF, when no byte moves either way for the idle
//! timeout, or when shutdown cancels it. Hyper no longer sees upgraded connections, so tunnels
//! are tracked here for the drain and for the open-WebSockets gauge.
//!
//! Only WebSocket upgrades become tunnels, so at shutdown each side is told "going away" (close
//! code 1001) before the TCP close. Payloads are never parsed; each direction reads just the
//! frame headers to know where frames end, because a close frame written inside another
//! frame's payload would corrupt it. A direction caught mid-frame at shutdown finishes that
//! frame first (the drain's hard stop bounds the wait).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::discovery::InFlight;
use crate::metrics;

/// Starts splicing the client and upstream connections once both upgrades complete. The
/// tunnel also ends when `sandbox_ended` (the sandbox's lifetime) is cancelled: a killed
/// container never closes its side.
pub fn spawn_tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Duration,
    tracker: &TaskTracker,
    (cancel, sandbox_ended, in_flight): (
        CancellationToken,
        Option<CancellationToken>,
        Option<InFlight>,
    ),
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
        let downstream = Watched::new(TokioIo::new(downstream), activity.clone());
        let upstream = Watched::new(TokioIo::new(upstream), activity.clone());
        let (from_client, to_client) = tokio::io::split(downstream);
        let (from_upstream, to_upstream) = tokio::io::split(upstream);
        let upward = Pump::new(from_client, to_upstream, Role::Client);
        let downward = Pump::new(from_upstream, to_client, Role::Server);
        tokio::select! {
            result = async { tokio::try_join!(upward.run(&cancel), downward.run(&cancel)) } => {
                tracing::debug!(?result, shutdown = cancel.is_cancelled(), "tunnel closed");
            }
            () = activity.idle_for(idle_timeout) => tracing::debug!("tunnel idle; closed"),
            () = ended(sandbox_ended) => tracing::debug!("tunnel closed: the sandbox stopped serving"),
        }
        gauge.decrement(1.0);
        // The tunnel counted against its sandbox's limit until here.
        drop(in_flight);
    });
}

async fn ended(token: Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled_owned().await,
        None => std::future::pending().await,
    }
}

/// Which end of the WebSocket sandport plays towards the side a pump writes to: frames a
/// client sends are masked (RFC 6455 §5.3), a server's are not.
#[derive(Debug, Clone, Copy)]
enum Role {
    Client,
    Server,
}

/// Close code 1001: the endpoint is going away (RFC 6455 §7.4.1).
const GOING_AWAY: [u8; 2] = 1001_u16.to_be_bytes();

impl Role {
    /// A close frame with code 1001, as this role sends it.
    fn going_away_frame(self) -> Vec<u8> {
        match self {
            Role::Server => [&[0x88, 0x02][..], &GOING_AWAY].concat(),
            Role::Client => {
                let key: [u8; 4] = rand::random();
                let masked = GOING_AWAY.iter().zip(key).map(|(byte, mask)| byte ^ mask);
                [0x88, 0x82].into_iter().chain(key).chain(masked).collect()
            }
        }
    }
}

/// One direction of a tunnel: copies bytes as they come, following frame boundaries.
struct Pump<R, W> {
    from: R,
    to: W,
    role: Role,
    frames: Frames,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Pump<R, W> {
    fn new(from: R, to: W, role: Role) -> Self {
        Self {
            from,
            to,
            role,
            frames: Frames::default(),
        }
    }

    /// Copies until EOF (passed on as a write shutdown) or, once `going_away` fires, until
    /// the next frame boundary, where it writes the close frame and shuts the write side.
    async fn run(mut self, going_away: &CancellationToken) -> io::Result<()> {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let room = if going_away.is_cancelled() {
                self.frames.bytes_to_boundary().min(buffer.len())
            } else {
                buffer.len()
            };
            if room == 0 {
                self.to.write_all(&self.role.going_away_frame()).await?;
                return self.to.shutdown().await;
            }
            let chunk = buffer.get_mut(..room).unwrap_or_default();
            let read = tokio::select! {
                read = self.from.read(chunk) => read?,
                () = going_away.cancelled(), if !going_away.is_cancelled() => continue,
            };
            if read == 0 {
                return self.to.shutdown().await;
            }
            let bytes = chunk.get(..read).unwrap_or_default();
            self.to.write_all(bytes).await?;
            self.frames.advance(bytes);
        }
    }
}

/// Where a WebSocket byte stream stands relative to its frames, from the frame headers
/// alone: payloads are counted, never parsed or held.
#[derive(Debug, Default)]
struct Frames {
    /// The header read so far of the next frame (at most 2 + 8 length + 4 mask bytes).
    header: [u8; 14],
    header_len: usize,
    payload_left: u64,
}

impl Frames {
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skipped = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= skipped as u64;
                bytes = bytes.get(skipped..).unwrap_or_default();
                continue;
            }
            let Some((&byte, rest)) = bytes.split_first() else {
                return;
            };
            if let Some(slot) = self.header.get_mut(self.header_len) {
                *slot = byte;
                self.header_len += 1;
            }
            bytes = rest;
            let header = self.header.get(..self.header_len).unwrap_or_default();
            if let Some(length) = payload_length(header) {
                self.payload_left = length;
                self.header_len = 0;
            }
        }
    }

    /// How many bytes may be read without passing the end of the current frame: the rest of
    /// its payload, one byte while its header is incomplete, 0 at a boundary.
    fn bytes_to_boundary(&self) -> usize {
        if self.payload_left > 0 {
            usize::try_from(self.payload_left).unwrap_or(usize::MAX)
        } else {
            usize::from(self.header_len > 0)
        }
    }
}

/// The payload length once `header` holds a whole frame header (RFC 6455 §5.2); `None` while
/// it is incomplete.
fn payload_length(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let (extended, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        length => (0, Some(u64::from(length))),
    };
    let mask = if second & 0x80 == 0 { 0 } else { 4 };
    if header.len() < 2 + extended + mask {
        return None;
    }
    let long = header.get(2..2 + extended)?;
    Some(short.unwrap_or_else(|| {
        long.iter()
            .fold(0, |length, byte| length << 8 | u64::from(*byte))
    }))
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

#[cfg(test)]
mod tests {
    use super::{payload_length, Frames, Role};

    #[test]
    fn frame_boundaries_are_followed_across_split_reads() {
        // a masked 5-byte text frame, a 300-byte binary frame (16-bit length), a ping
        let mut stream = vec![0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        stream.extend([0x82, 126, 0x01, 0x2c]);
        stream.extend(std::iter::repeat_n(7, 300));
        stream.extend([0x89, 0x00]);
        for split in 1..stream.len() {
            let mut frames = Frames::default();
            let (head, tail) = stream.split_at(split);
            frames.advance(head);
            let at_boundary = [11, 315].contains(&split);
            assert_eq!(
                frames.bytes_to_boundary() == 0,
                at_boundary,
                "split at {split}"
            );
            frames.advance(tail);
            assert_eq!(frames.bytes_to_boundary(), 0);
        }
    }

    #[test]
    fn payload_lengths_need_the_whole_header() {
        assert_eq!(payload_length(&[0x81]), None);
        assert_eq!(payload_length(&[0x81, 0x05]), Some(5));
        assert_eq!(payload_length(&[0x81, 0x85, 1, 2, 3]), None);
        assert_eq!(payload_length(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0]), None);
        assert_eq!(
            payload_length(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
            Some(65_536)
        );
    }

    #[test]
    fn going_away_frames_are_masked_towards_the_upstream_only() {
        assert_eq!(Role::Server.going_away_frame(), [0x88, 0x02, 0x03, 0xe9]);
        let masked = Role::Client.going_away_frame();
        assert_eq!(masked.get(..2), Some(&[0x88, 0x82][..]));
        let (key, payload) = masked.split_at(6);
        let code: Vec<u8> = payload.iter().zip(&key[2..]).map(|(b, k)| b ^ k).collect();
        assert_eq!(code, [0x03, 0xe9]);
    }
}
