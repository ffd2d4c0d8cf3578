//! Talking to the OpenID provider: discovery, the JWKS document and the token endpoint. Every
//! call is bounded in time and size.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::Secret;

/// Largest provider answer read (JWKS documents and token responses are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider timed out")]
    Timeout,
    #[error("provider answered {0}")]
    Status(u16),
    #[error("provider answer unreadable: {0}")]
    Parse(String),
    #[error("provider refused: {error}")]
    Refused {
        error: String,
        description: Option<String>,
    },
}

/// Provider settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub jwks_uri: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub timeout: Duration,
}

/// The provider's endpoints, from configuration or its discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub jwks: String,
    pub end_session: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    end_session_endpoint: Option<String>,
}

/// Tokens from the token endpoint.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: Option<String>,
}

/// A client of one OpenID provider.
#[derive(Debug)]
pub struct Provider {
    config: Config,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoints: OnceCell<Endpoints>,
}

impl Provider {
    pub fn new(config: Config) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            config,
            client,
            endpoints: OnceCell::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The endpoints: configured ones win; the rest come from discovery (fetched once). The
    /// JWKS falls back to `{issuer}/.well-known/jwks.json`, where Cognito publishes it.
    pub async fn endpoints(&self) -> Result<&Endpoints, FetchError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Endpoints, FetchError> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let discovered = self.discovery_document(issuer).await?;
        endpoints_from(&self.config, issuer, discovered.as_ref())
    }

    /// The provider's discovery document, fetched only when a needed endpoint is not
    /// configured (a fully configured provider may not publish one).
    async fn discovery_document(&self, issuer: &str) -> Result<Option<Discovery>, FetchError> {
        let all_configured = self.config.authorization_endpoint.is_some()
            && self.config.token_endpoint.is_some()
            && self.config.jwks_uri.is_some();
        if all_configured {
            return Ok(None);
        }
        let url = format!("{issuer}/.well-known/openid-configuration");
        let body = self.get(&url).await?;
        serde_json::from_slice::<Discovery>(&body)
            .map(Some)
            .map_err(|error| FetchError::Parse(error.to_string()))
    }

    /// The JWKS document.
    pub async fn fetch_jwks(&self) -> Result<Bytes, FetchError> {
        let uri = match &self.config.jwks_uri {
            Some(uri) => uri.clone(),
            None => self.endpoints().await?.jwks.clone(),
        };
        self.get(&uri).await
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, FetchError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", &self.config.client_id),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Uses a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, FetchError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &self.config.client_id),
        ])
        .await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens, FetchError> {
        let endpoint = self.endpoints().await?.token.clone();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(parse_uri(&endpoint)?)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, self.basic_authorization())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| FetchError::Parse(error.to_string()))?;
        let (status, body) = self.send(request).await?;
        token_answer(status, &body)
    }

    /// The client's credentials as an HTTP Basic `Authorization` value.
    fn basic_authorization(&self) -> String {
        let credentials = format!(
            "{}:{}",
            self.config.client_id,
            self.config.client_secret.expose()
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    async fn get(&self, url: &str) -> Result<Bytes, FetchError> {
        let request = Request::get(parse_uri(url)?)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|error| FetchError::Parse(error.to_string()))?;
        let (status, body) = self.send(request).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(FetchError::Status(status.as_u16()))
        }
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes), FetchError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| FetchError::Unreachable(error.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|error| FetchError::Unreachable(error.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

/// Endpoints from configuration, each missing one taken from the discovery document.
fn endpoints_from(
    config: &Config,
    issuer: &str,
    found: Option<&Discovery>,
) -> Result<Endpoints, FetchError> {
    let pick =
        |own: &Option<String>, found: Option<&String>| own.clone().or_else(|| found.cloned());
    Ok(Endpoints {
        authorization: pick(
            &config.authorization_endpoint,
            found.and_then(|d| d.authorization_endpoint.as_ref()),
        )
        .ok_or_else(|| FetchError::Parse("no authorization_endpoint".into()))?,
        token: pick(
            &config.token_endpoint,
            found.and_then(|d| d.token_endpoint.as_ref()),
        )
        .ok_or_else(|| FetchError::Parse("no token_endpoint".into()))?,
        jwks: pick(&config.jwks_uri, found.and_then(|d| d.jwks_uri.as_ref()))
            .unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json")),
        end_session: pick(
            &config.end_session_endpoint,
            found.and_then(|d| d.end_session_endpoint.as_ref()),
        ),
    })
}

/// The token endpoint's answer: tokens, the provider's refusal, or a bare status.
fn token_answer(status: http::StatusCode, body: &[u8]) -> Result<Tokens, FetchError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|error| FetchError::Parse(error.to_string()));
    }
    match serde_json::from_slice::<ErrorAnswer>(body) {
        Ok(answer) => Err(FetchError::Refused {
            error: answer.error,
            description: answer.error_description,
        }),
        Err(_) => Err(FetchError::Status(status.as_u16())),
    }
}

fn parse_uri(text: &str) -> Result<Uri, FetchError> {
    text.parse()
        .map_err(|_| FetchError::Parse(format!("{text:?} is not a URL")))
}
