use super::*;

const CID: &str = "7c15e423fbd44f8f8bf483a481daa4d9";

fn config() -> Config {
    Config {
        runtime_domain: "runtime.example.com".into(),
    }
}

/// One case: host, raw target, expected (form, port, upstream target) or app / malformed.
fn check(host: &str, target: &str, expect: &str) {
    let got = match parse(&config(), host, target) {
        Ok(Target::App) => "app".to_owned(),
        Ok(Target::Runtime(t)) => {
            assert_eq!(t.conversation.as_str(), CID, "{host} {target}");
            format!("{} {} {}", t.form.as_str(), t.port, t.upstream_target)
        }
        Err(RouteError::MalformedRuntimePath) => "malformed".to_owned(),
    };
    assert_eq!(got, expect, "host={host:?} target={target:?}");
}

#[test]
fn path_form_cases() {
    let h = "example.com";
    check(h, &format!("/runtime/{CID}/5000"), "path 5000 /");
    check(h, &format!("/runtime/{CID}/5000/"), "path 5000 /");
    check(h, &format!("/runtime/{CID}/5000?x=1"), "path 5000 /?x=1");
    check(
        h,
        &format!("/runtime/{CID}/5000/add?x=1&y=%20"),
        "path 5000 /add?x=1&y=%20",
    );
    check(
        h,
        &format!("/runtime/{CID}/8000/a%2Fb//c/../d"),
        "path 8000 /a%2Fb//c/../d",
    );
    check(h, &format!("/runtime/{CID}/1/"), "path 1 /");
    check(h, &format!("/runtime/{CID}/65535/x"), "path 65535 /x");
    check(h, &format!("/runtime/{CID}/5000/?"), "path 5000 /?");
    check(h, "/", "app");
    check(h, "/api/conversations?x=1", "app");
    check(h, "/runtimes/x", "app");
    check(h, "/runtime", "app");
}

#[test]
fn malformed_runtime_paths_never_reach_the_app() {
    let h = "example.com";
    for target in [
        "/runtime/".to_owned(),
        "/runtime/5000/".to_owned(),
        format!("/runtime/{CID}"),
        format!("/runtime/{CID}/"),
        format!("/runtime/{CID}/0/"),
        format!("/runtime/{CID}/65536/"),
        format!("/runtime/{CID}/05000/"),
        format!("/runtime/{CID}/+5000/"),
        format!("/runtime/{CID}/-1/"),
        format!("/runtime/{CID}/5000x/"),
        format!("/runtime/{CID}/99999999999999999999/"),
        format!("/runtime/{}/5000/", CID.to_uppercase()),
        "/runtime/7c15e423-fbd4-4f8f-8bf4-83a481daa4d9/5000/".to_owned(),
        format!("/runtime/{}/5000/", &CID[..31]),
        format!("/runtime/{CID}0/5000/"),
        "/runtime//5000/".to_owned(),
        format!("/runtime/%37{}/5000/", &CID[1..]),
    ] {
        check(h, &target, "malformed");
    }
}

#[test]
fn host_form_cases() {
    let host = format!("5000-{CID}.runtime.example.com");
    check(&host, "/", "host 5000 /");
    check(&host, "", "host 5000 /");
    check(&host, "/add?x=1", "host 5000 /add?x=1");
    check(&host, "/a%2Fb//../c", "host 5000 /a%2Fb//../c");
    // The host form wins even for paths that look like the path form.
    check(
        &host,
        &format!("/runtime/{CID}/8000/x"),
        "host 5000 /runtime/7c15e423fbd44f8f8bf483a481daa4d9/8000/x",
    );
    check(
        &format!("5000-{CID}.RUNTIME.Example.COM"),
        "/",
        "host 5000 /",
    );
    check(
        &format!("5000-{CID}.runtime.example.com."),
        "/",
        "host 5000 /",
    );
}

// Found by the `routing` fuzz target: a target that is not a path (`OPTIONS *`) was sent to
// the sandbox as its request-target.
#[test]
fn host_form_refuses_targets_that_are_not_paths() {
    let host = format!("5000-{CID}.runtime.example.com");
    for target in ["*", "a=b", "?x=1", "example.com:80"] {
        check(&host, target, "malformed");
    }
}

