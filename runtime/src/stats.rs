//! Counters a listener or a replicator keeps while it runs, read with
//! [`Listener::stats`](crate::Listener::stats) and
//! [`Replicator::stats`](crate::Replicator::stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use peerlite_proto::{Direction, DocumentEvent};

/// What a listener (all its connections together) or a replicator (all its
/// connections, one after another) did since it started. Every counter only grows, so
/// a monitor can take rates from two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Documents stored here that the peer sent.
    pub documents_received: u64,
    /// Documents the peer stored that this side sent.
    pub documents_sent: u64,
    /// Documents that did not replicate, either way (refused, rejected, too large, a
    /// blob missing).
    pub documents_failed: u64,
    /// Pulled revisions that conflicted and were resolved here.
    pub conflicts_resolved: u64,
    /// Frames received and their bytes.
    pub frames_received: u64,
    /// Bytes of the frames received.
    pub bytes_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Bytes of the frames sent.
    pub bytes_sent: u64,
    /// Connections that became sync sessions (a listener: authenticated; a replicator:
    /// connected).
    pub connections: u64,
    /// A listener: connections turned away (handshake, authentication, limit). A
    /// replicator: connection attempts that failed and were retried.
    pub connections_failed: u64,
    /// Storage operations run for replication.
    pub storage_operations: u64,
    /// Their time in all, from being handed to the storage worker to their reply.
    pub storage_time: Duration,
    /// The longest of them.
    pub storage_max: Duration,
}

/// The live counters behind a [`SyncStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    documents_received: AtomicU64,
    documents_sent: AtomicU64,
    documents_failed: AtomicU64,
    conflicts_resolved: AtomicU64,
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connections_failed: AtomicU64,
    storage_operations: AtomicU64,
    storage_micros: AtomicU64,
    storage_max_micros: AtomicU64,
}

impl Counters {
    /// A frame of `bytes` bytes received.
    pub(crate) fn received(&self, bytes: usize) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A frame of `bytes` bytes sent.
    pub(crate) fn sent(&self, bytes: usize) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Documents replicated or not; `pushing` is whether this side's push direction is
    /// [`Direction::Push`] (a replicator) or the peer's (a listener).
    pub(crate) fn documents(&self, docs: &[DocumentEvent], pushing: bool) {
        for d in docs {
            let counter = match (&d.error, (d.direction == Direction::Push) == pushing) {
                (Some(_), _) => &self.documents_failed,
                (None, true) => &self.documents_sent,
                (None, false) => &self.documents_received,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if d.conflict_resolved {
                self.conflicts_resolved.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A storage operation that took `took`.
    pub(crate) fn storage(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.storage_operations.fetch_add(1, Ordering::Relaxed);
        self.storage_micros.fetch_add(micros, Ordering::Relaxed);
        self.storage_max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// Adds what `s` counted (a closed connection's figures, kept in the listener's).
    pub(crate) fn absorb(&self, s: &SyncStats) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        add(&self.documents_received, s.documents_received);
        add(&self.documents_sent, s.documents_sent);
        add(&self.documents_failed, s.documents_failed);
        add(&self.conflicts_resolved, s.conflicts_resolved);
        add(&self.frames_received, s.frames_received);
        add(&self.bytes_received, s.bytes_received);
        add(&self.frames_sent, s.frames_sent);
        add(&self.bytes_sent, s.bytes_sent);
        add(&self.connections, s.connections);
        add(&self.connections_failed, s.connections_failed);
        add(&self.storage_operations, s.storage_operations);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        add(&self.storage_micros, micros(s.storage_time));
        self.storage_max_micros
            .fetch_max(micros(s.storage_max), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SyncStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SyncStats {
            documents_received: get(&self.documents_received),
            documents_sent: get(&self.documents_sent),
            documents_failed: get(&self.documents_failed),
            conflicts_resolved: get(&self.conflicts_resolved),
            frames_received: get(&self.frames_received),
            bytes_received: get(&self.bytes_received),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            connections: get(&self.connections),
            connections_failed: get(&self.connections_failed),
            storage_operations: get(&self.storage_operations),
            storage_time: Duration::from_micros(get(&self.storage_micros)),
            storage_max: Duration::from_micros(get(&self.storage_max_micros)),
        }
    }
}

impl std::ops::AddAssign for SyncStats {
    /// Adds another's counts (the longest storage operation is the longer of the two).
    fn add_assign(&mut self, o: SyncStats) {
        self.documents_received += o.documents_received;
        self.documents_sent += o.documents_sent;
        self.documents_failed += o.documents_failed;
        self.conflicts_resolved += o.conflicts_resolved;
        self.frames_received += o.frames_received;
        self.bytes_received += o.bytes_received;
        self.frames_sent += o.frames_sent;
        self.bytes_sent += o.bytes_sent;
        self.connections += o.connections;
        self.connections_failed += o.connections_failed;
        self.storage_operations += o.storage_operations;
        self.storage_time += o.storage_time;
        self.storage_max = self.storage_max.max(o.storage_max);
    }
}
