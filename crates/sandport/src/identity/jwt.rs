//! ID-token verification: RS256 only, keys by `kid`, every claim checked. Pure given the key
//! set and the current time.
//!
//! The algorithm is pinned: the token's own `alg` never chooses it, so `alg: none` and HS256
//! tokens signed with the public key are refused. `iss` must match exactly; `aud` (or Cognito's
//! `client_id`) must name the client; `token_use`, when present, must be the configured value;
//! `exp` is required and `nbf` honoured, both with the configured clock skew.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::Principal;

/// Tokens longer than this are refused before any parsing (cookies cap near 4 KiB anyway).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("token has no key id")]
    NoKeyId,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature or claims: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token has no expiry")]
    NoExpiry,
    #[error("token is for another client")]
    WrongAudience,
    #[error("token_use is not accepted")]
    WrongTokenUse,
    #[error("nonce mismatch")]
    WrongNonce,
}

/// The verification rules for one client of one issuer.
#[derive(Debug, Clone)]
pub struct Rules {
    pub issuer: String,
    pub client_id: String,
    /// Required `token_use` when the claim is present (`id` for Cognito ID tokens); empty
    /// disables the check.
    pub token_use: String,
    pub clock_skew_secs: u64,
}

/// Verification keys by `kid`.
pub type KeySet = HashMap<String, Arc<DecodingKey>>;

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: Option<u64>,
    nbf: Option<u64>,
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
    header.kid.ok_or(TokenError::NoKeyId)
}

/// Verifies `token` against `keys` at time `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, rules: &Rules, now: u64) -> Result<Verified, TokenError> {
    let kid = key_id(token)?;
    let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&rules.issuer]);
    validation.set_required_spec_claims(&["iss"]);
    // Time and audience are checked below against `now`, so this stays a pure function.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|error| TokenError::Invalid(error.kind_name()))?
        .claims;
    let skew = rules.clock_skew_secs;
    let exp = claims.exp.ok_or(TokenError::NoExpiry)?;
    if exp.saturating_add(skew) <= now {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(TokenError::NotYetValid);
    }
    let for_client = match &claims.aud {
        Some(Audience::One(aud)) => *aud == rules.client_id,
        Some(Audience::Many(auds)) => auds.contains(&rules.client_id),
        None => false,
    } || claims.client_id.as_deref() == Some(rules.client_id.as_str());
    if !for_client {
        return Err(TokenError::WrongAudience);
    }
    if !rules.token_use.is_empty()
        && claims
            .token_use
            .as_deref()
            .is_some_and(|used| used != rules.token_use)
    {
        return Err(TokenError::WrongTokenUse);
    }
    let email_verified = claims.email_verified.as_ref().map(|value| match value {
        serde_json::Value::Bool(flag) => *flag,
        serde_json::Value::String(text) => text == "true",
        _ => false,
    });
    Ok(Verified {
        principal: Principal {
            user_id: claims.sub,
            email: claims.email,
            email_verified,
        },
        expires_at: exp,
        nonce: claims.nonce,
    })
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
