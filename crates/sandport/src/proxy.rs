//! The request pipeline, in order: route → authenticate → look up → authorize → forward or
//! tunnel → record. Every failure becomes a [`ProxyError`] and is answered by `error.rs`.
//!
//! Invariant: identity is settled before discovery is consulted, so an unauthenticated caller
//! learns nothing about which conversations exist; and nothing here calls Docker.

pub mod forward;
pub mod headers;
pub mod trailers;
pub mod upgrade;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::authz;
use crate::body::{self, Body};
use crate::discovery::{self, Store};
use crate::edge;
use crate::error::{FormRefusal, ProxyError, RequestKind, Upstream};
use crate::identity::oidc::{self, unix_now};
use crate::identity::{session, Authentication, Authenticator, HostKind, Principal};
use crate::metrics;
use crate::respond;
use crate::rewrite;
use crate::routing::{self, ConversationId, Target};
use headers::Forwarding;
pub use headers::Peer;

/// Everything the pipeline needs, built once at start.
#[derive(Debug)]
pub struct Gateway {
    pub routing: routing::Config,
    pub authenticator: Arc<Authenticator>,
    pub store: Arc<Store>,
    pub system_ports: Vec<u16>,
    /// Which container addresses may be connected to.
    pub address_policy: discovery::AddressPolicy,
    pub client: forward::Client,
    pub app_authority: http::uri::Authority,
    pub external_scheme: routing::Scheme,
    pub body_limit: u64,
    pub idle_timeout: Duration,
    /// Exchanges in flight to one sandbox before it answers 429.
    pub max_per_sandbox: usize,
    /// Open WebSocket tunnels, for the drain.
    pub tunnels: TaskTracker,
    /// Cancelled at the end of the drain: ends the tunnels still open.
    pub tunnel_cancel: CancellationToken,
    pub rewrite: rewrite::Config,
    /// Signs the identity assertion sent to the app, when configured.
    pub assertion_key: Option<session::SigningKey>,
    pub metrics: metrics::RequestMetrics,
}

/// Where a request goes, and so what the upstream is told about the caller: the app gets the
/// verified identity, a sandbox never does (invariant 5).
#[derive(Debug, Clone, Copy)]
enum Destination<'a> {
    App(Option<&'a Principal>),
    /// A sandbox, with the token that ends its streams when it stops serving.
    Sandbox(&'a ConversationId, &'a CancellationToken),
}

impl<'a> Destination<'a> {
    /// The upstream a failure names.
    fn upstream(self) -> Upstream {
        match self {
            Destination::App(_) => Upstream::App,
            Destination::Sandbox(conversation, _) => Upstream::Sandbox(conversation.clone()),
        }
    }

    fn lifetime(self) -> Option<&'a CancellationToken> {
        match self {
            Destination::App(_) => None,
            Destination::Sandbox(_, lifetime) => Some(lifetime),
        }
    }
}

/// What one request did, for its log line. The strings are filled only when the access log
/// is on (`log`).
#[derive(Debug, Default)]
struct Record {
    log: bool,
    route: &'static str,
    conversation: Option<String>,
    port: Option<u16>,
    upstream: Option<String>,
    user: Option<String>,
    decision: &'static str,
}

impl Record {
    /// The route, conversation and port, from the parsed target.
    fn describe(&mut self, target: &Target) {
        let Target::Runtime(runtime) = target else {
            return;
        };
        self.route = match runtime.form {
            routing::Form::Path => "runtime_path",
            routing::Form::Host => "runtime_host",
        };
        if self.log {
            self.conversation = Some(runtime.conversation.to_string());
        }
        self.port = Some(runtime.port);
    }

    fn caller(&mut self, principal: Option<&Principal>) {
        if self.log {
            self.user = principal.map(|p| p.user_id.to_string());
        }
    }

