//! `routing::parse` over (host, path-and-query) pairs. Input: `host\npath-and-query`.
//!
//! Invariants: a runtime target names a well-formed conversation and a non-zero port, its
//! upstream target starts with `/`, and it round-trips (the URL rebuilt from the target routes
//! to the same target); a `/runtime/` path never reaches the app; on a runtime host, a target
//! that is not a path is refused.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sandport::routing::{self, Form, RouteError, Target};

const DOMAIN: &str = "runtime.example.com";

fuzz_target!(|data: &[u8]| {
    let (host, target) = common::split_line(data);
    let (Ok(host), Ok(target)) = (std::str::from_utf8(host), std::str::from_utf8(target)) else {
        return;
    };
    let config = routing::Config {
        runtime_domain: DOMAIN.to_owned(),
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match routing::parse(&config, host, target) {
        Ok(Target::Runtime(runtime)) => {
            assert!(routing::ConversationId::parse(runtime.conversation.as_str()).is_some());
            assert_ne!(runtime.port, 0);
            assert!(runtime.upstream_target.starts_with('/'), "{runtime:?}");
            match runtime.form {
                Form::Host => {
                    assert!(host.is_ascii());
                    let expected = if target.is_empty() { "/" } else { target };
                    assert_eq!(runtime.upstream_target, expected);
                    let origin = routing::build_runtime_origin(
                        routing::Scheme::Https,
                        DOMAIN,
                        None,
                        &runtime.conversation,
                        runtime.port,
                    );
                    let rebuilt_host = origin.strip_prefix("https://").expect("scheme");
                    let again = routing::parse(&config, rebuilt_host, target);
                    assert_eq!(again, Ok(Target::Runtime(runtime.clone())));
                }
                Form::Path => {
                    assert!(path.starts_with("/runtime/"));
                    assert!(target.ends_with(runtime.upstream_target.trim_start_matches('/')));
                    let rebuilt = format!(
                        "/runtime/{}/{}{}",
                        runtime.conversation, runtime.port, runtime.upstream_target
                    );
                    let again = routing::parse(&config, "app.example.com", &rebuilt);
                    assert_eq!(again, Ok(Target::Runtime(runtime.clone())), "{rebuilt:?}");
                }
            }
        }
        Ok(Target::App) => {
            assert!(!path.starts_with("/runtime/"), "{target:?} reached the app");
            assert!(
                !path.starts_with("/RUNTIME/") && !path.starts_with("//runtime/"),
                "{target:?} reached the app"
            );
        }
        Err(RouteError::MalformedRuntimePath) => {
            if routing::parse_runtime_host(DOMAIN, host).is_some() {
                // A runtime host with a target that is not a path (`*`).
                assert!(!target.is_empty() && !target.starts_with('/'), "{target:?}");
            } else {
                // under `/runtime/`, or a look-alike (`//runtime/`, `/RUNTIME/`, `/runtime;x/`)
                let first = path.trim_start_matches('/').split(['/', ';']).next();
                assert!(
                    path.starts_with("/runtime/")
                        || (path.starts_with('/')
                            && path != "/runtime"
                            && first.is_some_and(|s| s.eq_ignore_ascii_case("runtime"))),
                    "{target:?}"
                );
            }
        }
    }
});
