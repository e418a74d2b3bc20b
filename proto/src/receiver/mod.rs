//! Receiving revisions, written once for both sides: a `Revs` message is checked, what
//! it brings is recorded as known to the peer and inserted without creating conflicts,
//! and each outcome becomes the per-document status answered, kept in an [`Incoming`]
//! request until every document is settled. The active side receives what it pulls, the
//! passive side what is pushed to it; each keeps only what differs (the pull filter and
//! conflict resolution; the validator).

mod fetch;

pub(crate) use fetch::{BlobAsk, FetchStep, Fetches};

use std::collections::BTreeMap;

use crate::conn::Conn;
use crate::peer_knows::PeerKnows;
use crate::{
    Blob, BlobDigest, Code, CollectionName, Direction, DocId, DocumentEvent, InsertMode,
    InsertOutcome, PeerMisbehaved, Request, RequestNumber, Response, RevBundle, RevId, RevStatus,
    Revision, RevisionInsert, StorageOp, StorageReply,
};

/// Checks that every bundle carries revisions, and every revision matches its content
/// and history: anything else is a protocol violation, and nothing of the message is
/// stored.
///
/// `trust_ids` skips checking IDs against bodies: only for replaying a redacted
/// recording, whose bodies are placeholders the recorded machine never saw.
pub(crate) fn check_bundles(docs: &[RevBundle], trust_ids: bool) -> Result<(), PeerMisbehaved> {
    for bundle in docs {
        if bundle.revisions.is_empty() {
            return Err(PeerMisbehaved::EmptyBundle(bundle.doc_id.clone()));
        }
        for r in &bundle.revisions {
            if trust_ids {
                r.check_history()
                    .map_err(|error| PeerMisbehaved::InvalidRevision {
                        doc_id: bundle.doc_id.clone(),
                        rev: r.rev,
                        error,
                    })?;
                continue;
            }
            r.validate()
                .map_err(|error| PeerMisbehaved::InvalidRevision {
                    doc_id: bundle.doc_id.clone(),
                    rev: r.rev,
                    error,
                })?;
        }
    }
    Ok(())
}

/// The insert of a received document: it may extend the document's history but never
/// create a conflict (a conflict is the receiver's to resolve or refuse).
pub(crate) fn insert(doc_id: DocId, revisions: Vec<Revision>) -> RevisionInsert {
    RevisionInsert {
        doc_id,
        revisions,
        mode: InsertMode::NoConflicts,
    }
}

/// Records in `knows` the revisions of `inserts`, so they are never offered back to the
/// peer that sent them.
pub(crate) fn record_sent(knows: &mut PeerKnows, inserts: &[RevisionInsert]) {
    for insert in inserts {
        knows.record(
            &insert.doc_id,
            insert.revisions.iter().map(|r| r.rev).collect(),
        );
    }
}

/// The status answered for a stored document (`None` for the store's answer of a
/// missing outcome). A conflict answers `Conflict` here; the active side resolves it
/// instead.
pub(crate) fn status(outcome: Option<InsertOutcome>) -> RevStatus {
    match outcome {
        Some(InsertOutcome::Inserted { .. }) => RevStatus::Ok,
        Some(InsertOutcome::AlreadyHad { .. }) => RevStatus::AlreadyHad,
        Some(InsertOutcome::Conflict { current }) => RevStatus::Conflict { current },
        Some(InsertOutcome::Invalid(e)) => RevStatus::rejected(Code::BadRequest, e.to_string()),
        Some(InsertOutcome::MissingBlobs(blobs)) => {
            let blob = blobs
                .first()
                .map_or(String::new(), |b| format!(" {}", b.digest));
            RevStatus::rejected(
                Code::NotFound,
                format!("refers to blob{blob}, which the receiver could not get"),
            )
        }
        None => RevStatus::rejected(Code::Internal, "the store returned too few results"),
    }
}

/// A received `Revs` request until every document in it is settled: each document's
/// status in the order received, and the events to report. A document never settled
/// (the active side's pull filter left it out) is answered `Ok` and not reported.
pub(crate) struct Incoming {
    collection: CollectionName,
    /// The direction the documents travel, for events.
    direction: Direction,
    docs: Vec<Settling>,
    /// Storage operations (and documents waiting for blobs) still running for it.
    pending: usize,
    /// Inserts of documents whose revisions may refer to blobs, kept to run again once
    /// the blobs are fetched.
    held: BTreeMap<usize, RevisionInsert>,
    /// Documents waiting for blobs, with how many they still wait for.
    awaiting: BTreeMap<usize, usize>,
}

/// One document of an [`Incoming`] request.
struct Settling {
    /// Its ID, received revision and whether that is a tombstone.
    doc: (DocId, RevId, bool),
    status: Option<RevStatus>,
    event: Option<DocumentEvent>,
}

