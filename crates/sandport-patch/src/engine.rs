//! Planning (all patches evaluated in memory) and committing (atomic writes).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::content::{self, Eol};
use crate::manifest::{Manifest, Operation, Patch};
use crate::verify;

/// Outcome of one patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    AlreadyInPlace,
    NotApplicable,
    Failed,
}

impl Outcome {
    /// The name used in tables and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::AlreadyInPlace => "already_in_place",
            Outcome::NotApplicable => "not_applicable",
            Outcome::Failed => "failed",
        }
    }

    /// Failed or not applicable: a problem (fatal when the patch is critical).
    pub fn is_problem(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::NotApplicable)
    }
}

/// Hashes of one target around one patch.
#[derive(Debug, Clone, Serialize)]
pub struct FileHashes {
    /// Target path relative to the root.
    pub path: String,
    /// sha256 of the content before this patch (`null`: file absent).
    pub sha256_before: Option<String>,
    /// sha256 of the content after this patch (same as before unless applied).
    pub sha256_after: Option<String>,
}

/// Result of evaluating one patch.
#[derive(Debug, Clone, Serialize)]
pub struct PatchResult {
    pub number: u64,
    pub id: String,
    pub description: String,
    /// The recorded reason the patch exists.
    pub why: String,
    pub critical: bool,
    pub outcome: Outcome,
    /// Why the patch failed or was not applicable; `null` otherwise.
    pub reason: Option<String>,
    /// For regex patches that applied: the alternative that matched.
    pub alternative: Option<String>,
    pub files: Vec<FileHashes>,
}

/// A planned write of one file.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Path relative to the root.
    pub path: PathBuf,
    /// Content before (`None`: the file is created).
    pub before: Option<Vec<u8>>,
    pub after: Vec<u8>,
    pub mode_before: Option<u32>,
    pub mode_after: u32,
}

/// Errors that stop planning before any patch is evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("root {0} is not a directory")]
    RootNotDir(PathBuf),
}

/// A failure while writing the planned changes.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommitError {
    pub message: String,
    /// Files already replaced when the failure happened (relative paths).
    pub written: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
enum Resolution {
    /// A regular file (canonical parent + name).
    File(PathBuf),
    /// Does not exist, parent directory exists.
    Absent(PathBuf),
    /// Parent directory missing; the deepest existing ancestor is inside the root.
    ParentMissing(PathBuf),
    /// Anything that makes the target unusable.
    Bad(String),
}

