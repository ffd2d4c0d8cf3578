//! Response header rules for sandbox responses. Pure.
//!
//! - Security headers on every sandbox response: `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: strict-origin-when-cross-origin`, and a `Content-Security-Policy` of its
//!   own holding only `frame-ancestors`. Browsers enforce every CSP header, so adding one never
//!   weakens a stricter policy the sandbox sends; the app's own origin may embed the sandbox.
//! - `Set-Cookie`: `Domain` removed (host-only: one runtime cannot set cookies for the app or
//!   for other runtimes), `Secure` added over https, `SameSite=Strict` added when absent, and
//!   cookies named like sandport's own dropped.
//! - `Location` and `Refresh` naming `http://localhost:{port}` go to that port's runtime host.
//! - At most [`MAX_COOKIES`] cookies of at most [`MAX_COOKIE_BYTES`] each pass (a cookie bomb
//!   would otherwise make every later request of the browser too large to serve).
//!
//! On the path form a sandbox answers on the app's own origin, so it gets less:
//! - headers that act on a whole origin are removed: `Service-Worker-Allowed` (a worker
//!   scoped to `/` would control the app), `Clear-Site-Data`, `Strict-Transport-Security`,
//!   and every `Access-Control-*` (cross-origin access to the app origin is not a sandbox's
//!   to grant);
//! - cookies are scoped under the route's prefix (`Path=/runtime/{id}/{port}/…`), so they
//!   never reach the app or another sandbox;
//! - an app port (not one of the platform's system ports) is an agent-written app: its
//!   responses carry `Content-Security-Policy: sandbox …` without `allow-same-origin`, so its
//!   pages run in an opaque origin that cannot read the app's cookies, storage or API, and
//!   it may set no cookies at all. The host form is where such apps run unrestricted.

use http::header::{self, HeaderMap, HeaderValue};

use super::local_url::RuntimeUrls;

/// Cookie names sandport uses (or will use) for identity; a sandbox may never set them.
const RESERVED_COOKIES: &[&str] = &["id_token", "refresh_token"];
const RESERVED_COOKIE_PREFIX: &str = "sandport";

/// Cookies one sandbox response may set, and the size of each (browsers keep 4 KiB).
pub const MAX_COOKIES: usize = 32;
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Response headers that act on a whole origin; a sandbox on the app's origin may not send them.
const ORIGIN_WIDE: [&str; 3] = [
    "strict-transport-security",
    "service-worker-allowed",
    "clear-site-data",
];

/// The policy for app pages on the path form: scripts and forms work, the origin is opaque.
const PATH_FORM_APP_SANDBOX: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// Settings for shaping one sandbox response.
pub struct SandboxShape<'a> {
    /// Builds the runtime URLs; called only when a `Location` or `Refresh` header is present.
    pub urls: &'a dyn Fn() -> RuntimeUrls,
    /// The `Content-Security-Policy` value: `frame-ancestors` with `'self'` and the app origin.
    pub frame_ancestors: Option<HeaderValue>,
    /// Whether browsers reach sandport over https (cookies then get `Secure`).
    pub secure: bool,
    /// Set when the response goes out on the path form, that is on the app's origin.
    pub path_form: Option<PathForm<'a>>,
}

/// A path-form route, as the response rules need it.
pub struct PathForm<'a> {
    /// `/runtime/{id}/{port}`, without a trailing slash.
    pub prefix: &'a str,
    /// An agent-written app's port rather than one of the platform's system ports.
    pub app_port: bool,
}

/// Applies the sandbox response rules to `headers`.
pub fn shape_sandbox_headers(headers: &mut HeaderMap, shape: &SandboxShape<'_>) {
    if let Some(path_form) = &shape.path_form {
        confine_to_path_form(headers, path_form);
    }
    add_security_headers(headers, shape.frame_ancestors.as_ref());
    isolate_cookies(headers, shape);
    rewrite_header(headers, header::LOCATION, |v| (shape.urls)().rewrite(v));
    rewrite_header(headers, header::REFRESH, |v| {
        (shape.urls)().rewrite_refresh(v)
    });
}

