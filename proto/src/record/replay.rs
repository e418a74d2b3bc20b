//! Feeding a recording to a machine built again, and comparing what it gives.

use std::time::{Duration, Instant};

use super::{
    OutputDigest, RecordedConfig, RecordingError, RecordingHeader, RecordingReader, StepKind,
};
use crate::{ActiveReplicator, Machine, Output, PassivePeer};

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayOutcome {
    /// Every recorded batch of outputs came out again, identical.
    Identical {
        /// Steps replayed.
        steps: usize,
        /// Outputs compared.
        outputs: u64,
    },
    /// A batch of outputs differed: a bug, or a different Peerlite version.
    Diverged {
        /// The index of the step whose outputs differed (0 is the first after the header).
        step: usize,
        /// Its time, nanoseconds since the start.
        at_nanos: u64,
        /// Outputs recorded there.
        recorded: u32,
        /// Outputs the replay gave before running out, if fewer.
        replayed: u32,
    },
    /// The recording cannot be replayed, and why.
    NotReplayable(String),
}

/// Watches a replay: every step as it is applied, every output the rebuilt machine
/// gives, and the end. [`super::Diagnosis`] is one; a test can be another.
pub trait Observer {
    /// The recording's header, before any step.
    fn header(&mut self, header: &RecordingHeader) {
        let _ = header;
    }
    /// A step, before the machine is given it (its outputs follow through
    /// [`Observer::output`]).
    fn step(&mut self, at_nanos: u64, kind: &StepKind) {
        let _ = (at_nanos, kind);
    }
    /// An output of the rebuilt machine, drained at the time of the step before it.
    fn output(&mut self, at_nanos: u64, output: &Output) {
        let _ = (at_nanos, output);
    }
    /// The replay ended (at the end of the recording or at a divergence) at `at_nanos`,
    /// the time of its last step; `next_timer_nanos` is when the machine wanted to be
    /// woken next, if it did.
    fn end(&mut self, at_nanos: u64, next_timer_nanos: Option<u64>) {
        let _ = (at_nanos, next_timer_nanos);
    }
}

/// Observes nothing.
impl Observer for () {}

/// The machine a replay drives.
enum Replayed {
    Active(Box<ActiveReplicator>),
    Passive(Box<PassivePeer>),
}

impl Replayed {
    fn machine(&mut self) -> &mut dyn Machine {
        match self {
            Replayed::Active(m) => m.as_mut(),
            Replayed::Passive(m) => m.as_mut(),
        }
    }
}

/// Rebuilds the recorded machine and feeds it the recorded steps at `base` plus their
/// offsets, comparing every batch of outputs with the recorded digest. No network, no
/// database, no clock: the recording is the whole world.
pub fn replay(bytes: &[u8], base: Instant) -> Result<ReplayOutcome, RecordingError> {
    replay_observed(bytes, base, &mut ())
}

