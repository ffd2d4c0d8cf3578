//! Helpers shared by the targets: inputs are small text formats so that the seed corpus is
//! readable and hand-written.

#![allow(dead_code)]

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Splits `data` at its first `\n`: (first line, rest). No newline: (empty, data).
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[], data),
    }
}

/// A header map from `name: value` lines (bytes, any encoding). Lines that are not a valid
/// header are skipped, as hyper would refuse them before sandport saw them.
pub fn header_map(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// Every `name=value` pair of every `Cookie` header, read as bytes (not only the values that
/// are valid UTF-8): what an upstream would see.
pub fn cookie_pairs(headers: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .map(|pair| pair.trim_ascii())
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(at) => (pair[..at].trim_ascii().to_vec(), pair[at + 1..].to_vec()),
            None => (pair.to_vec(), Vec::new()),
        })
        .collect()
}

/// Whether a cookie name (bytes) is one of sandport's own.
pub fn is_own_cookie(name: &[u8]) -> bool {
    sandport::identity::OWN_COOKIES
        .iter()
        .any(|own| own.as_bytes() == name)
}