/// On the app's origin a sandbox may not send origin-wide headers, and an app port's pages
/// must run in an opaque origin.
fn confine_to_path_form(headers: &mut HeaderMap, path_form: &PathForm<'_>) {
    for name in ORIGIN_WIDE {
        headers.remove(name);
    }
    let cors: Vec<header::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
    if path_form.app_port {
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PATH_FORM_APP_SANDBOX),
        );
    }
}

/// The headers every sandbox response carries, whatever it sent itself.
fn add_security_headers(headers: &mut HeaderMap, frame_ancestors: Option<&HeaderValue>) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if let Some(csp) = frame_ancestors {
        headers.append(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
}

/// Replaces the response's cookies with their isolated forms; the ones dropped are counted,
/// so a sandbox that keeps losing its cookies shows up in the metrics.
fn isolate_cookies(headers: &mut HeaderMap, shape: &SandboxShape<'_>) {
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    let kept = kept_cookies(&cookies, shape);
    let dropped = cookies.len() - kept.len();
    for cookie in kept {
        headers.append(header::SET_COOKIE, cookie);
    }
    if dropped > 0 {
        ::metrics::counter!(crate::metrics::COOKIES_DROPPED)
            .increment(u64::try_from(dropped).unwrap_or(u64::MAX));
    }
}

/// The cookies that may pass, rewritten; an app port on the path form may set none.
fn kept_cookies(cookies: &[HeaderValue], shape: &SandboxShape<'_>) -> Vec<HeaderValue> {
    let (path_prefix, may_set_cookies) = match &shape.path_form {
        Some(path_form) => (Some(path_form.prefix), !path_form.app_port),
        None => (None, true),
    };
    cookies
        .iter()
        .filter(|_| may_set_cookies)
        .filter(|cookie| cookie.len() <= MAX_COOKIE_BYTES)
        .filter_map(|cookie| cookie.to_str().ok())
        .filter_map(|text| isolate_cookie(text, shape.secure, path_prefix))
        .filter_map(|text| HeaderValue::from_str(&text).ok())
        .take(MAX_COOKIES)
        .collect()
}

fn rewrite_header(
    headers: &mut HeaderMap,
    name: header::HeaderName,
    rewrite: impl Fn(&str) -> Option<String>,
) {
    let rewritten = headers
        .get(&name)
        .and_then(|value| value.to_str().ok())
        .and_then(rewrite)
        .and_then(|value| HeaderValue::from_str(&value).ok());
    if let Some(value) = rewritten {
        headers.insert(name, value);
    }
}

/// Rewrites one `Set-Cookie` value; `None` drops it (unparsable, or one of sandport's names).
/// With a `path_prefix` (the path form), the cookie's path is moved under it.
pub fn isolate_cookie(value: &str, secure: bool, path_prefix: Option<&str>) -> Option<String> {
    let mut parts = value.split(';');
    let pair = parts.next()?.trim();
    let name = pair.split_once('=').map_or(pair, |(name, _)| name).trim();
    if name.is_empty() || is_reserved(name) {
        return None;
    }
    let mut attributes = kept_attributes(parts, path_prefix.is_some());
    if let Some(prefix) = path_prefix {
        attributes.push(format!("Path={prefix}{}", own_path(value)));
    }
    if secure && !has_attribute(&attributes, "secure") {
        attributes.push("Secure".into());
    }
    if !has_attribute(&attributes, "samesite") {
        attributes.push("SameSite=Strict".into());
    }
    let mut out = pair.to_owned();
    for attribute in attributes {
        out.push_str("; ");
        out.push_str(&attribute);
    }
    Some(out)
}

/// A cookie attribute's name, lowercased, for comparing against the ones the rules replace.
fn attribute_name(attribute: &str) -> String {
    attribute
        .split_once('=')
        .map_or(attribute, |(name, _)| name)
        .trim()
        .to_ascii_lowercase()
}

/// The cookie's attributes without `Domain` (cookies stay host-only) and, when the path is
/// to be moved (`replace_path`), without `Path`.
fn kept_attributes<'a>(
    attributes: impl Iterator<Item = &'a str>,
    replace_path: bool,
) -> Vec<String> {
    attributes
        .map(str::trim)
        .filter(|attribute| !attribute.is_empty() && attribute_name(attribute) != "domain")
        .filter(|attribute| !replace_path || attribute_name(attribute) != "path")
        .map(str::to_owned)
        .collect()
}

