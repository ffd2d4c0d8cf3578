//! Browser-facing guards: CORS for the app's calls to runtime hosts, `Origin` checks that stop
//! cross-site WebSocket hijacking and writes from sandbox pages to the app. Pure.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};

use crate::body::Body;
use crate::respond;
use crate::routing;

const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS, PUT, PATCH, POST, DELETE";

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
}

/// Answers a CORS preflight from the app's origin to a runtime host (preflights carry no
/// cookies, so the sandbox could not answer it for an authenticated request).
pub fn preflight(method: &Method, headers: &HeaderMap, app_origin: &str) -> Option<Response<Body>> {
    let is_preflight = method == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && origin(headers) == Some(app_origin);
    if !is_preflight {
        return None;
    }
    let mut response = respond::no_content().into_response();
    let out = response.headers_mut();
    allow_origin(out, app_origin);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Some(response)
}

/// Lets the app's origin read a runtime host's response (with credentials).
pub fn allow_app_origin(origin: Option<&HeaderValue>, response: &mut HeaderMap, app_origin: &str) {
    if origin.is_some_and(|origin| origin.as_bytes() == app_origin.as_bytes()) {
        allow_origin(response, app_origin);
    }
}

fn allow_origin(headers: &mut HeaderMap, app_origin: &str) {
    if let Ok(value) = HeaderValue::from_str(app_origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Why a browser request was refused before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginRefused {
    #[error("WebSocket from a foreign origin")]
    WebSocket,
    #[error("WebSocket with cookies and no Origin")]
    WebSocketWithoutOrigin,
    #[error("state-changing request from a sandbox origin")]
    WriteFromRuntime,
    #[error("cross-site state-changing request with cookies")]
    CrossSiteWrite,
}

const SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");

/// Checks `Origin` where browsers send it:
/// - a WebSocket handshake must come from an allowed origin (the app, or on a runtime host
///   that host itself); without `Origin` it must carry no cookies (a non-browser client
///   authenticates with a bearer token, and every browser sends `Origin` on a handshake);
/// - a state-changing request must not come from a runtime host, and when it carries cookies
///   (the credentials a browser attaches by itself) it must not come from any other site:
///   neither a foreign `Origin` nor, without one, `Sec-Fetch-Site: cross-site`.
///
/// Requests without cookies and without `Origin` (non-browser clients) pass.
pub fn check_origin(
    method: &Method,
    headers: &HeaderMap,
    websocket: bool,
    allowed: &[&str],
    runtime_domain: &str,
) -> Result<(), OriginRefused> {
    let origin = origin(headers);
    let allowed_origin = origin.is_some_and(|origin| allowed.contains(&origin));
    let cookies = headers.contains_key(header::COOKIE);
    if websocket {
        return match origin {
            Some(_) if !allowed_origin => Err(OriginRefused::WebSocket),
            None if cookies => Err(OriginRefused::WebSocketWithoutOrigin),
            _ => Ok(()),
        };
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || allowed_origin {
        return Ok(());
    }
    match origin {
        Some(origin) if is_runtime_origin(origin, runtime_domain) => {
            Err(OriginRefused::WriteFromRuntime)
        }
        Some(_) if cookies => Err(OriginRefused::CrossSiteWrite),
        None if cookies && is_cross_site_fetch(headers) => Err(OriginRefused::CrossSiteWrite),
        _ => Ok(()),
    }
}

fn is_cross_site_fetch(headers: &HeaderMap) -> bool {
    headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

fn is_runtime_origin(origin: &str, runtime_domain: &str) -> bool {
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                authority
            }
        });
    let host = host.to_ascii_lowercase();
    routing::parse_runtime_host(runtime_domain, &host).is_some()
        || host.ends_with(&format!(".{runtime_domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "https://example.com";
    const RUNTIME: &str = "https://5000-7c15e423fbd44f8f8bf483a481daa4d9.runtime.example.com";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn preflights_from_the_app_only() {
        let ok = headers(&[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-custom"),
        ]);
        let response = preflight(&Method::OPTIONS, &ok, APP).unwrap();
        assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], APP);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-headers"], "content-type, x-custom");
        let foreign = headers(&[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(preflight(&Method::OPTIONS, &foreign, APP).is_none());
        assert!(preflight(&Method::GET, &ok, APP).is_none());
    }

    #[test]
    fn origin_rules() {
        let domain = "runtime.example.com";
        let ws = |origin: &str, allowed: &[&str]| {
            check_origin(
                &Method::GET,
                &headers(&[("origin", origin)]),
                true,
                allowed,
                domain,
            )
        };
        assert_eq!(ws(APP, &[APP]), Ok(()));
        assert_eq!(
            ws("https://evil.test", &[APP]),
            Err(OriginRefused::WebSocket)
        );
        assert_eq!(ws(RUNTIME, &[APP, RUNTIME]), Ok(()));
        assert_eq!(ws(RUNTIME, &[APP]), Err(OriginRefused::WebSocket));
        assert_eq!(
            check_origin(&Method::GET, &HeaderMap::new(), true, &[APP], domain),
            Ok(())
        );

        let write = |method: Method, origin: &str| {
            check_origin(
                &method,
                &headers(&[("origin", origin)]),
                false,
                &[APP],
                domain,
            )
        };
        assert_eq!(
            write(Method::POST, RUNTIME),
            Err(OriginRefused::WriteFromRuntime)
        );
        assert_eq!(
            write(Method::DELETE, "https://x.runtime.example.com:8443"),
            Err(OriginRefused::WriteFromRuntime)
        );
        assert_eq!(write(Method::GET, RUNTIME), Ok(()));
        assert_eq!(write(Method::POST, APP), Ok(()));
    }

    #[test]
    fn cookie_websockets_need_an_origin() {
        let domain = "runtime.example.com";
        let ws = |pairs: &[(&str, &str)]| {
            check_origin(&Method::GET, &headers(pairs), true, &[APP], domain)
        };
        assert_eq!(
            ws(&[("cookie", "id_token=x")]),
            Err(OriginRefused::WebSocketWithoutOrigin)
        );
        assert_eq!(ws(&[("authorization", "Bearer x")]), Ok(()));
        assert_eq!(ws(&[("cookie", "id_token=x"), ("origin", APP)]), Ok(()));
        assert_eq!(
            ws(&[("cookie", "id_token=x"), ("origin", "null")]),
            Err(OriginRefused::WebSocket)
        );
    }

    #[test]
    fn cross_site_writes_with_cookies_are_refused() {
        let domain = "runtime.example.com";
        let check = |method: Method, pairs: &[(&str, &str)]| {
            check_origin(&method, &headers(pairs), false, &[APP], domain)
        };
        let cookie = ("cookie", "id_token=x");
        for refused in [
            vec![cookie, ("origin", "https://evil.test")],
            vec![cookie, ("origin", "null")],
            vec![cookie, ("sec-fetch-site", "cross-site")],
            vec![cookie, ("sec-fetch-site", "Cross-Site")],
        ] {
            assert_eq!(
                check(Method::POST, &refused),
                Err(OriginRefused::CrossSiteWrite),
                "{refused:?}"
            );
            assert_eq!(check(Method::GET, &refused), Ok(()), "{refused:?}");
        }
        for passed in [
            vec![cookie],
            vec![cookie, ("origin", APP)],
            vec![cookie, ("origin", APP), ("sec-fetch-site", "cross-site")],
            vec![cookie, ("sec-fetch-site", "same-site")],
            vec![
                ("origin", "https://evil.test"),
                ("authorization", "Bearer x"),
            ],
            vec![("sec-fetch-site", "cross-site")],
        ] {
            assert_eq!(check(Method::POST, &passed), Ok(()), "{passed:?}");
        }
    }
}
