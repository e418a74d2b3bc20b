//! A small cache of document records read twice in a row, in front of any [`KvBackend`].
//!
//! Replication reads most documents twice in a row: a receiver first answers which
//! proposed revisions it lacks (reading each document), then inserts the ones it asked
//! for (reading each again). On an LSM tree a point read is a search of the memtables
//! and of every level's filters, indexes and blocks — several microseconds even when the
//! blocks are cached. [`CachedKv`] keeps what the first read found so that the second
//! read is a hash lookup.
//!
//! Only reads made with [`KvBackend::get_for_reuse`] fill the cache; every point read of
//! [`Space::Docs`] consults it. So a sender reading 100,000 documents once each pays a
//! lookup per read, not the cost of filling a cache it will not use again. Scans and the
//! other keyspaces pass through. Absent keys are not kept: the LSM tree's filters
//! already answer those cheaply, and a receiver that gets 100,000 new documents would
//! only churn the cache with them.
//!
//! # Coherence
//!
//! Every write goes through [`CachedKv::commit`], which removes the batch's document keys
//! from the cache *before* the backend commits, and refuses to cache anything read while
//! a commit is in flight or that a commit overlapped. So a reader never gets from the
//! cache a value older than what the backend holds, and reads stay monotonic: once a
//! thread has seen a write, it never sees the value before it again.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::KvError;
use crate::kv::{Durability, KvBackend, KvPair, Space, WriteBatch, WriteOp};

/// Bytes counted for each entry besides its key and value (hash-table slot, headers).
const ENTRY_OVERHEAD: usize = 64;

/// A [`KvBackend`] that keeps up to a byte budget of document records read with
/// [`KvBackend::get_for_reuse`], and answers later reads of them.
///
/// [`Database::open`](crate::Database::open) puts one in front of [`FjallKv`](crate::FjallKv)
/// (its size is [`FjallMemory::record_cache_bytes`](crate::FjallMemory::record_cache_bytes)).
/// Wrap your own backend the same way when its point reads are costly.
///
/// Every write must go through the `CachedKv`: one made to the wrapped backend directly,
/// or lost in a simulated crash ([`MemKv::crash`](crate::MemKv::crash)), is not seen by
/// the cache. After such a crash, wrap the backend in a new `CachedKv`.
///
/// ```
/// use std::sync::Arc;
/// use peerlite_storage::{CachedKv, Database, DatabaseConfig, MemKv};
/// use peerlite_proto::{Body, CollectionName, DocId};
///
/// let kv = Arc::new(CachedKv::new(MemKv::new(), 1 << 20));
/// let db = Database::with_backend(kv.clone(), DatabaseConfig::default())?;
/// let (c, id) = (CollectionName::default(), DocId::new("a")?);
/// let rev = db.save(&c, &id, Body::from_json_str(r#"{"n": 1}"#)?)?.rev;
/// db.revs_diff(&c, &[(id.clone(), rev)])?; // read from the backend, and kept
/// db.get(&c, &id)?; // from the cache
/// assert_eq!(kv.stats().hits, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CachedKv<B> {
    inner: B,
    /// Bytes the cache may hold; half of it in each generation.
    capacity: usize,
    state: Mutex<State>,
}

/// Counters of a [`CachedKv`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Document reads answered from the cache.
    pub hits: u64,
    /// Document reads that went to the backend.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now (keys, values and per-entry overhead).
    pub bytes: usize,
}

type Value = Box<[u8]>;

/// Two generations: entries go into `young`; when it holds half the budget, `old` is
/// dropped and `young` becomes `old`. A hit in `old` moves the entry back to `young`.
/// That approximates least-recently-used eviction without a list per entry.
#[derive(Default)]
struct State {
    young: HashMap<Box<[u8]>, Value>,
    old: HashMap<Box<[u8]>, Value>,
    young_bytes: usize,
    old_bytes: usize,
    /// Changes at the start and at the end of every commit.
    epoch: u64,
    /// Commits under way.
    committing: usize,
    hits: u64,
    misses: u64,
}

fn weight(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl State {
    fn lookup(&mut self, key: &[u8], capacity: usize) -> Option<Value> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let (k, v) = self.old.remove_entry(key)?;
        self.old_bytes -= weight(&k, &v);
        self.insert(k, v.clone(), capacity);
        Some(v)
    }

    fn insert(&mut self, key: Box<[u8]>, value: Value, capacity: usize) {
        let w = weight(&key, &value);
        if w > capacity / 2 {
            return;
        }
        if self.young_bytes + w > capacity / 2 {
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = std::mem::replace(&mut self.young_bytes, 0);
        }
        let key_len = key.len();
        if let Some(previous) = self.young.insert(key, value) {
            self.young_bytes -= key_len + previous.len() + ENTRY_OVERHEAD;
        }
        self.young_bytes += w;
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some((k, v)) = self.young.remove_entry(key) {
            self.young_bytes -= weight(&k, &v);
        }
        if let Some((k, v)) = self.old.remove_entry(key) {
            self.old_bytes -= weight(&k, &v);
        }
    }
}

