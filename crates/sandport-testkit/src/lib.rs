//! Test harness shared by sandport's integration tests and benchmarks.
//!
//! - [`sandbox_server`]: the deterministic upstream that runs inside sandbox containers (binary
//!   `sandbox-server`), also servable in-process.
//! - [`docker`]: fixtures for tests against the real Docker Engine (image, network, container,
//!   readiness, sweeping).
//! - [`fake_docker`]: a fault-injecting Docker socket for faults the real engine cannot produce.
//! - [`oidc`]: an in-process OpenID Connect provider shaped like Amazon Cognito (keys, JWKS,
//!   discovery, code flow with PKCE, refresh, logout) with knobs and hostile-token minting.

pub mod docker;
pub mod fake_docker;
pub mod oidc;
pub mod sandbox_server;
