//! The active replicator: the side that connects, pushes and pulls.
//!
//! This file holds the machine's lifecycle — connecting, failing and retrying — and
//! dispatches frames and storage replies to the sub-machines, each in its own file:
//! [`checkpoint`] (where a replication starts and how progress is saved), [`push`],
//! [`pull`], [`resolve`] (conflict resolution) and [`activity`] (busy, idle, done, and
//! progress); [`ops`] names what it waits for. What both sides share lives in
//! `crate::sender` and `crate::receiver`.

mod activity;
mod checkpoint;
mod ops;
mod pull;
mod push;
mod resolve;

use ops::{ActiveFetch, Op, Sent};
use pull::{PullDiff, PullState};
use push::PushState;
use resolve::Resolving;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use crate::backoff::Backoff;
use crate::conn::Conn;
use crate::peer_knows::PeerKnows;
use crate::receiver::{BlobAsk, BlobOp, BlobReplyError, FetchKinds, Fetches, Incoming};
use crate::replicator_config::local_checkpoint_key;
use crate::timer::{Timer, TimerTable};
use crate::{
    Activity, ApiError, BlobDigest, Change, Checkpoint, CloseCode, CloseReason, Code,
    CollectionConfig, CollectionName, Conflict, ConflictResolver, ConflictSide,
    DefaultConflictResolver, Direction, Disconnect, DocId, DocumentEvent, Event, FilterContext,
    Frame, FrameLimits, Hello, Input, InsertMode, InsertOutcome, Output, Oversized,
    PROTOCOL_VERSION, PeerMisbehaved, Progress, ReplicationError, ReplicatorConfig, Request,
    RequestNumber, Response, Retry, RevBundle, RevId, RevStatus, Revision, RevisionInsert,
    RevsDiff, Seq, Status, StorageOp, StorageReply, resolution_revisions,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Stopped,
    Connecting,
    Handshaking,
    LoadingCheckpoint,
    Running,
    Offline,
}

struct CollectionState {
    config: CollectionConfig,
    push: PushState,
    pull: PullState,
    /// What the peer sent lately: never pushed back to it.
    peer_knows: PeerKnows,
}

/// The active side of replication, for one remote peer across reconnections.
///
/// ```
/// use std::time::Instant;
/// use peerlite_proto::{ActiveReplicator, Output, ReplicatorConfig};
///
/// let now = Instant::now();
/// let mut replicator = ActiveReplicator::new(ReplicatorConfig::new([7; 16], "wss://peer:4984/db"));
/// replicator.start(now);
/// // The runtime is asked to open the connection first.
/// assert!(matches!(replicator.poll_output(), Some(Output::Connect)));
/// ```
pub struct ActiveReplicator {
    config: ReplicatorConfig,
    checkpoint_id: String,
    conn: Conn<Sent, (u64, Op)>,
    phase: Phase,
    epoch: u64,
    failed_attempts: u32,
    timers: TimerTable,
    status: Status,
    /// Progress changed since the last status event.
    progress_dirty: bool,
    reset_checkpoint: bool,
    local_cp: Option<Option<Checkpoint>>,
    remote_cp: Option<Option<Checkpoint>>,
    /// Progress known complete: what the next save writes.
    progress_cp: Checkpoint,
    saved_cp: Option<Checkpoint>,
    /// The checkpoint being saved.
    saving_cp: Option<Checkpoint>,
    /// Parts of a checkpoint save still pending (remote and local).
    saving: u8,
    save_again: bool,
    ping_outstanding: bool,
    cols: BTreeMap<CollectionName, CollectionState>,
    /// `Revs` requests from the peer being stored.
    pull_revs: BTreeMap<RequestNumber, Incoming>,
    /// Blobs those requests wait for.
    fetches: Fetches,
    resolver: DefaultConflictResolver,
    /// The largest frame the connected peer accepts, as it announced.
    peer_frame_limit: usize,
    /// Replaying a redacted recording: revision IDs are not checked against bodies.
    trust_revision_ids: bool,
}

impl fmt::Debug for ActiveReplicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveReplicator")
            .field("phase", &self.phase)
            .field("status", &self.status)
            .field("checkpoint_id", &self.checkpoint_id)
            .finish_non_exhaustive()
    }
}

