//! A connection's storage operations, run in order, one group at a time.
//!
//! Each state machine's operations go to one worker thread, which takes everything that
//! queued up while its previous group ran and runs it in order: consecutive revision
//! inserts as one [`Database::execute_many`] call, so they share one durable commit
//! (group commit), and every other operation alone, its reply sent as soon as it is done.
//! At most one thread per connection touches the store, and a busy store makes bigger
//! groups instead of piling up threads.
//!
//! The worker is a plain thread blocked on its queue rather than a task that hands each
//! group to the blocking pool: an operation then costs one wake-up there and one back,
//! instead of four (task, pool thread, task, driver). And a small read submitted while
//! nothing is queued runs at once on the caller's thread, with no wake-up at all: on an
//! idle connection, a live change is read that way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_channel::{Receiver, Sender};
use peerlite_proto::{OpId, StorageOp, StorageReply};
use peerlite_storage::Database;

/// Most operations run in one group.
const MAX_GROUP: usize = 64;

/// Most documents a read may name to run on the caller's thread.
const SMALL_READ: usize = 16;

/// One state machine's storage: the worker and what it still has to do.
pub(crate) struct Storage {
    db: Database,
    queue: Sender<(OpId, StorageOp)>,
    /// Operations queued or running on the worker, whose replies are not yet sent.
    pending: Arc<AtomicUsize>,
    /// Whether there is no worker thread.
    inline: bool,
}

