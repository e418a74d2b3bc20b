//! What goes into and comes out of the replication state machines.

use bytes::Bytes;

use crate::{
    CollectionName, DocId, ErrorBody, OpId, PeerMisbehaved, RevId, Seq, StorageFailure, StorageOp,
    StorageReply,
};

/// An input to a state machine, passed to `handle_input` with the current time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Input {
    /// The connection the machine asked for (with [`Output::Connect`]) is open.
    /// Passive peers start connected and never receive this.
    Connected,
    /// One WebSocket binary message arrived.
    Frame(Bytes),
    /// The connection closed or could not be opened.
    Disconnected(Disconnect),
    /// The reply to a storage operation the machine emitted.
    Storage(OpId, StorageReply),
    /// The local database committed a change in `collection` with sequence `seq`
    /// (continuous replication listens to these). It may be fed as soon as the change is
    /// readable, before it is durable: a peer still acknowledges only what it made
    /// durable, and checkpoints reconcile to the earlier of their two copies, so a crash
    /// that loses the change here skips nothing later.
    LocalChange(CollectionName, Seq),
}

/// Why a connection ended or could not be made, as reported by the runtime.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Disconnect {
    /// What happened, for people.
    pub message: String,
    /// True when trying again later may work (connection refused, reset, timeout);
    /// false when it cannot without a change of configuration (wrong credentials,
    /// certificate rejected).
    pub retryable: bool,
    /// How long the peer asked to wait before trying again (an HTTP `Retry-After`): the
    /// next attempt waits at least this long, within `max_attempt_wait`.
    pub retry_after: Option<std::time::Duration>,
}

impl Disconnect {
    /// A retryable disconnect.
    pub fn transient(message: impl Into<String>) -> Disconnect {
        Disconnect {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A disconnect that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Disconnect {
        Disconnect {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// The peer closed the connection with this WebSocket close code and reason. It is
    /// retryable unless the code says the same conversation would be refused again:
    /// 1002 protocol error, 1003 unsupported data, 1007 invalid data, 1009 message too
    /// big, 1010 missing extension.
    ///
    /// ```
    /// use peerlite_proto::Disconnect;
    /// assert!(Disconnect::from_close(1001, "listener stopping").retryable);
    /// assert!(!Disconnect::from_close(1009, "message too big").retryable);
    /// ```
    pub fn from_close(code: u16, reason: &str) -> Disconnect {
        let message = if reason.is_empty() {
            format!("closed by the peer ({code})")
        } else {
            format!("closed by the peer ({code}): {reason}")
        };
        Disconnect {
            message,
            retryable: !matches!(code, 1002 | 1003 | 1007 | 1009 | 1010),
            retry_after: None,
        }
    }
}

/// An output of a state machine, drained with `poll_output` until `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Open a connection to the remote peer, then feed [`Input::Connected`] (or
    /// [`Input::Disconnected`] if it fails). Active replicators only.
    Connect,
    /// Send one WebSocket binary message.
    Send(Bytes),
    /// Run a storage operation and feed the reply back as [`Input::Storage`].
    Storage(OpId, StorageOp),
    /// Something happened that the application may want to know.
    Event(Event),
    /// Close the connection (with a WebSocket close frame carrying `reason`).
    Close(CloseReason),
}

/// Why a state machine closes its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: CloseCode,
    /// A short explanation.
    pub message: String,
    /// The peer's protocol violation, when that is why.
    pub violation: Option<PeerMisbehaved>,
}

impl CloseReason {
    /// A close for `code`, explained by `message`.
    pub fn new(code: CloseCode, message: impl Into<String>) -> CloseReason {
        CloseReason {
            code,
            message: message.into(),
            violation: None,
        }
    }

    /// A close because the peer broke the protocol (code 1002).
    pub fn violation(violation: PeerMisbehaved) -> CloseReason {
        CloseReason {
            code: CloseCode::ProtocolError,
            message: violation.to_string(),
            violation: Some(violation),
        }
    }
}

/// WebSocket close codes used by Peerlite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CloseCode {
    /// 1000: done.
    Normal,
    /// 1001: the peer is going away (stopped).
    GoingAway,
    /// 1002: the other side broke the protocol.
    ProtocolError,
    /// 1008: refused by policy (e.g. an idle or dead connection).
    PolicyViolation,
    /// 1009: a message larger than this side accepts.
    MessageTooBig,
    /// 1011: an internal failure, such as storage.
    InternalError,
}

impl CloseCode {
    /// The numeric WebSocket code.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
        }
    }
}

