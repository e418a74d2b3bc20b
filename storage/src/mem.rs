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
    /// Committed with `Buffered` and not yet persisted, oldest first (and, during a
    /// sync begun by [`MemKv::begin_sync`], every commit).
    pending: Vec<WriteBatch>,
    /// A sync is running: nothing becomes durable until it finishes.
    syncing: bool,
}

/// An in-memory [`KvBackend`].
///
/// It keeps two views: what readers see, and what would survive a crash. Commits with
/// [`Durability::Sync`] or [`Durability::Flush`] are durable at once (this models a process
/// crash); [`Durability::Buffered`] commits become durable on [`KvBackend::persist`].
/// [`MemKv::crash`] throws away everything not yet durable, as killing a process would.
///
/// A simulator that wants to crash a peer while a sync is still running (to model power
/// loss in the middle of an `fdatasync`) brackets that time with [`MemKv::begin_sync`]
/// and [`MemKv::finish_sync`]: commits in between are readable but not durable, whatever
/// their durability.
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
            s.syncing = false;
            s.live = s.durable.clone();
        }
    }

    /// Starts a sync that takes time: until [`MemKv::finish_sync`], every commit (even
    /// with [`Durability::Sync`]) and every [`KvBackend::persist`] leaves its batches
    /// pending, so a [`MemKv::crash`] meanwhile loses them.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use peerlite_storage::{Database, MemKv};
    /// use peerlite_proto::{Body, CollectionName, DocId};
    ///
    /// let kv = Arc::new(MemKv::new());
    /// let db = Database::with_backend(kv.clone(), Default::default())?;
    /// let c = CollectionName::default();
    /// kv.begin_sync();
    /// db.save(&c, &DocId::new("a")?, Body::from_json_str("{}")?)?;
    /// assert_eq!(kv.pending_batches(), 1); // readable, not yet durable
    /// kv.finish_sync();
    /// assert_eq!(kv.pending_batches(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_sync(&self) {
        if let Ok(mut s) = self.lock() {
            s.syncing = true;
        }
    }

    /// Finishes the sync begun by [`MemKv::begin_sync`]: everything committed so far is
    /// durable.
    pub fn finish_sync(&self) {
        if let Ok(mut s) = self.lock() {
            s.syncing = false;
            make_durable(&mut s);
        }
    }

    /// True between [`MemKv::begin_sync`] and [`MemKv::finish_sync`] (or a crash).
    pub fn is_syncing(&self) -> bool {
        self.lock().map(|s| s.syncing).unwrap_or(false)
    }

    /// Number of committed batches that a crash would lose.
    pub fn pending_batches(&self) -> usize {
        self.lock().map(|s| s.pending.len()).unwrap_or(0)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, KvError> {
        self.state.lock().map_err(|_| KvError::Poisoned)
    }
}

/// Applies the pending batches to the durable view, oldest first, as a journal would.
fn make_durable(s: &mut State) {
    let pending = std::mem::take(&mut s.pending);
    for b in &pending {
        apply(&mut s.durable, b);
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
            _ if s.syncing => s.pending.push(batch),
            Durability::Sync | Durability::Flush => {
                // Earlier buffered batches become durable first, as a journal would.
                make_durable(&mut s);
                apply(&mut s.durable, &batch);
            }
            Durability::Buffered => s.pending.push(batch),
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), KvError> {
        let mut s = self.lock()?;
        if !s.syncing {
            make_durable(&mut s);
        }
        Ok(())
    }
}
