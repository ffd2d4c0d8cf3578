//! Running a patch's verify command on a staged copy of the patched file.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::manifest::Verify;

/// Run `verify` against `content`, staged in a private temporary directory
/// under the target's file name. `Err` carries the reason for the report.
pub fn run(
    verify: &Verify,
    content: &[u8],
    mode: u32,
    root: &Path,
    target: &Path,
) -> Result<(), String> {
    let stage = tempfile::Builder::new()
        .prefix("sandport-verify-")
        .tempdir()
        .map_err(|e| format!("cannot create a staging directory for verify: {e}"))?;
    let name = target
        .file_name()
        .ok_or_else(|| format!("target {} has no file name", target.display()))?;
    let staged = stage.path().join(name);
    fs_err::write(&staged, content).map_err(|e| format!("cannot stage file for verify: {e}"))?;
    fs_err::set_permissions(&staged, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| format!("cannot stage file for verify: {e}"))?;

    let subst = |arg: &str| {
        arg.replace("{file}", &staged.to_string_lossy())
            .replace("{root}", &root.to_string_lossy())
            .replace("{target}", &target.to_string_lossy())
    };
    let argv: Vec<String> = verify.argv.iter().map(|a| subst(a)).collect();
    let shown = verify.argv.join(" ");

    let out_path = stage.path().join(".verify-output");
    let out = fs_err::File::create(&out_path)
        .map_err(|e| format!("cannot capture verify output: {e}"))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot capture verify output: {e}"))?;

    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.into_parts().0))
        .stderr(Stdio::from(err.into_parts().0))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start verify command `{shown}`: {e}"))?;

    let limit = Duration::from_secs(verify.timeout_secs);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for verify command `{shown}`: {e}")),
        }
        if started.elapsed() >= limit {
            kill_group(&child);
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "verify command `{shown}` timed out after {} s (killed)",
                verify.timeout_secs
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The command may have left children behind in its group.
    kill_group(&child);

    if status.success() {
        return Ok(());
    }
    let output = fs_err::read(&out_path).unwrap_or_default();
    let output = String::from_utf8_lossy(&output);
    let tail: Vec<&str> = output.lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let code = match status.code() {
        Some(c) => format!("exit status {c}"),
        None => format!("{status}"),
    };
    Err(format!(
        "verify command `{shown}` failed with {code}{}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" | "))
        }
    ))
}

fn kill_group(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}
