//! sandport: the runtime gateway for AI-agent sandbox containers.
//!
//! Modules in reading order:
//! - [`config`]: the file, environment overrides, defaults and validation;
//! - [`routing`]: host and raw path → app or a sandbox port (pure);
//! - [`identity`]: who is calling (token or trusted-header mode; pure);
//! - [`discovery`]: the in-memory sandbox snapshot and the backends that feed it;
//! - [`authz`]: ownership (pure);
//! - [`body`]: the streamed body type (depends on nothing in the crate);
//! - [`respond`]: the one renderer of sandport's own responses and their protective headers;
//! - [`edge`]: CORS and the `Origin` checks (pure);
//! - [`proxy`]: the request pipeline, header rules, forwarding and WebSocket tunnels;
//! - [`rewrite`]: response shaping (security headers, cookies, script injection, URLs);
//! - [`error`]: the one mapping from failures to responses;
//! - [`server`] and [`admin`]: the listeners; [`app`]: the wiring and the drain;
//! - [`metrics`], [`telemetry`]: what is counted and logged;
//! - [`inspect`]: the `routes` and `explain` commands.

pub mod admin;
pub mod app;
pub mod authz;
pub mod body;
pub mod config;
pub mod discovery;
pub mod edge;
pub mod error;
pub mod identity;
pub mod inspect;
pub mod metrics;
pub mod proxy;
pub mod respond;
pub mod rewrite;
pub mod routing;
pub mod server;
pub mod telemetry;