impl<B: KvBackend> CachedKv<B> {
    /// Caches up to about `capacity_bytes` of document records read from `inner`
    /// (0 turns the cache off).
    pub fn new(inner: B, capacity_bytes: usize) -> CachedKv<B> {
        CachedKv {
            inner,
            capacity: capacity_bytes,
            state: Mutex::new(State::default()),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            hits: s.hits,
            misses: s.misses,
            entries: s.young.len() + s.old.len(),
            bytes: s.young_bytes + s.old_bytes,
        }
    }

    /// A cached document record, or on a miss the epoch to check before keeping what
    /// the backend returns.
    fn lookup(&self, key: &[u8]) -> Result<Vec<u8>, u64> {
        let mut s = self.lock();
        match s.lookup(key, self.capacity) {
            Some(v) => {
                s.hits += 1;
                Ok(Vec::from(v))
            }
            None => {
                s.misses += 1;
                Err(s.epoch)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent at every unlock (no code here panics while holding it).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<B: KvBackend> KvBackend for CachedKv<B> {
    fn compact(&self) -> Result<u64, KvError> {
        // Compaction rewrites files, not values: what the cache holds stays true.
        self.inner().compact()
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if space == Space::Docs
            && self.capacity > 0
            && let Ok(v) = self.lookup(key)
        {
            return Ok(Some(v));
        }
        self.inner.get(space, key)
    }

    fn get_for_reuse(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if space != Space::Docs || self.capacity == 0 {
            return self.inner.get(space, key);
        }
        let epoch = match self.lookup(key) {
            Ok(v) => return Ok(Some(v)),
            Err(epoch) => epoch,
        };
        let value = self.inner.get(space, key)?;
        let mut s = self.lock();
        // Kept only when no commit overlapped the read: a commit under way or finished
        // since may have changed the key.
        if let Some(v) = &value
            && s.epoch == epoch
            && s.committing == 0
        {
            s.insert(Box::from(key), Box::from(v.as_slice()), self.capacity);
        }
        Ok(value)
    }

    fn scan(
        &self,
        space: Space,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        limit: usize,
    ) -> Result<Vec<KvPair>, KvError> {
        self.inner.scan(space, range, limit)
    }

    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), KvError> {
        {
            let mut s = self.lock();
            for op in batch.ops() {
                match op {
                    WriteOp::Put(Space::Docs, key, _) | WriteOp::Delete(Space::Docs, key) => {
                        s.remove(key);
                    }
                    _ => {}
                }
            }
            s.epoch += 1;
            s.committing += 1;
        }
        let result = self.inner.commit(batch, durability);
        let mut s = self.lock();
        s.epoch += 1;
        s.committing -= 1;
        result
    }

    fn persist(&self) -> Result<(), KvError> {
        self.inner.persist()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::MemKv;

    fn put(kv: &dyn KvBackend, key: &[u8], value: &[u8]) {
        let mut b = WriteBatch::new();
        b.put(Space::Docs, key.to_vec(), value.to_vec());
        kv.commit(b, Durability::Sync).unwrap();
    }

    #[test]
    fn second_read_is_a_hit_and_writes_are_seen() {
        let kv = CachedKv::new(MemKv::new(), 1 << 20);
        // Absent keys are not kept.
        assert_eq!(kv.get_for_reuse(Space::Docs, b"k").unwrap(), None);
        assert_eq!(kv.get_for_reuse(Space::Docs, b"k").unwrap(), None);
        assert_eq!(kv.stats().entries, 0);
        put(&kv, b"k", b"v1");
        assert_eq!(
            kv.get_for_reuse(Space::Docs, b"k").unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(
            kv.get_for_reuse(Space::Docs, b"k").unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        let mut b = WriteBatch::new();
        b.delete(Space::Docs, b"k".to_vec());
        kv.commit(b, Durability::Sync).unwrap();
        assert_eq!(kv.get_for_reuse(Space::Docs, b"k").unwrap(), None);
        let s = kv.stats();
        assert_eq!((s.hits, s.misses), (1, 4));
    }

    #[test]
    fn plain_reads_consult_the_cache_without_filling_it() {
        let kv = CachedKv::new(MemKv::new(), 1 << 20);
        put(&kv, b"k", b"v");
        kv.get(Space::Docs, b"k").unwrap();
        kv.get(Space::Docs, b"k").unwrap();
        assert_eq!(kv.stats().entries, 0);
        kv.get_for_reuse(Space::Docs, b"k").unwrap();
        assert_eq!(
            kv.get(Space::Docs, b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        let s = kv.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 3, 1));
    }

    #[test]
    fn other_keyspaces_pass_through() {
        let kv = CachedKv::new(MemKv::new(), 1 << 20);
        let mut b = WriteBatch::new();
        b.put(Space::Local, b"k".to_vec(), b"v".to_vec());
        kv.commit(b, Durability::Sync).unwrap();
        assert!(kv.get_for_reuse(Space::Local, b"k").unwrap().is_some());
        assert!(kv.get(Space::Local, b"k").unwrap().is_some());
        assert_eq!(kv.stats(), CacheStats::default());
    }

    #[test]
    fn stays_within_its_budget_and_keeps_recent_entries() {
        let capacity = 16 << 10;
        let kv = CachedKv::new(MemKv::new(), capacity);
        for i in 0..1000u32 {
            put(&kv, &i.to_be_bytes(), &[7; 100]);
            kv.get_for_reuse(Space::Docs, &i.to_be_bytes()).unwrap();
            // Keep entry 0 in use: it must survive the churn.
            kv.get_for_reuse(Space::Docs, &0u32.to_be_bytes()).unwrap();
            assert!(kv.stats().bytes <= capacity, "{:?}", kv.stats());
        }
        let before = kv.stats();
        kv.get_for_reuse(Space::Docs, &0u32.to_be_bytes()).unwrap();
        kv.get_for_reuse(Space::Docs, &999u32.to_be_bytes())
            .unwrap();
        assert_eq!(kv.stats().hits, before.hits + 2);
        // An entry over half the budget is never kept.
        put(&kv, b"big", &vec![1; capacity]);
        kv.get_for_reuse(Space::Docs, b"big").unwrap();
        assert!(kv.stats().bytes <= capacity);
        // No cache at all with a zero budget.
        let off = CachedKv::new(MemKv::new(), 0);
        off.get_for_reuse(Space::Docs, b"k").unwrap();
        assert_eq!(off.stats(), CacheStats::default());
    }

    #[test]
    fn rewriting_a_cached_key_keeps_the_byte_count_right() {
        let kv = CachedKv::new(MemKv::new(), 1 << 20);
        for len in [10, 500, 3, 0] {
            put(&kv, b"k", &vec![0; len]);
            kv.get_for_reuse(Space::Docs, b"k").unwrap();
            assert_eq!(kv.stats().bytes, 1 + len + ENTRY_OVERHEAD);
        }
        // Re-inserting a young key directly (as a hit in the old generation would).
        let mut s = State::default();
        s.insert(Box::from(&b"k"[..]), Box::from(&[0u8; 40][..]), 1 << 20);
        s.insert(Box::from(&b"k"[..]), Box::from(&[0u8; 4][..]), 1 << 20);
        assert_eq!(s.young_bytes, 1 + 4 + ENTRY_OVERHEAD);
    }

    /// One writer bumps a counter stored in a few keys while readers read them: no
    /// reader ever sees a key's value go backwards, and at the end all see the last one.
    #[test]
    fn reads_racing_commits_are_monotonic() {
        let kv = Arc::new(CachedKv::new(MemKv::new(), 4 << 10));
        let keys: Vec<[u8; 1]> = (0..4u8).map(|k| [k]).collect();
        for k in &keys {
            put(kv.as_ref(), k, &0u32.to_be_bytes());
        }
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (kv, done, keys) = (kv.clone(), done.clone(), keys.clone());
                std::thread::spawn(move || {
                    let mut last = [0u32; 4];
                    while !done.load(Ordering::Acquire) {
                        for (i, k) in keys.iter().enumerate() {
                            // Alternately fill the cache and only consult it.
                            let v = if i % 2 == 0 {
                                kv.get_for_reuse(Space::Docs, k)
                            } else {
                                kv.get(Space::Docs, k)
                            };
                            let v = v.unwrap().unwrap();
                            let v = u32::from_be_bytes(v.try_into().unwrap());
                            assert!(v >= last[i], "key {i} went from {} to {v}", last[i]);
                            last[i] = v;
                        }
                    }
                })
            })
            .collect();
        let rounds = 20_000u32;
        for n in 1..=rounds {
            let mut b = WriteBatch::new();
            for k in &keys {
                b.put(Space::Docs, k.to_vec(), n.to_be_bytes().to_vec());
            }
            kv.commit(b, Durability::Sync).unwrap();
        }
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().unwrap();
        }
        for k in &keys {
            let v = kv.get_for_reuse(Space::Docs, k).unwrap().unwrap();
            assert_eq!(u32::from_be_bytes(v.try_into().unwrap()), rounds);
        }
        assert!(kv.stats().hits > 0);
    }
}
