//! A connection's storage operations, run in order, one group at a time.
//!
//! Each state machine's operations go to one worker task, which runs everything that
//! queued up while its previous group ran as one [`Database::execute_many`] call on the
//! blocking pool. Consecutive revision inserts therefore share one durable commit (group
//! commit), at most one thread per connection touches the store, and a busy store
//! makes bigger groups instead of piling up threads.

use async_channel::Sender;
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
    smol::spawn(async move {
        while let Ok(first) = ops.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match ops.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            let (ids, group): (Vec<OpId>, Vec<StorageOp>) = group.into_iter().unzip();
            let db = db.clone();
            let results = smol::unblock(move || db.execute_many(group)).await;
            for (id, reply) in ids.into_iter().zip(results) {
                if replies.send(wrap(id, reply)).await.is_err() {
                    return;
                }
            }
        }
    })
    .detach();
    tx
}
