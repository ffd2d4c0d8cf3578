//! The configuration file's shape, with the embedded defaults and validation.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{parse_socket_addr, ConfigError};
use crate::routing::Scheme;

/// The whole file. Every section and key is optional; missing ones take their defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerSection,
    pub admin: AdminSection,
    pub routing: RoutingSection,
    pub app: AppSection,
    pub identity: IdentitySection,
    pub discovery: DiscoverySection,
    pub proxy: ProxySection,
    pub rewrite: RewriteSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The scheme browsers use to reach sandport (`http` or `https`); defaults to `https`
    /// when TLS is configured here, `http` otherwise. Set it to `https` behind a TLS edge.
    pub external_scheme: Option<Scheme>,
    pub header_read_timeout_secs: u64,
    /// A client connection with no request in flight for this long is closed (h2: GOAWAY).
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    pub shutdown_grace_secs: u64,
    /// Worker threads, each with its own runtime, listener and upstream pool; 0 = one per core.
    pub workers: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            external_scheme: None,
            header_read_timeout_secs: 15,
            idle_timeout_secs: 120,
            max_connections: 10_000,
            shutdown_grace_secs: 20,
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub base_domain: String,
    /// Defaults to `runtime.{base_domain}`.
    pub runtime_domain: Option<String>,
}

impl Default for RoutingSection {
    fn default() -> Self {
        Self {
            base_domain: "localhost".into(),
            runtime_domain: None,
        }
    }
}

