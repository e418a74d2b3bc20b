//! The recording format of the sync doctor: every input a state machine received, with
//! its time, so that a session from the field can be fed again to a machine built the
//! same way and produce the same outputs.
//!
//! A recording is [`MAGIC`], the format version as two big-endian bytes, then records,
//! each a big-endian `u32` length and that many bytes of CBOR: first a
//! [`RecordingHeader`], then [`Step`]s in the order they happened. Encoding and decoding
//! are pure (bytes in, bytes out); writing files is the runtime's.
//!
//! ```
//! use peerlite_proto::record::{self, RecordingHeader, Role, Step, StepKind};
//! use peerlite_proto::Input;
//!
//! let header = RecordingHeader::new(Role::Active, 1_764_700_000_000);
//! let mut file = record::encode_header(&header);
//! file.extend(record::encode_step(&Step { at_nanos: 0, kind: StepKind::Input(Input::Connected) }));
//! file.extend(record::encode_step(&Step { at_nanos: 1_500, kind: StepKind::Timeout }));
//!
//! let (mut reader, read) = record::RecordingReader::new(&file)?;
//! assert_eq!(read.role, Role::Active);
//! assert_eq!(reader.next_step()?.map(|s| s.at_nanos), Some(0));
//! assert_eq!(reader.next_step()?.map(|s| s.kind), Some(StepKind::Timeout));
//! assert_eq!(reader.next_step()?, None);
//! # Ok::<(), record::RecordingError>(())
//! ```

mod doctor;
mod redact;
mod replay;
mod tape;

pub use doctor::{Diagnosis, DiagnosisOptions, DocStep, Exchange, Phase, Report, Stall, Waiting};
pub use redact::{redact_body, redact_frame, redact_input, redact_output};
pub use replay::{Observer, ReplayOutcome, replay, replay_observed};
pub use tape::Tape;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::{Input, Output, PassiveConfig, Principal, ReplicatorConfig};

/// The first bytes of every recording.
pub const MAGIC: &[u8; 8] = b"PLRECORD";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 2;

/// The largest record accepted: a frame at the largest frame limit with room to spare.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Which side of a connection was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The replicator (`ActiveReplicator`).
    Active,
    /// A listener's connection (`PassivePeer`).
    Passive,
}

/// What a recording starts with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordingHeader {
    /// The Peerlite version that recorded it (a replay on another version may diverge,
    /// and says so).
    pub peerlite_version: String,
    /// The side recorded.
    pub role: Role,
    /// Wall-clock time of the first step, milliseconds since the Unix epoch (for the
    /// reader; replay runs on the offsets).
    pub started_unix_ms: u64,
    /// What the machine was built with, for a replay to build it again.
    #[serde(default)]
    pub config: Option<RecordedConfig>,
    /// The application callbacks the machine had (filters, conflict resolvers, a
    /// validator): their verdicts are not recorded, so such a recording does not replay.
    #[serde(default)]
    pub callbacks: Vec<String>,
    /// Document bodies and blob bytes were replaced by placeholders
    /// ([`redact_input`]): a replay skips checking revision IDs against bodies and
    /// compares redacted outputs.
    #[serde(default)]
    pub redacted: bool,
}

/// The configuration a recorded machine was built with (its callbacks left out).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RecordedConfig {
    /// An [`ActiveReplicator`](crate::ActiveReplicator)'s.
    Active(ReplicatorConfig),
    /// A [`PassivePeer`](crate::PassivePeer)'s, with the principal it served.
    Passive {
        /// Its configuration.
        config: PassiveConfig,
        /// Who it served.
        principal: Principal,
    },
}

impl RecordedConfig {
    /// The application callbacks the configuration holds, named.
    pub fn callbacks(&self) -> Vec<String> {
        let mut names = Vec::new();
        match self {
            RecordedConfig::Active(config) => {
                for c in &config.collections {
                    for (present, what) in [
                        (c.push_filter.is_some(), "push filter"),
                        (c.pull_filter.is_some(), "pull filter"),
                        (c.conflict_resolver.is_some(), "conflict resolver"),
                    ] {
                        if present {
                            names.push(format!("a {what} on {}", c.name));
                        }
                    }
                }
            }
            RecordedConfig::Passive { config, .. } => {
                if config.validator.is_some() {
                    names.push("a validator".into());
                }
            }
        }
        names
    }
}

