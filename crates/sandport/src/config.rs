//! Configuration: the TOML file shape, environment overrides, defaults and validation.
//!
//! Sources, highest precedence first: environment variables `SANDPORT_<SECTION>_<KEY>`, the
//! TOML file, then the embedded defaults (which serve one developer on one machine). Every key
//! is documented in `config/example.toml`, which a test parses. Validation names the bad key.

mod env;
mod file;
mod secrets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use file::{
    is_domain_name, AdminSection, AppSection, DiscoveryBackend, DiscoverySection, FileConfig,
    IdentityMode, IdentitySection, LogFormat, LogSection, ProxySection, RewriteSection,
    RoutingSection, ServerSection, StaticSandbox,
};
pub use secrets::{read as read_secrets, Secrets};

/// A configuration problem, naming the key (or variable) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("`{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Loads the configuration from an optional file plus environment variables, then validates it.
pub fn load(
    path: Option<&Path>,
    env_vars: impl IntoIterator<Item = (String, String)>,
) -> Result<FileConfig, ConfigError> {
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|error| ConfigError::Parse {
                    origin: path.display().to_string(),
                    message: error.to_string(),
                })?
        }
        None => toml::Table::new(),
    };
    env::apply_overrides(&mut table, env_vars)?;
    let origin = path.map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
    let config: FileConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
            ConfigError::Parse {
                origin,
                message: format!("`{}`: {}", error.path(), error.inner().message()),
            }
        })?;
    config.validate()?;
    Ok(config)
}

/// Parses a listen address, naming the key on failure.
pub(crate) fn parse_socket_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::Invalid {
        key,
        message: format!("{text:?} is not an address like 127.0.0.1:8080"),
    })
}

#[cfg(test)]
mod tests;
