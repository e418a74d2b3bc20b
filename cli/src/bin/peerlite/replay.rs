//! `peerlite replay`: rebuilds a recorded machine, checks its outputs, and explains the
//! session (the sync doctor).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerlite_proto::ReplicatorType;
use peerlite_proto::record::{
    self, Diagnosis, DiagnosisOptions, RecordedConfig, RecordingHeader, ReplayOutcome, Role,
};

/// What `peerlite replay` was asked.
#[derive(clap::Args, Debug)]
pub(crate) struct ReplayArgs {
    /// The recording (`sync --record FILE`, or `serve --record FILE`'s FILE.1, FILE.2, …).
    file: PathBuf,
    /// Follow one document through the session: announced, wanted, sent, stored,
    /// acknowledged, refused and why.
    #[arg(long, value_name = "ID")]
    doc: Option<String>,
    /// A wait longer than this, with something outstanding, is reported as a stall.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = crate::net::positive_seconds)]
    stall: f64,
    /// Show every request and answer, not the first and last ones.
    #[arg(long)]
    all: bool,
    /// Print the diagnosis as JSON, for tools.
    #[arg(long)]
    json: bool,
}

/// Replays, prints the diagnosis, and fails unless the outputs were identical.
pub(crate) fn run(args: &ReplayArgs) -> Result<(), String> {
    let file = &args.file;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (_, header) =
        record::RecordingReader::new(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut options = DiagnosisOptions::default();
    options.stall_threshold = Duration::from_secs_f64(args.stall);
    options.doc = args.doc.clone();
    let mut doctor = Diagnosis::new(options);
    let outcome = record::replay_observed(&bytes, Instant::now(), &mut doctor)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let verdict = verdict(file, &outcome, header.redacted);
    if let ReplayOutcome::NotReplayable(_) = outcome {
        return verdict.map(|_| ());
    }
    let report = doctor.finish();
    if args.json {
        let json = serde_json::json!({
            "recording": {
                "file": file.display().to_string(),
                "peerlite_version": header.peerlite_version,
                "role": format!("{:?}", header.role).to_lowercase(),
                "started_unix_ms": header.started_unix_ms,
                "session": session(&header),
            },
            "outputs": match &outcome {
                ReplayOutcome::Identical { steps, outputs } => serde_json::json!({
                    "identical": true, "steps": steps, "outputs": outputs,
                }),
                ReplayOutcome::Diverged { step, at_nanos, recorded, replayed } => serde_json::json!({
                    "identical": false, "diverged_at_step": step, "at_nanos": at_nanos,
                    "recorded": recorded, "replayed": replayed,
                }),
                _ => serde_json::Value::Null,
            },
            "diagnosis": report,
        });
        println!("{json:#}");
    } else {
        println!(
            "{}: {}, recorded by Peerlite {} at {}",
            file.display(),
            session(&header),
            header.peerlite_version,
            started(&header)
        );
        if args.all {
            print!("\n{report:#}");
        } else {
            print!("\n{report}");
        }
        if let Ok(line) = &verdict {
            println!("\n{line}");
        }
    }
    verdict.map(|_| ())
}

/// The replay's verdict: the line to print, or the error.
fn verdict(file: &Path, outcome: &ReplayOutcome, redacted: bool) -> Result<String, String> {
    match outcome {
        ReplayOutcome::Identical { steps, outputs } => Ok(format!(
            "outputs identical: {steps} steps, {outputs} outputs"
        )),
        ReplayOutcome::Diverged {
            step,
            at_nanos,
            recorded,
            replayed,
        } => Err(format!(
            "outputs diverged at step {step} ({:.3} s into the session): {recorded} outputs were recorded there, the replay gave {}",
            *at_nanos as f64 / 1e9,
            if replayed < recorded {
                format!("only {replayed}")
            } else {
                "different ones".into()
            }
        ) + if redacted {
            "\n(the recording is redacted: where a conflict was resolved with this side's body or a merge, the new revision's ID came from a body the recording no longer holds, and the replay stops there; the diagnosis above is right up to that step)"
        } else {
            ""
        }),
        ReplayOutcome::NotReplayable(why) => {
            Err(format!("{} cannot be replayed: {why}", file.display()))
        }
        other => Err(format!("{other:?}")),
    }
}

/// What was recorded, in a few words.
fn session(header: &RecordingHeader) -> String {
    match &header.config {
        Some(RecordedConfig::Active(c)) => {
            let kind = match c.replicator_type {
                ReplicatorType::Push => "push",
                ReplicatorType::Pull => "pull",
                ReplicatorType::PushAndPull => "push and pull",
            };
            let continuous = if c.continuous { ", continuous" } else { "" };
            format!(
                "a replicator ({kind}{continuous}) syncing with {}",
                c.remote_url
            )
        }
        Some(RecordedConfig::Passive { principal, .. }) => {
            let user = principal.name.as_deref().unwrap_or("anonymous");
            let access = if principal.read_only {
                ", read-only"
            } else {
                ""
            };
            format!("a listener's connection (user {user}{access})")
        }
        None => match header.role {
            Role::Active => "a replicator".into(),
            Role::Passive => "a listener's connection".into(),
        },
    }
}

fn started(header: &RecordingHeader) -> String {
    let nanos = i128::from(header.started_unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{} ms after the Unix epoch", header.started_unix_ms))
}
