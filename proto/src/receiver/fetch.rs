//! Fetching the blobs received revisions refer to, before they are stored: each blob
//! once however many documents wait for it, in chunks asked of the sender
//! ([`Request::GetBlob`](crate::Request::GetBlob)) within a window, written in order
//! through the store ([`StorageOp::WriteBlob`](crate::StorageOp::WriteBlob)), which checks
//! the whole against its digest before it becomes visible.
//!
//! Memory stays bounded whatever the blobs' sizes: at most [`BLOBS_AT_ONCE`] blobs are
//! fetched at a time, sharing [`CHUNKS_IN_FLIGHT`] chunks asked for or waiting to be
//! written (4 MiB) — which also keeps the requests the sender must answer at once well
//! under its limit. Each chunk is its own frame, so document messages on the same
//! connection pass between them. A transfer cut by a dropped connection is suspended
//! ([`StorageOp::SuspendBlob`](crate::StorageOp::SuspendBlob)), and the next connection
//! that needs the blob asks only for the bytes after the ones the store kept.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::{Blob, BlobDigest, BlobTransfer, PeerMisbehaved, RequestNumber};

/// Bytes of a blob asked of the peer: `max` of them from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobAsk {
    pub(crate) digest: BlobDigest,
    pub(crate) offset: u64,
    pub(crate) max: u32,
}

/// Largest chunk asked for.
pub(crate) const CHUNK_BYTES: u32 = 256 << 10;
/// Chunks asked for and not yet written, at most, all blobs together.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 16;
/// Blobs fetched at once, at most.
pub(crate) const BLOBS_AT_ONCE: usize = 4;

/// A document waiting for blobs: the `Revs` request it came in, and its index there.
pub(crate) type Waiter = (RequestNumber, usize);

/// What the machine does next for its fetches, in order.
#[derive(Debug)]
pub(crate) enum FetchStep {
    /// Ask the store to begin writing `blob`.
    Begin(Blob),
    /// Ask the peer for bytes of a blob.
    Request(BlobAsk),
    /// Hand the store the next bytes of a blob.
    Write {
        digest: BlobDigest,
        transfer: BlobTransfer,
        bytes: Bytes,
    },
    /// Tell the store to drop a transfer.
    Abandon(BlobTransfer),
    /// A blob is here (`Ok`) or will not come (`Err` with the reason): the documents
    /// waiting for it go on.
    Done {
        waiters: Vec<Waiter>,
        result: Result<(), String>,
    },
}

/// One blob being fetched.
#[derive(Debug)]
struct Fetch {
    blob: Blob,
    transfer: Option<BlobTransfer>,
    /// Bytes asked for so far.
    requested: u64,
    /// Bytes written so far.
    written: u64,
    /// Chunks received and not written yet, by offset.
    arrived: BTreeMap<u64, Bytes>,
    /// The length of the chunk being written, if one is.
    writing: Option<u64>,
    /// Chunks asked for and not received yet.
    in_flight: usize,
    /// Whether the store held the first bytes from a transfer cut earlier, perhaps from
    /// another peer: a mismatch then does not prove this peer wrong.
    resumed: bool,
}

/// The blobs a receiver fetches.
#[derive(Debug)]
pub(crate) struct Fetches {
    active: BTreeMap<BlobDigest, Fetch>,
    queued: VecDeque<Blob>,
    waiters: BTreeMap<BlobDigest, Vec<Waiter>>,
    steps: VecDeque<FetchStep>,
    chunk: u32,
}

impl Default for Fetches {
    fn default() -> Self {
        Fetches {
            active: BTreeMap::new(),
            queued: VecDeque::new(),
            waiters: BTreeMap::new(),
            steps: VecDeque::new(),
            chunk: CHUNK_BYTES,
        }
    }
}

impl Fetches {
    /// Asks for chunks that fit frames of `peer_limit` bytes.
    pub(crate) fn set_peer_limit(&mut self, peer_limit: usize) {
        let room = peer_limit.saturating_sub(1024).max(1024);
        self.chunk = CHUNK_BYTES.min(u32::try_from(room).unwrap_or(u32::MAX));
    }

