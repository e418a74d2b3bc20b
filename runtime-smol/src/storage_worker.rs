//! A connection's storage operations, run in order, one group at a time.
//!
//! Each state machine's operations go to one worker thread, which runs everything that
//! queued up while its previous group ran as one [`Database::execute_many`] call.
//! Consecutive revision inserts therefore share one durable commit (group commit), at
//! most one thread per connection touches the store, and a busy store makes bigger
//! groups instead of piling up threads.
//!
//! The worker is a plain thread blocked on its queue rather than a task that hands each
//! group to the blocking pool: an operation then costs one wake-up there and one back,
//! instead of four (task, pool thread, task, driver). On an idle connection that is most
//! of the latency of a live change.

use async_channel::{Receiver, Sender};
use peerlite_proto::{OpId, StorageOp, StorageReply};
use peerlite_storage::Database;

/// Most operations run in one group.
const MAX_GROUP: usize = 64;

/// Starts a worker for `db`. It sends each reply, wrapped by `wrap`, to `replies`, in
/// the order the operations were queued, and ends when the returned sender is dropped
/// (after running what is queued) or `replies` is closed.
pub(crate) fn spawn<M: Send + 'static>(
    db: Database,
    replies: Sender<M>,
    wrap: fn(OpId, StorageReply) -> M,
) -> Sender<(OpId, StorageOp)> {
    let (tx, ops) = async_channel::unbounded::<(OpId, StorageOp)>();
    let thread_ops = ops.clone();
    let thread_db = db.clone();
    let thread_replies = replies.clone();
    let spawned = std::thread::Builder::new()
        .name("peerlite-storage".into())
        .spawn(move || {
            while let Ok(first) = thread_ops.recv_blocking() {
                let (ids, results) = run_group(&thread_db, first, &thread_ops);
                for (id, reply) in ids.into_iter().zip(results) {
                    if thread_replies.send_blocking(wrap(id, reply)).is_err() {
                        return;
                    }
                }
            }
        });
    if spawned.is_err() {
        // No thread to be had: run the groups on the blocking pool instead.
        smol::spawn(async move {
            while let Ok(first) = ops.recv().await {
                let db = db.clone();
                let queue = ops.clone();
                let (ids, results) = smol::unblock(move || run_group(&db, first, &queue)).await;
                for (id, reply) in ids.into_iter().zip(results) {
                    if replies.send(wrap(id, reply)).await.is_err() {
                        return;
                    }
                }
            }
        })
        .detach();
    }
    tx
}

/// Runs `first` and whatever else is queued (up to [`MAX_GROUP`]) as one group.
fn run_group(
    db: &Database,
    first: (OpId, StorageOp),
    ops: &Receiver<(OpId, StorageOp)>,
) -> (Vec<OpId>, Vec<StorageReply>) {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match ops.try_recv() {
            Ok(op) => group.push(op),
            Err(_) => break,
        }
    }
    let (ids, group): (Vec<OpId>, Vec<StorageOp>) = group.into_iter().unzip();
    (ids, db.execute_many(group))
}
