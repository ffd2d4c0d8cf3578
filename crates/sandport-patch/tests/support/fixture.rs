//! Fixture trees in temporary directories, shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sandport_patch::{engine, Manifest, Outcome, Plan};

/// A temporary directory holding `tree/` (the root) and `manifest.toml`.
pub struct Fx {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub manifest: PathBuf,
}

/// What a file looked like at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSnap {
    pub bytes: Vec<u8>,
    pub mode: u32,
    pub ino: u64,
    pub mtime_ns: i128,
}

pub const HEADER: &str = "format = 1\n";

impl Fx {
    pub fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        let manifest = dir.path().join("manifest.toml");
        Fx {
            dir,
            root,
            manifest,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap()
    }

    pub fn read_str(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).unwrap()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn mode(&self, rel: &str) -> u32 {
        std::fs::metadata(self.path(rel)).unwrap().mode() & 0o7777
    }

    pub fn chmod(&self, rel: &str, mode: u32) {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Write the manifest (the `format = 1` header is added).
    pub fn manifest(&self, body: &str) {
        std::fs::write(&self.manifest, format!("{HEADER}{body}")).unwrap();
    }

    /// Write a file next to the manifest (for `add_file.source`).
    pub fn side_file(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    pub fn load(&self) -> Manifest {
        Manifest::load(&self.manifest).unwrap()
    }

    pub fn plan(&self) -> Plan {
        engine::plan(&self.load(), &self.root).unwrap()
    }

    /// Plan, and commit unless a critical patch did not apply.
    pub fn apply(&self) -> Plan {
        let plan = self.plan();
        if plan.critical_problems().is_empty() {
            plan.commit().unwrap();
        }
        plan
    }

    /// Every regular file under the root (and what it looked like).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, FileSnap> {
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }

    /// Run the stand-alone binary.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin()).args(args).output().unwrap()
    }

    /// `run` with `CMD --manifest M --root R` and extra arguments.
    pub fn cmd(&self, command: &str, extra: &[&str]) -> Output {
        let m = self.manifest.to_string_lossy().into_owned();
        let r = self.root.to_string_lossy().into_owned();
        let mut args = vec![command, "--manifest", &m, "--root", &r];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, FileSnap>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            walk(root, &e.path(), out);
        } else if m.is_file() {
            out.insert(
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                FileSnap {
                    bytes: std::fs::read(e.path()).unwrap(),
                    mode: m.mode() & 0o7777,
                    ino: m.ino(),
                    mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                },
            );
        }
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandport-patch"))
}

/// (id, outcome) of every patch.
pub fn outcomes(plan: &Plan) -> Vec<(String, Outcome)> {
    plan.results
        .iter()
        .map(|r| (r.id.clone(), r.outcome))
        .collect()
}

pub fn outcome(plan: &Plan, id: &str) -> Outcome {
    plan.results
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no patch {id}"))
        .outcome
}

pub fn reason(plan: &Plan, id: &str) -> String {
    plan.results
        .iter()
        .find(|r| r.id == id)
        .and_then(|r| r.reason.clone())
        .unwrap_or_default()
}

/// A patch table header.
pub fn patch(number: u32, id: &str, critical: bool, target: &str) -> String {
    format!(
        "\n[[patch]]\nnumber = {number}\nid = \"{id}\"\ndescription = \"test patch {id}\"\nwhy = \"test\"\ncritical = {critical}\ntarget = \"{target}\"\n"
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
