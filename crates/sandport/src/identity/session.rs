//! Small signed tokens sandport issues to itself (login state, runtime sessions) and to the
//! app (the identity assertion): HS256 JWTs under keys only sandport (and, for the assertion,
//! the app) hold, plus the cookie attributes they travel with.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{de::DeserializeOwned, Serialize};

use super::Secret;

/// An HMAC key for one purpose.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    pub fn new(secret: &Secret) -> Self {
        let bytes = secret.expose().as_bytes();
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
        }
    }

    /// Signs `claims`; the claims carry their own `exp`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Option<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).ok()
    }

    /// Verifies a token this key signed, including its `exp` (no leeway).
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        if token.len() > super::jwt::MAX_TOKEN_LEN {
            return None;
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// Lifetime of an identity assertion: long enough for one request to reach the app.
pub const ASSERTION_TTL_SECS: u64 = 60;

#[derive(Debug, Serialize)]
struct Assertion<'a> {
    iss: &'static str,
    aud: &'static str,
    sub: &'a str,
    email: Option<&'a str>,
    email_verified: Option<bool>,
    iat: u64,
    exp: u64,
}

/// The identity assertion the app receives in `X-Sandport-Identity`: an HS256 JWT
/// (`iss` = `sandport`, `aud` = `app`, `sub`, `email`, `email_verified`, `iat`, `exp` 60 s
/// later) signed with the key shared with the app, so the app can refuse requests that did
/// not come through sandport.
pub fn identity_assertion(
    key: &SigningKey,
    principal: &super::Principal,
    now: u64,
) -> Option<String> {
    key.sign(&Assertion {
        iss: "sandport",
        aud: "app",
        sub: principal.user_id.as_str(),
        email: principal.email.as_deref(),
        email_verified: principal.email_verified,
        iat: now,
        exp: now + ASSERTION_TTL_SECS,
    })
}

/// How sandport's cookies are scoped.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    pub secure: bool,
    /// `Lax` (default) or `Strict`; `None` requires `secure`.
    pub same_site: &'static str,
    /// Compatibility: scope platform cookies to a parent domain instead of the app host.
    pub domain: Option<String>,
}

impl CookiePolicy {
    /// A `Set-Cookie` value. `max_age` of `Some(0)` clears the cookie.
    pub fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age: Option<u64>,
        host_only: bool,
    ) -> String {
        let mut cookie = format!(
            "{name}={value}; Path=/; HttpOnly; SameSite={}",
            self.same_site
        );
        if self.secure {
            cookie.push_str("; Secure");
        }
        if let (Some(domain), false) = (&self.domain, host_only) {
            cookie.push_str("; Domain=");
            cookie.push_str(domain);
        }
        if let Some(max_age) = max_age {
            cookie.push_str(&format!("; Max-Age={max_age}"));
            if max_age == 0 {
                cookie.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
            }
        }
        cookie
    }
}

/// 256 random bits, base64url without padding.
pub fn random_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    struct Claims {
        v: String,
        exp: u64,
    }

    #[test]
    fn signed_tokens_round_trip_and_refuse_tampering() {
        let key = SigningKey::new(&Secret::new("k".repeat(32)));
        let other = SigningKey::new(&Secret::new("o".repeat(32)));
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let token = key.sign(&Claims { v: "x".into(), exp }).unwrap();
        assert_eq!(
            key.verify::<Claims>(&token),
            Some(Claims { v: "x".into(), exp })
        );
        assert_eq!(other.verify::<Claims>(&token), None);
        let expired = key
            .sign(&Claims {
                v: "x".into(),
                exp: exp - 120,
            })
            .unwrap();
        assert_eq!(key.verify::<Claims>(&expired), None);
        // The signature's first character changed: a tail replaced by a fixed string can match
        // the original by chance, since `exp` (and so the signature) moves with the clock.
        let signature_start = token.rfind('.').unwrap() + 1;
        let first = token.as_bytes()[signature_start];
        let swapped = if first == b'A' { "B" } else { "A" };
        let mut tampered = token.clone();
        tampered.replace_range(signature_start..=signature_start, swapped);
        assert_eq!(key.verify::<Claims>(&tampered), None);
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
