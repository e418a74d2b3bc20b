//! Pushing: reading the local changes feed in batches, proposing them (or sending small
//! batches at once), and sending the wanted revisions in messages cut by bytes, within the
//! bytes-in-flight window; a batch retires once every document in it is answered, which
//! moves the push checkpoint.

use super::*;
use crate::ReplicationFilter;
use crate::sender::{ChangesCursor, Outbox, RevsMessage, RevsMessages};

/// Most body bytes a batch may hold to be pushed without a proposal.
pub(super) const DIRECT_PUSH_BYTES: usize = 64 << 10;

pub(super) struct PushBatch {
    pub(super) id: u64,
    pub(super) last_seq: Seq,
    /// What to send for each proposed document: its bundle and local sequence.
    pub(super) revs: BTreeMap<DocId, (Vec<Revision>, Seq)>,
    /// Storage reads and requests not yet answered, plus queued messages.
    pub(super) outstanding: usize,
}

impl PushBatch {
    /// Of the changes read for this batch and their documents' leaves, those to propose
    /// (each with its other leaves), keeping what to send for each; and how many are
    /// skipped (superseded, filtered out, or what the peer sent us).
    pub(super) fn select(
        &mut self,
        collection: &CollectionName,
        changes: Vec<Change>,
        leaves: Vec<Vec<Revision>>,
        filter: Option<&dyn ReplicationFilter>,
        peer_knows: &PeerKnows,
    ) -> (Vec<Change>, u64) {
        let mut skipped = 0;
        let mut proposal = Vec::new();
        for (change, leaves) in changes.into_iter().zip(leaves) {
            // A superseded revision has no bundle: its newer change is later in the feed.
            let Some(bundle) = crate::bundle_from_leaves(leaves, &change.rev) else {
                skipped += 1;
                continue;
            };
            let include = match (filter, bundle.last()) {
                (Some(f), Some(rev)) => f.include(&FilterContext {
                    collection,
                    doc_id: &change.doc_id,
                    revision: rev,
                }),
                _ => true,
            };
            let other_leaves = crate::other_leaf_ids(&bundle);
            if !include || peer_knows.peer_has(&change.doc_id, &change.rev, &other_leaves) {
                skipped += 1;
                continue;
            }
            proposal.push(Change {
                other_leaves,
                ..change.clone()
            });
            self.revs.insert(change.doc_id, (bundle, change.seq));
        }
        (proposal, skipped)
    }

    /// Whether `proposal` is small enough to send at once, without asking: at most
    /// `direct_max` documents and [`DIRECT_PUSH_BYTES`] of bodies.
    pub(super) fn goes_direct(&self, proposal: &[Change], direct_max: usize) -> bool {
        !proposal.is_empty()
            && proposal.len() <= direct_max
            && proposal
                .iter()
                .filter_map(|ch| self.revs.get(&ch.doc_id))
                .map(|(revisions, _)| revisions.iter().map(|r| r.body.len()).sum::<usize>())
                .sum::<usize>()
                <= DIRECT_PUSH_BYTES
    }

    /// The bundles of `proposal` sent without asking: history reaches back `max_history`
    /// ancestors, and a receiver further behind answers Conflict, which sends it again
    /// with history reaching its revision (see [`retry_bundle`]).
    pub(super) fn direct_bundles(&self, proposal: &[Change], max_history: usize) -> Vec<RevBundle> {
        proposal
            .iter()
            .filter_map(|ch| {
                let (revisions, seq) = self.revs.get(&ch.doc_id)?;
                let mut revisions = revisions.clone();
                crate::bundle::fit_history(&mut revisions, &[], max_history);
                Some(RevBundle {
                    doc_id: ch.doc_id.clone(),
                    revisions,
                    seq: *seq,
                })
            })
            .collect()
    }

    /// The peer answered a proposal: the bundles it wants, each with history reaching a
    /// revision it has, and how many it does not need (forgotten here).
    pub(super) fn answered(
        &mut self,
        docs: Vec<DocId>,
        flags: Vec<Option<Vec<RevId>>>,
        max_history: usize,
    ) -> (Vec<RevBundle>, u64) {
        let mut not_needed = 0;
        let mut bundles = Vec::new();
        for (doc_id, want) in docs.into_iter().zip(flags) {
            match (want, self.revs.get(&doc_id)) {
                (Some(known), Some((revisions, seq))) => {
                    let mut revisions = revisions.clone();
                    crate::bundle::fit_history(&mut revisions, &known, max_history);
                    let seq = *seq;
                    bundles.push(RevBundle {
                        doc_id,
                        revisions,
                        seq,
                    });
                }
                _ => {
                    self.revs.remove(&doc_id);
                    not_needed += 1;
                }
            }
        }
        (bundles, not_needed)
    }
}

