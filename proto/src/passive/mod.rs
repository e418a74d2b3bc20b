//! The passive peer: the listener's side of one connection.
//!
//! It answers the active peer's requests — handshake, checkpoints, proposed changes,
//! pushed revisions — and serves changes feeds (one-shot or continuous) with bounded
//! batches and bounded bytes in flight. Pushed revisions are validated, checked by the
//! application's [`Validator`], inserted without creating conflicts, and acknowledged
//! only after the store reports them persisted.
//!
//! This file holds the connection's lifecycle and dispatches requests, responses and
//! storage replies to the sub-machines: [`auth`] (the handshake, what the principal may
//! do, pushed revisions validated and stored) and [`feed`] (the changes feed and the
//! revisions it sends).

mod auth;
mod feed;

use feed::Feed;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::peer_knows::PeerKnows;
use crate::receiver::{BlobAsk, BlobOp, BlobReplyError, FetchKinds, Fetches, Incoming};
use crate::timer::{Timer, TimerTable};
use crate::{
    ApiError, BlobDigest, Change, CloseCode, CloseReason, Code, CollectionName, Direction, DocId,
    DocumentEvent, ErrorBody, Event, Frame, FrameError, FrameLimits, Hello, Input, InsertOutcome,
    Output, PROTOCOL_VERSION, PeerMisbehaved, Request, RequestNumber, Response, RevBundle, RevId,
    RevStatus, Revision, RevisionInsert, Seq, StorageOp, StorageReply,
};

/// Who is on the other end of a connection, as established by the runtime's
/// authentication, and what they may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    /// The authenticated user name, if any.
    pub name: Option<String>,
    /// May only pull.
    pub read_only: bool,
    /// May only use these collections (`None`: all that the listener serves).
    pub collections: Option<BTreeSet<CollectionName>>,
}

/// What a [`Validator`] sees of a pushed revision.
#[derive(Clone, Copy, Debug)]
pub struct ValidationContext<'a> {
    /// The collection.
    pub collection: &'a CollectionName,
    /// The document.
    pub doc_id: &'a DocId,
    /// The revision (its body, deleted flag and history).
    pub revision: &'a Revision,
    /// Who pushed it.
    pub principal: &'a Principal,
}

/// Accepts or rejects pushed revisions, like Sync Gateway's sync function `throw()`.
/// Must be a pure function of its input. A rejected revision is not stored; the pusher
/// gets a per-document 403 with the reason.
///
/// ```
/// use peerlite_proto::{ValidationContext, Validator};
/// let require_title = |ctx: &ValidationContext<'_>| {
///     if ctx.revision.deleted || ctx.revision.body.to_json().get("title").is_some() {
///         Ok(())
///     } else {
///         Err("a document needs a title".to_string())
///     }
/// };
/// # fn takes(_: &dyn Validator) {}
/// takes(&require_title);
/// ```
pub trait Validator: Send + Sync {
    /// `Ok(())` to accept, `Err(reason)` to reject.
    fn validate(&self, ctx: &ValidationContext<'_>) -> Result<(), String>;
}

impl<F> Validator for F
where
    F: Fn(&ValidationContext<'_>) -> Result<(), String> + Send + Sync,
{
    fn validate(&self, ctx: &ValidationContext<'_>) -> Result<(), String> {
        self(ctx)
    }
}

/// Configuration of a passive peer.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PassiveConfig {
    /// The collections served.
    pub collections: Vec<CollectionName>,
    /// Refuse pushes from everyone.
    pub read_only: bool,
    /// Checks pushed revisions.
    #[serde(skip)]
    pub validator: Option<Arc<dyn Validator>>,
    /// Bounds on incoming frames.
    pub frame_limits: FrameLimits,
    /// Changes per `Changes` batch (default 200).
    pub changes_batch: usize,
    /// Unanswered `Changes` batches allowed (default 4).
    pub max_changes_in_flight: usize,
    /// Revisions per `Revs` message (default 100).
    pub revs_per_message: usize,
    /// Where messages are cut (default 1 MiB): entries are added to a `Changes` or `Revs`
    /// message while it stays within this size; a larger document still goes alone if the
    /// peer's announced frame limit allows, and is reported as
    /// [`DocumentError::TooLarge`](crate::DocumentError::TooLarge) if not.
    pub message_bytes: usize,
    /// Unacknowledged revision bytes allowed (default 2 MiB).
    pub max_rev_bytes_in_flight: usize,
    /// Ancestors sent with each revision (default 20).
    pub max_history: usize,
    /// Close a connection that sends nothing for this long (default 120 s).
    pub idle_timeout: Duration,
    /// Requests from the peer that may await an answer at once (default 64).
    pub max_pending_requests: usize,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            collections: vec![CollectionName::default()],
            read_only: false,
            validator: None,
            frame_limits: FrameLimits::DEFAULT,
            changes_batch: 200,
            max_changes_in_flight: 4,
            revs_per_message: 100,
            message_bytes: 1 << 20,
            max_rev_bytes_in_flight: 2 << 20,
            max_history: 20,
            idle_timeout: Duration::from_secs(120),
            max_pending_requests: 64,
        }
    }
}

