//! The command line as a process: exit codes, stderr summary, `--report`,
//! `--dry-run`, a process killed mid-apply, files the process may not write.
#![allow(clippy::unwrap_used)]

#[path = "support/fixture.rs"]
mod fixture;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixture::*;
use sha2::{Digest, Sha256};

const SERVICE: &str = "import os\n\nlabels = {\n}\nspec = tags[0]\n";

fn good_patches() -> String {
    patch(1, "labels", true, "app/service.py")
        + "[patch.replace]\nfind = \"labels = {\\n\"\nwith = \"labels = {'user_id': uid,\\n\"\n[patch.post]\ncontains = [\"'user_id': uid\"]\n"
        + &patch(2, "json", false, "app/service.py")
        + "[patch.insert]\nanchor = \"import os\\n\"\nposition = \"after\"\ntext = \"import json\\n\"\n[patch.post]\ncontains = [\"import json\\n\"]\n"
}

fn broken_critical() -> String {
    patch(10, "gone-anchor", true, "app/service.py")
        + "[patch.replace]\nfind = \"no such text\"\nwith = \"x\"\n[patch.post]\ncontains = [\"never\"]\n"
        + &patch(11, "gone-file", true, "app/moved.py")
        + "[patch.require]\ncontains = [\"x\"]\n"
        + &patch(12, "minor", false, "app/service.py")
        + "[patch.replace]\nfind = \"absent\"\nwith = \"x\"\n[patch.post]\ncontains = [\"never-either\"]\n"
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn apply_then_check_and_status_are_clean() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(&good_patches());

    let out = fx.cmd("check", &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "pending changes: {}",
        stderr(&out)
    );

    let out = fx.cmd("apply", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(stdout(&out).contains("wrote app/service.py"));

    for cmd in ["check", "status"] {
        let out = fx.cmd(cmd, &[]);
        assert_eq!(out.status.code(), Some(0), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).is_empty());
        assert_eq!(stdout(&out).matches("already_in_place").count(), 2);
    }
    let out = fx.cmd("apply", &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("nothing to write"));
}

#[test]
fn check_reports_drift_and_writes_nothing() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(&good_patches());
    let before = fx.snapshot();
    let out = fx.cmd("check", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "CHECK FAILED: apply would change the tree:\n  would write app/service.py\n"
        ),
        "{err}"
    );
    assert!(stdout(&out).contains("+import json"));
    assert_eq!(fx.snapshot(), before);

    // A non-critical patch that would fail is drift too, even with nothing to write.
    fx.cmd("apply", &[]);
    fx.manifest(
        &(good_patches()
            + &patch(3, "minor", false, "app/service.py")
            + "[patch.require]\ncontains = [\"not there\"]\n"),
    );
    let out = fx.cmd("check", &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("#3 minor: failed: app/service.py: requirement not met"));
}

#[test]
fn critical_failure_exit_1_one_summary_naming_each_nothing_written() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(&(good_patches() + &broken_critical()));
    let before = fx.snapshot();
    for cmd in ["apply", "check"] {
        let out = fx.cmd(cmd, &[]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.starts_with("CRITICAL PATCHES FAILED:\n"),
            "{cmd}: {err}"
        );
        assert_eq!(err.matches("CRITICAL PATCHES FAILED:").count(), 1);
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines[1].starts_with(
                "  #10 gone-anchor: failed: app/service.py: text \"no such text\" found 0 times"
            ),
            "{err}"
        );
        assert!(
            lines[2].starts_with(
                "  #11 gone-file: not_applicable: app/moved.py: target does not exist"
            ),
            "{err}"
        );
        assert_eq!(lines[3], "Non-critical patches that did not apply either:");
        assert!(lines[4].starts_with("  #12 minor: failed:"), "{err}");
        assert_eq!(lines[5], "Nothing was written.");
        assert_eq!(lines.len(), 6, "{err}");
        assert_eq!(fx.snapshot(), before, "{cmd} wrote");
    }
    // status only shows it.
    let out = fx.cmd("status", &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("not_applicable"));
    assert_eq!(fx.snapshot(), before);
}

