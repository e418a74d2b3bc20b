//! The storage operations that replication performs: which revisions are missing, read a
//! revision with its history, and insert revisions with their history.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use peerlite_proto::{
    Blob, CollectionName, DocId, InsertMode, InsertOutcome, RevId, RevTree, RevTreeError, Revision,
    RevisionError, RevisionInsert, RevsDiff, Seq, StorageFailure, StorageOp, StorageReply,
};

use crate::database::Database;
use crate::kv::{Space, WriteBatch};
use crate::notify::{ChangeNotice, ChangeOrigin, NotifyWhen};
use crate::{StorageError, keys};

impl Database {
    /// For each `(document, revision)`, whether the revision is already here.
    pub fn revs_diff(
        &self,
        collection: &CollectionName,
        wanted: &[(DocId, RevId)],
    ) -> Result<Vec<RevsDiff>, StorageError> {
        let state = self.collection(collection)?;
        wanted
            .iter()
            .map(|(id, rev)| {
                // The revisions it lacks are usually inserted next: keep the record.
                Ok(match self.load_revs_for_reuse(state.id, id)? {
                    Some(revs) if revs.contains(rev) => RevsDiff::Present,
                    Some(revs) => RevsDiff::Missing {
                        leaves: revs.leaf_ids(),
                    },
                    None => RevsDiff::Missing { leaves: Vec::new() },
                })
            })
            .collect()
    }

    /// Every leaf revision of a document (with bodies and up to `max_history` ancestors);
    /// empty when the document is unknown.
    pub fn leaves(
        &self,
        collection: &CollectionName,
        id: &DocId,
        max_history: usize,
    ) -> Result<Vec<Revision>, StorageError> {
        let state = self.collection(collection)?;
        Ok(match self.load_doc(state.id, id)? {
            None => Vec::new(),
            Some(rec) => rec
                .tree
                .leaf_ids()
                .iter()
                .filter_map(|leaf| rec.tree.revision(leaf, max_history))
                .collect(),
        })
    }

    /// Runs one [`StorageOp`] emitted by a replication state machine and returns the reply
    /// to feed back to it. Failures become [`StorageReply::Failed`].
    pub fn execute(&self, op: StorageOp) -> StorageReply {
        match self.try_execute(op) {
            Ok(reply) => reply,
            Err(e) => failure(&e),
        }
    }

