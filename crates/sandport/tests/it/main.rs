//! Integration tests: the real `sandport` binary against real sockets and the real Docker Engine.
#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed setup step must stop the test"
)]

/// Launching the gateway binary and talking HTTP to it.
mod harness;

/// A real browser: headless Chromium on a conversation page reaching its sandbox container.
mod browser;
/// HTTP/1.1 request framing and request headers, byte-exact, against a recording upstream.
mod catalogue_framing;
/// The hardening catalogue's identity cases: header spellings, bearer tokens, ambiguity,
/// placeholder owners, hostile claims and kids, cold start without keys, cross-site requests.
mod catalogue_identity;
/// Per-sandbox limits: 429 past the limit, other sandboxes unaffected.
mod catalogue_limits;
/// Hostile input to the parsers on the wire: a clear 4xx, never a panic.
mod catalogue_parsing;
/// Streams that stall and sandboxes that die under open streams: bounded waits, aborts.
mod catalogue_streams;
/// The hardening catalogue's JWT cases: `alg` spellings, unknown-kid floods, embedded key
/// headers, time claims, issuers, broken and tampered tokens.
mod catalogue_tokens;
/// Upstreams that misbehave on the wire: bad heads, fake responses, resets, 1xx floods.
mod catalogue_upstream;
/// CLI commands: check-config, routes, explain.
mod cli;
/// Docker lifecycle: restarts, removal, an unreachable Docker.
mod docker_lifecycle;
/// Docker discovery end to end: both route forms, ownership, errors, WebSocket, SSE, big bodies.
mod docker_live;
/// Lifecycle: the drain on the wire (WebSocket 1001, HTTP/2 GOAWAY), a restart on a passed
/// socket, idle keep-alive connections reaped.
mod lifecycle;
/// The listener: TLS, slow clients, the drain with open tunnels, access logs.
mod listener;
/// OIDC mode: login, refresh, logout, JWKS, hostile tokens, runtime sessions, browser guards.
mod oidc;
/// Response shaping: sandbox headers and cookies, script injection, compressed pages.
mod shaping;
/// The static backend, without Docker: routing, identity, streaming, limits, listeners.
mod static_backend;
/// Upstream connections: reuse across requests, abandoned bodies, upstream closes.
mod upstream;
