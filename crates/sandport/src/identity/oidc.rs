//! OIDC mode: login with the authorization-code flow and PKCE, ID-token cookies verified on
//! every request (with inline refresh), logout, and per-runtime sessions.
//!
//! The platform tokens (`id_token`, `refresh_token`) live in host-only cookies on the app host
//! by default. Runtime hosts never receive them: a browser arriving at a runtime host without a
//! runtime session is sent to the app host, which (for a logged-in owner) sends it back with a
//! one-time code, exchanged for a short-lived cookie valid on that runtime host only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::credentials::{self, Refusal};
use super::jwks::Jwks;
use super::jwt::{self, Rules, TokenError, Verified};
use super::provider::{FetchError, Provider};
use super::session::{pkce_challenge, random_token, CookiePolicy, SigningKey};
use super::{cookie_values, Principal, UserId};
use crate::body::Body;
use crate::respond;

pub const ID_TOKEN_COOKIE: &str = "id_token";
pub const REFRESH_TOKEN_COOKIE: &str = "refresh_token";
pub const LOGIN_COOKIE: &str = "sandport_login";
pub const RUNTIME_COOKIE: &str = "sandport_runtime";
pub const CALLBACK_PATH: &str = "/_callback";
pub const LOGOUT_PATH: &str = "/_logout";
pub const REFRESH_PATH: &str = "/_token/refresh";
/// On the app host: start a runtime session (`?host=…&rd=…`).
pub const RUNTIME_AUTH_PATH: &str = "/_sandport/runtime-auth";
/// On a runtime host: redeem a one-time code (`?code=…&rd=…`).
pub const RUNTIME_SESSION_PATH: &str = "/_sandport/runtime-session";

const LOGIN_TTL_SECS: u64 = 600;
const CODE_TTL: Duration = Duration::from_secs(30);
const ID_COOKIE_MAX_AGE: u64 = 86_400;
const REFRESH_COOKIE_MAX_AGE: u64 = 30 * 86_400;
/// Outstanding one-time codes kept at most (older ones are dropped first).
const MAX_PENDING_CODES: usize = 10_000;
/// Verified tokens remembered at most.
const MAX_CACHED_TOKENS: usize = 10_000;

/// OIDC settings and state.
#[derive(Debug)]
pub struct Oidc {
    pub provider: Arc<Provider>,
    pub jwks: Arc<Jwks>,
    pub rules: Rules,
    pub scopes: String,
    /// Signs login state and runtime sessions.
    pub session_key: SigningKey,
    /// Platform cookies (`id_token`, `refresh_token`, the login cookie).
    pub cookies: CookiePolicy,
    /// Runtime-session cookies: host-only, and `SameSite=None` over https so the app's pages
    /// may call their runtimes.
    pub runtime_cookies: CookiePolicy,
    pub runtime_session_secs: u64,
    pub codes: Mutex<HashMap<String, PendingCode>>,
    /// Tokens already verified, by SHA-256, until they expire (RSA verification is the
    /// costliest step of a request). An entry counts only while its key is still published.
    pub verified: Mutex<HashMap<[u8; 32], (String, Verified)>>,
}

/// A one-time code waiting to be redeemed on one runtime host.
#[derive(Debug)]
pub struct PendingCode {
    host: String,
    principal: Principal,
    issued: Instant,
}

/// The outcome of authenticating a request on the app host.
#[derive(Debug)]
pub enum AppAuth {
    /// `set_cookies` carries refreshed platform cookies to add to the response.
    Authenticated {
        principal: Principal,
        set_cookies: Vec<String>,
    },
    Anonymous,
    /// The credentials were refused as sent (ambiguous, or not verifiable yet).
    Refused(Refusal),
}

