//! Test harness shared by sandport's integration tests and benchmarks.
//!
//! - [`sandbox_server`]: the deterministic upstream that runs inside sandbox containers (binary
//!   `sandbox-server`), also servable in-process.
//! - [`docker`]: fixtures for tests against the real Docker Engine (image, network, container,
//!   readiness, sweeping).
//! - [`fake_docker`]: a fault-injecting Docker socket for faults the real engine cannot produce.
//! - [`oidc`]: an in-process OpenID Connect provider shaped like Amazon Cognito (keys, JWKS,
//!   discovery, code flow with PKCE, refresh, logout) with knobs and hostile-token minting.
//! - [`eventually`]: waiting on an observable with a deadline.

use std::time::{Duration, Instant};

pub mod docker;
pub mod fake_docker;
pub mod oidc;
pub mod sandbox_server;

/// Polls `check` until it returns true or `limit` passes; returns the time it took. The one
/// way tests wait: on an observable, with a deadline (the poll interval is not the wait).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