impl fmt::Debug for PassiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveConfig")
            .field("collections", &self.collections)
            .field("read_only", &self.read_only)
            .field("validator", &self.validator.is_some())
            .field("changes_batch", &self.changes_batch)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// The local-document ID under which a client's checkpoint is kept.
pub fn peer_checkpoint_key(id: &str) -> String {
    format!("peer-cp/{id}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitingHello,
    Open,
    Closed,
}

/// Our requests awaiting an answer.
enum Sent {
    Changes {
        collection: CollectionName,
        changes: Vec<Change>,
    },
    Revs {
        collection: CollectionName,
        bytes: usize,
        docs: Vec<(DocId, RevId, bool)>,
        /// The blobs it refers to, offered until it is answered.
        blobs: Vec<BlobDigest>,
    },
    GetBlob(BlobAsk),
}

impl Sent {
    /// The name of the request it is.
    fn name(&self) -> &'static str {
        match self {
            Sent::Changes { .. } => "Changes",
            Sent::Revs { .. } => "Revs",
            Sent::GetBlob { .. } => "GetBlob",
        }
    }
}

/// Storage operations awaiting a reply.
enum Op {
    GetCheckpoint(RequestNumber),
    SetCheckpoint(RequestNumber),
    FeedRead(CollectionName),
    Propose(RequestNumber, Vec<usize>),
    ReadRevs {
        collection: CollectionName,
        /// Each wanted change with the receiver's known leaves of its document.
        changes: Vec<(Change, Vec<RevId>)>,
    },
    /// Inserting documents `indices` of a pushed `Revs` request.
    Insert {
        request: RequestNumber,
        indices: Vec<usize>,
    },
    Blob(BlobOp),
}

/// The passive side's names for fetching blobs.
struct PassiveFetch;

impl FetchKinds<Sent, Op> for PassiveFetch {
    fn sent(&self, ask: BlobAsk) -> Sent {
        Sent::GetBlob(ask)
    }
    fn op(&self, op: BlobOp) -> Op {
        Op::Blob(op)
    }
    fn insert(&self, request: RequestNumber, index: usize, _: &RevisionInsert) -> Op {
        Op::Insert {
            request,
            indices: vec![index],
        }
    }
}

/// The passive side of one replication connection. See the [crate docs](crate) for the
/// drive loop.
pub struct PassivePeer {
    config: PassiveConfig,
    principal: Principal,
    conn: Conn<Sent, Op>,
    phase: Phase,
    hello: Option<Hello>,
    feeds: BTreeMap<CollectionName, Feed>,
    /// Per collection, what the peer pushed lately: never announced back to it.
    pushed: BTreeMap<CollectionName, PeerKnows>,
    /// Pushed `Revs` requests being stored.
    incoming: BTreeMap<RequestNumber, Incoming>,
    /// Blobs those requests wait for.
    fetches: Fetches,
    timers: TimerTable,
    /// Replaying a redacted recording: revision IDs are not checked against bodies.
    trust_revision_ids: bool,
}