impl Incoming {
    /// A `Revs` request of `bundles` in `collection`, checked by [`check_bundles`].
    pub(crate) fn new(
        collection: CollectionName,
        direction: Direction,
        bundles: &[RevBundle],
    ) -> Incoming {
        let docs = crate::sender::summary(bundles)
            .into_iter()
            .map(|doc| Settling {
                doc,
                status: None,
                event: None,
            })
            .collect();
        Incoming {
            collection,
            direction,
            docs,
            pending: 0,
            held: BTreeMap::new(),
            awaiting: BTreeMap::new(),
        }
    }

    /// Keeps a copy of document `index`'s insert if its revisions may refer to blobs, to
    /// run it again once they are fetched.
    pub(crate) fn hold_if_blobs(&mut self, index: usize, insert: &RevisionInsert) {
        if insert.revisions.iter().any(|r| r.body.may_refer_to_blobs()) {
            self.held.insert(index, insert.clone());
        }
    }

    /// Settles the documents `indices` with the outcomes of their insert, except those
    /// returned for the caller: documents missing blobs, and conflicts when
    /// `caller_resolves` (the active side resolves them). A document the store already
    /// had is reported only when `report_already_had`.
    pub(crate) fn stored(
        &mut self,
        indices: &[usize],
        outcomes: Vec<InsertOutcome>,
        report_already_had: bool,
        caller_resolves: bool,
    ) -> Vec<(usize, InsertOutcome)> {
        let mut outcomes = outcomes.into_iter();
        let mut left = Vec::new();
        for &index in indices {
            match outcomes.next() {
                Some(o @ InsertOutcome::MissingBlobs(_)) => left.push((index, o)),
                Some(o @ InsertOutcome::Conflict { .. }) if caller_resolves => {
                    left.push((index, o))
                }
                outcome => {
                    let status = status(outcome);
                    let report = report_already_had || status != RevStatus::AlreadyHad;
                    self.settle(index, status, report);
                }
            }
        }
        left
    }

    /// Document `index` (of request `request`) waits for `blobs`, which the store lacks:
    /// they are wanted from `fetches`. A document whose insert already ran once after its
    /// blobs came is refused instead: it would never be stored.
    pub(crate) fn await_blobs(
        &mut self,
        request: RequestNumber,
        index: usize,
        blobs: Vec<Blob>,
        fetches: &mut Fetches,
    ) {
        if !self.held.contains_key(&index) || blobs.is_empty() {
            let status = status(Some(InsertOutcome::MissingBlobs(blobs)));
            return self.settle(index, status, true);
        }
        self.awaiting.insert(index, blobs.len());
        self.wait();
        for blob in blobs {
            fetches.want(blob, (request, index));
        }
    }

    /// A blob document `index` waits for is here (`Ok`) or will not come: the insert to
    /// run again once every blob it waits for is here.
    pub(crate) fn blob_done(
        &mut self,
        index: usize,
        result: &Result<(), String>,
    ) -> Option<RevisionInsert> {
        let left = self.awaiting.get_mut(&index)?;
        match result {
            Err(reason) => {
                self.awaiting.remove(&index);
                self.held.remove(&index);
                self.settle(index, RevStatus::rejected(Code::NotFound, reason), true);
                self.done();
                None
            }
            Ok(()) => {
                *left -= 1;
                if *left > 0 {
                    return None;
                }
                self.awaiting.remove(&index);
                // Its wait carries over to the insert that runs now.
                self.held.remove(&index)
            }
        }
    }

    /// The collection the request is in.
    pub(crate) fn collection(&self) -> &CollectionName {
        &self.collection
    }

    /// Settles document `index` with `status`, reported as an event when `report`.
    pub(crate) fn settle(&mut self, index: usize, status: RevStatus, report: bool) {
        let (collection, direction) = (&self.collection, self.direction);
        if let Some(d) = self.docs.get_mut(index) {
            if report {
                let doc = d.doc.clone();
                d.event = Some(DocumentEvent::from_status(
                    collection, doc, direction, &status,
                ));
            }
            d.status = Some(status);
        }
    }

    /// A storage operation for the request started.
    pub(crate) fn wait(&mut self) {
        self.pending += 1;
    }