/// Why a login endpoint (`/_callback`, `/_logout`, `/_token/refresh`) refused. `error.rs`
/// renders each with the previous edge's exact status and body.
#[derive(Debug, thiserror::Error)]
pub enum LoginRefusal {
    #[error("callback without an authorization code")]
    MissingCode,
    #[error("callback with an invalid or expired login state")]
    BadLoginState,
    #[error("the code exchange gave no ID token")]
    NoTokens,
    #[error("the ID token from the code exchange was refused")]
    TokenRefused,
    #[error("logout requested by another site")]
    CrossSiteLogout,
    #[error("token refresh with a method other than POST")]
    RefreshMethod,
    #[error("token refresh without a refresh token")]
    NoRefreshToken,
    /// The provider refused the refresh token: the platform cookies are cleared.
    #[error("the provider refused the refresh: {details}")]
    RefreshRefused {
        details: String,
        clear_cookies: Vec<String>,
    },
    #[error("the refresh answer had no ID token")]
    RefreshNoIdToken,
    #[error("the refreshed ID token was refused")]
    RefreshTokenRefused,
    #[error("the token refresh failed")]
    RefreshFailed,
}

#[derive(Debug, Serialize, Deserialize)]
struct LoginState {
    /// Nonce, also in the login cookie and the ID token.
    n: String,
    /// Where to return after login (a same-origin path).
    r: String,
    exp: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RuntimeSession {
    sub: String,
    email: Option<String>,
    host: String,
    exp: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl Oidc {
    /// Verifies every `id_token` cookie and the bearer token, which must all name one user
    /// (see `credentials`); when none verifies and a refresh token is present, refreshes
    /// inline. Until the provider's keys are loaded nothing can be verified, and every request
    /// is refused as such rather than as unauthenticated.
    pub async fn authenticate(&self, headers: &HeaderMap) -> AppAuth {
        match self.verified_principal(headers).await {
            Ok(Some(principal)) => AppAuth::Authenticated {
                principal,
                set_cookies: Vec::new(),
            },
            Ok(None) => self.refresh_inline(headers).await,
            Err(refusal) => AppAuth::Refused(refusal),
        }
    }

    async fn verified_principal(&self, headers: &HeaderMap) -> Result<Option<Principal>, Refusal> {
        if !self.jwks.is_loaded() {
            return Err(Refusal::KeysUnavailable);
        }
        let bearer = credentials::bearer(headers)?;
        let tokens: Vec<&str> = cookie_values(headers, ID_TOKEN_COOKIE)
            .chain(bearer)
            .take(credentials::MAX_CREDENTIALS + 1)
            .collect();
        if tokens.len() > credentials::MAX_CREDENTIALS {
            return Err(Refusal::Ambiguous);
        }
        let now = unix_now();
        let mut verified = Vec::with_capacity(tokens.len());
        for token in tokens {
            match self.verify(token, now).await {
                Ok(found) => verified.push(found.principal),
                Err(error) => tracing::debug!(%error, "ID token refused"),
            }
        }
        credentials::one_principal(verified)
    }

    async fn refresh_inline(&self, headers: &HeaderMap) -> AppAuth {
        let Some(refresh_token) = cookie_values(headers, REFRESH_TOKEN_COOKIE).next() else {
            return AppAuth::Anonymous;
        };
        match self.refresh_tokens(refresh_token, unix_now()).await {
            Ok((verified, set_cookies)) => AppAuth::Authenticated {
                principal: verified.principal,
                set_cookies,
            },
            Err(_) => AppAuth::Anonymous,
        }
    }

    async fn verify(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(verified) = self.cached(&digest, now) {
            return Ok(verified);
        }
        let verified = match jwt::verify(token, &self.jwks.keys(), &self.rules, now) {
            Err(TokenError::UnknownKey) => {
                let keys = self.jwks.refetch_for_unknown_key().await;
                jwt::verify(token, &keys, &self.rules, now)
            }
            other => other,
        }?;
        if let Ok(kid) = jwt::key_id(token) {
            let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.retain(|_, (_, entry)| entry.expires_at + self.rules.clock_skew_secs > now);
                if cache.len() >= MAX_CACHED_TOKENS {
                    cache.clear();
                }
            }
            cache.insert(digest, (kid, verified.clone()));
        }
        Ok(verified)
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Verified> {
        let cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let (kid, verified) = cache.get(digest)?;
        let fresh = verified.expires_at + self.rules.clock_skew_secs > now;
        (fresh && self.jwks.keys().contains_key(kid)).then(|| verified.clone())
    }

    async fn refresh_tokens(
        &self,
        refresh_token: &str,
        now: u64,
    ) -> Result<(Verified, Vec<String>), RefreshError> {
        let tokens = self.provider.refresh(refresh_token).await?;
        let id_token = tokens.id_token.ok_or(RefreshError::NoIdToken)?;
        let verified = self
            .verify(&id_token, now)
            .await
            .map_err(RefreshError::Verification)?;
        let mut cookies = vec![self.cookies.set_cookie(
            ID_TOKEN_COOKIE,
            &id_token,
            Some(ID_COOKIE_MAX_AGE),
            false,
        )];
        if let Some(rotated) = tokens.refresh_token.filter(|t| t != refresh_token) {
            cookies.push(self.cookies.set_cookie(
                REFRESH_TOKEN_COOKIE,
                &rotated,
                Some(REFRESH_COOKIE_MAX_AGE),
                false,
            ));
        }
        Ok((verified, cookies))
    }

    /// Whether an `Authorization` value carries a token of this provider (never forwarded).
    pub fn is_own_authorization(&self, value: &HeaderValue) -> bool {
        credentials::bearer_token(value)
            .and_then(unverified_issuer)
            .is_some_and(|iss| names_issuer(&iss, &self.rules.issuer))
    }

    /// Sends a browser to the provider's login page; it comes back to `/_callback` on
    /// `origin` and then to `return_to`.
    pub async fn login_redirect(
        &self,
        origin: &str,
        return_to: &str,
    ) -> Result<Response<Body>, Refusal> {
        let endpoints = match self.provider.endpoints().await {
            Ok(endpoints) => endpoints,
            Err(error) => {
                tracing::warn!(%error, "OpenID provider unavailable");
                return Err(Refusal::ProviderUnavailable);
            }
        };
        let nonce = random_token();
        let verifier = random_token();
        let state = self.session_key.sign(&LoginState {
            n: nonce.clone(),
            r: safe_return_path(return_to).to_owned(),
            exp: unix_now() + LOGIN_TTL_SECS,
        });
        let Some(state) = state else {
            return Err(Refusal::LoginStateUnsigned);
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.rules.client_id)
            .append_pair("redirect_uri", &format!("{origin}{CALLBACK_PATH}"))
            .append_pair("scope", &self.scopes)
            .append_pair("state", &state)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("nonce", &nonce)
            .finish();
        let location = with_query(&endpoints.authorization, &query);
        let login_cookie = self.cookies.set_cookie(
            LOGIN_COOKIE,
            &format!("{nonce}.{verifier}"),
            Some(LOGIN_TTL_SECS),
            true,
        );
        Ok(respond::redirect(&location, &[login_cookie]))
    }

    /// `/_callback`: checks the state against the login cookie, exchanges the code, verifies
    /// the ID token and its nonce, sets the platform cookies and returns to a same-origin path.
    pub async fn callback(
        &self,
        origin: &str,
        query: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, LoginRefusal> {
        let params = query_params(query);
        let code = params.get("code").ok_or(LoginRefusal::MissingCode)?;
        let state = params
            .get("state")
            .and_then(|state| self.session_key.verify::<LoginState>(state));
        let login = cookie_values(headers, LOGIN_COOKIE)
            .find_map(|value| value.split_once('.'))
            .filter(|(nonce, _)| state.as_ref().is_some_and(|s| s.n == *nonce));
        let (Some(state), Some((nonce, verifier))) = (state, login) else {
            return Err(LoginRefusal::BadLoginState);
        };
        let redirect_uri = format!("{origin}{CALLBACK_PATH}");
        let tokens = self
            .provider
            .exchange_code(code, &redirect_uri, verifier)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "code exchange failed");
                LoginRefusal::NoTokens
            })?;
        let id_token = tokens.id_token.ok_or(LoginRefusal::NoTokens)?;
        self.verify_login_token(&id_token, nonce).await?;
        let cookies = self.logged_in_cookies(&id_token, tokens.refresh_token.as_deref());
        Ok(respond::redirect(safe_return_path(&state.r), &cookies))
    }

