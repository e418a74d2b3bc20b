//! The in-memory backend, with a crash model for simulations.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::KvError;
use crate::kv::{Durability, KvBackend, KvPair, Space, WriteBatch, WriteOp};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct State {
    /// What readers see: every committed batch.
    live: [Map; 4],
    /// What survives a crash: batches committed with `Sync` or `Flush`, or persisted.
    durable: [Map; 4],
    /// Committed with `Buffered` and not yet persisted, oldest first.
    pending: Vec<WriteBatch>,
}

/// An in-memory [`KvBackend`].
///
/// It keeps two views: what readers see, and what would survive a crash. Commits with
/// [`Durability::Sync`] or [`Durability::Flush`] are durable at once (this models a process
/// crash); [`Durability::Buffered`] commits become durable on [`KvBackend::persist`].
/// [`MemKv::crash`] throws away everything not yet durable, as killing a process would.
///
/// ```
/// use std::sync::Arc;
/// use peerlite_storage::{Database, DatabaseConfig, Durability, MemKv};
/// use peerlite_proto::{Body, CollectionName, DocId};
///
/// let kv = Arc::new(MemKv::new());
/// let config = DatabaseConfig { durability: Durability::Buffered, ..DatabaseConfig::default() };
/// let db = Database::with_backend(kv.clone(), config.clone())?;
/// let c = CollectionName::default();
/// db.save(&c, &DocId::new("a")?, Body::from_json_str(r#"{"n": 1}"#)?)?;
/// drop(db);
/// kv.crash();
/// let db = Database::with_backend(kv, config)?;
/// assert!(db.get(&c, &DocId::new("a")?)?.is_none()); // the buffered write was lost
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct MemKv {
    state: Mutex<State>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> MemKv {
        MemKv::default()
    }

    /// Simulates a crash: commits that were not yet durable are lost.
    ///
    /// Reopen the store with [`Database::with_backend`](crate::Database::with_backend)
    /// afterwards; a `Database` that was open during the crash must not be used again.
    pub fn crash(&self) {
        if let Ok(mut s) = self.lock() {
            s.pending.clear();
            s.live = s.durable.clone();
        }
    }

    /// Number of committed batches that a crash would lose.
    pub fn pending_batches(&self) -> usize {
        self.lock().map(|s| s.pending.len()).unwrap_or(0)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, KvError> {
        self.state.lock().map_err(|_| KvError::Poisoned)
    }
}

fn apply(maps: &mut [Map; 4], batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            WriteOp::Put(space, k, v) => {
                maps[index(*space)].insert(k.clone(), v.clone());
            }
            WriteOp::Delete(space, k) => {
                maps[index(*space)].remove(k);
            }
        }
    }
}

fn index(space: Space) -> usize {
    match space {
        Space::Docs => 0,
        Space::Seq => 1,
        Space::Local => 2,
        Space::Meta => 3,
    }
}

impl KvBackend for MemKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.lock()?.live[index(space)].get(key).cloned())
    }

    fn scan(
        &self,
        space: Space,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        limit: usize,
    ) -> Result<Vec<KvPair>, KvError> {
        let s = self.lock()?;
        Ok(s.live[index(space)]
            .range(range)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), KvError> {
        let mut s = self.lock()?;
        apply(&mut s.live, &batch);
        match durability {
            Durability::Sync | Durability::Flush => {
                // Earlier buffered batches become durable first, as a journal would.
                let pending = std::mem::take(&mut s.pending);
                for b in &pending {
                    apply(&mut s.durable, b);
                }
                apply(&mut s.durable, &batch);
            }
            Durability::Buffered => s.pending.push(batch),
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), KvError> {
        let mut s = self.lock()?;
        let pending = std::mem::take(&mut s.pending);
        for b in &pending {
            apply(&mut s.durable, b);
        }
        Ok(())
    }
}