#[test]
fn hosts_that_are_not_runtime_hosts_go_to_the_app() {
    for host in [
        "example.com".to_owned(),
        format!("0-{CID}.runtime.example.com"),
        format!("65536-{CID}.runtime.example.com"),
        format!("05000-{CID}.runtime.example.com"),
        format!("5000-{}.runtime.example.com", CID.to_uppercase()),
        "5000-short.runtime.example.com".to_owned(),
        format!("abc-{CID}.runtime.example.com"),
        format!("5000-{CID}.runtime.example.com.evil.test"),
        format!("5000-{CID}.xruntime.example.com"),
        format!("x.5000-{CID}.runtime.example.com"),
        "runtime.example.com".to_owned(),
        ".runtime.example.com".to_owned(),
    ] {
        check(&host, "/", "app");
    }
}

#[test]
fn ports_are_canonical_decimal() {
    assert_eq!(parse_port("1"), Some(1));
    assert_eq!(parse_port("65535"), Some(65535));
    for bad in [
        "", "0", "00", "01", "65536", "+1", "-1", " 1", "1 ", "1e3", "٣",
    ] {
        assert_eq!(parse_port(bad), None, "{bad:?}");
    }
}

#[test]
fn runtime_origin_round_trips_through_the_host_parser() {
    let conversation = ConversationId::parse(CID).unwrap();
    let origin = build_runtime_origin(
        Scheme::Https,
        "runtime.example.com",
        None,
        &conversation,
        8001,
    );
    assert_eq!(origin, format!("https://8001-{CID}.runtime.example.com"));
    let host = origin.trim_start_matches("https://");
    assert_eq!(
        parse_runtime_host("runtime.example.com", host),
        Some((conversation.clone(), 8001))
    );
    let dev = build_runtime_origin(
        Scheme::Http,
        "runtime.localhost",
        Some(8080),
        &conversation,
        5000,
    );
    assert_eq!(dev, format!("http://5000-{CID}.runtime.localhost:8080"));
}

#[test]
fn non_ascii_hosts_are_not_runtime_hosts_and_never_panic() {
    let domain = "runtime.example.com";
    let cases = [
        // A two-byte character straddling the split between label and domain.
        format!("a\u{e9}{domain}"),
        format!("5000-{CID}\u{e9}{domain}"),
        format!("5000-{CID}.runtime.exampl\u{e9}.com"),
        format!("\u{1f600}.{domain}"),
        format!("5000-{}\u{e9}.{domain}", &CID[..31]),
        "\u{e9}".to_owned(),
        "\u{e9}.".to_owned(),
    ];
    for host in cases {
        assert_eq!(parse_runtime_host(domain, &host), None, "{host:?}");
        check(&host, "/", "app");
    }
    // Every split point of a host with a multi-byte character, not just the ones listed.
    let base = format!("5000-{CID}.{domain}");
    for at in 0..=base.len() {
        let mut host = base.clone();
        host.insert(at, '\u{e9}');
        assert_eq!(parse_runtime_host(domain, &host), None, "{host:?}");
    }
}

#[test]
fn non_ascii_runtime_domains_match_nothing_and_never_panic() {
    let host = format!("5000-{CID}.runtime.example.com");
    for domain in ["\u{e9}", "runtime.\u{e9}xample.com", "\u{1f600}"] {
        assert_eq!(parse_runtime_host(domain, &host), None, "{domain:?}");
    }
}

#[test]
fn runtime_path_look_alikes_are_malformed_not_the_apps() {
    for path in [
        format!("//runtime/{CID}/5000/"),
        format!("/RUNTIME/{CID}/5000/"),
        format!("/Runtime/{CID}/5000/"),
        format!("/runtime;x=y/{CID}/5000/"),
        "///runtime".to_owned(),
        "/RUNTIME".to_owned(),
    ] {
        assert_eq!(
            parse_runtime_path(&path),
            Some(Err(RouteError::MalformedRuntimePath)),
            "{path}"
        );
    }
    for app_path in [
        "/",
        "/runtime",
        "//api/x",
        "/runtimes/x",
        "/api/runtime/x",
        "/run",
    ] {
        assert_eq!(parse_runtime_path(app_path), None, "{app_path}");
    }
}
