//! Identity: who is calling. Settled before discovery is consulted, and fail closed.
//!
//! Three modes, a closed set:
//! - `token`: one person on one machine. A secret token, accepted as `Authorization: Bearer`,
//!   as the `sandport_token` cookie, or once as `?sandport_token=` (which sets the cookie and
//!   redirects to the same URL without it). The principal is a configured user id.
//! - `trusted_header`: an edge in front already verified the user and sends
//!   `X-Cognito-User-Id`. It is believed only from peers in `trusted_proxies` and, when a
//!   shared secret is configured, only with a matching `X-Origin-Verify`. From anyone else the
//!   request is unauthenticated.
//! - `oidc`: sandport is the edge. It runs the login itself and verifies ID tokens (see
//!   `identity/oidc.rs`); runtime hosts get their own short sessions.
//!
//! The token and trusted-header checks are pure; OIDC may fetch keys or refresh tokens.

mod cookies;
pub mod credentials;
pub mod jwks;
pub mod jwt;
pub mod oidc;
mod principal;
pub mod provider;
pub mod session;
mod token;
mod trusted_header;

use std::net::IpAddr;

pub use cookies::{cookie_values, remove_cookies};
pub use credentials::Refusal;
pub use principal::{is_placeholder, BadUserId, Principal, UserId};
pub use token::{Secret, TokenAuth, TOKEN_COOKIE, TOKEN_QUERY};
pub use trusted_header::HeaderRule;

/// The identity header family the edge uses (and sandport strips from clients).
pub const USER_HEADER: &str = "x-cognito-user-id";
pub const EMAIL_HEADER: &str = "x-cognito-email";
pub const EMAIL_VERIFIED_HEADER: &str = "x-cognito-email-verified";
/// Prefix of every identity header; all of them are removed from what clients send.
pub const IDENTITY_HEADER_PREFIX: &str = "x-cognito-";
/// The shared-secret header between the edge and sandport.
pub const ORIGIN_VERIFY_HEADER: &str = "x-origin-verify";
/// The signed identity assertion sandport sends the app (never accepted from clients).
pub const ASSERTION_HEADER: &str = "x-sandport-identity";
/// Every cookie sandport uses; none is ever forwarded upstream.
pub const OWN_COOKIES: &[&str] = &[
    TOKEN_COOKIE,
    oidc::ID_TOKEN_COOKIE,
    oidc::REFRESH_TOKEN_COOKIE,
    oidc::LOGIN_COOKIE,
    oidc::RUNTIME_COOKIE,
];

/// The outcome of authenticating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Authenticated(Principal),
    /// Authenticated after an inline token refresh: these cookies go on the response.
    Refreshed {
        principal: Principal,
        set_cookies: Vec<String>,
    },
    Anonymous,
    /// A valid token arrived in the query: set the cookie and redirect to `location`.
    TokenInQuery {
        location: String,
    },
    /// The credentials cannot be believed as sent (see [`Refusal`]): answered as an error.
    Refused(Refusal),
}

/// The configured identity mode.
#[derive(Debug)]
pub enum Authenticator {
    Token(TokenAuth),
    TrustedHeader(HeaderRule),
    Oidc(std::sync::Arc<oidc::Oidc>),
}

/// Which kind of host a request came to, for the modes that care.
#[derive(Debug, Clone, Copy)]
pub enum HostKind<'a> {
    /// The app host (the app and the path form).
    App,
    /// A runtime host, by its lowercased name.
    Runtime(&'a str),
}

impl Authenticator {
    /// Authenticates a request from `peer`. `path_and_query` is the raw request-target.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        path_and_query: &str,
        peer: IpAddr,
        host: HostKind<'_>,
    ) -> Authentication {
        let found = |principal: Option<Principal>| match principal {
            Some(principal) => Authentication::Authenticated(principal),
            None => Authentication::Anonymous,
        };
        if let Err(refusal) = credentials::authorization(headers) {
            return Authentication::Refused(refusal);
        }
        match self {
            Authenticator::Token(auth) => auth.authenticate(headers, path_and_query),
            Authenticator::TrustedHeader(rule) => found(rule.authenticate(headers, peer)),
            Authenticator::Oidc(oidc) => match host {
                HostKind::Runtime(name) => found(oidc.authenticate_runtime(headers, name)),
                HostKind::App => match Box::pin(oidc.authenticate(headers)).await {
                    oidc::AppAuth::Authenticated {
                        principal,
                        set_cookies,
                    } if set_cookies.is_empty() => Authentication::Authenticated(principal),
                    oidc::AppAuth::Authenticated {
                        principal,
                        set_cookies,
                    } => Authentication::Refreshed {
                        principal,
                        set_cookies,
                    },
                    oidc::AppAuth::Anonymous => Authentication::Anonymous,
                    oidc::AppAuth::Refused(refusal) => Authentication::Refused(refusal),
                },
            },
        }
    }

    /// Whether an `Authorization` value carries one of sandport's own credentials, which must
    /// never reach an upstream.
    pub fn is_own_authorization(&self, value: &http::HeaderValue) -> bool {
        match self {
            Authenticator::Token(auth) => auth.is_own_authorization(value),
            Authenticator::TrustedHeader(_) => false,
            Authenticator::Oidc(oidc) => oidc.is_own_authorization(value),
        }
    }

    /// Whether the app upstream may be reached without a principal. In token mode sandport is
    /// the only gate, so it may not; behind a trusted edge the app answers for itself.
    pub fn app_requires_principal(&self) -> bool {
        matches!(self, Authenticator::Token(_) | Authenticator::Oidc(_))
    }

    /// Whether `peer` is a trusted proxy whose `X-Forwarded-For` chain may be kept.
    pub fn is_trusted_peer(&self, peer: IpAddr) -> bool {
        match self {
            Authenticator::Token(_) | Authenticator::Oidc(_) => false,
            Authenticator::TrustedHeader(rule) => rule.is_trusted_peer(peer),
        }
    }
}
