//! ID-token verification: RS256 only, keys by `kid`, every claim checked. Pure given the key
//! set and the current time.
//!
//! The algorithm is pinned: the token's own `alg` never chooses it, so `alg: none` and HS256
//! tokens signed with the public key are refused. `iss` must be one string equal to the issuer; `aud` (or Cognito's
//! `client_id`) must name the client; `token_use` must be the configured value (a token
//! without one is refused when a value is configured); `exp` is required, and `nbf` and `iat`
//! are honoured (a token issued in the future is refused), all with the configured clock skew. `sub` must be a well-formed [`UserId`]. A `kid` that
//! could not be a key id ([`is_well_formed_kid`]) is refused before the key set is consulted,
//! so it never causes a JWKS refetch.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{Principal, UserId};

/// Tokens longer than this are refused before any parsing (cookies cap near 4 KiB anyway).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The longest `kid` looked up (Cognito's are 44 characters of base64).
pub const MAX_KID_LEN: usize = 128;

/// Why a token was refused. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("token has no key id")]
    NoKeyId,
    #[error("token key id is not well formed")]
    BadKeyId,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature or claims: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token has no expiry")]
    NoExpiry,
    #[error("token is from another issuer")]
    WrongIssuer,
    #[error("token is for another client")]
    WrongAudience,
    #[error("token_use is not accepted")]
    WrongTokenUse,
    #[error("token has no token_use")]
    NoTokenUse,
    #[error("token subject is not a valid user id")]
    BadSubject,
    #[error("nonce mismatch")]
    WrongNonce,
}

/// The verification rules for one client of one issuer.
#[derive(Debug, Clone)]
pub struct Rules {
    pub issuer: String,
    pub client_id: String,
    /// Required `token_use` (`id` for Cognito ID tokens): a token without the claim, or with
    /// another value, is refused. Empty disables the check.
    pub token_use: String,
    pub clock_skew_secs: u64,
}

/// Verification keys by `kid`.
pub type KeySet = HashMap<String, Arc<DecodingKey>>;

#[derive(Debug, Deserialize)]
struct Claims {
    /// One string: jsonwebtoken also accepts a list naming the issuer, which no provider sends.
    iss: String,
    sub: String,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    aud: Option<Audience>,
    client_id: Option<String>,
    token_use: Option<String>,
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
    nonce: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A verified token: who it names and until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub principal: Principal,
    pub expires_at: u64,
    pub nonce: Option<String>,
}

/// The `kid` of a token, read from its (unverified) header.
pub fn key_id(token: &str) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    let kid = header.kid.ok_or(TokenError::NoKeyId)?;
    if !is_well_formed_kid(&kid) {
        return Err(TokenError::BadKeyId);
    }
    Ok(kid)
}

/// Whether `kid` could name a published key: 1 to [`MAX_KID_LEN`] characters of the base64
/// and base64url alphabets (with `=` padding). Path tricks, quotes, spaces and control
/// characters are not; they are refused without looking anything up.
pub fn is_well_formed_kid(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"+/=-_".contains(&byte))
}

/// Verifies `token` against `keys` at time `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, rules: &Rules, now: u64) -> Result<Verified, TokenError> {
    let kid = key_id(token)?;
    let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
    let claims = decode(token, key, rules)?;
    if claims.iss != rules.issuer {
        return Err(TokenError::WrongIssuer);
    }
    let exp = check_time(&claims, rules.clock_skew_secs, now)?;
    check_audience(&claims, rules)?;
    check_token_use(&claims, rules)?;
    let user_id = UserId::parse(claims.sub).map_err(|_| TokenError::BadSubject)?;
    let email_verified = claims.email_verified.as_ref().map(|value| match value {
        serde_json::Value::Bool(flag) => *flag,
        serde_json::Value::String(text) => text == "true",
        _ => false,
    });
    Ok(Verified {
        principal: Principal {
            user_id,
            email: claims.email,
            email_verified,
        },
        expires_at: exp,
        nonce: claims.nonce,
    })
}

/// Checks the signature (RS256 only) and the issuer, and reads the claims.
fn decode(token: &str, key: &DecodingKey, rules: &Rules) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&rules.issuer]);
    validation.set_required_spec_claims(&["iss"]);
    // Time and audience are checked below against `now`, so this stays a pure function.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|error| TokenError::Invalid(error.kind_name()))
}

/// `exp` is required and in the future, `nbf` and `iat` (if any) in the past, all within
/// `skew`. Returns `exp`.
fn check_time(claims: &Claims, skew: u64, now: u64) -> Result<u64, TokenError> {
    let exp = claims.exp.ok_or(TokenError::NoExpiry)?;
    if exp.saturating_add(skew) <= now {
        return Err(TokenError::Expired);
    }
    let latest = now.saturating_add(skew);
    if claims.nbf.is_some_and(|nbf| nbf > latest) {
        return Err(TokenError::NotYetValid);
    }
    // A provider never issues tokens ahead of its clock: such a token was minted, not issued.
    if claims.iat.is_some_and(|iat| iat > latest) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(exp)
}

/// `aud` (one or many) or Cognito's `client_id` must name the client.
fn check_audience(claims: &Claims, rules: &Rules) -> Result<(), TokenError> {
    let for_client = match &claims.aud {
        Some(Audience::One(aud)) => *aud == rules.client_id,
        Some(Audience::Many(auds)) => auds.contains(&rules.client_id),
        None => false,
    } || claims.client_id.as_deref() == Some(rules.client_id.as_str());
    for_client.then_some(()).ok_or(TokenError::WrongAudience)
}

/// When a `token_use` is configured, the token must carry exactly that one.
fn check_token_use(claims: &Claims, rules: &Rules) -> Result<(), TokenError> {
    if rules.token_use.is_empty() {
        return Ok(());
    }
    match claims.token_use.as_deref() {
        None => Err(TokenError::NoTokenUse),
        Some(used) if used == rules.token_use => Ok(()),
        Some(_) => Err(TokenError::WrongTokenUse),
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    /// The error kind without any token content.
    fn kind_name(&self) -> String {
        let kind = format!("{:?}", self.kind());
        kind.split(['(', ' '])
            .next()
            .unwrap_or("Invalid")
            .to_owned()
    }
}

#[cfg(test)]
mod tests;
