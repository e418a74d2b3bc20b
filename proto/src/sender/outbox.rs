//! `Revs` messages on their way out: queued until the window of bytes in flight has
//! room, counted until answered.

use std::collections::{BTreeMap, VecDeque};

use crate::conn::Conn;
use crate::{BlobDigest, CollectionName, DocId, Oversized, Request, RevBundle, RevId};

/// One `Revs` message ready to go.
#[derive(Debug, Default)]
pub(crate) struct RevsMessage {
    pub(crate) docs: Vec<RevBundle>,
    /// Wanted documents the sender no longer has.
    pub(crate) unavailable: Vec<DocId>,
    /// Wanted documents too large for any message the receiver accepts.
    pub(crate) oversized: Vec<Oversized>,
    /// Upper bound of its documents' encoded bytes: what the window counts.
    pub(crate) bytes: usize,
}

/// Bytes of `Revs` messages sent and not yet answered, against a limit. A sender sends
/// while there is room, and always at least one message, so a document larger than the
/// limit still goes.
#[derive(Clone, Copy, Debug, Default)]
struct ByteWindow(usize);

impl ByteWindow {
    fn has_room(&self, max: usize) -> bool {
        self.0 == 0 || self.0 < max
    }
}

/// A sender's `Revs` messages: those waiting for room, each with a `K` saying what it
/// belongs to (the active side's push batch), the window of those in flight, and the
/// blobs they refer to — which the receiver may fetch until it answers them, and no
/// other blob.
#[derive(Debug)]
pub(crate) struct Outbox<K> {
    queue: VecDeque<(K, RevsMessage)>,
    in_flight: ByteWindow,
    /// Blobs that messages in flight refer to, with how many messages refer to each.
    offered: BTreeMap<BlobDigest, usize>,
}

impl<K> Default for Outbox<K> {
    fn default() -> Self {
        Outbox {
            queue: VecDeque::new(),
            in_flight: ByteWindow::default(),
            offered: BTreeMap::new(),
        }
    }
}

impl<K: Copy> Outbox<K> {
    /// Queues `messages` of `key`, after those waiting, or before them (`front`: a
    /// retry goes first).
    pub(crate) fn queue(&mut self, key: K, messages: Vec<RevsMessage>, front: bool) {
        if front {
            for m in messages.into_iter().rev() {
                self.queue.push_front((key, m));
            }
        } else {
            self.queue.extend(messages.into_iter().map(|m| (key, m)));
        }
    }

    /// Whether no message waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether nothing waits and another message could go with `max_bytes` allowed in
    /// flight: when to prepare more.
    pub(crate) fn ready_for_more(&self, max_bytes: usize) -> bool {
        self.queue.is_empty() && self.in_flight.has_room(max_bytes)
    }

    /// A message of `bytes` referring to `blobs` was answered: they are no longer offered.
    pub(crate) fn answered(&mut self, bytes: usize, blobs: &[BlobDigest]) {
        self.in_flight.0 = self.in_flight.0.saturating_sub(bytes);
        for digest in blobs {
            if let Some(n) = self.offered.get_mut(digest) {
                *n -= 1;
                if *n == 0 {
                    self.offered.remove(digest);
                }
            }
        }
    }

    /// Whether a message in flight refers to blob `digest`.
    pub(crate) fn offers(&self, digest: &BlobDigest) -> bool {
        self.offered.contains_key(digest)
    }

    /// Sends queued messages in `collection` while the window of `max_bytes` has room;
    /// `sent` makes what each request is remembered by from its key, its bytes, its
    /// documents' [`summary`](super::summary) and the blobs it refers to.
    pub(crate) fn flush<S, O>(
        &mut self,
        conn: &mut Conn<S, O>,
        collection: &CollectionName,
        max_bytes: usize,
        mut sent: impl FnMut(K, usize, Vec<(DocId, RevId, bool)>, Vec<BlobDigest>) -> S,
    ) {
        while self.in_flight.has_room(max_bytes) {
            let Some((key, message)) = self.queue.pop_front() else {
                return;
            };
            let RevsMessage {
                docs,
                unavailable,
                oversized,
                bytes,
            } = message;
            self.in_flight.0 += bytes;
            let summary = super::summary(&docs);
            let blobs = blobs_of(&docs);
            for digest in &blobs {
                *self.offered.entry(*digest).or_default() += 1;
            }
            let request = Request::Revs {
                collection: collection.clone(),
                docs,
                unavailable,
                oversized,
            };
            conn.request(request, sent(key, bytes, summary, blobs));
        }
    }
}

/// The blobs the revisions of `docs` refer to, once each.
fn blobs_of(docs: &[RevBundle]) -> Vec<BlobDigest> {
    let mut blobs: Vec<BlobDigest> = docs
        .iter()
        .flat_map(|d| &d.revisions)
        .filter(|r| !r.deleted)
        .flat_map(|r| r.body.blobs().unwrap_or_default())
        .map(|b| b.digest)
        .collect();
    blobs.sort_unstable();
    blobs.dedup();
    blobs
}
