//! The on-disk backend on fjall.

use std::ops::Bound;
use std::path::Path;

use fjall::config::{FilterPolicy, FilterPolicyEntry, PartitioningPolicy};
use fjall::{Database as FjallDb, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::KvError;
use crate::kv::{Durability, KvBackend, KvPair, Space, WriteBatch, WriteOp};

/// How much memory a fjall database may hold, besides the data being read or written.
///
/// fjall's own defaults (a 32 MiB block cache, 64 MiB memtables per keyspace) let one
/// database grow past 150 MB of resident memory during a bulk sync. Peerlite's
/// defaults keep it near 20 MB: an 8 MiB block cache, and memtables flushed to disk at
/// 4 MiB (each keyspace). Bulk writes then flush more often, in the background; in
/// `peerlite bench` 4 MiB memtables cost no measurable speed against 8 MiB and save
/// ~9 MB of peak resident memory per process.
///
/// Beyond these, what fjall keeps in memory does not grow with the number of documents.
/// Every table's index and filter are written in partitions of 4 KiB that are read
/// through the block cache; only a small top-level index per table stays pinned. With
/// fjall's defaults, a table flushed from memory keeps its whole index and filter pinned,
/// and tables of keys written in order (generated IDs, the changes feed) move down the
/// levels without being rewritten, so they keep them for good: ~1.6% of the data, ~7 MB
/// per process in `peerlite bench` with 1,000,000 documents. The changes feed has no
/// filter at all: it is read by range, never by key.
///
/// [`Database::open`](crate::Database::open) also keeps up to 1 MiB of document
/// records in front of fjall ([`CachedKv`](crate::CachedKv)): replication reads a
/// document to answer a proposal, then again to insert it, and the second read then
/// costs a hash lookup instead of an LSM search.
///
/// ```
/// use peerlite_storage::FjallMemory;
/// let m = FjallMemory::default();
/// assert_eq!((m.cache_bytes, m.memtable_bytes), (8 << 20, 4 << 20));
/// assert_eq!(m.record_cache_bytes, 1 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FjallMemory {
    /// Block cache shared by every keyspace, in bytes.
    pub cache_bytes: u64,
    /// Size at which a keyspace's write buffer (memtable) is flushed to disk, in bytes.
    pub memtable_bytes: u64,
    /// Document records read to answer a proposal, kept for the insert that follows,
    /// in bytes (0: none). See [`CachedKv`](crate::CachedKv).
    pub record_cache_bytes: u64,
}

impl Default for FjallMemory {
    fn default() -> Self {
        FjallMemory {
            cache_bytes: 8 << 20,
            memtable_bytes: 4 << 20,
            record_cache_bytes: 1 << 20,
        }
    }
}

/// A [`KvBackend`] on a fjall LSM database: one fjall keyspace per [`Space`], and one
/// fjall write batch per commit, which fjall applies atomically across keyspaces.
pub struct FjallKv {
    db: FjallDb,
    spaces: [Keyspace; 4],
}

impl FjallKv {
    /// Opens (or creates) a database in directory `path`.
    ///
    /// A new directory is created readable by its owner only (0700 on Unix): the database
    /// may hold private keys of TLS identities. Fails with [`KvError::Locked`] when another
    /// handle has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<FjallKv, KvError> {
        Self::open_with(path, &FjallMemory::default())
    }

    /// Like [`FjallKv::open`], with explicit memory limits.
    pub fn open_with(path: impl AsRef<Path>, memory: &FjallMemory) -> Result<FjallKv, KvError> {
        create_private_dir(path.as_ref())?;
        let db = FjallDb::builder(path.as_ref())
            .cache_size(memory.cache_bytes)
            .open()
            .map_err(map_err)?;
        let open = |space: Space| db.keyspace(space.name(), || keyspace_options(space, memory));
        let spaces = [
            open(Space::Docs).map_err(map_err)?,
            open(Space::Seq).map_err(map_err)?,
            open(Space::Local).map_err(map_err)?,
            open(Space::Meta).map_err(map_err)?,
        ];
        Ok(FjallKv { db, spaces })
    }

    fn space(&self, space: Space) -> &Keyspace {
        match space {
            Space::Docs => &self.spaces[0],
            Space::Seq => &self.spaces[1],
            Space::Local => &self.spaces[2],
            Space::Meta => &self.spaces[3],
        }
    }
}

/// How a keyspace is created (fjall keeps these settings with the keyspace; a keyspace
/// created by an earlier version keeps the ones it was created with).
fn keyspace_options(space: Space, memory: &FjallMemory) -> KeyspaceCreateOptions {
    let options = KeyspaceCreateOptions::default()
        .max_memtable_size(memory.memtable_bytes)
        // Partitioned at every level, flushed tables included: pinned memory then stays
        // a top-level index per table (see `FjallMemory`).
        .index_block_partitioning_policy(PartitioningPolicy::all(true))
        .filter_block_partitioning_policy(PartitioningPolicy::all(true));
    match space {
        // The changes feed is scanned by range and its entries removed blindly.
        Space::Seq => options.filter_policy(FilterPolicy::all(FilterPolicyEntry::None)),
        Space::Docs | Space::Local | Space::Meta => options,
    }
}