#[test]
fn non_critical_failure_applies_the_rest_and_warns() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(
        &(good_patches()
            + &patch(3, "minor", false, "app/service.py")
            + "[patch.replace]\nfind = \"absent\"\nwith = \"x\"\n[patch.post]\ncontains = [\"nope\"]\n"),
    );
    let out = fx.cmd("apply", &[]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.starts_with("WARNING: NON-CRITICAL PATCHES DID NOT APPLY:\n  #3 minor: failed:"),
        "{err}"
    );
    assert!(fx.read_str("app/service.py").contains("import json"));
}

#[test]
fn dry_run_prints_diffs_and_writes_nothing() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(
        &(good_patches()
            + &patch(3, "new", true, "app/new.py")
            + "[patch.add_file]\ncontent = \"NEW = 1\\n\"\n"),
    );
    let before = fx.snapshot();
    let out = fx.cmd("apply", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.contains("--- a/app/service.py\n+++ b/app/service.py\n@@ -1,5 +1,6 @@\n import os\n+import json\n \n-labels = {\n+labels = {'user_id': uid,\n"), "{o}");
    assert!(
        o.contains("--- /dev/null\n+++ b/app/new.py\n@@ -0,0 +1 @@\n+NEW = 1\n"),
        "{o}"
    );
    assert!(o.contains("dry run: 2 file(s) would be written, nothing written"));
    assert_eq!(fx.snapshot(), before);
    assert!(!fx.exists("app/new.py"));
}

#[test]
fn report_json_has_outcomes_reasons_and_hashes() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(
        &(good_patches()
            + &patch(3, "minor", false, "app/absent.py")
            + "[patch.require]\ncontains = [\"x\"]\n"),
    );
    let report = fx.dir.path().join("report.json");
    let r = report.to_string_lossy().into_owned();
    let before = fx.read("app/service.py");
    let out = fx.cmd("apply", &["--report", &r]);
    assert_eq!(out.status.code(), Some(0));
    let after = fx.read("app/service.py");
    assert_ne!(before, after);

    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["command"], "apply");
    assert_eq!(v["result"], "warnings");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["written"], serde_json::json!(["app/service.py"]));
    let p = v["patches"].as_array().unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(p[0]["id"], "labels");
    assert_eq!(p[0]["why"], "test");
    assert_eq!(p[0]["critical"], true);
    assert_eq!(p[0]["outcome"], "applied");
    assert!(p[0]["reason"].is_null());
    assert_eq!(p[0]["files"][0]["path"], "app/service.py");
    assert_eq!(p[0]["files"][0]["sha256_before"], sha(&before));
    // Patch 1's result is patch 2's starting point; patch 2 ends at the file on disk.
    assert_eq!(
        p[1]["files"][0]["sha256_before"],
        p[0]["files"][0]["sha256_after"]
    );
    assert_ne!(p[0]["files"][0]["sha256_after"], sha(&before));
    assert_eq!(p[1]["files"][0]["sha256_after"], sha(&after));
    assert_eq!(p[2]["outcome"], "not_applicable");
    assert!(p[2]["reason"].as_str().unwrap().contains("app/absent.py"));
    assert!(p[2]["files"][0]["sha256_before"].is_null());
    let f = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "app/service.py")
        .unwrap();
    assert_eq!(f["sha256_before"], sha(&before));
    assert_eq!(f["sha256_after"], sha(&after));

    // A critical failure: nothing written, after == before.
    fx.write("app/service.py", SERVICE);
    fx.manifest(&(good_patches() + &broken_critical()));
    let out = fx.cmd("apply", &["--report", &r]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["result"], "critical_failure");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["written"], serde_json::json!([]));
    let f = &v["files"][0];
    assert_eq!(f["sha256_before"], sha(SERVICE.as_bytes()));
    assert_eq!(f["sha256_after"], sha(SERVICE.as_bytes()));
    assert_ne!(f["sha256_planned"], f["sha256_before"]);
    let gone = v["patches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "gone-anchor")
        .unwrap();
    assert_eq!(gone["outcome"], "failed");
    assert!(gone["reason"].as_str().unwrap().contains("found 0 times"));
}

