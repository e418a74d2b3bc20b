//! Receiving revisions, written once for both sides: a `Revs` message is checked, what
//! it brings is recorded as known to the peer and inserted without creating conflicts,
//! and each outcome becomes the per-document status answered. The active side receives
//! what it pulls, the passive side what is pushed to it; each keeps only what differs
//! (the pull filter and conflict resolution; the validator).

use crate::peer_knows::PeerKnows;
use crate::{
    Code, DocId, InsertMode, InsertOutcome, PeerMisbehaved, RevBundle, RevStatus, Revision,
    RevisionInsert,
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
        None => RevStatus::rejected(Code::Internal, "the store returned too few results"),
    }
}