fn create_private_dir(path: &Path) -> Result<(), KvError> {
    if path.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|e| KvError::Fjall(format!("cannot create {}: {e}", path.display())))
}

fn map_err(e: fjall::Error) -> KvError {
    match e {
        fjall::Error::Locked => KvError::Locked,
        fjall::Error::Poisoned => KvError::Poisoned,
        other => KvError::Fjall(other.to_string()),
    }
}

impl KvBackend for FjallKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .space(space)
            .get(key)
            .map_err(map_err)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        space: Space,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        limit: usize,
    ) -> Result<Vec<KvPair>, KvError> {
        let mut out = Vec::new();
        for guard in self.space(space).range(range).take(limit) {
            let (k, v) = guard.into_inner().map_err(map_err)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn compact(&self) -> Result<u64, KvError> {
        let before = self.db.disk_space().map_err(map_err)?;
        for keyspace in &self.spaces {
            // fjall 3.1 keeps these two hidden from its docs (its own tests use them).
            // The memtable is flushed first: deletions still in memory would otherwise
            // not reach the tables, and what they delete would be kept. Then the major
            // compaction merges every table of the keyspace without what was deleted or
            // overwritten, blocking until done. The journal is not rewritten: fjall
            // starts a new one once the current one passes 64 MB and drops the old one
            // once every keyspace has flushed past it — a keyspace left with no table at
            // all (everything in it deleted) holds the old one until its next flush, so
            // a churned store keeps at most two journals.
            keyspace.rotate_memtable_and_wait().map_err(map_err)?;
            keyspace.major_compact().map_err(map_err)?;
        }

        let after = self.db.disk_space().map_err(map_err)?;
        Ok(before.saturating_sub(after))
    }

    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), KvError> {
        let mode = match durability {
            Durability::Sync => Some(PersistMode::SyncData),
            Durability::Flush => Some(PersistMode::Buffer),
            Durability::Buffered => None,
        };
        let mut b = self.db.batch().durability(mode);
        for op in batch.into_ops() {
            match op {
                WriteOp::Put(space, k, v) => b.insert(self.space(space), k, v),
                WriteOp::Delete(space, k) => b.remove(self.space(space), k),
            }
        }
        b.commit().map_err(map_err)
    }

    fn persist(&self) -> Result<(), KvError> {
        self.db.persist(PersistMode::SyncData).map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use fjall::AbstractTree;

    use super::*;

    /// Index and filter bytes pinned in memory, and table bytes on disk, over all keyspaces
    /// (`Keyspace::tree` is public but hidden from fjall's docs: tests only).
    fn pinned_and_table_bytes(kv: &FjallKv) -> (u64, u64) {
        kv.spaces.iter().fold((0, 0), |(pinned, disk), k| {
            let p = k.tree.pinned_filter_size() + k.tree.pinned_block_index_size();
            (pinned + p as u64, disk + k.disk_space())
        })
    }

    #[test]
    fn pinned_memory_stays_a_sliver_of_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let memory = FjallMemory {
            memtable_bytes: 256 << 10,
            ..FjallMemory::default()
        };
        let kv = FjallKv::open_with(dir.path(), &memory).unwrap();
        // Keys in order, as generated IDs and the changes feed write them: their tables
        // move down the levels without being rewritten.
        let n = 40_000u32;
        for start in (0..n).step_by(500) {
            let mut batch = WriteBatch::new();
            for i in start..start + 500 {
                let id = format!("doc-{i:08}").into_bytes();
                batch.put(Space::Docs, id.clone(), vec![(i % 251) as u8; 400]);
                batch.put(Space::Seq, i.to_be_bytes().to_vec(), id);
            }
            kv.commit(batch, Durability::Buffered).unwrap();
        }
        for k in &kv.spaces {
            k.rotate_memtable_and_wait().unwrap();
        }
        let tables: usize = kv.spaces.iter().map(|k| k.table_count()).sum();
        assert!(tables >= 4, "only {tables} tables: the test needs several");
        let (pinned, disk) = pinned_and_table_bytes(&kv);
        assert!(
            pinned * 2_000 < disk,
            "{pinned} bytes pinned for {disk} bytes of tables"
        );

        // Reads through the partitions find what is there and only that.
        for i in (0..n).step_by(997) {
            let id = format!("doc-{i:08}").into_bytes();
            let got = kv.get(Space::Docs, &id).unwrap();
            assert_eq!(got, Some(vec![(i % 251) as u8; 400]));
            let absent = format!("doc-{i:08}x").into_bytes();
            assert_eq!(kv.get(Space::Docs, &absent).unwrap(), None);
        }
        let feed = kv
            .scan(Space::Seq, (Bound::Unbounded, Bound::Unbounded), usize::MAX)
            .unwrap();
        assert_eq!(feed.len(), n as usize);
        assert!(feed.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
