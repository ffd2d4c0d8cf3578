//! The command line: configuration checks and offline inspection.

use std::process::Command;

fn sandport(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sandport"))
        .args(args)
        .env_remove("SANDPORT_CONFIG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandport.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

#[test]
fn check_config_names_the_bad_key() {
    let (_dir, path) = write("[server]\nlisten = \"127.0.0.1:8080\"\n");
    let (code, stdout, _) = sandport(&["check-config", &path]);
    assert_eq!(code, 0);
    assert!(stdout.contains("configuration OK"));

    let (_dir, path) = write("[proxy]\nidle_timeout_sec = 3\n");
    let (code, _, stderr) = sandport(&["check-config", &path]);
    assert_eq!(code, 64);
    assert!(stderr.contains("idle_timeout_sec"), "{stderr}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml");
    assert_eq!(sandport(&["check-config", example]).0, 0);
    let (code, _, stderr) = sandport(&["check-config", "/nonexistent/sandport.toml"]);
    assert_eq!(code, 64);
    assert!(stderr.contains("/nonexistent/sandport.toml"), "{stderr}");
}

#[test]
fn secret_files_are_checked_by_check_config_and_serve_alike() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too-short\n").unwrap();
    let cases = [
        (
            format!("token_file = {short:?}"),
            "identity.token_file",
            "shorter than 16",
        ),
        (
            "assertion_key_file = \"/nonexistent/key\"".to_owned(),
            "identity.assertion_key_file",
            "cannot read /nonexistent/key",
        ),
    ];
    for (line, key, reason) in cases {
        let (_config_dir, path) = write(&format!("[identity]\n{line}\n"));
        for command in [
            &["check-config", path.as_str()][..],
            &["serve", "--config", &path],
        ] {
            let (code, _, stderr) = sandport(command);
            assert_eq!(code, 64, "{command:?} {line}: {stderr}");
            assert!(
                stderr.contains(key) && stderr.contains(reason),
                "{command:?}: {stderr}"
            );
        }
        // On another machine than the one it runs on, the rest of the file can still be checked.
        let (code, stdout, stderr) = sandport(&["check-config", "--skip-secrets", &path]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("configuration OK"));
    }
}

const STATIC: &str = "[routing]\nbase_domain = \"example.com\"\n[discovery]\nbackend = \"static\"\n\
[[discovery.sandboxes]]\nconversation_id = \"7c15e423fbd44f8f8bf483a481daa4d9\"\nuser_id = \"alice\"\naddress = \"10.1.2.3\"\nname = \"dev\"\n";

#[test]
fn routes_and_explain_work_offline() {
    let (_dir, path) = write(STATIC);
    let (code, stdout, stderr) = sandport(&["routes", "--config", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("7c15e423fbd44f8f8bf483a481daa4d9"),
        "{stdout}"
    );
    assert!(stdout.contains("alice") && stdout.contains("10.1.2.3") && stdout.contains("running"));

    let url = "https://5000-7c15e423fbd44f8f8bf483a481daa4d9.runtime.example.com/a%2Fb?x=1";
    let (code, stdout, _) = sandport(&["explain", url, "--user", "alice", "--config", &path]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("http://10.1.2.3:5000/a%2Fb?x=1"),
        "{stdout}"
    );
    let (_, stdout, _) = sandport(&["explain", url, "--user", "bob", "--config", &path]);
    assert!(
        stdout.contains("refuse 403 Access denied: you do not own this conversation"),
        "{stdout}"
    );
    let (_, stdout, _) = sandport(&[
        "explain",
        "https://example.com/runtime/5000/x",
        "--user",
        "alice",
        "--config",
        &path,
    ]);
    assert!(stdout.contains("refuse 404"), "{stdout}");
    let (_, stdout, _) = sandport(&[
        "explain",
        "https://example.com/api/x",
        "--user",
        "alice",
        "--config",
        &path,
    ]);
    assert!(stdout.contains("route:     app"), "{stdout}");
}