impl RecordingHeader {
    /// A header for a recording made by this build, without a configuration (such a
    /// recording can be read but not replayed).
    pub fn new(role: Role, started_unix_ms: u64) -> RecordingHeader {
        RecordingHeader {
            peerlite_version: env!("CARGO_PKG_VERSION").to_owned(),
            role,
            started_unix_ms,
            config: None,
            callbacks: Vec::new(),
            redacted: false,
        }
    }

    /// A header for a machine built with `config`: a recording a replay can rebuild.
    pub fn for_machine(config: RecordedConfig, started_unix_ms: u64) -> RecordingHeader {
        let role = match config {
            RecordedConfig::Active(_) => Role::Active,
            RecordedConfig::Passive { .. } => Role::Passive,
        };
        RecordingHeader {
            callbacks: config.callbacks(),
            config: Some(config),
            ..RecordingHeader::new(role, started_unix_ms)
        }
    }
}

/// The digest of the outputs a machine gave between two steps: what a recording holds
/// of them ([`StepKind::Outputs`]) and a replay compares. XXH3-128 (a replay checks
/// equality, nothing adversarial) over each frame's bytes, each storage operation's CBOR
/// encoding, each replicated document's collection, ID, revision and outcome, and the
/// full debug form of the rare rest (connects, statuses, closes), which is the same for
/// the same outputs within one Peerlite version.
#[derive(Clone)]
pub struct OutputDigest {
    hasher: Xxh3,
    count: u32,
    redacting: bool,
}

impl Default for OutputDigest {
    fn default() -> Self {
        OutputDigest {
            hasher: Xxh3::new(),
            count: 0,
            redacting: false,
        }
    }
}

impl std::fmt::Debug for OutputDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputDigest")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl OutputDigest {
    /// A digest of outputs with their bodies and blob bytes redacted ([`redact_output`]),
    /// for a redacted recording.
    pub fn redacting() -> OutputDigest {
        OutputDigest {
            redacting: true,
            ..OutputDigest::default()
        }
    }

    /// Adds one output.
    pub fn add(&mut self, output: &Output) {
        if self.redacting {
            let redacted = redact_output(output);
            self.add_as_is(&redacted);
        } else {
            self.add_as_is(output);
        }
    }

    fn add_as_is(&mut self, output: &Output) {
        let h = &mut self.hasher;
        match output {
            // Frames, the bulk of a session, are hashed as they are.
            Output::Send(frame) => {
                h.update(b"send");
                h.update(&(frame.len() as u64).to_be_bytes());
                h.update(frame);
            }
            // The next bulk, revisions to insert, field by field (an encoder's call per
            // field costs more than hashing the bodies).
            Output::Storage(
                id,
                crate::StorageOp::InsertRevisions {
                    collection,
                    inserts,
                },
            ) => {
                h.update(b"insert");
                h.update(&id.0.to_be_bytes());
                hash_str(h, collection.as_str());
                for insert in inserts {
                    hash_str(h, insert.doc_id.as_str());
                    h.update(format!("{:?}", insert.mode).as_bytes());
                    for r in &insert.revisions {
                        hash_rev(h, &r.rev);
                        h.update(&[u8::from(r.deleted)]);
                        h.update(&(r.body.len() as u64).to_be_bytes());
                        h.update(r.body.as_bytes());
                        for list in [&r.history, &r.deleted_ancestors] {
                            h.update(&(list.len() as u64).to_be_bytes());
                            list.iter().for_each(|a| hash_rev(h, a));
                        }
                    }
                }
            }
            // Other storage operations, encoded straight into the hash: a debug form
            // would escape every byte of a blob's chunk.
            Output::Storage(id, op) => {
                h.update(b"storage");
                h.update(&id.0.to_be_bytes());
                // Encoding plain data into a hash cannot fail.
                let _ = ciborium::into_writer(op, HashWriter(h));
            }
            // One event per replicated document: their fields, not their debug form.
            Output::Event(crate::Event::Documents(docs)) => {
                h.update(b"documents");
                for d in docs {
                    hash_str(h, d.collection.as_str());
                    hash_str(h, d.doc_id.as_str());
                    hash_rev(h, &d.rev);
                    let flags = [
                        u8::from(d.direction == crate::Direction::Pull),
                        u8::from(d.deleted),
                        u8::from(d.conflict_resolved),
                        u8::from(d.already_had),
                    ];
                    h.update(&flags);
                    match &d.error {
                        None => h.update(&[0]),
                        Some(e) => {
                            h.update(format!("{e:?}").as_bytes());
                            h.update(&[0]);
                        }
                    }
                }
            }
            other => {
                h.update(format!("{other:?}").as_bytes());
                h.update(&[0]);
            }
        }
        self.count = self.count.saturating_add(1);
    }

    /// How many outputs were added.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The step that records them, and a fresh digest for the next ones.
    pub fn take(&mut self) -> StepKind {
        let fresh = OutputDigest {
            redacting: self.redacting,
            ..OutputDigest::default()
        };
        let done = std::mem::replace(self, fresh);
        StepKind::Outputs {
            count: done.count,
            digest: done.hasher.digest128().to_be_bytes(),
        }
    }
}

