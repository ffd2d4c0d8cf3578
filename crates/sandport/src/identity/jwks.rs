//! The JWKS cache: keys by `kid`, fetched from the provider with a time and size limit,
//! refreshed periodically and at most once per [`MIN_REFETCH`] when a token names an unknown
//! key. When the provider is down the last good keys stay in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::jwt::KeySet;
use super::provider::{FetchError, Provider};

/// The shortest time between two fetches triggered by unknown keys.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How often keys are refreshed even when every `kid` is known.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
struct Document {
    keys: Vec<Key>,
}

#[derive(Debug, Deserialize)]
struct Key {
    kid: Option<String>,
    kty: String,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// Parses a JWKS document into RS256 verification keys. Keys that are not RSA signing keys
/// (an `oct` key would turn into an HMAC secret) are skipped.
pub fn parse(body: &[u8]) -> Result<KeySet, FetchError> {
    let document: Document =
        serde_json::from_slice(body).map_err(|error| FetchError::Parse(error.to_string()))?;
    let mut keys = HashMap::new();
    for key in document.keys {
        let rsa_signing = key.kty == "RSA"
            && key.usage.as_deref().is_none_or(|usage| usage == "sig")
            && key.alg.as_deref().is_none_or(|alg| alg == "RS256");
        let (Some(kid), Some(n), Some(e), true) = (key.kid, key.n, key.e, rsa_signing) else {
            continue;
        };
        if let Ok(decoding) = DecodingKey::from_rsa_components(&n, &e) {
            keys.insert(kid, Arc::new(decoding));
        }
    }
    Ok(keys)
}

/// The cached keys of one provider.
#[derive(Debug)]
pub struct Jwks {
    provider: Arc<Provider>,
    keys: ArcSwap<KeySet>,
    /// When an unknown-key fetch last ran; held across the fetch so fetches never overlap.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    pub fn new(provider: Arc<Provider>) -> Self {
        Self {
            provider,
            keys: ArcSwap::from_pointee(KeySet::new()),
            last_refetch: tokio::sync::Mutex::new(None),
        }
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        !self.keys.load().is_empty()
    }

    /// Fetches the keys now, replacing the cache on success.
    pub async fn refresh(&self) -> Result<(), FetchError> {
        let body = self.provider.fetch_jwks().await?;
        let keys = parse(&body)?;
        if keys.is_empty() {
            return Err(FetchError::Parse("no RS256 signing keys".into()));
        }
        tracing::info!(keys = keys.len(), "JWKS loaded");
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Called when a token names a key the cache lacks: refetch, unless a refetch ran less
    /// than [`MIN_REFETCH`] ago. Returns the keys to try again with.
    pub async fn refetch_for_unknown_key(&self) -> Arc<KeySet> {
        let mut last = self.last_refetch.lock().await;
        let due = last.is_none_or(|at| at.elapsed() >= MIN_REFETCH);
        if due {
            *last = Some(Instant::now());
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "JWKS refetch failed; keeping the cached keys");
                ::metrics::counter!(crate::metrics::JWKS_FETCH_FAILURES).increment(1);
            }
        }
        self.keys()
    }

    /// Keeps the keys fresh: retries quickly until the first load, then refreshes hourly.
    pub async fn run(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = match self.refresh().await {
                Ok(()) => REFRESH_EVERY,
                Err(error) => {
                    tracing::warn!(%error, "JWKS fetch failed");
                    ::metrics::counter!(crate::metrics::JWKS_FETCH_FAILURES).increment(1);
                    if self.is_loaded() {
                        Duration::from_secs(60)
                    } else {
                        Duration::from_secs(2)
                    }
                }
            };
        }
    }
}
