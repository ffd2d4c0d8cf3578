use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<FileConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandport.toml");
    std::fs::write(&path, text).unwrap();
    load(Some(&path), vars(env))
}

#[test]
fn embedded_defaults_serve_one_developer() {
    let config = load(None, vars(&[])).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(config.admin.listen, "127.0.0.1:9090");
    assert_eq!(
        config.routing.effective_runtime_domain(),
        "runtime.localhost"
    );
    assert_eq!(config.identity.mode, file::IdentityMode::Token);
    assert_eq!(config.identity.user_id, "local");
    assert_eq!(
        config.discovery.docker_socket,
        PathBuf::from("/var/run/docker.sock")
    );
    assert_eq!(config.app_upstream().unwrap().as_str(), "127.0.0.1:3000");
    assert_eq!(config.proxy.body_limit_bytes, 100 * 1024 * 1024);
    assert_eq!(config.proxy.idle_timeout_secs, 300);
}

/// `config/example.toml` with every commented-out `# key = value` line made active.
fn example_with_every_key() -> (String, String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let active = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key_line(rest) || rest.starts_with("[[") => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    (text, active)
}

fn is_key_line(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    })
}

#[test]
fn example_file_is_valid() {
    let (text, _) = example_with_every_key();
    load_text(&text, &[]).unwrap();
}

#[test]
fn example_file_and_docs_name_every_key() {
    let (_, active) = example_with_every_key();
    // Parsed without validation (commented alternatives may conflict), then written back:
    // serialising emits every field, so every key of every section is checked.
    let parsed: FileConfig = toml::from_str(&active).unwrap();
    let written = toml::Table::try_from(&parsed).unwrap();
    let example: toml::Table = active.parse().unwrap();
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    for (section, keys) in &written {
        let documented = example[section].as_table().unwrap();
        for key in keys.as_table().unwrap().keys() {
            assert!(
                documented.contains_key(key),
                "config/example.toml lacks [{section}] {key}"
            );
            let var = format!("SANDPORT_{}_{}", section.to_uppercase(), key.to_uppercase());
            assert!(docs.contains(&var), "docs/configuration.md lacks {var}");
        }
    }
}

#[test]
fn environment_overrides_the_file() {
    let config = load_text(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        &[
            ("SANDPORT_SERVER_LISTEN", "127.0.0.1:2"),
            ("SANDPORT_PROXY_BODY_LIMIT_BYTES", "1024"),
            ("SANDPORT_IDENTITY_MODE", "trusted_header"),
            ("SANDPORT_IDENTITY_TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            ("SANDPORT_CONFIG", "/ignored"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:2");
    assert_eq!(config.proxy.body_limit_bytes, 1024);
    assert_eq!(config.identity.trusted_proxies.len(), 1);
}

#[test]
fn errors_name_the_bad_key() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("[server]\nlisen = \"x\"\n", &[], "lisen"),
        ("[sever]\n", &[], "sever"),
        ("[server]\nlisten = \"nowhere\"\n", &[], "server.listen"),
        (
            "[server]\nmax_connections = 4000000000000000000\n",
            &[],
            "server.max_connections",
        ),
        ("[app]\nupstream = \"https://x\"\n", &[], "app.upstream"),
        (
            "[routing]\nbase_domain = \"a..b\"\n",
            &[],
            "routing.base_domain",
        ),
        (
            "[identity]\nmode = \"trusted_header\"\n",
            &[],
            "identity.trusted_proxies",
        ),
        ("[identity]\ntoken = \"short\"\n", &[], "identity.token"),
        ("[identity]\nmode = \"magic\"\n", &[], "magic"),
        ("[proxy]\nbody_limit_bytes = -1\n", &[], "body_limit_bytes"),
        (
            "[discovery]\nmax_staleness_secs = 0\n",
            &[],
            "discovery.max_staleness_secs",
        ),
        (
            "[[discovery.sandboxes]]\nconversation_id = \"x\"\naddress = \"10.0.0.1\"\n",
            &[],
            "discovery.sandboxes",
        ),
        (
            "",
            &[("SANDPORT_SERVR_LISTEN", "x")],
            "SANDPORT_SERVR_LISTEN",
        ),
        ("", &[("SANDPORT_PROXY_NOPE", "1")], "nope"),
        ("not toml = = =", &[], "sandport.toml"),
    ];
    for (text, env, needle) in cases {
        let error = load_text(text, env).unwrap_err().to_string();
        assert!(
            error.contains(needle),
            "{text:?}: {error:?} should name {needle}"
        );
    }
}