/// [`replay`], showing `observer` every step and output.
pub fn replay_observed(
    bytes: &[u8],
    base: Instant,
    observer: &mut dyn Observer,
) -> Result<ReplayOutcome, RecordingError> {
    let (mut reader, header) = RecordingReader::new(bytes)?;
    observer.header(&header);
    if header.peerlite_version != env!("CARGO_PKG_VERSION") {
        return Ok(ReplayOutcome::NotReplayable(format!(
            "recorded by Peerlite {}, this is {}: replay it with the version that recorded it",
            header.peerlite_version,
            env!("CARGO_PKG_VERSION")
        )));
    }
    if !header.callbacks.is_empty() {
        return Ok(ReplayOutcome::NotReplayable(format!(
            "the recorded machine ran application code whose verdicts are not recorded: {}",
            header.callbacks.join(", ")
        )));
    }
    let mut machine = match header.config {
        None => {
            return Ok(ReplayOutcome::NotReplayable(
                "the recording holds no configuration to rebuild the machine from".into(),
            ));
        }
        Some(RecordedConfig::Active(config)) => {
            Replayed::Active(Box::new(ActiveReplicator::new(config)))
        }
        Some(RecordedConfig::Passive { config, principal }) => {
            Replayed::Passive(Box::new(PassivePeer::new(config, principal, base)))
        }
    };
    // Placeholders do not hash to their revisions' IDs: the recorded machine checked the
    // real bodies, the replayed one takes the IDs as they were.
    if header.redacted {
        match &mut machine {
            Replayed::Active(m) => m.trust_revision_ids(),
            Replayed::Passive(m) => m.trust_revision_ids(),
        }
    }
    let fresh_digest = || {
        if header.redacted {
            OutputDigest::redacting()
        } else {
            OutputDigest::default()
        }
    };
    let nanos_of = |t: Instant| {
        u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
    };
    let (mut steps, mut outputs, mut last_at) = (0usize, 0u64, 0u64);
    while let Some(step) = reader.next_step()? {
        let now = base + Duration::from_nanos(step.at_nanos);
        last_at = step.at_nanos;
        observer.step(step.at_nanos, &step.kind);
        match (step.kind, &mut machine) {
            (StepKind::Outputs { count, digest }, m) => {
                let mut replayed = fresh_digest();
                while replayed.count() < count {
                    match m.machine().poll_output() {
                        Some(output) => {
                            observer.output(step.at_nanos, &output);
                            replayed.add(&output);
                        }
                        None => break,
                    }
                }
                let found = replayed.count();
                if replayed.take() != (StepKind::Outputs { count, digest }) {
                    let next = m.machine().poll_timeout().map(nanos_of);
                    observer.end(last_at, next);
                    return Ok(ReplayOutcome::Diverged {
                        step: steps,
                        at_nanos: step.at_nanos,
                        recorded: count,
                        replayed: found,
                    });
                }
                outputs += u64::from(count);
            }
            (StepKind::Input(input), m) => {
                // The recorded machine's errors were ignored by its runtime too.
                let _ = m.machine().handle_input(input, now);
            }
            (StepKind::Timeout, m) => m.machine().handle_timeout(now),
            (StepKind::Start { reset: false }, Replayed::Active(m)) => m.start(now),
            (StepKind::Start { reset: true }, Replayed::Active(m)) => m.start_with_reset(now),
            (StepKind::Stop, Replayed::Active(m)) => m.stop(now),
            (StepKind::Close { code, message }, Replayed::Passive(m)) => m.close(code, message),
            (other, _) => {
                return Ok(ReplayOutcome::NotReplayable(format!(
                    "step {steps} ({other:?}) does not apply to a {:?} machine",
                    header.role
                )));
            }
        }
        steps += 1;
    }
    // Outputs the recording did not get to drain (it stopped right after a step).
    while let Some(output) = machine.machine().poll_output() {
        observer.output(last_at, &output);
    }
    let next = machine.machine().poll_timeout().map(nanos_of);
    observer.end(last_at, next);
    Ok(ReplayOutcome::Identical { steps, outputs })
}

#[cfg(test)]
mod tests {
    use super::super::{
        RecordedConfig, RecordingHeader, Role, Step, encode_header, encode_input_step, encode_step,
    };
    use super::*;
    use crate::{Input, ReplicatorConfig};

    #[test]
    fn a_machine_driven_by_hand_replays_identically_and_one_with_callbacks_is_refused() {
        use std::sync::Arc;
        let config = ReplicatorConfig::new([1; 16], "wss://hub.local/db");
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let mut machine = ActiveReplicator::new(config.clone());
        let header = RecordingHeader::for_machine(RecordedConfig::Active(config.clone()), 0);
        let mut file = encode_header(&header);
        let drain = |machine: &mut ActiveReplicator, file: &mut Vec<u8>, at: u64| {
            let mut digest = OutputDigest::default();
            while let Some(output) = machine.poll_output() {
                digest.add(&output);
            }
            let n = digest.count();
            file.extend(encode_step(&Step {
                at_nanos: at,
                kind: digest.take(),
            }));
            n
        };
        file.extend(encode_step(&Step {
            at_nanos: 0,
            kind: StepKind::Start { reset: false },
        }));
        machine.start(base);
        assert!(drain(&mut machine, &mut file, 0) > 0);
        file.extend(encode_input_step(1_234, &Input::Connected));
        machine
            .handle_input(Input::Connected, base + Duration::from_nanos(1_234))
            .unwrap();
        assert!(drain(&mut machine, &mut file, 1_234) > 0);
        let later = base + Duration::from_secs(3600);
        assert!(matches!(
            replay(&file, later),
            Ok(ReplayOutcome::Identical { steps: 4, .. })
        ));

        // Without a configuration, or with application code, it says why not.
        let bare = encode_header(&RecordingHeader::new(Role::Active, 0));
        assert!(
            matches!(replay(&bare, later), Ok(ReplayOutcome::NotReplayable(why)) if why.contains("no configuration"))
        );
        let mut filtered = config;
        filtered.collections[0].push_filter = Some(Arc::new(|_: &crate::FilterContext<'_>| true));
        let header = RecordingHeader::for_machine(RecordedConfig::Active(filtered), 0);
        let refused = replay(&encode_header(&header), later);
        assert!(
            matches!(&refused, Ok(ReplayOutcome::NotReplayable(why)) if why.contains("a push filter on _default._default")),
            "{refused:?}"
        );
    }
}
