//! Revision trees: every known revision of one document, with bodies kept at the leaves.
//!
//! A tree is a set of nodes keyed by [`RevId`]; each node knows its parent's ID (which may
//! have been pruned away), whether it is a tombstone, and — for leaves only — its body.
//! Merging two trees is a set union, so it is commutative, associative and idempotent,
//! and the current revision is a pure function of the set: the greatest leaf by
//! (not deleted, generation, digest). Two peers holding the same revisions therefore
//! always agree on a document's current revision, whatever order they learned them in.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Body, RevId, Revision, RevisionError};

/// Default number of revisions kept along each branch.
pub const DEFAULT_MAX_DEPTH: usize = 20;

/// Why a tree could not be built or extended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevTreeError {
    /// The revision's ancestry is inconsistent.
    #[error(transparent)]
    Revision(#[from] RevisionError),
    /// A node's parent is not exactly one generation older.
    #[error("revision {rev} names {parent} as parent, which is not one generation older")]
    ParentGeneration {
        /// The node.
        rev: RevId,
        /// Its claimed parent.
        parent: RevId,
    },
    /// A leaf has no body.
    #[error("leaf revision {0} has no body")]
    LeafWithoutBody(RevId),
}

/// One node of a [`RevTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevNode {
    parent: Option<RevId>,
    deleted: bool,
    body: Option<Body>,
}

impl RevNode {
    /// A node; `body` should be present exactly for leaves.
    pub fn new(parent: Option<RevId>, deleted: bool, body: Option<Body>) -> RevNode {
        RevNode {
            parent,
            deleted,
            body,
        }
    }

    /// The parent's ID, if known (the parent node itself may have been pruned).
    pub fn parent(&self) -> Option<&RevId> {
        self.parent.as_ref()
    }

    /// True for a tombstone. Only reliable for leaves: ancestors learned from a history
    /// list are recorded as not deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The body; kept for leaves only.
    pub fn body(&self) -> Option<&Body> {
        self.body.as_ref()
    }
}

/// All known revisions of one document.
///
/// ```
/// use peerlite_proto::{Body, RevTree, Revision};
/// let v1 = Revision::first(false, Body::from_json_str(r#"{"v": 1}"#)?)?;
/// let a = v1.child(false, Body::from_json_str(r#"{"v": "a"}"#)?, 20)?;
/// let b = v1.child(false, Body::from_json_str(r#"{"v": "b"}"#)?, 20)?;
///
/// let mut tree = RevTree::new();
/// tree.insert(&v1)?;
/// tree.insert(&a)?;
/// tree.insert(&b)?;
/// assert!(tree.is_conflicted());
/// // The winner is the same whichever order the revisions arrived in.
/// let winner = tree.current().map(|(rev, _)| *rev);
/// assert_eq!(winner, Some(a.rev.max(b.rev)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevTree {
    nodes: BTreeMap<RevId, RevNode>,
}

impl RevTree {
    /// An empty tree.
    pub fn new() -> RevTree {
        RevTree::default()
    }

