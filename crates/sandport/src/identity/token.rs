//! Token mode: one secret, compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;

use super::credentials::bearer_token;
use super::{cookie_values, Authentication, Principal, UserId};

/// The cookie that carries the token after the first visit.
pub const TOKEN_COOKIE: &str = "sandport_token";
/// The query parameter accepted once, on a navigation.
pub const TOKEN_QUERY: &str = "sandport_token";

/// A secret that never appears in logs or debug output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// Generates 256 random bits, hex encoded.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Token-mode settings.
#[derive(Debug)]
pub struct TokenAuth {
    pub token: Secret,
    pub user_id: UserId,
}

impl TokenAuth {
    /// The token cookie: HttpOnly, `Secure` behind HTTPS, on `domain` when runtime hosts share
    /// it (see `Gateway::token_cookie_domain`).
    pub fn cookie(&self, secure: bool, domain: Option<&str>) -> String {
        let secure = if secure { "; Secure" } else { "" };
        let domain = domain.map(|d| format!("; Domain={d}")).unwrap_or_default();
        format!(
            "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax{secure}{domain}",
            self.token.expose()
        )
    }

    pub(super) fn authenticate(
        &self,
        headers: &http::HeaderMap,
        path_and_query: &str,
    ) -> Authentication {
        let bearer = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .any(|value| self.is_own_authorization(value));
        let cookie = cookie_values(headers, TOKEN_COOKIE).any(|v| self.token.matches(v.as_bytes()));
        if bearer || cookie {
            return Authentication::Authenticated(self.principal());
        }
        match strip_token_query(path_and_query) {
            Some((token, location)) if self.token.matches(token.as_bytes()) => {
                Authentication::TokenInQuery { location }
            }
            _ => Authentication::Anonymous,
        }
    }

    pub(super) fn is_own_authorization(&self, value: &http::HeaderValue) -> bool {
        bearer_token(value).is_some_and(|token| self.token.matches(token.as_bytes()))
    }

    fn principal(&self) -> Principal {
        Principal::user(self.user_id.clone())
    }
}

/// Finds `sandport_token=` in the query and returns its value and the request-target without
/// it (the other parameters kept verbatim, in order).
fn strip_token_query(path_and_query: &str) -> Option<(&str, String)> {
    let (path, query) = path_and_query.split_once('?')?;
    let mut token = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((TOKEN_QUERY, value)) if token.is_none() => token = Some(value),
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let location = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    Some((token?, location))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> TokenAuth {
        TokenAuth {
            token: Secret::new("s3cr3t-s3cr3t-s3cr3t".into()),
            user_id: UserId::parse("local").unwrap(),
        }
    }

    fn with(name: &str, value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        headers
    }

    #[test]
    fn bearer_cookie_and_query() {
        let auth = auth();
        let ok = |a: Authentication| matches!(a, Authentication::Authenticated(p) if p.user_id == "local");
        assert!(ok(auth.authenticate(
            &with("authorization", "Bearer s3cr3t-s3cr3t-s3cr3t"),
            "/"
        )));
        assert!(ok(auth.authenticate(
            &with("authorization", "bearer s3cr3t-s3cr3t-s3cr3t"),
            "/"
        )));
        assert!(ok(auth.authenticate(
            &with("cookie", "a=b; sandport_token=s3cr3t-s3cr3t-s3cr3t"),
            "/"
        )));
        assert_eq!(
            auth.authenticate(
                &http::HeaderMap::new(),
                "/x?a=1&sandport_token=s3cr3t-s3cr3t-s3cr3t&b=%20"
            ),
            Authentication::TokenInQuery {
                location: "/x?a=1&b=%20".into()
            }
        );
        assert_eq!(
            auth.authenticate(
                &http::HeaderMap::new(),
                "/?sandport_token=s3cr3t-s3cr3t-s3cr3t"
            ),
            Authentication::TokenInQuery {
                location: "/".into()
            }
        );
    }

    #[test]
    fn wrong_or_missing_tokens_are_anonymous() {
        let auth = auth();
        for (name, value) in [
            ("authorization", "Bearer s3cr3t-s3cr3t-s3cr3"),
            ("authorization", "Basic s3cr3t-s3cr3t-s3cr3t"),
            ("authorization", "Bearer"),
            ("cookie", "xsandport_token=s3cr3t-s3cr3t-s3cr3t"),
            ("cookie", "sandport_token="),
        ] {
            assert_eq!(
                auth.authenticate(&with(name, value), "/"),
                Authentication::Anonymous,
                "{value}"
            );
        }
        assert_eq!(
            auth.authenticate(&http::HeaderMap::new(), "/?sandport_token=nope"),
            Authentication::Anonymous
        );
    }

    #[test]
    fn secrets_are_redacted_and_random() {
        let secret = Secret::generate();
        assert_eq!(secret.expose().len(), 64);
        assert_ne!(secret.expose(), Secret::generate().expose());
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }
}