impl ActiveReplicator {
    /// A stopped replicator; call [`ActiveReplicator::start`].
    pub fn new(config: ReplicatorConfig) -> ActiveReplicator {
        let checkpoint_id = config.checkpoint_id();
        let cols = config
            .collections
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    CollectionState {
                        config: c.clone(),
                        push: PushState::default(),
                        pull: PullState::default(),
                        peer_knows: PeerKnows::default(),
                    },
                )
            })
            .collect();
        ActiveReplicator {
            config,
            checkpoint_id,
            conn: Conn::default(),
            phase: Phase::Stopped,
            epoch: 0,
            failed_attempts: 0,
            timers: TimerTable::default(),
            status: Status {
                activity: Activity::Stopped,
                progress: Progress::default(),
                error: None,
                retry: None,
            },
            progress_dirty: false,
            reset_checkpoint: false,
            local_cp: None,
            remote_cp: None,
            progress_cp: Checkpoint::default(),
            saved_cp: None,
            saving_cp: None,
            saving: 0,
            save_again: false,
            ping_outstanding: false,
            cols,
            pull_revs: BTreeMap::new(),
            fetches: Fetches::default(),
            resolver: DefaultConflictResolver,
            peer_frame_limit: FrameLimits::DEFAULT.max_frame_bytes,
            trust_revision_ids: false,
        }
    }

    /// For replaying a redacted recording only (`record::replay`): its placeholder bodies
    /// do not hash to their revisions' IDs, which the recorded machine checked.
    pub(crate) fn trust_revision_ids(&mut self) {
        self.trust_revision_ids = true;
    }

    /// The checkpoint ID this replication uses.
    pub fn checkpoint_id(&self) -> &str {
        &self.checkpoint_id
    }

    /// The current status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Starts (or restarts) replication: emits [`Output::Connect`].
    pub fn start(&mut self, now: Instant) {
        self.start_inner(now, false);
    }

    /// Starts from the beginning, ignoring saved checkpoints (they are overwritten as
    /// the new run progresses).
    pub fn start_with_reset(&mut self, now: Instant) {
        self.start_inner(now, true);
    }

    fn start_inner(&mut self, _now: Instant, reset: bool) {
        if !matches!(self.phase, Phase::Stopped) {
            return;
        }
        self.reset_checkpoint = reset;
        self.failed_attempts = 0;
        self.status.error = None;
        self.status.progress = Progress::default();
        self.connect();
        self.flush_progress();
    }

    /// Stops replication and closes the connection. Storage replies still arriving for
    /// earlier operations must be fed in (they are ignored).
    pub fn stop(&mut self, _now: Instant) {
        if self.phase == Phase::Stopped {
            return;
        }
        if self.connected() {
            self.conn.outputs.push_back(Output::Close(CloseReason::new(
                CloseCode::GoingAway,
                "replicator stopped",
            )));
        }
        self.end_connection();
        self.phase = Phase::Stopped;
        self.timers.clear();
        self.set_activity(Activity::Stopped);
        self.flush_progress();
    }

    /// Feeds one input. Drain [`ActiveReplicator::poll_output`] afterwards.
    pub fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), ApiError> {
        let result = self.handle_input_inner(input, now);
        self.flush_progress();
        result
    }

    fn handle_input_inner(&mut self, input: Input, now: Instant) -> Result<(), ApiError> {
        match input {
            Input::Connected => {
                if self.phase != Phase::Connecting {
                    return Err(ApiError::Unexpected("Connected without a pending Connect"));
                }
                self.phase = Phase::Handshaking;
                self.arm_heartbeat(now);
                // A new connection may reach a peer that lost what it sent before.
                for c in self.cols.values_mut() {
                    c.peer_knows.clear();
                }
                let hello = Hello {
                    versions: vec![PROTOCOL_VERSION],
                    collections: self.cols.keys().cloned().collect(),
                    push: self.config.replicator_type.pushes(),
                    pull: self.config.replicator_type.pulls(),
                    max_frame_bytes: Some(self.config.frame_limits.max_frame_bytes as u64),
                };
                self.conn.request(Request::Hello(hello), Sent::Hello);
            }
            Input::Frame(bytes) => {
                if !self.connected() {
                    return Ok(());
                }
                self.arm_heartbeat(now);
                match Frame::decode_bytes(&bytes, &self.config.frame_limits) {
                    Ok(frame) => self.handle_frame(frame, now),
                    Err(e) => self.violation(PeerMisbehaved::UndecodableFrame(e), now),
                }
            }
            Input::Disconnected(d) => {
                if matches!(self.phase, Phase::Connecting) || self.connected() {
                    let Disconnect {
                        message,
                        retryable,
                        retry_after,
                    } = d;
                    let error = ReplicationError::Transport { message, retryable };
                    self.fail_waiting(error, now, false, retry_after);
                }
            }
            Input::Storage(id, reply) => {
                let (epoch, op) = self
                    .conn
                    .ops
                    .remove(&id)
                    .ok_or(ApiError::UnknownStorageOp(id))?;
                if epoch == self.epoch && self.connected() {
                    self.handle_storage(op, reply, now);
                }
            }
            Input::LocalChange(collection, seq) => {
                let continuous = self.config.continuous;
                if let Some(c) = self.cols.get_mut(&collection)
                    && continuous
                    && self.config.replicator_type.pushes()
                    && seq > c.push.cursor.since()
                {
                    c.push.cursor.changed(seq);
                    if self.phase == Phase::Running {
                        self.pump_push(&collection);
                        self.update_activity(now);
                    }
                }
            }
        }
        Ok(())
    }

    /// Fires due timers (heartbeat, dead peer, retry, checkpoint). Spurious calls are
    /// harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout_inner(now);
        self.flush_progress();
    }

    fn handle_timeout_inner(&mut self, now: Instant) {
        for timer in self.timers.expired(now) {
            match timer {
                Timer::Retry if self.phase == Phase::Offline => self.connect(),
                Timer::Heartbeat if self.connected() && !self.ping_outstanding => {
                    self.ping_outstanding = true;
                    self.conn.request(Request::Ping, Sent::Ping);
                    self.timers
                        .set(Timer::DeadPeer, now + self.config.heartbeat);
                }
                Timer::DeadPeer if self.connected() => {
                    self.fail(ReplicationError::Timeout(self.config.heartbeat), now, true);
                }
                Timer::Checkpoint if self.phase == Phase::Running => {
                    self.save_checkpoint();
                    self.timers
                        .set(Timer::Checkpoint, now + self.config.checkpoint_interval);
                }
                _ => {}
            }
        }
    }

    /// The next output, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.conn.outputs.pop_front()
    }

    /// When to call [`ActiveReplicator::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn connected(&self) -> bool {
        matches!(
            self.phase,
            Phase::Handshaking | Phase::LoadingCheckpoint | Phase::Running
        )
    }

    fn connect(&mut self) {
        self.phase = Phase::Connecting;
        self.status.retry = None;
        self.conn.outputs.push_back(Output::Connect);
        self.set_activity(Activity::Connecting);
    }

    /// Forgets everything tied to the current connection.
    fn end_connection(&mut self) {
        self.epoch += 1;
        self.conn.new_connection();
        self.local_cp = None;
        self.remote_cp = None;
        self.saving = 0;
        self.saving_cp = None;
        self.save_again = false;
        self.ping_outstanding = false;
        self.pull_revs.clear();
        for transfer in self.fetches.reset() {
            self.op(
                StorageOp::SuspendBlob { transfer },
                Op::Blob(BlobOp::Abandon),
            );
        }
        self.peer_frame_limit = FrameLimits::DEFAULT.max_frame_bytes;
        for c in self.cols.values_mut() {
            c.push = PushState::default();
            c.pull = PullState::default();
        }
        self.timers.stop(Timer::Heartbeat);
        self.timers.stop(Timer::DeadPeer);
        self.timers.stop(Timer::Checkpoint);
    }

    /// Ends the connection after an error; retries if allowed.
    fn fail(&mut self, error: ReplicationError, now: Instant, close: bool) {
        self.fail_waiting(error, now, close, None);
    }

    /// [`Self::fail`], and the next attempt waits at least `at_least` (what the peer
    /// asked for), within `max_attempt_wait`.
    fn fail_waiting(
        &mut self,
        error: ReplicationError,
        now: Instant,
        close: bool,
        at_least: Option<std::time::Duration>,
    ) {
        if close && self.connected() {
            let code = match error {
                ReplicationError::Protocol(_) => CloseCode::ProtocolError,
                ReplicationError::Timeout(_) => CloseCode::PolicyViolation,
                ReplicationError::Storage(_) => CloseCode::InternalError,
                _ => CloseCode::GoingAway,
            };
            let violation = match &error {
                ReplicationError::Protocol(v) => Some((**v).clone()),
                _ => None,
            };
            self.conn.outputs.push_back(Output::Close(CloseReason {
                code,
                message: error.to_string(),
                violation,
            }));
        }
        self.end_connection();
        self.failed_attempts += 1;
        let backoff = Backoff {
            initial: self.config.initial_retry_wait,
            max_wait: self.config.max_attempt_wait,
            max_attempts: self.config.effective_max_attempts(),
        };
        let delay = if error.is_retryable() {
            backoff.delay(self.failed_attempts).map(|wait| {
                wait.max(at_least.unwrap_or_default())
                    .min(self.config.max_attempt_wait)
            })
        } else {
            None
        };
        match delay {
            Some(wait) => {
                self.status.error = Some(error);
                self.status.retry = Some(Retry {
                    failed_attempts: self.failed_attempts,
                    max_attempts: backoff.max_attempts,
                    wait,
                });
                self.phase = Phase::Offline;
                self.timers.set(Timer::Retry, now + wait);
                self.set_activity_forced(Activity::Offline);
            }
            None => {
                let error = if error.is_retryable() {
                    ReplicationError::GaveUp {
                        attempts: self.failed_attempts,
                        last: Box::new(error),
                    }
                } else {
                    error
                };
                self.status.error = Some(error);
                self.phase = Phase::Stopped;
                self.timers.clear();
                self.set_activity_forced(Activity::Stopped);
            }
        }
    }

    /// The peer broke the protocol: close with the violation; never retried.
    fn violation(&mut self, violation: PeerMisbehaved, now: Instant) {
        self.fail(ReplicationError::Protocol(Box::new(violation)), now, true);
    }

    fn arm_heartbeat(&mut self, now: Instant) {
        self.ping_outstanding = false;
        self.timers.stop(Timer::DeadPeer);
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat);
    }

    fn op(&mut self, op: StorageOp, kind: Op) {
        self.conn.storage(op, (self.epoch, kind));
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        match frame {
            Frame::Response(n, response) => match self.conn.requests.remove(&n) {
                Some(sent) => self.handle_response(sent, response, now),
                None => self.violation(PeerMisbehaved::ResponseToUnknownRequest(n), now),
            },
            Frame::Error(n, error) => match self.conn.requests.remove(&n) {
                Some(Sent::Hello) if error.kind() == Some(Code::UnsupportedVersion) => self.fail(
                    ReplicationError::UnsupportedVersion {
                        ours: PROTOCOL_VERSION,
                        message: error.message,
                    },
                    now,
                    true,
                ),
                Some(Sent::Hello | Sent::Propose { .. } | Sent::PushRevs { .. })
                    if error.kind() == Some(Code::Forbidden) =>
                {
                    self.fail(ReplicationError::ReadOnly(error.message), now, true)
                }
                Some(Sent::SubChanges(_)) if error.kind() == Some(Code::Gone) => self.fail(
                    ReplicationError::PeerForgotDeletions {
                        message: error.message,
                    },
                    now,
                    true,
                ),
                Some(Sent::GetBlob(ask)) => {
                    self.fetches.refused(ask.digest, error.to_string());
                    self.drive_fetches(now);
                }
                Some(_) => self.fail(ReplicationError::Remote(error), now, true),
                None => self.violation(PeerMisbehaved::ErrorForUnknownRequest(n), now),
            },
            Frame::Request(n, request) => {
                if self.phase != Phase::Running {
                    let request = request.name();
                    return self.violation(PeerMisbehaved::RequestBeforeHandshake(request), now);
                }
                match request {
                    Request::Ping => self.conn.respond(n, Response::Pong),
                    Request::Changes {
                        collection,
                        changes,
                    } => self.pulled_changes(n, collection, changes, now),
                    Request::Revs {
                        collection,
                        docs,
                        unavailable,
                        oversized,
                    } => self.pulled_revs(n, collection, docs, unavailable, oversized, now),
                    Request::GetBlob {
                        digest,
                        offset,
                        max,
                    } => {
                        let offered = self.cols.values().any(|c| c.push.outbox.offers(&digest));
                        let read = (self.epoch, Op::Blob(BlobOp::Serve(n)));
                        let ask = (digest, offset, max);
                        crate::sender::serve_blob(&mut self.conn, n, offered, ask, read);
                    }
                    other => self.violation(
                        PeerMisbehaved::RequestNotAllowed {
                            role: "passive",
                            request: other.name(),
                        },
                        now,
                    ),
                }
            }
        }
    }

    fn handle_response(&mut self, sent: Sent, response: Response, now: Instant) {
        match (sent, response) {
            (
                Sent::Hello,
                Response::Hello {
                    version,
                    max_frame_bytes,
                },
            ) if version == PROTOCOL_VERSION => {
                self.peer_frame_limit = crate::wire::announced_limit(max_frame_bytes);
                self.fetches.set_peer_limit(self.peer_frame_limit);
                self.phase = Phase::LoadingCheckpoint;
                if self.reset_checkpoint {
                    self.local_cp = Some(None);
                    self.remote_cp = Some(None);
                    self.begin(now);
                } else {
                    let id = local_checkpoint_key(&self.checkpoint_id);
                    self.op(StorageOp::GetLocal { id }, Op::LoadLocalCheckpoint);
                    let id = self.checkpoint_id.clone();
                    self.conn
                        .request(Request::GetCheckpoint { id }, Sent::GetCheckpoint);
                }
            }
            (Sent::GetCheckpoint, Response::Checkpoint(cp)) => {
                self.remote_cp = Some(cp);
                self.begin(now);
            }
            (Sent::SetCheckpoint, Response::Ok) => self.checkpoint_part_saved(now),
            (Sent::SubChanges(name), Response::Ok) => {
                if let Some(c) = self.cols.get_mut(&name)
                    && std::mem::take(&mut c.push.held)
                {
                    self.pump_push(&name);
                }
            }
            (Sent::Ping, Response::Pong) => {}
            (
                Sent::Propose {
                    collection,
                    batch,
                    docs,
                },
                Response::Wanted(flags),
            ) => self.proposal_answered(&collection, batch, docs, flags, now),
            (
                Sent::PushRevs {
                    collection,
                    batch,
                    bytes,
                    docs,
                    blobs,
                },
                Response::RevStatuses(statuses),
            ) => {
                if let Some(c) = self.cols.get_mut(&collection) {
                    c.push.outbox.answered(bytes, &blobs);
                }
                self.pushed_revs_answered(&collection, batch, docs, statuses, now)
            }
            (Sent::GetBlob(ask), Response::BlobChunk(bytes)) => {
                if let Err(v) = self.fetches.arrived(ask, bytes) {
                    return self.violation(v, now);
                }
                self.drive_fetches(now);
            }
            (sent, other) => self.violation(
                PeerMisbehaved::UnexpectedResponse {
                    request: sent.name(),
                    response: other.name(),
                },
                now,
            ),
        }
    }

    fn handle_storage(&mut self, op: Op, reply: StorageReply, now: Instant) {
        if let StorageReply::Failed(failure) = reply {
            return self.fail(ReplicationError::Storage(failure), now, true);
        }
        match (op, reply) {
            (Op::LoadLocalCheckpoint, StorageReply::Local(bytes)) => {
                self.local_cp = Some(bytes.and_then(|b| Checkpoint::from_bytes(&b)));
                self.begin(now);
            }
            (Op::SaveLocalCheckpoint, StorageReply::Done) => self.checkpoint_part_saved(now),
            (Op::PushRead(name), StorageReply::Changes(changes)) => {
                self.push_read(name, changes, now)
            }
            (Op::PushCheck(name), StorageReply::Changes(_)) => self.open_collection(&name),
            (
                Op::PushRead(name) | Op::PushCheck(name),
                StorageReply::DeletionsForgotten { through },
            ) => {
                let since = self
                    .cols
                    .get(&name)
                    .map_or(Seq::ZERO, |c| c.push.cursor.since());
                self.fail(
                    ReplicationError::ForgotDeletions { since, through },
                    now,
                    true,
                )
            }
            (
                Op::PushLeaves {
                    collection,
                    batch,
                    changes,
                },
                StorageReply::Leaves(leaves),
            ) => self.push_leaves_read(collection, batch, changes, leaves, now),
            (Op::PullDiff(op), StorageReply::RevsDiff(diff)) => self.pull_diffed(op, diff, now),
            (Op::PullInsert { request, bundles }, StorageReply::Inserted(outcomes)) => {
                self.pull_inserted(request, bundles, outcomes, now)
            }
            (Op::ResolveRead(r), StorageReply::Leaves(mut leaves)) => {
                let leaves = leaves.pop().unwrap_or_default();
                self.resolve(r, leaves, now)
            }
            (Op::ResolveWrite(r, resolved), StorageReply::Inserted(mut outcomes)) => {
                self.resolution_written(r, resolved, outcomes.pop(), now)
            }
            (Op::Blob(op), reply) => {
                match crate::receiver::blob_reply(&mut self.fetches, &mut self.conn, op, reply) {
                    Ok(()) => self.drive_fetches(now),
                    Err(BlobReplyError::Violation(v)) => self.violation(v, now),
                    Err(BlobReplyError::Wrong(reply)) => self.fail(
                        ReplicationError::Storage(crate::StorageFailure {
                            message: format!("the store answered with the wrong reply: {reply:?}"),
                            transient: false,
                        }),
                        now,
                        true,
                    ),
                }
            }
            (_, reply) => self.fail(
                ReplicationError::Storage(crate::StorageFailure {
                    message: format!("the store answered with the wrong reply: {reply:?}"),
                    transient: false,
                }),
                now,
                true,
            ),
        }
    }
}