    /// `waiter` needs `blob`: fetch it, unless it is already on its way.
    pub(crate) fn want(&mut self, blob: Blob, waiter: Waiter) {
        let waiting = self.waiters.entry(blob.digest).or_default();
        let new = waiting.is_empty();
        waiting.push(waiter);
        if new {
            self.queued.push_back(blob);
            self.start();
        }
    }

    /// The store began writing `digest`, holding its first `resume_at` bytes already.
    pub(crate) fn begun(&mut self, digest: BlobDigest, transfer: BlobTransfer, resume_at: u64) {
        let Some(f) = self.active.get_mut(&digest) else {
            return self.steps.push_back(FetchStep::Abandon(transfer));
        };
        f.transfer = Some(transfer);
        // A store that claims the whole blob or more is wrong; fetch it all then, and
        // the digest check decides.
        let resume_at = if resume_at < f.blob.length {
            resume_at
        } else {
            0
        };
        f.requested = resume_at;
        f.written = resume_at;
        f.resumed = resume_at > 0;
        if f.blob.length == 0 {
            f.writing = Some(0);
            self.steps.push_back(FetchStep::Write {
                digest,
                transfer,
                bytes: Bytes::new(),
            });
        }
        self.request_more(digest);
    }

    /// The store refused `digest` before any byte: larger than its limit of `max`.
    pub(crate) fn too_large(&mut self, digest: BlobDigest, max: u64) {
        let length = self.active.get(&digest).map_or(0, |f| f.blob.length);
        let reason =
            format!("blob {digest} has {length} bytes, over the receiver's limit of {max}");
        self.finish(digest, Err(reason));
    }

    /// The peer answered `ask`.
    pub(crate) fn arrived(&mut self, ask: BlobAsk, bytes: Bytes) -> Result<(), PeerMisbehaved> {
        let BlobAsk {
            digest,
            offset,
            max,
        } = ask;
        if bytes.len() != max as usize {
            return Err(PeerMisbehaved::BlobChunkLength {
                digest,
                asked: max,
                got: bytes.len(),
            });
        }
        let Some(f) = self.active.get_mut(&digest) else {
            return Ok(()); // Abandoned meanwhile.
        };
        f.in_flight = f.in_flight.saturating_sub(1);
        f.arrived.insert(offset, bytes);
        self.write_next(digest);
        Ok(())
    }

    /// The peer cannot send `digest` (it answered the request with an error).
    pub(crate) fn refused(&mut self, digest: BlobDigest, reason: String) {
        self.finish(digest, Err(reason));
    }

    /// The store wrote the last chunk handed to it; `complete` once the blob is whole,
    /// verified and visible.
    pub(crate) fn written(&mut self, digest: BlobDigest, complete: bool) {
        let Some(f) = self.active.get_mut(&digest) else {
            return;
        };
        f.written += f.writing.take().unwrap_or(0);
        if complete {
            f.transfer = None;
            return self.finish(digest, Ok(()));
        }
        self.write_next(digest);
        self.request_all();
    }

    /// The bytes written for `digest` do not match it (the store dropped them). If this
    /// peer sent them all, it misbehaved; if the transfer resumed bytes kept from an
    /// earlier one, the fault may be theirs: fetch the whole blob again from this peer.
    pub(crate) fn mismatch(&mut self, digest: BlobDigest) -> Option<PeerMisbehaved> {
        let f = self.active.get_mut(&digest)?;
        f.transfer = None;
        if f.resumed {
            // Every chunk was written (the digest is checked at the last one), so none
            // is in flight.
            f.resumed = false;
            f.requested = 0;
            f.written = 0;
            f.arrived.clear();
            f.writing = None;
            self.steps.push_back(FetchStep::Begin(f.blob.clone()));
            return None;
        }
        self.finish(digest, Err(format!("blob {digest} arrived corrupted")));
        Some(PeerMisbehaved::BlobMismatch(digest))
    }

    /// The connection ended: every waiter is forgotten; returns the transfers under way,
    /// to suspend so that a later connection resumes them.
    pub(crate) fn reset(&mut self) -> Vec<BlobTransfer> {
        let transfers = self.active.values().filter_map(|f| f.transfer).collect();
        let chunk = self.chunk;
        *self = Fetches::default();
        self.chunk = chunk;
        transfers
    }

