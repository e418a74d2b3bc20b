//! Sending revisions, written once for both sides. The active side sends what it pushes,
//! the passive side what it serves from its changes feed; both read their local changes
//! with a [`ChangesCursor`], cut what they send into messages that stay within what the
//! receiver accepts ([`change_messages`], [`revs_messages`]), and send `Revs` messages
//! through an [`Outbox`] that keeps the bytes in flight within a window. What differs
//! stays with each side: the active side's batches that move its checkpoint and its
//! proposals, the passive side's wanted queue and caught-up markers. Both serve the
//! blobs their messages in flight refer to ([`serve_blob`]).

mod blobs;
mod cursor;
mod cut;
mod outbox;
pub(crate) mod wire_size;

pub(crate) use blobs::{blob_read, serve_blob};
pub(crate) use cursor::ChangesCursor;
pub(crate) use cut::{FrameBudget, RevsMessages, change_messages, revs_messages, too_large_event};
pub(crate) use outbox::{Outbox, RevsMessage};

use crate::{DocId, RevBundle, RevId};

/// What a sender keeps of a `Revs` message until it is answered: each document with its
/// current revision and whether that is a tombstone.
pub(crate) fn summary(docs: &[RevBundle]) -> Vec<(DocId, RevId, bool)> {
    docs.iter()
        .filter_map(|d| {
            d.revisions
                .last()
                .map(|r| (d.doc_id.clone(), r.rev, r.deleted))
        })
        .collect()
}

/// Whether a deletion read from the changes feed was gone by the time its revisions were
/// read (`leaves[i]` for `changes[i]`): forgotten after its retention, or purged, in
/// between. Sending on would let the receiver's checkpoint pass a deletion it never got,
/// so the sender starts over from the checkpoint instead, and the feed then says which it
/// was (a forgotten one refuses the reader).
pub(crate) fn deletion_vanished<'a>(
    changes: impl IntoIterator<Item = &'a crate::Change>,
    leaves: &[Vec<crate::Revision>],
) -> bool {
    changes
        .into_iter()
        .enumerate()
        .any(|(i, c)| c.deleted && leaves.get(i).is_none_or(Vec::is_empty))
}

/// Why a sender starts over when [`deletion_vanished`].
pub(crate) const DELETION_VANISHED: &str = "a deletion read from the changes feed was gone when its revisions were read (forgotten after its retention, or purged, meanwhile): starting over from the checkpoint";

#[cfg(test)]
mod tests;