    /// Rebuilds a tree from stored nodes, checking parent generations and that every leaf
    /// has a body.
    pub fn from_nodes(
        nodes: impl IntoIterator<Item = (RevId, RevNode)>,
    ) -> Result<RevTree, RevTreeError> {
        let tree = RevTree {
            nodes: nodes.into_iter().collect(),
        };
        for (rev, node) in &tree.nodes {
            if let Some(parent) = node.parent
                && parent.generation().checked_add(1) != Some(rev.generation())
            {
                return Err(RevTreeError::ParentGeneration { rev: *rev, parent });
            }
        }
        let parents = tree.parent_set();
        if let Some((rev, _)) = tree
            .nodes
            .iter()
            .find(|(rev, node)| !parents.contains(rev) && node.body.is_none())
        {
            return Err(RevTreeError::LeafWithoutBody(*rev));
        }
        Ok(tree)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the tree holds no revision.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True when the tree holds `rev`.
    pub fn contains(&self, rev: &RevId) -> bool {
        self.nodes.contains_key(rev)
    }

    /// The node of `rev`.
    pub fn get(&self, rev: &RevId) -> Option<&RevNode> {
        self.nodes.get(rev)
    }

    /// All nodes in revision order.
    pub fn nodes(&self) -> impl Iterator<Item = (&RevId, &RevNode)> {
        self.nodes.iter()
    }

    /// Adds a revision and its ancestry. Returns `false` when the tree already held it.
    ///
    /// The history must chain (see [`Revision::check_history`]); the digest is not checked
    /// here — do that with [`Revision::validate`] for revisions from other peers.
    pub fn insert(&mut self, revision: &Revision) -> Result<bool, RevTreeError> {
        revision.check_history()?;
        if let Some(known) = self.nodes.get_mut(&revision.rev) {
            // Learned earlier from a history list, where the deleted flag is unknown.
            known.deleted |= revision.deleted;
            return Ok(false);
        }
        for (i, ancestor) in revision.history.iter().enumerate() {
            let parent = revision.history.get(i + 1).copied();
            let node = self.nodes.entry(*ancestor).or_insert(RevNode {
                parent,
                deleted: false,
                body: None,
            });
            node.parent = node.parent.max(parent);
            node.deleted |= revision.deleted_ancestors.contains(ancestor);
            // It has a child now, so it is no longer a leaf.
            node.body = None;
        }
        self.nodes.insert(
            revision.rev,
            RevNode {
                parent: revision.history.first().copied(),
                deleted: revision.deleted,
                body: Some(revision.body.clone()),
            },
        );
        Ok(true)
    }

    /// Adds every node of `other` (set union). Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &RevTree) {
        for (rev, theirs) in &other.nodes {
            match self.nodes.get_mut(rev) {
                None => {
                    self.nodes.insert(*rev, theirs.clone());
                }
                Some(ours) => {
                    // Same ID means same content; combine what each side knows, choosing
                    // deterministically if a faulty peer sent inconsistent data.
                    ours.parent = ours.parent.max(theirs.parent);
                    ours.deleted |= theirs.deleted;
                    ours.body = match (ours.body.take(), &theirs.body) {
                        (Some(a), Some(b)) => Some(if b.as_bytes() > a.as_bytes() {
                            b.clone()
                        } else {
                            a
                        }),
                        (a, b) => a.or_else(|| b.clone()),
                    };
                }
            }
        }
        let parents = self.parent_set();
        for (rev, node) in &mut self.nodes {
            if parents.contains(rev) {
                node.body = None;
            }
        }
    }