    /// The access-log line (target `sandport::access`).
    fn write(&self, method: &http::Method, status: StatusCode, elapsed: Duration) {
        tracing::info!(
            target: "sandport::access",
            method = %method,
            route = self.route,
            conversation = self.conversation.as_deref().unwrap_or("-"),
            port = self.port.unwrap_or(0),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            user = self.user.as_deref().unwrap_or("-"),
            decision = self.decision,
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// What the phases of one request share, parsed once.
struct Context {
    method: http::Method,
    host: PublicHost,
    path_and_query: String,
    target: Target,
    on_runtime_host: bool,
    /// The app's public origin, as this request's host spells the port.
    app_origin: String,
    /// A WebSocket upgrade, detected once.
    websocket: bool,
}

/// The caller after authentication: known (or anonymous) with cookies to refresh, or a token
/// in the query that a redirect moves into a cookie.
enum Caller {
    Known(Option<Principal>, Vec<String>),
    TokenInQuery { location: String },
}

/// The public host of a request: the authority as sent, and its lowercased host name.
struct PublicHost {
    authority: String,
    /// `authority` as a header value, for `Host` and `X-Forwarded-Host` upstream.
    header: HeaderValue,
    name: String,
    /// The port browsers use, when the authority names one.
    port: Option<u16>,
}

impl Gateway {
    /// Handles one request end to end. Never fails: errors become responses.
    pub async fn handle(&self, request: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let started = Instant::now();
        let method = request.method().clone();
        let kind = RequestKind::of(request.headers());
        let mut record = Record {
            log: tracing::enabled!(target: "sandport::access", tracing::Level::INFO),
            route: "app",
            decision: "forward",
            ..Record::default()
        };
        let response = match self.process(request, peer, &mut record).await {
            Ok(response) => response,
            Err(error) => {
                record.decision = error.reason();
                error.into_response(kind)
            }
        };
        self.metrics
            .request(record.route, metrics::status_label(response.status()));
        record.write(&method, response.status(), started.elapsed());
        response
    }

    /// The phases of one request, one job each: parse → sandport's own endpoints →
    /// check_origin → authenticate → the app or a runtime target (choose upstream, forward,
    /// shape).
    async fn process(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<Body>, ProxyError> {
        let context = self.parse(&request, record)?;
        record.describe(&context.target);
        if let Some(response) = self.own_endpoint(&request, &context).await? {
            record.decision = "sandport_endpoint";
            return Ok(response);
        }
        self.check_origin(&request, &context)?;
        let (principal, refreshed) = match self.authenticate(&request, &context, peer).await? {
            Caller::Known(principal, refreshed) => (principal, refreshed),
            Caller::TokenInQuery { location } => {
                record.decision = "token_redirect";
                return self.token_redirect(&location);
            }
        };
        record.caller(principal.as_ref());
        let response = match &context.target {
            Target::Runtime(target) => {
                Box::pin(self.runtime(request, &context, target, principal, peer, record)).await?
            }
            Target::App => Box::pin(self.app(request, &context, principal, peer, record)).await?,
        };
        Ok(respond::with_cookies(response, &refreshed))
    }

    /// Parses what every later phase needs, once.
    fn parse(
        &self,
        request: &Request<Incoming>,
        record: &mut Record,
    ) -> Result<Context, ProxyError> {
        check_request_form(request.method(), request.uri())?;
        check_h2_field_values(request)?;
        if !headers::is_plain_chunked_or_absent(request.headers()) {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding other than one chunked coding",
            ));
        }
        let host = public_host(request)?;
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let target =
            routing::parse(&self.routing, &host.name, &path_and_query).inspect_err(|_| {
                record.route = "runtime_path";
            })?;
        let websocket = websocket_upgrade(request)?;
        Ok(Context {
            method: request.method().clone(),
            websocket,
            on_runtime_host: matches!(&target, Target::Runtime(t) if t.form == routing::Form::Host),
            app_origin: self.rewrite.app_origin(host.port),
            host,
            path_and_query,
            target,
        })
    }

    /// Refuses cross-site writes and WebSockets from origins other than the app (and, on a
    /// runtime host, the host itself).
    fn check_origin(
        &self,
        request: &Request<Incoming>,
        context: &Context,
    ) -> Result<(), ProxyError> {
        // Only a request with an `Origin` header is checked against it.
        let own_origin =
            if context.on_runtime_host && request.headers().contains_key(header::ORIGIN) {
                self.public_origin(&context.host)
            } else {
                String::new()
            };
        let allowed_origins: &[&str] = if context.on_runtime_host {
            &[&context.app_origin, &own_origin]
        } else {
            &[&context.app_origin]
        };
        edge::check_origin(
            request.method(),
            request.headers(),
            context.websocket,
            allowed_origins,
            &self.routing.runtime_domain,
        )?;
        Ok(())
    }

    /// Settles who is calling: a principal (or nobody) with cookies to refresh, or a token
    /// in the query to move into a cookie.
    async fn authenticate(
        &self,
        request: &Request<Incoming>,
        context: &Context,
        peer: &Peer,
    ) -> Result<Caller, ProxyError> {
        let host_kind = if context.on_runtime_host {
            HostKind::Runtime(&context.host.name)
        } else {
            HostKind::App
        };
        let authentication = self.authenticator.authenticate(
            request.headers(),
            &context.path_and_query,
            peer.ip,
            host_kind,
        );
        Ok(match authentication.await {
            Authentication::TokenInQuery { location } => Caller::TokenInQuery { location },
            Authentication::Authenticated(principal) => Caller::Known(Some(principal), Vec::new()),
            Authentication::Refreshed {
                principal,
                set_cookies,
            } => Caller::Known(Some(principal), set_cookies),
            Authentication::Anonymous => Caller::Known(None, Vec::new()),
            Authentication::Refused(refusal) => return Err(ProxyError::Credentials(refusal)),
        })
    }

    /// A runtime target: the owner's sandbox, forwarded to and shaped.
    async fn runtime(
        &self,
        request: Request<Incoming>,
        context: &Context,
        target: &routing::RuntimeTarget,
        principal: Option<Principal>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<Body>, ProxyError> {
        let Some(principal) = principal else {
            return Box::pin(self.unauthenticated(&request, context, context.on_runtime_host))
                .await;
        };
        let (addr, sandbox) = self.resolve(&principal, target)?;
        let lifetime = self.store.lifetime(&sandbox, addr.ip());
        let in_flight =
            lifetime
                .admit(self.max_per_sandbox)
                .ok_or_else(|| ProxyError::SandboxBusy {
                    conversation: target.conversation.clone(),
                })?;
        let uri = origin_form(&target.upstream_target)?;
        let authority = record.upstream.insert(addr.to_string());
        let request_origin = request.headers().get(http::header::ORIGIN).cloned();
        let destination = Destination::Sandbox(&target.conversation, &lifetime.ended);
        let response = self
            .forward(
                request,
                (authority, uri),
                destination,
                context,
                peer,
                Some(in_flight),
            )
            .await?;
        Ok(self.shape_runtime(response, context, target, request_origin.as_ref()))
    }

    /// A sandbox's response as the client gets it: shaped for its route form and port, and on
    /// a runtime host readable by the app's pages.
    fn shape_runtime(
        &self,
        response: Response<Body>,
        context: &Context,
        target: &routing::RuntimeTarget,
        request_origin: Option<&HeaderValue>,
    ) -> Response<Body> {
        let mut response = rewrite::shape_sandbox(
            &self.rewrite,
            response,
            &context.method,
            target,
            !self.system_ports.contains(&target.port),
            (context.host.port, &context.app_origin),
        );
        if context.on_runtime_host {
            edge::allow_app_origin(request_origin, response.headers_mut(), &context.app_origin);
        }
        response
    }

    /// The app: forwarded to with the verified identity, and shaped.
    async fn app(
        &self,
        request: Request<Incoming>,
        context: &Context,
        principal: Option<Principal>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<Body>, ProxyError> {
        if principal.is_none() && self.authenticator.app_requires_principal() {
            return Box::pin(self.unauthenticated(&request, context, false)).await;
        }
        if record.log {
            record.upstream = Some(self.app_authority.to_string());
        }
        let uri = origin_form(&context.path_and_query)?;
        let response = self
            .forward(
                request,
                (self.app_authority.as_str(), uri),
                Destination::App(principal.as_ref()),
                context,
                peer,
                None,
            )
            .await?;
        Ok(rewrite::shape_app(&self.rewrite, response, &context.method))
    }

    /// sandport's own endpoints, answered before authentication: the browser script, OIDC
    /// login endpoints and runtime-session hand-off, and CORS preflights to runtime hosts.
    async fn own_endpoint(
        &self,
        request: &Request<Incoming>,
        context: &Context,
    ) -> Result<Option<Response<Body>>, ProxyError> {
        let (path, query) = split_query(&context.path_and_query);
        let oidc = match &*self.authenticator {
            Authenticator::Oidc(oidc) => Some(oidc.as_ref()),
            _ => None,
        };
        match (&context.target, oidc) {
            (Target::Runtime(_), _) if context.on_runtime_host => {
                let (method, headers) = (request.method(), request.headers());
                if let Some(preflight) = edge::preflight(method, headers, &context.app_origin) {
                    return Ok(Some(preflight));
                }
                match oidc {
                    Some(oidc) if path == oidc::RUNTIME_SESSION_PATH => oidc
                        .redeem_runtime_session(query, &context.host.name)
                        .map(Some)
                        .ok_or(ProxyError::Unauthenticated),
                    _ => Ok(None),
                }
            }
            (Target::Runtime(_), _) => Ok(None),
            (Target::App, None) => own_asset(path),
            (Target::App, Some(oidc)) => {
                Box::pin(self.login_endpoint(oidc, request, context)).await
            }
        }
    }

    /// The OIDC endpoints on the app host, or sandport's own assets.
    async fn login_endpoint(
        &self,
        oidc: &oidc::Oidc,
        request: &Request<Incoming>,
        context: &Context,
    ) -> Result<Option<Response<Body>>, ProxyError> {
        let (path, query) = split_query(&context.path_and_query);
        let (origin, headers) = (self.public_origin(&context.host), request.headers());
        let response = match path {
            oidc::CALLBACK_PATH => Box::pin(oidc.callback(&origin, query, headers)).await?,
            oidc::LOGOUT_PATH => Box::pin(oidc.logout(&origin, headers)).await?,
            oidc::REFRESH_PATH => {
                Box::pin(oidc.refresh_endpoint(request.method(), headers)).await?
            }
            oidc::RUNTIME_AUTH_PATH => {
                let start = self.start_runtime_session(oidc, headers, &origin, context);
                Box::pin(start).await?
            }
            _ => return own_asset(path),
        };
        Ok(Some(response))
    }

    /// On the app host: a logged-in owner of the runtime host named in `?host=` gets a
    /// one-time code for it and is sent back there to redeem it; others log in first.
    async fn start_runtime_session(
        &self,
        oidc: &oidc::Oidc,
        headers: &http::HeaderMap,
        origin: &str,
        context: &Context,
    ) -> Result<Response<Body>, ProxyError> {
        let principal = match oidc.authenticate(headers).await {
            oidc::AppAuth::Authenticated { principal, .. } => principal,
            oidc::AppAuth::Anonymous => {
                return Ok(oidc.login_redirect(origin, &context.path_and_query).await?)
            }
            oidc::AppAuth::Refused(refusal) => return Err(ProxyError::Credentials(refusal)),
        };
        let auth = oidc::RuntimeAuth::parse(split_query(&context.path_and_query).1);
        let (conversation, port) =
            routing::parse_runtime_host(&self.routing.runtime_domain, &auth.host_name)
                .ok_or(ProxyError::NotRuntimeHost)?;
        let target = routing::RuntimeTarget {
            form: routing::Form::Host,
            conversation,
            port,
            upstream_target: "/".into(),
        };
        // The code is issued only to the sandbox's owner, as any request to it would be.
        self.resolve(&principal, &target)?;
        Ok(oidc.runtime_session_redirect(&principal, &auth, self.external_scheme))
    }

    /// No principal: browsers navigating are sent to log in (OIDC mode); everything else gets
    /// 401 (JSON on the app host in OIDC mode, never a redirect it cannot follow).
    async fn unauthenticated(
        &self,
        request: &Request<Incoming>,
        context: &Context,
        on_runtime_host: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let Authenticator::Oidc(oidc) = &*self.authenticator else {
            return Err(ProxyError::Unauthenticated);
        };
        let navigation = request.method() == http::Method::GET
            && RequestKind::of(request.headers()).navigation
            && !context.websocket;
        match (navigation, on_runtime_host) {
            (false, true) => Err(ProxyError::Unauthenticated),
            (false, false) => Err(ProxyError::LoginRequired),
            // The runtime host has no login of its own: the app host starts its session.
            (true, true) => Ok(respond::redirect(&runtime_auth_location(context), &[])),
            (true, false) => {
                let origin = self.public_origin(&context.host);
                Ok(oidc
                    .login_redirect(&origin, &context.path_and_query)
                    .await?)
            }
        }
    }

    /// Looks up the sandbox, checks ownership and picks the container address and port.
    fn resolve(
        &self,
        principal: &Principal,
        target: &routing::RuntimeTarget,
    ) -> Result<(SocketAddr, Arc<discovery::Sandbox>), ProxyError> {
        let lookup_error = |error| ProxyError::Lookup {
            conversation: target.conversation.clone(),
            error,
        };
        let sandbox = self
            .store
            .lookup(&target.conversation, Instant::now())
            .map_err(lookup_error)?;
        authz::check(principal, &sandbox).map_err(|denied| ProxyError::Denied {
            conversation: target.conversation.clone(),
            denied,
        })?;
        let ip = sandbox
            .address
            .ok_or_else(|| lookup_error(discovery::LookupError::NoAddress))?;
        let port = discovery::choose_port(&sandbox, target.port, &self.system_ports);
        let upstream = SocketAddr::new(ip, port);
        self.address_policy
            .check(upstream)
            .map_err(|refusal| ProxyError::AddressRefused {
                conversation: target.conversation.clone(),
                refusal,
            })?;
        Ok((upstream, sandbox))
    }

    /// Sends the request to `destination` at `authority`, as an origin-form `uri`.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
        (authority, uri): (&str, Uri),
        destination: Destination<'_>,
        context: &Context,
        peer: &Peer,
        in_flight: Option<discovery::InFlight>,
    ) -> Result<Response<Body>, ProxyError> {
        let downstream_upgrade = context.websocket.then(|| hyper::upgrade::on(&mut request));
        let upstream = destination.upstream();
        let (upstream_request, upload) =
            self.upstream_request(request, uri, destination, context, peer)?;
        let started = Instant::now();
        let watch = forward::Watch {
            idle_timeout: self.idle_timeout,
            upload: upload.as_deref(),
            ended: destination.lifetime(),
        };
        let send = forward::send(&self.client, authority, upstream_request, watch, &upstream);
        let response = send.await?;
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics
            .upstream(matches!(upstream, Upstream::App), elapsed);
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = response.into_parts();
            headers::prepare_downstream(&mut parts.headers, false);
            let ended = destination.lifetime().cloned();
            let body = watch::response(body, self.idle_timeout, ended, in_flight);
            return Ok(Response::from_parts(parts, body));
        }
        let downstream_upgrade = downstream_upgrade.ok_or(ProxyError::UpstreamFailed {
            upstream,
            source: "upstream switched protocols unasked".into(),
        })?;
        Ok(self.tunnel(response, downstream_upgrade, destination, in_flight))
    }

    /// Splices the client's and the upstream's switched connections, and hands the client the
    /// upstream's `101`.
    fn tunnel(
        &self,
        mut response: Response<Body>,
        downstream_upgrade: hyper::upgrade::OnUpgrade,
        destination: Destination<'_>,
        in_flight: Option<discovery::InFlight>,
    ) -> Response<Body> {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let cancel = (
            self.tunnel_cancel.clone(),
            destination.lifetime().cloned(),
            in_flight,
        );
        upgrade::spawn_tunnel(
            downstream_upgrade,
            upstream_upgrade,
            self.idle_timeout,
            &self.tunnels,
            cancel,
        );
        headers::prepare_downstream(response.headers_mut(), true);
        response
    }

    /// The client's request as the upstream gets it: HTTP/1.1, origin-form, its headers
    /// rewritten, its body limited and without trailers. Only the app is told who the caller
    /// is.
    fn upstream_request(
        &self,
        request: Request<Incoming>,
        uri: Uri,
        destination: Destination<'_>,
        context: &Context,
        peer: &Peer,
    ) -> Result<(Request<Body>, Option<Arc<watch::Upload>>), ProxyError> {
        let (mut parts, incoming) = request.into_parts();
        if declared_length(&parts.headers).is_some_and(|length| length > self.body_limit) {
            return Err(ProxyError::BodyTooLarge);
        }
        let app_principal = match destination {
            Destination::App(principal) => principal,
            Destination::Sandbox(..) => None,
        };
        let assertion = app_principal
            .zip(self.assertion_key.as_ref())
            .and_then(|(principal, key)| session::identity_assertion(key, principal, unix_now()));
        let forwarding = Forwarding {
            peer,
            keep_forwarded_chain: self.authenticator.is_trusted_peer(peer.ip),
            external_scheme: self.external_scheme,
            public_authority: &context.host.header,
            websocket: context.websocket,
            app_principal,
            app_assertion: assertion.as_deref(),
        };
        headers::prepare_upstream(&mut parts.headers, &forwarding, &self.authenticator);
        parts.uri = uri;
        // The pool speaks HTTP/1.1 upstream whatever the client spoke.
        parts.version = Version::HTTP_11;
        let limited = trailers::without_trailers(body::limited(incoming, self.body_limit));
        let (body, upload) = watch::upload(limited, self.idle_timeout);
        Ok((Request::from_parts(parts, body), upload))
    }

    /// The origin the client used to reach sandport.
    fn public_origin(&self, host: &PublicHost) -> String {
        format!("{}://{}", self.external_scheme, host.authority)
    }

    /// Sets the token cookie and sends the browser to the same URL without the token.
    fn token_redirect(&self, location: &str) -> Result<Response<Body>, ProxyError> {
        // Only token mode finds a token in the query; anything else is refused, never a blank 200.
        let Authenticator::Token(auth) = &*self.authenticator else {
            return Err(ProxyError::Unauthenticated);
        };
        let cookie = auth.cookie(self.external_scheme.is_https(), self.token_cookie_domain());
        Ok(respond::redirect(location, &[cookie]))
    }

    /// Token mode: when runtime hosts live under the base domain (and it has a dot and is not
    /// an IP address: neither can carry cookies to subdomains), one cookie on the base domain
    /// serves the app and every runtime host, so the app's pages can call their runtimes
    /// (WebSocket, fetch) as same-site requests. sandport strips it before forwarding,
    /// sandbox responses cannot set it, and it is HttpOnly.
    fn token_cookie_domain(&self) -> Option<&str> {
        let base = &self.rewrite.base_domain;
        let covers_runtimes = self
            .routing
            .runtime_domain
            .strip_suffix(base.as_str())
            .is_some_and(|prefix| prefix.ends_with('.'));
        let is_ip = base.parse::<IpAddr>().is_ok();
        (covers_runtimes && base.contains('.') && !is_ip).then_some(base.as_str())
    }
}

/// The browser script and its siblings, served on the app host.
fn own_asset(path: &str) -> Result<Option<Response<Body>>, ProxyError> {
    if path.starts_with(rewrite::ASSET_PREFIX) {
        rewrite::asset(path)
            .map(Some)
            .ok_or(ProxyError::UnknownAsset)
    } else {
        Ok(None)
    }
}

/// `/_sandport/runtime-auth` on the app host, naming this runtime host and the page to
/// return to.
fn runtime_auth_location(context: &Context) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("host", &context.host.authority)
        .append_pair("rd", &context.path_and_query)
        .finish();
    format!("{}{}?{query}", context.app_origin, oidc::RUNTIME_AUTH_PATH)
}

/// The longest request-target served (414 beyond): as nginx's default large buffer and the
/// URL lengths browsers and upstream servers reliably handle.
const MAX_TARGET_LEN: usize = 8 * 1024;

/// The request-target forms sandport serves (RFC 9112 §3.2): origin-form, absolute-form, and
/// `*` for OPTIONS only, answered here. CONNECT and TRACE are refused before anything else: a
/// gateway that dials what CONNECT names is an open proxy, and TRACE echoes credentials back.
fn check_request_form(method: &http::Method, uri: &Uri) -> Result<(), FormRefusal> {
    if method == http::Method::CONNECT || method == http::Method::TRACE {
        return Err(FormRefusal::MethodRefused(method.clone()));
    }
    let target_len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_TARGET_LEN {
        return Err(FormRefusal::TargetTooLong(MAX_TARGET_LEN));
    }
    if uri.scheme().is_some() {
        return Ok(()); // absolute-form; its authority is checked against Host
    }
    match uri.path_and_query().map(http::uri::PathAndQuery::as_str) {
        Some(target) if target.starts_with('/') => Ok(()),
        Some("*") if method == http::Method::OPTIONS => Err(FormRefusal::AsteriskOptions),
        Some("*") => Err(FormRefusal::BadTarget(
            "asterisk-form on a method other than OPTIONS",
        )),
        _ => Err(FormRefusal::BadTarget("authority-form request-target")),
    }
}

/// HTTP/2 carries field values as sent, where HTTP/1.1's parser trims them: a value that
/// starts or ends with whitespace makes the request malformed (RFC 9113 §8.2.1), and would
/// otherwise be re-emitted as is in the upstream HTTP/1.1 request (catalogue 36).
fn check_h2_field_values<B>(request: &Request<B>) -> Result<(), ProxyError> {
    if request.version() != Version::HTTP_2 {
        return Ok(());
    }
    let padded = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        let blank = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
        blank(bytes.first()) || blank(bytes.last())
    };
    if request.headers().values().any(padded) {
        return Err(ProxyError::BadRequest(
            "HTTP/2 field value with leading or trailing whitespace",
        ));
    }
    Ok(())
}

