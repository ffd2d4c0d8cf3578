//! The JSON report written by `--report` and the human-readable output.

use std::path::PathBuf;

use serde::Serialize;

use crate::engine::{Outcome, PatchResult, Plan};

/// Overall result of a run, as recorded in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// Every patch applied or already in place.
    Ok,
    /// Critical patches fine; some non-critical patch failed or was not applicable.
    Warnings,
    /// A critical patch failed or was not applicable; nothing written.
    CriticalFailure,
    /// `check` only: `apply` would change the tree (or a non-critical patch would not apply).
    ChangesPending,
    /// Writing the planned changes failed.
    WriteFailed,
}

/// Hashes of one file over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub path: String,
    /// On disk before the run (`null`: absent).
    pub sha256_before: Option<String>,
    /// What the plan would make of it.
    pub sha256_planned: Option<String>,
    /// On disk after the run (equals `sha256_before` unless it was written).
    pub sha256_after: Option<String>,
}

/// The `--report` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: u32,
    pub command: String,
    pub dry_run: bool,
    pub manifest: String,
    pub root: String,
    pub result: RunResult,
    pub exit_code: u8,
    /// Files replaced or created by this run (relative to the root).
    pub written: Vec<String>,
    pub files: Vec<FileSummary>,
    pub patches: Vec<PatchResult>,
}

impl Report {
    /// Build a report from a plan and what was written.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        command: &str,
        dry_run: bool,
        manifest: &std::path::Path,
        root: &std::path::Path,
        plan: &Plan,
        written: &[PathBuf],
        result: RunResult,
        exit_code: u8,
    ) -> Report {
        let files = plan
            .file_hashes()
            .into_iter()
            .map(|(p, before, planned)| {
                let after = if written.contains(&p) {
                    planned.clone()
                } else {
                    before.clone()
                };
                FileSummary {
                    path: p.to_string_lossy().into_owned(),
                    sha256_before: before,
                    sha256_planned: planned,
                    sha256_after: after,
                }
            })
            .collect();
        Report {
            format: 1,
            command: command.to_string(),
            dry_run,
            manifest: manifest.to_string_lossy().into_owned(),
            root: root.to_string_lossy().into_owned(),
            result,
            exit_code,
            written: written
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            files,
            patches: plan.results.clone(),
        }
    }
}

/// One line per patch, for stdout.
pub fn table(results: &[PatchResult]) -> String {
    let id_w = results.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let mut out = format!(
        "{:>4}  {:<16}  {:<8}  {:<id_w$}  DETAIL\n",
        "#", "OUTCOME", "CRITICAL", "ID"
    );
    for r in results {
        // A reason already names the file(s) it is about.
        let detail = match &r.reason {
            Some(reason) => reason.clone(),
            None => {
                let files: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
                let mut d = files.join(", ");
                if let Some(a) = &r.alternative {
                    d.push_str(&format!(" (alternative {a})"));
                }
                d
            }
        };
        out.push_str(&format!(
            "{:>4}  {:<16}  {:<8}  {:<id_w$}  {}\n",
            r.number,
            r.outcome.as_str(),
            if r.critical { "yes" } else { "no" },
            r.id,
            detail
        ));
    }
    out
}

/// `  #N id: outcome: reason` lines.
pub fn problem_lines(results: &[&PatchResult]) -> String {
    let mut out = String::new();
    for r in results {
        out.push_str(&format!(
            "  #{} {}: {}: {}\n",
            r.number,
            r.id,
            r.outcome.as_str(),
            r.reason.as_deref().unwrap_or(match r.outcome {
                Outcome::NotApplicable => "target absent",
                _ => "no reason recorded",
            })
        ));
    }
    out
}
