//! Blobs received by replication: the storage side of [`StorageOp::BeginBlob`],
//! [`StorageOp::WriteBlob`], [`StorageOp::AbandonBlob`] and [`StorageOp::SuspendBlob`].
//! Each transfer is a blob being written aside, held between operations under a number
//! the store hands out, so any number of connections may receive blobs at once, even the
//! same one. A transfer whose connection ended is kept aside (suspended) and resumed by
//! the next transfer of the same blob, so a dropped connection costs only the bytes that
//! had not arrived yet.
//!
//! [`StorageOp::BeginBlob`]: peerlite_proto::StorageOp::BeginBlob
//! [`StorageOp::WriteBlob`]: peerlite_proto::StorageOp::WriteBlob
//! [`StorageOp::AbandonBlob`]: peerlite_proto::StorageOp::AbandonBlob
//! [`StorageOp::SuspendBlob`]: peerlite_proto::StorageOp::SuspendBlob

use std::collections::BTreeMap;

use peerlite_proto::{Blob, BlobTransfer, StorageReply};

use super::api::Staged;
use crate::{Database, KvError, StorageError};

/// Transfers open at most: beyond, beginning one drops the oldest (a connection that
/// ended without abandoning its transfers leaves them behind; a dropped one that is
/// still in use fails its next write, which ends that connection, to be retried).
const MAX_OPEN: usize = 64;

/// Suspended transfers kept at most, the oldest dropped first: each holds a staging file
/// (and a file handle) until it is resumed or the database is closed.
const MAX_SUSPENDED: usize = 16;

/// Transfers under way, and those suspended.
#[derive(Default)]
pub(crate) struct Transfers {
    next: u64,
    open: BTreeMap<u64, (Blob, Staged)>,
    /// Oldest first.
    suspended: Vec<(Blob, Staged)>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers")
            .field("open", &self.open.len())
            .field("suspended", &self.suspended.len())
            .finish()
    }
}

impl Database {
    pub(crate) fn begin_transfer(&self, blob: Blob) -> Result<StorageReply, StorageError> {
        let max = self.inner.config.max_blob_bytes;
        if blob.length > max {
            return Ok(StorageReply::BlobTooLarge { max });
        }
        let resumed = {
            let mut t = self.lock_transfers()?;
            t.suspended
                .iter()
                .position(|(b, _)| (b.digest, b.length) == (blob.digest, blob.length))
                .map(|i| t.suspended.remove(i).1)
        };
        let staged = match resumed {
            Some(staged) => staged,
            None => self.stage(Some((blob.digest, blob.length)))?,
        };
        let resume_at = staged.written();
        let mut t = self.lock_transfers()?;
        while t.open.len() >= MAX_OPEN {
            t.open.pop_first();
        }
        t.next += 1;
        let id = t.next;
        t.open.insert(id, (blob, staged));
        Ok(StorageReply::BlobBegun {
            transfer: BlobTransfer(id),
            resume_at,
        })
    }

    pub(crate) fn write_transfer(
        &self,
        transfer: BlobTransfer,
        bytes: &[u8],
    ) -> Result<StorageReply, StorageError> {
        // Out of the table while it is written: other transfers go on meanwhile.
        let (blob, mut staged) = self
            .lock_transfers()?
            .open
            .remove(&transfer.0)
            .ok_or_else(|| StorageError::BlobIo(format!("no blob transfer {}", transfer.0)))?;
        match staged.write(bytes) {
            Ok(()) => {}
            Err(StorageError::BlobMismatch { .. }) => return Ok(StorageReply::BlobMismatch),
            Err(e) => return Err(e),
        }
        if staged.written() < blob.length {
            self.lock_transfers()?
                .open
                .insert(transfer.0, (blob, staged));
            return Ok(StorageReply::BlobWritten { complete: false });
        }
        match self.publish(staged, blob.content_type.as_deref()) {
            Ok(_) => Ok(StorageReply::BlobWritten { complete: true }),
            Err(StorageError::BlobMismatch { .. }) => Ok(StorageReply::BlobMismatch),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn abandon_transfer(&self, transfer: BlobTransfer) -> Result<(), StorageError> {
        // Dropping the staged bytes removes them.
        self.lock_transfers()?.open.remove(&transfer.0);
        Ok(())
    }

    pub(crate) fn suspend_transfer(&self, transfer: BlobTransfer) -> Result<(), StorageError> {
        let mut t = self.lock_transfers()?;
        let Some((blob, staged)) = t.open.remove(&transfer.0) else {
            return Ok(());
        };
        if staged.written() == 0 {
            return Ok(());
        }
        // One suspended transfer per blob: the one furthest along.
        if let Some(i) = t
            .suspended
            .iter()
            .position(|(b, _)| b.digest == blob.digest)
        {
            if t.suspended[i].1.written() >= staged.written() {
                return Ok(());
            }
            t.suspended.remove(i);
        }
        t.suspended.push((blob, staged));
        if t.suspended.len() > MAX_SUSPENDED {
            t.suspended.remove(0);
        }
        Ok(())
    }

    fn lock_transfers(&self) -> Result<std::sync::MutexGuard<'_, Transfers>, StorageError> {
        self.inner
            .transfers
            .lock()
            .map_err(|_| StorageError::Kv(KvError::Poisoned))
    }
}
