//! The storage contract: the operations the replication state machines ask a store to
//! run, and the replies they expect.
//!
//! A state machine emits `Output::Storage(id, op)`; the runtime runs `op` against its
//! store (`peerlite_storage::Database::execute` does exactly this) and feeds the reply back
//! as `Input::Storage(id, reply)`. Nothing that depends on a write is sent before the reply
//! to that write arrives, so an acknowledgement always follows the durable write.

use bytes::Bytes;

use crate::{CollectionName, DocId, RevId, Revision, RevisionError, Seq};

/// Identifies one storage operation of one state machine, to match its reply.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct OpId(pub u64);

/// One entry of a changes feed: a document whose latest change has sequence `seq`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// The sequence of the change.
    pub seq: Seq,
    /// The document.
    pub doc_id: DocId,
    /// Its current revision at that sequence.
    pub rev: RevId,
    /// True when that revision is a tombstone.
    pub deleted: bool,
    /// The document's other leaf revisions: branches closed by conflict resolution (or,
    /// rarely, unresolved conflicts). They travel with the document so every peer learns
    /// how each conflict was resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_leaves: Vec<RevId>,
}

/// The answer to "do you have this revision?" for one document.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RevsDiff {
    /// The revision is already here.
    Present,
    /// The revision is missing. `leaves` are the local leaf revisions of the document
    /// (empty if it does not exist).
    Missing {
        /// Local leaves, in revision order.
        leaves: Vec<RevId>,
    },
}

/// How an insert treats revisions that conflict with local ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum InsertMode {
    /// Refuse anything that would create a conflict: the insert is refused unless every
    /// live leaf of the document is an ancestor of (or equal to) one of the inserted
    /// revisions, and a deleted document may only come back through a branch that passes
    /// through a deletion that is not old shared history (a re-creation, not a concurrent
    /// edit).
    NoConflicts,
    /// Insert only if the document's current revision is still `expected` (`None`: the
    /// document does not exist); conflicts are allowed. Used to write a conflict
    /// resolution atomically with the remote revision it resolves.
    Guarded {
        /// The current revision the caller based its decision on.
        expected: Option<RevId>,
    },
}

/// One document's revisions to insert, applied atomically and in order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RevisionInsert {
    /// The document.
    pub doc_id: DocId,
    /// Revisions with their histories, oldest first.
    pub revisions: Vec<Revision>,
    /// The conflict policy.
    pub mode: InsertMode,
}

/// What happened to one [`RevisionInsert`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InsertOutcome {
    /// Stored; `rev` is the document's current revision afterwards.
    Inserted {
        /// The current revision after the insert.
        rev: RevId,
        /// True when that revision is a tombstone.
        deleted: bool,
        /// The sequence assigned to the change.
        seq: Seq,
    },
    /// Every revision was already known; nothing changed.
    AlreadyHad {
        /// The current revision (`None` only when nothing was given for a missing document).
        current: Option<RevId>,
    },
    /// Refused: it would conflict with the local revision `current` (see [`InsertMode`]).
    Conflict {
        /// The current revision (`None` if the document does not exist).
        current: Option<RevId>,
    },
    /// Refused: a revision is malformed or does not match its content.
    Invalid(RevisionError),
    /// Refused: revisions refer to blobs this store does not hold (or holds with another
    /// length), listed once each. Nothing was stored for the document: a receiver fetches
    /// them from the sender ([`StorageOp::BeginBlob`]) and inserts again.
    MissingBlobs(Vec<crate::Blob>),
}

/// A blob being written through [`StorageOp::BeginBlob`] and [`StorageOp::WriteBlob`],
/// numbered by the store.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct BlobTransfer(pub u64);