/// A path-and-query split at its first `?`.
fn split_query(path_and_query: &str) -> (&str, &str) {
    path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""))
}

/// One rule for upgrades, decided at parse: a WebSocket opens with GET (RFC 6455 §4.1); any
/// other method asking for one is malformed, not a plain request.
fn websocket_upgrade<B>(request: &Request<B>) -> Result<bool, ProxyError> {
    let websocket = headers::is_websocket_upgrade(request.headers());
    if websocket && request.method() != http::Method::GET {
        return Err(ProxyError::BadRequest(
            "WebSocket upgrade with a method other than GET",
        ));
    }
    Ok(websocket)
}

/// Finds the one canonical authority of a request: the `:authority` (HTTP/2, or an HTTP/1
/// absolute-form target) or the single `Host` header. Two `Host` headers, or an authority that
/// disagrees with `Host`, are refused: they are how routing confusion attacks start.
fn public_host<B>(request: &Request<B>) -> Result<PublicHost, ProxyError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("several Host headers"));
    }
    let host_text = host_header
        .map(|value| {
            value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("Host is not text"))
        })
        .transpose()?;
    let (authority, header) = match (request.uri().authority(), host_text.zip(host_header)) {
        (Some(authority), Some((host, _))) if !authority.as_str().eq_ignore_ascii_case(host) => {
            return Err(ProxyError::BadRequest(
                "Host differs from the request-target",
            ));
        }
        (Some(authority), _) => {
            let header = HeaderValue::from_str(authority.as_str())
                .map_err(|_| ProxyError::BadRequest("Host is not text"))?;
            (authority.as_str().to_owned(), header)
        }
        (None, Some((host, value))) => (host.to_owned(), value.clone()),
        (None, None) => return Err(ProxyError::BadRequest("no Host")),
    };
    let parsed: http::uri::Authority = authority
        .parse()
        .map_err(|_| ProxyError::BadRequest("Host is not an authority"))?;
    if authority.contains('@') {
        return Err(ProxyError::BadRequest("Host carries user info"));
    }
    Ok(PublicHost {
        name: parsed.host().to_ascii_lowercase(),
        port: parsed.port_u16(),
        authority,
        header,
    })
}

/// The request-target sent upstream: origin-form, as HTTP/1.1 to an origin server wants it.
fn origin_form(path_and_query: &str) -> Result<Uri, ProxyError> {
    Uri::try_from(path_and_query)
        .map_err(|_| ProxyError::BadRequest("request-target cannot be forwarded"))
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}
