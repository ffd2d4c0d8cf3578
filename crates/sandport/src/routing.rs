//! Routing: which request goes where, decided from the host and the raw request-target alone.
//!
//! Pure: no I/O, no clock, no configuration lookups beyond [`Config`]. Two route forms reach a
//! sandbox port — the path form `/runtime/{conversation}/{port}/rest` on any host and the host
//! form `{port}-{conversation}.{runtime_domain}` — and everything else goes to the app.
//! A path that starts with `/runtime/` but is not well formed is [`RouteError::MalformedRuntimePath`]:
//! it must never fall through to the app. On a runtime host, a request-target that is not a
//! path (the asterisk form `*`) is the same error: it never reaches the sandbox.

mod host_form;
mod path_form;

use std::fmt;

pub use host_form::parse_runtime_host;

/// The scheme browsers use to reach sandport (`server.external_scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn is_https(self) -> bool {
        self == Scheme::Https
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
pub use path_form::parse_runtime_path;

/// Routing settings derived from the configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Suffix of runtime hosts, without a leading dot: `runtime.example.com`.
    pub runtime_domain: String,
}

/// A conversation id: exactly 32 lowercase hex characters.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ConversationId(String);

impl TryFrom<String> for ConversationId {
    type Error = &'static str;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or("a conversation id is 32 lowercase hex characters")
    }
}

impl From<ConversationId> for String {
    fn from(id: ConversationId) -> Self {
        id.0
    }
}

impl ConversationId {
    /// Parses a conversation id; anything but 32 lowercase hex characters is refused.
    pub fn parse(text: &str) -> Option<Self> {
        let well_formed = text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Parses a port written in decimal, 1–65535, with no sign and no leading zero.
pub fn parse_port(text: &str) -> Option<u16> {
    let canonical = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    if !canonical {
        return None;
    }
    text.parse::<u16>().ok().filter(|port| *port != 0)
}

/// Which of the two runtime URL shapes a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Path,
    Host,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Path => "path",
            Form::Host => "host",
        }
    }
}

/// A request for one port of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeTarget {
    pub form: Form,
    pub conversation: ConversationId,
    pub port: u16,
    /// The request-target to send upstream: the raw path after the prefix (`/` when empty)
    /// and the raw query, byte for byte.
    pub upstream_target: String,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Runtime(RuntimeTarget),
    App,
}

/// Why a request could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("malformed runtime path")]
    MalformedRuntimePath,
}

/// Decides where a request goes from its `Host` (without port) and its raw request-target
/// (origin form: path and optional query).
pub fn parse(config: &Config, host: &str, path_and_query: &str) -> Result<Target, RouteError> {
    if let Some((conversation, port)) = parse_runtime_host(&config.runtime_domain, host) {
        // Only an origin-form target (`/…`) reaches a sandbox: `OPTIONS *` to a runtime host
        // is refused, never forwarded as a request-target the sandbox would have to guess at.
        let upstream_target = match path_and_query {
            "" => "/".to_owned(),
            target if target.starts_with('/') => target.to_owned(),
            _ => return Err(RouteError::MalformedRuntimePath),
        };
        return Ok(Target::Runtime(RuntimeTarget {
            form: Form::Host,
            conversation,
            port,
            upstream_target,
        }));
    }
    match parse_runtime_path(path_and_query) {
        Some(Ok(target)) => Ok(Target::Runtime(target)),
        Some(Err(error)) => Err(error),
        None => Ok(Target::App),
    }
}

/// Builds the public URL of a sandbox port in host form: the inverse of [`parse_runtime_host`].
pub fn build_runtime_origin(
    scheme: Scheme,
    runtime_domain: &str,
    public_port: Option<u16>,
    conversation: &ConversationId,
    port: u16,
) -> String {
    match public_port {
        Some(public_port) => {
            format!("{scheme}://{port}-{conversation}.{runtime_domain}:{public_port}")
        }
        None => format!("{scheme}://{port}-{conversation}.{runtime_domain}"),
    }
}

#[cfg(test)]
mod tests;
