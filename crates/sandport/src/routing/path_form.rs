//! The path form: `/runtime/{conversation}/{port}[/rest][?query]`.

use super::{parse_port, ConversationId, Form, RouteError, RuntimeTarget};

const PREFIX: &str = "/runtime/";

/// Parses a raw request-target. `None` means the path is not under `/runtime/` at all;
/// `Some(Err)` means it is, but is not well formed (and must not reach the app).
pub fn parse_runtime_path(path_and_query: &str) -> Option<Result<RuntimeTarget, RouteError>> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    match path.strip_prefix(PREFIX) {
        Some(rest) => Some(parse_after_prefix(rest, query)),
        None if looks_like_runtime_path(path) => Some(Err(RouteError::MalformedRuntimePath)),
        None => None,
    }
}

/// `//runtime/…`, `/RUNTIME/…`, `/runtime;x/…`: meant for a sandbox, or a probe for a router
/// that folds case or empty segments. Never the app's, whose answer (its page, 200) would
/// hide the mistake (catalogue 41, 43). Plain `/runtime` is an ordinary app path.
fn looks_like_runtime_path(path: &str) -> bool {
    if path == "/runtime" || !path.starts_with('/') {
        return false;
    }
    let first = path
        .trim_start_matches('/')
        .split(['/', ';'])
        .next()
        .unwrap_or("");
    first.eq_ignore_ascii_case("runtime")
}

fn parse_after_prefix(rest: &str, query: Option<&str>) -> Result<RuntimeTarget, RouteError> {
    let (conversation, rest) = rest
        .split_once('/')
        .ok_or(RouteError::MalformedRuntimePath)?;
    let conversation =
        ConversationId::parse(conversation).ok_or(RouteError::MalformedRuntimePath)?;
    let (port, upstream_path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let port = parse_port(port).ok_or(RouteError::MalformedRuntimePath)?;
    let mut upstream_target =
        String::with_capacity(upstream_path.len() + query.map_or(0, |q| q.len() + 1));
    upstream_target.push_str(upstream_path);
    if let Some(query) = query {
        upstream_target.push('?');
        upstream_target.push_str(query);
    }
    Ok(RuntimeTarget {
        form: Form::Path,
        conversation,
        port,
        upstream_target,
    })
}
