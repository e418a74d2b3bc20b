//! Receiving revisions, written once for both sides: a `Revs` message is checked, what
//! it brings is recorded as known to the peer and inserted without creating conflicts,
//! and each outcome becomes the per-document status answered, kept in an [`Incoming`]
//! request until every document is settled. The active side receives what it pulls, the
//! passive side what is pushed to it; each keeps only what differs (the pull filter and
//! conflict resolution; the validator).

use crate::peer_knows::PeerKnows;
use crate::{
    Code, CollectionName, Direction, DocId, DocumentEvent, InsertMode, InsertOutcome,
    PeerMisbehaved, Response, RevBundle, RevId, RevStatus, Revision, RevisionInsert,
};

/// Checks that every bundle carries revisions, and every revision matches its content
/// and history: anything else is a protocol violation, and nothing of the message is
/// stored.
pub(crate) fn check_bundles(docs: &[RevBundle]) -> Result<(), PeerMisbehaved> {
    for bundle in docs {
        if bundle.revisions.is_empty() {
            return Err(PeerMisbehaved::EmptyBundle(bundle.doc_id.clone()));
        }
        for r in &bundle.revisions {
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
        Some(InsertOutcome::MissingBlob(blob)) => RevStatus::rejected(
            Code::NotFound,
            format!(
                "refers to blob {} ({} bytes), which the receiver does not hold",
                blob.digest, blob.length
            ),
        ),
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
    /// Storage operations still running for it.
    pending: usize,
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

    /// Settles the documents not settled yet, in order, with the outcomes of their
    /// insert; a document the store already had is reported only when
    /// `report_already_had`.
    pub(crate) fn stored(&mut self, outcomes: Vec<InsertOutcome>, report_already_had: bool) {
        let mut outcomes = outcomes.into_iter();
        let unsettled: Vec<usize> = (0..self.docs.len())
            .filter(|&i| self.docs[i].status.is_none())
            .collect();
        for index in unsettled {
            let status = status(outcomes.next());
            let report = report_already_had || status != RevStatus::AlreadyHad;
            self.settle(index, status, report);
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