#[derive(Default)]
pub(super) struct PushState {
    pub(super) cursor: ChangesCursor,
    pub(super) next_batch: u64,
    pub(super) batches: VecDeque<PushBatch>,
    /// `Revs` messages of each batch, waiting for room or in flight.
    pub(super) outbox: Outbox<u64>,
    /// Nothing is read or sent until the peer accepted this collection's pull.
    pub(super) held: bool,
}

/// The bundle to send again when the receiver answered "conflict" with a current
/// revision that is in fact an ancestor of what was pushed, beyond the trimmed
/// history. Takes the bundle out of the batch, so a document is retried at most once.
pub(super) fn retry_bundle(
    batch: &mut PushBatch,
    doc_id: &DocId,
    remote_current: &RevId,
    max_history: usize,
) -> Option<RevBundle> {
    let (revisions, _) = batch.revs.get(doc_id)?;
    if !revisions.iter().any(|r| r.history.contains(remote_current)) {
        return None;
    }
    let (mut revisions, seq) = batch.revs.remove(doc_id)?;
    crate::bundle::fit_history(&mut revisions, &[*remote_current], max_history);
    Some(RevBundle {
        doc_id: doc_id.clone(),
        revisions,
        seq,
    })
}

impl PushState {
    /// Whether anything is left to read, propose or send.
    pub(super) fn is_busy(&self) -> bool {
        self.cursor.has_more() || !self.batches.is_empty() || !self.outbox.is_empty()
    }

    /// Whether to read the next changes now (none under way, more to read, and fewer
    /// than `max_batches` batches in flight): the sequence to read after, marked as read.
    pub(super) fn next_read(&mut self, max_batches: usize) -> Option<Seq> {
        let allows = self.batches.len() < max_batches && !self.held;
        self.cursor.next_read(true, allows)
    }

    /// Opens the batch of changes up to `last_seq`; it waits for its documents' read when
    /// it has any. Returns its ID.
    pub(super) fn open_batch(&mut self, last_seq: Seq, has_documents: bool) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.push_back(PushBatch {
            id,
            last_seq,
            revs: BTreeMap::new(),
            outstanding: usize::from(has_documents),
        });
        id
    }

    /// Queues a batch's `Revs` messages (at the front: a retry goes first); the documents
    /// too large to send leave the batch.
    pub(super) fn queue_revs(
        &mut self,
        batch: u64,
        messages: Vec<RevsMessage>,
        oversized: &[Oversized],
        front: bool,
    ) {
        if let Some(b) = self.batches.iter_mut().find(|b| b.id == batch) {
            b.outstanding += messages.len();
            for o in oversized {
                b.revs.remove(&o.doc_id);
            }
        }
        self.outbox.queue(batch, messages, front);
    }

    /// Retires the finished batches at the front, in order; the last sequence retired is
    /// how far the push checkpoint may now go.
    pub(super) fn retire_finished(&mut self) -> Option<Seq> {
        let mut advanced = None;
        while self.batches.front().is_some_and(|b| b.outstanding == 0) {
            advanced = self.batches.pop_front().map(|b| b.last_seq);
        }
        advanced
    }
}

impl ActiveReplicator {
    /// Starts the next changes read if flow control allows, and sends queued revisions.
    pub(super) fn pump_push(&mut self, name: &CollectionName) {
        let limit = self.config.changes_batch;
        let max_batches = self.config.max_push_batches;
        let next = self
            .cols
            .get_mut(name)
            .and_then(|c| c.push.next_read(max_batches));
        if let Some(since) = next {
            self.op(
                StorageOp::Changes {
                    collection: name.clone(),
                    since,
                    limit,
                },
                Op::PushRead(name.clone()),
            );
        }
        self.send_queued_revs(name);
    }

