//! The one place that turns a failure into what the client sees: status, body, headers,
//! log level and metric reason. Bodies are `text/plain; charset=utf-8`, compatible with the
//! previous gateway's exact strings.

use http::{header, HeaderValue, Response, StatusCode};

use crate::authz::Denied;
use crate::body::Body;
use crate::discovery::{AddressRefusal, LookupError};
use crate::identity::oidc::LoginRefusal;
use crate::identity::Refusal;
use crate::respond::{self, Framing, Own};
use crate::routing::{ConversationId, RouteError};

pub const UNAUTHENTICATED_BODY: &str =
    "Authentication required. Please login at the main application first.";
const BAD_BODY: &str = "Bad request: malformed request body";
/// What a 405 for CONNECT or TRACE offers instead.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const LOGIN_REQUIRED_BODY: &str = r#"{"error":"Authentication required"}"#;

/// Every reason sandport answers a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A malformed request (its Host, its upgrade, its HTTP/2 fields): 400, and the connection
    /// is closed, since what is pipelined behind it cannot be trusted either (catalogue 16).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `/_sandport/runtime-auth?host=` names no runtime host: 400 for that request only.
    #[error("not a runtime host")]
    NotRuntimeHost,
    /// A request line sandport does not serve, refused before anything else.
    #[error(transparent)]
    Form(#[from] FormRefusal),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("authentication required")]
    Unauthenticated,
    /// An API request to the app without a login: 401 JSON, never a redirect.
    #[error("login required")]
    LoginRequired,
    #[error("credentials refused: {0}")]
    Credentials(#[from] Refusal),
    /// One of the login endpoints refused (`/_callback`, `/_logout`, `/_token/refresh`).
    #[error("login refused: {0}")]
    Login(#[from] LoginRefusal),
    #[error("cross-origin request refused: {0}")]
    CrossOrigin(#[from] crate::edge::OriginRefused),
    #[error("no such sandport asset")]
    UnknownAsset,
    #[error("lookup failed for {conversation}: {error}")]
    Lookup {
        conversation: ConversationId,
        error: LookupError,
    },
    #[error("access denied to {conversation}: {denied}")]
    Denied {
        conversation: ConversationId,
        denied: Denied,
    },
    /// The sandbox's address is one sandport never connects to (the host's own).
    #[error("address of {conversation} refused: {refusal:?}")]
    AddressRefused {
        conversation: ConversationId,
        refusal: AddressRefusal,
    },
    #[error("request body larger than the limit")]
    BodyTooLarge,
    /// The client's body broke its own framing (bad chunk sizes, bare CR) while it was sent.
    #[error("malformed request body")]
    BadRequestBody,
    /// The client stopped sending its request body for the idle timeout: 408, and the
    /// connection is closed (the rest of the body would follow on it).
    #[error("request body timed out")]
    RequestBodyTimeout,
    #[error("upstream {upstream} not reachable: {source}")]
    UpstreamUnreachable {
        upstream: Upstream,
        source: BoxError,
    },
    /// The sandbox already has its limit of exchanges in flight: 429 with `Retry-After`.
    #[error("too many requests in flight to {conversation}")]
    SandboxBusy { conversation: ConversationId },
    #[error("upstream {upstream} timed out")]
    UpstreamTimeout { upstream: Upstream },
    #[error("upstream {upstream} failed: {source}")]
    UpstreamFailed {
        upstream: Upstream,
        source: BoxError,
    },
}

pub use crate::body::BoxError;

/// Request lines sandport does not serve (RFC 9112 §3.2, catalogue 12, 13, 17).
#[derive(Debug, thiserror::Error)]
pub enum FormRefusal {
    /// Authority-form, or `*` on a method other than OPTIONS: 400, and the connection closes.
    #[error("request-target refused: {0}")]
    BadTarget(&'static str),
    /// 414, and the connection closes.
    #[error("request-target longer than {0} bytes")]
    TargetTooLong(usize),
    /// CONNECT or TRACE: 405, and the connection closes; nothing is dialled.
    #[error("method {0} refused")]
    MethodRefused(http::Method),
    /// `OPTIONS *`: about the server, not a resource; answered here, never forwarded.
    #[error("OPTIONS * is not forwarded")]
    AsteriskOptions,
}

/// Which upstream a failure concerns.
#[derive(Debug, Clone)]
pub enum Upstream {
    App,
    Sandbox(ConversationId),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::App => f.write_str("app"),
            Upstream::Sandbox(conversation) => write!(f, "sandbox {conversation}"),
        }
    }
}

/// How the client asked, where that changes the answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestKind {
    /// A browser navigation (gets a self-retrying HTML page instead of a bare 502).
    pub navigation: bool,
    /// The previous UI's background probe: `Origin` present, `Sec-Fetch-Mode` absent or
    /// `cors`, and `Accept` mentioning `application/json`.
    pub cors_probe: bool,
}

const SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");

impl RequestKind {
    pub fn of(headers: &http::HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let fetch_mode = text(SEC_FETCH_MODE);
        let accept = text(header::ACCEPT).unwrap_or("");
        Self {
            navigation: fetch_mode == Some("navigate")
                || (fetch_mode.is_none() && accept.contains("text/html")),
            cors_probe: headers.contains_key(header::ORIGIN)
                && fetch_mode.is_none_or(|mode| mode == "cors")
                && accept.contains("application/json"),
        }
    }
}

/// The decision for one error: status, public message, log level, metric reason, body form.
struct Decision {
    status: StatusCode,
    message: String,
    reason: &'static str,
    warn: bool,
    json: bool,
}

/// A refusal the client brought on itself: logged at debug.
fn quiet(status: StatusCode, message: impl Into<String>, reason: &'static str) -> Decision {
    Decision {
        status,
        message: message.into(),
        reason,
        warn: false,
        json: false,
    }
}

/// A refusal an operator may need to see: logged at warn.
fn loud(status: StatusCode, message: impl Into<String>, reason: &'static str) -> Decision {
    Decision {
        warn: true,
        ..quiet(status, message, reason)
    }
}

impl Decision {
    fn json(self) -> Self {
        Self { json: true, ..self }
    }
}

impl ProxyError {
    /// The status and public message the client would get.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        let decision = self.decide();
        (decision.status, decision.message)
    }

    /// The metric and log reason for this error.
    pub fn reason(&self) -> &'static str {
        self.decide().reason
    }

    fn decide(&self) -> Decision {
        use StatusCode as S;
        match self {
            ProxyError::BadRequest(_) => quiet(S::BAD_REQUEST, "Bad request", "bad_request"),
            ProxyError::NotRuntimeHost => quiet(S::BAD_REQUEST, "Bad request", "not_runtime_host"),
            ProxyError::Form(refusal) => form_decision(refusal),
            ProxyError::Route(RouteError::MalformedRuntimePath) => {
                quiet(S::NOT_FOUND, "Not found", "malformed_route")
            }
            ProxyError::UnknownAsset => quiet(S::NOT_FOUND, "Not found", "unknown_asset"),
            ProxyError::LoginRequired => {
                quiet(S::UNAUTHORIZED, LOGIN_REQUIRED_BODY, "login_required").json()
            }
            ProxyError::Credentials(refusal) => credentials_decision(*refusal),
            ProxyError::Login(refusal) => login_decision(refusal),
            ProxyError::CrossOrigin(_) => {
                loud(S::FORBIDDEN, "Cross-origin request refused", "cross_origin")
            }
            ProxyError::Unauthenticated => {
                quiet(S::UNAUTHORIZED, UNAUTHENTICATED_BODY, "unauthenticated")
            }
            ProxyError::Lookup {
                conversation,
                error,
            } => lookup_decision(conversation, error),
            ProxyError::Denied { denied, .. } => denied_decision(*denied),
            ProxyError::AddressRefused {
                conversation,
                refusal,
            } => address_decision(conversation, *refusal),
            ProxyError::BodyTooLarge => quiet(
                S::PAYLOAD_TOO_LARGE,
                "Request body too large",
                "body_too_large",
            ),
            ProxyError::BadRequestBody => quiet(S::BAD_REQUEST, BAD_BODY, "bad_request_body"),
            ProxyError::RequestBodyTimeout => quiet(
                S::REQUEST_TIMEOUT,
                "Request body timed out",
                "request_body_timeout",
            ),
            ProxyError::UpstreamUnreachable { upstream, .. } => loud(
                S::BAD_GATEWAY,
                upstream_message(upstream, "not reachable"),
                "upstream_unreachable",
            ),
            ProxyError::SandboxBusy { .. } => busy_decision(),
            ProxyError::UpstreamTimeout { upstream } => loud(
                S::GATEWAY_TIMEOUT,
                upstream_message(upstream, "timed out"),
                "upstream_timeout",
            ),
            ProxyError::UpstreamFailed { upstream, .. } => loud(
                S::BAD_GATEWAY,
                upstream_message(upstream, "failed"),
                "upstream_failed",
            ),
        }
    }

    /// Builds the response, logging and counting it.
    pub fn into_response(self, kind: RequestKind) -> Response<Body> {
        let decision = self.decide();
        if decision.warn {
            tracing::warn!(reason = decision.reason, error = %self, "request refused");
        } else {
            tracing::debug!(reason = decision.reason, error = %self, "request refused");
        }
        ::metrics::counter!(crate::metrics::ERRORS, "reason" => decision.reason).increment(1);
        let unreachable_sandbox = matches!(
            self,
            ProxyError::UpstreamUnreachable {
                upstream: Upstream::Sandbox(_),
                ..
            }
        );
        if unreachable_sandbox && kind.cors_probe {
            // The UI probes ports while the app starts: a quiet 204 keeps its console clean.
            return Own::new(StatusCode::NO_CONTENT).into_response();
        }
        self.extra_headers(render(decision, kind)).into_response()
    }

    /// Headers a refusal carries beyond its decision: `Allow` on a 405, the cleared login
    /// cookies when the provider refused a refresh, `Connection: close` after a request that
    /// was not HTTP sandport serves (what follows it on the connection is not trusted).
    fn extra_headers(&self, reply: Own) -> Own {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::RequestBodyTimeout
            | ProxyError::Form(FormRefusal::BadTarget(_) | FormRefusal::TargetTooLong(_)) => {
                reply.header(header::CONNECTION, HeaderValue::from_static("close"))
            }
            ProxyError::Form(FormRefusal::MethodRefused(_)) => reply
                .header(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS))
                .header(header::CONNECTION, HeaderValue::from_static("close")),
            ProxyError::SandboxBusy { .. } => {
                reply.header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            ProxyError::Login(LoginRefusal::RefreshMethod) => {
                reply.header(header::ALLOW, HeaderValue::from_static("POST"))
            }
            ProxyError::Login(LoginRefusal::RefreshRefused { clear_cookies, .. }) => clear_cookies
                .iter()
                .filter_map(|cookie| HeaderValue::from_str(cookie).ok())
                .fold(reply, |reply, cookie| {
                    reply.header(header::SET_COOKIE, cookie)
                }),
            _ => reply,
        }
    }
}

