//! The `sandport` command: serve, check-config, routes, explain, patch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sandport::config::{self, FileConfig, Secrets};
use sandport::{app, inspect, telemetry};

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "sandport",
    version,
    about = "Runtime gateway for AI-agent sandbox containers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default command). Without --config, embedded defaults apply.
    Serve {
        #[arg(long, env = "SANDPORT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file (and SANDPORT_* variables) and read the secret files it
    /// names; exit 64 naming the bad key.
    CheckConfig {
        file: PathBuf,
        /// Do not open the secret files: for checking a file on another machine than the one
        /// it runs on (paths such as /run/secrets/... exist only there).
        #[arg(long)]
        skip_secrets: bool,
    },
    /// List the sandboxes discovery sees.
    Routes {
        #[arg(long, env = "SANDPORT_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the routing decision for a URL as a user would get it, without sending traffic.
    Explain {
        url: String,
        #[arg(long)]
        user: String,
        #[arg(long, env = "SANDPORT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply, check or report verified patches to an upstream tree (see docs/patching.md).
    Patch(sandport_patch::cli::PatchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve { config: None });
    match command {
        Command::Serve { config } => with_config(config, |config| with_secrets(config, serve)),
        Command::CheckConfig { file, skip_secrets } => with_config(Some(file), |config| {
            let ok = |_, _| {
                println!("configuration OK");
                ExitCode::SUCCESS
            };
            if skip_secrets {
                ok(config, Secrets::default())
            } else {
                with_secrets(config, ok)
            }
        }),
        Command::Routes { config, json } => with_config(config, |config| routes(&config, json)),
        Command::Explain { url, user, config } => {
            with_config(config, |config| explain(&config, &url, &user))
        }
        Command::Patch(args) => sandport_patch::cli::run(args),
    }
}

fn with_config(path: Option<PathBuf>, then: impl FnOnce(FileConfig) -> ExitCode) -> ExitCode {
    match config::load(path.as_deref(), std::env::vars()) {
        Ok(config) => then(config),
        Err(error) => config_error(&error),
    }
}

/// Reads the secret files `config` names; a missing, empty or short one is a configuration
/// error like any other.
fn with_secrets(
    config: FileConfig,
    then: impl FnOnce(FileConfig, Secrets) -> ExitCode,
) -> ExitCode {
    match config::read_secrets(&config) {
        Ok(secrets) => then(config, secrets),
        Err(error) => config_error(&error),
    }
}

/// Reports a configuration error (the file, a variable or a secret file) and exits 64.
fn config_error(error: &config::ConfigError) -> ExitCode {
    eprintln!("sandport: configuration error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn serve(config: FileConfig, secrets: Secrets) -> ExitCode {
    let log = telemetry::init(&config.log);
    let result = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(app::run(config, secrets, shutdown_signal())));
    // the last lines (the drain's) are written before the process ends
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sandport: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn routes(config: &FileConfig, json: bool) -> ExitCode {
    let table = match runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(inspect::load_table(config)))
    {
        Ok(table) => table,
        Err(error) => {
            eprintln!("sandport: cannot read sandboxes: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        let sandboxes = table.sandboxes();
        let plain: Vec<_> = sandboxes.iter().map(|s| &**s).collect();
        let report = serde_json::json!({ "sandboxes": plain, "contested": table.contested() });
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("sandport: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", inspect::format_routes(&table));
    }
    ExitCode::SUCCESS
}

fn explain(config: &FileConfig, url: &str, user: &str) -> ExitCode {
    let result = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(inspect::load_table(config)))
        .and_then(|table| inspect::explain(config, &table, url, user));
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sandport: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT. SIGHUP, which would end the process by default (a closed
/// terminal, a log rotator), is logged and ignored: sandport has no configuration reload, and
/// a restart drains (docs/deploy.md).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        // Without handlers the process could not drain; wait forever rather than exit at once.
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => tracing::warn!(
                "SIGHUP ignored: sandport does not reload its configuration; restart it to apply changes"
            ),
        }
    }
}
