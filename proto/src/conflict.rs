//! Conflict resolution: deciding between a local and a remote revision, and turning the
//! decision into revisions that every peer derives identically.
//!
//! A conflict is resolved on the side that pulled the remote revision. The resolution is
//! written as ordinary revisions:
//! - the winning content becomes a new revision whose parent is the **remote** revision
//!   (unless the remote revision itself wins unchanged), and
//! - the local branch is closed with a tombstone (unless it already ends in one).
//!
//! Revision IDs are digests of (parent, deleted, body), so two peers that resolve the same
//! conflict the same way create the very same revisions and converge.

use std::fmt;

use crate::{Body, DocId, RevIdError, Revision};

/// One side of a conflict.
#[derive(Clone, Copy, Debug)]
pub struct ConflictSide<'a> {
    /// The revision at the tip of this side's branch.
    pub revision: &'a Revision,
}

impl ConflictSide<'_> {
    /// True when this side's revision is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.revision.deleted
    }

    /// The body (`{}` for a plain tombstone).
    pub fn body(&self) -> &Body {
        &self.revision.body
    }
}

/// A conflict between the local current revision and a pulled remote revision of the same
/// document, neither descending from the other.
#[derive(Clone, Copy, Debug)]
pub struct Conflict<'a> {
    /// The document.
    pub doc_id: &'a DocId,
    /// The local side.
    pub local: ConflictSide<'a>,
    /// The remote side.
    pub remote: ConflictSide<'a>,
}

/// What a resolver decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Keep the local content (or local deletion).
    Local,
    /// Keep the remote content (or remote deletion).
    Remote,
    /// Replace both with merged content.
    Merged(Body),
    /// Delete the document.
    Delete,
}

