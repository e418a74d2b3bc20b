//! The active replicator: the side that connects, pushes and pulls.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use crate::backoff::Backoff;
use crate::conn::Conn;
use crate::peer_knows::PeerKnows;
use crate::replicator_config::local_checkpoint_key;
use crate::timer::{Timer, TimerTable};
use crate::{
    Activity, ApiError, Change, Checkpoint, CloseCode, CloseReason, CollectionConfig,
    CollectionName, Conflict, ConflictResolver, ConflictSide, DefaultConflictResolver, Direction,
    Disconnect, DocId, DocumentError, DocumentEvent, Event, FilterContext, Frame, FrameLimits,
    Hello, Input, InsertMode, InsertOutcome, Output, Oversized, PROTOCOL_VERSION, PeerMisbehaved,
    Progress, ReplicationError, ReplicatorConfig, Request, RequestNumber, Response, Retry,
    RevBundle, RevId, RevStatus, Revision, RevisionInsert, RevsDiff, Seq, Status, StorageOp,
    StorageReply, resolution_revisions,
};

/// How many times a conflict resolution is recomputed when the local document keeps
/// changing underneath it.
const MAX_RESOLVE_ATTEMPTS: u8 = 5;

/// Most body bytes a batch may hold to be pushed without a proposal.
const DIRECT_PUSH_BYTES: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Stopped,
    Connecting,
    Handshaking,
    LoadingCheckpoint,
    Running,
    Offline,
}

/// Our requests awaiting an answer.
enum Sent {
    Hello,
    GetCheckpoint,
    SetCheckpoint,
    SubChanges,
    Propose {
        collection: CollectionName,
        batch: u64,
        docs: Vec<DocId>,
    },
    PushRevs {
        collection: CollectionName,
        batch: u64,
        bytes: usize,
        docs: Vec<(DocId, RevId, bool)>,
    },
    Ping,
}

impl Sent {
    /// The name of the request it is.
    fn name(&self) -> &'static str {
        match self {
            Sent::Hello => "Hello",
            Sent::GetCheckpoint => "GetCheckpoint",
            Sent::SetCheckpoint => "SetCheckpoint",
            Sent::SubChanges => "SubChanges",
            Sent::Propose { .. } => "ProposeChanges",
            Sent::PushRevs { .. } => "Revs",
            Sent::Ping => "Ping",
        }
    }
}

/// Storage operations awaiting a reply (tagged with the connection epoch).
enum Op {
    LoadLocalCheckpoint,
    SaveLocalCheckpoint,
    PushRead(CollectionName),
    PushLeaves {
        collection: CollectionName,
        batch: u64,
        changes: Vec<Change>,
    },
    PullDiff(PullDiff),
    PullInsert {
        collection: CollectionName,
        request: RequestNumber,
        bundles: Vec<(DocId, Vec<Revision>)>,
    },
    ResolveRead(Resolving),
    /// The write holds a resolution (`true`), or just the remote revision.
    ResolveWrite(Resolving, bool),
}

/// A pulled `Changes` batch whose revs-diff is being read.
struct PullDiff {
    collection: CollectionName,
    request: RequestNumber,
    changes: Vec<Change>,
    /// Per change: whether the document filter selects it.
    selected: Vec<bool>,
    /// Per selected change: how many revisions of it the diff asks about.
    counts: Vec<usize>,
}

/// A pulled document that conflicts with a local one, on its way to a resolution.
struct Resolving {
    collection: CollectionName,
    /// The `Revs` request it came in.
    request: RequestNumber,
    doc: DocId,
    /// The pulled revisions.
    bundle: Vec<Revision>,
    /// Resolutions already refused because the local document changed meanwhile.
    attempt: u8,
}

struct PushBatch {
    id: u64,
    last_seq: Seq,
    /// What to send for each proposed document: its bundle and local sequence.
    revs: BTreeMap<DocId, (Vec<Revision>, Seq)>,
    /// Storage reads and requests not yet answered, plus queued messages.
    outstanding: usize,
}

#[derive(Default)]
struct PushState {
    cursor: Seq,
    reading: bool,
    at_end: bool,
    dirty: bool,
    next_batch: u64,
    batches: VecDeque<PushBatch>,
    /// `Revs` messages waiting for byte budget: (batch, bundles, their bytes).
    queue: VecDeque<(u64, Vec<RevBundle>, usize)>,
    bytes_in_flight: usize,
}

struct PullBatch {
    request: RequestNumber,
    last_seq: Seq,
    diffing: bool,
    outstanding: BTreeSet<DocId>,
}

#[derive(Default)]
struct PullState {
    caught_up: bool,
    batches: VecDeque<PullBatch>,
}

