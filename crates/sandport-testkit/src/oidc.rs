//! An in-process OpenID Connect provider for tests, shaped like Amazon Cognito where it matters.
//!
//! [`TestProvider::start`] serves HTTP/1.1 on `127.0.0.1:0`; the issuer is
//! `http://127.0.0.1:{port}` (no trailing slash) and every endpoint hangs off it, as with a
//! Cognito user pool whose hosted-UI domain and issuer were one origin. The server stops when the
//! [`TestProvider`] is dropped (open connections, including requests held by
//! [`JwksMode::Hang`], are closed).
//!
//! # Endpoints
//!
//! | Request | Behaviour |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | `200 application/json` discovery document: `issuer`, `authorization_endpoint` (`{issuer}/oauth2/authorize`), `token_endpoint` (`{issuer}/oauth2/token`), `jwks_uri` (`{issuer}/.well-known/jwks.json`), `end_session_endpoint` (`{issuer}/logout`), `id_token_signing_alg_values_supported: ["RS256"]`, `response_types_supported: ["code"]`, `subject_types_supported: ["public"]`, `scopes_supported`, `token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"]`, `code_challenge_methods_supported: ["S256"]`, `grant_types_supported`, `claims_supported`. `404` while [`TestProvider::set_discovery_available`]`(false)`. Counted by [`TestProvider::discovery_fetches`]. |
//! | `GET /.well-known/jwks.json` | Per [`JwksMode`]: `Normal` gives `200 application/json` `{"keys":[{"kty":"RSA","kid","use":"sig","alg":"RS256","n","e"}, ...]}` (base64url, no padding) with every published key, no `Cache-Control`; `Unavailable503` gives `503` text; `Hang` holds the request open until the mode changes (then it is answered per the new mode) or the provider is dropped. Every request is counted by [`TestProvider::jwks_fetches`] on arrival. |
//! | `GET /oauth2/authorize?...`, alias `GET /login?...` | Consents at once as the current user ([`TestProvider::set_user`]). `client_id` must be the provider's and `redirect_uri` present, else `400 text/plain` (no redirect to an unchecked URI). Then `response_type` must be `code` (else redirect with `error=unsupported_response_type`), and a `code_challenge` needs `code_challenge_method=S256` (else redirect with `error=invalid_request`). Success: `302 Location: {redirect_uri}?code={code}&state={state}` (`&` instead of `?` when `redirect_uri` already has a query; `state` copied byte for byte from the request's query string, omitted when absent). The code is single-use, bound to `redirect_uri`, `code_challenge`, `nonce`, scope and the user, and lives 60 s ([`TestProvider::set_code_lifetime`]). The query of the last request is kept ([`TestProvider::last_authorize_params`]); calls are counted by [`TestProvider::authorize_calls`]. |
//! | `POST /oauth2/token` (form-urlencoded) | Client authentication first: `Authorization: Basic base64(client_id:client_secret)` (the parts taken raw or form-urldecoded), else `client_id` + `client_secret` in the body; a body `client_id` must agree with the Basic one. Failure: `401 {"error":"invalid_client"}` with `WWW-Authenticate: Basic`. `grant_type=authorization_code`: `code` is consumed on *any* presentation (a second use fails even if the first one failed); it must be unexpired, `redirect_uri` must equal the authorize request's byte for byte, and when a challenge was given `code_verifier` (43..=128 chars) must satisfy `BASE64URL(SHA256(verifier)) == code_challenge`. Success: `200 {"id_token","access_token","refresh_token","expires_in","token_type":"Bearer"}` (no `id_token` when the authorize request had a `scope` without `openid`, as with Cognito). `grant_type=refresh_token`: a known, unrevoked `refresh_token` gives a new `id_token` and `access_token` (no `nonce` claim); the response has no `refresh_token` unless [`TestProvider::set_rotate_refresh_tokens`]`(true)`, which issues a new one and invalidates the old. Grant errors: `400 {"error":"invalid_grant","error_description":...}`; missing parameters `400 invalid_request`; other grant types `400 unsupported_grant_type`. Responses carry `Cache-Control: no-store`. Every POST is counted by its `grant_type` before any check ([`TestProvider::token_calls`]). |
//! | `GET /logout?client_id&logout_uri` | `200 text/plain` `logged out`; `logout_uri` is recorded ([`TestProvider::last_logout_uri`]) and calls counted ([`TestProvider::logout_calls`]). A wrong or missing `client_id` gives `400`. |
//! | anything else | `404 text/plain` `not found`. |
//!
//! # Tokens
//!
//! The `id_token` is RS256 with header `{"alg":"RS256","typ":"JWT","kid":<signing kid>}` and
//! claims `iss`, `aud` (the client id), `sub`, `email`, `email_verified`, `token_use: "id"`,
//! `auth_time`, `iat`, `exp` (`iat` + the lifetime, default 3600 s,
//! [`TestProvider::set_id_token_lifetime`]), `cognito:username` (the `sub`), `jti` (random, so two
//! tokens never coincide), and `nonce` when the authorize request had one (code grant only). The
//! `access_token` is a Cognito-style JWT signed by the same key with `iss`, `client_id`, `sub`,
//! `token_use: "access"`, `scope`, `auth_time`, `iat`, `exp`, `username`, `jti` and **no `aud`**.
//! `expires_in` is the lifetime. Refresh tokens are opaque random strings.
//!
//! # Keys
//!
//! RSA-2048 keys are generated with AWS-LC ([`aws_lc_rs::rsa::KeyPair::generate`]), the same
//! library jsonwebtoken's `aws_lc_rs` backend signs with. One generation costs 0.1–1 s in a
//! debug build on a busy 2-core machine (prime search is random; measured: first
//! [`TestProvider::start`] of a process ≈ 0.8 s, later ones ≈ 0.2 ms, a rotation past the pool
//! 0.2–1 s; minting a token ≈ 6 ms unoptimised), so the key material lives in a
//! process-wide pool that grows on demand and is shared by every provider of the process: a
//! provider's n-th key is the pool's n-th key (index 0 is reserved for the key that is never
//! published, see [`TestProvider::mint_unknown_kid`]). The first provider of a process pays for
//! two generations, later ones for none until they rotate past what the pool holds. Every key a
//! provider publishes gets a fresh random `kid` (44 characters of standard base64, as Cognito's
//! look, so `+`, `/` and `=` occur), so kids never repeat across providers or rotations.
//!
//! - [`TestProvider::rotate_keys`]: the next key (the one from [`TestProvider::add_next_key`] if
//!   one is pending, else a new one) becomes the signing key and is the only key left in the JWKS:
//!   the previous signing key is dropped.
//! - [`TestProvider::add_next_key`]: publishes the next key while signing goes on with the
//!   current one (Cognito publishes before it signs).
//!
//! # Hostile tokens
//!
//! [`TestProvider::standard_claims`] gives a valid claim set to start from; [`TestProvider::mint`]
//! signs any claims with the signing key; [`TestProvider::mint_with_header`] takes the header
//! verbatim. The helpers `mint_alg_none`, `mint_hs256_with_public_key`, `mint_unknown_kid`,
//! `mint_foreign_key_with_current_kid`, `mint_tampered`, `mint_huge` and [`truncate_token`] build
//! the attacks; `mint_with_attacker_key` and `attacker_jwk` give an attacker's own key, and [`TestProvider::hostile_tokens`] the whole table.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Default lifetime of issued `id_token`s and `access_token`s, in seconds.
pub const DEFAULT_ID_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Default lifetime of authorization codes.
pub const DEFAULT_CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Default current user's `sub`.
pub const DEFAULT_SUB: &str = "8f3c2a1e-0b7d-4c55-9e21-6a4d3f2b1c00";
/// Default current user's `email`.
pub const DEFAULT_EMAIL: &str = "user@example.test";
/// Size of the padding claim [`TestProvider::hostile_tokens`] puts in its `huge` token.
pub const HUGE_TOKEN_PADDING: usize = 1024 * 1024;
/// Largest token request body the provider reads.
const MAX_FORM_BODY: usize = 64 * 1024;

