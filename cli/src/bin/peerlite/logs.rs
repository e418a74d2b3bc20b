//! Logs on standard error: `-v`/`-vv`/`-vvv`, `-q`, `RUST_LOG`, `--log-format json`.
//!
//! By default only warnings and errors are logged (a refused login, a retry, a document
//! not replicated); `-v` adds connections and sync sessions, `-vv` debugging detail.
//! `RUST_LOG` (e.g. `RUST_LOG=peerlite_runtime=debug`), when set, decides instead.
//! Passwords, `Authorization` headers and private keys are never logged at any level.

use clap::{Args, ValueEnum};
use tracing::Level;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, registry};

/// Log options, accepted by every command.
#[derive(Args, Debug)]
pub(crate) struct LogArgs {
    /// Log more: -v connections and sync sessions, -vv debugging detail (to stderr).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log errors only.
    #[arg(short = 'q', long = "quiet", global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// How log lines are written.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, with the event's fields.
    Json,
}

/// Sends logs to standard error as `args` ask.
pub(crate) fn init(args: &LogArgs) {
    // Peerlite's own crates at the level asked for; the libraries under them (fjall's
    // recovery and compaction chatter) one notch quieter.
    let (ours, theirs) = match (args.quiet, args.verbose) {
        (true, _) => ("error", "error"),
        (false, 0) => ("warn", "warn"),
        (false, 1) => ("info", "warn"),
        (false, 2) => ("debug", "warn"),
        (false, _) => ("trace", "info"),
    };
    let directives = format!(
        "{theirs},peerlite={ours},peerlite_runtime={ours},peerlite_storage={ours},\
         peerlite_proto={ours},peerlite_cli={ours},peerlite_smol={ours},peerlite_tokio={ours}"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    // tungstenite logs the whole upgrade request, `Authorization` header included, at
    // trace level: never let that through, whatever RUST_LOG says.
    let no_secrets = filter_fn(|meta| {
        !(*meta.level() == Level::TRACE && meta.target().starts_with("tungstenite::handshake"))
    });
    let filter = filter.and(no_secrets);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => registry().with(layer.with_filter(filter)).try_init(),
        LogFormat::Json => registry()
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
    };
}
