//! The one renderer of responses sandport makes itself: errors, redirects, the CORS probe and
//! preflight answers, its own script, the admin pages. Every one leaves here with the same
//! protective headers, so no path can forget them:
//!
//! - `X-Content-Type-Options: nosniff`: a text body is never sniffed into HTML or script;
//! - `X-Frame-Options: DENY` and `Content-Security-Policy: frame-ancestors 'none'`: no page
//!   of sandport's can be framed for clickjacking. The one exception is the retry page
//!   ([`Framing::Embeddable`]): it is what the app's iframe shows while a sandbox app starts,
//!   holds no control, and reloads itself;
//! - `Referrer-Policy: no-referrer`;
//! - `Cache-Control: no-store`, unless the caller names another policy (the versioned script).
//!
//! Bodies are fixed text chosen by sandport; callers never put raw request input in them.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{full, Body};

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=utf-8";

/// Whether a page may be shown inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Denied,
    Embeddable,
}

/// One response of sandport's own, built up and then rendered by [`Own::into_response`].
#[derive(Debug)]
#[must_use]
pub struct Own {
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Bytes,
    cache: &'static str,
    framing: Framing,
    extra: Vec<(HeaderName, HeaderValue)>,
}

impl Own {
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            content_type: None,
            body: Bytes::new(),
            cache: "no-store",
            framing: Framing::Denied,
            extra: Vec::new(),
        }
    }

    pub fn body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }

    pub fn cache(mut self, policy: &'static str) -> Self {
        self.cache = policy;
        self
    }

    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Adds a header (appended, so `Set-Cookie` may repeat).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.extra.push((name, value));
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(full(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(content_type) = self.content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(self.cache));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if self.framing == Framing::Denied {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'none'"),
            );
        }
        for (name, value) in self.extra {
            headers.append(name, value);
        }
        response
    }
}

/// A plain-text response (a newline is added when the text lacks one).
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let body = if message.ends_with('\n') {
        Bytes::copy_from_slice(message.as_bytes())
    } else {
        Bytes::from(format!("{message}\n"))
    };
    Own::new(status).body(TEXT, body).into_response()
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Own::new(status).body(JSON, body).into_response()
}

/// A `200` JSON answer.
pub fn json_ok(body: impl Into<Bytes>) -> Response<Body> {
    json(StatusCode::OK, body)
}

/// A `200`, to be given a body.
pub fn ok() -> Own {
    Own::new(StatusCode::OK)
}

/// A `204` with no body.
pub fn no_content() -> Own {
    Own::new(StatusCode::NO_CONTENT)
}

/// A `302 Found` to `location` that sets `cookies`. A location that cannot be a header value
/// becomes `/`, never a redirect without a target.
pub fn redirect(location: &str, cookies: &[String]) -> Response<Body> {
    let location =
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    let response = Own::new(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .into_response();
    with_cookies(response, cookies)
}

/// Appends `Set-Cookie` headers (sandport's own cookies, on any response).
pub fn with_cookies(mut response: Response<Body>, cookies: &[String]) -> Response<Body> {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_own_response_carries_the_protective_headers() {
        for response in [
            text(StatusCode::NOT_FOUND, "Not found"),
            json(StatusCode::UNAUTHORIZED, "{}"),
            redirect("/x", &[]),
            Own::new(StatusCode::NO_CONTENT).into_response(),
        ] {
            let headers = response.headers();
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(headers["x-frame-options"], "DENY");
            assert_eq!(headers["content-security-policy"], "frame-ancestors 'none'");
            assert_eq!(headers["cache-control"], "no-store");
        }
    }

    #[test]
    fn the_embeddable_page_may_be_framed_and_nothing_else_changes() {
        let response = Own::new(StatusCode::BAD_GATEWAY)
            .body(HTML, "<p>x</p>")
            .framing(Framing::Embeddable)
            .into_response();
        assert!(!response.headers().contains_key("x-frame-options"));
        assert!(!response.headers().contains_key("content-security-policy"));
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }

    #[test]
    fn a_location_that_is_not_a_header_value_redirects_home() {
        let response = redirect("/a\r\nSet-Cookie: x=1", &[]);
        assert_eq!(response.headers()["location"], "/");
        assert!(!response.headers().contains_key("set-cookie"));
    }
}