    /// The platform cookies after a login; the login cookie has served its purpose.
    fn logged_in_cookies(&self, id_token: &str, refresh_token: Option<&str>) -> Vec<String> {
        let mut cookies = vec![
            self.cookies
                .set_cookie(ID_TOKEN_COOKIE, id_token, Some(ID_COOKIE_MAX_AGE), false),
            self.cookies.set_cookie(LOGIN_COOKIE, "", Some(0), true),
        ];
        if let Some(refresh_token) = refresh_token {
            cookies.push(self.cookies.set_cookie(
                REFRESH_TOKEN_COOKIE,
                refresh_token,
                Some(REFRESH_COOKIE_MAX_AGE),
                false,
            ));
        }
        cookies
    }

    /// The ID token a code exchange returned must verify and carry this login's nonce.
    async fn verify_login_token(&self, id_token: &str, nonce: &str) -> Result<(), LoginRefusal> {
        match self.verify(id_token, unix_now()).await {
            Ok(verified) if verified.nonce.as_deref() == Some(nonce) => Ok(()),
            Ok(_) => Err(LoginRefusal::TokenRefused),
            Err(error) => {
                tracing::warn!(%error, "ID token from the code exchange refused");
                Err(LoginRefusal::TokenRefused)
            }
        }
    }