    /// A storage operation for the request finished.
    pub(crate) fn done(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Whether no storage operation for the request is still running.
    pub(crate) fn is_settled(&self) -> bool {
        self.pending == 0
    }

    /// Flags document `index` as a resolved conflict, if it was stored.
    pub(crate) fn mark_resolved(&mut self, index: usize) {
        if let Some(event) = self.docs.get_mut(index).and_then(|d| d.event.as_mut())
            && event.error.is_none()
        {
            event.conflict_resolved = true;
        }
    }

    /// The documents of the request, in the order received.
    pub(crate) fn doc_ids(&self) -> impl Iterator<Item = &DocId> {
        self.docs.iter().map(|d| &d.doc.0)
    }

    /// The answer to the request and the events to report, both in the order received.
    pub(crate) fn answer(self) -> (Response, Vec<DocumentEvent>) {
        let mut statuses = Vec::with_capacity(self.docs.len());
        let mut events = Vec::new();
        for d in self.docs {
            statuses.push(d.status.unwrap_or(RevStatus::Ok));
            events.extend(d.event);
        }
        (Response::RevStatuses(statuses), events)
    }
}

/// The storage operations of blobs, the same on both sides.
#[derive(Debug)]
pub(crate) enum BlobOp {
    /// Beginning to write a blob being fetched.
    Begin(BlobDigest),
    /// Writing bytes of a blob being fetched.
    Write(BlobDigest),
    /// Dropping or suspending a transfer.
    Abandon,
    /// Reading blob bytes to answer the peer's `GetBlob` request.
    Serve(RequestNumber),
}

/// What a machine does about a store's reply to a [`BlobOp`] besides driving its fetches.
pub(crate) enum BlobReplyError {
    /// The peer sent bytes that do not match: close with this violation.
    Violation(PeerMisbehaved),
    /// The store answered with the wrong reply.
    Wrong(StorageReply),
}

/// Takes the store's reply to `op`: answers the peer, or moves the fetches on (drive them
/// afterwards).
pub(crate) fn blob_reply<S, O>(
    fetches: &mut Fetches,
    conn: &mut Conn<S, O>,
    op: BlobOp,
    reply: StorageReply,
) -> Result<(), BlobReplyError> {
    match (op, reply) {
        (BlobOp::Serve(n), StorageReply::BlobBytes(bytes)) => {
            crate::sender::blob_read(conn, n, bytes)
        }
        (
            BlobOp::Begin(digest),
            StorageReply::BlobBegun {
                transfer,
                resume_at,
            },
        ) => fetches.begun(digest, transfer, resume_at),
        (BlobOp::Begin(digest), StorageReply::BlobTooLarge { max }) => {
            fetches.too_large(digest, max)
        }
        (BlobOp::Write(digest), StorageReply::BlobWritten { complete }) => {
            fetches.written(digest, complete)
        }
        (BlobOp::Write(digest), StorageReply::BlobMismatch) => {
            if let Some(violation) = fetches.mismatch(digest) {
                return Err(BlobReplyError::Violation(violation));
            }
        }
        (BlobOp::Abandon, StorageReply::Done) => {}
        (_, reply) => return Err(BlobReplyError::Wrong(reply)),
    }
    Ok(())
}

/// How a machine names a `GetBlob` request and a blob operation in its own bookkeeping.
pub(crate) trait FetchKinds<S, O> {
    /// A `GetBlob` request for `ask`.
    fn sent(&self, ask: BlobAsk) -> S;
    /// A blob storage operation.
    fn op(&self, op: BlobOp) -> O;
    /// Inserting again document `index` of request `request`, its blobs fetched.
    fn insert(&self, request: RequestNumber, index: usize, insert: &RevisionInsert) -> O;
}

/// Runs the fetches' next steps through `conn`; returns the requests that may now be
/// settled.
pub(crate) fn drive_fetches<S, O>(
    fetches: &mut Fetches,
    incoming: &mut BTreeMap<RequestNumber, Incoming>,
    conn: &mut Conn<S, O>,
    kinds: &impl FetchKinds<S, O>,
) -> Vec<RequestNumber> {
    let mut touched = Vec::new();
    while let Some(step) = fetches.poll() {
        match step {
            FetchStep::Begin(blob) => {
                let kind = kinds.op(BlobOp::Begin(blob.digest));
                conn.storage(StorageOp::BeginBlob { blob }, kind);
            }
            FetchStep::Request(ask) => {
                let request = Request::GetBlob {
                    digest: ask.digest,
                    offset: ask.offset,
                    max: ask.max,
                };
                conn.request(request, kinds.sent(ask));
            }
            FetchStep::Write {
                digest,
                transfer,
                bytes,
            } => {
                let kind = kinds.op(BlobOp::Write(digest));
                conn.storage(StorageOp::WriteBlob { transfer, bytes }, kind);
            }
            FetchStep::Abandon(transfer) => {
                let kind = kinds.op(BlobOp::Abandon);
                conn.storage(StorageOp::AbandonBlob { transfer }, kind);
            }
            FetchStep::Done { waiters, result } => {
                for (request, index) in waiters {
                    let Some(inc) = incoming.get_mut(&request) else {
                        continue;
                    };
                    if let Some(insert) = inc.blob_done(index, &result) {
                        let kind = kinds.insert(request, index, &insert);
                        let op = StorageOp::InsertRevisions {
                            collection: inc.collection().clone(),
                            inserts: vec![insert],
                        };
                        conn.storage(op, kind);
                    }
                    touched.push(request);
                }
            }
        }
    }
    touched
}