/// An operation for the store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum StorageOp {
    /// Read a local (non-replicated) document. Reply: [`StorageReply::Local`].
    GetLocal {
        /// Its ID.
        id: String,
    },
    /// Write a local document durably. Reply: [`StorageReply::Done`].
    PutLocal {
        /// Its ID.
        id: String,
        /// Its content.
        value: Bytes,
    },
    /// Up to `limit` changes after `since`. Reply: [`StorageReply::Changes`], or
    /// [`StorageReply::DeletionsForgotten`] if deletions after `since` were forgotten.
    Changes {
        /// The collection.
        collection: CollectionName,
        /// Exclusive start.
        since: Seq,
        /// Maximum entries.
        limit: usize,
    },
    /// Which of these revisions are missing. Reply: [`StorageReply::RevsDiff`].
    RevsDiff {
        /// The collection.
        collection: CollectionName,
        /// Document and revision pairs.
        revs: Vec<(DocId, RevId)>,
    },
    /// Read these revisions with up to `max_history` ancestors each. Reply:
    /// [`StorageReply::Revisions`] (`None` where unknown or no longer kept).
    GetRevisions {
        /// The collection.
        collection: CollectionName,
        /// Document and revision pairs.
        revs: Vec<(DocId, RevId)>,
        /// Ancestors to include.
        max_history: usize,
    },
    /// Read every leaf revision (with bodies and up to `max_history` ancestors) of these
    /// documents. Reply: [`StorageReply::Leaves`] (empty where the document is unknown).
    GetLeaves {
        /// The collection.
        collection: CollectionName,
        /// The documents.
        ids: Vec<DocId>,
        /// Ancestors to include.
        max_history: usize,
    },
    /// Insert revisions durably. Reply: [`StorageReply::Inserted`].
    InsertRevisions {
        /// The collection.
        collection: CollectionName,
        /// One entry per document.
        inserts: Vec<RevisionInsert>,
    },
    /// Start writing the blob `blob` refers to, aside. Reply:
    /// [`StorageReply::BlobBegun`], or [`StorageReply::BlobTooLarge`] before any byte is
    /// stored.
    BeginBlob {
        /// The blob, as a received revision refers to it.
        blob: crate::Blob,
    },
    /// Append the next bytes of a blob being written. Reply: [`StorageReply::BlobWritten`];
    /// once the last byte is in, the blob is checked against its digest and, if it
    /// matches, made durable and visible ([`StorageReply::BlobMismatch`] if not).
    WriteBlob {
        /// The transfer.
        transfer: BlobTransfer,
        /// The bytes, in order.
        bytes: Bytes,
    },
    /// Drop a blob being written: nothing of it stays. Reply: [`StorageReply::Done`].
    AbandonBlob {
        /// The transfer.
        transfer: BlobTransfer,
    },
    /// The connection a blob was being received on ended: keep what was written of it
    /// aside, so that beginning the same blob again resumes from there
    /// ([`StorageReply::BlobBegun`]'s `resume_at`). Nothing of it becomes visible unless
    /// it is finished; a store may keep a bounded number of these and drop the oldest,
    /// or drop them all on restart. Reply: [`StorageReply::Done`].
    SuspendBlob {
        /// The transfer.
        transfer: BlobTransfer,
    },
    /// Read up to `max` bytes of a blob from `offset`. Reply: [`StorageReply::BlobBytes`].
    ReadBlob {
        /// The blob.
        digest: crate::BlobDigest,
        /// Where to start.
        offset: u64,
        /// How many bytes at most.
        max: u32,
    },
}

/// A store's reply to a [`StorageOp`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum StorageReply {
    /// For [`StorageOp::GetLocal`].
    Local(Option<Bytes>),
    /// For [`StorageOp::PutLocal`]: the write is durable.
    Done,
    /// For [`StorageOp::Changes`].
    Changes(Vec<Change>),
    /// For [`StorageOp::Changes`]: the feed after `since` is no longer complete —
    /// tombstones up to sequence `through` were forgotten (their retention ran out), and
    /// a reader at `since` had not seen them. A store answers this only for `since` above
    /// zero and below `through`; the reader's peer could still hold those documents alive,
    /// so the replication stops instead of going on without the deletions.
    DeletionsForgotten {
        /// The highest sequence a forgotten tombstone had.
        through: Seq,
    },
    /// For [`StorageOp::RevsDiff`], one per pair.
    RevsDiff(Vec<RevsDiff>),
    /// For [`StorageOp::GetRevisions`], one per pair.
    Revisions(Vec<Option<Revision>>),
    /// For [`StorageOp::GetLeaves`], one list per document.
    Leaves(Vec<Vec<Revision>>),
    /// For [`StorageOp::InsertRevisions`], one per insert; every `Inserted` is durable.
    Inserted(Vec<InsertOutcome>),
    /// For [`StorageOp::BeginBlob`]: write its bytes with `transfer`, from byte
    /// `resume_at` — 0, or how much of the blob a transfer cut earlier had written
    /// ([`StorageOp::SuspendBlob`]); the receiver asks the sender for the rest only.
    BlobBegun {
        /// The transfer.
        transfer: BlobTransfer,
        /// Bytes of the blob already written; the next write carries the byte at this
        /// offset.
        resume_at: u64,
    },
    /// For [`StorageOp::BeginBlob`]: the blob is larger than this store accepts.
    BlobTooLarge {
        /// The store's limit in bytes.
        max: u64,
    },
    /// For [`StorageOp::WriteBlob`]: the bytes are written; `complete` once the whole
    /// blob is in, verified, durable and visible.
    BlobWritten {
        /// Whether the blob is complete.
        complete: bool,
    },
    /// For [`StorageOp::WriteBlob`]: the bytes do not match the blob's digest or length;
    /// nothing of it was kept.
    BlobMismatch,
    /// For [`StorageOp::ReadBlob`]: the bytes (`min(max, length - offset)` of them), or
    /// `None` if the store does not hold the blob.
    BlobBytes(Option<Bytes>),
    /// The operation failed.
    Failed(StorageFailure),
}

/// A failed storage operation, as reported to a state machine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("storage failed: {message}")]
pub struct StorageFailure {
    /// What went wrong.
    pub message: String,
    /// True when retrying later may succeed (e.g. an I/O error), false for permanent
    /// failures (e.g. an unknown collection).
    pub transient: bool,
}
