//! `sandbox-server`: the static test upstream that runs as PID 1 inside sandbox containers.
//!
//! Listens on every port of `SANDBOX_PORTS` (default `5000,8000,8001`) on `0.0.0.0` and serves
//! the endpoints documented in `sandport_testkit::sandbox_server`. Exits at once on SIGTERM or
//! SIGINT, so `docker stop` returns immediately.

use std::process::ExitCode;

use sandport_testkit::sandbox_server;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // Install the handlers first: as PID 1 the default action for SIGTERM is to ignore it.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let ports = sandbox_server::ports_from_env()?;
    let hostname = sandbox_server::hostname();
    let listeners = sandbox_server::bind_all(&ports).await?;
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        eprintln!("sandbox-server: listening on {}", listener.local_addr()?);
        servers.spawn(sandbox_server::serve(listener, hostname.clone()));
    }

    tokio::select! {
        _ = sigterm.recv() => eprintln!("sandbox-server: SIGTERM, exiting"),
        _ = sigint.recv() => eprintln!("sandbox-server: SIGINT, exiting"),
        Some(res) = servers.join_next() => {
            anyhow::bail!("a listener stopped: {res:?}");
        }
    }
    Ok(())
}
