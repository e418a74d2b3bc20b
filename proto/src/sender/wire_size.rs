//! Upper bounds on the encoded size of what a sync frame holds, so a sender can keep every
//! frame within the receiver's limit without encoding anything twice. Each bound is at
//! least what the codec writes (shortest CBOR heads, field names as serde spells them);
//! `bounds_hold` in the tests checks them against real encodings.

use crate::{Change, CollectionName, DocId, RevBundle};

/// A revision ID: `[generation, digest]`.
const REV_ID: usize = 1 + 9 + 1 + crate::DIGEST_LEN;

/// The envelope of a request in `collection`: everything but its list entries.
pub(crate) fn envelope(collection: &CollectionName) -> usize {
    96 + collection.as_str().len()
}

/// One document's bundle in a `Revs` request.
pub(crate) fn bundle(b: &RevBundle) -> usize {
    let revisions: usize = b
        .revisions
        .iter()
        .map(|r| 112 + r.body.len() + REV_ID * (r.history.len() + r.deleted_ancestors.len()))
        .sum();
    48 + b.doc_id.as_str().len() + revisions
}

/// One entry of a `Changes` or `ProposeChanges` request.
pub(crate) fn change(c: &Change) -> usize {
    96 + c.doc_id.as_str().len() + REV_ID * c.other_leaves.len()
}

/// Room for the notes of a `Revs` request: these unavailable documents and, at
/// most, `docs` oversized ones.
pub(crate) fn notes_room(unavailable: &[DocId], docs: usize) -> usize {
    unavailable
        .iter()
        .map(|d| 3 + d.as_str().len())
        .sum::<usize>()
        + docs * (64 + crate::MAX_DOC_ID_LEN)
}
