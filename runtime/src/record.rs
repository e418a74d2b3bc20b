//! Recording a state machine's inputs for the sync doctor (`peerlite_proto::record`):
//! every input, timer firing and command the machine is given, with its time.
//!
//! The drive loop encodes each step straight into a shared buffer; a writer thread
//! takes the buffer and writes it to the file, at most every [`WRITE_EVERY`] while there
//! is something to write and not at all while there is not. So the loop never waits for
//! the disk, and a process killed in the middle of a wait (a stalled session) has its
//! recording on disk up to that wait.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use peerlite_proto::record::{self, RecordedConfig, RecordingHeader, StepKind, Tape};
use peerlite_proto::{Input, Output};

/// Where a replicator or a listener records, and how much.
///
/// What is recorded is what the state machine receives: frames (document bodies
/// included — the peer sent them), storage replies, local-change notices, timer firings,
/// start, stop and close. Credentials never are: authentication happens in the HTTP
/// upgrade before the machine exists. Files are created mode 0600.
///
/// ```
/// use peerlite_runtime::RecordOptions;
///
/// let mut record = RecordOptions::new("/var/lib/app/sync.rec");
/// record.max_bytes = 64 << 20;
/// record.max_files = 5;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordOptions {
    /// The file. A listener writes one file per connection: `PATH.1`, `PATH.2`, … (a
    /// restarted listener starts again at `PATH.1`).
    pub path: PathBuf,
    /// A recording stops (with a warning) before it would pass this many bytes: what it
    /// holds replays up to there. A session cannot be cut at its start instead, because
    /// a replay rebuilds the machine from the first step (default 256 MiB).
    pub max_bytes: u64,
    /// A listener keeps the recordings of its last this many connections and deletes
    /// older ones as new connections come (default 20; at most
    /// `max_files × max_bytes` on disk).
    pub max_files: u64,
    /// Replace document bodies and blob bytes by placeholders of the same length and
    /// shape (keys and blob references stay), for recordings of private data that are
    /// to be shared; they replay the same way (default false).
    pub redact: bool,
}

impl RecordOptions {
    /// Records to `path`: at most 256 MiB per file, a listener's last 20 connections.
    pub fn new(path: impl Into<PathBuf>) -> RecordOptions {
        RecordOptions {
            path: path.into(),
            max_bytes: 256 << 20,
            max_files: 20,
            redact: false,
        }
    }

    /// The file of a listener's connection number `n` (from 1), after deleting the one
    /// that falls out of the last `max_files`.
    pub(crate) fn connection_file(&self, n: u64) -> PathBuf {
        let file = |n: u64| PathBuf::from(format!("{}.{n}", self.path.display()));
        if let Some(old) = n.checked_sub(self.max_files.max(1))
            && old > 0
        {
            match std::fs::remove_file(file(old)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %file(old).display(), error = %e, "an old recording cannot be deleted");
                }
            }
        }
        file(n)
    }
}

/// How long the writer lets steps gather before writing them.
pub(crate) const WRITE_EVERY: Duration = Duration::from_millis(20);

/// What the drive loop and the writer thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<Pending>,
    /// Wakes the writer.
    wake: Condvar,
    /// Tells [`Recorder::sync`] that more was written.
    written: Condvar,
}

#[derive(Default)]
struct Pending {
    /// Encoded steps not written yet.
    bytes: Vec<u8>,
    /// The recorder is gone: write what is left and stop.
    closed: bool,
    /// Someone waits for everything to be written: write now.
    urgent: bool,
    /// Why the writer stopped, once it did.
    failed: Option<String>,
    /// Bytes handed to the writer so far, and bytes it wrote.
    appended: u64,
    durable: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An open recording.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
    tape: Tape,
    written: u64,
    max_bytes: u64,
    /// Set once the cap is reached or the writer failed: nothing more is recorded.
    ended: bool,
}

