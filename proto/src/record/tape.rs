//! Recording a machine as it is driven: what a runtime (Peerlite's own, or yours) or a
//! simulator calls beside each call it makes on the machine.

use std::time::Instant;

use super::{OutputDigest, Step, StepKind, append_input_step, append_step, redact_input};
use crate::{Input, Output};

/// Turns the calls made on a machine into a recording's steps: call it beside every
/// `handle_input`, `handle_timeout`, `start`, `stop` or `close`, and on every output
/// drained. It appends encoded steps to a buffer the caller owns and writes where it
/// likes; start the file with [`super::encode_header`].
///
/// ```
/// use std::time::{Duration, Instant};
/// use peerlite_proto::record::{self, RecordedConfig, RecordingHeader, ReplayOutcome, StepKind, Tape};
/// use peerlite_proto::{ActiveReplicator, Input, ReplicatorConfig};
///
/// let config = ReplicatorConfig::new([7; 16], "wss://hub.local/db");
/// let start = Instant::now();
/// let header = RecordingHeader::for_machine(RecordedConfig::Active(config.clone()), 0);
/// let mut file = record::encode_header(&header);
/// let mut tape = Tape::new(start);
/// let mut machine = ActiveReplicator::new(config);
///
/// tape.step(&mut file, start, StepKind::Start { reset: false });
/// machine.start(start);
/// while let Some(output) = machine.poll_output() {
///     tape.output(&output);
/// }
/// let now = start + Duration::from_millis(3);
/// tape.input(&mut file, now, &Input::Connected);
/// machine.handle_input(Input::Connected, now).unwrap();
/// while let Some(output) = machine.poll_output() {
///     tape.output(&output);
/// }
/// tape.outputs_done(&mut file);
///
/// let replayed = record::replay(&file, Instant::now())?;
/// assert!(matches!(replayed, ReplayOutcome::Identical { steps: 4, .. }));
/// # Ok::<(), record::RecordingError>(())
/// ```
#[derive(Debug)]
pub struct Tape {
    start: Instant,
    /// The outputs drained since the last step.
    outputs: OutputDigest,
    /// The time of the last step, which its outputs are recorded at.
    last_at: u64,
    /// Bodies and blob bytes are redacted (the header says `redacted`).
    redact: bool,
}

impl Tape {
    /// A tape whose times count from `start`: build the machine at `start` too, as a
    /// replay builds it there.
    pub fn new(start: Instant) -> Tape {
        Tape {
            start,
            outputs: OutputDigest::default(),
            last_at: 0,
            redact: false,
        }
    }

    /// A tape that replaces document bodies and blob bytes by placeholders
    /// ([`super::redact_input`]): for a header with `redacted` set.
    pub fn redacting(start: Instant) -> Tape {
        Tape {
            outputs: OutputDigest::redacting(),
            redact: true,
            ..Tape::new(start)
        }
    }

    /// When the recording starts.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Appends the step of an input given to the machine at `now` (call it first).
    pub fn input(&mut self, out: &mut Vec<u8>, now: Instant, input: &Input) {
        let at = self.at_after_outputs(out, now);
        if self.redact {
            append_input_step(out, at, &redact_input(input));
        } else {
            append_input_step(out, at, input);
        }
    }

    /// Appends any other step done to the machine at `now` (a timer, a start, a stop, a
    /// close).
    pub fn step(&mut self, out: &mut Vec<u8>, now: Instant, kind: StepKind) {
        let at_nanos = self.at_after_outputs(out, now);
        append_step(out, &Step { at_nanos, kind });
    }

    /// Counts an output drained from the machine.
    pub fn output(&mut self, output: &Output) {
        self.outputs.add(output);
    }

    /// Appends the step of the outputs drained since the last step, if any: call it
    /// before a recording is read or ends (the next step does it otherwise).
    pub fn outputs_done(&mut self, out: &mut Vec<u8>) {
        if self.outputs.count() > 0 {
            let step = Step {
                at_nanos: self.last_at,
                kind: self.outputs.take(),
            };
            append_step(out, &step);
        }
    }

    fn at_after_outputs(&mut self, out: &mut Vec<u8>, now: Instant) -> u64 {
        self.outputs_done(out);
        self.last_at =
            u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.last_at
    }
}