impl Resolution {
    fn path(&self) -> Option<&Path> {
        match self {
            Resolution::File(p) | Resolution::Absent(p) | Resolution::ParentMissing(p) => Some(p),
            Resolution::Bad(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
struct FileState {
    resolution: Resolution,
    original: Option<Vec<u8>>,
    current: Option<Vec<u8>>,
    mode_before: Option<u32>,
    owner: Option<(u32, u32)>,
    desired_mode: Option<u32>,
    create_dirs: bool,
    writable: Option<Result<(), String>>,
}

impl FileState {
    fn bad(message: String) -> FileState {
        FileState {
            resolution: Resolution::Bad(message),
            original: None,
            current: None,
            mode_before: None,
            owner: None,
            desired_mode: None,
            create_dirs: false,
            writable: None,
        }
    }

    fn mode_after(&self) -> u32 {
        self.desired_mode.or(self.mode_before).unwrap_or(0o644)
    }

    fn changed(&self) -> bool {
        match &self.current {
            None => false,
            Some(cur) => {
                self.original.as_ref() != Some(cur)
                    || (self.original.is_some() && self.mode_before != Some(self.mode_after()))
            }
        }
    }
}

/// All patches evaluated against the tree, nothing written yet.
#[derive(Debug)]
pub struct Plan {
    root: PathBuf,
    pub results: Vec<PatchResult>,
    files: BTreeMap<PathBuf, FileState>,
}

/// Suffix of the temporary files written next to a target before the rename.
pub const TEMP_SUFFIX: &str = ".sandport-tmp";

/// sha256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

enum TargetResult {
    Already,
    Changed,
    NotApplicable(String),
    Failed(String),
}

/// Evaluate every patch of `manifest` against the tree at `root`, in memory.
/// Verify commands run here (on staged copies); the tree is not written.
pub fn plan(manifest: &Manifest, root: &Path) -> Result<Plan, PlanError> {
    let canon = fs_err::canonicalize(root).map_err(|e| PlanError::Root {
        path: root.to_path_buf(),
        source: e,
    })?;
    if !canon.is_dir() {
        return Err(PlanError::RootNotDir(root.to_path_buf()));
    }
    let mut plan = Plan {
        root: canon,
        results: Vec::with_capacity(manifest.patches.len()),
        files: BTreeMap::new(),
    };
    for patch in &manifest.patches {
        let result = plan.evaluate(patch);
        plan.results.push(result);
    }
    Ok(plan)
}

impl Plan {
    fn state(&mut self, rel: &Path) -> &mut FileState {
        if !self.files.contains_key(rel) {
            let mut st = load_state(&self.root, rel);
            // Two spellings of one file (through a symbolic link to a
            // directory) would be planned separately and the second write
            // would undo the first: refuse the second spelling.
            if let Some(path) = st.resolution.path() {
                let other = self
                    .files
                    .iter()
                    .find(|(_, o)| o.resolution.path() == Some(path))
                    .map(|(r, _)| r.clone());
                if let Some(other) = other {
                    st = FileState::bad(format!(
                        "is the same file as {}; name it one way in the manifest",
                        other.display()
                    ));
                }
            }
            self.files.insert(rel.to_path_buf(), st);
        }
        // Inserted just above.
        self.files
            .get_mut(rel)
            .unwrap_or_else(|| unreachable!("state inserted above"))
    }

    fn evaluate(&mut self, patch: &Patch) -> PatchResult {
        // Snapshot of every target, restored if the patch does not apply.
        let mut snapshot = Vec::new();
        for t in &patch.targets {
            let st = self.state(t).clone();
            snapshot.push((t.clone(), st));
        }
        let before: Vec<Option<String>> = snapshot
            .iter()
            .map(|(_, st)| st.current.as_deref().map(sha256_hex))
            .collect();

        let mut alternative = None;
        let mut results = Vec::new();
        for t in &patch.targets {
            let r = self.apply_to_target(patch, t, &mut alternative);
            results.push((t.clone(), r));
        }

        let failed: Vec<String> = results
            .iter()
            .filter_map(|(t, r)| match r {
                TargetResult::Failed(m) => Some(format!("{}: {m}", t.display())),
                _ => None,
            })
            .collect();
        let not_applicable: Vec<String> = results
            .iter()
            .filter_map(|(t, r)| match r {
                TargetResult::NotApplicable(m) => Some(format!("{}: {m}", t.display())),
                _ => None,
            })
            .collect();
        let changed: Vec<PathBuf> = results
            .iter()
            .filter(|(_, r)| matches!(r, TargetResult::Changed))
            .map(|(t, _)| t.clone())
            .collect();

        let (mut outcome, mut reason) = if !failed.is_empty() {
            (Outcome::Failed, Some(failed.join("; ")))
        } else if !not_applicable.is_empty() {
            (Outcome::NotApplicable, Some(not_applicable.join("; ")))
        } else if !changed.is_empty() {
            (Outcome::Applied, None)
        } else {
            (Outcome::AlreadyInPlace, None)
        };

        if outcome == Outcome::Applied {
            if let Err(m) = self.check_changed_targets(patch, &changed) {
                outcome = Outcome::Failed;
                reason = Some(m);
            }
        }

        if outcome != Outcome::Applied {
            for (t, st) in snapshot {
                // Keep the cached write-permission answer, drop the content.
                let writable = self.files.get(&t).and_then(|s| s.writable.clone());
                let mut st = st;
                st.writable = writable;
                self.files.insert(t, st);
            }
            alternative = None;
        }

        let files = patch
            .targets
            .iter()
            .zip(before)
            .map(|(t, b)| FileHashes {
                path: t.to_string_lossy().into_owned(),
                sha256_before: b,
                sha256_after: self
                    .files
                    .get(t)
                    .and_then(|s| s.current.as_deref().map(sha256_hex)),
            })
            .collect();

        PatchResult {
            number: patch.number,
            id: patch.id.clone(),
            description: patch.description.clone(),
            why: patch.why.clone(),
            critical: patch.critical,
            outcome,
            reason,
            alternative,
            files,
        }
    }

    /// Write permission and verify command for the targets a patch changed.
    fn check_changed_targets(&mut self, patch: &Patch, changed: &[PathBuf]) -> Result<(), String> {
        for t in changed {
            let st = self.state(t);
            if st.writable.is_none() {
                st.writable = Some(check_writable(st));
            }
            if let Some(Err(m)) = &st.writable {
                return Err(format!("{}: {m}", t.display()));
            }
        }
        if let Some(v) = &patch.verify {
            for t in changed {
                let root = self.root.clone();
                let st = self.state(t);
                let content = st.current.clone().unwrap_or_default();
                let mode = st.mode_after();
                verify::run(v, &content, mode, &root, t)
                    .map_err(|m| format!("{}: {m}", t.display()))?;
            }
        }
        Ok(())
    }

    fn apply_to_target(
        &mut self,
        patch: &Patch,
        rel: &Path,
        alternative: &mut Option<String>,
    ) -> TargetResult {
        let st = self.state(rel);
        if let Operation::AddFile {
            content: want,
            mode,
            create_dirs,
        } = &patch.op
        {
            match &st.resolution {
                Resolution::Bad(m) => return TargetResult::Failed(m.clone()),
                Resolution::ParentMissing(_) if !create_dirs => {
                    return TargetResult::NotApplicable(
                        "parent directory does not exist (create_dirs = false)".into(),
                    )
                }
                _ => {}
            }
            if let Some(Err(m)) = read_if_needed(st) {
                return TargetResult::Failed(m);
            }
            let content_ok = st.current.as_ref() == Some(want);
            let mode_ok = match mode {
                None => true,
                Some(m) => st.current.is_some() && st.mode_after() == *m,
            };
            let post_ok = match &patch.post {
                None => true,
                Some(c) => st
                    .current
                    .as_deref()
                    .map(|cur| content::check_condition(c, cur).is_ok())
                    .unwrap_or(false),
            };
            if content_ok && mode_ok && post_ok {
                return TargetResult::Already;
            }
            if let Some(c) = &patch.post {
                if let Err(m) = content::check_condition(c, want) {
                    return TargetResult::Failed(format!(
                        "post-condition does not hold on the added content: {m}"
                    ));
                }
            }
            st.current = Some(want.clone());
            if let Some(m) = mode {
                st.desired_mode = Some(*m);
            }
            if *create_dirs {
                st.create_dirs = true;
            }
            return TargetResult::Changed;
        }

        match &st.resolution {
            Resolution::Bad(m) => return TargetResult::Failed(m.clone()),
            Resolution::Absent(_) | Resolution::ParentMissing(_) if st.current.is_none() => {
                return TargetResult::NotApplicable("target does not exist".into())
            }
            _ => {}
        }
        if let Some(Err(m)) = read_if_needed(st) {
            return TargetResult::Failed(m);
        }
        let Some(raw) = st.current.as_deref() else {
            return TargetResult::NotApplicable("target does not exist".into());
        };
        let eol = content::detect_eol(raw);
        let text = content::to_logical(raw, eol);

        if let Operation::Require(cond) = &patch.op {
            return match content::check_condition(cond, &text) {
                Ok(()) => TargetResult::Already,
                Err(m) => TargetResult::Failed(format!("requirement not met: {m}")),
            };
        }

        let Some(post) = &patch.post else {
            return TargetResult::Failed("no post-condition".into());
        };
        if content::check_condition(post, &text).is_ok() {
            return TargetResult::Already;
        }
        let new_text = match &patch.op {
            Operation::Replace {
                find,
                with,
                expect_matches,
            } => content::replace_literal(&text, find, with, *expect_matches),
            Operation::Regex { alternatives } => {
                content::replace_regex(&text, alternatives).map(|(t, name)| {
                    *alternative = Some(name);
                    t
                })
            }
            Operation::Insert {
                anchor,
                position,
                text: ins,
                expect_matches,
            } => content::insert(&text, anchor, *position, ins, *expect_matches),
            Operation::AddFile { .. } | Operation::Require(_) => {
                Err("internal: operation handled above".into())
            }
        };
        let new_text = match new_text {
            Ok(t) => t,
            Err(m) => return TargetResult::Failed(m),
        };
        if let Err(m) = content::check_condition(post, &new_text) {
            return TargetResult::Failed(format!(
                "post-condition does not hold after applying: {m}"
            ));
        }
        let new_raw = content::from_logical(&new_text, eol);
        if eol == Eol::Crlf && content::detect_eol(&new_raw) != Eol::Crlf {
            return TargetResult::Failed("result would not keep CRLF line endings".into());
        }
        st.current = Some(new_raw);
        TargetResult::Changed
    }

    /// Critical patches whose outcome is failed or not applicable.
    pub fn critical_problems(&self) -> Vec<&PatchResult> {
        self.results
            .iter()
            .filter(|r| r.critical && r.outcome.is_problem())
            .collect()
    }

    /// Non-critical patches whose outcome is failed or not applicable.
    pub fn other_problems(&self) -> Vec<&PatchResult> {
        self.results
            .iter()
            .filter(|r| !r.critical && r.outcome.is_problem())
            .collect()
    }

    /// The root as resolved (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every file whose final content or mode differs from the tree.
    pub fn changes(&self) -> Vec<FileChange> {
        self.files
            .iter()
            .filter(|(_, st)| st.changed())
            .map(|(p, st)| FileChange {
                path: p.clone(),
                before: st.original.clone(),
                after: st.current.clone().unwrap_or_default(),
                mode_before: st.mode_before,
                mode_after: st.mode_after(),
            })
            .collect()
    }

    /// sha256 of every file the plan touched: (path, on disk now, after a commit).
    pub fn file_hashes(&self) -> Vec<(PathBuf, Option<String>, Option<String>)> {
        self.files
            .iter()
            .filter(|(_, st)| st.original.is_some() || st.current.is_some())
            .map(|(p, st)| {
                (
                    p.clone(),
                    st.original.as_deref().map(sha256_hex),
                    st.current.as_deref().map(sha256_hex),
                )
            })
            .collect()
    }

    /// Unified diffs of all planned changes.
    pub fn diff(&self) -> String {
        let mut out = String::new();
        for ch in self.changes() {
            let name = ch.path.to_string_lossy();
            let old_label = if ch.before.is_some() {
                format!("a/{name}")
            } else {
                "/dev/null".to_string()
            };
            let new_label = format!("b/{name}");
            if ch.mode_before.is_some() && ch.mode_before != Some(ch.mode_after) {
                out.push_str(&format!(
                    "mode {name}: {:o} -> {:o}\n",
                    ch.mode_before.unwrap_or(0),
                    ch.mode_after
                ));
            }
            let before = ch.before.as_deref().unwrap_or(b"");
            if before == ch.after.as_slice() {
                continue;
            }
            let lossy =
                std::str::from_utf8(before).is_err() || std::str::from_utf8(&ch.after).is_err();
            if lossy {
                out.push_str(&format!(
                    "# {name}: not valid UTF-8; invalid bytes shown as U+FFFD\n"
                ));
            }
            let old = String::from_utf8_lossy(before);
            let new = String::from_utf8_lossy(&ch.after);
            let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
            out.push_str(
                &diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&old_label, &new_label)
                    .to_string(),
            );
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// Remove temporary files that an earlier, interrupted `apply` left
    /// next to this manifest's targets (`.NAME.XXXXXX.sandport-tmp`).
    /// Returns the paths removed.
    pub fn remove_stale_temp_files(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for st in self.files.values() {
            let (Resolution::File(p) | Resolution::Absent(p)) = &st.resolution else {
                continue;
            };
            let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                continue;
            };
            let prefix = format!(".{}.", name.to_string_lossy());
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.starts_with(&prefix)
                    && n.ends_with(TEMP_SUFFIX)
                    && e.file_type().map(|t| t.is_file()).unwrap_or(false)
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    removed.push(e.path());
                }
            }
        }
        removed
    }

    /// Write every planned change. Each file is written to a temporary file
    /// in its own directory (mode and owner set, synced) and only when all
    /// of them are ready are they renamed over their targets, so a failure
    /// while preparing leaves the tree untouched and no target is ever seen
    /// half-written.
    pub fn commit(&self) -> Result<Vec<PathBuf>, CommitError> {
        let mut created_dirs: Vec<PathBuf> = Vec::new();
        let result = self.stage_all(&mut created_dirs);
        let staged = match result {
            Ok(s) => s,
            Err(e) => {
                // Temporary files are removed when dropped; remove the
                // directories made for new files too (deepest first).
                for d in created_dirs.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
                return Err(e);
            }
        };
        let mut written = Vec::new();
        let mut dirs = Vec::new();
        for (rel, dest, tmp) in staged {
            if let Err(e) = tmp.persist(&dest) {
                return Err(CommitError {
                    message: format!(
                        "cannot rename temporary file over {}: {}",
                        dest.display(),
                        e.error
                    ),
                    written,
                });
            }
            if let Some(d) = dest.parent() {
                if !dirs.iter().any(|x: &PathBuf| x == d) {
                    dirs.push(d.to_path_buf());
                }
            }
            written.push(rel);
        }
        for d in dirs {
            // Make the renames durable; failing to sync a directory does not
            // undo them, so it is not an error.
            if let Ok(f) = std::fs::File::open(&d) {
                let _ = f.sync_all();
            }
        }
        Ok(written)
    }

    /// First phase of [`Plan::commit`]: every changed file written to a
    /// synced temporary file beside its target. Directories created for new
    /// files are pushed to `created_dirs` (outermost first).
    #[allow(clippy::type_complexity)]
    fn stage_all(
        &self,
        created_dirs: &mut Vec<PathBuf>,
    ) -> Result<Vec<(PathBuf, PathBuf, tempfile::NamedTempFile)>, CommitError> {
        let mut staged = Vec::new();
        for (rel, st) in &self.files {
            if !st.changed() {
                continue;
            }
            let fail = |m: String| CommitError {
                message: format!("{}: {m}; nothing was written", rel.display()),
                written: Vec::new(),
            };
            let dest = match &st.resolution {
                Resolution::File(p) | Resolution::Absent(p) => p.clone(),
                Resolution::ParentMissing(p) => {
                    let parent = p.parent().unwrap_or(&self.root);
                    let mut missing = Vec::new();
                    let mut d = parent.to_path_buf();
                    while !d.exists() && d.starts_with(&self.root) {
                        missing.push(d.clone());
                        if !d.pop() {
                            break;
                        }
                    }
                    for d in missing.into_iter().rev() {
                        fs_err::create_dir(&d).map_err(|e| fail(e.to_string()))?;
                        created_dirs.push(d);
                    }
                    p.clone()
                }
                Resolution::Bad(m) => return Err(fail(m.clone())),
            };
            let content = st.current.as_deref().unwrap_or_default();
            let tmp = stage_file(&dest, content, st.mode_after(), st.owner).map_err(fail)?;
            staged.push((rel.clone(), dest, tmp));
        }
        Ok(staged)
    }
}

fn stage_file(
    dest: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<tempfile::NamedTempFile, String> {
    let dir = dest
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", dest.display()))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    let tmp_path = tmp.path().to_path_buf();
    let io = |e: std::io::Error| format!("writing {}: {e}", tmp_path.display());
    tmp.as_file_mut().write_all(content).map_err(io)?;
    if let Some((uid, gid)) = owner {
        let meta = tmp.as_file().metadata().map_err(io)?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid)).map_err(|e| {
                format!(
                    "cannot give {} the owner {uid}:{gid} of the file it replaces: {e}",
                    tmp_path.display()
                )
            })?;
        }
    }
    // After chown, which may clear set-id bits.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    Ok(tmp)
}

