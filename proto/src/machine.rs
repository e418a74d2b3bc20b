//! The face both state machines show a runtime: inputs in, outputs and a deadline out.

use std::time::Instant;

use crate::{ActiveReplicator, ApiError, Input, Output, PassivePeer};

/// A Sans-IO state machine a runtime drives: [`ActiveReplicator`] and [`PassivePeer`].
///
/// A driver feeds it what happened ([`Machine::handle_input`], and
/// [`Machine::handle_timeout`] once [`Machine::poll_timeout`]'s deadline passes), then
/// drains [`Machine::poll_output`] until `None`, acting on each output. Written once over
/// this trait, a drive loop serves both sides.
///
/// ```
/// use std::time::Instant;
/// use peerlite_proto::{Machine, Output, PassiveConfig, PassivePeer, Principal};
///
/// fn pending_outputs(machine: &mut impl Machine) -> Vec<Output> {
///     std::iter::from_fn(|| machine.poll_output()).collect()
/// }
///
/// let mut peer = PassivePeer::new(PassiveConfig::default(), Principal::default(), Instant::now());
/// assert!(pending_outputs(&mut peer).is_empty()); // it waits for the replicator's Hello
/// assert!(peer.poll_timeout().is_some()); // ... for a bounded time
/// ```
pub trait Machine {
    /// Feeds one input at `now`. An error means the caller broke the contract (for
    /// instance answered a storage operation twice); the peer's misbehaviour is never an
    /// error here but a close.
    fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), ApiError>;
    /// Runs what is due at `now` (heartbeats, retries, idle timeouts).
    fn handle_timeout(&mut self, now: Instant);
    /// The next output, until `None`.
    fn poll_output(&mut self) -> Option<Output>;
    /// When [`Machine::handle_timeout`] must next be called, if ever.
    fn poll_timeout(&self) -> Option<Instant>;
}

impl Machine for ActiveReplicator {
    fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), ApiError> {
        ActiveReplicator::handle_input(self, input, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        ActiveReplicator::handle_timeout(self, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        ActiveReplicator::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        ActiveReplicator::poll_timeout(self)
    }
}

impl Machine for PassivePeer {
    fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), ApiError> {
        PassivePeer::handle_input(self, input, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        PassivePeer::handle_timeout(self, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        PassivePeer::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        PassivePeer::poll_timeout(self)
    }
}
