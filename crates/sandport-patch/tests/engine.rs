//! Engine behaviour on fixture trees: outcomes, idempotency, convergence,
//! atomicity, bytes and line endings, modes, verify commands.
#![allow(clippy::unwrap_used)]

#[path = "support/fixture.rs"]
mod fixture;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime};

use fixture::*;
use sandport_patch::Outcome;

const SERVICE: &str = "import os\n\ndef start(user_id):\n    labels = {\n        'a': 1,\n    }\n    spec = container.image.tags[0]\n";

fn owner_label_patch(n: u32, critical: bool) -> String {
    format!(
        "{}{}",
        patch(n, "owner-label", critical, "app/service.py"),
        r#"[patch.regex]
[[patch.regex.alternatives]]
name = "v2"
pattern = '''(?m)^(?P<indent>[ \t]*)labels = \{$'''
replacement = '''${indent}labels = {'user_id': user_id,'''
[[patch.regex.alternatives]]
name = "v1"
pattern = '''(?m)^(?P<indent>[ \t]*)container_labels = \{$'''
replacement = '''${indent}container_labels = {'user_id': user_id,'''
[patch.post]
regex = ['''labels = \{'user_id': user_id,''']
"#
    )
}

fn spec_patch(n: u32, critical: bool) -> String {
    format!(
        "{}{}",
        patch(n, "spec-label", critical, "app/service.py"),
        r#"[patch.replace]
find = "container.image.tags[0]"
with = "container.labels.get('spec')"
[patch.post]
contains = ["container.labels.get('spec')"]
lacks = ["container.image.tags[0]"]
"#
    )
}

fn import_patch(n: u32, critical: bool) -> String {
    format!(
        "{}{}",
        patch(n, "json-import", critical, "app/service.py"),
        r#"[patch.insert]
anchor = "import os\n"
position = "after"
text = "import json\n"
[patch.post]
regex = ['''(?m)^import json$''']
"#
    )
}

#[test]
fn applied_then_already_in_place() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(&format!(
        "{}{}{}",
        owner_label_patch(1, true),
        spec_patch(2, false),
        import_patch(3, false)
    ));
    let plan = fx.apply();
    assert_eq!(
        outcomes(&plan),
        vec![
            ("owner-label".into(), Outcome::Applied),
            ("spec-label".into(), Outcome::Applied),
            ("json-import".into(), Outcome::Applied),
        ]
    );
    assert_eq!(plan.results[0].alternative.as_deref(), Some("v2"));
    assert_eq!(
        fx.read_str("app/service.py"),
        "import os\nimport json\n\ndef start(user_id):\n    labels = {'user_id': user_id,\n        'a': 1,\n    }\n    spec = container.labels.get('spec')\n"
    );
}

#[test]
fn second_apply_changes_nothing_bytes_mtime_inode() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.write("app/other.py", "untouched\n");
    fx.side_file("files/extra.py", "EXTRA = 1\n");
    fx.manifest(&format!(
        "{}{}{}{}",
        owner_label_patch(1, true),
        spec_patch(2, false),
        import_patch(3, false),
        patch(4, "extra", true, "app/extra.py")
            + "[patch.add_file]\nsource = \"files/extra.py\"\nmode = 0o640\n"
    ));
    let first = fx.apply();
    assert!(first.results.iter().all(|r| r.outcome == Outcome::Applied));
    // Age every file so that any rewrite would show in the mtime.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
    for rel in ["app/service.py", "app/other.py", "app/extra.py"] {
        let f = std::fs::File::options()
            .write(true)
            .open(fx.path(rel))
            .unwrap();
        f.set_modified(old).unwrap();
    }
    let before = fx.snapshot();
    let second = fx.apply();
    assert!(
        second
            .results
            .iter()
            .all(|r| r.outcome == Outcome::AlreadyInPlace),
        "{:?}",
        outcomes(&second)
    );
    assert!(second.changes().is_empty());
    assert_eq!(fx.snapshot(), before, "second apply touched the tree");
    assert_eq!(fx.mode("app/extra.py"), 0o640);
}