fn read_if_needed(st: &mut FileState) -> Option<Result<(), String>> {
    if st.original.is_some() || st.current.is_some() {
        return None;
    }
    let Resolution::File(p) = &st.resolution else {
        return None;
    };
    match fs_err::read(p) {
        Ok(b) => {
            st.original = Some(b.clone());
            st.current = Some(b);
            Some(Ok(()))
        }
        Err(e) => {
            let m = format!("cannot read: {e}");
            st.resolution = Resolution::Bad(m.clone());
            Some(Err(m))
        }
    }
}

fn load_state(root: &Path, rel: &Path) -> FileState {
    let mut st = FileState::bad(String::new());
    st.resolution = resolve(root, rel);
    if let Resolution::File(p) = &st.resolution {
        match fs_err::symlink_metadata(p) {
            Ok(m) => {
                st.mode_before = Some(m.mode() & 0o7777);
                st.owner = Some((m.uid(), m.gid()));
            }
            Err(e) => st.resolution = Resolution::Bad(e.to_string()),
        }
    }
    if let Err(m) = read_if_needed(&mut st).unwrap_or(Ok(())) {
        st.resolution = Resolution::Bad(m);
    }
    st
}

/// Resolve a validated relative path under the canonical root, refusing any
/// escape through symbolic links and any final component that is not a
/// regular file.
fn resolve(root: &Path, rel: &Path) -> Resolution {
    let full = root.join(rel);
    let (Some(parent), Some(name)) = (full.parent(), full.file_name()) else {
        return Resolution::Bad("not a file path".into());
    };
    let canon_parent = match std::fs::canonicalize(parent) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Find the deepest existing ancestor and make sure it is inside.
            let mut anc = parent.to_path_buf();
            loop {
                if !anc.pop() {
                    return Resolution::Bad("no existing ancestor".into());
                }
                match std::fs::canonicalize(&anc) {
                    Ok(c) => {
                        if !c.starts_with(root) {
                            return Resolution::Bad(format!(
                                "{} resolves outside the root",
                                anc.display()
                            ));
                        }
                        if !c.is_dir() {
                            return Resolution::Bad(format!(
                                "{} is not a directory",
                                anc.display()
                            ));
                        }
                        return Resolution::ParentMissing(full);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Resolution::Bad(format!("{}: {e}", anc.display()));
                    }
                }
            }
        }
        Err(e) => return Resolution::Bad(format!("{}: {e}", parent.display())),
    };
    if !canon_parent.starts_with(root) {
        return Resolution::Bad(format!(
            "{} resolves outside the root (symbolic link)",
            parent.display()
        ));
    }
    if !canon_parent.is_dir() {
        return Resolution::Bad(format!("{} is not a directory", parent.display()));
    }
    let path = canon_parent.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => Resolution::Bad(format!(
            "{} is a symbolic link; refusing to replace it",
            path.display()
        )),
        Ok(m) if m.is_dir() => Resolution::Bad(format!("{} is a directory", path.display())),
        Ok(m) if !m.is_file() => {
            Resolution::Bad(format!("{} is not a regular file", path.display()))
        }
        Ok(_) => Resolution::File(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Resolution::Absent(path),
        Err(e) => Resolution::Bad(format!("{}: {e}", path.display())),
    }
}