#[test]
fn usage_and_manifest_errors_exit_2() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(&good_patches().replace("critical = true", "critical = true\ncritcal = true"));
    let out = fx.cmd("apply", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("critcal"), "{}", stderr(&out));

    fx.manifest(&good_patches().replace("app/service.py", "../service.py"));
    let out = fx.cmd("check", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("'..'"), "{}", stderr(&out));

    fx.manifest(&good_patches().replace("app/service.py", "/etc/passwd"));
    assert_eq!(fx.cmd("apply", &[]).status.code(), Some(2));

    fx.manifest(&good_patches());
    let m = fx.manifest.to_string_lossy().into_owned();
    let out = fx.run(&["apply", "--manifest", &m, "--root", "/nonexistent/root"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/root"));

    let out = fx.run(&["apply", "--manifest", "/nonexistent/m.toml", "--root", "/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/m.toml"),
        "{}",
        stderr(&out)
    );

    let out = fx.run(&["apply", "--root", "/"]);
    assert_eq!(out.status.code(), Some(2));
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.ends_with(".sandport-tmp").then_some(n)
        })
        .collect()
}

#[test]
fn killed_mid_apply_every_file_is_old_or_new() {
    const FILES: usize = 64;
    const SIZE: usize = 256 * 1024;
    let fx = Fx::new();
    let filler: Vec<u8> = (0..SIZE).map(|i| b"abcdefghijklmnop\n"[i % 17]).collect();
    let mut old = filler.clone();
    old.extend_from_slice(b"\nMARKER = OLD\n");
    let mut new = filler;
    new.extend_from_slice(b"\nMARKER = NEW\n");
    let names: Vec<String> = (0..FILES).map(|i| format!("big/f{i:03}.txt")).collect();
    let targets: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    fx.manifest(
        &(patch(1, "marker", true, "x").replace(
            "target = \"x\"",
            &format!("targets = [{}]", targets.join(", ")),
        ) + "[patch.replace]\nfind = \"MARKER = OLD\"\nwith = \"MARKER = NEW\"\n[patch.post]\ncontains = [\"MARKER = NEW\"]\n"),
    );
    let reset = || {
        for n in &names {
            fx.write(n, &old);
        }
        for t in temp_files(&fx.path("big")) {
            std::fs::remove_file(fx.path("big").join(t)).unwrap();
        }
    };
    let m = fx.manifest.to_string_lossy().into_owned();
    let r = fx.root.to_string_lossy().into_owned();

    let mut killed = 0;
    let mut partial = 0;
    // 0: kill as soon as staging begins; 1: as soon as any target changed;
    // 2..: after fixed delays.
    for attempt in 0..5 {
        reset();
        // (inode, size, mtime) of every target: any change means a write began.
        let stamp = |n: &String| {
            std::fs::metadata(fx.path(n)).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.ino(), m.len(), m.mtime(), m.mtime_nsec())
            })
        };
        let stamps: Vec<_> = names.iter().map(stamp).collect();
        let mut child = Command::new(bin())
            .args(["apply", "--manifest", &m, "--root", &r])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            let fire = match attempt {
                0 => !temp_files(&fx.path("big")).is_empty(),
                1 => names.iter().zip(&stamps).any(|(n, st)| stamp(n) != *st),
                n => started.elapsed() >= Duration::from_millis(40 * n as u64),
            };
            if fire {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed += 1;
        }
        let mut n_new = 0;
        for n in &names {
            let got = fx.read(n);
            assert!(
                got == old || got == new,
                "attempt {attempt}: {n} is neither old nor new ({} bytes)",
                got.len()
            );
            if got == new {
                n_new += 1;
            }
        }
        if n_new > 0 && n_new < FILES {
            partial += 1;
        }
        eprintln!("attempt {attempt}: status {status}, {n_new}/{FILES} files new");
    }
    assert!(killed >= 1, "the process was never killed while running");
    eprintln!("{killed} runs killed, {partial} left a mix of old and new files");

    // A complete run afterwards converges and removes leftover temporary files.
    let out = fx.cmd("apply", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for n in &names {
        assert!(fx.read(n) == new, "{n} not converged");
    }
    assert!(temp_files(&fx.path("big")).is_empty());
}

