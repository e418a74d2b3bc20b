//! The key-value contract that both backends implement.
//!
//! All document logic lives once, in [`Database`](crate::Database), on top of this trait;
//! a backend only stores bytes. That is what lets the in-memory backend stand in for fjall
//! in the simulator with identical semantics.

use std::ops::Bound;

use crate::KvError;

/// The keyspaces of a Peerlite database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// Document records: collection id ‖ document ID → revision tree and sequence.
    Docs,
    /// The changes feed: collection id ‖ sequence (big-endian) → document ID and revision.
    Seq,
    /// Local (non-replicated) documents such as checkpoints.
    Local,
    /// Database metadata: UUID, collections, last sequences.
    Meta,
}

impl Space {
    /// Every keyspace.
    pub const ALL: [Space; 4] = [Space::Docs, Space::Seq, Space::Local, Space::Meta];

    /// The keyspace's on-disk name.
    pub fn name(self) -> &'static str {
        match self {
            Space::Docs => "docs",
            Space::Seq => "seq",
            Space::Local => "local",
            Space::Meta => "meta",
        }
    }
}

/// How durable a commit is when it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// The data is on stable storage (`fdatasync`) before the commit returns: survives a
    /// power loss. The default, and what acknowledging a pushed revision requires.
    #[default]
    Sync,
    /// The data is handed to the operating system: survives the process being killed,
    /// not a power loss.
    Flush,
    /// The data may sit in a process buffer: a crash can lose the latest commits (never
    /// part of one). Call [`Database::persist`](crate::Database::persist) to make it durable.
    Buffered,
}

/// One write in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Space, Vec<u8>),
}

/// Writes that commit atomically: after a crash either all of them are present or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(WriteOp::Put(space, key, value));
    }

    /// Adds a delete.
    pub fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete(space, key));
    }

    /// The writes, in order (a later write to the same key wins).
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Consumes the batch.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

/// A key-value pair returned by [`KvBackend::scan`].
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An ordered key-value store with atomic multi-keyspace batches.
pub trait KvBackend: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;

    /// Reads one key that will soon be read again (replication reads a document to
    /// answer a proposal, then again to insert the revisions it asked for). A caching
    /// backend such as [`CachedKv`](crate::CachedKv) keeps it; others just read it.
    fn get_for_reuse(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.get(space, key)
    }

    /// Reads up to `limit` pairs with keys in `range`, in ascending key order.
    fn scan(
        &self,
        space: Space,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        limit: usize,
    ) -> Result<Vec<KvPair>, KvError>;

    /// Applies every write of `batch` atomically, with the given durability.
    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), KvError>;

    /// Makes every commit so far durable (as [`Durability::Sync`]).
    fn persist(&self) -> Result<(), KvError>;

    /// Rewrites the store's files so that deleted and overwritten data gives its space
    /// back, blocking until done; returns the bytes the store's files shrank by. A store
    /// with nothing to rewrite (in memory) does nothing.
    fn compact(&self) -> Result<u64, KvError> {
        Ok(0)
    }
}