/// Would this process be allowed to replace the file? The file's own write
/// bit is honoured (a read-only file is not silently replaced through its
/// directory), and the directory must allow creating the temporary file.
fn check_writable(st: &FileState) -> Result<(), String> {
    use rustix::fs::{access, Access};
    let denied = |p: &Path, what: &str, e: rustix::io::Errno| {
        Err(format!(
            "permission denied: cannot write {what} {}: {}",
            p.display(),
            std::io::Error::from(e)
        ))
    };
    match &st.resolution {
        Resolution::File(p) => {
            if let Err(e) = access(p, Access::WRITE_OK) {
                return denied(p, "file", e);
            }
            if let Some(d) = p.parent() {
                if let Err(e) = access(d, Access::WRITE_OK | Access::EXEC_OK) {
                    return denied(d, "directory", e);
                }
            }
            Ok(())
        }
        Resolution::Absent(p) => match p.parent() {
            Some(d) => match access(d, Access::WRITE_OK | Access::EXEC_OK) {
                Ok(()) => Ok(()),
                Err(e) => denied(d, "directory", e),
            },
            None => Ok(()),
        },
        Resolution::ParentMissing(p) => {
            let mut anc = p.clone();
            while anc.pop() {
                if anc.is_dir() {
                    return match access(&anc, Access::WRITE_OK | Access::EXEC_OK) {
                        Ok(()) => Ok(()),
                        Err(e) => denied(&anc, "directory", e),
                    };
                }
            }
            Ok(())
        }
        Resolution::Bad(m) => Err(m.clone()),
    }
}
