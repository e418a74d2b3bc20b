//! The changes feed: reading the store in batches for a subscribed collection, sending
//! `Changes` and the wanted revisions in messages cut by bytes, within the changes and
//! bytes-in-flight windows, one-shot or continuous.

use super::*;
use crate::sender::{ChangesCursor, Outbox, RevsMessages};

/// One subscribed changes feed.
pub(super) struct Feed {
    pub(super) cursor: ChangesCursor,
    pub(super) continuous: bool,
    pub(super) doc_ids: Option<BTreeSet<DocId>>,
    /// Changes were sent since the last caught-up marker (or none was ever sent).
    pub(super) marker_due: bool,
    pub(super) changes_in_flight: usize,
    /// Wanted changes whose revisions are still to be sent, with the receiver's known
    /// leaves of each document.
    pub(super) wanted: VecDeque<(Change, Vec<RevId>)>,
    pub(super) revs_reading: bool,
    pub(super) outbox: Outbox<()>,
    /// The `SubChanges` request, answered once the first read shows the feed is complete
    /// after its `since` (a store that forgot deletions after it refuses instead).
    pub(super) unanswered: Option<RequestNumber>,
}

impl Feed {
    /// A feed of the changes after `since`, of the documents `doc_ids` (all if `None`).
    pub(super) fn new(
        request: RequestNumber,
        since: Seq,
        continuous: bool,
        doc_ids: Option<BTreeSet<DocId>>,
    ) -> Feed {
        Feed {
            unanswered: Some(request),
            cursor: ChangesCursor::new(since),
            continuous,
            doc_ids,
            marker_due: true,
            changes_in_flight: 0,
            wanted: VecDeque::new(),
            revs_reading: false,
            outbox: Outbox::default(),
        }
    }

    /// The next wanted documents to read and send, when none are being read and the
    /// outbox is ready for more within `max_bytes_in_flight`: at most `per_message`,
    /// marked as being read.
    pub(super) fn next_wanted(
        &mut self,
        per_message: usize,
        max_bytes_in_flight: usize,
    ) -> Option<Vec<(Change, Vec<RevId>)>> {
        if self.revs_reading
            || self.wanted.is_empty()
            || !self.outbox.ready_for_more(max_bytes_in_flight)
        {
            return None;
        }
        self.revs_reading = true;
        let take = self.wanted.len().min(per_message);
        Some(self.wanted.drain(..take).collect())
    }

    /// Whether to read the next changes now (none under way, more to read, the wanted
    /// backlog small and fewer than `max_in_flight` batches unanswered): the sequence to
    /// read after, marked as read.
    pub(super) fn next_read(&mut self, batch: usize, max_in_flight: usize) -> Option<Seq> {
        let allows = self.wanted.len() < 2 * batch && self.changes_in_flight < max_in_flight;
        self.cursor.next_read(self.continuous, allows)
    }
}

impl PassivePeer {
    pub(super) fn feed_read(&mut self, collection: CollectionName, changes: Vec<Change>) {
        let limit = self.config.changes_batch;
        let Some(f) = self.feeds.get_mut(&collection) else {
            return;
        };
        if let Some(n) = f.unanswered.take() {
            self.conn.respond(n, Response::Ok);
        }
        let Some(f) = self.feeds.get_mut(&collection) else {
            return;
        };
        f.cursor.read_done(&changes, limit);
        let pushed = self.pushed.get(&collection);
        let selected: Vec<Change> = changes
            .into_iter()
            .filter(|c| f.doc_ids.as_ref().is_none_or(|ids| ids.contains(&c.doc_id)))
            .filter(|c| pushed.is_none_or(|p| !p.peer_has(&c.doc_id, &c.rev, &c.other_leaves)))
            .collect();
        let mut batches = Vec::new();
        if !selected.is_empty() {
            f.marker_due = true;
            batches.push(selected);
        }
        if f.cursor.at_end() && f.marker_due {
            f.marker_due = false;
            batches.push(Vec::new()); // caught up
        }
        let budget = self.budget(self.config.changes_batch);
        let batches: Vec<Vec<Change>> = batches
            .into_iter()
            .flat_map(|changes| match changes.is_empty() {
                true => vec![changes],
                false => crate::sender::change_messages(&collection, changes, budget),
            })
            .collect();
        let Some(f) = self.feeds.get_mut(&collection) else {
            return;
        };
        f.changes_in_flight += batches.len();
        for changes in batches {
            self.conn.request(
                Request::Changes {
                    collection: collection.clone(),
                    changes: changes.clone(),
                },
                Sent::Changes {
                    collection: collection.clone(),
                    changes,
                },
            );
        }
        self.pump(&collection);
    }

