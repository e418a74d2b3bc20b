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
    use crate::Body;

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