/// How `GET /.well-known/jwks.json` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwksMode {
    /// `200` with the published keys.
    #[default]
    Normal,
    /// `503 Service Unavailable`.
    Unavailable503,
    /// Holds the request open without answering until the mode changes or the provider drops.
    Hang,
}

/// One entry of [`TestProvider::hostile_tokens`].
#[derive(Debug, Clone)]
pub struct HostileToken {
    /// Short stable name, e.g. `alg_none`.
    pub name: &'static str,
    /// The compact JWT (or something shaped like one).
    pub token: String,
}

/// The in-process OIDC provider. See the [module documentation](self).
pub struct TestProvider {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

struct Inner {
    issuer: String,
    client_id: String,
    client_secret: String,
    state: Mutex<State>,
    jwks_mode: watch::Sender<JwksMode>,
    jwks_fetches: AtomicU64,
    discovery_fetches: AtomicU64,
    authorize_calls: AtomicU64,
    logout_calls: AtomicU64,
}

struct State {
    /// Published keys, in JWKS order.
    published: Vec<ProviderKey>,
    /// The key tokens are signed with (always published).
    signing: ProviderKey,
    /// Published by `add_next_key`, not yet signing.
    next: Option<ProviderKey>,
    /// Pool index of the provider's most recent key.
    last_pool_index: usize,
    user: User,
    id_token_lifetime: u64,
    code_lifetime: Duration,
    rotate_refresh_tokens: bool,
    discovery_available: bool,
    codes: HashMap<String, CodeGrant>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    token_calls: HashMap<String, u64>,
    last_logout_uri: Option<String>,
    last_authorize_params: Option<Vec<(String, String)>>,
}

#[derive(Clone)]
struct User {
    sub: String,
    email: String,
    email_verified: bool,
}

struct CodeGrant {
    redirect_uri: String,
    code_challenge: Option<String>,
    nonce: Option<String>,
    scope: String,
    user: User,
    auth_time: u64,
    expires: Instant,
}

struct RefreshGrant {
    user: User,
    scope: String,
    auth_time: u64,
}

#[derive(Clone)]
struct ProviderKey {
    kid: String,
    material: Arc<KeyMaterial>,
}

/// RSA key material shared through the process-wide pool.
struct KeyMaterial {
    encoding: EncodingKey,
    /// Modulus, base64url without padding.
    n: String,
    /// Public exponent, base64url without padding.
    e: String,
    /// `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo) PEM, with a trailing newline.
    public_pem: String,
}

impl TestProvider {
    /// Binds `127.0.0.1:0` and serves the provider for the given client in the current runtime.
    pub async fn start(client_id: &str, client_secret: &str) -> anyhow::Result<TestProvider> {
        let (never_published, first) =
            tokio::task::spawn_blocking(|| anyhow::Ok((pooled_key(0)?, pooled_key(1)?)))
                .await
                .context("key generation task")??;
        drop(never_published);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the test OIDC provider")?;
        let addr = listener.local_addr()?;
        let signing = ProviderKey {
            kid: random_kid(),
            material: first,
        };
        let (jwks_mode, _) = watch::channel(JwksMode::Normal);
        let inner = Arc::new(Inner {
            issuer: format!("http://{addr}"),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            state: Mutex::new(State {
                published: vec![signing.clone()],
                signing,
                next: None,
                last_pool_index: 1,
                user: User {
                    sub: DEFAULT_SUB.to_owned(),
                    email: DEFAULT_EMAIL.to_owned(),
                    email_verified: true,
                },
                id_token_lifetime: DEFAULT_ID_TOKEN_LIFETIME_SECS,
                code_lifetime: DEFAULT_CODE_LIFETIME,
                rotate_refresh_tokens: false,
                discovery_available: true,
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                token_calls: HashMap::new(),
                last_logout_uri: None,
                last_authorize_params: None,
            }),
            jwks_mode,
            jwks_fetches: AtomicU64::new(0),
            discovery_fetches: AtomicU64::new(0),
            authorize_calls: AtomicU64::new(0),
            logout_calls: AtomicU64::new(0),
        });
        let server = tokio::spawn(serve(listener, inner.clone()));
        Ok(TestProvider {
            inner,
            addr,
            server,
        })
    }

