//! Wiring: configuration → components → listeners, and the drain on shutdown.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::config::{DiscoveryBackend, FileConfig, IdentityMode, Secrets};
use crate::discovery::{self, Store};
use crate::identity::session::{CookiePolicy, SigningKey};
use crate::identity::{jwks, jwt, oidc, provider};
use crate::identity::{Authenticator, HeaderRule, Secret, TokenAuth, TOKEN_QUERY};
use crate::proxy::{forward, Gateway};
use crate::{metrics, routing, server};

/// Runs the gateway until `shutdown_signal` completes, then drains.
pub async fn run(
    config: FileConfig,
    secrets: Secrets,
    shutdown_signal: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let metrics_handle = metrics::install()?;
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key)?),
        _ => None,
    };
    let identity = Identity::start(&config, &secrets)?;
    let store = Arc::new(Store::new(Duration::from_secs(
        config.discovery.max_staleness_secs,
    )));
    let discovery_cancel = CancellationToken::new();
    spawn_discovery(&config, &store, &discovery_cancel);
    let (listener, admin_listener) = bind_listeners(&config).await?;
    let (listen, admin_addr) = (listener.local_addr()?, admin_listener.local_addr()?);
    identity.announce_generated_token(&config, listen.port());
    let tunnels = Tunnels::default();
    let assertion_key = secrets
        .assertion_key
        .map(|key| SigningKey::new(&Secret::new(key)));
    let make_gateway = gateway_factory(
        &config,
        address_policy(&config, [listen, admin_addr]),
        (Arc::clone(&identity.authenticator), assertion_key),
        &store,
        &tunnels,
    )?;
    let (admin, admin_stop) = start_admin(admin_listener, &store, &metrics_handle, &identity);
    spawn_metrics_upkeep(metrics_handle);
    let mut serving = Serving::start(&config, make_gateway, tls.clone(), listener)?;
    tracing::info!(%listen, admin = %admin_addr, workers = serving.workers, tls = tls.is_some(), "sandport listening");
    let acceptor_failed = serving.until(shutdown_signal).await;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    drain(grace, &admin, serving, &tunnels).await;
    discovery_cancel.cancel();
    identity.cancel.cancel();
    admin_stop.cancel();
    tracing::info!("stopped");
    anyhow::ensure!(!acceptor_failed, "the acceptor stopped before shutdown");
    Ok(())
}

/// The identity mode and what keeps it current (the JWKS refresher in OIDC mode).
struct Identity {
    authenticator: Arc<Authenticator>,
    jwks: Option<Arc<jwks::Jwks>>,
    cancel: CancellationToken,
}

impl Identity {
    fn start(config: &FileConfig, secrets: &Secrets) -> anyhow::Result<Self> {
        let authenticator = authenticator(config, secrets)?;
        let cancel = CancellationToken::new();
        let jwks = match &authenticator {
            Authenticator::Oidc(oidc) => {
                tokio::spawn(Arc::clone(&oidc.jwks).run(cancel.clone()));
                Some(Arc::clone(&oidc.jwks))
            }
            _ => None,
        };
        Ok(Self {
            authenticator: Arc::new(authenticator),
            jwks,
            cancel,
        })
    }

    /// A token sandport generated itself is printed once, or nobody could use it.
    fn announce_generated_token(&self, config: &FileConfig, port: u16) {
        if let Authenticator::Token(auth) = &*self.authenticator {
            if config.identity.token.is_none() && config.identity.token_file.is_none() {
                announce_token(config, port, auth.token.expose());
            }
        }
    }
}

/// The admin listener's server (health, readiness, metrics), stopped by the token returned.
fn start_admin(
    listener: TcpListener,
    store: &Arc<Store>,
    metrics_handle: &metrics_exporter_prometheus::PrometheusHandle,
    identity: &Identity,
) -> (Arc<Admin>, CancellationToken) {
    let admin = Arc::new(Admin {
        store: Arc::clone(store),
        metrics: metrics_handle.clone(),
        jwks: identity.jwks.clone(),
        draining: false.into(),
        log_lines_dropped: crate::telemetry::dropped_lines,
    });
    let stop = CancellationToken::new();
    tokio::spawn(admin::serve(listener, Arc::clone(&admin), stop.clone()));
    (admin, stop)
}

