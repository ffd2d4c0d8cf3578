//! `sandport patch apply|check|status`.
//!
//! Exit codes:
//! * `apply`: 0 every critical patch is in place (non-critical problems are
//!   warned about on stderr); 1 a critical patch failed or was not applicable
//!   (nothing written), or writing failed.
//! * `check`: 0 nothing to do; 1 a critical patch would fail or not apply;
//!   3 `apply` would write something or a non-critical patch would fail or
//!   not apply.
//! * `status`: 0.
//! * all: 2 bad usage, invalid manifest or unusable root (nothing read or written).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::engine::{self, Plan};
use crate::manifest::Manifest;
use crate::report::{self, Report, RunResult};

/// First line of the stderr summary when a critical patch does not apply.
pub const CRITICAL_HEADER: &str = "CRITICAL PATCHES FAILED:";
/// First line of the stderr warning when only non-critical patches did not apply.
pub const WARNING_HEADER: &str = "WARNING: NON-CRITICAL PATCHES DID NOT APPLY:";
/// First line of the stderr summary of a `check` that found drift.
pub const CHECK_HEADER: &str = "CHECK FAILED: apply would change the tree:";

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a critical patch failed / was not applicable, or writing failed.
pub const EXIT_CRITICAL: u8 = 1;
/// Exit code: usage error, invalid manifest or root.
pub const EXIT_USAGE: u8 = 2;
/// Exit code (`check`): `apply` would change something or a non-critical patch would not apply.
pub const EXIT_DRIFT: u8 = 3;

/// Arguments of `sandport patch`.
#[derive(clap::Args, Debug, Clone)]
pub struct PatchArgs {
    #[command(subcommand)]
    pub command: PatchCommand,
}

/// The three patch commands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PatchCommand {
    /// Apply the manifest to the tree (all-or-nothing when a critical patch fails).
    Apply(CommonArgs),
    /// Change nothing; exit non-zero if `apply` would change anything or fail.
    Check(CommonArgs),
    /// Print the outcome of every patch without writing.
    Status(CommonArgs),
}

/// Options shared by every patch command.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// The TOML patch manifest.
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// The tree the manifest's target paths are relative to.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Write a JSON report (outcome and file hashes per patch) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print unified diffs of the planned changes; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Run a patch command; see the module documentation for exit codes.
pub fn run(args: PatchArgs) -> ExitCode {
    ExitCode::from(run_code(args))
}

/// Like [`run`], returning the exit code as a number.
pub fn run_code(args: PatchArgs) -> u8 {
    let (name, common) = match &args.command {
        PatchCommand::Apply(c) => ("apply", c),
        PatchCommand::Check(c) => ("check", c),
        PatchCommand::Status(c) => ("status", c),
    };
    match execute(name, common) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_USAGE
        }
    }
}

fn execute(name: &str, args: &CommonArgs) -> anyhow::Result<u8> {
    let manifest = Manifest::load(&args.manifest)?;
    let plan = engine::plan(&manifest, &args.root)?;

    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "sandport patch {name}: manifest {}, root {}",
        args.manifest.display(),
        args.root.display()
    );
    let _ = write!(stdout, "{}", report::table(&plan.results));
    if args.dry_run {
        let diff = plan.diff();
        if !diff.is_empty() {
            let _ = write!(stdout, "{diff}");
        }
    }

    let critical = plan.critical_problems();
    let others = plan.other_problems();
    let changes = plan.changes();
    let mut written: Vec<PathBuf> = Vec::new();
    let mut stderr = String::new();

    let (result, code) = if name == "status" {
        let _ = writeln!(
            stdout,
            "status: {} file(s) would be written; {} critical and {} other patch(es) would not apply",
            changes.len(),
            critical.len(),
            others.len()
        );
        if !critical.is_empty() {
            (RunResult::CriticalFailure, EXIT_OK)
        } else if !others.is_empty() {
            (RunResult::Warnings, EXIT_OK)
        } else {
            (RunResult::Ok, EXIT_OK)
        }
    } else if !critical.is_empty() {
        stderr.push_str(CRITICAL_HEADER);
        stderr.push('\n');
        stderr.push_str(&report::problem_lines(&critical));
        if !others.is_empty() {
            stderr.push_str("Non-critical patches that did not apply either:\n");
            stderr.push_str(&report::problem_lines(&others));
        }
        stderr.push_str("Nothing was written.\n");
        (RunResult::CriticalFailure, EXIT_CRITICAL)
    } else {
        match name {
            "check" => {
                if changes.is_empty() && others.is_empty() {
                    let _ = writeln!(stdout, "check: clean, apply would change nothing");
                    (RunResult::Ok, EXIT_OK)
                } else {
                    stderr.push_str(CHECK_HEADER);
                    stderr.push('\n');
                    for ch in &changes {
                        stderr.push_str(&format!("  would write {}\n", ch.path.display()));
                    }
                    stderr.push_str(&report::problem_lines(&others));
                    (RunResult::ChangesPending, EXIT_DRIFT)
                }
            }
            _ => apply(args, &plan, &changes, &others, &mut written, &mut stderr),
        }
    };
    let _ = stdout.flush();
    drop(stdout);

    let mut code = code;
    if let Some(path) = &args.report {
        let rep = Report::new(
            name,
            args.dry_run,
            &args.manifest,
            &args.root,
            &plan,
            &written,
            result,
            code,
        );
        let write = serde_json::to_vec_pretty(&rep)
            .map_err(std::io::Error::other)
            .and_then(|json| fs_err::write(path, json));
        if let Err(e) = write {
            stderr.push_str(&format!("error: cannot write the report: {e}\n"));
            if code == EXIT_OK {
                code = EXIT_CRITICAL;
            }
        }
    }
    if !stderr.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(stderr.as_bytes());
        let _ = err.flush();
    }
    Ok(code)
}

fn apply(
    args: &CommonArgs,
    plan: &Plan,
    changes: &[engine::FileChange],
    others: &[&engine::PatchResult],
    written: &mut Vec<PathBuf>,
    stderr: &mut String,
) -> (RunResult, u8) {
    let mut stdout = std::io::stdout().lock();
    if args.dry_run {
        let _ = writeln!(
            stdout,
            "dry run: {} file(s) would be written, nothing written",
            changes.len()
        );
    } else {
        for p in plan.remove_stale_temp_files() {
            let _ = writeln!(
                stdout,
                "removed temporary file left by an interrupted run: {}",
                p.display()
            );
        }
    }
    if args.dry_run {
        // Nothing to write.
    } else if changes.is_empty() {
        let _ = writeln!(stdout, "nothing to write: every patch is in place");
    } else {
        match plan.commit() {
            Ok(w) => {
                for p in &w {
                    let _ = writeln!(stdout, "wrote {}", p.display());
                }
                *written = w;
            }
            Err(e) => {
                stderr.push_str(&format!("WRITE FAILED: {e}\n"));
                if !e.written.is_empty() {
                    stderr.push_str("Already replaced (each complete, new content):\n");
                    for p in &e.written {
                        stderr.push_str(&format!("  {}\n", p.display()));
                    }
                }
                *written = e.written;
                return (RunResult::WriteFailed, EXIT_CRITICAL);
            }
        }
    }
    if others.is_empty() {
        (RunResult::Ok, EXIT_OK)
    } else {
        stderr.push_str(WARNING_HEADER);
        stderr.push('\n');
        stderr.push_str(&report::problem_lines(others));
        (RunResult::Warnings, EXIT_OK)
    }
}
