//! Stand-alone `sandport-patch` binary: the same command as `sandport patch`.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "sandport-patch",
    about = "Apply, check or show a patch manifest"
)]
struct Cli {
    #[command(flatten)]
    args: sandport_patch::cli::PatchArgs,
}

fn main() -> std::process::ExitCode {
    sandport_patch::cli::run(Cli::parse().args)
}