/// The client and admin listeners, bound before anything is served. A listener the service
/// manager passed (socket activation) is served instead of binding its `listen` address: the
/// socket outlives this process, so a restart leaves connections waiting, never refused.
async fn bind_listeners(
    config: &FileConfig,
) -> anyhow::Result<(std::net::TcpListener, TcpListener)> {
    let (listen, admin_addr) = (config.listen_addr()?, config.admin_addr()?);
    let inherited = server::inherited_listeners()?;
    if inherited.client.is_some() || inherited.admin.is_some() {
        tracing::info!(
            client = inherited.client.is_some(),
            admin = inherited.admin.is_some(),
            "serving on sockets passed by the service manager, instead of their listen addresses"
        );
    }
    let listener = match inherited.client {
        Some(listener) => listener,
        None => server::bind(listen)
            .with_context(|| format!("cannot listen on {listen} (server.listen)"))?,
    };
    let admin_listener = match inherited.admin {
        Some(listener) => TcpListener::from_std(listener)?,
        None => TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot listen on {admin_addr} (admin.listen)"))?,
    };
    Ok((listener, admin_listener))
}

/// WebSocket tunnels outlive their requests: tracked for the drain, cancelled at its end.
#[derive(Default)]
struct Tunnels {
    tracker: tokio_util::task::TaskTracker,
    cancel: CancellationToken,
}

/// `server.workers`, where 0 means one per available core.
fn worker_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        count => count,
    }
}

/// The worker threads and the acceptor feeding them.
struct Serving {
    workers: usize,
    signals: server::Shutdown,
    stopped: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Serving {
    fn start(
        config: &FileConfig,
        make_gateway: Arc<dyn Fn() -> Gateway + Send + Sync>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<Self> {
        let workers = worker_count(config.server.workers);
        let server_config = server::Config {
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
            max_connections: config.server.max_connections,
        };
        let (signals, stopped) = (server::Shutdown::default(), CancellationToken::new());
        let tls_on = tls.is_some();
        let (handles, threads) = server::spawn_workers(
            workers,
            make_gateway,
            &server_config,
            tls,
            &signals,
            &stopped,
        )?;
        let acceptor = tokio::spawn(server::accept(
            listener,
            handles,
            (server_config.max_connections, tls_on),
            signals.clone(),
        ));
        Ok(Self {
            workers,
            signals,
            stopped,
            threads,
            acceptor,
        })
    }

    /// Serves until `shutdown_signal`; true when the acceptor ended first. It ends on its own
    /// only when it cannot go on (the listener failed, no worker is left): then the process
    /// drains and exits with an error rather than stay up deaf.
    async fn until(&mut self, shutdown_signal: impl Future<Output = ()>) -> bool {
        tokio::select! {
            () = shutdown_signal => false,
            _ = &mut self.acceptor => {
                tracing::error!("the acceptor stopped; shutting down");
                true
            }
        }
    }
}

/// The drain: stop accepting, let connections and tunnels finish within `grace`, then close
/// what is left and join the worker threads.
async fn drain(grace: Duration, admin: &Admin, serving: Serving, tunnels: &Tunnels) {
    tracing::info!(grace_secs = grace.as_secs(), "draining");
    admin.draining.store(true, Ordering::Relaxed);
    let signals = &serving.signals;
    signals.shutdown.cancel();
    signals.connections.close();
    tunnels.tracker.close();
    let drained = tokio::time::timeout(grace, async {
        signals.connections.wait().await;
        tunnels.tracker.wait().await;
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!(
            connections = signals.connections.len(),
            tunnels = tunnels.tracker.len(),
            "grace period over; closing what is still open"
        );
    }
    tunnels.cancel.cancel();
    signals.hard_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), tunnels.tracker.wait()).await;
    serving.stopped.cancel();
    let threads = serving.threads;
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

/// Keeps the metrics recorder's histograms trimmed, for the life of the process.
fn spawn_metrics_upkeep(metrics_handle: metrics_exporter_prometheus::PrometheusHandle) {
    tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            upkeep.tick().await;
            metrics_handle.run_upkeep();
        }
    });
}

