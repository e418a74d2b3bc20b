//! The sync doctor's reading of a replay: a timeline a person can follow, the stalls,
//! and what the machine was waiting for when the recording stopped.
//!
//! [`Diagnosis`] is an [`Observer`]: it decodes every frame the replayed machine
//! received or sent, follows each request to its answer, each storage operation to its
//! reply and each wanted document to its revisions, and turns that into a [`Report`].
//!
//! ```
//! use peerlite_proto::record::{self, Diagnosis, DiagnosisOptions, RecordingHeader, Role};
//!
//! let file = record::encode_header(&RecordingHeader::new(Role::Active, 0));
//! let mut doctor = Diagnosis::new(DiagnosisOptions::default());
//! // This recording has no configuration: it is read but cannot be replayed.
//! let outcome = record::replay_observed(&file, std::time::Instant::now(), &mut doctor)?;
//! assert!(matches!(outcome, record::ReplayOutcome::NotReplayable(_)));
//! let report = doctor.finish();
//! assert!(report.waiting.is_empty());
//! # Ok::<(), record::RecordingError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{Observer, RecordingHeader, Role, StepKind};
use crate::{
    Activity, CollectionName, DocId, Event, Frame, FrameLimits, Input, InsertOutcome, Output,
    Request, Response, RevStatus, StorageOp, StorageReply,
};

/// What a [`Diagnosis`] looks for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DiagnosisOptions {
    /// A wait longer than this with something outstanding is a stall, and a quiet time
    /// longer than this with nothing outstanding is idle (default 1 s).
    pub stall_threshold: Duration,
    /// A document to follow through the session.
    pub doc: Option<String>,
}

impl Default for DiagnosisOptions {
    fn default() -> Self {
        DiagnosisOptions {
            stall_threshold: Duration::from_secs(1),
            doc: None,
        }
    }
}

/// Which side of the connection did something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The recorded machine.
    This,
    /// The other end of the connection.
    Peer,
}

/// One request and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Exchange {
    /// Who asked.
    pub by: Side,
    /// The asker's request number.
    pub number: u64,
    /// The request's name (`Changes`, `Revs`, …).
    pub request: String,
    /// Changes or documents it carried.
    pub items: usize,
    /// Its size on the wire.
    pub bytes: usize,
    /// When it was sent or received.
    pub at_nanos: u64,
    /// When it was answered, if it was.
    pub answered_nanos: Option<u64>,
    /// The answer, summed up (`wanted 480 of 500`, `error 409: …`).
    pub answer: Option<String>,
}

/// A stretch of the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Phase {
    /// `connect`, `handshake`, `checkpoint`, `transfer`, `idle`, `offline`.
    pub name: String,
    /// When it started.
    pub start_nanos: u64,
    /// When it ended (the end of the recording if it had not).
    pub end_nanos: u64,
    /// What happened in it.
    pub detail: String,
}

/// Something the machine was waiting for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Waiting {
    /// The connection it asked for.
    Connection {
        /// Since when.
        since_nanos: u64,
    },
    /// The peer's answer to one of its requests.
    Answer {
        /// The request's name.
        request: String,
        /// Its number.
        number: u64,
        /// When it was sent.
        since_nanos: u64,
    },
    /// Its own answer to one of the peer's requests (the peer waits for it).
    OwnAnswer {
        /// The request's name.
        request: String,
        /// The peer's number for it.
        number: u64,
        /// When it arrived.
        since_nanos: u64,
    },
    /// The reply to a storage operation.
    Storage {
        /// The operation's name (`InsertRevisions`, …).
        operation: String,
        /// Its ID.
        id: u64,
        /// When it was handed over.
        since_nanos: u64,
    },
    /// The revisions of documents it told the peer it wanted.
    Revisions {
        /// How many documents.
        documents: usize,
        /// When the oldest of them was asked for.
        since_nanos: u64,
        /// The peer's request whose answer asked for the oldest (`Changes`,
        /// `ProposeChanges`).
        request: String,
        /// Its number.
        number: u64,
    },
    /// A timer.
    Timer {
        /// When it is due.
        at_nanos: u64,
        /// What it is for, as far as the recording tells.
        what: String,
    },
}

/// A wait longer than the threshold with something outstanding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stall {
    /// When the last progress before it happened.
    pub from_nanos: u64,
    /// When progress came again (or the recording ended).
    pub to_nanos: u64,
    /// What was outstanding all that time.
    pub waiting_for: Vec<Waiting>,
    /// What ended it.
    pub ended_by: String,
}

/// One thing that happened to the followed document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DocStep {
    /// When.
    pub at_nanos: u64,
    /// What.
    pub what: String,
}