fn hash_str(h: &mut Xxh3, s: &str) {
    h.update(&(s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn hash_rev(h: &mut Xxh3, rev: &crate::RevId) {
    h.update(&rev.generation().to_be_bytes());
    h.update(rev.digest());
}

/// Feeds what is written to it to a hash.
struct HashWriter<'a>(&'a mut Xxh3);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One thing that happened to the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Nanoseconds since the recording's first step (the exact differences between the
    /// times the machine saw, which its outputs may depend on).
    pub at_nanos: u64,
    /// What happened.
    pub kind: StepKind,
}

/// What a [`Step`] was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StepKind {
    /// `handle_input` with this input.
    Input(Input),
    /// `handle_timeout`.
    Timeout,
    /// The replicator was started (`start`, or `start_with_reset` when `reset`).
    Start {
        /// Whether its checkpoints were reset.
        reset: bool,
    },
    /// The replicator was asked to stop (`stop`).
    Stop,
    /// The passive peer was told to close (`close`): the listener is stopping.
    Close {
        /// The close code.
        code: crate::CloseCode,
        /// The close message.
        message: String,
    },
    /// The outputs drained after the previous step: how many, and their
    /// [`OutputDigest`], for a replay to compare against.
    Outputs {
        /// How many outputs.
        count: u32,
        /// Their digest ([`OutputDigest`]).
        digest: [u8; 16],
    },
}

/// Why bytes are not a readable recording. The reader never panics on any input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// The bytes do not start with [`MAGIC`].
    #[error("not a Peerlite recording (it does not start with {MAGIC:?})")]
    NotARecording,
    /// Another version of the format.
    #[error(
        "recording format {found} is not the format {supported} this build reads: replay it with the Peerlite version that recorded it"
    )]
    UnsupportedFormat {
        /// The file's version.
        found: u16,
        /// This build's.
        supported: u16,
    },
    /// The bytes end inside a record (a recording cut off, e.g. by a crash).
    #[error(
        "the recording is cut off at byte {offset}: a record of {wanted} bytes has only {have}"
    )]
    Truncated {
        /// Where the record starts.
        offset: usize,
        /// Bytes the record needs.
        wanted: usize,
        /// Bytes left.
        have: usize,
    },
    /// A record longer than [`MAX_RECORD_BYTES`].
    #[error("the record at byte {offset} claims {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Where the record starts.
        offset: usize,
        /// Its claimed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A record that does not decode.
    #[error("the record at byte {offset} is malformed: {reason}")]
    Malformed {
        /// Where the record starts.
        offset: usize,
        /// What the decoder said.
        reason: String,
    },
}

/// The start of a recording: [`MAGIC`], the version, and the header record.
pub fn encode_header(header: &RecordingHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    push_record(&mut out, header);
    out
}

/// One step's record.
pub fn encode_step(step: &Step) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    append_step(&mut out, step);
    out
}

/// Appends one step's record to `out` (what a recorder calls, to write without a copy).
pub fn append_step(out: &mut Vec<u8>, step: &Step) {
    push_record(out, step);
}

