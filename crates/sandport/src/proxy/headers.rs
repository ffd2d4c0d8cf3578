//! Request and response header rules. Pure.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it names, plus the
//!   classic list and h2c's `HTTP2-Settings`) never cross the proxy; `Connection: upgrade` is
//!   sent only for upgrades. The headers sandport adds are added after that removal, so a
//!   client's `Connection` cannot name them away (catalogue 53).
//! - Identity never reaches an upstream from a client: every `X-Cognito-*` header, the
//!   shared-secret header, sandport's token cookie and a bearer token that is sandport's own
//!   are removed. Names are compared with `_` and `.` read as `-`, so `X_Cognito_User_Id`
//!   and `X.Cognito.User.Id` (which CGI-style servers read as `HTTP_X_COGNITO_USER_ID`) go
//!   too. The app (never a sandbox) then receives the verified identity.
//! - `X-Forwarded-For`, `-Proto` and `-Host` are set; `Host` stays the public host.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::identity::{self, Authenticator, Principal};
use crate::routing::Scheme;

/// Headers that are hop-by-hop whether or not `Connection` names them (parsed once).
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // The h2c upgrade's settings (RFC 7540 §3.2.1): connection-specific, even unnamed.
    HeaderName::from_static("http2-settings"),
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The client at the other end of a connection, described once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    /// `ip` as a header value, for `X-Forwarded-For`.
    pub header: HeaderValue,
}

impl Peer {
    pub fn new(ip: IpAddr) -> Self {
        let header = HeaderValue::try_from(ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { ip, header }
    }
}

/// What the upstream request needs to know about the downstream one.
#[derive(Debug)]
pub struct Forwarding<'a> {
    pub peer: &'a Peer,
    /// Keep the client's `X-Forwarded-For` chain (only when the peer is a trusted proxy).
    pub keep_forwarded_chain: bool,
    pub external_scheme: Scheme,
    /// The public authority as the client sent it (`Host` or the `:authority`).
    pub public_authority: &'a HeaderValue,
    pub websocket: bool,
    /// Set for the app upstream only: the identity it receives.
    pub app_principal: Option<&'a Principal>,
    /// Set for the app upstream only: the signed identity assertion.
    pub app_assertion: Option<&'a str>,
}

/// Rewrites client request headers into upstream request headers.
pub fn prepare_upstream(
    headers: &mut HeaderMap,
    forwarding: &Forwarding<'_>,
    auth: &Authenticator,
) {
    let trailers = wants_trailers(headers);
    remove_hop_by_hop(headers);
    strip_identity(headers, auth);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if forwarding.websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    set_forwarded(headers, forwarding);
    if let Some(principal) = forwarding.app_principal {
        set_identity(headers, principal);
    }
    if let Some(assertion) = forwarding.app_assertion {
        insert_text(headers, identity::ASSERTION_HEADER, assertion);
    }
}

/// Rewrites upstream response headers into client response headers.
pub fn prepare_downstream(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    // The body was framed by its transfer coding, which overrides a length (RFC 9112 §6.3):
    // passing the length on would truncate the body the client gets (catalogue 20).
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    remove_hop_by_hop(headers);
    if switching_protocols {
        if let Some(upgrade) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, upgrade);
        }
    }
}

/// Whether a request asks to become a WebSocket (RFC 6455 §4.1): `Upgrade: websocket` and a
/// `Connection` naming `upgrade`. Other upgrade tokens (such as `h2c`) are never honoured.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &header::UPGRADE, "websocket")
        && has_token(headers, &header::CONNECTION, "upgrade")
}

