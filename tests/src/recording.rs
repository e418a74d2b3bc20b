//! Field recordings in the simulator's tests: replay one and assert on what happened.
//!
//! A recording made with `peerlite sync --record` (or [`crate::World::record`]) becomes a
//! regression test: keep the file beside the test, replay it, and assert on the outcome
//! and the diagnosis. A recording replays only on the Peerlite version that made it.
//!
//! ```no_run
//! use peerlite_proto::record::{DiagnosisOptions, ReplayOutcome, Waiting};
//!
//! let replayed = peerlite_sim::replay_file("tests/recordings/phone-stall.rec", DiagnosisOptions::default())?;
//! assert!(matches!(replayed.outcome, ReplayOutcome::Identical { .. }));
//! let stall = &replayed.report.stalls[0];
//! assert!(stall.waiting_for.iter().any(|w| matches!(w, Waiting::Revisions { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::time::Instant;

use peerlite_proto::record::{
    self, Diagnosis, DiagnosisOptions, RecordingError, RecordingHeader, ReplayOutcome, Report,
};

/// What replaying a recording gave.
#[derive(Debug)]
#[non_exhaustive]
pub struct Replayed {
    /// The recording's header: who recorded what, with which version.
    pub header: RecordingHeader,
    /// Whether the machine gave the recorded outputs again.
    pub outcome: ReplayOutcome,
    /// The sync doctor's reading of the session.
    pub report: Report,
}

/// Why a recording could not be replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a readable recording.
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// Replays `bytes` (a recording) and diagnoses it, as `peerlite replay` does.
pub fn replay(bytes: &[u8], options: DiagnosisOptions) -> Result<Replayed, ReplayError> {
    let (_, header) = record::RecordingReader::new(bytes)?;
    let mut doctor = Diagnosis::new(options);
    #[allow(clippy::disallowed_methods)] // only a base the recorded offsets add to
    let base = Instant::now();
    let outcome = record::replay_observed(bytes, base, &mut doctor)?;
    Ok(Replayed {
        header,
        outcome,
        report: doctor.finish(),
    })
}

/// [`replay`] of the recording in `path`.
pub fn replay_file(
    path: impl AsRef<Path>,
    options: DiagnosisOptions,
) -> Result<Replayed, ReplayError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ReplayError::Read {
        path: path.display().to_string(),
        source,
    })?;
    replay(&bytes, options)
}