/// Direction of replication, from the active peer's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Active → passive.
    Push,
    /// Passive → active.
    Pull,
}

/// What the replicator is doing (Couchbase Lite's activity levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activity {
    /// Not running: never started, stopped, or finished.
    Stopped,
    /// Disconnected, waiting to retry.
    Offline,
    /// Opening a connection and handshaking.
    Connecting,
    /// Connected and caught up (continuous mode waits here for changes).
    Idle,
    /// Transferring changes.
    Busy,
}

/// Progress in abstract units: one per change found to push or announced by the peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Progress {
    /// Changes handled.
    pub completed: u64,
    /// Changes known so far.
    pub total: u64,
}

/// A replicator's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The activity level.
    pub activity: Activity,
    /// Progress since start.
    pub progress: Progress,
    /// The latest error, if any (kept while retrying; cleared on success).
    pub error: Option<ReplicationError>,
    /// While [`Activity::Offline`] after a failure: the attempt that failed (1 for the
    /// first) and how long until the next one.
    pub retry: Option<Retry>,
}

/// A retry the replicator has scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Connection attempts that failed in a row.
    pub failed_attempts: u32,
    /// Attempts allowed in all (0: unlimited).
    pub max_attempts: u32,
    /// The wait before the next attempt.
    pub wait: std::time::Duration,
}

/// Why replication failed or is retrying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The connection failed or closed (see [`Disconnect`]).
    #[error("connection failed: {message}")]
    Transport {
        /// What the runtime reported.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// The remote peer sent something this protocol does not allow.
    #[error("the remote peer broke the protocol: {0}")]
    Protocol(Box<PeerMisbehaved>),
    /// The remote peer refused a request.
    #[error("the remote peer refused: {0}")]
    Remote(ErrorBody),
    /// The listener does not let this replicator push (it is read-only, or read-only for
    /// this user): replicate with pull only.
    #[error(
        "this listener is read-only: sync with pull only (peerlite sync --pull; ReplicatorType::Pull) — it said: {0}"
    )]
    ReadOnly(String),
    /// The remote peer speaks no protocol version this build speaks.
    #[error("the remote peer does not speak protocol version {ours}: {message}")]
    UnsupportedVersion {
        /// Our version.
        ours: u32,
        /// The peer's explanation.
        message: String,
    },
    /// The local store failed.
    #[error(transparent)]
    Storage(StorageFailure),
    /// Nothing arrived from the peer within the heartbeat timeout.
    #[error("the remote peer stopped answering (no message for {0:?})")]
    Timeout(std::time::Duration),
    /// The remote peer forgot deletions this replicator has not pulled yet: tombstones
    /// older than its retention were dropped after this peer last synced with it, so
    /// pulling on would leave documents deleted there alive here, and pushing could bring
    /// them back there. Nothing was pushed. Not retried. To recover, pull into a new
    /// database; what this side changed while away stays in this one, to export and
    /// apply again.
    #[error(
        "the remote peer has forgotten deletions made since this peer last pulled from it (it keeps tombstones for a limited time and this peer was away longer), so syncing on could bring deleted documents back; nothing was pushed. Pull into a new database (peerlite sync --pull --db NEW); what changed here while away stays in this database to export and apply again. It said: {message}"
    )]
    PeerForgotDeletions {
        /// The remote peer's explanation (the sequences involved).
        message: String,
    },
    /// This database forgot deletions before pushing them to the remote peer: tombstones
    /// older than its retention were dropped while this peer had not synced, so the remote
    /// peer still holds those documents and pulling would bring them back. Checked before
    /// anything moves either way. Not retried.
    #[error(
        "this database has forgotten deletions it had not pushed to the remote peer yet (it last pushed sequence {since}; tombstones up to sequence {through} were dropped after their retention): the remote peer still holds those documents, and nothing was pushed or pulled. Pull into a new database (peerlite sync --pull --db NEW) and delete them again there; a longer retention (peerlite retention) avoids this"
    )]
    ForgotDeletions {
        /// This side's push checkpoint.
        since: Seq,
        /// The highest sequence a forgotten tombstone had.
        through: Seq,
    },
    /// Gave up after the configured number of attempts.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<ReplicationError>,
    },
}

