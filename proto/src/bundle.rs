//! What travels when a document is sent: its current revision, preceded by the
//! tombstones that close its other branches.

use crate::{Change, DocId, RevId, Revision, RevsDiff};

/// The most revisions sent for one document: the current one and up to seven closed
/// branches (the most recent ones).
pub const MAX_BUNDLE: usize = 8;

/// Builds the bundle for sending `rev` from a document's leaves (with bodies): the
/// closing tombstones of its other branches, oldest first, then `rev` itself. `None`
/// when `rev` is no longer the document's current revision (it was superseded; the
/// newer change comes later in the changes feed).
pub fn bundle_from_leaves(leaves: Vec<Revision>, rev: &RevId) -> Option<Vec<Revision>> {
    let winner = leaves.iter().max_by_key(|r| (!r.deleted, r.rev))?.rev;
    if winner != *rev {
        return None;
    }
    let (mut current, mut closed): (Vec<Revision>, Vec<Revision>) =
        leaves.into_iter().partition(|r| r.rev == winner);
    closed.retain(|r| r.deleted);
    closed.sort_by_key(|r| std::cmp::Reverse(r.rev));
    closed.truncate(MAX_BUNDLE - 1);
    closed.reverse();
    closed.append(&mut current);
    Some(closed)
}

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
pub(crate) fn oversized(too_large: Vec<(crate::RevBundle, usize)>) -> Vec<crate::Oversized> {
    too_large
        .into_iter()
        .filter_map(|(b, bytes)| {
            let rev = b.revisions.last()?.rev;
            Some(crate::Oversized {
                doc_id: b.doc_id,
                rev,
                bytes: bytes as u64,
            })
        })
        .collect()
}

/// The IDs of a document's leaves other than its current revision.
pub fn other_leaf_ids(bundle: &[Revision]) -> Vec<RevId> {
    match bundle.split_last() {
        Some((_, rest)) => rest.iter().map(|r| r.rev).collect(),
        None => Vec::new(),
    }
}

/// The revisions to ask a store about for these changes (each change's current revision
/// and other leaves), and how many belong to each change.
pub(crate) fn diff_query(changes: &[Change]) -> (Vec<(DocId, RevId)>, Vec<usize>) {
    let mut revs = Vec::with_capacity(changes.len());
    let mut counts = Vec::with_capacity(changes.len());
    for c in changes {
        revs.push((c.doc_id.clone(), c.rev));
        revs.extend(c.other_leaves.iter().map(|r| (c.doc_id.clone(), *r)));
        counts.push(1 + c.other_leaves.len());
    }
    (revs, counts)
}

/// Per change: `None` when the store has all of its revisions, otherwise the store's
/// leaf revisions of the document (what the sender's history should reach back to).
pub(crate) fn wanted_from_diff(counts: &[usize], diff: Vec<RevsDiff>) -> Vec<Option<Vec<RevId>>> {
    let mut diff = diff.into_iter();
    counts
        .iter()
        .map(|n| {
            diff.by_ref().take(*n).fold(None, |want, d| match d {
                RevsDiff::Missing { leaves } => Some(want.unwrap_or(leaves)),
                RevsDiff::Present => want,
            })
        })
        .collect()
}

/// Ancestors to read when building a bundle: enough to reach back to what the receiver
/// knows (the store keeps at most its pruning depth anyway).
pub(crate) const READ_HISTORY: usize = crate::MAX_HISTORY;

/// Trims each revision's history so it reaches back to (and includes) the newest
/// ancestor the receiver already has; with none in sight, to `max_history` ancestors.
pub(crate) fn fit_history(bundle: &mut [Revision], known: &[RevId], max_history: usize) {
    for r in bundle {
        let keep = match r.history.iter().position(|h| known.contains(h)) {
            Some(i) => i + 1,
            None => max_history.max(1),
        };
        r.history.truncate(keep);
        let history = &r.history;
        r.deleted_ancestors.retain(|d| history.contains(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, CollectionName, Frame, Oversized, Request, RevBundle, Seq};
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

    #[test]
    fn closures_precede_the_current_revision() {
        let base = Revision::first(false, Body::from_json_str(r#"{"v": 0}"#).unwrap()).unwrap();
        let a = base
            .child(false, Body::from_json_str(r#"{"v": 1}"#).unwrap(), 20)
            .unwrap();
        let b = base
            .child(false, Body::from_json_str(r#"{"v": 2}"#).unwrap(), 20)
            .unwrap();
        let closed_b = b.child(true, Body::empty(), 20).unwrap();
        let leaves = vec![closed_b.clone(), a.clone()];
        let bundle = bundle_from_leaves(leaves.clone(), &a.rev).unwrap();
        assert_eq!(bundle, vec![closed_b.clone(), a.clone()]);
        assert_eq!(other_leaf_ids(&bundle), vec![closed_b.rev]);
        assert_eq!(bundle_from_leaves(leaves, &b.rev), None);
        assert_eq!(bundle_from_leaves(Vec::new(), &a.rev), None);
    }
}
