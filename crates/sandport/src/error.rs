//! The one place that turns a failure into what the client sees: status, body, headers,
//! log level and metric reason. Bodies are `text/plain; charset=utf-8`, compatible with the
//! previous gateway's exact strings.

use http::{header, HeaderValue, Response, StatusCode};

use crate::authz::Denied;
use crate::body::Body;
use crate::discovery::{AddressRefusal, LookupError};
use crate::respond::{self, Framing, Own};
use crate::routing::{ConversationId, RouteError};

pub const UNAUTHENTICATED_BODY: &str =
    "Authentication required. Please login at the main application first.";

/// Every reason sandport answers a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("authentication required")]
    Unauthenticated,
    /// An API request to the app without a login: 401 JSON, never a redirect.
    #[error("login required")]
    LoginRequired,
    #[error("credentials refused: {0}")]
    Credentials(#[from] crate::identity::Refusal),
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
    #[error("upstream {upstream} not reachable: {source}")]
    UpstreamUnreachable {
        upstream: Upstream,
        source: BoxError,
    },
    #[error("upstream {upstream} timed out")]
    UpstreamTimeout { upstream: Upstream },
    #[error("upstream {upstream} failed: {source}")]
    UpstreamFailed {
        upstream: Upstream,
        source: BoxError,
    },
}

pub use crate::body::BoxError;

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

