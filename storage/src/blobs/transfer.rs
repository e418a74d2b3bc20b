//! Blobs received by replication: the storage side of [`StorageOp::BeginBlob`],
//! [`StorageOp::WriteBlob`] and [`StorageOp::AbandonBlob`]. Each transfer is a
//! [`BlobWriter`] held between operations under a number the store hands out, so any
//! number of connections may receive blobs at once, even the same one.
//!
//! [`StorageOp::BeginBlob`]: peerlite_proto::StorageOp::BeginBlob
//! [`StorageOp::WriteBlob`]: peerlite_proto::StorageOp::WriteBlob
//! [`StorageOp::AbandonBlob`]: peerlite_proto::StorageOp::AbandonBlob

use std::collections::BTreeMap;

use peerlite_proto::{Blob, BlobTransfer, StorageReply};

use super::BlobWriter;
use crate::{Database, KvError, StorageError};

/// Transfers open at most: beyond, beginning one drops the oldest (a connection that
/// ended without abandoning its transfers leaves them behind; a dropped one that is
/// still in use fails its next write, which ends that connection, to be retried).
const MAX_OPEN: usize = 64;

/// Transfers under way.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    next: u64,
    open: BTreeMap<u64, (Blob, BlobWriter)>,
}

impl Database {
    pub(crate) fn begin_transfer(&self, blob: Blob) -> Result<StorageReply, StorageError> {
        let writer = match self.blob_writer_for(&blob) {
            Ok(w) => w,
            Err(StorageError::BlobTooLarge { max, .. }) => {
                return Ok(StorageReply::BlobTooLarge { max });
            }
            Err(e) => return Err(e),
        };
        let mut t = self.lock_transfers()?;
        while t.open.len() >= MAX_OPEN {
            t.open.pop_first();
        }
        t.next += 1;
        let id = t.next;
        t.open.insert(id, (blob, writer));
        Ok(StorageReply::BlobBegun(BlobTransfer(id)))
    }

    pub(crate) fn write_transfer(
        &self,
        transfer: BlobTransfer,
        bytes: &[u8],
    ) -> Result<StorageReply, StorageError> {
        // Out of the table while it is written: other transfers go on meanwhile.
        let (blob, mut writer) = self
            .lock_transfers()?
            .open
            .remove(&transfer.0)
            .ok_or_else(|| StorageError::BlobIo(format!("no blob transfer {}", transfer.0)))?;
        match writer.write(bytes) {
            Ok(()) => {}
            Err(StorageError::BlobMismatch { .. }) => return Ok(StorageReply::BlobMismatch),
            Err(e) => return Err(e),
        }
        if writer.written() < blob.length {
            self.lock_transfers()?
                .open
                .insert(transfer.0, (blob, writer));
            return Ok(StorageReply::BlobWritten { complete: false });
        }
        match writer.finish(blob.content_type.as_deref()) {
            Ok(_) => Ok(StorageReply::BlobWritten { complete: true }),
            Err(StorageError::BlobMismatch { .. }) => Ok(StorageReply::BlobMismatch),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn abandon_transfer(&self, transfer: BlobTransfer) -> Result<(), StorageError> {
        // Dropping the writer removes what it wrote.
        self.lock_transfers()?.open.remove(&transfer.0);
        Ok(())
    }

    fn lock_transfers(&self) -> Result<std::sync::MutexGuard<'_, Transfers>, StorageError> {
        self.inner
            .transfers
            .lock()
            .map_err(|_| StorageError::Kv(KvError::Poisoned))
    }
}