    pub(super) fn push_read(&mut self, name: CollectionName, changes: Vec<Change>, now: Instant) {
        let limit = self.config.changes_batch;
        // Deep enough to reach back to whatever the receiver knows (see fit_history).
        let max_history = crate::bundle::READ_HISTORY;
        let Some(c) = self.cols.get_mut(&name) else {
            return;
        };
        let Some(last_seq) = c.push.cursor.read_done(&changes, limit) else {
            self.pump_push(&name);
            return self.update_activity(now);
        };
        let total = changes.len() as u64;
        let selected: Vec<Change> = changes
            .into_iter()
            .filter(|ch| {
                c.config
                    .doc_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&ch.doc_id))
            })
            .collect();
        let id = c.push.open_batch(last_seq, !selected.is_empty());
        self.progress(total - selected.len() as u64, total);
        if !selected.is_empty() {
            let ids = selected.iter().map(|ch| ch.doc_id.clone()).collect();
            self.op(
                StorageOp::GetLeaves {
                    collection: name.clone(),
                    ids,
                    max_history,
                },
                Op::PushLeaves {
                    collection: name.clone(),
                    batch: id,
                    changes: selected,
                },
            );
        }
        self.pump_push(&name);
        self.finish_push_batches(&name, now);
    }

    /// The documents of a push batch are read: filter them, then propose them or, for a
    /// small batch, send them at once.
    pub(super) fn push_leaves_read(
        &mut self,
        name: CollectionName,
        batch: u64,
        changes: Vec<Change>,
        leaves: Vec<Vec<Revision>>,
        now: Instant,
    ) {
        if crate::sender::deletion_vanished(&changes, &leaves) {
            let failure = crate::StorageFailure {
                message: crate::sender::DELETION_VANISHED.into(),
                transient: true,
            };
            return self.fail(ReplicationError::Storage(failure), now, true);
        }
        let direct_max = self.config.push_without_proposal;
        let max_history = self.config.max_history;
        let Some(c) = self.cols.get_mut(&name) else {
            return;
        };
        let filter = c.config.push_filter.clone();
        let Some(b) = c.push.batches.iter_mut().find(|b| b.id == batch) else {
            return;
        };
        b.outstanding -= 1;
        let (proposal, skipped) =
            b.select(&name, changes, leaves, filter.as_deref(), &c.peer_knows);
        let direct = b.goes_direct(&proposal, direct_max);
        if direct {
            let bundles = b.direct_bundles(&proposal, max_history);
            self.progress(skipped, 0);
            self.enqueue_revs(&name, batch, bundles, false);
            self.send_queued_revs(&name);
            return self.finish_push_batches(&name, now);
        }
        let budget = self.budget(self.config.changes_batch);
        let frames = crate::sender::change_messages(&name, proposal, budget);
        if let Some(b) = self
            .cols
            .get_mut(&name)
            .and_then(|c| c.push.batches.iter_mut().find(|b| b.id == batch))
        {
            b.outstanding += frames.len();
        }
        for changes in frames {
            let docs = changes.iter().map(|ch| ch.doc_id.clone()).collect();
            self.conn.request(
                Request::ProposeChanges {
                    collection: name.clone(),
                    changes,
                },
                Sent::Propose {
                    collection: name.clone(),
                    batch,
                    docs,
                },
            );
        }
        self.progress(skipped, 0);
        self.finish_push_batches(&name, now);
    }

    pub(super) fn proposal_answered(
        &mut self,
        name: &CollectionName,
        batch: u64,
        docs: Vec<DocId>,
        flags: Vec<Option<Vec<RevId>>>,
        now: Instant,
    ) {
        let max_history = self.config.max_history;
        if let Err(v) = PeerMisbehaved::check_answer_length(
            "Wanted",
            flags.len(),
            docs.len(),
            "proposed changes",
        ) {
            return self.violation(v, now);
        }
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        let Some(b) = c.push.batches.iter_mut().find(|b| b.id == batch) else {
            return;
        };
        b.outstanding -= 1;
        let (bundles, not_needed) = b.answered(docs, flags, max_history);
        self.progress(not_needed, 0);
        self.enqueue_revs(name, batch, bundles, false);
        self.send_queued_revs(name);
        self.finish_push_batches(name, now);
    }

    /// How this side cuts frames for the peer: at most `max_entries` entries, cut at
    /// [`ReplicatorConfig::message_bytes`], never over the frame limit the peer announced.
    pub(super) fn budget(&self, max_entries: usize) -> crate::sender::FrameBudget {
        let message_bytes = self.config.message_bytes;
        crate::sender::FrameBudget::new(max_entries, message_bytes, self.peer_frame_limit)
    }

    /// Queues a push batch's bundles as `Revs` messages (at the front: a retry goes
    /// first). A document too large for any message the peer accepts is reported and
    /// counted done: it is never sent, so nothing waits for it.
    pub(super) fn enqueue_revs(
        &mut self,
        name: &CollectionName,
        batch: u64,
        bundles: Vec<RevBundle>,
        front: bool,
    ) {
        let budget = self.budget(self.config.revs_per_message);
        let RevsMessages {
            messages,
            oversized,
        } = crate::sender::revs_messages(name, bundles, None, budget);
        if let Some(c) = self.cols.get_mut(name) {
            c.push.queue_revs(batch, messages, &oversized, front);
        }
        if oversized.is_empty() {
            return;
        }
        let events: Vec<DocumentEvent> = oversized
            .into_iter()
            .map(|o| crate::sender::too_large_event(name, o, Direction::Push, budget.hard_bytes))
            .collect();
        self.progress(events.len() as u64, 0);
        self.conn.event(Event::Documents(events));
    }

    /// Sends queued `Revs` messages while the byte budget allows (always at least one).
    pub(super) fn send_queued_revs(&mut self, name: &CollectionName) {
        let max_bytes = self.config.max_rev_bytes_in_flight;
        if let Some(c) = self.cols.get_mut(name) {
            c.push.outbox.flush(
                &mut self.conn,
                name,
                max_bytes,
                |batch, bytes, docs, blobs| Sent::PushRevs {
                    collection: name.clone(),
                    batch,
                    bytes,
                    docs,
                    blobs,
                },
            );
        }
    }

    pub(super) fn pushed_revs_answered(
        &mut self,
        name: &CollectionName,
        batch: u64,
        docs: Vec<(DocId, RevId, bool)>,
        statuses: Vec<RevStatus>,
        now: Instant,
    ) {
        if let Err(v) = PeerMisbehaved::check_answer_length(
            "RevStatuses",
            statuses.len(),
            docs.len(),
            "documents",
        ) {
            return self.violation(v, now);
        }
        // A conflict is resolved by pulling: the pull brings the remote revision, the
        // resolver decides, and the resolution is pushed as a new local change. One
        // exception: the receiver's current revision is an ancestor of ours that our
        // trimmed history did not reach (it changed after it answered the proposal).
        // That is no conflict, so the bundle goes again, once, with history reaching it.
        let max_history = self.config.max_history;
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        let mut batch_state = c.push.batches.iter_mut().find(|b| b.id == batch);
        let mut retries = Vec::new();
        let mut events = Vec::with_capacity(docs.len());
        for ((doc_id, rev, deleted), status) in docs.into_iter().zip(statuses) {
            if let RevStatus::Conflict { current: Some(cur) } = &status
                && let Some(b) = batch_state.as_deref_mut()
                && let Some(bundle) = retry_bundle(b, &doc_id, cur, max_history)
            {
                retries.push(bundle);
                continue;
            }
            let doc = (doc_id, rev, deleted);
            events.push(DocumentEvent::from_status(
                name,
                doc,
                Direction::Push,
                &status,
            ));
        }
        let done = events.len() as u64;
        if let Some(b) = c.push.batches.iter_mut().find(|b| b.id == batch) {
            b.outstanding -= 1;
        }
        if !events.is_empty() {
            self.conn.event(Event::Documents(events));
        }
        self.progress(done, 0);
        if !retries.is_empty() {
            self.enqueue_revs(name, batch, retries, true);
        }
        self.send_queued_revs(name);
        self.finish_push_batches(name, now);
    }

    /// Retires finished batches in order, advancing the push checkpoint.
    pub(super) fn finish_push_batches(&mut self, name: &CollectionName, now: Instant) {
        let advanced = self
            .cols
            .get_mut(name)
            .and_then(|c| c.push.retire_finished());
        if let Some(seq) = advanced {
            self.progress_cp
                .collections
                .entry(name.clone())
                .or_default()
                .push = seq;
            self.pump_push(name);
        }
        self.update_activity(now);
    }
}