impl Recorder {
    /// Creates (or replaces) the file, writes the header with the configuration the
    /// machine is built with (at [`Recorder::start`]), and starts the writer.
    pub(crate) fn create(
        path: &Path,
        options: &RecordOptions,
        config: RecordedConfig,
    ) -> std::io::Result<Recorder> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut header = RecordingHeader::for_machine(config, started);
        header.redacted = options.redact;
        let header = record::encode_header(&header);
        file.write_all(&header)?;
        let shared = Arc::new(Shared::default());
        let writer = {
            let (shared, path) = (shared.clone(), path.to_owned());
            std::thread::Builder::new()
                .name("peerlite-record".into())
                .spawn(move || write_until_closed(&shared, file, &path))?
        };
        Ok(Recorder {
            shared,
            writer: Some(writer),
            path: path.to_owned(),
            tape: if options.redact {
                Tape::redacting(Instant::now())
            } else {
                Tape::new(Instant::now())
            },
            written: header.len() as u64,
            max_bytes: options.max_bytes,
            ended: false,
        })
    }

    /// When the recording starts: the time to build the machine at.
    pub(crate) fn start(&self) -> Instant {
        self.tape.start()
    }

    /// Counts an output taken from the machine (recorded as a digest before the next
    /// step).
    pub(crate) fn output(&mut self, output: &Output) {
        if !self.ended {
            self.tape.output(output);
        }
    }

    /// Records an input given to the machine at `now`.
    pub(crate) fn input(&mut self, now: Instant, input: &Input) {
        self.append(|tape, buf| tape.input(buf, now, input));
    }

    /// Records anything else done to the machine at `now`.
    pub(crate) fn step(&mut self, now: Instant, kind: StepKind) {
        self.append(|tape, buf| tape.step(buf, now, kind));
    }

    /// Before the loop waits: the outputs taken since the last step are recorded, and the
    /// writer will write everything within [`WRITE_EVERY`].
    pub(crate) fn flush(&mut self) {
        self.append(Tape::outputs_done);
    }

    /// Encodes steps into the shared buffer, unless they would pass the cap.
    fn append(&mut self, encode: impl FnOnce(&mut Tape, &mut Vec<u8>)) {
        if self.ended {
            return;
        }
        let mut pending = self.shared.lock();
        if let Some(why) = &pending.failed {
            self.ended = true;
            tracing::warn!(path = %self.path.display(), error = %why, "recording stopped: the file cannot be written");
            return;
        }
        let before = pending.bytes.len();
        encode(&mut self.tape, &mut pending.bytes);
        let added = (pending.bytes.len() - before) as u64;
        if self.written + added > self.max_bytes {
            pending.bytes.truncate(before);
            self.ended = true;
            tracing::warn!(
                path = %self.path.display(),
                max_bytes = self.max_bytes,
                "recording stopped: it reached its size limit (what was recorded replays up to there)"
            );
            return;
        }
        self.written += added;
        pending.appended += added;
        let wake = before == 0;
        drop(pending);
        // The writer sleeps only on an empty buffer: one wake per batch.
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// How long [`Recorder::sync`] waits for the writer before giving up on it.
const SYNC_WAIT: Duration = Duration::from_secs(5);

impl Recorder {
    /// Records the outputs taken so far and waits until the writer has written
    /// everything: called when a replicator stops, so that a program that exits once it
    /// has stopped leaves the whole recording behind.
    pub(crate) fn sync(&mut self) {
        self.flush();
        let deadline = Instant::now() + SYNC_WAIT;
        let mut pending = self.shared.lock();
        let target = pending.appended;
        pending.urgent = true;
        self.shared.wake.notify_one();
        while pending.durable < target && pending.failed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(path = %self.path.display(), "the recording is not all written: its file takes more than 5 s");
                return;
            }
            pending = self
                .shared
                .written
                .wait_timeout(pending, left)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: takes what the loop encoded and writes it, until the recorder is
/// dropped (then writes the rest) or a write fails.
fn write_until_closed(shared: &Shared, mut file: File, path: &Path) {
    let mut spare = Vec::new();
    loop {
        let closed = {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && !pending.closed {
                pending = shared.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
            }
            std::mem::swap(&mut pending.bytes, &mut spare);
            pending.closed
        };
        let result = file.write_all(&spare);
        {
            let mut pending = shared.lock();
            match &result {
                Ok(()) => pending.durable += spare.len() as u64,
                Err(e) => pending.failed = Some(e.to_string()),
            }
        }
        shared.written.notify_all();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "recording stopped: the file cannot be written");
            return;
        }
        spare.clear();
        if closed {
            let rest = std::mem::take(&mut shared.lock().bytes);
            if let Err(e) = file.write_all(&rest) {
                tracing::warn!(path = %path.display(), error = %e, "the end of the recording cannot be written");
            }
            return;
        }
        // Let steps gather, so a busy session is written in a few large writes; a sync
        // or the end cuts that short.
        let mut pending = shared.lock();
        let until = Instant::now() + WRITE_EVERY;
        while !pending.urgent && !pending.closed {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            pending = shared
                .wake
                .wait_timeout(pending, left)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
        pending.urgent = false;
    }
}