    // ----- addresses -----

    /// `http://127.0.0.1:{port}`.
    pub fn issuer(&self) -> String {
        self.inner.issuer.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The client id given to [`TestProvider::start`].
    pub fn client_id(&self) -> String {
        self.inner.client_id.clone()
    }

    /// The client secret given to [`TestProvider::start`].
    pub fn client_secret(&self) -> String {
        self.inner.client_secret.clone()
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.inner.issuer)
    }

    /// `{issuer}/.well-known/jwks.json`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.inner.issuer)
    }

    /// `{issuer}/oauth2/authorize`.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/oauth2/authorize", self.inner.issuer)
    }

    /// `{issuer}/oauth2/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.inner.issuer)
    }

    /// `{issuer}/logout`.
    pub fn end_session_endpoint(&self) -> String {
        format!("{}/logout", self.inner.issuer)
    }

    // ----- knobs -----

    /// The user the authorize endpoint consents as from now on (codes already issued keep theirs).
    pub fn set_user(&self, sub: &str, email: &str, email_verified: bool) {
        self.inner.lock().user = User {
            sub: sub.to_owned(),
            email: email.to_owned(),
            email_verified,
        };
    }

    /// Lifetime (`exp - iat`, and `expires_in`) of tokens issued from now on; 0 is allowed.
    pub fn set_id_token_lifetime(&self, secs: u64) {
        self.inner.lock().id_token_lifetime = secs;
    }

    /// Lifetime of authorization codes issued from now on (default 60 s).
    pub fn set_code_lifetime(&self, lifetime: Duration) {
        self.inner.lock().code_lifetime = lifetime;
    }

    /// When true, a refresh grant returns a new `refresh_token` and invalidates the one presented.
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.inner.lock().rotate_refresh_tokens = rotate;
    }

    /// Revokes every refresh token issued so far: presenting one gives `400 invalid_grant`.
    /// Logins afterwards get working refresh tokens again.
    pub fn revoke_refresh_tokens(&self) {
        self.inner.lock().refresh_tokens.clear();
    }

    /// How the JWKS endpoint answers from now on; leaving [`JwksMode::Hang`] releases the held
    /// requests, which are then answered per the new mode.
    pub fn set_jwks_mode(&self, mode: JwksMode) {
        self.inner.jwks_mode.send_replace(mode);
    }

    /// When false, the discovery document answers `404` (for testing the fallback to
    /// `{issuer}/.well-known/jwks.json`).
    pub fn set_discovery_available(&self, available: bool) {
        self.inner.lock().discovery_available = available;
    }

    /// Switches signing to the next key (the pending one from [`TestProvider::add_next_key`], or
    /// a new one) and drops every other key from the JWKS. Returns the new signing kid.
    pub fn rotate_keys(&self) -> String {
        let pending = self.inner.lock().next.take();
        let key = match pending {
            Some(key) => key,
            None => self.new_key(),
        };
        let mut state = self.inner.lock();
        state.published = vec![key.clone()];
        state.signing = key.clone();
        key.kid
    }

    /// Publishes a next key in the JWKS (alongside the current ones) without signing with it;
    /// the next [`TestProvider::rotate_keys`] switches to it. Calling it again replaces the
    /// pending key (the earlier one stays published until the rotation). Returns its kid.
    pub fn add_next_key(&self) -> String {
        let key = self.new_key();
        let mut state = self.inner.lock();
        state.published.push(key.clone());
        state.next = Some(key.clone());
        key.kid
    }

    /// The kid tokens are signed with now.
    pub fn current_kid(&self) -> String {
        self.inner.lock().signing.kid.clone()
    }

    /// The kids in the JWKS, in order.
    pub fn published_kids(&self) -> Vec<String> {
        self.inner
            .lock()
            .published
            .iter()
            .map(|k| k.kid.clone())
            .collect()
    }

    /// The JWKS document as served in [`JwksMode::Normal`].
    pub fn jwks(&self) -> Value {
        jwks_document(&self.inner.lock().published)
    }

    /// The signing key's public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        self.inner.lock().signing.material.public_pem.clone()
    }

    // ----- counters and records -----

    /// Requests to the JWKS endpoint so far (counted on arrival, whatever the mode).
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Requests to the discovery document so far.
    pub fn discovery_fetches(&self) -> u64 {
        self.inner.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Requests to `/oauth2/authorize` and `/login` so far.
    pub fn authorize_calls(&self) -> u64 {
        self.inner.authorize_calls.load(Ordering::SeqCst)
    }

    /// Token requests so far whose `grant_type` was `grant_type` (e.g. `"authorization_code"`,
    /// `"refresh_token"`; `""` for requests without one), successful or not.
    pub fn token_calls(&self, grant_type: &str) -> u64 {
        self.inner
            .lock()
            .token_calls
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// All token requests so far.
    pub fn token_calls_total(&self) -> u64 {
        self.inner.lock().token_calls.values().sum()
    }

    /// Requests to `/logout` so far.
    pub fn logout_calls(&self) -> u64 {
        self.inner.logout_calls.load(Ordering::SeqCst)
    }

    /// The `logout_uri` of the last `/logout` request that had one.
    pub fn last_logout_uri(&self) -> Option<String> {
        self.inner.lock().last_logout_uri.clone()
    }

    /// The decoded query parameters of the last authorize request, in order.
    pub fn last_authorize_params(&self) -> Option<Vec<(String, String)>> {
        self.inner.lock().last_authorize_params.clone()
    }

    // ----- minting -----

    /// A valid `id_token` claim set for `sub`: `iss`, `aud`, `sub`, `email` (`{sub}@example.test`),
    /// `email_verified: true`, `token_use: "id"`, `auth_time` and `iat` (now), `exp` (now + 3600),
    /// `cognito:username`, `jti`.
    pub fn standard_claims(&self, sub: &str) -> Value {
        let now = now_secs();
        json!({
            "iss": self.inner.issuer,
            "aud": self.inner.client_id,
            "sub": sub,
            "email": format!("{sub}@example.test"),
            "email_verified": true,
            "token_use": "id",
            "auth_time": now,
            "iat": now,
            "exp": now + 3600,
            "cognito:username": sub,
            "jti": random_token(16),
        })
    }

    /// A copy of `token` (one this provider issued, e.g. from a login) with the same claims
    /// but `iat` ten minutes and `exp` five minutes in the past, signed with the current key:
    /// an expired token minted at once, never waited for. Panics on a token that is not a JWT.
    pub fn mint_expired_copy(&self, token: &str) -> String {
        let payload = token.split('.').nth(1).expect("a JWT has a payload");
        let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
        let mut claims: Value = serde_json::from_slice(&bytes).expect("JSON claims");
        let now = now_secs();
        claims["iat"] = json!(now - 600);
        claims["auth_time"] = json!(now - 600);
        claims["exp"] = json!(now - 300);
        self.mint(claims)
    }

    /// Signs `claims` with the signing key: RS256, header `{"alg":"RS256","typ":"JWT","kid"}`.
    pub fn mint(&self, claims: Value) -> String {
        let kid = self.current_kid();
        self.mint_with_header(json!({"alg": "RS256", "typ": "JWT", "kid": kid}), claims)
    }

    /// Encodes `header` verbatim and signs per its `alg`: `RS256/384/512` and `PS256/384/512`
    /// with the signing key; `HS256/384/512` with the signing key's public PEM bytes as the HMAC
    /// secret (key confusion); `none` with an empty signature; any other or missing `alg` with
    /// an RS256 signature by the signing key (the header then lies).
    pub fn mint_with_header(&self, header: Value, claims: Value) -> String {
        let material = self.inner.lock().signing.material.clone();
        sign_compact(&header, &claims, &material)
    }

    /// `{"alg":"none","typ":"JWT","kid":<signing kid>}`, the claims, and an empty signature
    /// (`header.payload.`).
    pub fn mint_alg_none(&self, claims: Value) -> String {
        let kid = self.current_kid();
        self.mint_with_header(json!({"alg": "none", "typ": "JWT", "kid": kid}), claims)
    }

    /// HS256 with the signing key's public key PEM (SPKI, as served by many JWKS-to-PEM
    /// converters, trailing newline included) as the HMAC secret, header kid = the signing kid:
    /// the classic RS256/HS256 key-confusion attack.
    pub fn mint_hs256_with_public_key(&self, claims: Value) -> String {
        let kid = self.current_kid();
        self.mint_with_header(json!({"alg": "HS256", "typ": "JWT", "kid": kid}), claims)
    }

    /// RS256 by a key that is never published, under a fresh kid no JWKS holds.
    pub fn mint_unknown_kid(&self, claims: Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": random_kid()});
        sign_compact(&header, &claims, &never_published_key())
    }

    /// Encodes `header` verbatim and signs it (per its `alg`, as [`TestProvider::mint_with_header`])
    /// with the key that is never published: an attacker's own key.
    pub fn mint_with_attacker_key(&self, header: Value, claims: Value) -> String {
        sign_compact(&header, &claims, &never_published_key())
    }

    /// The public JWK (`kty`, `alg`, `use`, `n`, `e`, no `kid`) of the key that is never
    /// published, as an attacker would embed it in a token's `jwk` header.
    pub fn attacker_jwk(&self) -> Value {
        let key = never_published_key();
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "n": key.n, "e": key.e})
    }

    /// RS256 by a key that is never published, but under the signing kid (bad signature).
    pub fn mint_foreign_key_with_current_kid(&self, claims: Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.current_kid()});
        sign_compact(&header, &claims, &never_published_key())
    }

    /// A token showing `shown` as its payload with the valid signature of `signed`.
    pub fn mint_tampered(&self, signed: Value, shown: Value) -> String {
        let token = self.mint(signed);
        let mut parts = token.split('.');
        let (header, _, signature) = (parts.next(), parts.next(), parts.next());
        format!(
            "{}.{}.{}",
            header.unwrap_or_default(),
            b64_json(&shown),
            signature.unwrap_or_default()
        )
    }

    /// `claims` plus a `padding` claim of `padding_bytes` `x`s, validly signed.
    pub fn mint_huge(&self, mut claims: Value, padding_bytes: usize) -> String {
        if let Value::Object(map) = &mut claims {
            map.insert(
                "padding".to_owned(),
                Value::String("x".repeat(padding_bytes)),
            );
        }
        self.mint(claims)
    }

    /// The attack table for `sub`, every entry of which a strict verifier must reject:
    ///
    /// | name | token |
    /// |---|---|
    /// | `alg_none` | [`TestProvider::mint_alg_none`] of valid claims |
    /// | `hs256_public_key` | [`TestProvider::mint_hs256_with_public_key`] of valid claims |
    /// | `rs384` | valid claims, `alg: RS384`, properly signed by the signing key (the algorithm is pinned) |
    /// | `unknown_kid` | [`TestProvider::mint_unknown_kid`] |
    /// | `foreign_key_current_kid` | [`TestProvider::mint_foreign_key_with_current_kid`] |
    /// | `expired` | `exp` = now − 3600, `iat` = now − 7200 |
    /// | `nbf_future` | `nbf` = now + 3600 |
    /// | `wrong_iss` | `iss` = `{issuer}/other` |
    /// | `wrong_aud` | `aud` = `other-client` |
    /// | `token_use_access` | `token_use: "access"` |
    /// | `missing_exp` | no `exp` |
    /// | `tampered` | signature of valid claims for `sub`, payload naming `sub` + `-attacker` |
    /// | `truncated` | a valid token cut by [`truncate_token`] |
    /// | `huge` | valid claims plus a 1 MiB `padding` claim, validly signed: only a size bound rejects it (a gateway may refuse it as an oversized header before verifying) |
    /// | `garbage` | `not.a.jwt` |
    /// | `empty` | the empty string |
    pub fn hostile_tokens(&self, sub: &str) -> Vec<HostileToken> {
        let now = now_secs();
        let valid = || self.standard_claims(sub);
        let with = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut claims = valid();
            if let Value::Object(map) = &mut claims {
                edit(map);
            }
            claims
        };
        let kid = self.current_kid();
        let mut tampered_claims = valid();
        tampered_claims["sub"] = Value::String(format!("{sub}-attacker"));
        vec![
            HostileToken {
                name: "alg_none",
                token: self.mint_alg_none(valid()),
            },
            HostileToken {
                name: "hs256_public_key",
                token: self.mint_hs256_with_public_key(valid()),
            },
            HostileToken {
                name: "rs384",
                token: self
                    .mint_with_header(json!({"alg": "RS384", "typ": "JWT", "kid": kid}), valid()),
            },
            HostileToken {
                name: "unknown_kid",
                token: self.mint_unknown_kid(valid()),
            },
            HostileToken {
                name: "foreign_key_current_kid",
                token: self.mint_foreign_key_with_current_kid(valid()),
            },
            HostileToken {
                name: "expired",
                token: self.mint(with(&|m| {
                    m.insert("exp".into(), json!(now - 3600));
                    m.insert("iat".into(), json!(now - 7200));
                    m.insert("auth_time".into(), json!(now - 7200));
                })),
            },
            HostileToken {
                name: "nbf_future",
                token: self.mint(with(&|m| {
                    m.insert("nbf".into(), json!(now + 3600));
                })),
            },
            HostileToken {
                name: "wrong_iss",
                token: self.mint(with(&|m| {
                    m.insert("iss".into(), json!(format!("{}/other", self.inner.issuer)));
                })),
            },
            HostileToken {
                name: "wrong_aud",
                token: self.mint(with(&|m| {
                    m.insert("aud".into(), json!("other-client"));
                })),
            },
            HostileToken {
                name: "token_use_access",
                token: self.mint(with(&|m| {
                    m.insert("token_use".into(), json!("access"));
                })),
            },
            HostileToken {
                name: "missing_exp",
                token: self.mint(with(&|m| {
                    m.remove("exp");
                })),
            },
            HostileToken {
                name: "tampered",
                token: self.mint_tampered(valid(), tampered_claims),
            },
            HostileToken {
                name: "truncated",
                token: truncate_token(&self.mint(valid())),
            },
            HostileToken {
                name: "huge",
                token: self.mint_huge(valid(), HUGE_TOKEN_PADDING),
            },
            HostileToken {
                name: "garbage",
                token: "not.a.jwt".to_owned(),
            },
            HostileToken {
                name: "empty",
                token: String::new(),
            },
        ]
    }

    fn new_key(&self) -> ProviderKey {
        let index = {
            let mut state = self.inner.lock();
            state.last_pool_index += 1;
            state.last_pool_index
        };
        // Generated outside the state lock so the server keeps answering meanwhile.
        let material = pooled_key(index).expect("RSA key generation");
        ProviderKey {
            kid: random_kid(),
            material,
        }
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        // The accept loop owns every connection task (JoinSet), so aborting it closes them all.
        self.server.abort();
    }
}