/// The decision for one error: status, public message, log level and metric reason.
struct Decision {
    status: StatusCode,
    message: String,
    reason: &'static str,
    warn: bool,
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
        let d = |status, message: String, reason, warn| Decision {
            status,
            message,
            reason,
            warn,
        };
        match self {
            ProxyError::BadRequest(_) => d(
                StatusCode::BAD_REQUEST,
                "Bad request".into(),
                "bad_request",
                false,
            ),
            ProxyError::Route(RouteError::MalformedRuntimePath) => d(
                StatusCode::NOT_FOUND,
                "Not found".into(),
                "malformed_route",
                false,
            ),
            ProxyError::UnknownAsset => d(
                StatusCode::NOT_FOUND,
                "Not found".into(),
                "unknown_asset",
                false,
            ),
            ProxyError::LoginRequired => d(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"Authentication required"}"#.into(),
                "login_required",
                false,
            ),
            ProxyError::Credentials(refusal) => credentials_decision(*refusal),
            ProxyError::CrossOrigin(_) => d(
                StatusCode::FORBIDDEN,
                "Cross-origin request refused".into(),
                "cross_origin",
                true,
            ),
            ProxyError::Unauthenticated => d(
                StatusCode::UNAUTHORIZED,
                UNAUTHENTICATED_BODY.into(),
                "unauthenticated",
                false,
            ),
            ProxyError::Lookup {
                conversation,
                error,
            } => match error {
                LookupError::Unavailable => d(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Docker service unavailable".into(),
                    "discovery_unavailable",
                    true,
                ),
                LookupError::NotFound => d(
                    StatusCode::NOT_FOUND,
                    format!("No container found for conversation {conversation}"),
                    "not_found",
                    false,
                ),
                LookupError::Paused => d(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Sandbox for conversation {conversation} is paused"),
                    "paused",
                    false,
                ),
                LookupError::NoAddress => d(
                    StatusCode::BAD_GATEWAY,
                    "Container has no IP address".into(),
                    "no_address",
                    true,
                ),
                LookupError::Contested => d(
                    StatusCode::CONFLICT,
                    format!(
                        "Conversation {conversation} is claimed by containers of different owners"
                    ),
                    "contested_owner",
                    true,
                ),
            },
            ProxyError::Denied { denied, .. } => match denied {
                Denied::Unlabelled => d(
                    StatusCode::FORBIDDEN,
                    "Access denied: container not properly labeled with owner".into(),
                    "unlabelled",
                    true,
                ),
                Denied::NotOwner => d(
                    StatusCode::FORBIDDEN,
                    "Access denied: you do not own this conversation".into(),
                    "not_owner",
                    true,
                ),
            },
            ProxyError::AddressRefused {
                conversation,
                refusal,
            } => match refusal {
                AddressRefusal::HostLocal => d(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "Sandbox for conversation {conversation} has a host-local address \
                         (host networking or loopback); sandport does not route to it"
                    ),
                    "host_local_address",
                    true,
                ),
                AddressRefusal::OwnListener => d(
                    StatusCode::FORBIDDEN,
                    "Access denied: that port is sandport's own".into(),
                    "own_listener",
                    true,
                ),
            },
            ProxyError::BodyTooLarge => d(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large".into(),
                "body_too_large",
                false,
            ),
            ProxyError::BadRequestBody => d(
                StatusCode::BAD_REQUEST,
                "Bad request: malformed request body".into(),
                "bad_request_body",
                false,
            ),
            ProxyError::UpstreamUnreachable { upstream, .. } => d(
                StatusCode::BAD_GATEWAY,
                match upstream {
                    Upstream::App => "App upstream not reachable".into(),
                    Upstream::Sandbox(c) => format!("Upstream not reachable for conversation {c}"),
                },
                "upstream_unreachable",
                true,
            ),
            ProxyError::UpstreamTimeout { upstream } => d(
                StatusCode::GATEWAY_TIMEOUT,
                match upstream {
                    Upstream::App => "App upstream timed out".into(),
                    Upstream::Sandbox(c) => format!("Upstream timed out for conversation {c}"),
                },
                "upstream_timeout",
                true,
            ),
            ProxyError::UpstreamFailed { upstream, .. } => d(
                StatusCode::BAD_GATEWAY,
                match upstream {
                    Upstream::App => "App upstream failed".into(),
                    Upstream::Sandbox(c) => format!("Upstream failed for conversation {c}"),
                },
                "upstream_failed",
                true,
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
        let mut reply = Own::new(decision.status);
        if decision.status == StatusCode::SERVICE_UNAVAILABLE
            || decision.status == StatusCode::BAD_GATEWAY && kind.navigation
        {
            reply = reply.header(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        let reply = if decision.status == StatusCode::BAD_GATEWAY && kind.navigation {
            // Shown inside the app's iframe while a sandbox app starts, so it may be framed.
            reply
                .body(respond::HTML, retry_page(&decision.message))
                .framing(Framing::Embeddable)
        } else if matches!(self, ProxyError::LoginRequired) {
            reply.body(respond::JSON, decision.message)
        } else {
            reply.body(respond::TEXT, format!("{}\n", decision.message))
        };
        reply.into_response()
    }
}

/// Refused credentials: a malformed request is 400, an ambiguous one 401 (never a login
/// redirect: logging in again would not remove the other credential), and keys that are not
/// loaded yet 503 (with `Retry-After`, like every 503).
fn credentials_decision(refusal: crate::identity::Refusal) -> Decision {
    use crate::identity::Refusal;
    let (status, message, reason, warn) = match refusal {
        Refusal::RepeatedAuthorization => (
            StatusCode::BAD_REQUEST,
            "Bad request: more than one Authorization header",
            "repeated_authorization",
            false,
        ),
        Refusal::Ambiguous => (
            StatusCode::UNAUTHORIZED,
            "Ambiguous credentials: they name more than one user. Please log out and log in again.",
            "ambiguous_credentials",
            true,
        ),
        Refusal::KeysUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Login is unavailable right now: the identity provider's keys are not loaded",
            "identity_keys_unavailable",
            true,
        ),
        Refusal::ProviderUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Login is unavailable right now: the identity provider does not answer",
            "identity_provider_unavailable",
            true,
        ),
        Refusal::LoginStateUnsigned => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "login_failed",
            true,
        ),
    };
    Decision {
        status,
        message: message.into(),
        reason,
        warn,
    }
}

/// A small page that says what happened and retries by itself.
fn retry_page(message: &str) -> String {
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