/// Builds what each worker needs to make its own gateway: everything shared (identity, the
/// sandbox store, the tunnel tracker) is shared, and each gets its own upstream pool.
fn gateway_factory(
    config: &FileConfig,
    address_policy: discovery::AddressPolicy,
    (authenticator, assertion_key): (Arc<Authenticator>, Option<SigningKey>),
    store: &Arc<Store>,
    tunnels: &Tunnels,
) -> anyhow::Result<Arc<dyn Fn() -> Gateway + Send + Sync>> {
    let (tunnels, tunnel_cancel) = (tunnels.tracker.clone(), tunnels.cancel.clone());
    let routing = routing::Config {
        runtime_domain: config.routing.effective_runtime_domain(),
    };
    let store = Arc::clone(store);
    let system_ports = config.discovery.system_ports.clone();
    let connect_timeout = Duration::from_millis(config.proxy.connect_timeout_ms);
    let app_authority = config.app_upstream()?;
    let external_scheme = config.external_scheme();
    let body_limit = config.proxy.body_limit_bytes;
    let idle_timeout = Duration::from_secs(config.proxy.idle_timeout_secs);
    let max_per_sandbox = config.proxy.max_requests_per_sandbox;
    let rewrite = rewrite_config(config);
    Ok(Arc::new(move || Gateway {
        routing: routing.clone(),
        authenticator: Arc::clone(&authenticator),
        store: Arc::clone(&store),
        system_ports: system_ports.clone(),
        address_policy: address_policy.clone(),
        client: forward::Client::new(connect_timeout),
        app_authority: app_authority.clone(),
        external_scheme,
        body_limit,
        idle_timeout,
        max_per_sandbox,
        tunnels: tunnels.clone(),
        tunnel_cancel: tunnel_cancel.clone(),
        rewrite: rewrite.clone(),
        assertion_key: assertion_key.clone(),
        metrics: crate::metrics::RequestMetrics::new(),
    }))
}

/// The static backend's addresses are the operator's own; Docker's come from containers.
pub fn address_policy(
    config: &FileConfig,
    own_listeners: impl IntoIterator<Item = std::net::SocketAddr>,
) -> discovery::AddressPolicy {
    discovery::AddressPolicy {
        allow_host_local: config.discovery.backend == DiscoveryBackend::Static
            || config.discovery.allow_host_local_addresses,
        own_listeners: own_listeners.into_iter().collect(),
    }
}

fn spawn_discovery(config: &FileConfig, store: &Arc<Store>, cancel: &CancellationToken) {
    match config.discovery.backend {
        DiscoveryBackend::Static => discovery::fixed::load(store, &config.discovery.sandboxes),
        DiscoveryBackend::Docker => {
            tokio::spawn(discovery::docker::run(
                docker_config(config),
                Arc::clone(store),
                cancel.clone(),
            ));
        }
    }
}

/// The response-shaping settings from the configuration.
pub fn rewrite_config(config: &FileConfig) -> crate::rewrite::Config {
    crate::rewrite::Config {
        base_domain: config.routing.base_domain.clone(),
        runtime_domain: config.routing.effective_runtime_domain(),
        scheme: config.external_scheme(),
        inject_script: config.rewrite.inject_script,
        frame_ancestors: config.rewrite.frame_ancestors.clone(),
        rewrite_sandbox_html: config.rewrite.rewrite_sandbox_html,
        default_settings: config.rewrite.default_settings,
        logout_url: config.rewrite.logout_url.clone(),
        max_decoded_bytes: config.rewrite.max_decoded_bytes,
    }
}

/// The Docker backend settings from the configuration.
pub fn docker_config(config: &FileConfig) -> discovery::docker::Config {
    discovery::docker::Config {
        socket: config.discovery.docker_socket.clone(),
        network: config.discovery.network.clone(),
        reconcile_interval: Duration::from_secs(config.discovery.reconcile_interval_secs),
        timeout: Duration::from_secs(config.discovery.docker_timeout_secs),
    }
}