impl std::fmt::Debug for TestProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProvider")
            .field("issuer", &self.inner.issuer)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Cuts a compact JWT in the middle of its signature (or of the string, if it has no second dot).
pub fn truncate_token(token: &str) -> String {
    let cut = match token.rfind('.') {
        Some(dot) => dot + 1 + (token.len() - dot - 1) / 2,
        None => token.len() / 2,
    };
    token[..cut].to_owned()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// ----- key pool -----

fn key_pool() -> &'static Mutex<Vec<Arc<KeyMaterial>>> {
    static POOL: OnceLock<Mutex<Vec<Arc<KeyMaterial>>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Vec::new()))
}

/// The pool's key `index`, generating keys up to it first.
fn pooled_key(index: usize) -> anyhow::Result<Arc<KeyMaterial>> {
    let mut pool = key_pool().lock().unwrap_or_else(|e| e.into_inner());
    while pool.len() <= index {
        pool.push(Arc::new(generate_key()?));
    }
    Ok(pool[index].clone())
}

fn never_published_key() -> Arc<KeyMaterial> {
    pooled_key(0).expect("RSA key generation")
}

fn generate_key() -> anyhow::Result<KeyMaterial> {
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("RSA-2048 key generation failed"))?;
    let pkcs8 = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("PKCS#8 encoding failed"))?;
    let private_pem = pem("PRIVATE KEY", pkcs8.as_ref());
    let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes())
        .context("jsonwebtoken rejected the generated key")?;
    let public = pair.public_key();
    let spki = public
        .as_der()
        .map_err(|_| anyhow::anyhow!("SPKI encoding failed"))?;
    Ok(KeyMaterial {
        encoding,
        n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        e: URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        public_pem: pem("PUBLIC KEY", spki.as_ref()),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

// ----- token helpers -----

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `n` random bytes, base64url without padding.
fn random_token(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A Cognito-looking kid: standard base64 (with padding) of 32 random bytes.
fn random_kid() -> String {
    STANDARD.encode(rand::random::<[u8; 32]>())
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn sign_compact(header: &Value, claims: &Value, material: &KeyMaterial) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let signature = match alg {
        "none" => String::new(),
        "HS256" | "HS384" | "HS512" => {
            let algorithm = match alg {
                "HS256" => Algorithm::HS256,
                "HS384" => Algorithm::HS384,
                _ => Algorithm::HS512,
            };
            let key = EncodingKey::from_secret(material.public_pem.as_bytes());
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm).expect("HMAC signing")
        }
        _ => {
            let algorithm = match alg {
                "RS384" => Algorithm::RS384,
                "RS512" => Algorithm::RS512,
                "PS256" => Algorithm::PS256,
                "PS384" => Algorithm::PS384,
                "PS512" => Algorithm::PS512,
                _ => Algorithm::RS256,
            };
            jsonwebtoken::crypto::sign(message.as_bytes(), &material.encoding, algorithm)
                .expect("RSA signing")
        }
    };
    format!("{message}.{signature}")
}

fn jwks_document(keys: &[ProviderKey]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "alg": "RS256",
                "e": k.material.e,
                "kid": k.kid,
                "kty": "RSA",
                "n": k.material.n,
                "use": "sig",
            })
        })
        .collect();
    json!({ "keys": keys })
}

