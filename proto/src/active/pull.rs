//! Pulling: answering the passive peer's `Changes` with what is wanted (revs-diff),
//! storing the `Revs` it sends without creating conflicts, and retiring batches in order,
//! which moves the pull checkpoint.

use super::*;

/// A pulled `Changes` batch whose revs-diff is being read.
pub(super) struct PullDiff {
    pub(super) collection: CollectionName,
    pub(super) request: RequestNumber,
    pub(super) changes: Vec<Change>,
    /// Per change: whether the document filter selects it.
    pub(super) selected: Vec<bool>,
    /// Per selected change: how many revisions of it the diff asks about.
    pub(super) counts: Vec<usize>,
}

pub(super) struct PullBatch {
    pub(super) request: RequestNumber,
    pub(super) last_seq: Seq,
    pub(super) diffing: bool,
    pub(super) outstanding: BTreeSet<DocId>,
}

#[derive(Default)]
pub(super) struct PullState {
    pub(super) caught_up: bool,
    pub(super) batches: VecDeque<PullBatch>,
}

impl PullState {
    /// Whether the peer has not caught up yet, or a batch is not finished.
    pub(super) fn is_busy(&self) -> bool {
        !self.caught_up || !self.batches.is_empty()
    }

    /// Opens the batch of a `Changes` request up to `last_seq`; it waits for its revs-diff
    /// when it has documents to ask about.
    pub(super) fn open_batch(&mut self, request: RequestNumber, last_seq: Seq, diffing: bool) {
        self.batches.push_back(PullBatch {
            request,
            last_seq,
            diffing,
            outstanding: BTreeSet::new(),
        });
    }

    /// The revs-diff of `request`'s batch is answered: it now waits for `wanted`.
    pub(super) fn diffed(&mut self, request: RequestNumber, wanted: BTreeSet<DocId>) {
        if let Some(b) = self
            .batches
            .iter_mut()
            .find(|b| b.request == request && b.diffing)
        {
            b.diffing = false;
            b.outstanding = wanted;
        }
    }

    /// Marks a wanted document as handled in the oldest batch that waits for it; false
    /// when no batch waits for it.
    pub(super) fn doc_done(&mut self, doc: &DocId) -> bool {
        match self
            .batches
            .iter_mut()
            .find(|b| b.outstanding.contains(doc))
        {
            Some(b) => b.outstanding.remove(doc),
            None => false,
        }
    }

    /// Retires the finished batches at the front, in order; the last sequence retired is
    /// how far the pull checkpoint may now go.
    pub(super) fn retire_finished(&mut self) -> Option<Seq> {
        let mut advanced = None;
        while self
            .batches
            .front()
            .is_some_and(|b| !b.diffing && b.outstanding.is_empty())
        {
            advanced = self.batches.pop_front().map(|b| b.last_seq);
        }
        advanced
    }
}