/// Whether the request's `Transfer-Encoding`, if any, is exactly one `chunked` coding (empty
/// list elements aside, RFC 9110 §5.6.1). Anything else (`gzip, chunked`, `chunked` twice)
/// would be forwarded as a body whose coding nobody upstream is told of.
pub fn is_plain_chunked_or_absent(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        // a value that is not text names no coding sandport knows
        .map(|value| value.to_str().unwrap_or("?"))
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty());
    match codings.next() {
        None => !headers.contains_key(header::TRANSFER_ENCODING),
        Some(first) => first.eq_ignore_ascii_case("chunked") && codings.next().is_none(),
    }
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn wants_trailers(headers: &HeaderMap) -> bool {
    has_token(headers, &header::TE, "trailers")
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few names a request has, instead of a lookup per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        remove_named_in_connection(headers);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn remove_named_in_connection(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

fn strip_identity(headers: &mut HeaderMap, auth: &Authenticator) {
    let identity: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_name(name.as_str()))
        .cloned()
        .collect();
    for name in identity {
        headers.remove(name);
    }
    identity::remove_cookies(headers, identity::OWN_COOKIES);
    let own_authorization = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(|value| auth.is_own_authorization(value));
    if own_authorization {
        headers.remove(header::AUTHORIZATION);
    }
}

/// Whether a (lower-case) header name reads as one of the identity headers once `_` and `.`
/// are taken for `-`: any `x-cognito-*`, the shared-secret header or the identity assertion.
pub fn is_identity_name(name: &str) -> bool {
    starts_with_folded(name, identity::IDENTITY_HEADER_PREFIX)
        || equals_folded(name, identity::ORIGIN_VERIFY_HEADER)
        || equals_folded(name, identity::ASSERTION_HEADER)
}

fn starts_with_folded(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && folded_eq(&name.as_bytes()[..prefix.len()], prefix.as_bytes())
}

fn equals_folded(name: &str, other: &str) -> bool {
    folded_eq(name.as_bytes(), other.as_bytes())
}

/// Byte-wise equality with `_` and `.` in `name` read as `-` and ASCII case ignored (no
/// allocation: this runs for every header of every request).
fn folded_eq(name: &[u8], canonical: &[u8]) -> bool {
    let fold = |byte: u8| match byte {
        b'_' | b'.' => b'-',
        other => other.to_ascii_lowercase(),
    };
    name.len() == canonical.len() && name.iter().zip(canonical).all(|(&n, &c)| fold(n) == c)
}

fn set_forwarded(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    let peer = &forwarding.peer.header;
    let chain = forwarding
        .keep_forwarded_chain
        .then(|| extended_chain(headers, peer))
        .flatten()
        .unwrap_or_else(|| peer.clone());
    let kept_proto = forwarding
        .keep_forwarded_chain
        .then(|| headers.get(&X_FORWARDED_PROTO).cloned())
        .flatten();
    headers.remove(FORWARDED);
    headers.insert(X_FORWARDED_FOR, chain);
    let proto =
        kept_proto.unwrap_or_else(|| HeaderValue::from_static(forwarding.external_scheme.as_str()));
    headers.insert(X_FORWARDED_PROTO, proto);
    headers.insert(X_FORWARDED_HOST, forwarding.public_authority.clone());
    headers.insert(header::HOST, forwarding.public_authority.clone());
}

/// The client's `X-Forwarded-For` chain with `peer` appended; `None` when it sent none.
fn extended_chain(headers: &HeaderMap, peer: &HeaderValue) -> Option<HeaderValue> {
    let mut chain: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    if chain.is_empty() {
        return None;
    }
    chain.push(peer.to_str().ok()?);
    HeaderValue::try_from(chain.join(", ")).ok()
}

fn set_identity(headers: &mut HeaderMap, principal: &Principal) {
    insert_text(headers, identity::USER_HEADER, principal.user_id.as_str());
    insert_text(
        headers,
        identity::EMAIL_HEADER,
        principal.email.as_deref().unwrap_or(""),
    );
    insert_text(
        headers,
        identity::EMAIL_VERIFIED_HEADER,
        if principal.email_verified == Some(true) {
            "true"
        } else {
            "false"
        },
    );
}

fn insert_text(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests;