// ----- server -----

type Body = Full<Bytes>;

async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(inner.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/.well-known/openid-configuration") => discovery(&inner),
        (&Method::GET, "/.well-known/jwks.json") => jwks(&inner).await,
        (&Method::GET, "/oauth2/authorize" | "/login") => authorize(&inner, req.uri().query()),
        (&Method::POST, "/oauth2/token") => token(&inner, req).await,
        (&Method::GET, "/logout") => logout(&inner, req.uri().query()),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_owned())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(value).unwrap_or_default(),
    )));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let mut res = json_response(
        status,
        &json!({"error": error, "error_description": description}),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"oauth2\""),
        );
    }
    res
}

fn discovery(inner: &Inner) -> Response<Body> {
    inner.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if !inner.lock().discovery_available {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let issuer = &inner.issuer;
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
            "token_endpoint": format!("{issuer}/oauth2/token"),
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "end_session_endpoint": format!("{issuer}/logout"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "claims_supported": [
                "iss", "aud", "sub", "email", "email_verified", "token_use", "auth_time",
                "iat", "exp", "nonce", "cognito:username"
            ],
        }),
    )
}

async fn jwks(inner: &Inner) -> Response<Body> {
    inner.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let mut mode = inner.jwks_mode.subscribe();
    // Held here while the mode is Hang; the sender lives in `inner`, so this never errors.
    let current = match mode.wait_for(|m| *m != JwksMode::Hang).await {
        Ok(m) => *m,
        Err(_) => JwksMode::Unavailable503,
    };
    match current {
        JwksMode::Unavailable503 => text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable"),
        _ => json_response(StatusCode::OK, &jwks_document(&inner.lock().published)),
    }
}

