//! What the active machine waits for: its requests awaiting an answer, its storage
//! operations awaiting a reply, and how blob fetching names both.

use super::*;

/// Our requests awaiting an answer.
pub(super) enum Sent {
    Hello,
    GetCheckpoint,
    SetCheckpoint,
    SubChanges(CollectionName),
    Propose {
        collection: CollectionName,
        batch: u64,
        docs: Vec<DocId>,
    },
    PushRevs {
        collection: CollectionName,
        batch: u64,
        bytes: usize,
        docs: Vec<(DocId, RevId, bool)>,
        /// The blobs it refers to, offered until it is answered.
        blobs: Vec<BlobDigest>,
    },
    Ping,
    GetBlob(BlobAsk),
}

impl Sent {
    /// The name of the request it is.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Sent::Hello => "Hello",
            Sent::GetCheckpoint => "GetCheckpoint",
            Sent::SetCheckpoint => "SetCheckpoint",
            Sent::SubChanges(_) => "SubChanges",
            Sent::Propose { .. } => "ProposeChanges",
            Sent::PushRevs { .. } => "Revs",
            Sent::Ping => "Ping",
            Sent::GetBlob { .. } => "GetBlob",
        }
    }
}

/// Storage operations awaiting a reply (tagged with the connection epoch).
pub(super) enum Op {
    LoadLocalCheckpoint,
    SaveLocalCheckpoint,
    /// Whether this side's feed still holds every deletion after where it last pushed.
    PushCheck(CollectionName),
    PushRead(CollectionName),
    PushLeaves {
        collection: CollectionName,
        batch: u64,
        changes: Vec<Change>,
    },
    PullDiff(PullDiff),
    PullInsert {
        request: RequestNumber,
        /// Each document inserted: its index in the request, ID and pulled revisions.
        bundles: Vec<(usize, DocId, Vec<Revision>)>,
    },
    ResolveRead(Resolving),
    /// The write holds a resolution (`true`), or just the remote revision.
    ResolveWrite(Resolving, bool),
    Blob(BlobOp),
}

/// The active side's names for fetching blobs, in connection `epoch`.
pub(super) struct ActiveFetch {
    pub(super) epoch: u64,
}

impl FetchKinds<Sent, (u64, Op)> for ActiveFetch {
    fn sent(&self, ask: BlobAsk) -> Sent {
        Sent::GetBlob(ask)
    }
    fn op(&self, op: BlobOp) -> (u64, Op) {
        (self.epoch, Op::Blob(op))
    }
    fn insert(&self, request: RequestNumber, index: usize, insert: &RevisionInsert) -> (u64, Op) {
        let bundle = (index, insert.doc_id.clone(), insert.revisions.clone());
        let bundles = vec![bundle];
        (self.epoch, Op::PullInsert { request, bundles })
    }
}