    /// Runs several operations in order and returns their replies in the same order,
    /// committing consecutive [`StorageOp::InsertRevisions`] of one collection together:
    /// one atomic, durable commit (one `fdatasync`) for the group instead of one each —
    /// group commit. Each insert's outcome is what running the operations one by one
    /// would give; a failed group commit fails each of its operations.
    ///
    /// A runtime that runs a connection's operations one at a time can hand this
    /// everything that queued up while the previous call ran: the busier the store, the
    /// larger the groups.
    ///
    /// ```
    /// use peerlite_proto::{CollectionName, InsertMode, Revision, RevisionInsert, StorageOp,
    ///                      StorageReply, Body, DocId};
    /// let db = peerlite_storage::Database::in_memory()?;
    /// let c = CollectionName::default();
    /// let insert = |id: &str| StorageOp::InsertRevisions {
    ///     collection: c.clone(),
    ///     inserts: vec![RevisionInsert {
    ///         doc_id: DocId::new(id).unwrap(),
    ///         revisions: vec![Revision::first(false, Body::from_json_str("{}").unwrap()).unwrap()],
    ///         mode: InsertMode::NoConflicts,
    ///     }],
    /// };
    /// let replies = db.execute_many(vec![insert("a"), insert("b")]);
    /// assert!(replies.iter().all(|r| matches!(r, StorageReply::Inserted(o) if o.len() == 1)));
    /// assert_eq!(db.last_sequence(&c)?.0, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execute_many(&self, ops: Vec<StorageOp>) -> Vec<StorageReply> {
        let mut replies = Vec::with_capacity(ops.len());
        let mut ops = ops.into_iter().peekable();
        while let Some(op) = ops.next() {
            let StorageOp::InsertRevisions {
                collection,
                mut inserts,
            } = op
            else {
                replies.push(self.execute(op));
                continue;
            };
            let mut sizes = vec![inserts.len()];
            while let Some(StorageOp::InsertRevisions {
                collection: next, ..
            }) = ops.peek()
                && *next == collection
                && inserts.len() < MAX_GROUP_INSERTS
            {
                if let Some(StorageOp::InsertRevisions { inserts: more, .. }) = ops.next() {
                    sizes.push(more.len());
                    inserts.extend(more);
                }
            }
            match self.insert_revisions(&collection, inserts) {
                Ok(outcomes) => {
                    let mut outcomes = outcomes.into_iter();
                    for n in sizes {
                        replies.push(StorageReply::Inserted(outcomes.by_ref().take(n).collect()));
                    }
                }
                Err(e) => replies.extend(sizes.iter().map(|_| failure(&e))),
            }
        }
        replies
    }

    fn try_execute(&self, op: StorageOp) -> Result<StorageReply, StorageError> {
        Ok(match op {
            StorageOp::GetLocal { id } => StorageReply::Local(self.get_local(&id)?.map(Into::into)),
            StorageOp::PutLocal { id, value } => {
                self.put_local(&id, &value)?;
                StorageReply::Done
            }
            StorageOp::Changes {
                collection,
                since,
                limit,
            } => match self.feed_incomplete_after(&collection, since)? {
                Some(through) => StorageReply::DeletionsForgotten { through },
                None => StorageReply::Changes(self.changes(&collection, since, limit)?),
            },
            StorageOp::RevsDiff { collection, revs } => {
                StorageReply::RevsDiff(self.revs_diff(&collection, &revs)?)
            }
            StorageOp::GetRevisions {
                collection,
                revs,
                max_history,
            } => StorageReply::Revisions(
                revs.iter()
                    .map(|(id, rev)| self.get_revision(&collection, id, rev, max_history))
                    .collect::<Result<_, _>>()?,
            ),
            StorageOp::GetLeaves {
                collection,
                ids,
                max_history,
            } => StorageReply::Leaves(
                ids.iter()
                    .map(|id| self.leaves(&collection, id, max_history))
                    .collect::<Result<_, _>>()?,
            ),
            StorageOp::InsertRevisions {
                collection,
                inserts,
            } => StorageReply::Inserted(self.insert_revisions(&collection, inserts)?),
            StorageOp::BeginBlob { blob } => self.begin_transfer(blob)?,
            StorageOp::WriteBlob { transfer, bytes } => self.write_transfer(transfer, &bytes)?,
            StorageOp::AbandonBlob { transfer } => {
                self.abandon_transfer(transfer)?;
                StorageReply::Done
            }
            StorageOp::SuspendBlob { transfer } => {
                self.suspend_transfer(transfer)?;
                StorageReply::Done
            }
            StorageOp::ReadBlob {
                digest,
                offset,
                max,
            } => StorageReply::BlobBytes(self.inner.blobs.read_range(&digest, offset, max)?),
            other => {
                return Err(StorageError::Unsupported(format!("{other:?}")));
            }
        })
    }

    /// Reads one revision with up to `max_history` ancestors. `None` when the document or
    /// the revision is unknown, or the revision's body is no longer kept (it has been
    /// superseded: only leaves keep bodies).
    pub fn get_revision(
        &self,
        collection: &CollectionName,
        id: &DocId,
        rev: &RevId,
        max_history: usize,
    ) -> Result<Option<Revision>, StorageError> {
        let state = self.collection(collection)?;
        Ok(self
            .load_doc(state.id, id)?
            .and_then(|rec| rec.tree.revision(rev, max_history)))
    }

    /// Inserts revisions received from a peer. Each revision is validated (its history
    /// chains and its ID matches its content); each document's revisions are applied
    /// atomically under its [`InsertMode`]; all documents of the call commit in one batch
    /// with the database's durability, so when this returns `Ok` every `Inserted` outcome
    /// is persisted.
    pub fn insert_revisions(
        &self,
        collection: &CollectionName,
        inserts: Vec<RevisionInsert>,
    ) -> Result<Vec<InsertOutcome>, StorageError> {
        let depth = self.inner.config.max_rev_depth;
        let w = self.lock_writer()?;
        let state = self.collection(collection)?;

        // Documents touched by this call, evolving as their inserts apply in order.
        let mut work: BTreeMap<DocId, Work> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(inserts.len());
        for insert in inserts {
            let entry = match work.entry(insert.doc_id.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let (tree, disk_seq) = match self.load_doc(state.id, &insert.doc_id)? {
                        Some(rec) => (rec.tree, Some(rec.seq)),
                        None => (RevTree::new(), None),
                    };
                    e.insert(Work {
                        tree,
                        disk_seq,
                        last_change: None,
                    })
                }
            };
            if let Some(refused) = self.blobs_refused(&insert)? {
                outcomes.push((insert.doc_id, refused));
                continue;
            }
            let (outcome, new_tree) = apply_insert(&entry.tree, &insert, depth);
            if let Some(tree) = new_tree {
                entry.tree = tree;
                entry.last_change = Some(outcomes.len());
            }
            outcomes.push((insert.doc_id, outcome));
        }

        // One new sequence per changed document, in the order of their last change.
        let mut changed: Vec<(usize, &DocId, &Work)> = work
            .iter()
            .filter_map(|(id, w)| w.last_change.map(|i| (i, id, w)))
            .collect();
        changed.sort_by_key(|(i, _, _)| *i);
        let mut seq = state.last_seq;
        let mut batch = WriteBatch::new();
        let mut notices = Vec::with_capacity(changed.len());
        let mut assigned: BTreeMap<&DocId, Seq> = BTreeMap::new();
        for (_, id, w) in &changed {
            seq = seq.next();
            self.stage_doc(&mut batch, state.id, id, w.disk_seq, seq, &w.tree)?;
            if let Some((rev, node)) = w.tree.current() {
                notices.push(ChangeNotice {
                    collection: collection.clone(),
                    doc_id: (*id).clone(),
                    rev: *rev,
                    deleted: node.is_deleted(),
                    seq,
                    origin: ChangeOrigin::Replicated,
                });
            }
            assigned.insert(id, seq);
        }
        if !batch.is_empty() {
            batch.put(
                Space::Meta,
                keys::last_seq_meta_key(state.id),
                seq.0.to_be_bytes().to_vec(),
            );
            self.commit_changes(collection, seq, batch, &notices)?;
        }
        let results = outcomes
            .iter()
            .map(|(id, outcome)| match outcome {
                InsertOutcome::Inserted { rev, deleted, .. } => InsertOutcome::Inserted {
                    rev: *rev,
                    deleted: *deleted,
                    seq: assigned.get(id).copied().unwrap_or(Seq::ZERO),
                },
                other => other.clone(),
            })
            .collect();
        drop(w);
        self.inner.listeners.notify(NotifyWhen::Durable, &notices);
        Ok(results)
    }
}

