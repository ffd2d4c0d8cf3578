//! Every metric sandport exports, named in one place, and the Prometheus recorder.
//!
//! Labels come from small fixed sets (route kind, status code, reason, call, action); never
//! from conversation ids, users, paths or tokens, which belong in logs.

use std::sync::{Mutex, PoisonError};

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route` (app, runtime_path, runtime_host) and `status`.
pub const REQUESTS: &str = "sandport_requests_total";
/// Errors answered by sandport itself, by `reason` (see `error.rs`).
pub const ERRORS: &str = "sandport_errors_total";
/// Time from sending a request upstream to its response headers, by `route`.
pub const UPSTREAM_SECONDS: &str = "sandport_upstream_response_seconds";
/// Upstream connections opened (each worker keeps its own idle connections for reuse).
pub const UPSTREAM_CONNECTIONS: &str = "sandport_upstream_connections_total";
/// Docker events that touched the sandbox table, by `action`.
pub const DISCOVERY_EVENTS: &str = "sandport_discovery_events_total";
/// Full resynchronisations of the sandbox table, by `cause` (start, reconcile, reconnect).
pub const DISCOVERY_RESYNCS: &str = "sandport_discovery_resyncs_total";
/// Docker Engine API calls made, by `call`. Request handling makes none.
pub const DOCKER_API_CALLS: &str = "sandport_docker_api_calls_total";
/// Docker sessions that ended in a failure, by `reason` (api, timeout, stream_ended,
/// connection, status, list_too_large, bad_list); the store keeps its snapshot until stale.
pub const DOCKER_FAILURES: &str = "sandport_docker_failures_total";
/// HTML responses passed through without rewriting, by `reason`.
pub const REWRITE_SKIPPED: &str = "sandport_rewrite_skipped_total";
/// Sandbox `Set-Cookie` headers dropped: sandport's names, too large or too many, or any from
/// an app page on the path form.
pub const COOKIES_DROPPED: &str = "sandport_sandbox_cookies_dropped_total";
/// Failed JWKS fetches (the cached keys stay in use).
pub const JWKS_FETCH_FAILURES: &str = "sandport_jwks_fetch_failures_total";
/// Conversations refused because containers of different owners carry their id.
pub const CONTESTED_CONVERSATIONS: &str = "sandport_discovery_contested_conversations";
/// WebSocket tunnels currently open.
pub const WEBSOCKETS_OPEN: &str = "sandport_websockets_open";
/// Log lines dropped because the log writer's queue was full.
pub const LOG_LINES_DROPPED: &str = "sandport_log_lines_dropped_total";
/// Client connections refused at once because `max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "sandport_connections_refused_total";
/// Client connections currently open, by `worker` (its index).
pub const CONNECTIONS_OPEN: &str = "sandport_connections_open";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide recorder. Call once; the admin listener renders the handle and
/// a task calls `run_upkeep` so histogram samples never pile up.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    Ok(handle)
}

pub fn docker_call(call: &'static str) {
    metrics::counter!(DOCKER_API_CALLS, "call" => call).increment(1);
}

/// The status code as a static label: no allocation per request.
pub fn status_label(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        101 => "101",
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => match other / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

/// Per-request metric handles of one worker. The `metrics` macros build and hash their label
/// set on every call; these handles are looked up once and then only incremented.
pub struct RequestMetrics {
    /// `REQUESTS` by (route, status), registered on first use.
    requests: Mutex<Vec<(&'static str, &'static str, Counter)>>,
    upstream_app: Histogram,
    upstream_runtime: Histogram,
}

impl RequestMetrics {
    pub fn new() -> Self {
        Self {
            requests: Mutex::default(),
            upstream_app: metrics::histogram!(UPSTREAM_SECONDS, "route" => "app"),
            upstream_runtime: metrics::histogram!(UPSTREAM_SECONDS, "route" => "runtime"),
        }
    }

    pub fn request(&self, route: &'static str, status: &'static str) {
        // Nothing a panic could leave half-done: the list only grows.
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, counter)) = requests
            .iter()
            .find(|(r, s, _)| *r == route && *s == status)
        {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(REQUESTS, "route" => route, "status" => status);
        counter.increment(1);
        requests.push((route, status, counter));
    }

    /// Records the time to an upstream's response headers.
    pub fn upstream(&self, app: bool, seconds: f64) {
        if app {
            self.upstream_app.record(seconds);
        } else {
            self.upstream_runtime.record(seconds);
        }
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}
