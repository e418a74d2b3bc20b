//! The database's blob operations: saving a blob from a reader (or chunk by chunk, checked
//! against the digest a peer announced), reading one back, listing them, the check that a
//! document refers only to blobs present, and compaction of blobs no revision refers to.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::ops::Bound;

use peerlite_proto::{Blob, BlobDigest, BlobHasher, Body, DocId};

use super::BlobWrite;
use crate::keys;
use crate::kv::{Durability, Space, WriteBatch};
use crate::record::DocRecord;
use crate::{Database, StorageError};

/// Bytes read from a reader at a time when saving a blob.
const READ_CHUNK: usize = 64 << 10;

/// Document records read at a time by compaction.
const COMPACT_PAGE: usize = 512;

/// A blob held by a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: BlobDigest,
    /// Its length in bytes.
    pub length: u64,
    /// The content type it was saved with, if any.
    pub content_type: Option<String>,
}

impl BlobInfo {
    /// The reference a document holds to refer to it.
    pub fn reference(&self) -> Blob {
        Blob::new(self.digest, self.length, self.content_type.clone())
    }
}

/// What [`Database::compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Tombstones older than the retention, forgotten
    /// ([`Database::forget_tombstones`](crate::Database::forget_tombstones)).
    pub tombstones_forgotten: u64,
    /// Blobs removed: no stored revision refers to them.
    pub blobs_removed: u64,
    /// The bytes those blobs held.
    pub bytes_reclaimed: u64,
    /// Blobs kept.
    pub blobs_kept: u64,
    /// The bytes the document store's files shrank by once rewritten without what was
    /// deleted, purged or overwritten.
    pub store_bytes_reclaimed: u64,
}

/// A blob being saved: bytes go in with [`BlobWriter::write`], and [`BlobWriter::finish`]
/// checks them and makes the blob visible, whole. Dropped unfinished, it leaves nothing.
pub struct BlobWriter {
    db: Database,
    staged: Staged,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("written", &self.staged.written())
            .field("expected", &self.staged.expected)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// Appends `bytes`. Fails, keeping nothing, once the blob would pass the database's
    /// [`max_blob_bytes`](crate::DatabaseConfig::max_blob_bytes) or the expected length.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.staged.write(bytes)
    }

    /// How many bytes were written so far.
    pub fn written(&self) -> u64 {
        self.staged.written()
    }

    /// Checks the bytes against the expected digest and length, if any, makes the blob
    /// durable and visible, and records `content_type` for it (the first one given is
    /// kept). Returns the reference to put in a document, with `content_type` (or the
    /// one recorded, if none is given).
    pub fn finish(self, content_type: Option<&str>) -> Result<Blob, StorageError> {
        self.db.publish(self.staged, content_type)
    }
}

/// The bytes of a blob being saved, aside. Holds no [`Database`], so the transfers a
/// database keeps between a peer's chunks do not keep the database itself alive.
pub(crate) struct Staged {
    out: Box<dyn BlobWrite>,
    hasher: BlobHasher,
    /// The blob the bytes must be, when known in advance (a peer announced it).
    expected: Option<(BlobDigest, u64)>,
    max: u64,
}

impl Staged {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let length = self.hasher.length() + bytes.len() as u64;
        if length > self.max {
            return Err(StorageError::BlobTooLarge {
                length,
                max: self.max,
            });
        }
        if let Some((digest, expected)) = self.expected
            && length > expected
        {
            return Err(StorageError::BlobMismatch {
                expected: digest,
                expected_length: expected,
                found: self.hasher.clone().finish().0,
                found_length: length,
            });
        }
        self.hasher.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| StorageError::BlobIo(format!("cannot write blob bytes: {e}")))
    }

    pub(crate) fn written(&self) -> u64 {
        self.hasher.length()
    }
}