    /// Removes revisions more than `max_depth` generations behind every leaf that
    /// descends from them. Leaves are never removed. Returns how many nodes went.
    pub fn prune(&mut self, max_depth: usize) -> usize {
        let max_depth = max_depth.max(1);
        let mut keep = BTreeSet::new();
        for leaf in self.leaf_ids() {
            let mut cursor = Some(leaf);
            for _ in 0..max_depth {
                let Some(node) = cursor.and_then(|rev| self.nodes.get(&rev).map(|n| (rev, n)))
                else {
                    break;
                };
                keep.insert(node.0);
                cursor = node.1.parent;
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|rev, _| keep.contains(rev));
        before - self.nodes.len()
    }

    /// IDs of the leaves (revisions with no child), in revision order.
    pub fn leaf_ids(&self) -> Vec<RevId> {
        let parents = self.parent_set();
        self.nodes
            .keys()
            .filter(|rev| !parents.contains(rev))
            .copied()
            .collect()
    }

    /// The leaves with their nodes.
    pub fn leaves(&self) -> impl Iterator<Item = (&RevId, &RevNode)> {
        let parents = self.parent_set();
        self.nodes
            .iter()
            .filter(move |(rev, _)| !parents.contains(rev))
    }

    /// Leaves that are not tombstones.
    pub fn live_leaves(&self) -> impl Iterator<Item = (&RevId, &RevNode)> {
        self.leaves().filter(|(_, node)| !node.deleted)
    }

    /// The current (winning) revision: the greatest leaf by (not deleted, generation,
    /// digest). `None` only for an empty tree.
    pub fn current(&self) -> Option<(&RevId, &RevNode)> {
        self.leaves()
            .max_by(|(ra, na), (rb, nb)| (!na.deleted, *ra).cmp(&(!nb.deleted, *rb)))
    }

    /// The current revision's ID.
    pub fn current_rev(&self) -> Option<RevId> {
        self.current().map(|(rev, _)| *rev)
    }

    /// True when the document is deleted: it has revisions and all leaves are tombstones.
    pub fn is_deleted(&self) -> bool {
        self.current().is_some_and(|(_, node)| node.deleted)
    }

    /// True when more than one leaf is live: the document has an unresolved conflict.
    pub fn is_conflicted(&self) -> bool {
        self.live_leaves().nth(1).is_some()
    }

    /// True when `rev` is `ancestor` or one of its descendants, as far as this tree knows.
    pub fn descends_from(&self, rev: &RevId, ancestor: &RevId) -> bool {
        let mut cursor = Some(*rev);
        while let Some(r) = cursor {
            if r == *ancestor {
                return true;
            }
            if r.generation() <= ancestor.generation() {
                return false;
            }
            cursor = self.nodes.get(&r).and_then(|n| n.parent);
        }
        false
    }

    /// Ancestors of `rev`, parent first, at most `max` of them (including the ID of a
    /// pruned parent, which is still known).
    pub fn history(&self, rev: &RevId, max: usize) -> Vec<RevId> {
        let mut out = Vec::new();
        let mut cursor = self.nodes.get(rev).and_then(|n| n.parent);
        while let Some(r) = cursor {
            if out.len() == max {
                break;
            }
            out.push(r);
            cursor = self.nodes.get(&r).and_then(|n| n.parent);
        }
        out
    }

    /// The full [`Revision`] of a leaf (with up to `max_history` ancestors), or `None` if
    /// the tree does not hold `rev` or no longer keeps its body.
    pub fn revision(&self, rev: &RevId, max_history: usize) -> Option<Revision> {
        let node = self.nodes.get(rev)?;
        let history = self.history(rev, max_history);
        let deleted_ancestors = history
            .iter()
            .filter(|r| self.nodes.get(r).is_some_and(|n| n.deleted))
            .copied()
            .collect();
        Some(Revision {
            rev: *rev,
            deleted: node.deleted,
            body: node.body.clone()?,
            history,
            deleted_ancestors,
        })
    }

    /// The revisions that are some node's parent (one allocation, searched by bisection:
    /// this runs on every read of a document's leaves).
    fn parent_set(&self) -> ParentSet {
        let mut parents: Vec<RevId> = self.nodes.values().filter_map(|n| n.parent).collect();
        parents.sort_unstable();
        parents.dedup();
        ParentSet(parents)
    }
}

/// A sorted set of revision IDs.
struct ParentSet(Vec<RevId>);

impl ParentSet {
    fn contains(&self, rev: &RevId) -> bool {
        self.0.binary_search(rev).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(tag: u64) -> Body {
        Body::from_serialize(&serde_json::json!({ "t": tag })).unwrap()
    }

    fn chain(len: usize, tag: u64) -> Vec<Revision> {
        let mut out = vec![Revision::first(false, body(tag)).unwrap()];
        for i in 1..len {
            let next = out[i - 1].child(false, body(tag + i as u64), 1000).unwrap();
            out.push(next);
        }
        out
    }

    #[test]
    fn linear_history() {
        let revs = chain(5, 0);
        let mut tree = RevTree::new();
        assert!(tree.insert(&revs[4]).unwrap());
        assert!(!tree.insert(&revs[4]).unwrap());
        assert_eq!(tree.len(), 5);
        assert_eq!(tree.current_rev(), Some(revs[4].rev));
        assert!(!tree.is_conflicted());
        assert!(tree.descends_from(&revs[4].rev, &revs[0].rev));
        assert!(!tree.descends_from(&revs[0].rev, &revs[4].rev));
        assert_eq!(
            tree.history(&revs[4].rev, 2),
            vec![revs[3].rev, revs[2].rev]
        );
        // Only the leaf keeps its body.
        assert!(tree.revision(&revs[3].rev, 10).is_none());
        assert_eq!(tree.revision(&revs[4].rev, 10).unwrap(), revs[4]);
        // An older revision arriving later changes nothing.
        assert!(!tree.insert(&revs[2]).unwrap());
        assert_eq!(tree.current_rev(), Some(revs[4].rev));
    }

    #[test]
    fn live_beats_deleted_then_generation_then_digest() {
        let base = Revision::first(false, body(0)).unwrap();
        let long = base
            .child(false, body(1), 20)
            .unwrap()
            .child(true, Body::empty(), 20)
            .unwrap();
        let short = base.child(false, body(2), 20).unwrap();
        let mut tree = RevTree::new();
        tree.insert(&long).unwrap();
        tree.insert(&short).unwrap();
        // The deleted branch is longer, but a live leaf wins.
        assert_eq!(tree.current_rev(), Some(short.rev));
        assert!(!tree.is_conflicted());
        assert!(!tree.is_deleted());
        let tomb = short.child(true, Body::empty(), 20).unwrap();
        tree.insert(&tomb).unwrap();
        assert!(tree.is_deleted());
        assert_eq!(tree.current_rev(), Some(long.rev.max(tomb.rev)));
    }

    #[test]
    fn prune_keeps_depth_per_branch_and_all_leaves() {
        let revs = chain(30, 0);
        let side = revs[4].child(false, body(999), 1000).unwrap();
        let mut tree = RevTree::new();
        tree.insert(&revs[29]).unwrap();
        tree.insert(&side).unwrap();
        assert_eq!(tree.len(), 31);
        let removed = tree.prune(20);
        // Main branch keeps generations 11..=30; the side leaf (gen 6) keeps gens 1..=6.
        assert_eq!(removed, 31 - 26);
        assert!(tree.contains(&side.rev));
        assert!(tree.contains(&revs[0].rev));
        assert!(!tree.contains(&revs[6].rev));
        assert!(tree.contains(&revs[10].rev));
        assert_eq!(tree.current_rev(), Some(revs[29].rev));
        // The oldest kept node still remembers its parent's ID.
        assert_eq!(
            tree.get(&revs[10].rev).unwrap().parent(),
            Some(&revs[9].rev)
        );
        assert_eq!(tree.prune(20), 0);
        let mut single = RevTree::new();
        single.insert(&revs[29]).unwrap();
        single.prune(1);
        assert_eq!(single.len(), 1);
    }

    #[test]
    fn from_nodes_checks_structure() {
        let revs = chain(2, 0);
        let mut tree = RevTree::new();
        tree.insert(&revs[1]).unwrap();
        let nodes: Vec<_> = tree.nodes().map(|(r, n)| (*r, n.clone())).collect();
        assert_eq!(RevTree::from_nodes(nodes.clone()).unwrap(), tree);
        let mut no_body = nodes.clone();
        no_body[1].1.body = None;
        let leaf = no_body[1].0;
        assert_eq!(
            RevTree::from_nodes(no_body),
            Err(RevTreeError::LeafWithoutBody(leaf))
        );
        let mut wrong_parent = nodes;
        wrong_parent[0].1.parent = Some(wrong_parent[1].0);
        assert!(matches!(
            RevTree::from_nodes(wrong_parent),
            Err(RevTreeError::ParentGeneration { .. })
        ));
    }

    /// A random universe of revisions: a forest grown by random parent choices.
    fn universe() -> impl Strategy<Value = Vec<Revision>> {
        (
            prop::collection::vec(
                (any::<prop::sample::Index>(), any::<bool>(), 0u64..4),
                1..24,
            ),
            1usize..3,
        )
            .prop_map(|(steps, roots)| {
                let mut revs: Vec<Revision> = (0..roots)
                    .map(|r| Revision::first(false, body(100 + r as u64)).unwrap())
                    .collect();
                for (i, (pick, deleted, tag)) in steps.into_iter().enumerate() {
                    let parent = revs[pick.index(revs.len())].clone();
                    let b = if deleted {
                        Body::empty()
                    } else {
                        body(tag * 1000 + i as u64)
                    };
                    revs.push(parent.child(deleted, b, 1000).unwrap());
                }
                revs
            })
    }

    /// A tree built from a random subset of the universe (each with full history).
    fn subtree(universe: &[Revision], pick: &[bool]) -> RevTree {
        let mut tree = RevTree::new();
        for (rev, take) in universe.iter().zip(pick.iter().cycle()) {
            if *take {
                tree.insert(rev).unwrap();
            }
        }
        tree
    }

    fn merged(a: &RevTree, b: &RevTree) -> RevTree {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn merge_is_commutative_associative_idempotent(
            u in universe(),
            pa in prop::collection::vec(any::<bool>(), 1..24),
            pb in prop::collection::vec(any::<bool>(), 1..24),
            pc in prop::collection::vec(any::<bool>(), 1..24),
        ) {
            let (a, b, c) = (subtree(&u, &pa), subtree(&u, &pb), subtree(&u, &pc));
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            let union = merged(&a, &b);
            for (rev, _) in union.leaves() {
                prop_assert!(union.get(rev).unwrap().body().is_some());
            }
        }

        #[test]
        fn current_revision_ignores_insertion_order(
            u in universe(),
            order in Just(()).prop_perturb(|_, mut rng| {
                let mut v: Vec<usize> = (0..64).collect();
                for i in (1..v.len()).rev() {
                    let j = (rng.next_u32() as usize) % (i + 1);
                    v.swap(i, j);
                }
                v
            }),
        ) {
            let mut forward = RevTree::new();
            for r in &u {
                forward.insert(r).unwrap();
            }
            let mut shuffled = RevTree::new();
            for i in order.iter().filter(|i| **i < u.len()) {
                shuffled.insert(&u[*i]).unwrap();
            }
            prop_assert_eq!(&forward, &shuffled);
            prop_assert_eq!(forward.current_rev(), shuffled.current_rev());
            // The winner is a leaf, and no live leaf outranks it.
            let (win, node) = forward.current().unwrap();
            for (rev, leaf) in forward.leaves() {
                prop_assert!((!node.is_deleted(), *win) >= (!leaf.is_deleted(), *rev));
            }
        }

        #[test]
        fn pruning_keeps_leaves_and_winner(u in universe(), depth in 1usize..6) {
            let mut tree = RevTree::new();
            for r in &u {
                tree.insert(r).unwrap();
            }
            let leaves = tree.leaf_ids();
            let winner = tree.current_rev();
            tree.prune(depth);
            prop_assert_eq!(tree.leaf_ids(), leaves);
            prop_assert_eq!(tree.current_rev(), winner);
            for leaf in tree.leaf_ids() {
                // Each leaf keeps min(depth, generation) revisions of its own branch.
                let kept = 1 + tree.history(&leaf, usize::MAX)
                    .iter()
                    .filter(|r| tree.contains(r))
                    .count();
                prop_assert!(kept >= depth.min(leaf.generation() as usize));
            }
        }
    }
}
