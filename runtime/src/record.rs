//! Recording a state machine's inputs for the sync doctor (`peerlite_proto::record`):
//! every input, timer firing and command the machine is given, with its time, written to
//! a file as it happens.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use peerlite_proto::record::{self, OutputDigest, RecordedConfig, RecordingHeader, Step, StepKind};
use peerlite_proto::{Input, Output};

/// Where a replicator or a listener records, and how much.
///
/// What is recorded is what the state machine receives: frames (document bodies
/// included — the peer sent them), storage replies, local-change notices, timer firings,
/// start, stop and close. Credentials never are: authentication happens in the HTTP
/// upgrade before the machine exists. Files are created mode 0600.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    /// The file. A listener writes one file per connection: `PATH.1`, `PATH.2`, …
    pub path: PathBuf,
    /// Recording stops (with a warning) once a file would pass this many bytes.
    pub max_bytes: u64,
}

impl RecordOptions {
    /// Records to `path`, at most 256 MiB.
    pub fn new(path: impl Into<PathBuf>) -> RecordOptions {
        RecordOptions {
            path: path.into(),
            max_bytes: 256 << 20,
        }
    }
}

/// An open recording.
pub(crate) struct Recorder {
    file: BufWriter<File>,
    path: PathBuf,
    start: Instant,
    written: u64,
    max_bytes: u64,
    /// Set once the cap is reached or a write failed: nothing more is written.
    ended: bool,
    /// The outputs taken from the machine since the last step.
    outputs: OutputDigest,
    /// The time of the last step, which its outputs are recorded at.
    last_at: u64,
}

impl Recorder {
    /// Creates (or replaces) the file and writes the header, with the configuration the
    /// machine is built with (at [`Recorder::start`]).
    pub(crate) fn create(
        path: &Path,
        max_bytes: u64,
        config: RecordedConfig,
    ) -> std::io::Result<Recorder> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let header = record::encode_header(&RecordingHeader::for_machine(config, started));
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&header)?;
        Ok(Recorder {
            file,
            path: path.to_owned(),
            start: Instant::now(),
            written: header.len() as u64,
            max_bytes,
            ended: false,
            outputs: OutputDigest::default(),
            last_at: 0,
        })
    }

    /// When the recording starts: the time to build the machine at.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// Counts an output taken from the machine (recorded as a digest before the next
    /// step).
    pub(crate) fn output(&mut self, output: &Output) {
        if !self.ended {
            self.outputs.add(output);
        }
    }

    /// Writes the step of the outputs taken since the last step, if any.
    fn outputs_step(&mut self) {
        if self.outputs.count() > 0 {
            let kind = self.outputs.take();
            let bytes = record::encode_step(&Step {
                at_nanos: self.last_at,
                kind,
            });
            self.write(&bytes);
        }
    }

    fn at(&mut self, now: Instant) -> u64 {
        self.last_at =
            u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.last_at
    }

    /// Records an input given to the machine at `now`.
    pub(crate) fn input(&mut self, now: Instant, input: &Input) {
        if !self.ended {
            self.outputs_step();
            let bytes = record::encode_input_step(self.at(now), input);
            self.write(&bytes);
        }
    }

    /// Records anything else done to the machine at `now`.
    pub(crate) fn step(&mut self, now: Instant, kind: StepKind) {
        if !self.ended {
            self.outputs_step();
            let bytes = record::encode_step(&Step {
                at_nanos: self.at(now),
                kind,
            });
            self.write(&bytes);
        }
    }

    /// Hands what is buffered to the operating system.
    pub(crate) fn flush(&mut self) {
        if !self.ended {
            self.outputs_step();
        }
        if !self.ended
            && let Err(e) = self.file.flush()
        {
            self.ended = true;
            tracing::warn!(path = %self.path.display(), error = %e, "recording stopped: the file cannot be written");
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.written + bytes.len() as u64 > self.max_bytes {
            self.ended = true;
            tracing::warn!(
                path = %self.path.display(),
                max_bytes = self.max_bytes,
                "recording stopped: it reached its size limit (what was recorded replays up to there)"
            );
            return;
        }
        if let Err(e) = self.file.write_all(bytes) {
            self.ended = true;
            tracing::warn!(path = %self.path.display(), error = %e, "recording stopped: the file cannot be written");
            return;
        }
        self.written += bytes.len() as u64;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}
