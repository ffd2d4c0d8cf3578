//! Identity: who is calling. Settled before discovery is consulted, and fail closed.
//!
//! Two modes, a closed set:
//! - `token`: one person on one machine. A secret token, accepted as `Authorization: Bearer`,
//!   as the `sandport_token` cookie, or once as `?sandport_token=` (which sets the cookie and
//!   redirects to the same URL without it). The principal is a configured user id.
//! - `trusted_header`: an edge in front already verified the user and sends
//!   `X-Cognito-User-Id`. It is believed only from peers in `trusted_proxies` and, when a
//!   shared secret is configured, only with a matching `X-Origin-Verify`. From anyone else the
//!   request is unauthenticated.
//!
//! Pure: the peer address and headers are passed in.

mod cookies;
mod token;
mod trusted_header;

use std::net::IpAddr;

pub use cookies::{cookie_values, remove_cookie};
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

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
}

/// The outcome of authenticating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Authenticated(Principal),
    Anonymous,
    /// A valid token arrived in the query: set the cookie and redirect to `location`.
    TokenInQuery {
        location: String,
    },
}

/// The configured identity mode.
#[derive(Debug)]
pub enum Authenticator {
    Token(TokenAuth),
    TrustedHeader(HeaderRule),
}

impl Authenticator {
    /// Authenticates a request from `peer`. `path_and_query` is the raw request-target.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        path_and_query: &str,
        peer: IpAddr,
    ) -> Authentication {
        match self {
            Authenticator::Token(auth) => auth.authenticate(headers, path_and_query),
            Authenticator::TrustedHeader(rule) => match rule.authenticate(headers, peer) {
                Some(principal) => Authentication::Authenticated(principal),
                None => Authentication::Anonymous,
            },
        }
    }

    /// Whether an `Authorization` value carries one of sandport's own credentials, which must
    /// never reach an upstream.
    pub fn is_own_authorization(&self, value: &http::HeaderValue) -> bool {
        match self {
            Authenticator::Token(auth) => auth.is_own_authorization(value),
            Authenticator::TrustedHeader(_) => false,
        }
    }

    /// Whether the app upstream may be reached without a principal. In token mode sandport is
    /// the only gate, so it may not; behind a trusted edge the app answers for itself.
    pub fn app_requires_principal(&self) -> bool {
        matches!(self, Authenticator::Token(_))
    }

    /// Whether `peer` is a trusted proxy whose `X-Forwarded-For` chain may be kept.
    pub fn is_trusted_peer(&self, peer: IpAddr) -> bool {
        match self {
            Authenticator::Token(_) => false,
            Authenticator::TrustedHeader(rule) => rule.is_trusted_peer(peer),
        }
    }
}