/// Decides conflicts. Must be a pure function of the conflict so that peers converge.
///
/// Any `Fn(&Conflict) -> Resolution` closure is a resolver:
///
/// ```
/// use peerlite_proto::{Conflict, ConflictResolver, Resolution};
/// // "Remote always wins".
/// let resolver = |_: &Conflict<'_>| Resolution::Remote;
/// # fn takes(_: &dyn ConflictResolver) {}
/// takes(&resolver);
/// ```
pub trait ConflictResolver: Send + Sync {
    /// Chooses how to resolve `conflict`.
    fn resolve(&self, conflict: &Conflict<'_>) -> Resolution;
}

impl<F> ConflictResolver for F
where
    F: Fn(&Conflict<'_>) -> Resolution + Send + Sync,
{
    fn resolve(&self, conflict: &Conflict<'_>) -> Resolution {
        self(conflict)
    }
}

/// Couchbase Lite's default rule: a deletion wins; otherwise the revision with the longer
/// history (higher generation) wins; a tie goes to the higher revision ID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultConflictResolver;

impl ConflictResolver for DefaultConflictResolver {
    fn resolve(&self, c: &Conflict<'_>) -> Resolution {
        match (c.local.is_deleted(), c.remote.is_deleted()) {
            (true, false) => Resolution::Local,
            (false, true) => Resolution::Remote,
            _ if c.local.revision.rev > c.remote.revision.rev => Resolution::Local,
            _ => Resolution::Remote,
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolution::Local => f.write_str("local wins"),
            Resolution::Remote => f.write_str("remote wins"),
            Resolution::Merged(_) => f.write_str("merged"),
            Resolution::Delete => f.write_str("deleted"),
        }
    }
}

/// The revisions that carry out `resolution`, in the order to write them: a closing
/// tombstone on the local branch (if it is live) and a new revision on the remote branch
/// (unless the remote revision wins as it is). Histories keep at most `max_history`
/// ancestors.
///
/// After these are written, the document's current revision is the resolved one.
pub fn resolution_revisions(
    conflict: &Conflict<'_>,
    resolution: &Resolution,
    max_history: usize,
) -> Result<Vec<Revision>, RevIdError> {
    let local = conflict.local.revision;
    let remote = conflict.remote.revision;
    let mut out = Vec::with_capacity(2);
    if !local.deleted {
        out.push(local.child(true, Body::empty(), max_history)?);
    }
    // What the document should hold afterwards, unless the remote revision wins as it is.
    // A local or merged win is always a new child of the remote revision (even with the
    // remote's content), so its generation is above both sides: peers that met the same
    // conflict in opposite roles then converge instead of each keeping the other's
    // winner as a closed branch. Tombstones written by a resolution have an empty body,
    // so both roles derive the very same tombstone.
    let target = match resolution {
        Resolution::Remote => None,
        Resolution::Local if local.deleted => Some((true, Body::empty())),
        Resolution::Local => Some((false, local.body.clone())),
        Resolution::Merged(body) => Some((false, body.clone())),
        Resolution::Delete => Some((true, Body::empty())),
    };
    match target {
        // Deleting an already deleted remote needs nothing more.
        Some((true, _)) if remote.deleted => {}
        Some((deleted, body)) => out.push(remote.child(deleted, body, max_history)?),
        None => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RevTree;

    fn body(v: &str) -> Body {
        Body::from_serialize(&serde_json::json!({ "v": v })).unwrap()
    }

    struct Case {
        base: Revision,
        local: Revision,
        remote: Revision,
    }

    fn case(
        local_len: usize,
        local_deleted: bool,
        remote_len: usize,
        remote_deleted: bool,
    ) -> Case {
        let base = Revision::first(false, body("base")).unwrap();
        let grow = |n: usize, tag: &str, deleted: bool| {
            let mut r = base.clone();
            for i in 0..n {
                let last = i + 1 == n;
                let b = if last && deleted {
                    Body::empty()
                } else {
                    body(&format!("{tag}{i}"))
                };
                r = r.child(last && deleted, b, 20).unwrap();
            }
            r
        };
        Case {
            local: grow(local_len, "l", local_deleted),
            remote: grow(remote_len, "r", remote_deleted),
            base,
        }
    }

    fn resolve_with(c: &Case, resolver: &dyn ConflictResolver) -> (Resolution, RevTree) {
        let doc = DocId::new("d").unwrap();
        let conflict = Conflict {
            doc_id: &doc,
            local: ConflictSide { revision: &c.local },
            remote: ConflictSide {
                revision: &c.remote,
            },
        };
        let resolution = resolver.resolve(&conflict);
        let mut tree = RevTree::new();
        tree.insert(&c.base).unwrap();
        tree.insert(&c.local).unwrap();
        tree.insert(&c.remote).unwrap();
        for r in resolution_revisions(&conflict, &resolution, 20).unwrap() {
            r.validate().unwrap();
            tree.insert(&r).unwrap();
        }
        (resolution, tree)
    }

    #[test]
    fn default_rule_deletion_wins() {
        let c = case(3, false, 1, true);
        let (res, tree) = resolve_with(&c, &DefaultConflictResolver);
        assert_eq!(res, Resolution::Remote);
        assert!(tree.is_deleted());

        let c = case(1, true, 3, false);
        let (res, tree) = resolve_with(&c, &DefaultConflictResolver);
        assert_eq!(res, Resolution::Local);
        assert!(tree.is_deleted());
        // The new tombstone extends the remote branch.
        let (win, _) = tree.current().unwrap();
        assert!(tree.descends_from(win, &c.remote.rev) || tree.get(win).unwrap().is_deleted());
    }

    #[test]
    fn default_rule_longer_history_then_rev_id() {
        let c = case(3, false, 2, false);
        let (res, tree) = resolve_with(&c, &DefaultConflictResolver);
        assert_eq!(res, Resolution::Local);
        let (win, node) = tree.current().unwrap();
        assert_eq!(node.body(), Some(&c.local.body));
        // The winner is a child of the remote revision; the local branch is closed.
        assert_eq!(node.parent(), Some(&c.remote.rev));
        assert!(!tree.is_conflicted());
        assert_eq!(win.generation(), c.remote.rev.generation() + 1);

        let c = case(2, false, 2, false);
        let (res, _) = resolve_with(&c, &DefaultConflictResolver);
        let expect = if c.local.rev > c.remote.rev {
            Resolution::Local
        } else {
            Resolution::Remote
        };
        assert_eq!(res, expect);
    }

    #[test]
    fn remote_win_only_closes_local_branch() {
        let c = case(1, false, 2, false);
        let doc = DocId::new("d").unwrap();
        let conflict = Conflict {
            doc_id: &doc,
            local: ConflictSide { revision: &c.local },
            remote: ConflictSide {
                revision: &c.remote,
            },
        };
        let revs = resolution_revisions(&conflict, &Resolution::Remote, 20).unwrap();
        assert_eq!(revs.len(), 1);
        assert!(revs[0].deleted);
        assert_eq!(revs[0].parent(), Some(&c.local.rev));
    }

    #[test]
    fn custom_merge_and_determinism() {
        let c = case(2, false, 2, false);
        let merge = |c: &Conflict<'_>| {
            let mut m = c.local.body().to_json();
            m["merged"] = serde_json::json!(true);
            Resolution::Merged(Body::from_json(&m).unwrap())
        };
        let (_, t1) = resolve_with(&c, &merge);
        let (_, t2) = resolve_with(&c, &merge);
        // Two peers resolving alike produce identical trees.
        assert_eq!(t1, t2);
        let (_, node) = t1.current().unwrap();
        assert_eq!(node.body().unwrap().to_json()["merged"], true);

        let (res, tree) = resolve_with(&c, &|_: &Conflict<'_>| Resolution::Delete);
        assert_eq!(res, Resolution::Delete);
        assert!(tree.is_deleted());
    }
}
