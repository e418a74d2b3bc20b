//! Sending revisions, written once for both sides: how a list of changes or of document
//! bundles is cut into messages that stay within what the receiver accepts, what a sender
//! remembers of a `Revs` message until it is answered, and how a document too large for
//! any message is reported. The active side sends what it pushes, the passive side what
//! it serves from its changes feed; each keeps its own flow control (batches in flight,
//! the wanted queue) and calls these for the messages.

use crate::{Change, CollectionName, DocId, Oversized, RevBundle, RevId};

/// Upper bounds on the encoded size of what a sync frame holds, so a sender can keep every
/// frame within the receiver's limit without encoding anything twice. Each bound is at
/// least what the codec writes (shortest CBOR heads, field names as serde spells them);
/// `bounds_hold` in the tests checks them against real encodings.
pub(crate) mod wire_size {
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
}

/// Bytes of `Revs` messages sent and not yet answered, against a limit. A sender sends
/// while there is room, and always at least one message, so a document larger than the
/// limit still goes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ByteWindow(usize);

impl ByteWindow {
    /// Whether another message may go with `max` bytes allowed in flight.
    pub(crate) fn has_room(&self, max: usize) -> bool {
        self.0 == 0 || self.0 < max
    }

    /// A message of `bytes` went out.
    pub(crate) fn sent(&mut self, bytes: usize) {
        self.0 += bytes;
    }

    /// A message of `bytes` was answered.
    pub(crate) fn answered(&mut self, bytes: usize) {
        self.0 = self.0.saturating_sub(bytes);
    }
}

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
    /// Each message's bundles and their bytes.
    pub(crate) messages: Vec<(Vec<RevBundle>, usize)>,
    /// Documents too large for any message the peer accepts.
    pub(crate) oversized: Vec<Oversized>,
}

/// Cuts bundles into `Revs` messages within `budget`; `notes_room` is kept free in each
/// for the notes the first message may carry.
pub(crate) fn revs_messages(
    collection: &CollectionName,
    bundles: Vec<RevBundle>,
    notes_room: usize,
    budget: FrameBudget,
) -> RevsMessages {
    let envelope = wire_size::envelope(collection) + notes_room;
    let Cut { frames, too_large } = cut(bundles, wire_size::bundle, envelope, budget);
    RevsMessages {
        messages: frames,
        oversized: oversized(too_large),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Frame, MAX_BUNDLE, Request, Revision, Seq};
    use proptest::prelude::*;

    fn rev(generation: u64, fill: u8) -> RevId {
        RevId::from_parts(generation, [fill; crate::DIGEST_LEN]).unwrap()
    }

    fn long_collection() -> CollectionName {
        CollectionName::new(&"s".repeat(125), &"c".repeat(125)).unwrap()
    }

    fn long_id(tag: u64) -> DocId {
        let tag = tag.to_string();
        DocId::new(format!(
            "{tag}{}",
            "d".repeat(crate::MAX_DOC_ID_LEN - tag.len())
        ))
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every bound is at least what the codec writes, at the widest numbers and IDs.
        #[test]
        fn bounds_hold(
            body_len in prop_oneof![0usize..64, 20usize..70_000],
            revisions in 1usize..=MAX_BUNDLE,
            history in 0usize..=crate::MAX_HISTORY,
            deleted_ancestors in 0usize..4,
            docs in 1usize..4,
            unavailable in 0usize..4,
            oversized in 0usize..4,
            other_leaves in 0usize..8,
        ) {
            let body = Body::from_json_str(&format!(r#"{{"b":"{}"}}"#, "z".repeat(body_len))).unwrap();
            let revision = Revision {
                rev: rev(u64::MAX >> 1, 0xff),
                deleted: false,
                body,
                history: (0..history).map(|i| rev(u64::MAX >> 2, i as u8)).collect(),
                deleted_ancestors: (0..deleted_ancestors.min(history)).map(|i| rev(u64::MAX >> 2, i as u8)).collect(),
            };
            let bundles: Vec<RevBundle> = (0..docs as u64)
                .map(|d| RevBundle {
                    doc_id: long_id(d),
                    revisions: vec![revision.clone(); revisions],
                    seq: Seq(u64::MAX),
                })
                .collect();
            let collection = long_collection();
            let unavailable: Vec<DocId> = (0..unavailable as u64).map(|d| long_id(100 + d)).collect();
            let frame = Frame::Request(u64::MAX, Request::Revs {
                collection: collection.clone(),
                docs: bundles.clone(),
                unavailable: unavailable.clone(),
                oversized: (0..oversized as u64)
                    .map(|d| Oversized { doc_id: long_id(200 + d), rev: rev(u64::MAX, 1), bytes: u64::MAX })
                    .collect(),
            });
            let bound = wire_size::envelope(&collection)
                + bundles.iter().map(wire_size::bundle).sum::<usize>()
                + wire_size::notes_room(&unavailable, oversized);
            prop_assert!(frame.encode().len() <= bound, "{} > {bound}", frame.encode().len());

            let changes: Vec<Change> = (0..docs as u64)
                .map(|d| Change {
                    seq: Seq(u64::MAX),
                    doc_id: long_id(d),
                    rev: rev(u64::MAX >> 1, 3),
                    deleted: true,
                    other_leaves: (0..other_leaves).map(|i| rev(u64::MAX >> 1, i as u8)).collect(),
                })
                .collect();
            let bound = wire_size::envelope(&collection)
                + changes.iter().map(wire_size::change).sum::<usize>();
            for frame in [
                Request::Changes { collection: collection.clone(), changes: changes.clone() },
                Request::ProposeChanges { collection: collection.clone(), changes },
            ] {
                let bytes = Frame::Request(u64::MAX, frame).encode();
                prop_assert!(bytes.len() <= bound, "{} > {bound}", bytes.len());
            }
        }

        /// Frames keep every entry, in order, within the budget; only what cannot fit
        /// alone is left out.
        #[test]
        fn cut_keeps_order_and_budget(
            sizes in prop::collection::vec(1usize..5_000, 0..60),
            max_entries in 1usize..10,
            soft in 100usize..8_000,
            hard in 500usize..6_000,
        ) {
            let budget = FrameBudget { max_entries, soft_bytes: soft, hard_bytes: hard };
            let items: Vec<(usize, usize)> = sizes.iter().copied().enumerate().collect();
            let Cut { frames, too_large } = cut(items, |(_, s)| *s, 100, budget);
            let mut seen: Vec<usize> = frames.iter().flat_map(|(f, _)| f.iter().map(|(i, _)| *i)).collect();
            seen.extend(too_large.iter().map(|((i, _), _)| *i));
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..sizes.len()).collect::<Vec<_>>());
            for ((_, s), need) in &too_large {
                prop_assert!(100 + s > hard);
                prop_assert_eq!(*need, 100 + s);
            }
            for (frame, bytes) in &frames {
                prop_assert!(!frame.is_empty() && frame.len() <= max_entries);
                prop_assert_eq!(*bytes, frame.iter().map(|(_, s)| s).sum::<usize>());
                prop_assert!(100 + bytes <= hard);
                prop_assert!(frame.len() == 1 || 100 + bytes <= soft);
                prop_assert!(frame.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }
    }
}
