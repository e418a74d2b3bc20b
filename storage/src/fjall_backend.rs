//! The on-disk backend on fjall.

use std::ops::Bound;
use std::path::Path;

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
        let memtable = memory.memtable_bytes;
        let open = |space: Space| {
            db.keyspace(space.name(), || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
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
