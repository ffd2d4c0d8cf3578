//! Who a caller is, as a type that cannot hold a bad value.
//!
//! A user id is compared byte for byte with a sandbox's `user_id` label and sent to the app in
//! `X-Cognito-User-Id`, so it must survive both: visible ASCII only (no spaces, no control
//! characters, which would also not fit in a header), at most [`MAX_USER_ID_LEN`] bytes, and
//! never one of the [`PLACEHOLDERS`] that tools write when they have no owner to name.

use std::fmt;

/// The longest user id accepted (Cognito's `sub` is a 36-character UUID).
pub const MAX_USER_ID_LEN: usize = 256;

/// Owner names that mean "nobody", compared case-insensitively after trimming whitespace. A
/// sandbox labelled with one is refused to everyone, and no principal may be called one.
pub const PLACEHOLDERS: &[&str] = &[
    "",
    "-",
    "*",
    "anon",
    "anonymous",
    "guest",
    "nil",
    "nobody",
    "none",
    "null",
    "undefined",
    "unknown",
];

/// Whether an owner label or user id is a placeholder for "nobody" (see [`PLACEHOLDERS`]).
pub fn is_placeholder(name: &str) -> bool {
    let name = name.trim();
    PLACEHOLDERS
        .iter()
        .any(|placeholder| name.eq_ignore_ascii_case(placeholder))
}

/// Why a string is not a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadUserId {
    #[error("user id is longer than {MAX_USER_ID_LEN} bytes")]
    TooLong,
    #[error("user id has characters other than visible ASCII")]
    NotVisibleAscii,
    #[error("user id is empty or a placeholder such as `anonymous`")]
    Placeholder,
}

/// A well-formed user id: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: impl Into<String>) -> Result<Self, BadUserId> {
        let text = text.into();
        if text.len() > MAX_USER_ID_LEN {
            return Err(BadUserId::TooLong);
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(BadUserId::NotVisibleAscii);
        }
        if is_placeholder(&text) {
            return Err(BadUserId::Placeholder);
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for UserId {
    type Err = BadUserId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for UserId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for UserId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
}

impl Principal {
    /// A principal known only by its user id.
    pub fn user(user_id: UserId) -> Self {
        Self {
            user_id,
            email: None,
            email_verified: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_visible_ascii_bounded_and_never_placeholders() {
        for good in [
            "alice",
            "8f3c2a1e-0b7d-4c55-9e21-6a4d3f2b1c00",
            "auth0|abc",
            "local",
        ] {
            assert_eq!(UserId::parse(good).unwrap().as_str(), good);
        }
        let too_long = "a".repeat(MAX_USER_ID_LEN + 1);
        assert!(UserId::parse("a".repeat(MAX_USER_ID_LEN)).is_ok());
        for (bad, why) in [
            ("", BadUserId::Placeholder),
            ("anonymous", BadUserId::Placeholder),
            ("Anonymous", BadUserId::Placeholder),
            ("NULL", BadUserId::Placeholder),
            ("undefined", BadUserId::Placeholder),
            ("-", BadUserId::Placeholder),
            ("alice\n", BadUserId::NotVisibleAscii),
            ("ali\u{0}ce", BadUserId::NotVisibleAscii),
            ("al ice", BadUserId::NotVisibleAscii),
            (" ", BadUserId::NotVisibleAscii),
            ("alicé", BadUserId::NotVisibleAscii),
            ("bob\u{1b}[2J", BadUserId::NotVisibleAscii),
            (too_long.as_str(), BadUserId::TooLong),
        ] {
            assert_eq!(UserId::parse(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn placeholders_ignore_case_and_surrounding_whitespace() {
        for placeholder in [
            "",
            " ",
            "\t",
            "anonymous",
            " None ",
            "NULL",
            "undefined",
            "-",
        ] {
            assert!(is_placeholder(placeholder), "{placeholder:?}");
        }
        for owner in ["alice", "anonymous-1", "nonexistent", "local"] {
            assert!(!is_placeholder(owner), "{owner:?}");
        }
    }
}
