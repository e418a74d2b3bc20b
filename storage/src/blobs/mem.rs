//! Blobs in memory, for in-memory databases and simulations.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use peerlite_proto::BlobDigest;

use super::{BlobStore, BlobWrite};
use crate::{KvError, StorageError};

/// Blobs in memory. Clones share the same blobs.
#[derive(Clone, Debug, Default)]
pub struct MemBlobs {
    blobs: Arc<Mutex<BTreeMap<BlobDigest, Bytes>>>,
}

impl MemBlobs {
    /// An empty store.
    pub fn new() -> MemBlobs {
        MemBlobs::default()
    }

    /// Stores `bytes` under `digest` without checking that they match, as a damaged disk
    /// would hold them: for tests and simulations of corruption.
    pub fn put_unchecked(&self, digest: BlobDigest, bytes: impl Into<Bytes>) {
        if let Ok(mut blobs) = self.blobs.lock() {
            blobs.insert(digest, bytes.into());
        }
    }

    /// Removes blob `digest` behind the database's back, as a lost file would: for
    /// tests and simulations.
    pub fn lose(&self, digest: &BlobDigest) {
        if let Ok(mut blobs) = self.blobs.lock() {
            blobs.remove(digest);
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<BlobDigest, Bytes>>, StorageError> {
        self.blobs
            .lock()
            .map_err(|_| StorageError::Kv(KvError::Poisoned))
    }
}

impl BlobStore for MemBlobs {
    fn create(&self) -> Result<Box<dyn BlobWrite>, StorageError> {
        Ok(Box::new(MemWrite {
            bytes: Vec::new(),
            store: self.clone(),
        }))
    }

    fn open(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>, StorageError> {
        let bytes = self.lock()?.get(digest).cloned();
        Ok(bytes.map(|b| Box::new(io::Cursor::new(b)) as Box<dyn Read + Send>))
    }

    fn read_range(
        &self,
        digest: &BlobDigest,
        offset: u64,
        max: u32,
    ) -> Result<Option<Bytes>, StorageError> {
        Ok(self.lock()?.get(digest).map(|b| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
            let end = start.saturating_add(max as usize).min(b.len());
            b.slice(start..end)
        }))
    }

    fn length(&self, digest: &BlobDigest) -> Result<Option<u64>, StorageError> {
        Ok(self.lock()?.get(digest).map(|b| b.len() as u64))
    }

    fn list(&self) -> Result<Vec<(BlobDigest, u64)>, StorageError> {
        Ok(self
            .lock()?
            .iter()
            .map(|(d, b)| (*d, b.len() as u64))
            .collect())
    }

    fn remove(&self, digest: &BlobDigest) -> Result<bool, StorageError> {
        Ok(self.lock()?.remove(digest).is_some())
    }
}

struct MemWrite {
    bytes: Vec<u8>,
    store: MemBlobs,
}

impl Write for MemWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWrite for MemWrite {
    fn publish(self: Box<Self>, digest: &BlobDigest) -> Result<(), StorageError> {
        let MemWrite { bytes, store } = *self;
        store.lock()?.entry(*digest).or_insert_with(|| bytes.into());
        Ok(())
    }
}