impl RoutingSection {
    pub fn effective_runtime_domain(&self) -> String {
        self.runtime_domain
            .clone()
            .unwrap_or_else(|| format!("runtime.{}", self.base_domain))
            .to_ascii_lowercase()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSection {
    pub upstream: String,
}

impl Default for AppSection {
    fn default() -> Self {
        Self {
            upstream: "http://127.0.0.1:3000".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    Token,
    TrustedHeader,
    Oidc,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    pub mode: IdentityMode,
    /// Token mode: the principal every valid token stands for.
    pub user_id: String,
    /// Token mode: the token; generated at start (and printed once) when neither this nor
    /// `token_file` is set.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Trusted-header mode: peers (CIDR) whose `X-Cognito-User-Id` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Trusted-header mode: file holding the shared secret expected in `X-Origin-Verify`.
    pub shared_secret_file: Option<PathBuf>,
    /// OIDC mode: the provider's issuer URL (exact `iss`).
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// OIDC mode: file holding the client secret (never the secret itself in this file).
    pub client_secret_file: Option<PathBuf>,
    /// OIDC mode: endpoint overrides; by default from the issuer's discovery document.
    pub jwks_uri: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    /// OIDC mode: Amazon Cognito hosted-UI domain; sets the three endpoints above.
    pub cognito_domain: Option<String>,
    pub scopes: String,
    /// OIDC mode: required `token_use` claim value (a token without it is refused); empty
    /// disables the check.
    pub token_use: String,
    pub clock_skew_secs: u64,
    /// OIDC mode: compatibility — scope the platform cookies to this parent domain.
    pub cookie_domain: Option<String>,
    /// OIDC mode: `lax`, `strict` or `none` (https only).
    pub cookie_same_site: SameSite,
    /// OIDC mode: key signing login state and runtime sessions; random per process if unset.
    pub session_key_file: Option<PathBuf>,
    pub runtime_session_secs: u64,
    pub provider_timeout_secs: u64,
    /// Any mode: key shared with the app for the `X-Sandport-Identity` assertion.
    pub assertion_key_file: Option<PathBuf>,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self {
            mode: IdentityMode::Token,
            user_id: "local".into(),
            token: None,
            token_file: None,
            trusted_proxies: Vec::new(),
            shared_secret_file: None,
            issuer: None,
            client_id: None,
            client_secret_file: None,
            jwks_uri: None,
            authorization_endpoint: None,
            token_endpoint: None,
            end_session_endpoint: None,
            cognito_domain: None,
            scopes: "openid email profile".into(),
            token_use: "id".into(),
            clock_skew_secs: 60,
            cookie_domain: None,
            cookie_same_site: SameSite::Lax,
            session_key_file: None,
            runtime_session_secs: 12 * 3600,
            provider_timeout_secs: 5,
            assertion_key_file: None,
        }
    }
}

/// The `SameSite` attribute of the app's login cookies (`identity.cookie_same_site`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    Lax,
    Strict,
    /// Needs https: browsers drop `SameSite=None` cookies without `Secure`.
    None,
}

impl SameSite {
    /// The attribute's value as a `Set-Cookie` header spells it.
    pub fn attribute(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryBackend {
    Docker,
    Static,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySection {
    pub backend: DiscoveryBackend,
    pub docker_socket: PathBuf,
    /// The Docker network whose address is used; when unset, networks sorted by name.
    pub network: Option<String>,
    pub max_staleness_secs: u64,
    pub reconcile_interval_secs: u64,
    pub docker_timeout_secs: u64,
    /// Ports of system services inside every sandbox (agent server, VS Code), always used as
    /// requested and never translated.
    pub system_ports: Vec<u16>,
    /// Docker backend: reach containers whose address is the host's own (host networking,
    /// loopback, link-local). Off: their owners would reach every service on the host's
    /// loopback. sandport's own listeners are refused either way.
    pub allow_host_local_addresses: bool,
    /// Static backend: the sandboxes.
    pub sandboxes: Vec<StaticSandbox>,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        Self {
            backend: DiscoveryBackend::Docker,
            docker_socket: "/var/run/docker.sock".into(),
            network: None,
            max_staleness_secs: 5,
            reconcile_interval_secs: 30,
            docker_timeout_secs: 5,
            system_ports: vec![8000, 8001],
            allow_host_local_addresses: false,
            sandboxes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSandbox {
    pub conversation_id: crate::routing::ConversationId,
    pub user_id: Option<String>,
    pub address: IpAddr,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub body_limit_bytes: u64,
    pub connect_timeout_ms: u64,
    pub idle_timeout_secs: u64,
    pub max_requests_per_sandbox: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            body_limit_bytes: 100 * 1024 * 1024,
            connect_timeout_ms: 5_000,
            idle_timeout_secs: 300,
            max_requests_per_sandbox: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewriteSection {
    pub inject_script: bool,
    pub frame_ancestors: Vec<String>,
    pub rewrite_sandbox_html: bool,
    pub default_settings: bool,
    pub logout_url: Option<String>,
    /// A decoded (to be rewritten) compressed page is cut off past this many bytes.
    pub max_decoded_bytes: u64,
}

impl Default for RewriteSection {
    fn default() -> Self {
        Self {
            inject_script: true,
            frame_ancestors: Vec::new(),
            rewrite_sandbox_html: false,
            default_settings: false,
            logout_url: None,
            max_decoded_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl FileConfig {
    /// Checks what serde cannot: addresses, URLs, domains, ids, ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.admin_addr()?;
        self.validate_server()?;
        validate_domain("routing.base_domain", &self.routing.base_domain)?;
        if let Some(domain) = &self.routing.runtime_domain {
            validate_domain("routing.runtime_domain", domain)?;
        }
        self.app_upstream()?;
        self.validate_identity()?;
        self.validate_discovery()?;
        self.validate_proxy()?;
        self.validate_rewrite()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|error| invalid("log.level", error.to_string()))?;
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        if self.server.idle_timeout_secs == 0 {
            return Err(invalid("server.idle_timeout_secs", "must be positive"));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        // The listener holds one semaphore permit per connection.
        if self.server.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid("server.max_connections", "is too large"));
        }
        Ok(())
    }

    fn validate_proxy(&self) -> Result<(), ConfigError> {
        if self.proxy.connect_timeout_ms == 0 {
            return Err(invalid("proxy.connect_timeout_ms", "must be positive"));
        }
        if self.proxy.max_requests_per_sandbox == 0 {
            return Err(invalid(
                "proxy.max_requests_per_sandbox",
                "must be positive",
            ));
        }
        if self.proxy.idle_timeout_secs == 0 {
            return Err(invalid("proxy.idle_timeout_secs", "must be positive"));
        }
        Ok(())
    }

    fn validate_identity(&self) -> Result<(), ConfigError> {
        let identity = &self.identity;
        if identity.user_id.trim().is_empty() {
            return Err(invalid("identity.user_id", "must not be empty"));
        }
        if identity.token.is_some() && identity.token_file.is_some() {
            return Err(invalid(
                "identity.token",
                "set token or token_file, not both",
            ));
        }
        if let Some(token) = &identity.token {
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "identity.token",
                    "must be at least 16 printable ASCII characters",
                ));
            }
        }
        if identity.mode == IdentityMode::Oidc {
            self.validate_oidc()?;
        }
        if identity.mode == IdentityMode::TrustedHeader && identity.trusted_proxies.is_empty() {
            return Err(invalid(
                "identity.trusted_proxies",
                "trusted_header mode needs at least one trusted proxy CIDR",
            ));
        }
        Ok(())
    }

    fn validate_oidc(&self) -> Result<(), ConfigError> {
        self.validate_oidc_provider()?;
        self.validate_oidc_client()?;
        self.validate_oidc_domains()?;
        self.validate_oidc_durations()
    }

    /// The issuer is required; every endpoint given instead of discovered must be a URL too.
    fn validate_oidc_provider(&self) -> Result<(), ConfigError> {
        let identity = &self.identity;
        let issuer = identity
            .issuer
            .as_deref()
            .ok_or_else(|| invalid("identity.issuer", "oidc mode needs the issuer URL"))?;
        validate_provider_url("identity.issuer", issuer)?;
        for (key, value) in [
            ("identity.jwks_uri", &identity.jwks_uri),
            (
                "identity.authorization_endpoint",
                &identity.authorization_endpoint,
            ),
            ("identity.token_endpoint", &identity.token_endpoint),
            (
                "identity.end_session_endpoint",
                &identity.end_session_endpoint,
            ),
        ] {
            if let Some(url) = value {
                validate_provider_url(key, url)?;
            }
        }
        Ok(())
    }

    fn validate_oidc_client(&self) -> Result<(), ConfigError> {
        if self.identity.client_id.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "identity.client_id",
                "oidc mode needs the client id",
            ));
        }
        if self.identity.client_secret_file.is_none() {
            return Err(invalid(
                "identity.client_secret_file",
                "oidc mode needs a file holding the client secret",
            ));
        }
        Ok(())
    }

    /// The hosted-login and cookie domains, and a `SameSite` the browser will accept.
    fn validate_oidc_domains(&self) -> Result<(), ConfigError> {
        let identity = &self.identity;
        if let Some(domain) = &identity.cognito_domain {
            validate_domain("identity.cognito_domain", domain)?;
        }
        if let Some(domain) = &identity.cookie_domain {
            validate_domain("identity.cookie_domain", domain.trim_start_matches('.'))?;
        }
        // Browsers reject `SameSite=None` cookies that are not `Secure`.
        if identity.cookie_same_site == SameSite::None && !self.external_scheme().is_https() {
            return Err(invalid(
                "identity.cookie_same_site",
                "none needs https (server.external_scheme)",
            ));
        }
        Ok(())
    }

    fn validate_oidc_durations(&self) -> Result<(), ConfigError> {
        let identity = &self.identity;
        if identity.clock_skew_secs > 300 {
            return Err(invalid("identity.clock_skew_secs", "at most 300"));
        }
        if identity.runtime_session_secs == 0 || identity.provider_timeout_secs == 0 {
            return Err(invalid(
                "identity.runtime_session_secs",
                "durations must be positive",
            ));
        }
        Ok(())
    }

    fn validate_rewrite(&self) -> Result<(), ConfigError> {
        for origin in &self.rewrite.frame_ancestors {
            let source = origin.starts_with("https://")
                || origin.starts_with("http://")
                || origin == "'self'";
            if !source || origin.contains([' ', ';', ',']) {
                return Err(invalid(
                    "rewrite.frame_ancestors",
                    format!("{origin:?} is not an origin like https://example.com"),
                ));
            }
        }
        if let Some(url) = &self.rewrite.logout_url {
            if !url.starts_with('/') || url.starts_with("//") {
                return Err(invalid(
                    "rewrite.logout_url",
                    "must be a same-origin path like /_logout",
                ));
            }
        }
        Ok(())
    }

    fn validate_discovery(&self) -> Result<(), ConfigError> {
        let discovery = &self.discovery;
        if discovery.max_staleness_secs == 0 {
            return Err(invalid("discovery.max_staleness_secs", "must be positive"));
        }
        if discovery.reconcile_interval_secs == 0 {
            return Err(invalid(
                "discovery.reconcile_interval_secs",
                "must be positive",
            ));
        }
        if discovery.docker_timeout_secs == 0 {
            return Err(invalid("discovery.docker_timeout_secs", "must be positive"));
        }
        if discovery.system_ports.contains(&0) {
            return Err(invalid("discovery.system_ports", "ports are 1-65535"));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_socket_addr("server.listen", &self.server.listen)
    }

    pub fn admin_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_socket_addr("admin.listen", &self.admin.listen)
    }

    /// The app upstream as `host:port` authority (plain HTTP only).
    pub fn app_upstream(&self) -> Result<http::uri::Authority, ConfigError> {
        let key = "app.upstream";
        let uri: http::Uri = self
            .app
            .upstream
            .parse()
            .map_err(|_| invalid(key, format!("{:?} is not a URL", self.app.upstream)))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid(key, "must be an http:// URL"));
        }
        if uri.path() != "/" || uri.query().is_some() {
            return Err(invalid(key, "must have no path or query"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid(key, "must name a host"))?;
        if authority.port_u16().is_some() {
            Ok(authority.clone())
        } else {
            format!("{}:80", authority.host())
                .parse()
                .map_err(|_| invalid(key, "must name a host"))
        }
    }

    pub fn external_scheme(&self) -> Scheme {
        match self.server.external_scheme {
            Some(scheme) => scheme,
            None if self.server.tls_cert.is_some() => Scheme::Https,
            None => Scheme::Http,
        }
    }
}

/// Provider URLs are https; plain http is accepted only on loopback (tests, local providers).
fn validate_provider_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| invalid(key, format!("{url:?} is not a URL")))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(invalid(
            key,
            "must be an https:// URL (http only on loopback)",
        )),
    }
}

/// Whether `domain` is a DNS name sandport accepts for its domains: ASCII letters, digits and
/// `-` in labels of 1 to 63 bytes, at most 253 bytes in all.
pub fn is_domain_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn validate_domain(key: &'static str, domain: &str) -> Result<(), ConfigError> {
    if is_domain_name(domain) {
        Ok(())
    } else {
        Err(invalid(key, format!("{domain:?} is not a domain name")))
    }
}
