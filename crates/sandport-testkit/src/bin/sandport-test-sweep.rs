//! `sandport-test-sweep [--all]`: removes Docker resources left behind by sandport tests.
//!
//! Without `--all`, only resources whose creating process is gone are removed, so it is safe to
//! run next to running tests. With `--all`, everything labelled `sandport.test=1` goes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let all = std::env::args().skip(1).any(|a| a == "--all");
    let result = if all {
        sandport_testkit::docker::sweep_all()
    } else {
        sandport_testkit::docker::sweep_leftovers()
    };
    match result {
        Ok(report) => {
            println!(
                "removed {} containers, {} networks, {} images",
                report.containers.len(),
                report.networks.len(),
                report.images.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sandport-test-sweep: {e:#}");
            ExitCode::FAILURE
        }
    }
}