#[test]
fn not_applicable_when_target_absent() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(&format!(
        "{}{}",
        spec_patch(1, false),
        patch(2, "gone", false, "app/missing.py")
            + "[patch.replace]\nfind = \"a\"\nwith = \"b\"\n[patch.post]\ncontains = [\"b\"]\n"
    ));
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "spec-label"), Outcome::Applied);
    assert_eq!(outcome(&plan, "gone"), Outcome::NotApplicable);
    assert!(reason(&plan, "gone").contains("app/missing.py"));
    assert!(reason(&plan, "gone").contains("does not exist"));
    // The non-critical problem does not stop the others.
    assert!(fx.read_str("app/service.py").contains("labels.get('spec')"));
}

#[test]
fn failed_with_reason_when_anchor_missing() {
    let fx = Fx::new();
    fx.write("app/service.py", "nothing to see\n");
    fx.manifest(&format!(
        "{}{}",
        owner_label_patch(1, false),
        import_patch(2, false)
    ));
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "owner-label"), Outcome::Failed);
    let r = reason(&plan, "owner-label");
    assert!(r.contains("no alternative matched"), "{r}");
    assert!(r.contains("v2") && r.contains("v1"), "{r}");
    assert_eq!(outcome(&plan, "json-import"), Outcome::Failed);
    assert!(reason(&plan, "json-import").contains("found 0 times"));
    assert_eq!(fx.read_str("app/service.py"), "nothing to see\n");
}

#[test]
fn regex_second_alternative_used_for_older_upstream() {
    let fx = Fx::new();
    fx.write(
        "app/service.py",
        SERVICE.replace("labels = {", "container_labels = {"),
    );
    fx.manifest(&owner_label_patch(1, true));
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "owner-label"), Outcome::Applied);
    assert_eq!(plan.results[0].alternative.as_deref(), Some("v1"));
    assert!(fx
        .read_str("app/service.py")
        .contains("container_labels = {'user_id': user_id,\n"));
}

