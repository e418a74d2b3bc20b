//! Where blob bytes live: a [`BlobStore`] holds each blob once, under its digest. A blob
//! is written aside through a [`BlobWrite`] and becomes visible only when published whole,
//! after the [`Database`](crate::Database) has checked it against its digest; one that is
//! never published leaves nothing visible, and its left-overs are removed by the next open.
//!
//! Two stores, like the two key-value backends: [`FileBlobs`] keeps one file per blob in
//! the database directory (what [`Database::open`](crate::Database::open) uses), and
//! [`MemBlobs`] keeps them in memory (what [`Database::in_memory`](crate::Database::in_memory)
//! and simulations use).

mod api;
mod files;
mod mem;
mod transfer;

pub(crate) use transfer::Transfers;

pub use api::{BlobInfo, BlobWriter, CompactReport};
pub use files::FileBlobs;
pub use mem::MemBlobs;

use std::io::{Read, Write};

use peerlite_proto::BlobDigest;

use crate::StorageError;

/// A store of blob bytes, each under its digest.
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob, written aside until [`BlobWrite::publish`].
    fn create(&self) -> Result<Box<dyn BlobWrite>, StorageError>;

    /// Opens blob `digest` for reading; `None` if it is not here.
    fn open(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>, StorageError>;

    /// The length of blob `digest`; `None` if it is not here.
    fn length(&self, digest: &BlobDigest) -> Result<Option<u64>, StorageError>;

    /// Up to `max` bytes of blob `digest` from `offset` (fewer only at its end); `None`
    /// if it is not here.
    fn read_range(
        &self,
        digest: &BlobDigest,
        offset: u64,
        max: u32,
    ) -> Result<Option<bytes::Bytes>, StorageError>;

    /// Every blob here, with its length, in digest order.
    fn list(&self) -> Result<Vec<(BlobDigest, u64)>, StorageError>;

    /// Removes blob `digest`; whether it was here.
    fn remove(&self, digest: &BlobDigest) -> Result<bool, StorageError>;
}

/// A blob being written aside.
pub trait BlobWrite: Write + Send {
    /// Makes the bytes written durable and visible as blob `digest` (which the caller has
    /// checked they are). If that blob is already here, the copy is dropped.
    fn publish(self: Box<Self>, digest: &BlobDigest) -> Result<(), StorageError>;
}
