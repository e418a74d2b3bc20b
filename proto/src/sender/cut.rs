//! Cutting lists of changes or bundles into frames within a byte budget.

use super::RevsMessage;
use super::wire_size;
use crate::{Change, CollectionName, DocId, Oversized, RevBundle};

/// How a sender cuts a list into frames.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameBudget {
    /// At most this many entries in one frame.
    pub(crate) max_entries: usize,
    /// Entries are added while the frame stays within this many bytes (a single entry
    /// larger than that still goes, alone).
    pub(crate) soft_bytes: usize,
    /// What the receiver accepts: an entry that cannot fit even alone is never sent.
    pub(crate) hard_bytes: usize,
}

impl FrameBudget {
    /// What a side may send a peer that announced frames of at most `peer_limit` bytes:
    /// `max_entries` entries, cut at `message_bytes`.
    pub(crate) fn new(max_entries: usize, message_bytes: usize, peer_limit: usize) -> FrameBudget {
        FrameBudget {
            max_entries,
            soft_bytes: message_bytes.min(peer_limit),
            hard_bytes: peer_limit,
        }
    }
}

/// Cuts changes into `Changes` or `ProposeChanges` messages. A change takes at most
/// ~2 KiB, so none is left out: a peer whose limit is smaller than that refuses the frame
/// with 1009, which ends the replication with that reason.
pub(crate) fn change_messages(
    collection: &CollectionName,
    changes: Vec<Change>,
    budget: FrameBudget,
) -> Vec<Vec<Change>> {
    let budget = FrameBudget {
        hard_bytes: usize::MAX,
        ..budget
    };
    let envelope = wire_size::envelope(collection);
    cut(changes, wire_size::change, envelope, budget)
        .frames
        .into_iter()
        .map(|(changes, _)| changes)
        .collect()
}

/// `Revs` messages of bundles cut by [`revs_messages`].
pub(crate) struct RevsMessages {
    /// The messages, in order.
    pub(crate) messages: Vec<RevsMessage>,
    /// Documents too large for any message the peer accepts.
    pub(crate) oversized: Vec<Oversized>,
}

/// Cuts bundles into `Revs` messages within `budget`. With `notes` (the side serving a
/// changes feed, which may leave wanted documents out), the first message also says which
/// documents are unavailable and which too large: room for those is kept in every message,
/// and a message goes even with no document when there are notes to carry.
pub(crate) fn revs_messages(
    collection: &CollectionName,
    bundles: Vec<RevBundle>,
    notes: Option<Vec<DocId>>,
    budget: FrameBudget,
) -> RevsMessages {
    let notes_room = notes.as_ref().map_or(0, |unavailable| {
        wire_size::notes_room(unavailable, bundles.len())
    });
    let envelope = wire_size::envelope(collection) + notes_room;
    let Cut { frames, too_large } = cut(bundles, wire_size::bundle, envelope, budget);
    let oversized = oversized(too_large);
    let mut messages: Vec<RevsMessage> = frames
        .into_iter()
        .map(|(docs, bytes)| RevsMessage {
            docs,
            unavailable: Vec::new(),
            oversized: Vec::new(),
            bytes,
        })
        .collect();
    if let Some(unavailable) = notes
        && (!unavailable.is_empty() || !oversized.is_empty())
    {
        if messages.is_empty() {
            messages.push(RevsMessage::default());
        }
        messages[0].unavailable = unavailable;
        messages[0].oversized = oversized.clone();
    }
    RevsMessages {
        messages,
        oversized,
    }
}

/// A list cut into frames by [`cut`].
pub(crate) struct Cut<T> {
    /// The frames in order, each with the bytes of its entries.
    pub(crate) frames: Vec<(Vec<T>, usize)>,
    /// The entries too large to send at all, each with the frame size it would need.
    pub(crate) too_large: Vec<(T, usize)>,
}

/// Cuts `items` into frames within `budget`, each frame's envelope taking `envelope` bytes.
pub(crate) fn cut<T>(
    items: Vec<T>,
    size: impl Fn(&T) -> usize,
    envelope: usize,
    budget: FrameBudget,
) -> Cut<T> {
    let mut frames: Vec<(Vec<T>, usize)> = Vec::new();
    let mut too_large = Vec::new();
    for item in items {
        let bytes = size(&item);
        if envelope.saturating_add(bytes) > budget.hard_bytes {
            too_large.push((item, envelope.saturating_add(bytes)));
            continue;
        }
        let fits = frames.last().is_some_and(|(entries, used)| {
            entries.len() < budget.max_entries.max(1)
                && envelope + used + bytes <= budget.soft_bytes.min(budget.hard_bytes)
        });
        match frames.last_mut() {
            Some((entries, used)) if fits => {
                entries.push(item);
                *used += bytes;
            }
            _ => frames.push((vec![item], bytes)),
        }
    }
    Cut { frames, too_large }
}

/// The event reporting a document that cannot be sent to a peer whose frame limit is
/// `limit` (both sides report it, in `direction`).
pub(crate) fn too_large_event(
    collection: &crate::CollectionName,
    oversized: crate::Oversized,
    direction: crate::Direction,
    limit: usize,
) -> crate::DocumentEvent {
    crate::DocumentEvent {
        collection: collection.clone(),
        doc_id: oversized.doc_id,
        rev: oversized.rev,
        direction,
        deleted: false,
        error: Some(crate::DocumentError::TooLarge {
            bytes: oversized.bytes,
            limit: limit as u64,
        }),
        conflict_resolved: false,
        already_had: false,
    }
}

/// The documents of `too_large` (from [`cut`]) as [`crate::Oversized`] notes.
fn oversized(too_large: Vec<(RevBundle, usize)>) -> Vec<Oversized> {
    too_large
        .into_iter()
        .filter_map(|(b, bytes)| {
            let rev = b.revisions.last()?.rev;
            Some(Oversized {
                doc_id: b.doc_id,
                rev,
                bytes: bytes as u64,
            })
        })
        .collect()
}
