//! Logs on standard error: `-v`/`-vv`/`-vvv`, `-q`, `RUST_LOG`, `--log-format json`.
//!
//! By default only warnings and errors are logged (a refused login, a retry, a document
//! not replicated); `-v` adds connections and sync sessions, `-vv` debugging detail.
//! `RUST_LOG` (e.g. `RUST_LOG=peerlite_runtime=debug`), when set, decides instead.
//! Passwords, `Authorization` headers and private keys are never logged at any level.

use clap::{Args, ValueEnum};
use tracing::Level;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry, registry};

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
        (true, _) => (LevelFilter::ERROR, LevelFilter::ERROR),
        (false, 0) => (LevelFilter::WARN, LevelFilter::WARN),
        (false, 1) => (LevelFilter::INFO, LevelFilter::WARN),
        (false, 2) => (LevelFilter::DEBUG, LevelFilter::WARN),
        (false, _) => (LevelFilter::TRACE, LevelFilter::INFO),
    };
    // `RUST_LOG` needs EnvFilter's parser; the flags need only targets and levels, which
    // `Targets` holds without compiling EnvFilter's regular expressions (~2 MB resident).
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.is_empty())
        .and_then(|spec| EnvFilter::try_new(spec).ok());
    let levels: Box<dyn Filter<Registry> + Send + Sync> = match from_env {
        Some(filter) => Box::new(filter),
        None => {
            let mut targets = Targets::new().with_default(theirs);
            for ours_target in [
                "peerlite",
                "peerlite_runtime",
                "peerlite_storage",
                "peerlite_proto",
                "peerlite_cli",
                "peerlite_smol",
                "peerlite_tokio",
            ] {
                targets = targets.with_target(ours_target, ours);
            }
            Box::new(targets)
        }
    };
    // tungstenite logs the whole upgrade request, `Authorization` header included, at
    // trace level: never let that through, whatever RUST_LOG says.
    let no_secrets = filter_fn(|meta| {
        !(*meta.level() == Level::TRACE && meta.target().starts_with("tungstenite::handshake"))
    });
    let filter = levels.and(no_secrets);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => registry().with(layer.with_filter(filter)).try_init(),
        LogFormat::Json => registry()
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
    };
}