/// What a [`Diagnosis`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The time of the last step.
    pub duration_nanos: u64,
    /// Steps seen.
    pub steps: u64,
    /// Frames received and their bytes.
    pub frames_in: (u64, u64),
    /// Frames sent and their bytes.
    pub frames_out: (u64, u64),
    /// Documents received and sent in `Revs` requests.
    pub documents_in: u64,
    /// Documents sent.
    pub documents_out: u64,
    /// The threshold stalls and idle times were measured against.
    pub stall_threshold_nanos: u64,
    /// The stretches of the session, in order.
    pub phases: Vec<Phase>,
    /// Every request and its answer, in the order they were made.
    pub exchanges: Vec<Exchange>,
    /// The stalls.
    pub stalls: Vec<Stall>,
    /// What the machine was waiting for at the end (empty: nothing, it was idle or done).
    pub waiting: Vec<Waiting>,
    /// How the session ended, if it did (`closed (1000): …`, `disconnected: …`).
    pub ended: Option<String>,
    /// The followed document's story, if one was asked for.
    pub doc: Option<Vec<DocStep>>,
}

/// Where a followed document sits in a request, a storage operation or an answer.
type Slot = usize;

/// Watches a replay and builds a [`Report`]; see the module's documentation.
#[derive(Debug)]
pub struct Diagnosis {
    options: DiagnosisOptions,
    threshold: u64,
    report: Report,
    /// Requests not answered yet: this side's and the peer's, by number, to the index of
    /// their exchange.
    open: HashMap<(Side, u64), usize>,
    /// Storage operations not answered yet.
    storage: BTreeMap<u64, (&'static str, u64)>,
    /// `Changes` and `ProposeChanges` not answered yet: their kind and documents, to
    /// know which the `Wanted` answer asks for.
    announced: HashMap<(Side, u64), (&'static str, CollectionName, Vec<DocId>)>,
    /// Documents this side asked for, not received yet: when, and in answer to which
    /// of the peer's requests.
    wanted: HashMap<(CollectionName, DocId), (u64, &'static str, u64)>,
    /// Where the followed document is in open requests and operations.
    traced_requests: HashMap<(Side, u64), Slot>,
    traced_ops: HashMap<u64, Slot>,
    /// The open phases and the running transfer's figures.
    connect_since: Option<u64>,
    offline_since: Option<(u64, String)>,
    transfer: Option<Transfer>,
    empty_since: Option<u64>,
    connected: bool,
    last_progress: u64,
    now: u64,
    /// When the machine wanted to be woken after the last step.
    next_timer: Option<u64>,
    role: Option<Role>,
}

#[derive(Debug, Default)]
struct Transfer {
    start: u64,
    docs_in: u64,
    docs_out: u64,
    bytes: u64,
    caught_up: Option<u64>,
}

impl Diagnosis {
    /// A diagnosis that has seen nothing yet.
    pub fn new(options: DiagnosisOptions) -> Diagnosis {
        let threshold = u64::try_from(options.stall_threshold.as_nanos()).unwrap_or(u64::MAX);
        Diagnosis {
            report: Report {
                duration_nanos: 0,
                steps: 0,
                frames_in: (0, 0),
                frames_out: (0, 0),
                documents_in: 0,
                documents_out: 0,
                stall_threshold_nanos: threshold,
                phases: Vec::new(),
                exchanges: Vec::new(),
                stalls: Vec::new(),
                waiting: Vec::new(),
                ended: None,
                doc: options.doc.as_ref().map(|_| Vec::new()),
            },
            options,
            threshold,
            open: HashMap::new(),
            storage: BTreeMap::new(),
            announced: HashMap::new(),
            wanted: HashMap::new(),
            traced_requests: HashMap::new(),
            traced_ops: HashMap::new(),
            connect_since: None,
            offline_since: None,
            transfer: None,
            empty_since: Some(0),
            connected: false,
            last_progress: 0,
            now: 0,
            next_timer: None,
            role: None,
        }
    }

    /// The report (call after the replay).
    pub fn finish(mut self) -> Report {
        let end = self.now;
        if let Some(at) = self.connect_since.take() {
            self.phase("connect", at, end, "no connection yet".into());
        }
        let offline = self.offline_since.take();
        if let Some((at, why)) = &offline {
            self.phase("offline", *at, end, why.clone());
        }
        self.close_transfer(self.empty_since.unwrap_or(end));
        if let Some(since) = self.empty_since
            && self.connected
            && end.saturating_sub(since) > self.threshold
        {
            self.phase("idle", since, end, "nothing outstanding".into());
        }
        if let Some(stall) = self.stall("the end of the recording") {
            self.report.stalls.push(stall);
        }
        self.report.waiting = self.outstanding();
        if let Some(at) = self.next_timer
            && (offline.is_some() || !self.report.waiting.is_empty())
        {
            let what = if offline.is_some() {
                "the next connection attempt"
            } else {
                "a heartbeat, a retry or a checkpoint save"
            };
            self.report.waiting.push(Waiting::Timer {
                at_nanos: at,
                what: what.into(),
            });
        }
        self.report.phases.sort_by_key(|p| p.start_nanos);
        self.report
    }

    fn is_traced(&self, doc: &DocId) -> bool {
        self.options.doc.as_deref() == Some(doc.as_str())
    }

    fn trace(&mut self, what: String) {
        let at = self.now;
        if let Some(steps) = &mut self.report.doc {
            steps.push(DocStep { at_nanos: at, what });
        }
    }

    fn phase(&mut self, name: &str, start: u64, end: u64, detail: String) {
        self.report.phases.push(Phase {
            name: name.into(),
            start_nanos: start,
            end_nanos: end,
            detail,
        });
    }

    /// What is outstanding now, oldest first.
    fn outstanding(&self) -> Vec<Waiting> {
        let mut waiting = Vec::new();
        if let Some(since) = self.connect_since {
            waiting.push(Waiting::Connection { since_nanos: since });
        }
        let mut open: Vec<_> = self.open.iter().collect();
        open.sort_by_key(|(_, i)| **i);
        for ((side, number), i) in open {
            let e = &self.report.exchanges[*i];
            let (request, number, since_nanos) = (e.request.clone(), *number, e.at_nanos);
            waiting.push(match side {
                Side::This => Waiting::Answer {
                    request,
                    number,
                    since_nanos,
                },
                Side::Peer => Waiting::OwnAnswer {
                    request,
                    number,
                    since_nanos,
                },
            });
        }
        for (id, (operation, since)) in &self.storage {
            waiting.push(Waiting::Storage {
                operation: (*operation).into(),
                id: *id,
                since_nanos: *since,
            });
        }
        if let Some((since, request, number)) = self.wanted.values().min() {
            waiting.push(Waiting::Revisions {
                documents: self.wanted.len(),
                since_nanos: *since,
                request: (*request).into(),
                number: *number,
            });
        }
        waiting.sort_by_key(Waiting::since);
        waiting
    }

    fn nothing_outstanding(&self) -> bool {
        self.connect_since.is_none()
            && self.open.is_empty()
            && self.storage.is_empty()
            && self.wanted.is_empty()
    }

    /// Ends the running transfer at `end`.
    fn close_transfer(&mut self, end: u64) {
        if let Some(t) = self.transfer.take() {
            let end = end.max(t.start);
            let mut detail = format!(
                "{} received, {} sent, {} in frames",
                plural(t.docs_in, "document"),
                t.docs_out,
                bytes(t.bytes)
            );
            if let Some(c) = t.caught_up {
                detail.push_str(&format!("; the pull caught up at {}", secs(c)));
            }
            self.phase("transfer", t.start, end, detail);
        }
    }

    /// After each step: opens and closes transfers and idle times.
    fn settle(&mut self) {
        let now = self.now;
        if self.nothing_outstanding() {
            self.empty_since.get_or_insert(now);
            return;
        }
        if !self.connected {
            return;
        }
        // Something is outstanding again: a quiet time longer than the threshold was
        // idle and ended the transfer before it; a shorter one is part of it.
        if let Some(since) = self.empty_since.take()
            && now.saturating_sub(since) > self.threshold
        {
            self.close_transfer(since);
            if self.report.exchanges.len() > 1 {
                self.phase("idle", since, now, "nothing outstanding".into());
            }
        }
    }

    fn transfer(&mut self) -> &mut Transfer {
        let now = self.now;
        self.transfer.get_or_insert_with(|| Transfer {
            start: now,
            ..Transfer::default()
        })
    }

    /// Something arrived (a frame, a storage reply, a connection or its end): what had
    /// waited longer than the threshold without any was a stall.
    fn progress(&mut self, what: &str) {
        if let Some(stall) = self.stall(what) {
            self.report.stalls.push(stall);
        }
        self.last_progress = self.now;
    }

    /// The outstanding things that have waited longer than the threshold with nothing
    /// arriving, if any.
    fn stall(&self, ended_by: &str) -> Option<Stall> {
        let now = self.now;
        if now.saturating_sub(self.last_progress) <= self.threshold {
            return None;
        }
        let waited_from = |w: &Waiting| w.since().max(self.last_progress);
        let stalled: Vec<Waiting> = self
            .outstanding()
            .into_iter()
            .filter(|w| now.saturating_sub(waited_from(w)) > self.threshold)
            .collect();
        Some(Stall {
            from_nanos: stalled.iter().map(waited_from).min()?,
            to_nanos: now,
            waiting_for: stalled,
            ended_by: ended_by.into(),
        })
    }

    fn input(&mut self, input: &Input) {
        match input {
            Input::Connected => {
                self.progress("the connection opened");
                if let Some(at) = self.connect_since.take() {
                    self.phase("connect", at, self.now, "connected".into());
                }
                self.connected = true;
                self.empty_since = Some(self.now);
            }
            Input::Disconnected(d) => {
                self.progress("the connection ended");
                if let Some(at) = self.connect_since.take() {
                    self.phase("connect", at, self.now, format!("failed: {}", d.message));
                }
                self.disconnected(format!("disconnected: {}", d.message));
            }
            Input::Frame(bytes) => {
                self.connected = true;
                self.report.frames_in.0 += 1;
                self.report.frames_in.1 += bytes.len() as u64;
                match decode(bytes) {
                    Some(frame) => {
                        self.progress(&format!("{} from the peer", frame_name(&frame)));
                        self.frame(Side::Peer, frame, bytes.len());
                    }
                    None => self.progress("an undecodable frame from the peer"),
                }
            }
            Input::Storage(id, reply) => {
                let name = self.storage.remove(&id.0).map_or("storage", |(n, _)| n);
                self.progress(&format!("the reply to {name} #{}", id.0));
                if let Some(slot) = self.traced_ops.remove(&id.0) {
                    self.traced_reply(name, slot, reply);
                }
            }
            Input::LocalChange(..) => {}
        }
    }

    fn disconnected(&mut self, why: String) {
        // A listener's connection ends once; a replicator retries, and says when it
        // stops.
        if self.role == Some(Role::Passive) {
            self.report.ended = Some(why);
        }
        self.connected = false;
        self.close_transfer(self.empty_since.unwrap_or(self.now));
        for (_, i) in self.open.drain() {
            let e = &mut self.report.exchanges[i];
            e.answer = Some("cut off: the connection ended".into());
        }
        self.announced.clear();
        self.wanted.clear();
        self.traced_requests.clear();
        self.empty_since = Some(self.now);
    }

    fn traced_reply(&mut self, op: &str, slot: Slot, reply: &StorageReply) {
        let what = match reply {
            StorageReply::Inserted(outcomes) => match outcomes.get(slot) {
                Some(InsertOutcome::Inserted { rev, seq, .. }) => {
                    format!("stored (current {rev}, seq {seq})")
                }
                Some(InsertOutcome::AlreadyHad { .. }) => "already stored".into(),
                Some(InsertOutcome::Conflict { current }) => format!(
                    "not stored: conflicts with the current revision {}",
                    current.map_or_else(|| "(none)".into(), |r| r.to_string())
                ),
                Some(InsertOutcome::Invalid(e)) => format!("not stored: invalid ({e})"),
                Some(InsertOutcome::MissingBlobs(b)) => {
                    format!("not stored yet: {} blob(s) to fetch first", b.len())
                }
                None => "no outcome".into(),
            },
            StorageReply::Failed(f) => format!("{op} failed: {}", f.message),
            StorageReply::Revisions(revs) => match revs.get(slot) {
                Some(Some(r)) => format!("read {} from storage", r.rev),
                _ => "not found in storage (superseded or purged)".into(),
            },
            StorageReply::Leaves(leaves) => match leaves.get(slot) {
                Some(l) if !l.is_empty() => format!("read {} leaves from storage", l.len()),
                _ => "no leaves in storage".into(),
            },
            StorageReply::RevsDiff(d) => match d.get(slot) {
                Some(crate::RevsDiff::Present) => "storage has it already".into(),
                Some(crate::RevsDiff::Missing { .. }) => "storage lacks it".into(),
                None => "no answer".into(),
            },
            _ => return,
        };
        self.trace(what);
    }

    fn storage_op(&mut self, id: u64, op: &StorageOp) {
        let (name, docs): (&'static str, Vec<&DocId>) = match op {
            StorageOp::GetLocal { .. } => ("GetLocal", vec![]),
            StorageOp::PutLocal { .. } => ("PutLocal", vec![]),
            StorageOp::Changes { .. } => ("Changes", vec![]),
            StorageOp::RevsDiff { revs, .. } => ("RevsDiff", revs.iter().map(|r| &r.0).collect()),
            StorageOp::GetRevisions { revs, .. } => {
                ("GetRevisions", revs.iter().map(|r| &r.0).collect())
            }
            StorageOp::GetLeaves { ids, .. } => ("GetLeaves", ids.iter().collect()),
            StorageOp::InsertRevisions { inserts, .. } => (
                "InsertRevisions",
                inserts.iter().map(|i| &i.doc_id).collect(),
            ),
            StorageOp::BeginBlob { .. } => ("BeginBlob", vec![]),
            StorageOp::WriteBlob { .. } => ("WriteBlob", vec![]),
            StorageOp::AbandonBlob { .. } => ("AbandonBlob", vec![]),
            StorageOp::SuspendBlob { .. } => ("SuspendBlob", vec![]),
            StorageOp::ReadBlob { .. } => ("ReadBlob", vec![]),
        };
        if let Some(slot) = docs.iter().position(|d| self.is_traced(d)) {
            self.traced_ops.insert(id, slot);
            self.trace(format!("{name} #{id} handed to storage"));
        }
        self.storage.insert(id, (name, self.now));
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Status(status) => match status.activity {
                Activity::Offline => {
                    let why = status
                        .error
                        .as_ref()
                        .map_or_else(|| "waiting to retry".to_owned(), |e| format!("after: {e}"));
                    let detail = match &status.retry {
                        Some(r) => format!(
                            "retry {} of {} in {:.1} s, {why}",
                            r.failed_attempts,
                            r.max_attempts,
                            r.wait.as_secs_f64()
                        ),
                        None => why,
                    };
                    self.offline_since = Some((self.now, detail));
                }
                Activity::Idle => {
                    if let Some(t) = &mut self.transfer {
                        t.caught_up.get_or_insert(self.now);
                    }
                }
                Activity::Stopped => {
                    if let Some(e) = &status.error {
                        self.report.ended = Some(format!("stopped: {e}"));
                    } else if self.report.ended.is_none() {
                        self.report.ended = Some("stopped".into());
                    }
                }
                Activity::Connecting | Activity::Busy => {}
            },
            Event::Documents(docs) => {
                for d in docs {
                    if self.is_traced(&d.doc_id) {
                        let dir = match d.direction {
                            crate::Direction::Push => "push",
                            crate::Direction::Pull => "pull",
                        };
                        let what = match &d.error {
                            Some(e) => format!("{dir} of {} failed: {e}", d.rev),
                            None if d.conflict_resolved => {
                                format!("{dir} of {}: a conflict, resolved", d.rev)
                            }
                            None => format!("{dir} of {} done", d.rev),
                        };
                        self.trace(what);
                    }
                }
            }
            Event::Closed(reason) => {
                self.report.ended = Some(format!(
                    "closed ({}): {}",
                    reason.code.as_u16(),
                    reason.message
                ));
            }
        }
    }

    /// A frame, received from (`by` = peer) or sent by (`by` = this) the machine.
    fn frame(&mut self, from: Side, frame: Frame, len: usize) {
        let other = match from {
            Side::This => Side::Peer,
            Side::Peer => Side::This,
        };
        match frame {
            Frame::Request(number, request) => {
                let items = self.request(from, number, &request);
                let index = self.report.exchanges.len();
                self.report.exchanges.push(Exchange {
                    by: from,
                    number,
                    request: request.name().into(),
                    items,
                    bytes: len,
                    at_nanos: self.now,
                    answered_nanos: None,
                    answer: None,
                });
                self.open.insert((from, number), index);
                if matches!(
                    request,
                    Request::Changes { .. }
                        | Request::ProposeChanges { .. }
                        | Request::Revs { .. }
                        | Request::SubChanges { .. }
                ) {
                    self.transfer().bytes += len as u64;
                }
            }
            Frame::Response(number, response) => {
                let summary = self.response(other, number, &response);
                self.answered(other, number, summary);
            }
            Frame::Error(number, body) => {
                self.announced.remove(&(other, number));
                if self.traced_requests.remove(&(other, number)).is_some() {
                    self.trace(format!("its request #{number} failed: {}", body.message));
                }
                self.answered(
                    other,
                    number,
                    format!("error {}: {}", body.code, body.message),
                );
            }
        }
    }

    fn answered(&mut self, by: Side, number: u64, answer: String) {
        if let Some(i) = self.open.remove(&(by, number)) {
            let e = &mut self.report.exchanges[i];
            e.answered_nanos = Some(self.now);
            e.answer = Some(answer);
        }
    }

    /// Takes note of a request; returns how many items it carries.
    fn request(&mut self, from: Side, number: u64, request: &Request) -> usize {
        let who = match from {
            Side::This => "this side",
            Side::Peer => "the peer",
        };
        match request {
            Request::Changes {
                collection,
                changes,
            }
            | Request::ProposeChanges {
                collection,
                changes,
            } => {
                if changes.is_empty()
                    && matches!(request, Request::Changes { .. })
                    && let Some(t) = &mut self.transfer
                {
                    t.caught_up.get_or_insert(self.now);
                }
                if let Some(slot) = changes.iter().position(|c| self.is_traced(&c.doc_id)) {
                    let c = &changes[slot];
                    self.traced_requests.insert((from, number), slot);
                    self.trace(format!(
                        "{who} announced {} (seq {}{}) in {} #{number}",
                        c.rev,
                        c.seq,
                        if c.deleted { ", deleted" } else { "" },
                        request.name()
                    ));
                }
                let ids = changes.iter().map(|c| c.doc_id.clone()).collect();
                self.announced
                    .insert((from, number), (request.name(), collection.clone(), ids));
                changes.len()
            }
            Request::Revs {
                collection,
                docs,
                unavailable,
                oversized,
            } => {
                let t = self.transfer();
                match from {
                    Side::This => t.docs_out += docs.len() as u64,
                    Side::Peer => t.docs_in += docs.len() as u64,
                }
                match from {
                    Side::This => self.report.documents_out += docs.len() as u64,
                    Side::Peer => {
                        self.report.documents_in += docs.len() as u64;
                        let ids = docs
                            .iter()
                            .map(|d| &d.doc_id)
                            .chain(unavailable)
                            .chain(oversized.iter().map(|o| &o.doc_id));
                        for id in ids {
                            self.wanted.remove(&(collection.clone(), id.clone()));
                        }
                    }
                }
                if let Some(slot) = docs.iter().position(|d| self.is_traced(&d.doc_id)) {
                    let revs: Vec<String> = docs[slot]
                        .revisions
                        .iter()
                        .map(|r| r.rev.to_string())
                        .collect();
                    self.traced_requests.insert((from, number), slot);
                    self.trace(format!(
                        "{who} sent {} in Revs #{number} ({} bytes in all)",
                        revs.join(", "),
                        docs[slot]
                            .revisions
                            .iter()
                            .map(|r| r.body.len())
                            .sum::<usize>()
                    ));
                }
                if unavailable.iter().any(|d| self.is_traced(d)) {
                    self.trace(format!(
                        "{who} could not send it in Revs #{number}: superseded, a newer revision follows"
                    ));
                }
                if let Some(o) = oversized.iter().find(|o| self.is_traced(&o.doc_id)) {
                    self.trace(format!(
                        "{who} could not send it in Revs #{number}: too large ({} bytes)",
                        o.bytes
                    ));
                }
                docs.len()
            }
            _ => 0,
        }
    }

    /// Takes note of an answer to `asker`'s request; returns its summary.
    fn response(&mut self, asker: Side, number: u64, response: &Response) -> String {
        let traced = self.traced_requests.remove(&(asker, number));
        match response {
            Response::Wanted(entries) => {
                let wanted = entries.iter().filter(|e| e.is_some()).count();
                if let Some((kind, collection, ids)) = self.announced.remove(&(asker, number)) {
                    // Documents this side asks the peer for.
                    if asker == Side::Peer {
                        let now = self.now;
                        for (id, entry) in ids.into_iter().zip(entries) {
                            if entry.is_some() {
                                self.wanted
                                    .entry((collection.clone(), id))
                                    .or_insert((now, kind, number));
                            }
                        }
                    }
                }
                if let Some(slot) = traced {
                    let who = match asker {
                        Side::This => "the peer",
                        Side::Peer => "this side",
                    };
                    let what = match entries.get(slot) {
                        Some(Some(_)) => format!("{who} wants it"),
                        Some(None) => format!("{who} does not want it (it has it)"),
                        None => format!("{who} did not answer for it"),
                    };
                    self.trace(what);
                }
                format!("wanted {wanted} of {}", entries.len())
            }
            Response::RevStatuses(statuses) => {
                if let Some(slot) = traced {
                    let what = match statuses.get(slot) {
                        Some(RevStatus::Ok) => "acknowledged: stored".to_owned(),
                        Some(RevStatus::AlreadyHad) => "acknowledged: already had it".into(),
                        Some(RevStatus::Conflict { current }) => format!(
                            "refused: conflicts with {}",
                            current.map_or_else(|| "(none)".into(), |r| r.to_string())
                        ),
                        Some(RevStatus::Rejected { code, reason }) => {
                            format!("rejected ({code}): {reason}")
                        }
                        None => "no status".into(),
                    };
                    self.trace(what);
                }
                let mut counts = [0usize; 4];
                for s in statuses {
                    counts[match s {
                        RevStatus::Ok => 0,
                        RevStatus::AlreadyHad => 1,
                        RevStatus::Conflict { .. } => 2,
                        RevStatus::Rejected { .. } => 3,
                    }] += 1;
                }
                let mut parts = vec![format!("{} stored", counts[0])];
                for (n, what) in counts[1..]
                    .iter()
                    .zip(["already had", "conflicts", "rejected"])
                {
                    if *n > 0 {
                        parts.push(format!("{n} {what}"));
                    }
                }
                parts.join(", ")
            }
            Response::Checkpoint(Some(_)) => "a checkpoint".into(),
            Response::Checkpoint(None) => "no checkpoint".into(),
            Response::Hello { version, .. } => format!("protocol {version}"),
            Response::BlobChunk(b) => bytes(b.len() as u64),
            other => other.name().into(),
        }
    }
}

impl Waiting {
    fn since(&self) -> u64 {
        match self {
            Waiting::Connection { since_nanos }
            | Waiting::Answer { since_nanos, .. }
            | Waiting::OwnAnswer { since_nanos, .. }
            | Waiting::Storage { since_nanos, .. }
            | Waiting::Revisions { since_nanos, .. } => *since_nanos,
            Waiting::Timer { at_nanos, .. } => *at_nanos,
        }
    }
}

impl Observer for Diagnosis {
    fn header(&mut self, header: &RecordingHeader) {
        self.role = Some(header.role);
    }

    fn step(&mut self, at_nanos: u64, kind: &StepKind) {
        self.now = at_nanos;
        self.report.duration_nanos = at_nanos;
        self.report.steps += 1;
        match kind {
            StepKind::Input(input) => self.input(input),
            StepKind::Start { reset } => {
                self.report.ended = None;
                if *reset {
                    self.trace("the replicator started over (checkpoints reset)".into());
                }
            }
            StepKind::Stop => {
                self.report.ended = Some("stopped by the application".into());
            }
            StepKind::Close { code, message } => {
                self.report.ended = Some(format!(
                    "closed by the listener ({}): {message}",
                    code.as_u16()
                ));
            }
            StepKind::Timeout | StepKind::Outputs { .. } => {}
        }
        self.settle();
    }

    fn output(&mut self, at_nanos: u64, output: &Output) {
        self.now = at_nanos;
        match output {
            Output::Connect => {
                if let Some((at, why)) = self.offline_since.take() {
                    self.phase("offline", at, at_nanos, why);
                }
                self.connect_since = Some(at_nanos);
            }
            Output::Send(bytes) => {
                self.connected = true;
                self.report.frames_out.0 += 1;
                self.report.frames_out.1 += bytes.len() as u64;
                if let Some(frame) = decode(bytes) {
                    self.frame(Side::This, frame, bytes.len());
                }
            }
            Output::Storage(id, op) => self.storage_op(id.0, op),
            Output::Event(event) => self.event(event),
            Output::Close(reason) => {
                let why = format!("closed ({}): {}", reason.code.as_u16(), reason.message);
                self.progress(&format!(
                    "this side closing the connection: {}",
                    reason.message
                ));
                self.disconnected(why);
            }
        }
        self.settle();
    }

    fn end(&mut self, at_nanos: u64, next_timer_nanos: Option<u64>) {
        self.now = at_nanos.max(self.now);
        // The handshake and checkpoint phases come from their exchanges.
        let spans: Vec<(String, u64, u64, String)> = self
            .report
            .exchanges
            .iter()
            .filter_map(|e| {
                let name = match e.request.as_str() {
                    "Hello" => "handshake",
                    "GetCheckpoint" => "checkpoint",
                    _ => return None,
                };
                Some((
                    name.to_owned(),
                    e.at_nanos,
                    e.answered_nanos.unwrap_or(at_nanos),
                    e.answer.clone().unwrap_or_else(|| "not answered".into()),
                ))
            })
            .collect();
        for (name, start, end, detail) in spans {
            self.phase(&name, start, end, detail);
        }
        self.next_timer = next_timer_nanos;
    }
}

/// Limits for decoding frames a machine already handled (their limits were checked
/// then): generous rather than unbounded, as they are multiplied inside.
pub(super) fn generous_limits() -> FrameLimits {
    FrameLimits {
        max_frame_bytes: super::MAX_RECORD_BYTES,
        max_items: u32::MAX as usize,
        max_batch: 1 << 24,
        max_collections: 1 << 16,
    }
}

/// Decodes a frame the machine already handled.
fn decode(bytes: &bytes::Bytes) -> Option<Frame> {
    Frame::decode_bytes(bytes, &generous_limits()).ok()
}

fn frame_name(frame: &Frame) -> String {
    match frame {
        Frame::Request(n, r) => format!("{} #{n}", r.name()),
        Frame::Response(n, r) => format!("the answer to #{n} ({})", r.name()),
        Frame::Error(n, _) => format!("an error for #{n}"),
    }
}

/// Nanoseconds as seconds with milliseconds: `12.345 s`.
fn secs(nanos: u64) -> String {
    format!("{:.3} s", nanos as f64 / 1e9)
}

/// A duration in the unit that reads best: `850 µs`, `12 ms`, `3.4 s`.
fn span(nanos: u64) -> String {
    match nanos {
        n if n < 1_000_000 => format!("{} µs", n / 1_000),
        n if n < 10_000_000_000 => format!("{:.0} ms", n as f64 / 1e6),
        n => format!("{:.1} s", n as f64 / 1e9),
    }
}

/// `1 document`, `2 documents`.
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 10_000 => format!("{n} B"),
        n if n < 10_000_000 => format!("{:.0} KB", n as f64 / 1e3),
        n => format!("{:.1} MB", n as f64 / 1e6),
    }
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Connection { since_nanos } => {
                write!(f, "the connection it asked for at {}", secs(*since_nanos))
            }
            Waiting::Answer {
                request,
                number,
                since_nanos,
            } => write!(
                f,
                "the peer's answer to {request} #{number}, sent at {}",
                secs(*since_nanos)
            ),
            Waiting::OwnAnswer {
                request,
                number,
                since_nanos,
            } => write!(
                f,
                "its own answer to the peer's {request} #{number}, received at {}",
                secs(*since_nanos)
            ),
            Waiting::Storage {
                operation,
                id,
                since_nanos,
            } => write!(
                f,
                "storage: {operation} #{id}, handed over at {}",
                secs(*since_nanos)
            ),
            Waiting::Revisions {
                documents,
                since_nanos,
                request,
                number,
            } => write!(
                f,
                "the revisions of {} it wanted, the oldest asked for in its answer to the peer's {request} #{number} at {}",
                plural(*documents as u64, "document"),
                secs(*since_nanos)
            ),
            Waiting::Timer { at_nanos, what } => {
                write!(f, "a timer due at {}: {what}", secs(*at_nanos))
            }
        }
    }
}