/// The decision as a response: 503s, and 502s to navigations, say when to retry; a 502 to a
/// navigation is a page that retries by itself; the rest is text or JSON.
fn render(decision: Decision, kind: RequestKind) -> Own {
    let mut reply = Own::new(decision.status);
    let retry_page = decision.status == StatusCode::BAD_GATEWAY && kind.navigation;
    if decision.status == StatusCode::SERVICE_UNAVAILABLE || retry_page {
        reply = reply.header(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    if retry_page {
        // Shown inside the app's iframe while a sandbox app starts, so it may be framed.
        reply
            .body(respond::HTML, retry_page_html(&decision.message))
            .framing(Framing::Embeddable)
    } else if decision.json {
        reply.body(respond::JSON, decision.message)
    } else {
        reply.body(respond::TEXT, format!("{}\n", decision.message))
    }
}

/// Refused credentials: a malformed request is 400, an ambiguous one 401 (never a login
/// redirect: logging in again would not remove the other credential), and keys that are not
/// loaded yet 503 (with `Retry-After`, like every 503).
fn credentials_decision(refusal: Refusal) -> Decision {
    use StatusCode as S;
    match refusal {
        Refusal::RepeatedAuthorization => quiet(
            S::BAD_REQUEST,
            "Bad request: more than one Authorization header",
            "repeated_authorization",
        ),
        Refusal::Ambiguous => loud(
            S::UNAUTHORIZED,
            "Ambiguous credentials: they name more than one user. Please log out and log in again.",
            "ambiguous_credentials",
        ),
        Refusal::KeysUnavailable => loud(
            S::SERVICE_UNAVAILABLE,
            "Login is unavailable right now: the identity provider's keys are not loaded",
            "identity_keys_unavailable",
        ),
        Refusal::ProviderUnavailable => loud(
            S::SERVICE_UNAVAILABLE,
            "Login is unavailable right now: the identity provider does not answer",
            "identity_provider_unavailable",
        ),
        Refusal::LoginStateUnsigned => {
            loud(S::INTERNAL_SERVER_ERROR, "Login failed", "login_failed")
        }
    }
}

/// The login endpoints' refusals, with the previous edge's exact statuses and bodies: text for
/// `/_callback` and `/_logout`, JSON for `/_token/refresh`.
fn login_decision(refusal: &LoginRefusal) -> Decision {
    use StatusCode as S;
    let failed = |message| loud(S::INTERNAL_SERVER_ERROR, message, "login_failed");
    match refusal {
        LoginRefusal::MissingCode => quiet(
            S::BAD_REQUEST,
            "Missing authorization code",
            "login_bad_callback",
        ),
        LoginRefusal::BadLoginState => quiet(
            S::BAD_REQUEST,
            "Invalid or expired login state",
            "login_bad_callback",
        ),
        LoginRefusal::NoTokens => failed("Failed to get tokens"),
        LoginRefusal::TokenRefused => failed("Token verification failed"),
        LoginRefusal::CrossSiteLogout => loud(
            S::FORBIDDEN,
            "Logout must come from this site",
            "cross_site_logout",
        ),
        LoginRefusal::RefreshMethod => quiet(
            S::METHOD_NOT_ALLOWED,
            r#"{"error":"Method not allowed"}"#,
            "refresh_method",
        )
        .json(),
        LoginRefusal::NoRefreshToken => quiet(
            S::UNAUTHORIZED,
            r#"{"error":"No refresh token available"}"#,
            "refresh_refused",
        )
        .json(),
        LoginRefusal::RefreshRefused { details, .. } => {
            let details = serde_json::Value::String(details.clone());
            let body = format!(r#"{{"error":"Token refresh failed","details":{details}}}"#);
            quiet(S::UNAUTHORIZED, body, "refresh_refused").json()
        }
        LoginRefusal::RefreshNoIdToken => {
            failed(r#"{"error":"No id_token in refresh response"}"#).json()
        }
        LoginRefusal::RefreshTokenRefused => {
            failed(r#"{"error":"Token verification failed after refresh"}"#).json()
        }
        LoginRefusal::RefreshFailed => failed(r#"{"error":"Token refresh failed"}"#).json(),
    }
}

/// A sandbox at its limit of exchanges in flight: the caller should retry shortly.
fn busy_decision() -> Decision {
    loud(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests to this sandbox",
        "sandbox_busy",
    )
}

fn form_decision(refusal: &FormRefusal) -> Decision {
    use StatusCode as S;
    match refusal {
        FormRefusal::BadTarget(_) => quiet(S::BAD_REQUEST, "Bad request", "bad_target"),
        FormRefusal::TargetTooLong(_) => quiet(S::URI_TOO_LONG, "URI too long", "target_too_long"),
        FormRefusal::MethodRefused(_) => quiet(
            S::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "method_refused",
        ),
        FormRefusal::AsteriskOptions => quiet(S::NOT_FOUND, "Not found", "asterisk_options"),
    }
}

fn lookup_decision(conversation: &ConversationId, error: &LookupError) -> Decision {
    use StatusCode as S;
    match error {
        LookupError::Unavailable => loud(
            S::SERVICE_UNAVAILABLE,
            "Docker service unavailable",
            "discovery_unavailable",
        ),
        LookupError::NotFound => quiet(
            S::NOT_FOUND,
            format!("No container found for conversation {conversation}"),
            "not_found",
        ),
        LookupError::Paused => quiet(
            S::SERVICE_UNAVAILABLE,
            format!("Sandbox for conversation {conversation} is paused"),
            "paused",
        ),
        LookupError::NoAddress => loud(S::BAD_GATEWAY, "Container has no IP address", "no_address"),
        LookupError::Contested => loud(
            S::CONFLICT,
            format!("Conversation {conversation} is claimed by containers of different owners"),
            "contested_owner",
        ),
    }
}

fn denied_decision(denied: Denied) -> Decision {
    match denied {
        Denied::Unlabelled => loud(
            StatusCode::FORBIDDEN,
            "Access denied: container not properly labeled with owner",
            "unlabelled",
        ),
        Denied::NotOwner => loud(
            StatusCode::FORBIDDEN,
            "Access denied: you do not own this conversation",
            "not_owner",
        ),
    }
}

fn address_decision(conversation: &ConversationId, refusal: AddressRefusal) -> Decision {
    match refusal {
        AddressRefusal::HostLocal => loud(
            StatusCode::BAD_GATEWAY,
            format!(
                "Sandbox for conversation {conversation} has a host-local address \
                 (host networking or loopback); sandport does not route to it"
            ),
            "host_local_address",
        ),
        AddressRefusal::OwnListener => loud(
            StatusCode::FORBIDDEN,
            "Access denied: that port is sandport's own",
            "own_listener",
        ),
    }
}

/// "App upstream {what}" or "Upstream {what} for conversation {id}", as the seed said.
fn upstream_message(upstream: &Upstream, what: &str) -> String {
    match upstream {
        Upstream::App => format!("App upstream {what}"),
        Upstream::Sandbox(conversation) => {
            format!("Upstream {what} for conversation {conversation}")
        }
    }
}

/// A small page that says what happened and retries by itself.
fn retry_page_html(message: &str) -> String {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
<title>Starting…</title></head><body><p>{escaped}</p><p>The app may still be starting; this page retries every 2 seconds.</p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(pairs: &[(&str, &str)]) -> RequestKind {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        RequestKind::of(&headers)
    }

    #[test]
    fn cors_probe_rule() {
        assert!(kind(&[("origin", "https://a"), ("accept", "application/json")]).cors_probe);
        assert!(
            kind(&[
                ("origin", "https://a"),
                ("accept", "application/json, */*"),
                ("sec-fetch-mode", "cors")
            ])
            .cors_probe
        );
        assert!(
            !kind(&[
                ("origin", "https://a"),
                ("accept", "application/json"),
                ("sec-fetch-mode", "websocket")
            ])
            .cors_probe
        );
        assert!(!kind(&[("accept", "application/json")]).cors_probe);
        assert!(!kind(&[("origin", "https://a"), ("accept", "text/html")]).cors_probe);
    }

    #[test]
    fn navigation_detection() {
        assert!(kind(&[("sec-fetch-mode", "navigate")]).navigation);
        assert!(kind(&[("accept", "text/html,application/xhtml+xml")]).navigation);
        assert!(!kind(&[("accept", "text/html"), ("sec-fetch-mode", "cors")]).navigation);
        assert!(!kind(&[]).navigation);
    }
}
