//! Cookie and `Authorization` parsing, and the user-id type. Input: `name: value` header lines.
//!
//! Invariants: a bearer token is non-empty, trimmed and taken from a `Bearer` value of any
//! case; two `Authorization` headers are always refused; the token-mode authenticator owns
//! exactly the bearers that carry its secret; cookie values are non-empty and hold no `;`;
//! after `remove_cookies(OWN_COOKIES)` no header, read as bytes, carries one of sandport's
//! cookies and every other cookie is kept in order; a parsed `UserId` is visible ASCII, at
//! most 256 bytes and no placeholder.

#![no_main]

#[path = "common.rs"]
mod common;

use http::header::AUTHORIZATION;
use libfuzzer_sys::fuzz_target;
use sandport::identity::{
    self, credentials, Authenticator, Principal, Refusal, Secret, TokenAuth, UserId,
};

const SECRET: &str = "fuzz-secret-fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let mut headers = common::header_map(data);

    let count = headers.get_all(AUTHORIZATION).iter().count();
    match credentials::authorization(&headers) {
        Ok(value) => assert_eq!(value.is_some(), count == 1),
        Err(refusal) => {
            assert_eq!(refusal, Refusal::RepeatedAuthorization);
            assert!(count >= 2);
        }
    }
    let auth = Authenticator::Token(TokenAuth {
        token: Secret::new(SECRET.to_owned()),
        user_id: UserId::parse("alice").expect("user id"),
    });
    for value in headers.get_all(AUTHORIZATION) {
        let token = credentials::bearer_token(value);
        if let Some(token) = token {
            let text = value.to_str().expect("a bearer is text");
            assert!(!token.is_empty());
            assert_eq!(token, token.trim_matches([' ', '\t']));
            assert!(text[..6].eq_ignore_ascii_case("bearer"), "{text:?}");
            assert!(matches!(text.as_bytes()[6], b' ' | b'\t'));
            assert!(text.trim_end_matches([' ', '\t']).ends_with(token));
        }
        assert_eq!(auth.is_own_authorization(value), token == Some(SECRET));
    }

    let mut users = Vec::new();
    for name in ["id_token", "sandport_token", "a"] {
        for value in identity::cookie_values(&headers, name) {
            assert!(!value.is_empty());
            assert!(!value.contains(';'));
            assert_eq!(value, value.trim_matches([' ', '\t']));
            users.push(value.to_owned());
        }
    }

    for value in headers.values() {
        if let Ok(text) = value.to_str() {
            users.push(text.to_owned());
        }
    }
    users.push(String::from_utf8_lossy(data).into_owned());
    let mut principals = Vec::new();
    for text in users {
        if let Ok(user) = UserId::parse(text.as_str()) {
            assert_eq!(user.as_str(), text);
            assert!(text.len() <= 256);
            assert!(text.bytes().all(|b| b.is_ascii_graphic()), "{text:?}");
            assert!(!identity::is_placeholder(&text));
            principals.push(Principal::user(user));
        }
    }
    match credentials::one_principal(principals.clone()) {
        Ok(None) => assert!(principals.is_empty()),
        Ok(Some(one)) => assert!(principals.iter().all(|p| p.user_id == one.user_id)),
        Err(refusal) => {
            assert_eq!(refusal, Refusal::Ambiguous);
            assert!(principals
                .iter()
                .any(|p| p.user_id != principals[0].user_id));
        }
    }

    let others = |headers: &http::HeaderMap| -> Vec<(Vec<u8>, Vec<u8>)> {
        common::cookie_pairs(headers)
            .into_iter()
            .filter(|(name, _)| !common::is_own_cookie(name))
            .collect()
    };
    let before = others(&headers);
    identity::remove_cookies(&mut headers, identity::OWN_COOKIES);
    for (name, _) in common::cookie_pairs(&headers) {
        assert!(
            !common::is_own_cookie(&name),
            "{:?} survived removal",
            String::from_utf8_lossy(&name)
        );
    }
    assert_eq!(others(&headers), before, "other cookies changed");
});
