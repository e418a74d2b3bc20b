//! Document expiration: a document may be given a time after which it is purged — not
//! deleted: no tombstone, no revision, nothing replicated (as in Couchbase Lite).
//! Expiration is local to this database: peers keep their copies and their own
//! expirations.
//!
//! The store reads no clock: the caller passes the time to [`Database::purge_expired`],
//! and asks [`Database::next_expiration`] when to do it next (the runtimes and `peerlite
//! serve` purge on a timer; every `peerlite` command purges what is due when it opens a
//! database).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use peerlite_proto::{Body, CollectionName, DocId};
//! use peerlite_storage::Database;
//!
//! let db = Database::in_memory()?;
//! let c = CollectionName::default();
//! let session = DocId::new("session")?;
//! db.save(&c, &session, Body::from_json_str(r#"{"token": "…"}"#)?)?;
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! db.set_expiration(&c, &session, Some(now + Duration::from_secs(3600)))?;
//! assert_eq!(db.next_expiration()?, Some(now + Duration::from_secs(3600)));
//!
//! assert_eq!(db.purge_expired(now)?, 0);
//! assert_eq!(db.purge_expired(now + Duration::from_secs(3600))?, 1);
//! assert!(db.get(&c, &session)?.is_none());
//! assert_eq!(db.next_expiration()?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::Bound;
use std::time::{Duration, SystemTime};

use peerlite_proto::{CollectionName, DocId};

use crate::database::Database;
use crate::keys::{self, CollectionId};
use crate::{Space, StorageError, WriteBatch};

/// Expired documents purged per commit.
const PURGE_BATCH: usize = 1000;

fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn read_millis(key: &[u8], value: &[u8]) -> Result<u64, StorageError> {
    Ok(u64::from_be_bytes(value.try_into().map_err(|_| {
        StorageError::corrupt("expiration", key, "not 8 bytes")
    })?))
}

impl Database {
    /// Sets when a document expires (`None`: never), replacing any earlier expiration.
    /// The document must exist (a tombstone does: it is purged at that time too). An
    /// expiration survives updates and deletions; a purge removes it.
    pub fn set_expiration(
        &self,
        collection: &CollectionName,
        id: &DocId,
        at: Option<SystemTime>,
    ) -> Result<(), StorageError> {
        let _w = self.lock_writer()?;
        let state = self.collection(collection)?;
        if self.load_doc(state.id, id)?.is_none() {
            return Err(StorageError::NotFound {
                collection: collection.clone(),
                doc_id: id.clone(),
            });
        }
        let mut batch = WriteBatch::new();
        self.stage_expiration(&mut batch, state.id, id, at)?;
        self.inner.kv.commit(batch, self.inner.config.durability)?;
        Ok(())
    }

    /// Adds to `batch` the replacement of a document's expiration by `at` (`None`:
    /// never).
    pub(crate) fn stage_expiration(
        &self,
        batch: &mut WriteBatch,
        cid: CollectionId,
        id: &DocId,
        at: Option<SystemTime>,
    ) -> Result<(), StorageError> {
        self.stage_expiration_removal(batch, cid, id)?;
        if let Some(at) = at {
            let ms = to_millis(at);
            batch.put(
                Space::Meta,
                keys::expires_key(cid, id),
                ms.to_be_bytes().to_vec(),
            );
            batch.put(Space::Meta, keys::expiry_queue_key(ms, cid, id), Vec::new());
        }
        Ok(())
    }

    /// When a document expires, if it does.
    pub fn expiration(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<SystemTime>, StorageError> {
        let state = self.collection(collection)?;
        let key = keys::expires_key(state.id, id);
        match self.inner.kv.get(Space::Meta, &key)? {
            Some(v) => Ok(Some(from_millis(read_millis(&key, &v)?))),
            None => Ok(None),
        }
    }

    /// The earliest expiration of any document in the database: when to call
    /// [`Database::purge_expired`] next.
    pub fn next_expiration(&self) -> Result<Option<SystemTime>, StorageError> {
        let first = self.inner.kv.scan(
            Space::Meta,
            keys::prefix_range(keys::META_EXPIRY_QUEUE_PREFIX),
            1,
        )?;
        match first.first() {
            Some((k, _)) => Ok(Some(from_millis(keys::expiry_from_queue_key(k)?.0))),
            None => Ok(None),
        }
    }

    /// Purges every document whose expiration is at or before `now`, a thousand per
    /// atomic commit; returns how many. Nothing is replicated for them.
    pub fn purge_expired(&self, now: SystemTime) -> Result<usize, StorageError> {
        let now = to_millis(now);
        let mut purged = 0;
        loop {
            let _w = self.lock_writer()?;
            let (start, _) = keys::prefix_range(keys::META_EXPIRY_QUEUE_PREFIX);
            let end = [
                keys::META_EXPIRY_QUEUE_PREFIX,
                &now.saturating_add(1).to_be_bytes(),
            ]
            .concat();
            let due =
                self.inner
                    .kv
                    .scan(Space::Meta, (start, Bound::Excluded(end)), PURGE_BATCH)?;
            if due.is_empty() {
                return Ok(purged);
            }
            let mut batch = WriteBatch::new();
            for (key, _) in &due {
                let (_, cid, id) = keys::expiry_from_queue_key(key)?;
                batch.delete(Space::Meta, key.clone());
                batch.delete(Space::Meta, keys::expires_key(cid, &id));
                if let Some(rec) = self.load_doc(cid, &id)? {
                    batch.delete(Space::Docs, keys::doc_key(cid, &id));
                    batch.delete(Space::Seq, keys::seq_key(cid, rec.seq));
                    purged += 1;
                }
            }
            self.inner.kv.commit(batch, self.inner.config.durability)?;
            if due.len() < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    /// Adds to `batch` the removal of a document's expiration, if it has one.
    pub(crate) fn stage_expiration_removal(
        &self,
        batch: &mut WriteBatch,
        cid: CollectionId,
        id: &DocId,
    ) -> Result<(), StorageError> {
        let key = keys::expires_key(cid, id);
        if let Some(v) = self.inner.kv.get(Space::Meta, &key)? {
            let ms = read_millis(&key, &v)?;
            batch.delete(Space::Meta, keys::expiry_queue_key(ms, cid, id));
            batch.delete(Space::Meta, key);
        }
        Ok(())
    }
}