impl Database {
    /// Why `insert` cannot be stored for its blobs — a malformed reference, or blobs
    /// not here — or `None` when every blob it refers to is here.
    fn blobs_refused(
        &self,
        insert: &RevisionInsert,
    ) -> Result<Option<InsertOutcome>, StorageError> {
        let mut missing: Vec<Blob> = Vec::new();
        for r in insert.revisions.iter().filter(|r| !r.deleted) {
            let blobs = match r.body.blobs() {
                Ok(blobs) => blobs,
                Err(error) => {
                    let e = RevisionError::BlobReference { rev: r.rev, error };
                    return Ok(Some(InsertOutcome::Invalid(e)));
                }
            };
            for blob in blobs {
                match self.check_blob(&insert.doc_id, &blob) {
                    Ok(()) => {}
                    Err(
                        StorageError::MissingBlob { .. } | StorageError::BlobLengthMismatch { .. },
                    ) => {
                        if !missing.iter().any(|m| m.digest == blob.digest) {
                            missing.push(blob);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((!missing.is_empty()).then_some(InsertOutcome::MissingBlobs(missing)))
    }
}

/// Most revision inserts [`Database::execute_many`] commits at once.
const MAX_GROUP_INSERTS: usize = 2_000;

fn failure(e: &StorageError) -> StorageReply {
    StorageReply::Failed(StorageFailure {
        transient: matches!(e, StorageError::Kv(_)),
        message: e.to_string(),
    })
}

struct Work {
    tree: RevTree,
    /// The document's sequence on disk before this call.
    disk_seq: Option<Seq>,
    /// Index of the last insert of this call that changed the document.
    last_change: Option<usize>,
}

/// Applies one document's insert to its tree. Returns the outcome, and the new tree when
/// the document changed (the outcome's sequence is filled in by the caller).
fn apply_insert(
    tree: &RevTree,
    insert: &RevisionInsert,
    depth: usize,
) -> (InsertOutcome, Option<RevTree>) {
    for r in &insert.revisions {
        if let Err(e) = r.validate() {
            return (InsertOutcome::Invalid(e), None);
        }
    }
    let current = tree.current().map(|(r, n)| (*r, n.is_deleted()));
    let conflict = || InsertOutcome::Conflict {
        current: current.map(|(r, _)| r),
    };
    if let InsertMode::Guarded { expected } = insert.mode
        && current.map(|(r, _)| r) != expected
    {
        return (conflict(), None);
    }
    let mut next = tree.clone();
    let mut added = false;
    for r in &insert.revisions {
        match next.insert(r) {
            Ok(a) => added |= a,
            Err(RevTreeError::Revision(e)) => return (InsertOutcome::Invalid(e), None),
            Err(_) => return (conflict(), None),
        }
    }
    if !added {
        return (
            InsertOutcome::AlreadyHad {
                current: current.map(|(r, _)| r),
            },
            None,
        );
    }
    if insert.mode == InsertMode::NoConflicts && would_conflict(tree, &next, &insert.revisions) {
        return (conflict(), None);
    }
    next.prune(depth);
    let Some((rev, deleted)) = next.current().map(|(r, n)| (*r, n.is_deleted())) else {
        return (conflict(), None);
    };
    (
        InsertOutcome::Inserted {
            rev,
            deleted,
            seq: Seq::ZERO,
        },
        Some(next),
    )
}

/// The [`InsertMode::NoConflicts`] rule.
fn would_conflict(before: &RevTree, after: &RevTree, inserted: &[Revision]) -> bool {
    // Every live branch must be extended (or closed) by the inserted revisions.
    let abandons_live_branch = before
        .live_leaves()
        .any(|(leaf, _)| !inserted.iter().any(|r| after.descends_from(&r.rev, leaf)));
    if abandons_live_branch {
        return true;
    }
    // A deleted document may only come back through a branch that passes through a
    // deletion (a re-creation), and not one that is old shared history: a tombstone of
    // which no leaf of the document is a strict descendant. A concurrent edit that never
    // saw the deletion is a conflict, for the puller to resolve.
    if before.is_deleted()
        && let Some((winner, node)) = after.current()
        && !node.is_deleted()
    {
        let leaves = before.leaf_ids();
        let recreated = after.nodes().filter(|(_, n)| n.is_deleted()).any(|(t, _)| {
            after.descends_from(winner, t)
                && !leaves.iter().any(|l| l != t && after.descends_from(l, t))
        });
        return !recreated;
    }
    // Nor may a live branch grow again from a line of history the receiver deleted and
    // abandoned (no live leaf here continues it), unless the sender saw that deletion (its
    // bundle carries the tombstone): an edit made concurrently with a deletion is a
    // conflict, for the puller to resolve, even when another branch keeps the document
    // alive. The receiver's changes feed carries the tombstone, so pulling resolves it.
    if let Some((winner, node)) = after.current()
        && !node.is_deleted()
        && !before.contains(winner)
    {
        return before.leaves().any(|(t, n)| {
            n.is_deleted()
                && !inserted.iter().any(|r| r.rev == *t)
                && n.parent().is_some_and(|p| {
                    after.descends_from(winner, p)
                        && !before
                            .live_leaves()
                            .any(|(l, _)| before.descends_from(l, p))
                })
                && !after.descends_from(winner, t)
        });
    }
    false
}