/// Builds the identity mode from the configuration and its secret files.
pub fn authenticator(config: &FileConfig, secrets: &Secrets) -> anyhow::Result<Authenticator> {
    let identity = &config.identity;
    Ok(match identity.mode {
        IdentityMode::Token => {
            let token = match (&identity.token, &secrets.token) {
                (Some(token), _) | (None, Some(token)) => Secret::new(token.clone()),
                (None, None) => Secret::generate(),
            };
            Authenticator::Token(TokenAuth {
                token,
                user_id: identity
                    .user_id
                    .parse()
                    .map_err(|error| anyhow::anyhow!("identity.user_id: {error}"))?,
            })
        }
        IdentityMode::TrustedHeader => Authenticator::TrustedHeader(HeaderRule {
            trusted_proxies: identity.trusted_proxies.clone(),
            shared_secret: secrets.shared_secret.clone().map(Secret::new),
        }),
        IdentityMode::Oidc => Authenticator::Oidc(Arc::new(oidc_mode(config, secrets))),
    })
}

fn oidc_mode(config: &FileConfig, secrets: &Secrets) -> oidc::Oidc {
    let identity = &config.identity;
    let provider_config = provider_config(config, secrets);
    // The ID tokens the provider issues are checked against the same issuer and client.
    let (issuer, client_id) = (
        provider_config.issuer.clone(),
        provider_config.client_id.clone(),
    );
    let provider = Arc::new(provider::Provider::new(provider_config));
    let session_secret = secrets
        .session_key
        .clone()
        .map_or_else(Secret::generate, Secret::new);
    let secure = config.external_scheme().is_https();
    oidc::Oidc {
        jwks: Arc::new(jwks::Jwks::new(Arc::clone(&provider))),
        provider,
        rules: jwt::Rules {
            issuer,
            client_id,
            token_use: identity.token_use.clone(),
            clock_skew_secs: identity.clock_skew_secs,
        },
        scopes: identity.scopes.clone(),
        session_key: SigningKey::new(&session_secret),
        cookies: CookiePolicy {
            secure,
            same_site: identity.cookie_same_site.attribute(),
            domain: identity.cookie_domain.clone(),
        },
        runtime_cookies: CookiePolicy {
            secure,
            // The app's pages call their runtimes cross-site: only SameSite=None cookies travel
            // with those requests, and browsers accept None only with Secure.
            same_site: if secure { "None" } else { "Lax" },
            domain: None,
        },
        runtime_session_secs: identity.runtime_session_secs,
        codes: std::sync::Mutex::default(),
        verified: std::sync::Mutex::default(),
    }
}

/// The OpenID provider's endpoints: configured ones, else the Cognito domain's.
fn provider_config(config: &FileConfig, secrets: &Secrets) -> provider::Config {
    let identity = &config.identity;
    let cognito = |path: &str| {
        identity
            .cognito_domain
            .as_ref()
            .map(|d| format!("https://{d}{path}"))
    };
    let endpoint = |configured: &Option<String>, path| configured.clone().or_else(|| cognito(path));
    provider::Config {
        issuer: identity.issuer.clone().unwrap_or_default(),
        client_id: identity.client_id.clone().unwrap_or_default(),
        // Validation requires the file in OIDC mode, and `read_secrets` refuses an empty one.
        client_secret: Secret::new(secrets.client_secret.clone().unwrap_or_default()),
        jwks_uri: identity.jwks_uri.clone(),
        authorization_endpoint: endpoint(&identity.authorization_endpoint, "/oauth2/authorize"),
        token_endpoint: endpoint(&identity.token_endpoint, "/oauth2/token"),
        end_session_endpoint: endpoint(&identity.end_session_endpoint, "/logout"),
        timeout: Duration::from_secs(identity.provider_timeout_secs),
    }
}

/// Prints the generated token once, as a URL the user can open (like Jupyter does).
#[allow(clippy::print_stderr)]
fn announce_token(config: &FileConfig, port: u16, token: &str) {
    eprintln!(
        "sandport: open {}://{}:{port}/?{TOKEN_QUERY}={token}\n          (or send `Authorization: Bearer {token}`)",
        config.external_scheme(),
        config.routing.base_domain,
    );
}