    /// `/_logout`: clears the platform cookies and goes to the provider's logout page. Only a
    /// same-origin request (or one the user typed) may log out, so other sites cannot.
    pub async fn logout(
        &self,
        origin: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, LoginRefusal> {
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let same_origin_post = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| o == origin);
        if !(matches!(fetch_site, Some("same-origin" | "none")) || same_origin_post) {
            return Err(LoginRefusal::CrossSiteLogout);
        }
        let location = match self
            .provider
            .endpoints()
            .await
            .ok()
            .and_then(|e| e.end_session.clone())
        {
            Some(end_session) => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("client_id", &self.rules.client_id)
                    .append_pair("logout_uri", &format!("{origin}/"))
                    .finish();
                with_query(&end_session, &query)
            }
            None => "/".to_owned(),
        };
        Ok(respond::redirect(&location, &self.cleared_cookies()))
    }

    /// `Set-Cookie` values that remove the platform cookies.
    fn cleared_cookies(&self) -> Vec<String> {
        vec![
            self.cookies.set_cookie(ID_TOKEN_COOKIE, "", Some(0), false),
            self.cookies
                .set_cookie(REFRESH_TOKEN_COOKIE, "", Some(0), false),
        ]
    }

    /// `/_token/refresh` (POST): the previous edge's JSON contract.
    pub async fn refresh_endpoint(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, LoginRefusal> {
        if method != Method::POST {
            return Err(LoginRefusal::RefreshMethod);
        }
        let refresh_token = cookie_values(headers, REFRESH_TOKEN_COOKIE)
            .next()
            .ok_or(LoginRefusal::NoRefreshToken)?;
        match self.refresh_tokens(refresh_token, unix_now()).await {
            Ok((_, cookies)) => {
                let body = format!(r#"{{"success":true,"expiresIn":{ID_COOKIE_MAX_AGE}}}"#);
                Ok(respond::with_cookies(respond::json_ok(body), &cookies))
            }
            Err(RefreshError::Provider(FetchError::Refused { error, description })) => {
                Err(LoginRefusal::RefreshRefused {
                    details: description.unwrap_or(error),
                    clear_cookies: self.cleared_cookies(),
                })
            }
            Err(RefreshError::NoIdToken) => Err(LoginRefusal::RefreshNoIdToken),
            Err(RefreshError::Verification(_)) => Err(LoginRefusal::RefreshTokenRefused),
            Err(RefreshError::Provider(_)) => Err(LoginRefusal::RefreshFailed),
        }
    }

    /// On the app host, for an owner of the runtime host `auth` names: a redirect there with
    /// a fresh one-time code to redeem.
    pub fn runtime_session_redirect(
        &self,
        principal: &Principal,
        auth: &RuntimeAuth,
        scheme: impl std::fmt::Display,
    ) -> Response<Body> {
        let code = self.issue_runtime_code(principal, &auth.host_name);
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("rd", &auth.return_to)
            .finish();
        let location = format!(
            "{scheme}://{}{RUNTIME_SESSION_PATH}?{query}",
            auth.authority
        );
        respond::redirect(&location, &[])
    }

    /// On a runtime host: redeems the one-time code in `query` into a runtime-session cookie
    /// and returns to the page the login started from. `None` when the code is not valid for
    /// this host.
    pub fn redeem_runtime_session(&self, query: &str, host_name: &str) -> Option<Response<Body>> {
        let params = query_params(query);
        let principal = self.redeem_runtime_code(params.get("code")?, host_name)?;
        let cookie = self.runtime_session_cookie(&principal, host_name)?;
        let return_to = safe_return_path(params.get("rd").map_or("/", String::as_str));
        Some(respond::redirect(return_to, &[cookie]))
    }

    /// Issues a one-time code for `principal` to start a session on `runtime_host`.
    pub fn issue_runtime_code(&self, principal: &Principal, runtime_host: &str) -> String {
        let code = random_token();
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        codes.retain(|_, pending| pending.issued.elapsed() < CODE_TTL);
        if codes.len() >= MAX_PENDING_CODES {
            codes.clear();
        }
        codes.insert(
            code.clone(),
            PendingCode {
                host: runtime_host.to_owned(),
                principal: principal.clone(),
                issued: Instant::now(),
            },
        );
        code
    }

    /// Redeems a code on `host`: once, within its lifetime, on the host it was issued for.
    pub fn redeem_runtime_code(&self, code: &str, host: &str) -> Option<Principal> {
        let pending = self
            .codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(code)?;
        (pending.host == host && pending.issued.elapsed() < CODE_TTL).then_some(pending.principal)
    }

    /// The `Set-Cookie` of a runtime session for `principal` on `host`.
    pub fn runtime_session_cookie(&self, principal: &Principal, host: &str) -> Option<String> {
        let token = self.session_key.sign(&RuntimeSession {
            sub: principal.user_id.to_string(),
            email: principal.email.clone(),
            host: host.to_owned(),
            exp: unix_now() + self.runtime_session_secs,
        })?;
        Some(self.runtime_cookies.set_cookie(
            RUNTIME_COOKIE,
            &token,
            Some(self.runtime_session_secs),
            true,
        ))
    }

    /// The principal of a runtime session cookie valid for `host`.
    pub fn authenticate_runtime(&self, headers: &HeaderMap, host: &str) -> Option<Principal> {
        cookie_values(headers, RUNTIME_COOKIE).find_map(|token| {
            let session = self.session_key.verify::<RuntimeSession>(token)?;
            let user_id = UserId::parse(session.sub).ok()?;
            (session.host == host).then_some(Principal {
                user_id,
                email: session.email,
                email_verified: None,
            })
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Provider(#[from] FetchError),
    #[error("no id_token in the refresh answer")]
    NoIdToken,
    #[error("refreshed token refused: {0}")]
    Verification(TokenError),
}

/// What `/_sandport/runtime-auth?host=…&rd=…` asks for: a session on the runtime host
/// `authority` (as the browser spells it), returning to `return_to` there.
#[derive(Debug)]
pub struct RuntimeAuth {
    pub authority: String,
    /// `authority` without its port, lowercased.
    pub host_name: String,
    return_to: String,
}

impl RuntimeAuth {
    pub fn parse(query: &str) -> Self {
        let params = query_params(query);
        let authority = params.get("host").cloned().unwrap_or_default();
        let host_name = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(name, _)| name)
            .to_ascii_lowercase();
        let return_to = safe_return_path(params.get("rd").map_or("/", String::as_str)).to_owned();
        Self {
            authority,
            host_name,
            return_to,
        }
    }
}

/// A query string's parameters; of a repeated name, the last wins.
fn query_params(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `url` with `query` appended, whether or not it already has a query.
fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// A return path that stays on this origin: one leading `/`, never `//` or `/\`, no control
/// characters or backslashes, and none of those starts once percent-decoded (see
/// [`leads_off_origin`]). Anything else returns to `/`.
pub fn safe_return_path(path: &str) -> &str {
    let safe = path.starts_with('/')
        && !path.chars().any(|c| c.is_control() || c == '\\')
        && !leads_off_origin(path);
    if safe {
        path
    } else {
        "/"
    }
}

/// How many times a return path is percent-decoded to look for a hidden `//`: the layers an
/// app puts behind sandport may each decode it once more.
const DECODE_ROUNDS: usize = 3;

/// Whether `path`, or what it decodes to in up to [`DECODE_ROUNDS`] rounds, starts with `//`
/// or `/\` once tabs and newlines are dropped (browsers drop them from URLs): a path that
/// some layer would turn into a redirect to another host. Still changing after the last
/// round counts as leading off.
fn leads_off_origin(path: &str) -> bool {
    let mut current = path.as_bytes().to_vec();
    for _ in 0..=DECODE_ROUNDS {
        let mut visible = current
            .iter()
            .filter(|byte| !matches!(byte, b'\t' | b'\n' | b'\r'));
        if visible.next() == Some(&b'/') && matches!(visible.next(), Some(b'/' | b'\\')) {
            return true;
        }
        let decoded = percent_decoded(&current);
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    true
}

/// `bytes` with every `%XX` (two hex digits) decoded; other bytes as they are.
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = match tail {
            [high, low, ..] if byte == b'%' => hex(*high).zip(hex(*low)),
            _ => None,
        };
        match escaped {
            Some((high, low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    out
}

/// Whether an `iss` value names `issuer`: as the string, or in a list (never verified, but
/// still not to be forwarded).
fn names_issuer(iss: &serde_json::Value, issuer: &str) -> bool {
    match iss {
        serde_json::Value::String(one) => one == issuer,
        serde_json::Value::Array(many) => many.iter().any(|one| one.as_str() == Some(issuer)),
        _ => false,
    }
}

/// The `iss` claim of a token, without verifying it (only to recognise our own tokens).
fn unverified_issuer(token: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    if token.len() > jwt::MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_on_this_origin() {
        for (input, expected) in [
            ("/conversations/1?x=2", "/conversations/1?x=2"),
            ("/", "/"),
            ("//evil.example", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("evil", "/"),
            ("", "/"),
            ("/a\r\nSet-Cookie: x=1", "/"),
            ("/a\\b", "/"),
            ("/\t/evil.example", "/"),
            ("/%2F%2Fevil.example", "/"),
            ("/%2f%5cevil.example", "/"),
            ("/%09/evil.example", "/"),
            ("/%252F%252Fevil.example", "/"),
            ("/%25252525252F/evil.example", "/"),
            ("javascript:alert(1)", "/"),
            ("/a%2F%2Fb?next=%2F%2Fx", "/a%2F%2Fb?next=%2F%2Fx"),
            ("/100%", "/100%"),
        ] {
            assert_eq!(safe_return_path(input), expected, "{input:?}");
        }
    }

    #[test]
    fn issuers_are_read_without_trusting_the_token() {
        use base64::Engine as _;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp"}"#);
        let iss = unverified_issuer(&format!("x.{payload}.y")).unwrap();
        assert!(names_issuer(&iss, "https://idp"));
        assert!(!names_issuer(&iss, "https://idp/"));
        assert!(names_issuer(
            &serde_json::json!(["a", "https://idp"]),
            "https://idp"
        ));
        assert_eq!(unverified_issuer("garbage"), None);
    }
}
