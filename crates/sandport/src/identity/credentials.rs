//! How credentials are read from a request, the same way in every mode. Pure.
//!
//! - `Authorization: Bearer` is recognised whatever the scheme's case (RFC 9110 §11.1), with
//!   any run of spaces or tabs before the token.
//! - `Authorization` is a singleton field: a request with two of them is refused, never
//!   resolved by picking one.
//! - When several credentials are presented (two `id_token` cookies, a cookie and a bearer),
//!   they must all name the same user; two different users are refused as ambiguous.

use http::header::{self, HeaderMap, HeaderValue};

use super::Principal;

/// At most this many tokens are tried for one request; more is refused as ambiguous.
pub const MAX_CREDENTIALS: usize = 8;

/// Why the credentials of a request were refused before any of them was believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("more than one Authorization header")]
    RepeatedAuthorization,
    #[error("credentials of more than one user, or too many credentials")]
    Ambiguous,
    #[error("the identity provider's signing keys are not loaded yet")]
    KeysUnavailable,
    /// A login could not start: the provider's endpoints are unknown and it does not answer.
    #[error("the identity provider does not answer")]
    ProviderUnavailable,
    /// A login could not start: its state could not be signed.
    #[error("the login state could not be signed")]
    LoginStateUnsigned,
}

/// The token of a `Bearer` credential, or `None` for any other scheme or an empty token.
pub fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, token) = text.split_once([' ', '\t'])?;
    let token = token.trim_matches([' ', '\t']);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The request's one `Authorization` value, if any; two or more are refused.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&HeaderValue>, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(Refusal::RepeatedAuthorization),
        None => Ok(first),
    }
}

/// The request's bearer token, if its one `Authorization` value is a bearer.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    Ok(authorization(headers)?.and_then(bearer_token))
}

/// The one user that every verified credential names: `None` when there are none, refused
/// when they name different users. Identical users are accepted (the first one's details win).
pub fn one_principal(
    verified: impl IntoIterator<Item = Principal>,
) -> Result<Option<Principal>, Refusal> {
    let mut found: Option<Principal> = None;
    for principal in verified {
        match &found {
            Some(first) if first.user_id != principal.user_id => return Err(Refusal::Ambiguous),
            Some(_) => {}
            None => found = Some(principal),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::UserId;

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        for (text, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("bEaReR   abc  ", Some("abc")),
            ("Bearer\tabc", Some("abc")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearer    ", None),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("Bearer: abc", None),
            ("", None),
        ] {
            assert_eq!(bearer_token(&value(text)), expected, "{text:?}");
        }
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(authorization(&headers), Ok(None));
        headers.append(header::AUTHORIZATION, value("bearer a"));
        assert_eq!(bearer(&headers), Ok(Some("a")));
        headers.append(header::AUTHORIZATION, value("Bearer a"));
        assert_eq!(authorization(&headers), Err(Refusal::RepeatedAuthorization));
        assert_eq!(bearer(&headers), Err(Refusal::RepeatedAuthorization));
    }

    #[test]
    fn different_users_are_ambiguous_identical_ones_are_not() {
        let user = |name: &str| Principal::user(UserId::parse(name).unwrap());
        assert_eq!(one_principal([]), Ok(None));
        assert_eq!(one_principal([user("alice")]), Ok(Some(user("alice"))));
        assert_eq!(
            one_principal([user("alice"), user("alice")]),
            Ok(Some(user("alice")))
        );
        assert_eq!(
            one_principal([user("alice"), user("bob")]),
            Err(Refusal::Ambiguous)
        );
        assert_eq!(
            one_principal([user("alice"), user("alice"), user("Alice")]),
            Err(Refusal::Ambiguous)
        );
    }
}
