//! Conflict resolution: a pulled revision that conflicts with the local current one is
//! resolved by the resolver and written with it in one guarded insert, retried when the
//! local document changes meanwhile.

use super::*;

/// How many times a conflict resolution is recomputed when the local document keeps
/// changing underneath it.
pub(super) const MAX_RESOLVE_ATTEMPTS: u8 = 5;

/// A pulled document that conflicts with a local one, on its way to a resolution.
pub(super) struct Resolving {
    pub(super) collection: CollectionName,
    /// The `Revs` request it came in, and its index there.
    pub(super) request: RequestNumber,
    pub(super) index: usize,
    pub(super) doc: DocId,
    /// The pulled revisions.
    pub(super) bundle: Vec<Revision>,
    /// Resolutions already refused because the local document changed meanwhile.
    pub(super) attempt: u8,
}

/// Whether `bundle` brings a revision that is new here and grows from the local current
/// revision's branch (say a tombstone of one of its ancestors): writing it would put
/// that branch in conflict, so the document needs a real resolution.
pub(super) fn bundle_touches_branch(
    bundle: &[Revision],
    leaves: &[Revision],
    local: &Revision,
) -> bool {
    bundle.iter().any(|r| {
        !leaves.iter().any(|l| l.is_or_descends_from(&r.rev))
            && r.parent().is_some_and(|p| local.is_or_descends_from(p))
    })
}

impl ActiveReplicator {
    /// Reads a conflicting document's leaves, to resolve its conflict with `bundle`.
    pub(super) fn read_to_resolve(&mut self, r: Resolving) {
        let read = StorageOp::GetLeaves {
            collection: r.collection.clone(),
            ids: vec![r.doc.clone()],
            max_history: self.config.max_history,
        };
        self.op(read, Op::ResolveRead(r));
    }

    /// Resolves a pulled document that conflicts with the local current revision, and
    /// writes the pulled bundle and the resolution in one guarded insert.
    pub(super) fn resolve(&mut self, r: Resolving, leaves: Vec<Revision>, now: Instant) {
        let max_history = self.config.max_history;
        let Some(remote) = r.bundle.last() else {
            return;
        };
        let local = leaves.iter().max_by_key(|l| (!l.deleted, l.rev));
        let (expected, revisions, resolved) = match local {
            None => (None, Ok(r.bundle.clone()), false),
            Some(local) if local.is_or_descends_from(&remote.rev) => {
                // The remote revision arrived meanwhile: nothing to resolve.
                self.pulled_doc(r.request, r.index, RevStatus::Ok);
                return self.pull_op_done(r.request, now);
            }
            Some(local)
                if leaves.iter().any(|l| l.history.contains(&remote.rev))
                    && !bundle_touches_branch(&r.bundle, &leaves, local) =>
            {
                // The remote revision is already here with a descendant (say a tombstone
                // that closed it): the sender is behind and there is nothing to resolve.
                // Keep what else the bundle brings (the branches it closed).
                (Some(local.rev), Ok(r.bundle.clone()), false)
            }
            Some(local) => {
                let conflict = Conflict {
                    doc_id: &r.doc,
                    local: ConflictSide { revision: local },
                    remote: ConflictSide { revision: remote },
                };
                let custom = self
                    .cols
                    .get(&r.collection)
                    .and_then(|c| c.config.conflict_resolver.clone());
                let resolution = match &custom {
                    Some(resolver) => resolver.resolve(&conflict),
                    None => self.resolver.resolve(&conflict),
                };
                let revs = resolution_revisions(&conflict, &resolution, max_history).map(|extra| {
                    let mut all = r.bundle.clone();
                    all.extend(extra);
                    all
                });
                (Some(local.rev), revs, true)
            }
        };
        match revisions {
            Ok(revisions) => {
                let write = StorageOp::InsertRevisions {
                    collection: r.collection.clone(),
                    inserts: vec![RevisionInsert {
                        doc_id: r.doc.clone(),
                        revisions,
                        mode: InsertMode::Guarded { expected },
                    }],
                };
                self.op(write, Op::ResolveWrite(r, resolved));
            }
            Err(e) => {
                let reason = format!("cannot resolve the conflict: {e}");
                let status = RevStatus::rejected(Code::Internal, reason);
                self.pulled_doc(r.request, r.index, status);
                self.pull_op_done(r.request, now);
            }
        }
    }

    /// The guarded insert of a pulled document (and its resolution) is done.
    pub(super) fn resolution_written(
        &mut self,
        r: Resolving,
        resolved: bool,
        outcome: Option<InsertOutcome>,
        now: Instant,
    ) {
        let request = r.request;
        match outcome {
            Some(InsertOutcome::Inserted { .. } | InsertOutcome::AlreadyHad { .. }) => {
                let name = r.collection;
                self.pulled_doc(request, r.index, RevStatus::Ok);
                if resolved {
                    self.mark_resolved(request, r.index);
                }
                // The resolution is a new local revision: push it.
                let pushes = self.config.replicator_type.pushes();
                if let Some(c) = self.cols.get_mut(&name).filter(|_| pushes) {
                    c.push.cursor.touch();
                    self.pump_push(&name);
                }
            }
            Some(InsertOutcome::Conflict { .. }) if r.attempt + 1 < MAX_RESOLVE_ATTEMPTS => {
                // The local document changed while resolving: read it again.
                return self.read_to_resolve(Resolving {
                    attempt: r.attempt + 1,
                    ..r
                });
            }
            other => {
                let reason = match other {
                    Some(InsertOutcome::Invalid(e)) => e.to_string(),
                    Some(o @ InsertOutcome::MissingBlobs(_)) => {
                        match crate::receiver::status(Some(o)) {
                            RevStatus::Rejected { reason, .. } => reason,
                            _ => "a blob it refers to is missing".into(),
                        }
                    }
                    _ => "the local document kept changing while resolving a conflict".into(),
                };
                let status = RevStatus::rejected(Code::Conflict, reason);
                self.pulled_doc(request, r.index, status);
            }
        }
        self.pull_op_done(request, now);
    }
}