/// Run the binary as an unprivileged user. Root ignores permission bits, so
/// when the tests run as root the binary is started through `setpriv` as
/// `nobody`; otherwise the test user is already unprivileged.
fn run_unprivileged(fx: &Fx, args: &[&str]) -> std::process::Output {
    if is_root() {
        let copy = fx.dir.path().join("sandport-patch");
        std::fs::copy(bin(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&copy)
            .args(args)
            .output()
            .expect("setpriv (util-linux) is needed to test permissions as root")
    } else {
        Command::new(bin()).args(args).output().unwrap()
    }
}

#[test]
fn files_the_process_may_not_write_fail_naming_the_path() {
    let fx = Fx::new();
    for d in [fx.dir.path(), fx.root.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A read-only file in a directory the process may write,
    // a writable file in a directory it may not write,
    // and a file it may write.
    fx.write("open/locked.py", "value = OLD\n");
    fx.write("closed/inside.py", "value = OLD\n");
    fx.write("free/ok.py", "value = OLD\n");
    fx.chmod("open/locked.py", 0o444);
    if is_root() {
        for p in ["open", "closed/inside.py", "free", "free/ok.py"] {
            std::os::unix::fs::chown(fx.path(p), Some(65534), Some(65534)).unwrap();
        }
    } else {
        fx.chmod("closed", 0o555);
    }
    let body =
        "[patch.replace]\nfind = \"OLD\"\nwith = \"NEW\"\n[patch.post]\ncontains = [\"NEW\"]\n";
    fx.manifest(
        &(patch(1, "free", true, "free/ok.py")
            + body
            + &patch(2, "locked", true, "open/locked.py")
            + body
            + &patch(3, "closed", true, "closed/inside.py")
            + body),
    );
    let m = fx.manifest.to_string_lossy().into_owned();
    let r = fx.root.to_string_lossy().into_owned();
    let before = fx.snapshot();
    let out = run_unprivileged(&fx, &["apply", "--manifest", &m, "--root", &r]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("CRITICAL PATCHES FAILED:\n"), "{err}");
    let canon = std::fs::canonicalize(&fx.root).unwrap();
    let locked = canon.join("open/locked.py");
    let closed = canon.join("closed");
    assert!(
        err.contains(&format!(
            "#2 locked: failed: open/locked.py: permission denied: cannot write file {}",
            locked.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "#3 closed: failed: closed/inside.py: permission denied: cannot write directory {}",
            closed.display()
        )),
        "{err}"
    );
    assert!(!err.contains("#1 free"), "{err}");
    assert_eq!(fx.snapshot(), before);

    // Without the critical flag the writable file is patched and the others reported.
    fx.manifest(
        &std::fs::read_to_string(&fx.manifest)
            .unwrap()
            .replace("format = 1\n", "")
            .replace("critical = true", "critical = false"),
    );
    let out = run_unprivileged(&fx, &["apply", "--manifest", &m, "--root", &r]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("#2 locked: failed"));
    assert_eq!(fx.read_str("free/ok.py"), "value = NEW\n");
    assert_eq!(fx.read_str("open/locked.py"), "value = OLD\n");
    assert_eq!(fx.read_str("closed/inside.py"), "value = OLD\n");
    if !is_root() {
        fx.chmod("closed", 0o755);
    }
}