    /// The next step, until `None`.
    pub(crate) fn poll(&mut self) -> Option<FetchStep> {
        self.steps.pop_front()
    }

    fn start(&mut self) {
        while self.active.len() < BLOBS_AT_ONCE {
            let Some(blob) = self.queued.pop_front() else {
                return;
            };
            self.steps.push_back(FetchStep::Begin(blob.clone()));
            let fetch = Fetch {
                blob: blob.clone(),
                transfer: None,
                requested: 0,
                written: 0,
                arrived: BTreeMap::new(),
                writing: None,
                in_flight: 0,
                resumed: false,
            };
            self.active.insert(blob.digest, fetch);
        }
    }

    /// Asks for more of every blob being fetched, oldest first, while the window allows.
    fn request_all(&mut self) {
        let digests: Vec<BlobDigest> = self.active.keys().copied().collect();
        for digest in digests {
            self.request_more(digest);
        }
    }

    fn request_more(&mut self, digest: BlobDigest) {
        let chunk = u64::from(self.chunk);
        let mut used: usize = self
            .active
            .values()
            .map(|f| f.in_flight + f.arrived.len() + usize::from(f.writing.is_some()))
            .sum();
        let Some(f) = self.active.get_mut(&digest) else {
            return;
        };
        if f.transfer.is_none() {
            return;
        }
        while used < CHUNKS_IN_FLIGHT && f.requested < f.blob.length {
            used += 1;
            let max = chunk.min(f.blob.length - f.requested);
            self.steps.push_back(FetchStep::Request(BlobAsk {
                digest,
                offset: f.requested,
                max: max as u32,
            }));
            f.requested += max;
            f.in_flight += 1;
        }
    }

    fn write_next(&mut self, digest: BlobDigest) {
        let Some(f) = self.active.get_mut(&digest) else {
            return;
        };
        let (Some(transfer), None) = (f.transfer, f.writing) else {
            return;
        };
        if let Some(bytes) = f.arrived.remove(&f.written) {
            f.writing = Some(bytes.len() as u64);
            self.steps.push_back(FetchStep::Write {
                digest,
                transfer,
                bytes,
            });
        }
    }

