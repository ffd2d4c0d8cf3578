//! The secret files the configuration names, read and checked in one place so that `serve`
//! and `check-config` refuse the same files, with the same exit code (64) as any other
//! configuration error. Only the files the chosen identity mode uses are read.

use std::fmt;
use std::path::Path;

use super::file::{FileConfig, IdentityMode};
use super::ConfigError;

/// Shared secrets (tokens, signing keys) must be at least this long.
const MIN_SECRET_LEN: usize = 16;

/// The contents of the secret files, trimmed. `None` where the file is not named (or not
/// used by the identity mode).
#[derive(Default, Clone)]
pub struct Secrets {
    pub token: Option<String>,
    pub shared_secret: Option<String>,
    pub client_secret: Option<String>,
    pub session_key: Option<String>,
    pub assertion_key: Option<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Secrets")
            .field("token", &shown(&self.token))
            .field("shared_secret", &shown(&self.shared_secret))
            .field("client_secret", &shown(&self.client_secret))
            .field("session_key", &shown(&self.session_key))
            .field("assertion_key", &shown(&self.assertion_key))
            .finish()
    }
}

/// Reads every secret file `config` names for its identity mode.
pub fn read(config: &FileConfig) -> Result<Secrets, ConfigError> {
    let identity = &config.identity;
    let shared = |key, path: &Option<std::path::PathBuf>| {
        path.as_deref()
            .map(|path| read_file(key, path, MIN_SECRET_LEN))
            .transpose()
    };
    let mut secrets = Secrets {
        assertion_key: shared("identity.assertion_key_file", &identity.assertion_key_file)?,
        ..Secrets::default()
    };
    match identity.mode {
        IdentityMode::Token => {
            secrets.token = shared("identity.token_file", &identity.token_file)?;
        }
        IdentityMode::TrustedHeader => {
            secrets.shared_secret =
                shared("identity.shared_secret_file", &identity.shared_secret_file)?;
        }
        IdentityMode::Oidc => {
            // The provider chose the client secret: any non-empty value is accepted.
            secrets.client_secret = identity
                .client_secret_file
                .as_deref()
                .map(|path| read_file("identity.client_secret_file", path, 1))
                .transpose()?;
            secrets.session_key = shared("identity.session_key_file", &identity.session_key_file)?;
        }
    }
    Ok(secrets)
}

fn read_file(key: &'static str, path: &Path, min_len: usize) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Invalid {
        key,
        message: format!("cannot read {}: {error}", path.display()),
    })?;
    let secret = text.trim();
    if secret.len() < min_len {
        let message = if secret.is_empty() {
            format!("{} is empty", path.display())
        } else {
            format!(
                "the secret in {} is shorter than {min_len} characters",
                path.display()
            )
        };
        return Err(ConfigError::Invalid { key, message });
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn short_empty_and_missing_files_name_their_key() {
        let short = file("too-short\n");
        let empty = file("\n");
        let cases = [
            (
                format!("[identity]\ntoken_file = {:?}\n", short.path()),
                "identity.token_file",
                "shorter than 16",
            ),
            (
                "[identity]\ntoken_file = \"/nonexistent/sandport-token\"\n".to_owned(),
                "identity.token_file",
                "cannot read",
            ),
            (
                format!("[identity]\nassertion_key_file = {:?}\n", empty.path()),
                "identity.assertion_key_file",
                "is empty",
            ),
        ];
        for (text, key, needle) in cases {
            let error = read(&config(&text)).unwrap_err().to_string();
            assert!(
                error.contains(key) && error.contains(needle),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn files_are_trimmed_and_only_the_modes_own_are_read() {
        let token = file("0123456789abcdef0123\n");
        let text = format!(
            "[identity]\ntoken_file = {:?}\nshared_secret_file = \"/nonexistent\"\n",
            token.path()
        );
        let secrets = read(&config(&text)).unwrap();
        assert_eq!(secrets.token.as_deref(), Some("0123456789abcdef0123"));
        assert!(secrets.shared_secret.is_none());
        assert!(!format!("{secrets:?}").contains("0123456789"));
    }
}