#[test]
fn regex_with_more_matches_than_expected_fails_and_changes_nothing() {
    let fx = Fx::new();
    let two = format!("{SERVICE}\ndef again():\n    labels = {{\n    }}\n");
    fx.write("app/service.py", &two);
    fx.manifest(&owner_label_patch(1, false));
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "owner-label"), Outcome::Failed);
    let r = reason(&plan, "owner-label");
    assert!(r.contains("\"v2\""), "{r}");
    assert!(r.contains("found 2 times, expected exactly 1"), "{r}");
    assert_eq!(fx.read_str("app/service.py"), two);

    // The same with expect_matches = 2 replaces both.
    fx.manifest(
        &owner_label_patch(1, false)
            .replace("[patch.regex]\n", "[patch.regex]\nexpect_matches = 2\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "owner-label"), Outcome::Applied);
    assert_eq!(
        fx.read_str("app/service.py")
            .matches("labels = {'user_id': user_id,")
            .count(),
        2
    );
}

#[test]
fn literal_replace_with_several_matches_fails() {
    let fx = Fx::new();
    fx.write("a.txt", "x = tags[0]\ny = tags[0]\n");
    fx.manifest(
        &(patch(1, "p", false, "a.txt")
            + "[patch.replace]\nfind = \"tags[0]\"\nwith = \"label\"\n[patch.post]\nlacks = [\"tags[0]\"]\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "p"), Outcome::Failed);
    assert!(reason(&plan, "p").contains("found 2 times"));
    assert_eq!(fx.read_str("a.txt"), "x = tags[0]\ny = tags[0]\n");
}

#[test]
fn post_condition_must_hold_after_applying() {
    let fx = Fx::new();
    fx.write("a.txt", "alpha\n");
    fx.manifest(
        &(patch(1, "p", false, "a.txt")
            + "[patch.replace]\nfind = \"alpha\"\nwith = \"beta\"\n[patch.post]\ncontains = [\"gamma\"]\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "p"), Outcome::Failed);
    assert!(reason(&plan, "p").contains("post-condition does not hold after applying"));
    assert_eq!(fx.read_str("a.txt"), "alpha\n");
}

#[test]
fn insert_before_with_regex_anchor() {
    let fx = Fx::new();
    fx.write("a.py", "import os\n\nclass A:\n    pass\n");
    fx.manifest(
        &(patch(1, "p", true, "a.py")
            + "[patch.insert]\nanchor_regex = '''(?m)^class A:'''\nposition = \"before\"\ntext = \"@decorated\\n\"\n[patch.post]\ncontains = [\"@decorated\\nclass A:\"]\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "p"), Outcome::Applied);
    assert_eq!(
        fx.read_str("a.py"),
        "import os\n\n@decorated\nclass A:\n    pass\n"
    );
}

#[test]
fn add_file_create_keep_and_replace() {
    let fx = Fx::new();
    std::fs::create_dir_all(fx.path("pkg")).unwrap();
    fx.side_file("files/auth.py", "VERSION = 1\n");
    let m = patch(1, "auth", true, "pkg/auth.py")
        + "[patch.add_file]\nsource = \"files/auth.py\"\nmode = 0o600\n";
    fx.manifest(&m);
    assert_eq!(outcome(&fx.apply(), "auth"), Outcome::Applied);
    assert_eq!(fx.read_str("pkg/auth.py"), "VERSION = 1\n");
    assert_eq!(fx.mode("pkg/auth.py"), 0o600);
    assert_eq!(outcome(&fx.apply(), "auth"), Outcome::AlreadyInPlace);

    // A changed mode alone is corrected.
    fx.chmod("pkg/auth.py", 0o644);
    assert_eq!(outcome(&fx.apply(), "auth"), Outcome::Applied);
    assert_eq!(fx.mode("pkg/auth.py"), 0o600);

    // New content in a newer manifest replaces the old file.
    fx.side_file("files/auth.py", "VERSION = 2\n");
    assert_eq!(outcome(&fx.apply(), "auth"), Outcome::Applied);
    assert_eq!(fx.read_str("pkg/auth.py"), "VERSION = 2\n");
}

#[test]
fn add_file_needs_parent_unless_create_dirs() {
    let fx = Fx::new();
    fx.manifest(
        &(patch(1, "a", false, "moved/pkg/a.py")
            + "[patch.add_file]\ncontent = \"A\\n\"\n"
            + &patch(2, "b", false, "new/pkg/b.py")
            + "[patch.add_file]\ncontent = \"B\\n\"\ncreate_dirs = true\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "a"), Outcome::NotApplicable);
    assert!(reason(&plan, "a").contains("parent directory does not exist"));
    assert!(!fx.path("moved").exists());
    assert_eq!(outcome(&plan, "b"), Outcome::Applied);
    assert_eq!(fx.read_str("new/pkg/b.py"), "B\n");
    assert_eq!(fx.mode("new/pkg/b.py"), 0o644);
}

#[test]
fn require_holds_or_fails() {
    let fx = Fx::new();
    fx.write("config.py", "store = PerUserStore\n");
    fx.manifest(
        &(patch(1, "has", true, "config.py")
            + "[patch.require]\ncontains = [\"PerUserStore\"]\nlacks = [\"FileStore\"]\n"
            + &patch(2, "lacks", false, "config.py")
            + "[patch.require]\nregex = ['''SharedStore''']\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "has"), Outcome::AlreadyInPlace);
    assert_eq!(outcome(&plan, "lacks"), Outcome::Failed);
    assert!(reason(&plan, "lacks").contains("requirement not met"));
    assert!(reason(&plan, "lacks").contains("SharedStore"));
}

#[test]
fn newer_manifest_converges_over_older_patched_tree() {
    // Version 1 of the manifest labelled with `owner`; version 2 uses
    // `user_id` and carries an alternative that upgrades the old text.
    let v1 = patch(1, "owner-label", true, "app/service.py")
        + r#"[patch.regex]
[[patch.regex.alternatives]]
name = "upstream"
pattern = '''(?m)^(?P<i>[ \t]*)labels = \{$'''
replacement = '''${i}labels = {'owner': user_id,'''
[patch.post]
contains = ["{'owner': user_id,"]
"#;
    let v2 = patch(1, "owner-label", true, "app/service.py")
        + r#"[patch.regex]
[[patch.regex.alternatives]]
name = "upstream"
pattern = '''(?m)^(?P<i>[ \t]*)labels = \{$'''
replacement = '''${i}labels = {'user_id': user_id, 'conversation_id': sid,'''
[[patch.regex.alternatives]]
name = "from-v1"
pattern = '''\{'owner': user_id,'''
replacement = '''{'user_id': user_id, 'conversation_id': sid,'''
[patch.post]
contains = ["{'user_id': user_id, 'conversation_id': sid,"]
lacks = ["'owner'"]
"#;
    let v2_full = format!("{v2}{}{}", spec_patch(2, true), import_patch(3, false));

    let old = Fx::new();
    old.write("app/service.py", SERVICE);
    old.manifest(&v1);
    assert_eq!(outcome(&old.apply(), "owner-label"), Outcome::Applied);
    old.manifest(&v2_full);
    let plan = old.apply();
    assert_eq!(outcome(&plan, "owner-label"), Outcome::Applied);
    assert_eq!(plan.results[0].alternative.as_deref(), Some("from-v1"));

    let fresh = Fx::new();
    fresh.write("app/service.py", SERVICE);
    fresh.manifest(&v2_full);
    let plan = fresh.apply();
    assert_eq!(plan.results[0].alternative.as_deref(), Some("upstream"));

    assert_eq!(old.read("app/service.py"), fresh.read("app/service.py"));
    // And both are now stable.
    assert!(old
        .apply()
        .results
        .iter()
        .all(|r| r.outcome == Outcome::AlreadyInPlace));
}

#[test]
fn later_critical_failure_writes_nothing() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.write("app/config.py", "store = FileStore\n");
    fx.manifest(&format!(
        "{}{}{}{}",
        owner_label_patch(1, true),
        spec_patch(2, false),
        patch(3, "new-file", true, "app/new.py") + "[patch.add_file]\ncontent = \"x\\n\"\n",
        patch(4, "per-user", true, "app/config.py")
            + "[patch.replace]\nfind = \"PerUserStoreFactory\"\nwith = \"x\"\n[patch.post]\ncontains = [\"PerUser\"]\n"
    ));
    let before = fx.snapshot();
    let plan = fx.plan();
    assert_eq!(outcome(&plan, "owner-label"), Outcome::Applied);
    assert_eq!(outcome(&plan, "new-file"), Outcome::Applied);
    assert_eq!(outcome(&plan, "per-user"), Outcome::Failed);
    let crit: Vec<&str> = plan
        .critical_problems()
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(crit, vec!["per-user"]);
    // The CLI refuses to commit such a plan; check through the binary too.
    let out = fx.cmd("apply", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        fx.snapshot(),
        before,
        "a file changed despite a critical failure"
    );
    assert!(!fx.exists("app/new.py"));
}

#[test]
fn non_critical_failure_discards_only_its_own_changes() {
    let fx = Fx::new();
    fx.write("a.txt", "one\n");
    fx.write("b.txt", "two\n");
    // A two-target patch that can change a.txt but fails on b.txt.
    fx.manifest(
        &(patch(1, "both", false, "a.txt").replace("target = \"a.txt\"", "targets = [\"a.txt\", \"b.txt\"]")
            + "[patch.replace]\nfind = \"one\"\nwith = \"ONE\"\n[patch.post]\ncontains = [\"ONE\"]\n"
            + &patch(2, "b", true, "b.txt")
            + "[patch.replace]\nfind = \"two\"\nwith = \"TWO\"\n[patch.post]\ncontains = [\"TWO\"]\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "both"), Outcome::Failed);
    assert!(reason(&plan, "both").starts_with("b.txt:"));
    assert_eq!(outcome(&plan, "b"), Outcome::Applied);
    assert_eq!(fx.read_str("a.txt"), "one\n", "failed patch half-applied");
    assert_eq!(fx.read_str("b.txt"), "TWO\n");
}

#[test]
fn non_utf8_content_is_kept_byte_for_byte() {
    let fx = Fx::new();
    let mut content = b"head \xff\xfe latin1 caf\xe9\n".to_vec();
    content.extend_from_slice(b"value = OLD\n\x00\x01tail\xc3\x28\n");
    fx.write("bin.dat", &content);
    fx.manifest(
        &(patch(1, "lit", true, "bin.dat")
            + "[patch.replace]\nfind = \"OLD\"\nwith = \"NEW\"\n[patch.post]\ncontains = [\"NEW\"]\n"
            + &patch(2, "raw", true, "bin.dat")
            + "[patch.regex]\n[[patch.regex.alternatives]]\nname = \"raw\"\npattern = '''caf(?-u:\\xe9)'''\nreplacement = \"cafe\"\n[patch.post]\ncontains = [\"cafe\\n\"]\n"),
    );
    let plan = fx.plan();
    let diff = plan.diff();
    assert!(diff.contains("not valid UTF-8"), "{diff}");
    assert!(diff.contains("+value = NEW"), "{diff}");
    plan.commit().unwrap();
    assert_eq!(outcome(&plan, "lit"), Outcome::Applied);
    assert_eq!(outcome(&plan, "raw"), Outcome::Applied);
    let mut want = b"head \xff\xfe latin1 cafe\n".to_vec();
    want.extend_from_slice(b"value = NEW\n\x00\x01tail\xc3\x28\n");
    assert_eq!(fx.read("bin.dat"), want);
    assert_eq!(
        outcomes(&fx.apply()),
        vec![
            ("lit".into(), Outcome::AlreadyInPlace),
            ("raw".into(), Outcome::AlreadyInPlace)
        ]
    );
}

#[test]
fn crlf_files_match_with_lf_and_keep_crlf() {
    let fx = Fx::new();
    let crlf = SERVICE.replace('\n', "\r\n");
    fx.write("app/service.py", &crlf);
    fx.manifest(&format!(
        "{}{}{}",
        owner_label_patch(1, true),
        spec_patch(2, true),
        import_patch(3, true)
    ));
    let plan = fx.apply();
    assert!(
        plan.results.iter().all(|r| r.outcome == Outcome::Applied),
        "{:?}",
        plan.results
    );
    let got = fx.read_str("app/service.py");
    let want = "import os\nimport json\n\ndef start(user_id):\n    labels = {'user_id': user_id,\n        'a': 1,\n    }\n    spec = container.labels.get('spec')\n"
        .replace('\n', "\r\n");
    assert_eq!(got, want);
    assert_eq!(got.matches('\n').count(), got.matches("\r\n").count());
    assert!(fx
        .apply()
        .results
        .iter()
        .all(|r| r.outcome == Outcome::AlreadyInPlace));
}

#[test]
fn mixed_line_endings_are_matched_as_is() {
    let fx = Fx::new();
    fx.write("m.txt", "a\r\nb\n");
    fx.manifest(
        &(patch(1, "p", false, "m.txt")
            + "[patch.insert]\nanchor = \"a\\n\"\nposition = \"after\"\ntext = \"x\\n\"\n[patch.post]\ncontains = [\"x\"]\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "p"), Outcome::Failed);
    assert_eq!(fx.read_str("m.txt"), "a\r\nb\n");
}

#[test]
fn mode_and_owner_are_kept() {
    let fx = Fx::new();
    fx.write("run.sh", "#!/bin/sh\necho old\n");
    fx.chmod("run.sh", 0o750);
    if is_root() {
        std::os::unix::fs::chown(fx.path("run.sh"), Some(4321), Some(4322)).unwrap();
    }
    fx.manifest(
        &(patch(1, "p", true, "run.sh")
            + "[patch.replace]\nfind = \"old\"\nwith = \"new\"\n[patch.post]\ncontains = [\"echo new\"]\n"),
    );
    let ino = std::fs::metadata(fx.path("run.sh")).unwrap().ino();
    assert_eq!(outcome(&fx.apply(), "p"), Outcome::Applied);
    let m = std::fs::metadata(fx.path("run.sh")).unwrap();
    assert_ne!(m.ino(), ino, "not replaced by rename");
    assert_eq!(m.mode() & 0o7777, 0o750);
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (4321, 4322));
    }
    assert_eq!(fx.read_str("run.sh"), "#!/bin/sh\necho new\n");
}

#[test]
fn symlinks_directories_and_escapes_are_refused() {
    let fx = Fx::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("victim.py"), "old\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), fx.path("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("victim.py"), fx.path("link.py")).unwrap();
    std::fs::create_dir(fx.path("dir.py")).unwrap();
    let body =
        "[patch.replace]\nfind = \"old\"\nwith = \"new\"\n[patch.post]\ncontains = [\"new\"]\n";
    fx.manifest(
        &(patch(1, "escape", false, "escape/victim.py")
            + body
            + &patch(2, "link", false, "link.py")
            + body
            + &patch(3, "dir", false, "dir.py")
            + body),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "escape"), Outcome::Failed);
    assert!(reason(&plan, "escape").contains("outside the root"));
    assert_eq!(outcome(&plan, "link"), Outcome::Failed);
    assert!(reason(&plan, "link").contains("symbolic link"));
    assert_eq!(outcome(&plan, "dir"), Outcome::Failed);
    assert!(reason(&plan, "dir").contains("is a directory"));
    assert_eq!(
        std::fs::read_to_string(outside.path().join("victim.py")).unwrap(),
        "old\n"
    );
}

fn verify_manifest(fx: &Fx, command: &str, timeout: u64) {
    fx.manifest(
        &(patch(1, "v", true, "a.py")
            + "[patch.replace]\nfind = \"old\"\nwith = \"new\"\n[patch.post]\ncontains = [\"new\"]\n"
            + &format!("[patch.verify]\ncommand = {command}\ntimeout_secs = {timeout}\n")),
    );
}

#[test]
fn verify_runs_on_staged_patched_content() {
    let fx = Fx::new();
    fx.write("a.py", "x = 'old'\n");
    // Passes only if {file} holds the patched text and {target}/{root} are substituted.
    verify_manifest(
        &fx,
        r#"["sh", "-c", "grep -q \"x = 'new'\" \"$1\" && test \"$2\" = a.py && test -f \"$3/a.py\"", "verify", "{file}", "{target}", "{root}"]"#,
        10,
    );
    let plan = fx.apply();
    assert_eq!(
        outcome(&plan, "v"),
        Outcome::Applied,
        "{}",
        reason(&plan, "v")
    );
    // Not run again when already in place: a failing command changes nothing.
    verify_manifest(&fx, r#"["false"]"#, 10);
    assert_eq!(outcome(&fx.apply(), "v"), Outcome::AlreadyInPlace);
}

#[test]
fn verify_failure_fails_the_patch() {
    let fx = Fx::new();
    fx.write("a.py", "x = old\n");
    verify_manifest(&fx, r#""python3 -m py_compile {file}""#, 30);
    // `x = new(` would not compile; make the replacement produce that.
    fx.manifest(
        &std::fs::read_to_string(&fx.manifest)
            .unwrap()
            .replace("format = 1\n", "")
            .replace("with = \"new\"", "with = \"new(\""),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "v"), Outcome::Failed);
    let r = reason(&plan, "v");
    assert!(
        r.contains("verify command `python3 -m py_compile {file}` failed"),
        "{r}"
    );
    assert!(r.contains("exit status 1"), "{r}");
    assert!(
        r.contains("SyntaxError") || r.contains("never closed"),
        "{r}"
    );
    assert_eq!(fx.read_str("a.py"), "x = old\n");
}

#[test]
fn verify_timeout_kills_the_command() {
    let fx = Fx::new();
    fx.write("a.py", "x = old\n");
    // A child that would outlive its parent shell is killed with the group.
    verify_manifest(&fx, r#"["sh", "-c", "sleep 30 & sleep 30"]"#, 1);
    let started = Instant::now();
    let plan = fx.apply();
    let took = started.elapsed();
    assert_eq!(outcome(&plan, "v"), Outcome::Failed);
    assert!(
        reason(&plan, "v").contains("timed out after 1 s"),
        "{}",
        reason(&plan, "v")
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(fx.read_str("a.py"), "x = old\n");
}

#[test]
fn verify_command_that_cannot_start() {
    let fx = Fx::new();
    fx.write("a.py", "x = old\n");
    verify_manifest(&fx, r#"["/nonexistent/verifier"]"#, 5);
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "v"), Outcome::Failed);
    assert!(reason(&plan, "v").contains("cannot start verify command"));
}

#[test]
fn dry_run_diff_is_unified() {
    let fx = Fx::new();
    fx.write("app/service.py", SERVICE);
    fx.manifest(&spec_patch(1, true));
    let diff = fx.plan().diff();
    assert!(
        diff.starts_with("--- a/app/service.py\n+++ b/app/service.py\n@@ "),
        "{diff}"
    );
    assert!(
        diff.contains("\n-    spec = container.image.tags[0]\n"),
        "{diff}"
    );
    assert!(
        diff.contains("\n+    spec = container.labels.get('spec')\n"),
        "{diff}"
    );
    assert_eq!(fx.read_str("app/service.py"), SERVICE);
}

#[test]
fn one_file_under_two_names_is_refused() {
    let fx = Fx::new();
    fx.write("lib/x.py", "a = 1\nb = 2\n");
    std::os::unix::fs::symlink("lib", fx.path("lib64")).unwrap();
    fx.manifest(
        &(patch(1, "one", false, "lib/x.py")
            + "[patch.replace]\nfind = \"a = 1\"\nwith = \"a = 10\"\n[patch.post]\ncontains = [\"a = 10\"]\n"
            + &patch(2, "two", false, "lib64/x.py")
            + "[patch.replace]\nfind = \"b = 2\"\nwith = \"b = 20\"\n[patch.post]\ncontains = [\"b = 20\"]\n"),
    );
    let plan = fx.apply();
    assert_eq!(outcome(&plan, "one"), Outcome::Applied);
    assert_eq!(outcome(&plan, "two"), Outcome::Failed);
    assert!(
        reason(&plan, "two").contains("same file as lib/x.py"),
        "{}",
        reason(&plan, "two")
    );
    assert_eq!(fx.read_str("lib/x.py"), "a = 10\nb = 2\n");
}

#[test]
fn failure_while_staging_writes_nothing_and_cleans_up() {
    let fx = Fx::new();
    fx.write("a/x.txt", "x = OLD\n");
    fx.write("z/y.txt", "y = OLD\n");
    let body =
        "[patch.replace]\nfind = \"OLD\"\nwith = \"NEW\"\n[patch.post]\ncontains = [\"NEW\"]\n";
    fx.manifest(
        &(patch(1, "x", true, "a/x.txt")
            + body
            + &patch(2, "new", true, "n/deep/new.txt")
            + "[patch.add_file]\ncontent = \"new\\n\"\ncreate_dirs = true\n"
            + &patch(3, "y", true, "z/y.txt")
            + body),
    );
    let plan = fx.plan();
    assert!(plan.critical_problems().is_empty());
    // Between planning and writing, z/ stops being a usable directory: the
    // temporary file for z/y.txt cannot be created (this fails for root too).
    std::fs::remove_dir_all(fx.path("z")).unwrap();
    std::fs::write(fx.path("z"), "now a file\n").unwrap();
    let before = fx.snapshot();
    let err = plan.commit().expect_err("staging must fail");
    assert!(err.written.is_empty());
    assert!(
        err.message
            .starts_with("z/y.txt: cannot create a temporary file in "),
        "{}",
        err.message
    );
    assert!(
        err.message.ends_with("; nothing was written"),
        "{}",
        err.message
    );
    assert_eq!(
        fx.snapshot(),
        before,
        "a file changed or a temporary file was left"
    );
    assert!(
        !fx.path("n").exists(),
        "directories made for the new file were left"
    );
}
