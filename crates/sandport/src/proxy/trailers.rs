//! Request trailers never reach an upstream.
//!
//! Trailer fields arrive after the body, long after identity and routing were settled from
//! the head, and sandport's header rules (identity stripping, forwarding, hop-by-hop) run on
//! the head only. Rather than keep a second copy of those rules for fields nobody here needs,
//! request trailers are dropped whole (RFC 9110 §6.5.1 lets a proxy discard them): a
//! `X-Cognito-User-Id` or `Host` sent as a trailer is never seen upstream, in any form.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};

/// `body` with its trailers frame, if any, removed; data frames pass unchanged.
pub fn without_trailers(body: Body) -> Body {
    WithoutTrailers(body).boxed_unsync()
}

struct WithoutTrailers(Body);

impl HttpBody for WithoutTrailers {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match Pin::new(&mut self.0).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                    tracing::debug!("request trailers dropped");
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn trailers_are_dropped_and_data_kept() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-cognito-user-id", HeaderValue::from_static("victim"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        let collected = without_trailers(body).collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"abc"));
    }

    #[test]
    fn the_length_is_kept() {
        let body = Full::new(Bytes::from_static(b"abcd"))
            .map_err(|never| match never {})
            .boxed_unsync();
        assert_eq!(without_trailers(body).size_hint().exact(), Some(4));
    }
}