/// One `Revs` request from the passive peer being stored.
struct PullRevs {
    collection: CollectionName,
    /// Storage operations still running for it.
    pending: usize,
    order: Vec<DocId>,
    statuses: BTreeMap<DocId, RevStatus>,
    events: Vec<DocumentEvent>,
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
    pull_revs: BTreeMap<RequestNumber, PullRevs>,
    resolver: DefaultConflictResolver,
    /// The largest frame the connected peer accepts, as it announced.
    peer_frame_limit: usize,
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
            resolver: DefaultConflictResolver,
            peer_frame_limit: FrameLimits::DEFAULT.max_frame_bytes,
        }
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
                    let Disconnect { message, retryable } = d;
                    self.fail(
                        ReplicationError::Transport { message, retryable },
                        now,
                        false,
                    );
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
                    && seq > c.push.cursor
                {
                    c.push.dirty = true;
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

    // ---- connection lifecycle ----

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
            backoff.delay(self.failed_attempts)
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

    fn set_activity(&mut self, activity: Activity) {
        if self.status.activity != activity {
            self.set_activity_forced(activity);
        }
    }

    fn set_activity_forced(&mut self, activity: Activity) {
        self.status.activity = activity;
        self.progress_dirty = false;
        self.conn.event(Event::Status(self.status.clone()));
    }

    /// Counts progress. One status event per input carries it (not one per document).
    fn progress(&mut self, completed: u64, total: u64) {
        if completed == 0 && total == 0 {
            return;
        }
        self.status.progress.completed += completed;
        self.status.progress.total += total;
        self.progress_dirty = true;
    }

    fn flush_progress(&mut self) {
        if self.progress_dirty {
            self.progress_dirty = false;
            self.conn.event(Event::Status(self.status.clone()));
        }
    }

    fn op(&mut self, op: StorageOp, kind: Op) {
        self.conn.storage(op, (self.epoch, kind));
    }

    // ---- frames ----

    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        match frame {
            Frame::Response(n, response) => match self.conn.requests.remove(&n) {
                Some(sent) => self.handle_response(sent, response, now),
                None => self.violation(PeerMisbehaved::ResponseToUnknownRequest(n), now),
            },
            Frame::Error(n, error) => match self.conn.requests.remove(&n) {
                Some(Sent::Hello) if error.code == 505 => self.fail(
                    ReplicationError::UnsupportedVersion {
                        ours: PROTOCOL_VERSION,
                        message: error.message,
                    },
                    now,
                    true,
                ),
                Some(Sent::Hello | Sent::Propose { .. } | Sent::PushRevs { .. })
                    if error.code == 403 =>
                {
                    self.fail(ReplicationError::ReadOnly(error.message), now, true)
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
            (Sent::SubChanges, Response::Ok) | (Sent::Ping, Response::Pong) => {}
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
                },
                Response::RevStatuses(statuses),
            ) => self.pushed_revs_answered(&collection, batch, bytes, docs, statuses, now),
            (sent, other) => self.violation(
                PeerMisbehaved::UnexpectedResponse {
                    request: sent.name(),
                    response: other.name(),
                },
                now,
            ),
        }
    }

    /// Starts replicating once both checkpoint copies are known.
    fn begin(&mut self, now: Instant) {
        let (Some(local), Some(remote)) = (&self.local_cp, &self.remote_cp) else {
            return;
        };
        let cp = Checkpoint::reconcile(local.as_ref(), remote.as_ref());
        self.progress_cp = Checkpoint {
            collections: self
                .cols
                .keys()
                .map(|name| (name.clone(), cp.get(name)))
                .collect(),
        };
        self.saved_cp = Some(cp);
        self.phase = Phase::Running;
        self.failed_attempts = 0;
        self.status.error = None;
        // Progress counts this connection's work: a retry starts over from the checkpoint.
        self.status.progress = Progress::default();
        self.timers
            .set(Timer::Checkpoint, now + self.config.checkpoint_interval);
        let names: Vec<CollectionName> = self.cols.keys().cloned().collect();
        for name in names {
            let start = self.progress_cp.get(&name);
            let pushes = self.config.replicator_type.pushes();
            let pulls = self.config.replicator_type.pulls();
            let continuous = self.config.continuous;
            let Some(c) = self.cols.get_mut(&name) else {
                continue;
            };
            if pushes {
                c.push.cursor = start.push;
                self.pump_push(&name);
            }
            if pulls {
                let Some(c) = self.cols.get(&name) else {
                    continue;
                };
                let doc_ids = c.config.doc_ids.clone();
                self.conn.request(
                    Request::SubChanges {
                        collection: name.clone(),
                        since: start.pull,
                        continuous,
                        doc_ids,
                    },
                    Sent::SubChanges,
                );
            }
        }
        self.update_activity(now);
    }

    // ---- push ----

    /// Starts the next changes read if flow control allows, and sends queued revisions.
    fn pump_push(&mut self, name: &CollectionName) {
        let limit = self.config.changes_batch;
        let max_batches = self.config.max_push_batches;
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        let more = !c.push.at_end || c.push.dirty;
        if !c.push.reading && more && c.push.batches.len() < max_batches {
            c.push.reading = true;
            c.push.dirty = false;
            let since = c.push.cursor;
            self.op(
                StorageOp::Changes {
                    collection: name.clone(),
                    since,
                    limit,
                },
                Op::PushRead(name.clone()),
            );
        }
        self.send_queued_revs(name);
    }

    fn push_read(&mut self, name: CollectionName, changes: Vec<Change>, now: Instant) {
        let limit = self.config.changes_batch;
        // Deep enough to reach back to whatever the receiver knows (see fit_history).
        let max_history = crate::bundle::READ_HISTORY;
        let Some(c) = self.cols.get_mut(&name) else {
            return;
        };
        c.push.reading = false;
        c.push.at_end = changes.len() < limit;
        let Some(last_seq) = changes.last().map(|ch| ch.seq) else {
            self.pump_push(&name);
            return self.update_activity(now);
        };
        c.push.cursor = last_seq;
        let total = changes.len() as u64;
        let selected: Vec<Change> = changes
            .into_iter()
            .filter(|ch| {
                c.config
                    .doc_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&ch.doc_id))
            })
            .collect();
        let id = c.push.next_batch;
        c.push.next_batch += 1;
        c.push.batches.push_back(PushBatch {
            id,
            last_seq,
            revs: BTreeMap::new(),
            outstanding: usize::from(!selected.is_empty()),
        });
        self.progress(total - selected.len() as u64, total);
        if !selected.is_empty() {
            let ids = selected.iter().map(|ch| ch.doc_id.clone()).collect();
            self.op(
                StorageOp::GetLeaves {
                    collection: name.clone(),
                    ids,
                    max_history,
                },
                Op::PushLeaves {
                    collection: name.clone(),
                    batch: id,
                    changes: selected,
                },
            );
        }
        self.pump_push(&name);
        self.finish_push_batches(&name, now);
    }

    /// The documents of a push batch are read: filter them, then propose them or, for a
    /// small batch, send them at once.
    fn push_leaves_read(
        &mut self,
        name: CollectionName,
        batch: u64,
        changes: Vec<Change>,
        leaves: Vec<Vec<Revision>>,
        now: Instant,
    ) {
        let direct_max = self.config.push_without_proposal;
        let max_history = self.config.max_history;
        let Some(c) = self.cols.get_mut(&name) else {
            return;
        };
        let filter = c.config.push_filter.clone();
        let Some(b) = c.push.batches.iter_mut().find(|b| b.id == batch) else {
            return;
        };
        b.outstanding -= 1;
        let mut skipped = 0;
        let mut proposal = Vec::new();
        for (change, leaves) in changes.into_iter().zip(leaves) {
            // A superseded revision has no bundle: its newer change is later in the feed.
            let Some(bundle) = crate::bundle_from_leaves(leaves, &change.rev) else {
                skipped += 1;
                continue;
            };
            let include = match (&filter, bundle.last()) {
                (Some(f), Some(rev)) => f.include(&FilterContext {
                    collection: &name,
                    doc_id: &change.doc_id,
                    revision: rev,
                }),
                _ => true,
            };
            let other_leaves = crate::other_leaf_ids(&bundle);
            if !include
                || c.peer_knows
                    .peer_has(&change.doc_id, &change.rev, &other_leaves)
            {
                skipped += 1;
                continue;
            }
            proposal.push(Change {
                other_leaves,
                ..change.clone()
            });
            b.revs.insert(change.doc_id, (bundle, change.seq));
        }
        let direct = !proposal.is_empty()
            && proposal.len() <= direct_max
            && proposal
                .iter()
                .filter_map(|ch| b.revs.get(&ch.doc_id))
                .map(|(revisions, _)| revisions.iter().map(|r| r.body.len()).sum::<usize>())
                .sum::<usize>()
                <= DIRECT_PUSH_BYTES;
        if direct {
            // Sent whole, without asking: history reaches back `max_history` ancestors,
            // and a receiver further behind answers Conflict, which sends it again with
            // history reaching its revision (see `retry_bundle`).
            let bundles = proposal
                .iter()
                .filter_map(|ch| {
                    let (revisions, seq) = b.revs.get(&ch.doc_id)?;
                    let mut revisions = revisions.clone();
                    crate::bundle::fit_history(&mut revisions, &[], max_history);
                    Some(RevBundle {
                        doc_id: ch.doc_id.clone(),
                        revisions,
                        seq: *seq,
                    })
                })
                .collect();
            self.progress(skipped, 0);
            self.enqueue_revs(&name, batch, bundles, false);
            self.send_queued_revs(&name);
            return self.finish_push_batches(&name, now);
        }
        // A change takes at most ~2 KiB, so it always goes: a peer whose limit is smaller
        // than that refuses the frame with 1009, which ends the replication with that reason.
        let budget = crate::bundle::FrameBudget {
            hard_bytes: usize::MAX,
            ..self.budget(self.config.changes_batch)
        };
        let envelope = crate::bundle::wire_size::envelope(&name);
        let frames =
            crate::bundle::cut(proposal, crate::bundle::wire_size::change, envelope, budget).frames;
        if let Some(b) = self
            .cols
            .get_mut(&name)
            .and_then(|c| c.push.batches.iter_mut().find(|b| b.id == batch))
        {
            b.outstanding += frames.len();
        }
        for (changes, _) in frames {
            let docs = changes.iter().map(|ch| ch.doc_id.clone()).collect();
            self.conn.request(
                Request::ProposeChanges {
                    collection: name.clone(),
                    changes,
                },
                Sent::Propose {
                    collection: name.clone(),
                    batch,
                    docs,
                },
            );
        }
        self.progress(skipped, 0);
        self.finish_push_batches(&name, now);
    }

    fn proposal_answered(
        &mut self,
        name: &CollectionName,
        batch: u64,
        docs: Vec<DocId>,
        flags: Vec<Option<Vec<RevId>>>,
        now: Instant,
    ) {
        let max_history = self.config.max_history;
        if flags.len() != docs.len() {
            let v = PeerMisbehaved::AnswerLength {
                response: "Wanted",
                got: flags.len(),
                expected: docs.len(),
                of: "proposed changes",
            };
            return self.violation(v, now);
        }
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        let Some(b) = c.push.batches.iter_mut().find(|b| b.id == batch) else {
            return;
        };
        b.outstanding -= 1;
        let mut not_needed = 0;
        let mut bundles = Vec::new();
        for (doc_id, want) in docs.into_iter().zip(flags) {
            match (want, b.revs.get(&doc_id)) {
                (Some(known), Some((revisions, seq))) => bundles.push(RevBundle {
                    doc_id,
                    revisions: {
                        let mut revisions = revisions.clone();
                        crate::bundle::fit_history(&mut revisions, &known, max_history);
                        revisions
                    },
                    seq: *seq,
                }),
                _ => {
                    b.revs.remove(&doc_id);
                    not_needed += 1;
                }
            }
        }
        self.progress(not_needed, 0);
        self.enqueue_revs(name, batch, bundles, false);
        self.send_queued_revs(name);
        self.finish_push_batches(name, now);
    }

    /// How this side cuts frames for the peer: at most `max_entries` entries, cut at
    /// [`ReplicatorConfig::message_bytes`], never over the frame limit the peer announced.
    fn budget(&self, max_entries: usize) -> crate::bundle::FrameBudget {
        let hard_bytes = self.peer_frame_limit;
        crate::bundle::FrameBudget {
            max_entries,
            soft_bytes: self.config.message_bytes.min(hard_bytes),
            hard_bytes,
        }
    }

    /// Queues a push batch's bundles as `Revs` messages (at the front: a retry goes
    /// first). A document too large for any message the peer accepts is reported and
    /// counted done: it is never sent, so nothing waits for it.
    fn enqueue_revs(
        &mut self,
        name: &CollectionName,
        batch: u64,
        bundles: Vec<RevBundle>,
        front: bool,
    ) {
        let budget = self.budget(self.config.revs_per_message);
        let envelope = crate::bundle::wire_size::envelope(name);
        let crate::bundle::Cut { frames, too_large } =
            crate::bundle::cut(bundles, crate::bundle::wire_size::bundle, envelope, budget);
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        if let Some(b) = c.push.batches.iter_mut().find(|b| b.id == batch) {
            b.outstanding += frames.len();
            for (bundle, _) in &too_large {
                b.revs.remove(&bundle.doc_id);
            }
        }
        if front {
            for (docs, bytes) in frames.into_iter().rev() {
                c.push.queue.push_front((batch, docs, bytes));
            }
        } else {
            c.push
                .queue
                .extend(frames.into_iter().map(|(docs, bytes)| (batch, docs, bytes)));
        }
        if too_large.is_empty() {
            return;
        }
        let events: Vec<DocumentEvent> = crate::bundle::oversized(too_large)
            .into_iter()
            .map(|o| crate::bundle::too_large_event(name, o, Direction::Push, budget.hard_bytes))
            .collect();
        self.progress(events.len() as u64, 0);
        self.conn.event(Event::Documents(events));
    }

    /// Sends queued `Revs` messages while the byte budget allows (always at least one).
    fn send_queued_revs(&mut self, name: &CollectionName) {
        let budget = self.config.max_rev_bytes_in_flight;
        loop {
            let Some(c) = self.cols.get_mut(name) else {
                return;
            };
            if c.push.bytes_in_flight > 0 && c.push.bytes_in_flight >= budget {
                return;
            }
            let Some((batch, docs, bytes)) = c.push.queue.pop_front() else {
                return;
            };
            let summary = docs
                .iter()
                .filter_map(|d| {
                    d.revisions
                        .last()
                        .map(|r| (d.doc_id.clone(), r.rev, r.deleted))
                })
                .collect();
            let request = Request::Revs {
                collection: name.clone(),
                docs,
                unavailable: Vec::new(),
                oversized: Vec::new(),
            };
            c.push.bytes_in_flight += bytes;
            self.conn.request(
                request,
                Sent::PushRevs {
                    collection: name.clone(),
                    batch,
                    bytes,
                    docs: summary,
                },
            );
        }
    }

    fn pushed_revs_answered(
        &mut self,
        name: &CollectionName,
        batch: u64,
        bytes: usize,
        docs: Vec<(DocId, RevId, bool)>,
        statuses: Vec<RevStatus>,
        now: Instant,
    ) {
        if statuses.len() != docs.len() {
            let v = PeerMisbehaved::AnswerLength {
                response: "RevStatuses",
                got: statuses.len(),
                expected: docs.len(),
                of: "documents",
            };
            return self.violation(v, now);
        }
        // A conflict is resolved by pulling: the pull brings the remote revision, the
        // resolver decides, and the resolution is pushed as a new local change. One
        // exception: the receiver's current revision is an ancestor of ours that our
        // trimmed history did not reach (it changed after it answered the proposal).
        // That is no conflict, so the bundle goes again, once, with history reaching it.
        let max_history = self.config.max_history;
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        let mut batch_state = c.push.batches.iter_mut().find(|b| b.id == batch);
        let mut retries = Vec::new();
        let mut events = Vec::with_capacity(docs.len());
        for ((doc_id, rev, deleted), status) in docs.into_iter().zip(statuses) {
            if let RevStatus::Conflict { current: Some(cur) } = &status
                && let Some(b) = batch_state.as_deref_mut()
                && let Some(bundle) = retry_bundle(b, &doc_id, cur, max_history)
            {
                retries.push(bundle);
                continue;
            }
            events.push(DocumentEvent {
                collection: name.clone(),
                doc_id,
                rev,
                direction: Direction::Push,
                deleted,
                already_had: status == RevStatus::AlreadyHad,
                error: match status {
                    RevStatus::Ok | RevStatus::AlreadyHad => None,
                    RevStatus::Rejected { code, reason } => {
                        Some(DocumentError::Rejected { code, reason })
                    }
                    RevStatus::Conflict { current } => {
                        Some(DocumentError::Conflict { remote: current })
                    }
                },
                conflict_resolved: false,
            });
        }
        let done = events.len() as u64;
        c.push.bytes_in_flight = c.push.bytes_in_flight.saturating_sub(bytes);
        if let Some(b) = c.push.batches.iter_mut().find(|b| b.id == batch) {
            b.outstanding -= 1;
        }
        if !events.is_empty() {
            self.conn.event(Event::Documents(events));
        }
        self.progress(done, 0);
        if !retries.is_empty() {
            self.enqueue_revs(name, batch, retries, true);
        }
        self.send_queued_revs(name);
        self.finish_push_batches(name, now);
    }

    /// Retires finished batches in order, advancing the push checkpoint.
    fn finish_push_batches(&mut self, name: &CollectionName, now: Instant) {
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        let mut advanced = None;
        while c.push.batches.front().is_some_and(|b| b.outstanding == 0) {
            advanced = c.push.batches.pop_front().map(|b| b.last_seq);
        }
        if let Some(seq) = advanced {
            self.progress_cp
                .collections
                .entry(name.clone())
                .or_default()
                .push = seq;
            self.pump_push(name);
        }
        self.update_activity(now);
    }

    // ---- pull ----

    fn pulled_changes(
        &mut self,
        n: RequestNumber,
        name: CollectionName,
        changes: Vec<Change>,
        now: Instant,
    ) {
        let pulls = self.config.replicator_type.pulls();
        let Some(c) = self.cols.get_mut(&name).filter(|_| pulls) else {
            let v = PeerMisbehaved::NotPulling {
                request: "Changes",
                collection: name,
            };
            return self.violation(v, now);
        };
        let Some(last_seq) = changes.iter().map(|ch| ch.seq).max() else {
            c.pull.caught_up = true;
            self.conn.respond(n, Response::Wanted(Vec::new()));
            return self.update_activity(now);
        };
        c.pull.caught_up = false;
        let selected: Vec<bool> = changes
            .iter()
            .map(|ch| {
                c.config
                    .doc_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&ch.doc_id))
            })
            .collect();
        let chosen: Vec<Change> = changes
            .iter()
            .zip(&selected)
            .filter(|(_, s)| **s)
            .map(|(ch, _)| ch.clone())
            .collect();
        let total = changes.len() as u64;
        c.pull.batches.push_back(PullBatch {
            request: n,
            last_seq,
            diffing: !chosen.is_empty(),
            outstanding: BTreeSet::new(),
        });
        if chosen.is_empty() {
            self.conn
                .respond(n, Response::Wanted(vec![None; changes.len()]));
            self.progress(total, total);
            return self.finish_pull_batches(&name, now);
        }
        self.progress(0, total);
        let (revs, counts) = crate::bundle::diff_query(&chosen);
        self.op(
            StorageOp::RevsDiff {
                collection: name.clone(),
                revs,
            },
            Op::PullDiff(PullDiff {
                collection: name,
                request: n,
                changes,
                selected,
                counts,
            }),
        );
    }

    fn pull_diffed(&mut self, op: PullDiff, diff: Vec<RevsDiff>, now: Instant) {
        let PullDiff {
            collection: name,
            request,
            changes,
            selected,
            counts,
        } = op;
        let mut chosen_wanted = crate::bundle::wanted_from_diff(&counts, diff).into_iter();
        let mut flags = Vec::with_capacity(changes.len());
        let mut wanted = BTreeSet::new();
        for (change, sel) in changes.iter().zip(&selected) {
            let want = if *sel {
                chosen_wanted.next().flatten()
            } else {
                None
            };
            if want.is_some() {
                wanted.insert(change.doc_id.clone());
            }
            flags.push(want);
        }
        let not_wanted = (changes.len() - wanted.len()) as u64;
        if let Some(b) = self.cols.get_mut(&name).and_then(|c| {
            c.pull
                .batches
                .iter_mut()
                .find(|b| b.request == request && b.diffing)
        }) {
            b.diffing = false;
            b.outstanding = wanted;
        }
        self.conn.respond(request, Response::Wanted(flags));
        self.progress(not_wanted, 0);
        self.finish_pull_batches(&name, now);
    }

    fn pulled_revs(
        &mut self,
        n: RequestNumber,
        name: CollectionName,
        docs: Vec<RevBundle>,
        unavailable: Vec<DocId>,
        oversized: Vec<Oversized>,
        now: Instant,
    ) {
        if !self.config.replicator_type.pulls() || !self.cols.contains_key(&name) {
            let v = PeerMisbehaved::NotPulling {
                request: "Revs",
                collection: name,
            };
            return self.violation(v, now);
        }
        for bundle in &docs {
            if bundle.revisions.is_empty() {
                let v = PeerMisbehaved::EmptyBundle(bundle.doc_id.clone());
                return self.violation(v, now);
            }
            for r in &bundle.revisions {
                if let Err(e) = r.validate() {
                    let v = PeerMisbehaved::InvalidRevision {
                        doc_id: bundle.doc_id.clone(),
                        rev: r.rev,
                        error: e,
                    };
                    return self.violation(v, now);
                }
            }
        }
        for doc in &unavailable {
            self.pull_doc_done(&name, doc);
        }
        if !oversized.is_empty() {
            let limit = self.config.frame_limits.max_frame_bytes;
            let events = oversized
                .into_iter()
                .map(|o| {
                    self.pull_doc_done(&name, &o.doc_id);
                    crate::bundle::too_large_event(&name, o, Direction::Pull, limit)
                })
                .collect();
            self.conn.event(Event::Documents(events));
        }
        let filter = self
            .cols
            .get(&name)
            .and_then(|c| c.config.pull_filter.clone());
        let mut entry = PullRevs {
            collection: name.clone(),
            pending: 0,
            order: Vec::with_capacity(docs.len()),
            statuses: BTreeMap::new(),
            events: Vec::new(),
        };
        let mut to_insert = Vec::new();
        for bundle in docs {
            entry.order.push(bundle.doc_id.clone());
            let include = match (&filter, bundle.revisions.last()) {
                (Some(f), Some(rev)) => f.include(&FilterContext {
                    collection: &name,
                    doc_id: &bundle.doc_id,
                    revision: rev,
                }),
                _ => true,
            };
            if include {
                to_insert.push((bundle.doc_id, bundle.revisions));
            } else {
                entry.statuses.insert(bundle.doc_id.clone(), RevStatus::Ok);
                self.pull_doc_done(&name, &bundle.doc_id);
            }
        }
        if !to_insert.is_empty() {
            entry.pending = 1;
            // Only a replicator that also pushes could offer these revisions back.
            if self.config.replicator_type.pushes()
                && let Some(c) = self.cols.get_mut(&name)
            {
                for (doc_id, revisions) in &to_insert {
                    c.peer_knows
                        .record(doc_id, revisions.iter().map(|r| r.rev).collect());
                }
            }
            let inserts = to_insert
                .iter()
                .map(|(doc_id, revisions)| RevisionInsert {
                    doc_id: doc_id.clone(),
                    revisions: revisions.clone(),
                    mode: InsertMode::NoConflicts,
                })
                .collect();
            self.op(
                StorageOp::InsertRevisions {
                    collection: name.clone(),
                    inserts,
                },
                Op::PullInsert {
                    collection: name,
                    request: n,
                    bundles: to_insert,
                },
            );
        }
        self.pull_revs.insert(n, entry);
        self.finish_pull_revs(n, now);
    }

    fn pull_inserted(
        &mut self,
        name: CollectionName,
        request: RequestNumber,
        bundles: Vec<(DocId, Vec<Revision>)>,
        outcomes: Vec<InsertOutcome>,
        now: Instant,
    ) {
        for ((doc_id, bundle), outcome) in bundles.into_iter().zip(outcomes) {
            match outcome {
                InsertOutcome::Inserted { .. } => {
                    self.pulled_doc(&name, request, doc_id, &bundle, None, RevStatus::Ok);
                }
                InsertOutcome::AlreadyHad { .. } => {
                    let status = RevStatus::AlreadyHad;
                    self.pulled_doc(&name, request, doc_id, &bundle, None, status);
                }
                InsertOutcome::Conflict { .. } => {
                    if let Some(entry) = self.pull_revs.get_mut(&request) {
                        entry.pending += 1;
                    }
                    self.read_to_resolve(Resolving {
                        collection: name.clone(),
                        request,
                        doc: doc_id,
                        bundle,
                        attempt: 0,
                    });
                }
                InsertOutcome::Invalid(e) => {
                    let reason = e.to_string();
                    self.pull_rejected(&name, request, doc_id, &bundle, 400, reason);
                }
            }
        }
        self.pull_op_done(request, now);
    }

    /// Reads a conflicting document's leaves, to resolve its conflict with `bundle`.
    fn read_to_resolve(&mut self, r: Resolving) {
        let read = StorageOp::GetLeaves {
            collection: r.collection.clone(),
            ids: vec![r.doc.clone()],
            max_history: self.config.max_history,
        };
        self.op(read, Op::ResolveRead(r));
    }

    /// Resolves a pulled document that conflicts with the local current revision, and
    /// writes the pulled bundle and the resolution in one guarded insert.
    fn resolve(&mut self, r: Resolving, leaves: Vec<Revision>, now: Instant) {
        let max_history = self.config.max_history;
        let Some(remote) = r.bundle.last() else {
            return;
        };
        let local = leaves.iter().max_by_key(|l| (!l.deleted, l.rev));
        let (expected, revisions, resolved) = match local {
            None => (None, Ok(r.bundle.clone()), false),
            Some(local) if local.is_or_descends_from(&remote.rev) => {
                // The remote revision arrived meanwhile: nothing to resolve.
                let Resolving {
                    collection,
                    request,
                    doc,
                    bundle,
                    ..
                } = r;
                self.pulled_doc(&collection, request, doc, &bundle, None, RevStatus::Ok);
                return self.pull_op_done(request, now);
            }
            Some(local)
                if leaves.iter().any(|l| l.history.contains(&remote.rev))
                    && !bundle_touches_branch(&r.bundle, &leaves, local) =>
            {
                // The remote revision is already here with a descendant (say a tombstone
                // that closed it): the sender is behind and there is nothing to resolve.
                // Keep what else the bundle brings (the branches it closed).
                (Some(local.rev), Ok(r.bundle.clone()), false)
            }
            Some(local) => {
                let conflict = Conflict {
                    doc_id: &r.doc,
                    local: ConflictSide { revision: local },
                    remote: ConflictSide { revision: remote },
                };
                let custom = self
                    .cols
                    .get(&r.collection)
                    .and_then(|c| c.config.conflict_resolver.clone());
                let resolution = match &custom {
                    Some(resolver) => resolver.resolve(&conflict),
                    None => self.resolver.resolve(&conflict),
                };
                let revs = resolution_revisions(&conflict, &resolution, max_history).map(|extra| {
                    let mut all = r.bundle.clone();
                    all.extend(extra);
                    all
                });
                (Some(local.rev), revs, true)
            }
        };
        match revisions {
            Ok(revisions) => {
                let write = StorageOp::InsertRevisions {
                    collection: r.collection.clone(),
                    inserts: vec![RevisionInsert {
                        doc_id: r.doc.clone(),
                        revisions,
                        mode: InsertMode::Guarded { expected },
                    }],
                };
                self.op(write, Op::ResolveWrite(r, resolved));
            }
            Err(e) => {
                let reason = format!("cannot resolve the conflict: {e}");
                let request = r.request;
                self.pull_rejected(&r.collection, request, r.doc, &r.bundle, 500, reason);
                self.pull_op_done(request, now);
            }
        }
    }

    /// The guarded insert of a pulled document (and its resolution) is done.
    fn resolution_written(
        &mut self,
        r: Resolving,
        resolved: bool,
        outcome: Option<InsertOutcome>,
        now: Instant,
    ) {
        let request = r.request;
        match outcome {
            Some(InsertOutcome::Inserted { .. } | InsertOutcome::AlreadyHad { .. }) => {
                let name = r.collection;
                self.pulled_doc(&name, request, r.doc, &r.bundle, None, RevStatus::Ok);
                if resolved {
                    self.mark_resolved(request);
                }
                // The resolution is a new local revision: push it.
                let pushes = self.config.replicator_type.pushes();
                if let Some(c) = self.cols.get_mut(&name).filter(|_| pushes) {
                    c.push.dirty = true;
                    self.pump_push(&name);
                }
            }
            Some(InsertOutcome::Conflict { .. }) if r.attempt + 1 < MAX_RESOLVE_ATTEMPTS => {
                // The local document changed while resolving: read it again.
                return self.read_to_resolve(Resolving {
                    attempt: r.attempt + 1,
                    ..r
                });
            }
            other => {
                let reason = match other {
                    Some(InsertOutcome::Invalid(e)) => e.to_string(),
                    _ => "the local document kept changing while resolving a conflict".into(),
                };
                self.pull_rejected(&r.collection, request, r.doc, &r.bundle, 409, reason);
            }
        }
        self.pull_op_done(request, now);
    }

    /// Records a pulled document that could not be stored.
    fn pull_rejected(
        &mut self,
        name: &CollectionName,
        request: RequestNumber,
        doc: DocId,
        bundle: &[Revision],
        code: u16,
        reason: String,
    ) {
        let error = DocumentError::Rejected {
            code,
            reason: reason.clone(),
        };
        self.pulled_doc(
            name,
            request,
            doc,
            bundle,
            Some(error),
            RevStatus::Rejected { code, reason },
        );
    }

    /// One storage operation of a pulled `Revs` request finished.
    fn pull_op_done(&mut self, request: RequestNumber, now: Instant) {
        if let Some(entry) = self.pull_revs.get_mut(&request) {
            entry.pending -= 1;
        }
        self.finish_pull_revs(request, now);
    }

    /// Flags the latest pulled document of a `Revs` request as a resolved conflict, if it
    /// was stored.
    fn mark_resolved(&mut self, request: RequestNumber) {
        if let Some(event) = self
            .pull_revs
            .get_mut(&request)
            .and_then(|e| e.events.last_mut())
            && event.error.is_none()
        {
            event.conflict_resolved = true;
        }
    }

    /// Records the outcome of one pulled document.
    fn pulled_doc(
        &mut self,
        name: &CollectionName,
        request: RequestNumber,
        doc_id: DocId,
        bundle: &[Revision],
        error: Option<DocumentError>,
        status: RevStatus,
    ) {
        let Some(remote) = bundle.last() else { return };
        self.pull_doc_done(name, &doc_id);
        if let Some(entry) = self.pull_revs.get_mut(&request) {
            entry.events.push(DocumentEvent {
                collection: name.clone(),
                doc_id: doc_id.clone(),
                rev: remote.rev,
                direction: Direction::Pull,
                deleted: remote.deleted,
                error,
                conflict_resolved: false,
                already_had: status == RevStatus::AlreadyHad,
            });
            entry.statuses.insert(doc_id, status);
        }
    }

    /// Marks a wanted document as handled in the oldest batch that waits for it.
    fn pull_doc_done(&mut self, name: &CollectionName, doc: &DocId) {
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        if let Some(b) = c
            .pull
            .batches
            .iter_mut()
            .find(|b| b.outstanding.contains(doc))
        {
            b.outstanding.remove(doc);
            self.progress(1, 0);
        }
    }

    /// Answers a `Revs` request once every document in it is stored.
    fn finish_pull_revs(&mut self, request: RequestNumber, now: Instant) {
        if self.pull_revs.get(&request).is_none_or(|e| e.pending > 0) {
            return;
        }
        let Some(entry) = self.pull_revs.remove(&request) else {
            return;
        };
        let PullRevs {
            collection,
            order,
            mut statuses,
            events,
            ..
        } = entry;
        let statuses = order
            .iter()
            .map(|d| statuses.remove(d).unwrap_or(RevStatus::Ok))
            .collect();
        self.conn.respond(request, Response::RevStatuses(statuses));
        if !events.is_empty() {
            self.conn.event(Event::Documents(events));
        }
        self.finish_pull_batches(&collection, now);
    }

    /// Retires finished batches in order, advancing the pull checkpoint.
    fn finish_pull_batches(&mut self, name: &CollectionName, now: Instant) {
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        let mut advanced = None;
        while c
            .pull
            .batches
            .front()
            .is_some_and(|b| !b.diffing && b.outstanding.is_empty())
        {
            advanced = c.pull.batches.pop_front().map(|b| b.last_seq);
        }
        if let Some(seq) = advanced {
            self.progress_cp
                .collections
                .entry(name.clone())
                .or_default()
                .pull = seq;
        }
        self.update_activity(now);
    }

    // ---- storage ----

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
            (
                Op::PushLeaves {
                    collection,
                    batch,
                    changes,
                },
                StorageReply::Leaves(leaves),
            ) => self.push_leaves_read(collection, batch, changes, leaves, now),
            (Op::PullDiff(op), StorageReply::RevsDiff(diff)) => self.pull_diffed(op, diff, now),
            (
                Op::PullInsert {
                    collection,
                    request,
                    bundles,
                },
                StorageReply::Inserted(outcomes),
            ) => self.pull_inserted(collection, request, bundles, outcomes, now),
            (Op::ResolveRead(r), StorageReply::Leaves(mut leaves)) => {
                let leaves = leaves.pop().unwrap_or_default();
                self.resolve(r, leaves, now)
            }
            (Op::ResolveWrite(r, resolved), StorageReply::Inserted(mut outcomes)) => {
                self.resolution_written(r, resolved, outcomes.pop(), now)
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

    // ---- checkpoints and activity ----

    /// Saves the progress checkpoint on both sides, unless it is unchanged.
    fn save_checkpoint(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        if self.saving > 0 {
            self.save_again = true;
            return;
        }
        if self.saved_cp.as_ref() == Some(&self.progress_cp) {
            return;
        }
        let cp = self.progress_cp.clone();
        self.saving = 2;
        self.conn.request(
            Request::SetCheckpoint {
                id: self.checkpoint_id.clone(),
                checkpoint: cp.clone(),
            },
            Sent::SetCheckpoint,
        );
        let id = local_checkpoint_key(&self.checkpoint_id);
        let value = cp.to_bytes();
        self.saving_cp = Some(cp);
        self.op(StorageOp::PutLocal { id, value }, Op::SaveLocalCheckpoint);
    }

    fn checkpoint_part_saved(&mut self, now: Instant) {
        self.saving = self.saving.saturating_sub(1);
        if self.saving > 0 {
            return;
        }
        if let Some(cp) = self.saving_cp.take() {
            self.saved_cp = Some(cp);
        }
        if std::mem::take(&mut self.save_again) {
            self.save_checkpoint();
        }
        self.update_activity(now);
    }

    fn is_busy(&self) -> bool {
        let pushes = self.config.replicator_type.pushes();
        let pulls = self.config.replicator_type.pulls();
        !self.pull_revs.is_empty()
            || self.cols.values().any(|c| {
                (pushes
                    && (c.push.reading
                        || !c.push.at_end
                        || c.push.dirty
                        || !c.push.batches.is_empty()
                        || !c.push.queue.is_empty()))
                    || (pulls && (!c.pull.caught_up || !c.pull.batches.is_empty()))
            })
    }

    /// Busy or idle; a one-shot replication that has caught up saves its checkpoint and
    /// stops.
    fn update_activity(&mut self, _now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if self.is_busy() {
            return self.set_activity(Activity::Busy);
        }
        if self.config.continuous {
            self.save_checkpoint();
            return self.set_activity(Activity::Idle);
        }
        self.save_checkpoint();
        if self.saving == 0 && self.saved_cp.as_ref() == Some(&self.progress_cp) {
            self.conn.outputs.push_back(Output::Close(CloseReason::new(
                CloseCode::Normal,
                "replication complete",
            )));
            self.end_connection();
            self.phase = Phase::Stopped;
            self.timers.clear();
            self.set_activity(Activity::Stopped);
        }
    }
}

