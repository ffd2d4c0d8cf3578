//! Response shaping: what sandport changes in responses on their way to the browser.
//!
//! - Every sandbox response (both route forms) gets the security headers and cookie isolation
//!   of `rewrite/headers.rs`, and `localhost:{port}` redirects are sent to runtime hosts.
//! - HTML pages from the app get sandport's browser script injected at the start of `<head>`
//!   (streamed through lol_html; compressed pages are decoded first) and no-cache headers.
//! - Opt-in: HTML pages from sandboxes on the path form get their `localhost:{port}` attribute
//!   URLs rewritten too.
//!
//! Only complete `200 text/html` responses to non-HEAD requests are rewritten; everything else
//! passes through untouched.

mod decode;
pub mod headers;
pub mod html;
pub mod local_url;

use std::fmt::Write as _;
use std::sync::LazyLock;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::body::Body;
use crate::respond;
use crate::routing::{self, Form, RuntimeTarget};
use local_url::RuntimeUrls;

/// The browser script, served by sandport at [`script_path`].
pub const SCRIPT: &str = include_str!("../assets/runtime-links.js");
/// Paths under this prefix on the app host are sandport's own and never reach the app.
pub const ASSET_PREFIX: &str = "/_sandport/";

static SCRIPT_PATH: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(SCRIPT.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{ASSET_PREFIX}runtime-links.{hash}.js")
});

/// The versioned path of the browser script; it changes whenever the script does.
pub fn script_path() -> &'static str {
    &SCRIPT_PATH
}

/// Response-shaping settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub base_domain: String,
    pub runtime_domain: String,
    pub scheme: routing::Scheme,
    /// Inject the browser script into the app's HTML pages.
    pub inject_script: bool,
    /// Origins allowed to frame sandbox pages besides `'self'` and the app origin.
    pub frame_ancestors: Vec<String>,
    /// Rewrite `localhost:{port}` URLs in HTML attributes of path-form sandbox pages.
    pub rewrite_sandbox_html: bool,
    /// Script option `data-default-settings="on"`.
    pub default_settings: bool,
    /// Script option `data-logout-url`.
    pub logout_url: Option<String>,
    /// Decoded bytes of a compressed page past which it is cut off.
    pub max_decoded_bytes: u64,
}

impl Config {
    /// The app's origin as browsers see it.
    pub fn app_origin(&self, public_port: Option<u16>) -> String {
        // Built with pushes rather than `format!`: this runs on every request.
        let mut origin = String::with_capacity(self.base_domain.len() + 14);
        origin.push_str(self.scheme.as_str());
        origin.push_str("://");
        origin.push_str(&self.base_domain);
        if let Some(port) = public_port {
            // Writing to a String cannot fail.
            let _ = write!(origin, ":{port}");
        }
        origin
    }

    /// The `Content-Security-Policy` of sandbox responses: `frame-ancestors 'self'`, the app
    /// origin (as [`Config::app_origin`] gives it) and the configured extra origins.
    pub fn frame_ancestors_policy(&self, app_origin: &str) -> Option<HeaderValue> {
        let mut policy = String::with_capacity(96);
        policy.push_str("frame-ancestors 'self' ");
        policy.push_str(app_origin);
        for origin in &self.frame_ancestors {
            policy.push(' ');
            policy.push_str(origin);
        }
        HeaderValue::try_from(policy).ok()
    }

    fn script_tag(&self) -> String {
        let mut tag = format!(
            "<script src=\"{}\" data-runtime-domain=\"{}\"",
            script_path(),
            self.runtime_domain
        );
        if self.default_settings {
            tag.push_str(" data-default-settings=\"on\"");
        }
        if let Some(url) = &self.logout_url {
            tag.push_str(&format!(" data-logout-url=\"{}\"", escape_attribute(url)));
        }
        tag.push_str("></script>");
        tag
    }
}

/// Serves sandport's own assets; `None` for an unknown path under [`ASSET_PREFIX`].
pub fn asset(path: &str) -> Option<Response<Body>> {
    if path != script_path() {
        return None;
    }
    Some(
        respond::ok()
            .body("text/javascript; charset=utf-8", SCRIPT)
            .cache("public, max-age=31536000, immutable")
            .into_response(),
    )
}