/// The raw (still percent-encoded) value of `name` in `query`.
fn raw_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn authorize(inner: &Inner, query: Option<&str>) -> Response<Body> {
    inner.authorize_calls.fetch_add(1, Ordering::SeqCst);
    let query = query.unwrap_or("");
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut state = inner.lock();
    state.last_authorize_params = Some(params.clone());

    if get("client_id").as_deref() != Some(inner.client_id.as_str()) {
        return text(StatusCode::BAD_REQUEST, "invalid client_id");
    }
    let Some(redirect_uri) = get("redirect_uri").filter(|r| !r.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "missing redirect_uri");
    };
    let raw_state = raw_param(query, "state");
    let redirect = |pairs: &[(&str, &str)]| {
        let mut location = redirect_uri.clone();
        location.push(if location.contains('?') { '&' } else { '?' });
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            serializer.append_pair(k, v);
        }
        location.push_str(&serializer.finish());
        if let Some(raw) = raw_state {
            location.push_str("&state=");
            location.push_str(raw);
        }
        let mut res = text(StatusCode::FOUND, "");
        match HeaderValue::from_str(&location) {
            Ok(value) => {
                res.headers_mut().insert(header::LOCATION, value);
                res
            }
            Err(_) => text(
                StatusCode::BAD_REQUEST,
                "redirect_uri is not a valid header",
            ),
        }
    };

    if get("response_type").as_deref() != Some("code") {
        return redirect(&[("error", "unsupported_response_type")]);
    }
    let code_challenge = get("code_challenge");
    match (
        code_challenge.as_deref(),
        get("code_challenge_method").as_deref(),
    ) {
        (None, None) | (Some(_), Some("S256")) => {}
        _ => {
            return redirect(&[
                ("error", "invalid_request"),
                (
                    "error_description",
                    "code_challenge needs code_challenge_method=S256",
                ),
            ])
        }
    }
    let code = random_token(32);
    let grant = CodeGrant {
        redirect_uri: redirect_uri.clone(),
        code_challenge,
        nonce: get("nonce"),
        scope: get("scope").unwrap_or_else(|| "openid email profile".to_owned()),
        user: state.user.clone(),
        auth_time: now_secs(),
        expires: Instant::now() + state.code_lifetime,
    };
    state.codes.insert(code.clone(), grant);
    drop(state);
    redirect(&[("code", &code)])
}