impl Storage {
    /// Runs `op` at once and returns its reply when it is a small read and nothing is
    /// queued before it (so it sees every earlier write); otherwise queues it for the
    /// worker, whose reply arrives on the replies channel.
    pub(crate) fn submit(&self, id: OpId, op: StorageOp) -> Option<StorageReply> {
        if self.inline || (self.pending.load(Ordering::Acquire) == 0 && is_small_read(&op)) {
            return self.db.execute_many(vec![op]).pop();
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send((id, op)).is_err() {
            // The worker is gone (the connection is ending): nothing will answer.
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        None
    }
}

fn is_small_read(op: &StorageOp) -> bool {
    match op {
        StorageOp::GetLocal { .. } | StorageOp::Changes { .. } => true,
        StorageOp::GetLeaves { ids, .. } => ids.len() <= SMALL_READ,
        StorageOp::RevsDiff { revs, .. } | StorageOp::GetRevisions { revs, .. } => {
            revs.len() <= SMALL_READ
        }
        _ => false,
    }
}

/// Starts a worker for `db`. It sends each reply, wrapped by `wrap`, to `replies`, in
/// the order the operations were queued, and ends when the returned [`Storage`] is
/// dropped, after running what is queued.
pub(crate) fn spawn<M: Send + 'static>(
    db: Database,
    replies: Sender<M>,
    wrap: fn(OpId, StorageReply) -> M,
) -> Storage {
    let (queue, ops) = async_channel::unbounded::<(OpId, StorageOp)>();
    let pending = Arc::new(AtomicUsize::new(0));
    let worker = Worker {
        db: db.clone(),
        ops,
        pending: pending.clone(),
    };
    let spawned = std::thread::Builder::new()
        .name("peerlite-storage".into())
        .spawn(move || worker.serve(&replies, wrap));
    Storage {
        db,
        queue,
        pending,
        // No thread to be had: every operation runs on the caller's thread instead.
        inline: spawned.is_err(),
    }
}

#[derive(Clone)]
struct Worker {
    db: Database,
    ops: Receiver<(OpId, StorageOp)>,
    pending: Arc<AtomicUsize>,
}

impl Worker {
    /// Runs groups until the queue's sender is dropped. Once `replies` is closed (the
    /// connection ended) what is still queued runs all the same: it is what the machine
    /// asked for last, such as setting aside a blob it was receiving.
    fn serve<M>(&self, replies: &Sender<M>, wrap: fn(OpId, StorageReply) -> M) {
        while let Ok(first) = self.ops.recv_blocking() {
            for run in runs(self.take_group(first)) {
                let (ids, ops): (Vec<OpId>, Vec<StorageOp>) = run.into_iter().unzip();
                for (id, reply) in ids.into_iter().zip(self.db.execute_many(ops)) {
                    // No one listening any more: the reply is dropped.
                    let _ = replies.send_blocking(wrap(id, reply));
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// `first` and whatever else is queued (up to [`MAX_GROUP`]).
    fn take_group(&self, first: (OpId, StorageOp)) -> Vec<(OpId, StorageOp)> {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match self.ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        group
    }
}

/// Splits a group, in order, into what runs together: consecutive revision inserts (one
/// durable commit for all of them), and every other operation alone, so that its reply
/// goes out as soon as it is done — a receiver's revs-diff for the first batch of a
/// resync is not held back until the next three batches' revs-diffs have run.
fn runs(group: Vec<(OpId, StorageOp)>) -> Vec<Vec<(OpId, StorageOp)>> {
    let is_insert = |op: &StorageOp| matches!(op, StorageOp::InsertRevisions { .. });
    let mut runs: Vec<Vec<(OpId, StorageOp)>> = Vec::new();
    for (id, op) in group {
        match runs.last_mut() {
            Some(run) if is_insert(&op) && run.last().is_some_and(|(_, prev)| is_insert(prev)) => {
                run.push((id, op))
            }
            _ => runs.push(vec![(id, op)]),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlite_proto::CollectionName;

    fn read(n: u64) -> (OpId, StorageOp) {
        (
            OpId(n),
            StorageOp::GetLocal {
                id: format!("cp-{n}"),
            },
        )
    }

    fn insert(n: u64) -> (OpId, StorageOp) {
        let op = StorageOp::InsertRevisions {
            collection: CollectionName::default(),
            inserts: Vec::new(),
        };
        (OpId(n), op)
    }

    #[test]
    fn inserts_run_together_and_everything_else_alone_in_order() {
        let group = vec![read(1), read(2), insert(3), insert(4), read(5), insert(6)];
        let ids: Vec<Vec<u64>> = runs(group)
            .iter()
            .map(|run| run.iter().map(|(id, _)| id.0).collect())
            .collect();
        assert_eq!(ids, vec![vec![1], vec![2], vec![3, 4], vec![5], vec![6]]);
    }

    #[test]
    fn queued_operations_are_answered_in_order() {
        let db = Database::in_memory().unwrap();
        let (tx, rx) = async_channel::unbounded();
        let storage = spawn(db, tx, |id, reply| (id, reply));
        let (id, op) = read(1);
        assert!(
            storage.submit(id, op).is_some(),
            "a small read with nothing queued runs at once"
        );
        let big_read = StorageOp::GetLeaves {
            collection: CollectionName::default(),
            ids: (0..=SMALL_READ)
                .map(|i| peerlite_proto::DocId::new(format!("d{i}")).unwrap())
                .collect(),
            max_history: 1,
        };
        for (id, op) in [insert(2), (OpId(3), big_read), insert(4), insert(5)] {
            assert!(storage.submit(id, op).is_none(), "queued");
        }
        let got: Vec<u64> = (0..4).map(|_| rx.recv_blocking().unwrap().0.0).collect();
        assert_eq!(got, vec![2, 3, 4, 5]);
    }

    #[test]
    fn what_is_queued_runs_after_the_connection_stopped_listening() {
        let db = Database::in_memory().unwrap();
        let (tx, rx) = async_channel::unbounded();
        let storage = spawn(db.clone(), tx, |id, reply| (id, reply));
        for n in 0..1000u64 {
            let op = StorageOp::PutLocal {
                id: format!("last-{n}"),
                value: bytes::Bytes::from_static(b"x"),
            };
            assert!(storage.submit(OpId(n), op).is_none());
        }
        drop(rx);
        drop(storage);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while db.get_local("last-999").unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue was dropped"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