/// Shapes a response from a sandbox.
/// `app_port` says the port is an agent-written app's rather than a platform service's.
pub fn shape_sandbox(
    config: &Config,
    response: Response<Body>,
    method: &Method,
    target: &RuntimeTarget,
    app_port: bool,
    (public_port, app_origin): (Option<u16>, &str),
) -> Response<Body> {
    let urls = || runtime_urls(config, target, public_port);
    let prefix = (target.form == Form::Path).then(|| path_prefix(target));
    let path_form = prefix
        .as_deref()
        .map(|prefix| headers::PathForm { prefix, app_port });
    let (mut parts, body) = response.into_parts();
    headers::shape_sandbox_headers(
        &mut parts.headers,
        &headers::SandboxShape {
            urls: &urls,
            frame_ancestors: config.frame_ancestors_policy(app_origin),
            secure: config.scheme.is_https(),
            path_form,
        },
    );
    let body = rewrite_local_urls(config, method, target, &mut parts, body, urls);
    Response::from_parts(parts, body)
}

fn runtime_urls(config: &Config, target: &RuntimeTarget, public_port: Option<u16>) -> RuntimeUrls {
    RuntimeUrls {
        scheme: config.scheme,
        runtime_domain: config.runtime_domain.clone(),
        public_port,
        conversation: target.conversation.clone(),
    }
}

/// The path-form route prefix, `/runtime/{id}/{port}`, that the sandbox's cookies live under.
fn path_prefix(target: &RuntimeTarget) -> String {
    format!("/runtime/{}/{}", target.conversation, target.port)
}

/// On the path form (when enabled), rewrites `localhost` URLs in a sandbox page to runtime
/// URLs, since the page's own links cannot reach the sandbox from the browser. Other
/// responses, and bodies in an encoding that cannot be decoded, pass unchanged.
fn rewrite_local_urls(
    config: &Config,
    method: &Method,
    target: &RuntimeTarget,
    parts: &mut http::response::Parts,
    body: Body,
    urls: impl FnOnce() -> RuntimeUrls,
) -> Body {
    let rewrite = config.rewrite_sandbox_html
        && target.form == Form::Path
        && is_rewritable_html(method, parts.status, &parts.headers);
    if !rewrite {
        return body;
    }
    match decode::decoded(body, &mut parts.headers, config.max_decoded_bytes) {
        Ok(body) => {
            prepare_rewritten_headers(&mut parts.headers);
            html::rewrite(body, vec![html::Edit::RewriteLocalUrls(urls())])
        }
        Err(body) => body,
    }
}

/// Shapes a response from the app: the browser script goes into its HTML pages.
pub fn shape_app(config: &Config, response: Response<Body>, method: &Method) -> Response<Body> {
    if !config.inject_script || !is_rewritable_html(method, response.status(), response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    match decode::decoded(body, &mut parts.headers, config.max_decoded_bytes) {
        Ok(body) => {
            prepare_rewritten_headers(&mut parts.headers);
            // The page names a versioned script: a cached page would pin an old one.
            let headers = &mut parts.headers;
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store, must-revalidate"),
            );
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
            let edits = vec![html::Edit::PrependToHead(config.script_tag())];
            Response::from_parts(parts, html::rewrite(body, edits))
        }
        Err(body) => {
            ::metrics::counter!(crate::metrics::REWRITE_SKIPPED, "reason" => "encoding")
                .increment(1);
            Response::from_parts(parts, body)
        }
    }
}

/// Whether a response is a complete HTML page that may be rewritten.
fn is_rewritable_html(method: &Method, status: StatusCode, headers: &HeaderMap) -> bool {
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/html"));
    method != Method::HEAD
        && status == StatusCode::OK
        && html
        && !headers.contains_key(header::CONTENT_RANGE)
}

/// A rewritten body has a new length and new bytes.
fn prepare_rewritten_headers(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ETAG);
    headers.remove(header::ACCEPT_RANGES);
    headers.remove("content-md5");
    headers.remove("digest");
}

fn escape_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}