    fn finish(&mut self, digest: BlobDigest, result: Result<(), String>) {
        if let Some(f) = self.active.remove(&digest)
            && let Some(t) = f.transfer
        {
            self.steps.push_back(FetchStep::Abandon(t));
        }
        self.queued.retain(|b| b.digest != digest);
        let waiters = self.waiters.remove(&digest).unwrap_or_default();
        self.steps.push_back(FetchStep::Done { waiters, result });
        self.start();
        self.request_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(tag: u8, length: u64) -> Blob {
        Blob::new(BlobDigest::of(&[tag]), length, None)
    }

    /// Plays the store and the sender: begins every blob, answers requests and writes in
    /// order; returns the most chunks ever outstanding and the documents released.
    fn run(f: &mut Fetches) -> (usize, Vec<(Waiter, bool)>) {
        let (mut outstanding, mut most, mut done) = (0usize, 0, Vec::new());
        let mut pending = VecDeque::new();
        let mut transfer = 0;
        loop {
            while let Some(step) = f.poll() {
                pending.push_back(step);
            }
            let Some(step) = pending.pop_front() else {
                return (most, done);
            };
            match step {
                FetchStep::Begin(b) => {
                    transfer += 1;
                    f.begun(b.digest, BlobTransfer(transfer), 0);
                }
                FetchStep::Request(ask) => {
                    outstanding += 1;
                    most = most.max(outstanding);
                    let bytes = Bytes::from(vec![0u8; ask.max as usize]);
                    f.arrived(ask, bytes).unwrap();
                }
                FetchStep::Write { digest, bytes, .. } => {
                    outstanding = outstanding.saturating_sub(usize::from(!bytes.is_empty()));
                    let length = f.active.get(&digest).map(|a| a.blob.length).unwrap();
                    let written = f.active.get(&digest).map(|a| a.written).unwrap();
                    f.written(digest, written + bytes.len() as u64 == length);
                }
                FetchStep::Abandon(_) => {}
                FetchStep::Done { waiters, result } => {
                    done.extend(waiters.into_iter().map(|w| (w, result.is_ok())))
                }
            }
        }
    }

    #[test]
    fn blobs_share_one_window_and_each_completes_once() {
        let mut f = Fetches::default();
        for tag in 0..6u8 {
            // Two documents wait for each blob; it is fetched once.
            f.want(blob(tag, 3 << 20), (1, usize::from(tag)));
            f.want(blob(tag, 3 << 20), (2, usize::from(tag)));
        }
        f.want(blob(9, 0), (3, 0));
        let (most, mut done) = run(&mut f);
        assert!(most <= CHUNKS_IN_FLIGHT, "{most} chunks outstanding");
        assert_eq!(most, CHUNKS_IN_FLIGHT);
        done.sort();
        assert_eq!(done.len(), 13);
        assert!(done.iter().all(|(_, ok)| *ok));
        assert!(f.active.is_empty() && f.queued.is_empty() && f.waiters.is_empty());
    }

    #[test]
    fn a_resumed_transfer_asks_only_for_the_rest() {
        let mut f = Fetches::default();
        let b = blob(1, 1 << 20);
        f.want(b.clone(), (1, 0));
        assert!(matches!(f.poll(), Some(FetchStep::Begin(_))));
        f.begun(b.digest, BlobTransfer(1), 700 << 10);
        let mut asked = Vec::new();
        while let Some(FetchStep::Request(ask)) = f.poll() {
            asked.push((ask.offset, ask.max));
        }
        assert_eq!(asked, [(700 << 10, 256 << 10), (956 << 10, 68 << 10)]);
    }

    #[test]
    fn a_mismatch_after_resuming_fetches_the_whole_blob_again_without_blaming_the_peer() {
        let mut f = Fetches::default();
        let b = blob(1, 1000);
        f.want(b.clone(), (1, 0));
        let _ = f.poll();
        f.begun(b.digest, BlobTransfer(1), 600);
        let Some(FetchStep::Request(ask)) = f.poll() else {
            panic!("a request");
        };
        f.arrived(ask, Bytes::from(vec![0u8; 400])).unwrap();
        assert!(matches!(f.poll(), Some(FetchStep::Write { .. })));
        assert_eq!(f.mismatch(b.digest), None);
        // Begun again; the store kept nothing, so all of it is asked for.
        let Some(FetchStep::Begin(again)) = f.poll() else {
            panic!("begun again");
        };
        f.begun(again.digest, BlobTransfer(2), 0);
        let Some(FetchStep::Request(ask)) = f.poll() else {
            panic!("a request");
        };
        assert_eq!((ask.offset, ask.max), (0, 1000));
        f.arrived(ask, Bytes::from(vec![1u8; 1000])).unwrap();
        assert!(matches!(f.poll(), Some(FetchStep::Write { .. })));
        // Every byte came from this peer now: a mismatch is its fault.
        assert_eq!(
            f.mismatch(b.digest),
            Some(PeerMisbehaved::BlobMismatch(b.digest))
        );
        assert!(matches!(
            f.poll(),
            Some(FetchStep::Done { result: Err(_), .. })
        ));
    }

    #[test]
    fn a_store_claiming_the_whole_blob_already_gets_all_of_it_again() {
        let mut f = Fetches::default();
        let b = blob(1, 1000);
        f.want(b.clone(), (1, 0));
        let _ = f.poll();
        f.begun(b.digest, BlobTransfer(1), 5000);
        let Some(FetchStep::Request(ask)) = f.poll() else {
            panic!("a request");
        };
        assert_eq!((ask.offset, ask.max), (0, 1000));
    }

    #[test]
    fn chunks_fit_the_peers_frames() {
        let mut f = Fetches::default();
        f.set_peer_limit(64 << 10);
        f.want(blob(1, 1 << 20), (1, 0));
        let _ = f.poll();
        f.begun(BlobDigest::of(&[1]), BlobTransfer(1), 0);
        let Some(FetchStep::Request(ask)) = f.poll() else {
            panic!("a request");
        };
        assert_eq!(ask.max, (64 << 10) - 1024);
    }
}
