//! Decoding compressed bodies before they are rewritten (gzip, deflate, br).

use std::io;

use async_compression::tokio::bufread::{BrotliDecoder, DeflateDecoder, GzipDecoder};
use futures_util::TryStreamExt;
use http::header::{self, HeaderMap};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::body::Body;
use crate::body::BoxError;

/// Returns the body decoded (and removes `Content-Encoding`), or gives it back untouched when
/// its encoding is not one sandport can decode. Past `limit` decoded bytes the body ends with
/// an error: the client sees a cut-off response, never a bomb's gigabytes.
pub(super) fn decoded(body: Body, headers: &mut HeaderMap, limit: u64) -> Result<Body, Body> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let Some(encoding) = encoding.filter(|e| e != "identity") else {
        return Ok(body);
    };
    let codec = match encoding.as_str() {
        "gzip" | "x-gzip" => Codec::Gzip,
        "deflate" => Codec::Deflate,
        "br" => Codec::Brotli,
        _ => return Err(body),
    };
    let reader = StreamReader::new(body.into_data_stream().map_err(io::Error::other));
    let decoder: Box<dyn AsyncRead + Send + Unpin> = match codec {
        Codec::Gzip => Box::new(GzipDecoder::new(reader)),
        Codec::Deflate => Box::new(DeflateDecoder::new(reader)),
        Codec::Brotli => Box::new(BrotliDecoder::new(reader)),
    };
    headers.remove(header::CONTENT_ENCODING);
    let mut decoded_bytes = 0_u64;
    let frames = ReaderStream::new(decoder)
        .map_err(BoxError::from)
        .and_then(move |chunk| {
            decoded_bytes += chunk.len() as u64;
            let within = decoded_bytes <= limit;
            if !within {
                ::metrics::counter!(crate::metrics::REWRITE_SKIPPED, "reason" => "decoded_too_large")
                    .increment(1);
            }
            std::future::ready(if within {
                Ok(Frame::data(chunk))
            } else {
                Err(BoxError::from(DecodedTooLarge(limit)))
            })
        });
    Ok(StreamBody::new(frames).boxed_unsync())
}

#[derive(Debug, thiserror::Error)]
#[error("decoded body longer than {0} bytes")]
struct DecodedTooLarge(u64);

enum Codec {
    Gzip,
    Deflate,
    Brotli,
}