impl ActiveReplicator {
    pub(super) fn pulled_changes(
        &mut self,
        n: RequestNumber,
        name: CollectionName,
        changes: Vec<Change>,
        now: Instant,
    ) {
        let pulls = self.config.replicator_type.pulls();
        let Some(c) = self.cols.get_mut(&name).filter(|_| pulls) else {
            let v = PeerMisbehaved::NotPulling {
                request: "Changes",
                collection: name,
            };
            return self.violation(v, now);
        };
        let Some(last_seq) = changes.iter().map(|ch| ch.seq).max() else {
            c.pull.caught_up = true;
            self.conn.respond(n, Response::Wanted(Vec::new()));
            return self.update_activity(now);
        };
        c.pull.caught_up = false;
        let selected: Vec<bool> = changes
            .iter()
            .map(|ch| {
                c.config
                    .doc_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&ch.doc_id))
            })
            .collect();
        let chosen: Vec<Change> = changes
            .iter()
            .zip(&selected)
            .filter(|(_, s)| **s)
            .map(|(ch, _)| ch.clone())
            .collect();
        let total = changes.len() as u64;
        c.pull.open_batch(n, last_seq, !chosen.is_empty());
        if chosen.is_empty() {
            self.conn
                .respond(n, Response::Wanted(vec![None; changes.len()]));
            self.progress(total, total);
            return self.finish_pull_batches(&name, now);
        }
        self.progress(0, total);
        let (revs, counts) = crate::bundle::diff_query(&chosen);
        self.op(
            StorageOp::RevsDiff {
                collection: name.clone(),
                revs,
            },
            Op::PullDiff(PullDiff {
                collection: name,
                request: n,
                changes,
                selected,
                counts,
            }),
        );
    }

    pub(super) fn pull_diffed(&mut self, op: PullDiff, diff: Vec<RevsDiff>, now: Instant) {
        let PullDiff {
            collection: name,
            request,
            changes,
            selected,
            counts,
        } = op;
        let mut chosen_wanted = crate::bundle::wanted_from_diff(&counts, diff).into_iter();
        let mut flags = Vec::with_capacity(changes.len());
        let mut wanted = BTreeSet::new();
        for (change, sel) in changes.iter().zip(&selected) {
            let want = if *sel {
                chosen_wanted.next().flatten()
            } else {
                None
            };
            if want.is_some() {
                wanted.insert(change.doc_id.clone());
            }
            flags.push(want);
        }
        let not_wanted = (changes.len() - wanted.len()) as u64;
        if let Some(c) = self.cols.get_mut(&name) {
            c.pull.diffed(request, wanted);
        }
        self.conn.respond(request, Response::Wanted(flags));
        self.progress(not_wanted, 0);
        self.finish_pull_batches(&name, now);
    }

    pub(super) fn pulled_revs(
        &mut self,
        n: RequestNumber,
        name: CollectionName,
        docs: Vec<RevBundle>,
        unavailable: Vec<DocId>,
        oversized: Vec<Oversized>,
        now: Instant,
    ) {
        if !self.config.replicator_type.pulls() || !self.cols.contains_key(&name) {
            let v = PeerMisbehaved::NotPulling {
                request: "Revs",
                collection: name,
            };
            return self.violation(v, now);
        }
        if let Err(v) = crate::receiver::check_bundles(&docs, self.trust_revision_ids) {
            return self.violation(v, now);
        }
        for doc in &unavailable {
            self.pull_doc_done(&name, doc);
        }
        if !oversized.is_empty() {
            let limit = self.config.frame_limits.max_frame_bytes;
            let events = oversized
                .into_iter()
                .map(|o| {
                    self.pull_doc_done(&name, &o.doc_id);
                    crate::sender::too_large_event(&name, o, Direction::Pull, limit)
                })
                .collect();
            self.conn.event(Event::Documents(events));
        }
        let filter = self
            .cols
            .get(&name)
            .and_then(|c| c.config.pull_filter.clone());
        let mut incoming = Incoming::new(name.clone(), Direction::Pull, &docs);
        let mut to_insert = Vec::new();
        for (index, bundle) in docs.into_iter().enumerate() {
            let include = match (&filter, bundle.revisions.last()) {
                (Some(f), Some(rev)) => f.include(&FilterContext {
                    collection: &name,
                    doc_id: &bundle.doc_id,
                    revision: rev,
                }),
                _ => true,
            };
            if include {
                to_insert.push((index, bundle.doc_id, bundle.revisions));
            } else {
                incoming.settle(index, RevStatus::Ok, false);
            }
        }
        if !to_insert.is_empty() {
            incoming.wait();
            let inserts: Vec<RevisionInsert> = to_insert
                .iter()
                .map(|(index, doc_id, revisions)| {
                    let insert = crate::receiver::insert(doc_id.clone(), revisions.clone());
                    incoming.hold_if_blobs(*index, &insert);
                    insert
                })
                .collect();
            // Only a replicator that also pushes could offer these revisions back.
            if self.config.replicator_type.pushes()
                && let Some(c) = self.cols.get_mut(&name)
            {
                crate::receiver::record_sent(&mut c.peer_knows, &inserts);
            }
            self.op(
                StorageOp::InsertRevisions {
                    collection: name,
                    inserts,
                },
                Op::PullInsert {
                    request: n,
                    bundles: to_insert,
                },
            );
        }
        self.pull_revs.insert(n, incoming);
        self.finish_pull_revs(n, now);
    }

    pub(super) fn pull_inserted(
        &mut self,
        request: RequestNumber,
        bundles: Vec<(usize, DocId, Vec<Revision>)>,
        outcomes: Vec<InsertOutcome>,
        now: Instant,
    ) {
        let Some(incoming) = self.pull_revs.get_mut(&request) else {
            return;
        };
        let indices: Vec<usize> = bundles.iter().map(|(i, _, _)| *i).collect();
        let mut bundles = bundles;
        let mut conflicts = Vec::new();
        for (index, outcome) in incoming.stored(&indices, outcomes, true, true) {
            match outcome {
                InsertOutcome::MissingBlobs(blobs) => {
                    incoming.await_blobs(request, index, blobs, &mut self.fetches)
                }
                _ => {
                    // Conflicts are rare: a search per conflict beats a map per message.
                    if let Some(at) = bundles.iter().position(|(i, _, _)| *i == index) {
                        let (_, doc, bundle) = bundles.swap_remove(at);
                        incoming.wait();
                        conflicts.push(Resolving {
                            collection: incoming.collection().clone(),
                            request,
                            index,
                            doc,
                            bundle,
                            attempt: 0,
                        });
                    }
                }
            }
        }
        for r in conflicts {
            self.read_to_resolve(r);
        }
        self.drive_fetches(now);
        self.pull_op_done(request, now);
    }

    /// Runs the blob fetches' next steps, and answers the requests they settled.
    pub(super) fn drive_fetches(&mut self, now: Instant) {
        let kinds = ActiveFetch { epoch: self.epoch };
        let touched = crate::receiver::drive_fetches(
            &mut self.fetches,
            &mut self.pull_revs,
            &mut self.conn,
            &kinds,
        );
        for request in touched {
            self.finish_pull_revs(request, now);
        }
    }

    /// One storage operation of a pulled `Revs` request finished.
    pub(super) fn pull_op_done(&mut self, request: RequestNumber, now: Instant) {
        if let Some(incoming) = self.pull_revs.get_mut(&request) {
            incoming.done();
        }
        self.finish_pull_revs(request, now);
    }

    /// Flags pulled document `index` of a `Revs` request as a resolved conflict, if it
    /// was stored.
    pub(super) fn mark_resolved(&mut self, request: RequestNumber, index: usize) {
        if let Some(incoming) = self.pull_revs.get_mut(&request) {
            incoming.mark_resolved(index);
        }
    }

    /// Settles pulled document `index` of a `Revs` request with `status`.
    pub(super) fn pulled_doc(&mut self, request: RequestNumber, index: usize, status: RevStatus) {
        if let Some(incoming) = self.pull_revs.get_mut(&request) {
            incoming.settle(index, status, true);
        }
    }

    /// Marks a wanted document as handled in the oldest batch that waits for it.
    pub(super) fn pull_doc_done(&mut self, name: &CollectionName, doc: &DocId) {
        if self
            .cols
            .get_mut(name)
            .is_some_and(|c| c.pull.doc_done(doc))
        {
            self.progress(1, 0);
        }
    }

    /// Answers a `Revs` request once every document in it is stored.
    pub(super) fn finish_pull_revs(&mut self, request: RequestNumber, now: Instant) {
        if self.pull_revs.get(&request).is_none_or(|e| !e.is_settled()) {
            return;
        }
        let Some(incoming) = self.pull_revs.remove(&request) else {
            return;
        };
        let collection = incoming.collection().clone();
        for doc in incoming.doc_ids() {
            self.pull_doc_done(&collection, doc);
        }
        let (answer, events) = incoming.answer();
        self.conn.respond(request, answer);
        if !events.is_empty() {
            self.conn.event(Event::Documents(events));
        }
        self.finish_pull_batches(&collection, now);
    }

    /// Retires finished batches in order, advancing the pull checkpoint.
    pub(super) fn finish_pull_batches(&mut self, name: &CollectionName, now: Instant) {
        let advanced = self
            .cols
            .get_mut(name)
            .and_then(|c| c.pull.retire_finished());
        if let Some(seq) = advanced {
            self.progress_cp
                .collections
                .entry(name.clone())
                .or_default()
                .pull = seq;
        }
        self.update_activity(now);
    }
}