fn logout(inner: &Inner, query: Option<&str>) -> Response<Body> {
    inner.logout_calls.fetch_add(1, Ordering::SeqCst);
    let params: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    if let Some(uri) = params.get("logout_uri") {
        inner.lock().last_logout_uri = Some(uri.clone());
    }
    if params.get("client_id") != Some(&inner.client_id) {
        return text(StatusCode::BAD_REQUEST, "invalid client_id");
    }
    text(StatusCode::OK, "logged out")
}

/// Whether the request authenticates the client (Basic, else `client_secret_post`).
fn client_authenticated(
    inner: &Inner,
    authorization: Option<&str>,
    params: &HashMap<String, String>,
) -> bool {
    let body_id = params.get("client_id");
    if let Some(auth) = authorization {
        let Some(encoded) = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((id, secret)) = decoded.split_once(':') else {
            return false;
        };
        let unescape = |s: &str| -> String {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let id_ok = id == inner.client_id || unescape(id) == inner.client_id;
        let secret_ok = secret == inner.client_secret || unescape(secret) == inner.client_secret;
        return id_ok && secret_ok && body_id.is_none_or(|b| *b == inner.client_id);
    }
    body_id == Some(&inner.client_id) && params.get("client_secret") == Some(&inner.client_secret)
}

async fn token(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body = match Limited::new(req.into_body(), MAX_FORM_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "unreadable body",
            )
        }
    };
    let params: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let grant_type = params.get("grant_type").cloned().unwrap_or_default();
    *inner
        .lock()
        .token_calls
        .entry(grant_type.clone())
        .or_insert(0) += 1;
    if !form {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be application/x-www-form-urlencoded",
        );
    }
    if !client_authenticated(inner, authorization.as_deref(), &params) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let result = match grant_type.as_str() {
        "authorization_code" => code_grant(inner, &params),
        "refresh_token" => refresh_grant(inner, &params),
        "" => Err(("invalid_request", "missing grant_type")),
        _ => Err(("unsupported_grant_type", "unsupported grant_type")),
    };
    match result {
        Ok(body) => {
            let mut res = json_response(StatusCode::OK, &body);
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err((error, description)) => oauth_error(StatusCode::BAD_REQUEST, error, description),
    }
}