/// The record of an input step, encoded from a borrowed input; it reads back as
/// `Step { at_nanos, kind: StepKind::Input(input.clone()) }`.
pub fn encode_input_step(at_nanos: u64, input: &Input) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    append_input_step(&mut out, at_nanos, input);
    out
}

/// Appends [`encode_input_step`]'s record to `out`: what a recorder calls on every input,
/// without cloning it or copying its encoding.
pub fn append_input_step(out: &mut Vec<u8>, at_nanos: u64, input: &Input) {
    // The same names and shape as `Step` and `StepKind::Input`, borrowed.
    #[derive(Serialize)]
    #[serde(rename = "Step")]
    struct StepRef<'a> {
        at_nanos: u64,
        kind: KindRef<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename = "StepKind")]
    enum KindRef<'a> {
        Input(&'a Input),
    }
    push_record(
        out,
        &StepRef {
            at_nanos,
            kind: KindRef::Input(input),
        },
    );
}

fn push_record<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    // Serializing plain data into a Vec cannot fail.
    if ciborium::into_writer(value, &mut *out).is_err() {
        out.truncate(at);
        return;
    }
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Reads a recording's steps, one at a time.
#[derive(Debug)]
pub struct RecordingReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> RecordingReader<'a> {
    /// Checks the magic and the version and reads the header.
    pub fn new(bytes: &'a [u8]) -> Result<(RecordingReader<'a>, RecordingHeader), RecordingError> {
        if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(RecordingError::NotARecording);
        }
        let found = u16::from_be_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
        if found != FORMAT_VERSION {
            return Err(RecordingError::UnsupportedFormat {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let mut reader = RecordingReader {
            bytes,
            pos: MAGIC.len() + 2,
        };
        let header = reader.record()?.ok_or(RecordingError::Truncated {
            offset: reader.pos,
            wanted: 4,
            have: 0,
        })?;
        Ok((reader, header))
    }

    /// The next step, or `None` at the end.
    pub fn next_step(&mut self) -> Result<Option<Step>, RecordingError> {
        self.record()
    }

    fn record<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, RecordingError> {
        let offset = self.pos;
        let rest = &self.bytes[offset..];
        if rest.is_empty() {
            return Ok(None);
        }
        let Some((len, body)) = rest.split_first_chunk::<4>() else {
            return Err(RecordingError::Truncated {
                offset,
                wanted: 4,
                have: rest.len(),
            });
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(RecordingError::TooLarge {
                offset,
                len,
                max: MAX_RECORD_BYTES,
            });
        }
        let Some(record) = body.get(..len) else {
            return Err(RecordingError::Truncated {
                offset,
                wanted: len,
                have: body.len(),
            });
        };
        let value = ciborium::from_reader(record).map_err(|e| RecordingError::Malformed {
            offset,
            reason: e.to_string(),
        })?;
        self.pos = offset + 4 + len;
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::{
        Change, CollectionName, Disconnect, DocId, InsertOutcome, OpId, RevId, RevsDiff, Seq,
        StorageFailure, StorageReply,
    };

    fn rev(n: u64) -> RevId {
        RevId::from_parts(n, [n as u8; crate::DIGEST_LEN]).unwrap()
    }

    fn sample() -> (RecordingHeader, Vec<Step>) {
        let header = RecordingHeader::new(Role::Passive, 1_764_700_000_123);
        let kinds = vec![
            StepKind::Input(Input::Frame(Bytes::from_static(b"\x82\x01\xa0"))),
            StepKind::Outputs {
                count: 2,
                digest: [7; 16],
            },
            StepKind::Input(Input::Storage(
                OpId(3),
                StorageReply::Changes(vec![Change {
                    seq: Seq(9),
                    doc_id: DocId::new("a/b c").unwrap(),
                    rev: rev(2),
                    deleted: false,
                    other_leaves: vec![rev(1)],
                }]),
            )),
            StepKind::Input(Input::Storage(
                OpId(4),
                StorageReply::RevsDiff(vec![
                    RevsDiff::Present,
                    RevsDiff::Missing {
                        leaves: vec![rev(3)],
                    },
                ]),
            )),
            StepKind::Input(Input::Storage(
                OpId(5),
                StorageReply::Inserted(vec![
                    InsertOutcome::Conflict { current: None },
                    InsertOutcome::Invalid(crate::RevisionError::BlobReference {
                        rev: rev(4),
                        error: crate::BlobRefError::Missing("length"),
                    }),
                ]),
            )),
            StepKind::Input(Input::Storage(
                OpId(6),
                StorageReply::Failed(StorageFailure {
                    message: "disk full".into(),
                    transient: true,
                }),
            )),
            StepKind::Input(Input::LocalChange(CollectionName::default(), Seq(10))),
            StepKind::Timeout,
            StepKind::Input(Input::Disconnected(Disconnect {
                message: "reset".into(),
                retryable: true,
                retry_after: Some(std::time::Duration::from_millis(1500)),
            })),
        ];
        let steps = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Step {
                at_nanos: i as u64 * 250,
                kind,
            })
            .collect();
        (header, steps)
    }

    fn encode(header: &RecordingHeader, steps: &[Step]) -> Vec<u8> {
        let mut file = encode_header(header);
        for s in steps {
            file.extend(encode_step(s));
        }
        file
    }

    /// The header (as its encoding, comparable) and the steps.
    fn read_all(bytes: &[u8]) -> Result<(Vec<u8>, Vec<Step>), RecordingError> {
        let (mut reader, header) = RecordingReader::new(bytes)?;
        let mut steps = Vec::new();
        while let Some(step) = reader.next_step()? {
            steps.push(step);
        }
        Ok((encode_header(&header), steps))
    }

    #[test]
    fn every_kind_of_input_reads_back_as_written() {
        let (header, steps) = sample();
        assert_eq!(
            read_all(&encode(&header, &steps)).unwrap(),
            (encode_header(&header), steps)
        );
    }

    #[test]
    fn an_input_step_encoded_from_a_borrow_reads_back_as_the_owned_step() {
        let (_, steps) = sample();
        for step in steps {
            if let StepKind::Input(input) = &step.kind {
                let bytes = encode_input_step(step.at_nanos, input);
                assert_eq!(bytes, encode_step(&step));
            }
        }
    }

    #[test]
    fn a_cut_recording_says_where_and_a_whole_prefix_reads_as_far_as_it_goes() {
        let (header, steps) = sample();
        let file = encode(&header, &steps);
        let mut boundaries = vec![encode_header(&header).len()];
        for s in &steps {
            boundaries.push(boundaries[boundaries.len() - 1] + encode_step(s).len());
        }
        for cut in 0..file.len() {
            match read_all(&file[..cut]) {
                Ok((_, read)) => {
                    assert!(boundaries.contains(&cut), "a cut at {cut} read as whole");
                    assert_eq!(read[..], steps[..read.len()]);
                }
                Err(RecordingError::NotARecording) => assert!(cut < MAGIC.len() + 2),
                Err(RecordingError::Truncated { .. }) => assert!(!boundaries.contains(&cut)),
                Err(other) => panic!("cut at {cut}: {other}"),
            }
        }
    }

    #[test]
    fn foreign_bytes_other_versions_and_huge_lengths_are_refused_by_name() {
        assert_eq!(
            read_all(b"{\"not\": 1}").unwrap_err(),
            RecordingError::NotARecording
        );
        let (header, steps) = sample();
        let mut file = encode(&header, &steps);
        file[MAGIC.len() + 1] = 9;
        assert_eq!(
            read_all(&file).unwrap_err(),
            RecordingError::UnsupportedFormat {
                found: 9,
                supported: FORMAT_VERSION
            }
        );
        let mut file = encode_header(&header);
        let at = file.len();
        file.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            read_all(&file).unwrap_err(),
            RecordingError::TooLarge { offset, .. } if offset == at
        ));
        let mut file = encode_header(&header);
        file.extend_from_slice(&3u32.to_be_bytes());
        file.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            read_all(&file).unwrap_err(),
            RecordingError::Malformed { .. }
        ));
    }

    proptest! {
        #[test]
        fn damaged_recordings_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let (header, steps) = sample();
            let mut file = encode(&header, &steps);
            for (at, byte) in flips {
                let at = at % file.len();
                file[at] = byte;
            }
            let _ = read_all(&file);
        }
    }
}
