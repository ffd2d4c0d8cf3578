//! Logging: one structured line per request (target `sandport::access`) plus operational
//! events, as text for people or JSON for collectors.
//!
//! Lines are written to stderr by a dedicated thread, through a bounded queue: a request
//! never waits for the terminal or a slow log collector. When the queue is full, lines are
//! dropped and counted (`sandport_log_lines_dropped_total`) rather than slowing requests.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

/// Lines the queue holds before it drops: about 4 MiB of access-log lines.
const QUEUED_LINES: usize = 16_384;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread running; dropping it writes out what is still queued, so hold it
/// until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber. Logs go to stderr so command output stays on stdout.
pub fn init(config: &LogSection) -> LogGuard {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("sandport-log")
        .finish(std::io::stderr());
    let counter = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_err() {
        return LogGuard { _writer: None };
    }
    let _ = DROPPED.set(counter);
    LogGuard {
        _writer: Some(guard),
    }
}

/// Log lines dropped because the queue was full, since start.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}