impl fmt::Debug for PassivePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassivePeer")
            .field("phase", &self.phase)
            .field("principal", &self.principal)
            .field("feeds", &self.feeds.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PassivePeer {
    /// A passive peer for a connection that is already open and authenticated as
    /// `principal`.
    pub fn new(config: PassiveConfig, principal: Principal, now: Instant) -> PassivePeer {
        let mut timers = TimerTable::default();
        timers.set(Timer::DeadPeer, now + config.idle_timeout);
        PassivePeer {
            config,
            principal,
            conn: Conn::default(),
            phase: Phase::AwaitingHello,
            hello: None,
            feeds: BTreeMap::new(),
            pushed: BTreeMap::new(),
            incoming: BTreeMap::new(),
            fetches: Fetches::default(),
            timers,
            trust_revision_ids: false,
        }
    }

    /// For replaying a redacted recording only (`record::replay`): its placeholder bodies
    /// do not hash to their revisions' IDs, which the recorded machine checked.
    pub(crate) fn trust_revision_ids(&mut self) {
        self.trust_revision_ids = true;
    }

    /// Feeds one input. Drain [`PassivePeer::poll_output`] afterwards.
    pub fn handle_input(&mut self, input: Input, now: Instant) -> Result<(), ApiError> {
        match input {
            Input::Frame(bytes) => {
                if self.phase == Phase::Closed {
                    return Ok(());
                }
                self.timers
                    .set(Timer::DeadPeer, now + self.config.idle_timeout);
                match Frame::decode_bytes(&bytes, &self.config.frame_limits) {
                    Ok(frame) => self.handle_frame(frame),
                    Err(FrameError::TooLarge { size, max }) => self.close(
                        CloseCode::MessageTooBig,
                        format!("a message of {size} bytes is over this peer's limit of {max}"),
                    ),
                    Err(e) => self.protocol_error(PeerMisbehaved::UndecodableFrame(e)),
                }
            }
            Input::Storage(id, reply) => {
                let op = self
                    .conn
                    .ops
                    .remove(&id)
                    .ok_or(ApiError::UnknownStorageOp(id))?;
                if self.phase != Phase::Closed {
                    self.handle_storage(op, reply);
                }
            }
            Input::LocalChange(collection, seq) => {
                if let Some(f) = self.feeds.get_mut(&collection)
                    && f.continuous
                    && seq > f.cursor.since()
                {
                    f.cursor.changed(seq);
                    self.pump(&collection);
                }
            }
            Input::Disconnected(d) => {
                if self.phase != Phase::Closed {
                    self.end();
                    let reason = CloseReason::new(CloseCode::GoingAway, d.message);
                    self.conn.event(Event::Closed(reason));
                }
            }
            Input::Connected => {
                return Err(ApiError::Unexpected("a passive peer starts connected"));
            }
        }
        Ok(())
    }

    /// Fires due timers (closing an idle connection). Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.expired(now) {
            if timer == Timer::DeadPeer && self.phase != Phase::Closed {
                let idle = self.config.idle_timeout;
                self.close(
                    CloseCode::PolicyViolation,
                    format!("no message for {idle:?}"),
                );
            }
        }
    }

    /// The next output, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.conn.outputs.pop_front()
    }

    /// When to call [`PassivePeer::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// True while the peer has replication work under way (for "active connections").
    pub fn is_busy(&self) -> bool {
        !self.conn.ops.is_empty()
            || !self.conn.requests.is_empty()
            || self.feeds.values().any(|f| !f.wanted.is_empty())
    }

    /// True once the connection is closed; the peer can be dropped.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Closes the connection from this side (e.g. the listener is stopping).
    pub fn close(&mut self, code: CloseCode, message: impl Into<String>) {
        self.close_for(CloseReason::new(code, message));
    }

    fn close_for(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        self.end();
        self.conn.outputs.push_back(Output::Close(reason.clone()));
        self.conn.event(Event::Closed(reason));
    }

    /// Ends the connection: no more timers, and blobs being received are set aside for
    /// the next connection to resume.
    fn end(&mut self) {
        self.phase = Phase::Closed;
        self.timers.clear();
        for transfer in self.fetches.reset() {
            self.conn.storage(
                StorageOp::SuspendBlob { transfer },
                Op::Blob(BlobOp::Abandon),
            );
        }
    }

    fn protocol_error(&mut self, violation: PeerMisbehaved) {
        self.close_for(CloseReason::violation(violation));
    }

    fn handle_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Request(n, request) => {
                if self.conn.inbound_pending >= self.config.max_pending_requests {
                    let max = self.config.max_pending_requests;
                    return self.protocol_error(PeerMisbehaved::TooManyPendingRequests(max));
                }
                self.conn.inbound_pending += 1;
                self.handle_request(n, request);
            }
            Frame::Response(n, response) => match self.conn.requests.remove(&n) {
                Some(sent) => self.handle_response(sent, response),
                None => self.protocol_error(PeerMisbehaved::ResponseToUnknownRequest(n)),
            },
            Frame::Error(n, error) => match self.conn.requests.remove(&n) {
                Some(Sent::GetBlob(ask)) => {
                    self.fetches.refused(ask.digest, error.to_string());
                    self.drive_fetches();
                }
                Some(_) => self.close(
                    CloseCode::GoingAway,
                    format!("the replicator refused our request: {error}"),
                ),
                None => self.protocol_error(PeerMisbehaved::ErrorForUnknownRequest(n)),
            },
        }
    }

    fn handle_request(&mut self, n: RequestNumber, request: Request) {
        if self.phase == Phase::AwaitingHello {
            return match request {
                Request::Hello(hello) => self.handle_hello(n, hello),
                other => self.protocol_error(PeerMisbehaved::ExpectedHello(other.name())),
            };
        }
        match request {
            Request::Hello(_) => self.protocol_error(PeerMisbehaved::HelloTwice),
            Request::Ping => self.conn.respond(n, Response::Pong),
            Request::GetCheckpoint { id } => {
                if id.is_empty() || id.len() > 200 {
                    return self.conn.respond_error(
                        n,
                        ErrorBody::with_code(Code::BadRequest, "invalid checkpoint ID"),
                    );
                }
                self.conn.storage(
                    StorageOp::GetLocal {
                        id: peer_checkpoint_key(&id),
                    },
                    Op::GetCheckpoint(n),
                );
            }
            Request::SetCheckpoint { id, checkpoint } => {
                if id.is_empty() || id.len() > 200 {
                    return self.conn.respond_error(
                        n,
                        ErrorBody::with_code(Code::BadRequest, "invalid checkpoint ID"),
                    );
                }
                self.conn.storage(
                    StorageOp::PutLocal {
                        id: peer_checkpoint_key(&id),
                        value: checkpoint.to_bytes(),
                    },
                    Op::SetCheckpoint(n),
                );
            }
            Request::SubChanges {
                collection,
                since,
                continuous,
                doc_ids,
            } => {
                if !self.negotiated(&collection) {
                    return self.conn.respond_error(n, not_served(&collection));
                }
                if self.hello.as_ref().is_some_and(|h| !h.pull) {
                    return self.conn.respond_error(
                        n,
                        ErrorBody::with_code(Code::BadRequest, "SubChanges without pull in Hello"),
                    );
                }
                if self.feeds.contains_key(&collection) {
                    return self.conn.respond_error(
                        n,
                        ErrorBody::with_code(
                            Code::Conflict,
                            format!("already subscribed to {collection}"),
                        ),
                    );
                }
                let doc_ids = doc_ids.map(|v| v.into_iter().collect());
                let feed = Feed::new(n, since, continuous, doc_ids);
                self.feeds.insert(collection.clone(), feed);
                self.pump(&collection);
            }
            Request::ProposeChanges {
                collection,
                changes,
            } => {
                if let Some(e) = self.push_refusal(&collection) {
                    return self.conn.respond_error(n, e);
                }
                let (revs, counts) = crate::bundle::diff_query(&changes);
                self.conn.storage(
                    StorageOp::RevsDiff { collection, revs },
                    Op::Propose(n, counts),
                );
            }
            Request::Revs {
                collection,
                docs,
                unavailable,
                oversized,
            } => {
                let leaves_out = !unavailable.is_empty() || !oversized.is_empty();
                self.handle_pushed_revs(n, collection, docs, leaves_out)
            }
            Request::GetBlob {
                digest,
                offset,
                max,
            } => {
                let offered = self.feeds.values().any(|f| f.outbox.offers(&digest));
                let ask = (digest, offset, max);
                let read = Op::Blob(BlobOp::Serve(n));
                crate::sender::serve_blob(&mut self.conn, n, offered, ask, read);
            }
            Request::Changes { .. } => self.protocol_error(PeerMisbehaved::RequestNotAllowed {
                role: "active",
                request: "Changes",
            }),
        }
    }

    fn handle_response(&mut self, sent: Sent, response: Response) {
        match (sent, response) {
            (
                Sent::Changes {
                    collection,
                    changes,
                },
                Response::Wanted(flags),
            ) => {
                if let Err(v) = PeerMisbehaved::check_answer_length(
                    "Wanted",
                    flags.len(),
                    changes.len(),
                    "changes",
                ) {
                    return self.protocol_error(v);
                }
                if let Some(f) = self.feeds.get_mut(&collection) {
                    f.changes_in_flight = f.changes_in_flight.saturating_sub(1);
                    f.wanted.extend(
                        changes
                            .into_iter()
                            .zip(flags)
                            .filter_map(|(c, want)| want.map(|known| (c, known))),
                    );
                }
                self.pump(&collection);
            }
            (
                Sent::Revs {
                    collection,
                    bytes,
                    docs,
                    blobs,
                },
                Response::RevStatuses(statuses),
            ) => {
                if let Err(v) = PeerMisbehaved::check_answer_length(
                    "RevStatuses",
                    statuses.len(),
                    docs.len(),
                    "documents",
                ) {
                    return self.protocol_error(v);
                }
                if let Some(f) = self.feeds.get_mut(&collection) {
                    f.outbox.answered(bytes, &blobs);
                }
                let events: Vec<_> = docs
                    .into_iter()
                    .zip(&statuses)
                    .map(|(doc, status)| {
                        DocumentEvent::from_status(&collection, doc, Direction::Pull, status)
                    })
                    .collect();
                if !events.is_empty() {
                    self.conn.event(Event::Documents(events));
                }
                self.pump(&collection);
            }
            (Sent::GetBlob(ask), Response::BlobChunk(bytes)) => {
                if let Err(v) = self.fetches.arrived(ask, bytes) {
                    return self.protocol_error(v);
                }
                self.drive_fetches();
            }
            (sent, other) => self.protocol_error(PeerMisbehaved::UnexpectedResponse {
                request: sent.name(),
                response: other.name(),
            }),
        }
    }

    fn handle_storage(&mut self, op: Op, reply: StorageReply) {
        if let StorageReply::Failed(failure) = &reply {
            return match op {
                Op::GetCheckpoint(n)
                | Op::SetCheckpoint(n)
                | Op::Propose(n, _)
                | Op::Blob(BlobOp::Serve(n)) => {
                    let code = match failure.transient {
                        true => Code::Unavailable,
                        false => Code::Internal,
                    };
                    self.conn
                        .respond_error(n, ErrorBody::with_code(code, failure.message.clone()))
                }
                Op::Insert { request, .. } => {
                    let code = match failure.transient {
                        true => Code::Unavailable,
                        false => Code::Internal,
                    };
                    self.incoming.remove(&request);
                    self.conn
                        .respond_error(request, ErrorBody::with_code(code, failure.message.clone()))
                }
                Op::FeedRead(_) | Op::ReadRevs { .. } | Op::Blob(_) => {
                    self.close(CloseCode::InternalError, failure.to_string())
                }
            };
        }
        match (op, reply) {
            (Op::GetCheckpoint(n), StorageReply::Local(value)) => {
                let cp = value.and_then(|b| crate::Checkpoint::from_bytes(&b));
                self.conn.respond(n, Response::Checkpoint(cp));
            }
            (Op::SetCheckpoint(n), StorageReply::Done) => self.conn.respond(n, Response::Ok),
            (Op::Propose(n, counts), StorageReply::RevsDiff(diff)) => {
                let wanted = crate::bundle::wanted_from_diff(&counts, diff);
                self.conn.respond(n, Response::Wanted(wanted));
            }
            (Op::Insert { request, indices }, StorageReply::Inserted(outcomes)) => {
                self.inserted(request, &indices, outcomes);
            }
            (Op::Blob(op), reply) => {
                match crate::receiver::blob_reply(&mut self.fetches, &mut self.conn, op, reply) {
                    Ok(()) => self.drive_fetches(),
                    Err(BlobReplyError::Violation(v)) => self.protocol_error(v),
                    Err(BlobReplyError::Wrong(reply)) => self.close(
                        CloseCode::InternalError,
                        format!("the store answered with the wrong reply: {reply:?}"),
                    ),
                }
            }
            (Op::FeedRead(collection), StorageReply::Changes(changes)) => {
                self.feed_read(collection, changes);
            }
            (Op::FeedRead(collection), StorageReply::DeletionsForgotten { through }) => {
                self.feed_forgotten(collection, through);
            }
            (
                Op::ReadRevs {
                    collection,
                    changes,
                },
                StorageReply::Leaves(leaves),
            ) => {
                self.send_revs(collection, changes, leaves);
            }
            (_, reply) => self.close(
                CloseCode::InternalError,
                format!("the store answered with the wrong reply: {reply:?}"),
            ),
        }
    }
}

fn not_served(c: &CollectionName) -> ErrorBody {
    ErrorBody::with_code(
        Code::NotFound,
        format!("collection {c} is not served to you by this listener"),
    )
}