/// The bundle to send again when the receiver answered "conflict" with a current
/// revision that is in fact an ancestor of what was pushed, beyond the trimmed
/// history. Takes the bundle out of the batch, so a document is retried at most once.
fn retry_bundle(
    batch: &mut PushBatch,
    doc_id: &DocId,
    remote_current: &RevId,
    max_history: usize,
) -> Option<RevBundle> {
    let (revisions, _) = batch.revs.get(doc_id)?;
    if !revisions.iter().any(|r| r.history.contains(remote_current)) {
        return None;
    }
    let (mut revisions, seq) = batch.revs.remove(doc_id)?;
    crate::bundle::fit_history(&mut revisions, &[*remote_current], max_history);
    Some(RevBundle {
        doc_id: doc_id.clone(),
        revisions,
        seq,
    })
}

/// Whether `bundle` brings a revision that is new here and grows from the local current
/// revision's branch (say a tombstone of one of its ancestors): writing it would put
/// that branch in conflict, so the document needs a real resolution.
fn bundle_touches_branch(bundle: &[Revision], leaves: &[Revision], local: &Revision) -> bool {
    bundle.iter().any(|r| {
        !leaves.iter().any(|l| l.is_or_descends_from(&r.rev))
            && r.parent().is_some_and(|p| local.is_or_descends_from(p))
    })
}
