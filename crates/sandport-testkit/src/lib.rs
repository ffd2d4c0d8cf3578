//! Test harness shared by sandport's integration tests and benchmarks.
//!
//! - [`sandbox_server`]: the deterministic upstream that runs inside sandbox containers (binary
//!   `sandbox-server`), also servable in-process.
//! - [`docker`]: fixtures for tests against the real Docker Engine (image, network, container,
//!   readiness, sweeping).

pub mod docker;
pub mod sandbox_server;
