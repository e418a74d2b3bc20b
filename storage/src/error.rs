//! Errors of the storage layer.

use peerlite_proto::{
    BlobDigest, BlobRefError, BodyError, CollectionName, DocId, RevId, RevIdError,
};

/// A failure of the key-value backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// Another handle or process has the database open.
    #[error(
        "the database is already open elsewhere (its directory is locked); close the other handle first"
    )]
    Locked,
    /// An earlier write failed at the device level; no further writes are accepted.
    #[error(
        "the storage engine failed an earlier write and refuses further writes; restart and reopen the database"
    )]
    Poisoned,
    /// Any other engine error.
    #[error("storage engine error: {0}")]
    Fjall(String),
}

/// Errors of [`Database`](crate::Database) operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The collection was never created.
    #[error("collection {0} does not exist; create it with Database::create_collection")]
    NoSuchCollection(CollectionName),
    /// The document does not exist (or is deleted).
    #[error("document {doc_id} not found in {collection}")]
    NotFound {
        /// The collection.
        collection: CollectionName,
        /// The document.
        doc_id: DocId,
    },
    /// An optimistic-concurrency check failed: the document changed since it was read.
    #[error("document {doc_id} has changed: its current revision is {}, not the expected one; read it again and retry",
        .current.map(|r| r.to_string()).unwrap_or_else(|| "none (it does not exist)".into()))]
    Conflict {
        /// The document.
        doc_id: DocId,
        /// Its current revision (`None` if it does not exist or is deleted).
        current: Option<RevId>,
    },
    /// A stored record could not be decoded.
    #[error("corrupt {what} record at key {key}: {reason}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// The key, printed.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The database was written by a newer, incompatible version.
    #[error(
        "database format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat {
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A body was invalid.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A revision ID could not be computed.
    #[error(transparent)]
    RevId(#[from] RevIdError),
    /// A local document ID is empty or too long.
    #[error("local document ID must be 1 to 250 bytes long")]
    InvalidLocalId,
    /// A storage operation this build does not know.
    #[error("unsupported storage operation: {0}")]
    Unsupported(String),
    /// The database already holds the maximum number of collections.
    #[error("too many collections")]
    TooManyCollections,
    /// The default collection was to be deleted.
    #[error(
        "the default collection cannot be deleted; purge its documents instead (Database::purge_documents, peerlite purge)"
    )]
    DefaultCollection,
    /// A document refers to a blob the database does not hold.
    #[error(
        "document {doc_id} refers to blob {digest}, which this database does not hold; save the blob first (Database::save_blob, or peerlite blob put)"
    )]
    MissingBlob {
        /// The document.
        doc_id: DocId,
        /// The blob.
        digest: BlobDigest,
    },
    /// A document's blob reference gives another length than the blob has.
    #[error("document {doc_id} says blob {digest} has {referenced} bytes, but it has {stored}")]
    BlobLengthMismatch {
        /// The document.
        doc_id: DocId,
        /// The blob.
        digest: BlobDigest,
        /// The length in the reference.
        referenced: u64,
        /// The length of the stored blob.
        stored: u64,
    },
    /// A blob reference in a body is malformed.
    #[error(transparent)]
    BlobReference(#[from] BlobRefError),
    /// A blob is larger than the database accepts.
    #[error(
        "blob is larger than the {max}-byte limit (at least {length} bytes); raise DatabaseConfig::max_blob_bytes to store it"
    )]
    BlobTooLarge {
        /// Its length, or how much of it was read before giving up.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// A blob's bytes do not match the digest or length they were expected to have.
    #[error(
        "blob bytes do not match: expected {expected} ({expected_length} bytes), got {found} ({found_length} bytes)"
    )]
    BlobMismatch {
        /// The digest expected.
        expected: BlobDigest,
        /// The length expected.
        expected_length: u64,
        /// The digest of the bytes received.
        found: BlobDigest,
        /// Their length.
        found_length: u64,
    },
    /// Reading or writing blob bytes failed.
    #[error("blob store: {0}")]
    BlobIo(String),
}

impl StorageError {
    pub(crate) fn corrupt(what: &'static str, key: &[u8], reason: impl ToString) -> StorageError {
        StorageError::Corrupt {
            what,
            key: String::from_utf8_lossy(key).escape_debug().to_string(),
            reason: reason.to_string(),
        }
    }
}