impl Database {
    /// Saves a blob from `reader`, streaming: it is read in 64 KiB chunks, never held
    /// whole in memory, and becomes visible only once whole and durable. Saving bytes
    /// the database already holds stores nothing new. Returns the reference to put in a
    /// document.
    ///
    /// ```
    /// use peerlite_storage::Database;
    /// use peerlite_proto::{Body, CollectionName, DocId};
    ///
    /// let db = Database::in_memory()?;
    /// let photo = db.save_blob(&b"\xff\xd8 jpeg bytes"[..], Some("image/jpeg"))?;
    /// let body = Body::from_json(&serde_json::json!({"title": "Beach", "photo": photo.to_json()}))?;
    /// db.save(&CollectionName::default(), &DocId::new("beach")?, body)?;
    ///
    /// let mut bytes = Vec::new();
    /// db.open_blob(&photo.digest)?.expect("saved").read_to_end(&mut bytes)?;
    /// assert_eq!(bytes, b"\xff\xd8 jpeg bytes");
    /// # use std::io::Read;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_blob(
        &self,
        mut reader: impl Read,
        content_type: Option<&str>,
    ) -> Result<Blob, StorageError> {
        let mut writer = self.blob_writer()?;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StorageError::BlobIo(format!(
                        "cannot read the blob's bytes: {e}"
                    )));
                }
            };
            writer.write(&buf[..n])?;
        }
        writer.finish(content_type)
    }

    /// Starts saving a blob chunk by chunk.
    pub fn blob_writer(&self) -> Result<BlobWriter, StorageError> {
        self.writer_for(None)
    }

    /// Starts saving the blob `blob` refers to, chunk by chunk: its bytes must match the
    /// reference's digest and length, and a blob larger than the database accepts is
    /// refused before any byte is stored.
    pub fn blob_writer_for(&self, blob: &Blob) -> Result<BlobWriter, StorageError> {
        let max = self.inner.config.max_blob_bytes;
        if blob.length > max {
            return Err(StorageError::BlobTooLarge {
                length: blob.length,
                max,
            });
        }
        self.writer_for(Some((blob.digest, blob.length)))
    }

    fn writer_for(&self, expected: Option<(BlobDigest, u64)>) -> Result<BlobWriter, StorageError> {
        Ok(BlobWriter {
            db: self.clone(),
            staged: self.stage(expected)?,
        })
    }

    /// Starts writing a blob aside.
    pub(crate) fn stage(
        &self,
        expected: Option<(BlobDigest, u64)>,
    ) -> Result<Staged, StorageError> {
        Ok(Staged {
            out: self.inner.blobs.create()?,
            hasher: BlobHasher::new(),
            expected,
            max: self.inner.config.max_blob_bytes,
        })
    }

    /// Checks `staged` against the digest and length expected, if any, makes the blob
    /// durable and visible, and records `content_type` for it (see [`BlobWriter::finish`]).
    pub(crate) fn publish(
        &self,
        staged: Staged,
        content_type: Option<&str>,
    ) -> Result<Blob, StorageError> {
        let Staged {
            out,
            hasher,
            expected,
            ..
        } = staged;
        let (digest, length) = hasher.finish();
        if let Some((expected, expected_length)) = expected
            && (expected, expected_length) != (digest, length)
        {
            return Err(StorageError::BlobMismatch {
                expected,
                expected_length,
                found: digest,
                found_length: length,
            });
        }
        out.publish(&digest)?;
        if let Some(t) = content_type {
            let key = keys::blob_meta_key(&digest);
            if self.inner.kv.get(Space::Meta, &key)?.is_none() {
                let mut batch = WriteBatch::new();
                batch.put(Space::Meta, key, t.as_bytes().to_vec());
                self.inner.kv.commit(batch, Durability::Sync)?;
            }
        }
        self.lock_fresh_blobs()?.insert(digest);
        let content_type = match content_type {
            Some(t) => Some(t.to_owned()),
            None => self.content_type(&digest)?,
        };
        Ok(Blob::new(digest, length, content_type))
    }

    /// The blob `digest`, if the database holds it.
    pub fn blob(&self, digest: &BlobDigest) -> Result<Option<BlobInfo>, StorageError> {
        let Some(length) = self.inner.blobs.length(digest)? else {
            return Ok(None);
        };
        Ok(Some(BlobInfo {
            digest: *digest,
            length,
            content_type: self.content_type(digest)?,
        }))
    }

    /// Whether the database holds blob `digest`.
    pub fn has_blob(&self, digest: &BlobDigest) -> Result<bool, StorageError> {
        Ok(self.inner.blobs.length(digest)?.is_some())
    }

    /// Opens blob `digest` for reading, streaming; `None` if the database does not hold it.
    pub fn open_blob(
        &self,
        digest: &BlobDigest,
    ) -> Result<Option<Box<dyn Read + Send>>, StorageError> {
        self.inner.blobs.open(digest)
    }

    /// Every blob the database holds, in digest order.
    pub fn blobs(&self) -> Result<Vec<BlobInfo>, StorageError> {
        self.inner
            .blobs
            .list()?
            .into_iter()
            .map(|(digest, length)| {
                Ok(BlobInfo {
                    digest,
                    length,
                    content_type: self.content_type(&digest)?,
                })
            })
            .collect()
    }

    /// Gives space back: forgets the tombstones older than the retention at `now`
    /// ([`Database::forget_tombstones`](crate::Database::forget_tombstones)), removes the
    /// blobs no stored revision refers to, then rewrites
    /// the store's files without what was deleted, purged or overwritten (revision trees
    /// are pruned as they are written), and reports what it reclaimed. A blob that a
    /// revision refers to is never removed, nor one saved through this handle and not
    /// referenced yet (it is about to be). Blob removal runs under the write lock (saves
    /// wait); the store's rewrite does not.
    pub fn compact(&self, now: std::time::SystemTime) -> Result<CompactReport, StorageError> {
        let mut report = CompactReport {
            tombstones_forgotten: self.forget_tombstones(now)?,
            ..CompactReport::default()
        };
        let w = self.lock_writer()?;
        let referenced = self.referenced_blobs()?;
        let fresh = self.lock_fresh_blobs()?.clone();
        for (digest, length) in self.inner.blobs.list()? {
            if referenced.contains(&digest) || fresh.contains(&digest) {
                report.blobs_kept += 1;
                continue;
            }
            if self.inner.blobs.remove(&digest)? {
                let mut batch = WriteBatch::new();
                batch.delete(Space::Meta, keys::blob_meta_key(&digest));
                self.inner.kv.commit(batch, Durability::Sync)?;
                report.blobs_removed += 1;
                report.bytes_reclaimed += length;
            }
        }
        drop(w);
        report.store_bytes_reclaimed = self.inner.kv.compact()?;
        Ok(report)
    }

    /// Every blob a stored revision (of any document, collection or branch) refers to.
    fn referenced_blobs(&self) -> Result<BTreeSet<BlobDigest>, StorageError> {
        let mut referenced = BTreeSet::new();
        let mut from = Bound::Unbounded;
        loop {
            let rows = self
                .inner
                .kv
                .scan(Space::Docs, (from, Bound::Unbounded), COMPACT_PAGE)?;
            let full = rows.len() == COMPACT_PAGE;
            for (k, v) in &rows {
                let rec = DocRecord::decode(k, v)?;
                for (_, node) in rec.tree.nodes() {
                    if let Some(body) = node.body() {
                        referenced.extend(body.blobs()?.into_iter().map(|b| b.digest));
                    }
                }
            }
            match rows.into_iter().last() {
                Some((k, _)) if full => from = Bound::Excluded(k),
                _ => return Ok(referenced),
            }
        }
    }

    /// Checks that every blob `body` refers to is here, with the length it says.
    pub(crate) fn check_blobs(&self, doc_id: &DocId, body: &Body) -> Result<(), StorageError> {
        let blobs = body.blobs()?;
        for blob in &blobs {
            self.check_blob(doc_id, blob)?;
        }
        if !blobs.is_empty() {
            let mut fresh = self.lock_fresh_blobs()?;
            for blob in &blobs {
                fresh.remove(&blob.digest);
            }
        }
        Ok(())
    }

    /// Checks that `blob` is here with the length its reference says.
    pub(crate) fn check_blob(&self, doc_id: &DocId, blob: &Blob) -> Result<(), StorageError> {
        match self.inner.blobs.length(&blob.digest)? {
            None => Err(StorageError::MissingBlob {
                doc_id: doc_id.clone(),
                digest: blob.digest,
            }),
            Some(stored) if stored != blob.length => Err(StorageError::BlobLengthMismatch {
                doc_id: doc_id.clone(),
                digest: blob.digest,
                referenced: blob.length,
                stored,
            }),
            Some(_) => Ok(()),
        }
    }

    fn content_type(&self, digest: &BlobDigest) -> Result<Option<String>, StorageError> {
        Ok(self
            .inner
            .kv
            .get(Space::Meta, &keys::blob_meta_key(digest))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn lock_fresh_blobs(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, BTreeSet<BlobDigest>>, StorageError> {
        self.inner
            .fresh_blobs
            .lock()
            .map_err(|_| StorageError::Kv(crate::KvError::Poisoned))
    }
}