/// Exchanges shown in full before the text folds them (`{:#}` shows every one).
const SHOWN_EXCHANGES: usize = 30;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.duration_nanos;
        writeln!(
            f,
            "{} over {}: {} in ({}), {} out ({}); {} received, {} sent",
            plural(self.steps, "step"),
            secs(end),
            plural(self.frames_in.0, "frame"),
            bytes(self.frames_in.1),
            self.frames_out.0,
            bytes(self.frames_out.1),
            plural(self.documents_in, "document"),
            self.documents_out
        )?;
        // The first stall, which the later ones often follow from.
        if let Some(first) = self.stalls.first() {
            write!(
                f,
                "{}; the first: {} from {}",
                plural(self.stalls.len() as u64, "stall"),
                span(first.to_nanos.saturating_sub(first.from_nanos)),
                secs(first.from_nanos)
            )?;
            match first.waiting_for.first() {
                Some(w) => writeln!(f, ", waiting for {w}")?,
                None => writeln!(f)?,
            }
        }
        writeln!(f, "\ntimeline")?;
        for p in &self.phases {
            writeln!(
                f,
                "  {:>10}  {:<10} {:>8}  {}",
                secs(p.start_nanos),
                p.name,
                span(p.end_nanos.saturating_sub(p.start_nanos)),
                p.detail
            )?;
        }
        if let Some(ended) = &self.ended {
            writeln!(f, "  {:>10}  {ended}", secs(end))?;
        }
        let n = self.exchanges.len();
        writeln!(f, "\nexchanges ({n}; who asked, what, items, size, answer)")?;
        let fold = !f.alternate() && n > SHOWN_EXCHANGES;
        for (i, e) in self.exchanges.iter().enumerate() {
            if fold && i == 10 {
                writeln!(f, "  … {} more (--all shows them)", n - SHOWN_EXCHANGES)?;
            }
            if fold && (10..n - (SHOWN_EXCHANGES - 10)).contains(&i) {
                continue;
            }
            let who = match e.by {
                Side::This => "this side",
                Side::Peer => "the peer",
            };
            let answer = match (&e.answer, e.answered_nanos) {
                (Some(a), Some(t)) => format!("{a} in {}", span(t.saturating_sub(e.at_nanos))),
                (Some(a), None) => a.clone(),
                (None, _) => format!(
                    "NOT ANSWERED ({} so far)",
                    span(end.saturating_sub(e.at_nanos))
                ),
            };
            writeln!(
                f,
                "  {:>10}  {:<9} {:>17} {:>5} {:>8}  {answer}",
                secs(e.at_nanos),
                who,
                format!("{} #{}", e.request, e.number),
                e.items,
                bytes(e.bytes as u64),
            )?;
        }
        if self.stalls.is_empty() {
            writeln!(
                f,
                "\nstalls: none longer than {}",
                span(self.stall_threshold_nanos)
            )?;
        } else {
            writeln!(
                f,
                "\nstalls longer than {}",
                span(self.stall_threshold_nanos)
            )?;
            for s in &self.stalls {
                writeln!(
                    f,
                    "  {} → {} ({}), ended by {}; waiting for:",
                    secs(s.from_nanos),
                    secs(s.to_nanos),
                    span(s.to_nanos.saturating_sub(s.from_nanos)),
                    s.ended_by
                )?;
                for w in &s.waiting_for {
                    writeln!(f, "    {w}")?;
                }
            }
        }
        if self.waiting.is_empty() {
            writeln!(
                f,
                "\nwhen the recording stopped ({}): waiting for nothing",
                secs(end)
            )?;
        } else {
            writeln!(
                f,
                "\nwhen the recording stopped ({}), it was waiting for:",
                secs(end)
            )?;
            for w in &self.waiting {
                match w {
                    Waiting::Timer { .. } => writeln!(f, "  {w}")?,
                    _ => writeln!(f, "  {w} ({} before)", span(end.saturating_sub(w.since())))?,
                }
            }
        }
        if let Some(steps) = &self.doc {
            writeln!(f, "\nthe document")?;
            if steps.is_empty() {
                writeln!(f, "  does not appear in this session")?;
            }
            for s in steps {
                writeln!(f, "  {:>10}  {}", secs(s.at_nanos), s.what)?;
            }
        }
        Ok(())
    }
}