    /// The store forgot deletions after where the feed reads: refuse the subscription if
    /// it is not answered yet (the replicator stops and says why), else end the
    /// connection (the replicator's next attempt is refused the same way).
    pub(super) fn feed_forgotten(&mut self, collection: CollectionName, through: Seq) {
        let Some(f) = self.feeds.remove(&collection) else {
            return;
        };
        let message = format!(
            "the changes of {collection} after sequence {} are no longer complete here: tombstones up to sequence {through} were forgotten after their retention",
            f.cursor.since()
        );
        match f.unanswered {
            Some(n) => self
                .conn
                .respond_error(n, ErrorBody::with_code(Code::Gone, message)),
            None => self.close(CloseCode::PolicyViolation, message),
        }
    }

    pub(super) fn send_revs(
        &mut self,
        collection: CollectionName,
        changes: Vec<(Change, Vec<RevId>)>,
        leaves: Vec<Vec<Revision>>,
    ) {
        if crate::sender::deletion_vanished(changes.iter().map(|(c, _)| c), &leaves) {
            return self.close(CloseCode::PolicyViolation, crate::sender::DELETION_VANISHED);
        }
        let max_history = self.config.max_history;
        let mut docs = Vec::new();
        let mut unavailable = Vec::new();
        for ((change, known), leaves) in changes
            .into_iter()
            .zip(leaves.into_iter().chain(std::iter::repeat_with(Vec::new)))
        {
            match crate::bundle_from_leaves(leaves, &change.rev) {
                Some(mut revisions) => {
                    crate::bundle::fit_history(&mut revisions, &known, max_history);
                    docs.push(RevBundle {
                        doc_id: change.doc_id,
                        revisions,
                        seq: change.seq,
                    })
                }
                None => unavailable.push(change.doc_id),
            }
        }
        let budget = self.budget(self.config.revs_per_message);
        let RevsMessages {
            messages,
            oversized,
        } = crate::sender::revs_messages(&collection, docs, Some(unavailable), budget);
        if !oversized.is_empty() {
            let events = oversized
                .into_iter()
                .map(|o| {
                    crate::sender::too_large_event(
                        &collection,
                        o,
                        Direction::Pull,
                        budget.hard_bytes,
                    )
                })
                .collect();
            self.conn.event(Event::Documents(events));
        }
        if let Some(f) = self.feeds.get_mut(&collection) {
            f.revs_reading = false;
            f.outbox.queue((), messages, false);
        }
        self.pump(&collection);
    }

    /// How this side cuts frames for the peer: at most `max_entries` entries, cut at
    /// [`PassiveConfig::message_bytes`], never over the frame limit the peer announced.
    pub(super) fn budget(&self, max_entries: usize) -> crate::sender::FrameBudget {
        let peer_limit = self
            .hello
            .as_ref()
            .map_or(FrameLimits::DEFAULT.max_frame_bytes, Hello::frame_limit);
        crate::sender::FrameBudget::new(max_entries, self.config.message_bytes, peer_limit)
    }