/// The cookie's own (last) `Path`, or `/` when it has none that is absolute.
fn own_path(value: &str) -> &str {
    value
        .split(';')
        .skip(1)
        .filter_map(|attribute| attribute.trim().split_once('='))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("path"))
        .map(|(_, path)| path.trim())
        .last()
        .filter(|path| path.starts_with('/'))
        .unwrap_or("/")
}

fn has_attribute(attributes: &[String], wanted: &str) -> bool {
    attributes.iter().any(|a| attribute_name(a) == wanted)
}

fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let bare = lower
        .strip_prefix("__host-")
        .or_else(|| lower.strip_prefix("__secure-"))
        .unwrap_or(&lower);
    RESERVED_COOKIES.contains(&bare) || bare.starts_with(RESERVED_COOKIE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ConversationId;

    #[test]
    fn cookie_isolation_table() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("a=1", true, Some("a=1; Secure; SameSite=Strict")),
            ("a=1", false, Some("a=1; SameSite=Strict")),
            (
                "a=1; Domain=.example.com; Path=/",
                true,
                Some("a=1; Path=/; Secure; SameSite=Strict"),
            ),
            (
                "a=1;domain=example.com;secure;samesite=Lax",
                true,
                Some("a=1; secure; samesite=Lax"),
            ),
            (
                "a=1; DOMAIN = x ; HttpOnly",
                false,
                Some("a=1; HttpOnly; SameSite=Strict"),
            ),
            ("id_token=stolen; Domain=.example.com", true, None),
            ("refresh_token=x", true, None),
            ("sandport_token=x", true, None),
            ("__Host-id_token=x; Path=/; Secure", true, None),
            ("SANDPORT_runtime=x", true, None),
            ("", true, None),
            ("=x", true, None),
        ];
        for (input, secure, expected) in cases {
            assert_eq!(
                isolate_cookie(input, *secure, None).as_deref(),
                *expected,
                "{input}"
            );
        }
    }

    #[test]
    fn sandbox_headers() {
        let urls = RuntimeUrls {
            scheme: crate::routing::Scheme::Https,
            runtime_domain: "runtime.example.com".into(),
            public_port: None,
            conversation: ConversationId::parse("7c15e423fbd44f8f8bf483a481daa4d9").unwrap(),
        };
        let shape = SandboxShape {
            urls: &|| urls.clone(),
            frame_ancestors: Some(HeaderValue::from_static(
                "frame-ancestors 'self' https://example.com",
            )),
            secure: true,
            path_form: None,
        };
        let mut headers = HeaderMap::new();
        headers.append(
            header::SET_COOKIE,
            "id_token=x; Domain=.example.com".parse().unwrap(),
        );
        headers.append(
            header::SET_COOKIE,
            "theme=dark; Domain=.example.com".parse().unwrap(),
        );
        headers.insert(
            header::LOCATION,
            "http://localhost:5000/next".parse().unwrap(),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'".parse().unwrap(),
        );
        shape_sandbox_headers(&mut headers, &shape);
        let all = |name| {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            all(header::SET_COOKIE),
            ["theme=dark; Secure; SameSite=Strict"]
        );
        assert_eq!(
            all(header::LOCATION),
            ["https://5000-7c15e423fbd44f8f8bf483a481daa4d9.runtime.example.com/next"]
        );
        assert_eq!(
            all(header::CONTENT_SECURITY_POLICY),
            [
                "default-src 'none'",
                "frame-ancestors 'self' https://example.com"
            ]
        );
        assert_eq!(all(header::X_CONTENT_TYPE_OPTIONS), ["nosniff"]);
        assert_eq!(
            all(header::REFERRER_POLICY),
            ["strict-origin-when-cross-origin"]
        );
    }
}