type GrantResult = Result<Value, (&'static str, &'static str)>;

fn code_grant(inner: &Inner, params: &HashMap<String, String>) -> GrantResult {
    let Some(code) = params.get("code") else {
        return Err(("invalid_request", "missing code"));
    };
    let mut state = inner.lock();
    // Consumed on any presentation.
    let Some(grant) = state.codes.remove(code) else {
        return Err(("invalid_grant", "unknown or already used code"));
    };
    if Instant::now() >= grant.expires {
        return Err(("invalid_grant", "code expired"));
    }
    if params.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err(("invalid_grant", "redirect_uri mismatch"));
    }
    if let Some(challenge) = &grant.code_challenge {
        let Some(verifier) = params.get("code_verifier") else {
            return Err(("invalid_grant", "missing code_verifier"));
        };
        if !(43..=128).contains(&verifier.len()) {
            return Err((
                "invalid_grant",
                "code_verifier must be 43 to 128 characters",
            ));
        }
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if computed != *challenge {
            return Err((
                "invalid_grant",
                "code_verifier does not match code_challenge",
            ));
        }
    }
    let refresh_token = random_token(48);
    state.refresh_tokens.insert(
        refresh_token.clone(),
        RefreshGrant {
            user: grant.user.clone(),
            scope: grant.scope.clone(),
            auth_time: grant.auth_time,
        },
    );
    let mut body = issue_tokens(
        inner,
        &state,
        &grant.user,
        &grant.scope,
        grant.auth_time,
        grant.nonce.as_deref(),
    );
    body["refresh_token"] = Value::String(refresh_token);
    Ok(body)
}

fn refresh_grant(inner: &Inner, params: &HashMap<String, String>) -> GrantResult {
    let Some(presented) = params.get("refresh_token") else {
        return Err(("invalid_request", "missing refresh_token"));
    };
    let mut state = inner.lock();
    let rotate = state.rotate_refresh_tokens;
    let (user, scope, auth_time) = match state.refresh_tokens.get(presented) {
        Some(g) => (g.user.clone(), g.scope.clone(), g.auth_time),
        None => return Err(("invalid_grant", "Invalid Refresh Token")),
    };
    let mut body = issue_tokens(inner, &state, &user, &scope, auth_time, None);
    if rotate {
        state.refresh_tokens.remove(presented);
        let fresh = random_token(48);
        state.refresh_tokens.insert(
            fresh.clone(),
            RefreshGrant {
                user,
                scope,
                auth_time,
            },
        );
        body["refresh_token"] = Value::String(fresh);
    }
    Ok(body)
}

fn issue_tokens(
    inner: &Inner,
    state: &State,
    user: &User,
    scope: &str,
    auth_time: u64,
    nonce: Option<&str>,
) -> Value {
    let now = now_secs();
    let lifetime = state.id_token_lifetime;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": state.signing.kid});
    let material = &state.signing.material;
    let access_claims = json!({
        "iss": inner.issuer,
        "client_id": inner.client_id,
        "sub": user.sub,
        "token_use": "access",
        "scope": scope,
        "auth_time": auth_time,
        "iat": now,
        "exp": now + lifetime,
        "username": user.sub,
        "jti": random_token(16),
    });
    let mut body = json!({
        "access_token": sign_compact(&header, &access_claims, material),
        "expires_in": lifetime,
        "token_type": "Bearer",
    });
    if scope.split(' ').any(|s| s == "openid") {
        let mut id_claims = json!({
            "iss": inner.issuer,
            "aud": inner.client_id,
            "sub": user.sub,
            "email": user.email,
            "email_verified": user.email_verified,
            "token_use": "id",
            "auth_time": auth_time,
            "iat": now,
            "exp": now + lifetime,
            "cognito:username": user.sub,
            "jti": random_token(16),
        });
        if let Some(nonce) = nonce {
            id_claims["nonce"] = Value::String(nonce.to_owned());
        }
        body["id_token"] = Value::String(sign_compact(&header, &id_claims, material));
    }
    body
}