    /// Sends what the window allows and starts whatever storage reads the feed's flow
    /// control allows.
    pub(super) fn pump(&mut self, collection: &CollectionName) {
        if self.phase != Phase::Open {
            return;
        }
        let config = &self.config;
        let Some(f) = self.feeds.get_mut(collection) else {
            return;
        };
        let max_bytes = config.max_rev_bytes_in_flight;
        f.outbox.flush(
            &mut self.conn,
            collection,
            max_bytes,
            |(), bytes, docs, blobs| Sent::Revs {
                collection: collection.clone(),
                bytes,
                docs,
                blobs,
            },
        );
        if let Some(changes) =
            f.next_wanted(config.revs_per_message, config.max_rev_bytes_in_flight)
        {
            let ids = changes.iter().map(|(c, _)| c.doc_id.clone()).collect();
            self.conn.storage(
                StorageOp::GetLeaves {
                    collection: collection.clone(),
                    ids,
                    max_history: crate::bundle::READ_HISTORY,
                },
                Op::ReadRevs {
                    collection: collection.clone(),
                    changes,
                },
            );
        }
        let Some(f) = self.feeds.get_mut(collection) else {
            return;
        };
        if let Some(since) = f.next_read(config.changes_batch, config.max_changes_in_flight) {
            self.conn.storage(
                StorageOp::Changes {
                    collection: collection.clone(),
                    since,
                    limit: config.changes_batch,
                },
                Op::FeedRead(collection.clone()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use crate::{
        Change, CloseCode, CloseReason, Code, CollectionName, Frame, Hello, Input, OpId, Output,
        PROTOCOL_VERSION, PassiveConfig, PassivePeer, Principal, Request, Response, Seq, StorageOp,
        StorageReply,
    };

    fn request(n: u64, request: Request) -> Input {
        Input::Frame(Frame::Request(n, request).encode())
    }

    /// Everything the machine wants done now: frames sent, storage operations, closes.
    fn drain(p: &mut PassivePeer) -> (Vec<Frame>, Vec<(OpId, StorageOp)>, Vec<CloseReason>) {
        let (mut frames, mut ops, mut closes) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(out) = p.poll_output() {
            match out {
                Output::Send(bytes) => frames.push(decode(&bytes)),
                Output::Storage(id, op) => ops.push((id, op)),
                Output::Close(reason) => closes.push(reason),
                _ => {}
            }
        }
        (frames, ops, closes)
    }

    fn decode(bytes: &Bytes) -> Frame {
        Frame::decode(bytes, &crate::FrameLimits::DEFAULT).expect("a frame")
    }

    fn subscribe(n: u64, since: u64, continuous: bool) -> Input {
        request(
            n,
            Request::SubChanges {
                collection: CollectionName::default(),
                since: Seq(since),
                continuous,
                doc_ids: None,
            },
        )
    }

    #[test]
    fn a_pull_behind_forgotten_deletions_is_refused_and_one_that_falls_behind_is_closed() {
        #[allow(clippy::disallowed_methods)] // a test is its own runtime
        let now = Instant::now();
        let mut p = PassivePeer::new(PassiveConfig::default(), Principal::default(), now);
        let hello = Hello {
            versions: vec![PROTOCOL_VERSION],
            collections: vec![CollectionName::default()],
            push: true,
            pull: true,
            max_frame_bytes: None,
        };
        p.handle_input(request(1, Request::Hello(hello)), now)
            .unwrap();
        drain(&mut p);

        // Not answered before the first read; refused with 410 when the store says the
        // feed after `since` lost deletions.
        p.handle_input(subscribe(2, 5, false), now).unwrap();
        let (frames, ops, _) = drain(&mut p);
        assert!(frames.is_empty(), "answered before reading: {frames:?}");
        let [(id, StorageOp::Changes { since, .. })] = &ops[..] else {
            panic!("{ops:?}")
        };
        assert_eq!(*since, Seq(5));
        let reply = StorageReply::DeletionsForgotten { through: Seq(9) };
        p.handle_input(Input::Storage(*id, reply), now).unwrap();
        let (frames, ops, closes) = drain(&mut p);
        assert!(ops.is_empty() && closes.is_empty());
        let [Frame::Error(2, error)] = &frames[..] else {
            panic!("{frames:?}")
        };
        assert_eq!(error.kind(), Some(Code::Gone));
        assert!(
            error.message.contains("after sequence 5")
                && error.message.contains("up to sequence 9"),
            "{}",
            error.message
        );

        // The peer may subscribe again from a complete position: answered after the
        // read, then the caught-up marker. If the store forgets deletions ahead of the
        // live feed, the connection ends (its next attempt is refused as above).
        p.handle_input(subscribe(3, 9, true), now).unwrap();
        let (_, ops, _) = drain(&mut p);
        let [(id, _)] = &ops[..] else {
            panic!("{ops:?}")
        };
        let empty: Vec<Change> = Vec::new();
        p.handle_input(Input::Storage(*id, StorageReply::Changes(empty)), now)
            .unwrap();
        let (frames, _, _) = drain(&mut p);
        assert!(
            matches!(frames.first(), Some(Frame::Response(3, Response::Ok))),
            "{frames:?}"
        );
        p.handle_input(Input::LocalChange(CollectionName::default(), Seq(12)), now)
            .unwrap();
        let (_, ops, _) = drain(&mut p);
        let [(id, StorageOp::Changes { .. })] = &ops[..] else {
            panic!("{ops:?}")
        };
        let reply = StorageReply::DeletionsForgotten { through: Seq(11) };
        p.handle_input(Input::Storage(*id, reply), now).unwrap();
        let (_, _, closes) = drain(&mut p);
        let [reason] = &closes[..] else {
            panic!("{closes:?}")
        };
        assert_eq!(reason.code, CloseCode::PolicyViolation);
        assert!(
            reason.message.contains("up to sequence 11"),
            "{}",
            reason.message
        );
    }
}