impl ReplicationError {
    /// True when the replicator will (or would) retry after this error.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicationError::Transport { retryable, .. } => *retryable,
            ReplicationError::Timeout(_) => true,
            ReplicationError::Storage(f) => f.transient,
            // A failing server may recover; no version in common will not appear.
            ReplicationError::Remote(e) => {
                e.code >= 500 && e.kind() != Some(crate::Code::UnsupportedVersion)
            }
            ReplicationError::Protocol(_)
            | ReplicationError::ReadOnly(_)
            | ReplicationError::PeerForgotDeletions { .. }
            | ReplicationError::ForgotDeletions { .. }
            | ReplicationError::UnsupportedVersion { .. }
            | ReplicationError::GaveUp { .. } => false,
        }
    }
}

/// Why one document did not replicate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// The receiver has a conflicting revision; pulling resolves it.
    #[error("conflict: the remote peer has a different revision ({})", .remote.map(|r| r.to_string()).unwrap_or_else(|| "none".into()))]
    Conflict {
        /// The remote current revision.
        remote: Option<RevId>,
    },
    /// The receiver refused it (validation or authorization).
    #[error("rejected ({code}): {reason}")]
    Rejected {
        /// HTTP-like status (403).
        code: u16,
        /// The receiver's reason.
        reason: String,
    },
    /// It cannot be sent: even alone, it makes a message larger than the receiving peer
    /// accepts. It is not retried; it goes with a later change if that one fits, or once
    /// the receiver's `max_frame_bytes` is raised and the replication starts over.
    #[error(
        "too large to replicate: it needs a message of {bytes} bytes and the receiving peer accepts at most {limit}"
    )]
    TooLarge {
        /// The size of the message it needs.
        bytes: u64,
        /// The receiver's frame limit.
        limit: u64,
    },
}

/// One replicated (or failed) document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentEvent {
    /// The collection.
    pub collection: CollectionName,
    /// The document.
    pub doc_id: DocId,
    /// The revision replicated.
    pub rev: RevId,
    /// Push or pull.
    pub direction: Direction,
    /// True when the revision is a tombstone.
    pub deleted: bool,
    /// Why it failed, if it did.
    pub error: Option<DocumentError>,
    /// True when a pulled revision conflicted with a local one and the conflict was
    /// resolved (the resolution is pushed back as a new local revision).
    pub conflict_resolved: bool,
    /// True when the receiver already had the revision, so nothing was stored (the
    /// sender could not know: it skipped asking, or another peer delivered it first).
    pub already_had: bool,
}

impl DocumentEvent {
    /// The event for `doc` (its ID, revision and whether that is a tombstone) answered
    /// or stored with `status`.
    pub(crate) fn from_status(
        collection: &CollectionName,
        (doc_id, rev, deleted): (DocId, RevId, bool),
        direction: Direction,
        status: &crate::RevStatus,
    ) -> DocumentEvent {
        use crate::RevStatus;
        DocumentEvent {
            collection: collection.clone(),
            doc_id,
            rev,
            direction,
            deleted,
            error: match status {
                RevStatus::Ok | RevStatus::AlreadyHad => None,
                RevStatus::Conflict { current } => {
                    Some(DocumentError::Conflict { remote: *current })
                }
                RevStatus::Rejected { code, reason } => Some(DocumentError::Rejected {
                    code: *code,
                    reason: reason.clone(),
                }),
            },
            conflict_resolved: false,
            already_had: *status == RevStatus::AlreadyHad,
        }
    }
}

/// Something the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The replicator's status changed (active side).
    Status(Status),
    /// Documents were replicated, or failed to (both sides).
    Documents(Vec<DocumentEvent>),
    /// The connection was closed by this side or the other (both sides).
    Closed(CloseReason),
}

/// A mistake in how the caller drives a state machine (not the peer's fault).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A storage reply for an operation that is not pending.
    #[error(
        "no storage operation {0:?} is pending; feed each reply once, to the machine that emitted it"
    )]
    UnknownStorageOp(OpId),
    /// An input that makes no sense for this machine.
    #[error("unexpected input: {0}")]
    Unexpected(&'static str),
}
