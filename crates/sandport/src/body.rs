//! The body type every response and upstream request uses, and its constructors.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;

/// Any error a body or an upstream exchange can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body. Unsync so that body transforms which are `Send` but not `Sync` fit.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A received body, streamed through unchanged.
pub fn incoming(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed_unsync()
}

/// A received body that fails once more than `limit` bytes have passed. Its own read errors
/// (bad chunk framing from the client) are marked as the client's, see [`is_client_error`].
pub fn limited(body: Incoming, limit: u64) -> Body {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Limited::new(body.map_err(ClientBodyError), limit).boxed_unsync()
}

/// The client's request body could not be read (malformed chunked framing, a reset).
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct ClientBodyError(#[source] hyper::Error);

/// Whether an error (or anything in its source chain) is the client's own body failing, as
/// opposed to the upstream failing while it was sent.
pub fn is_client_error(error: &(dyn std::error::Error + 'static)) -> bool {
    chain_holds::<ClientBodyError>(error)
}

/// Whether an error (or anything in its source chain) is the body limit tripping.
pub fn is_limit_error(error: &(dyn std::error::Error + 'static)) -> bool {
    chain_holds::<http_body_util::LengthLimitError>(error)
}

/// Whether an error, or anything in its source chain, is an `E`.
pub fn chain_holds<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|error| error.is::<E>())
}
