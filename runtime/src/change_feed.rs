//! Local changes for a driver task, coalesced.
//!
//! A database calls its change listeners inside every commit, once per committed batch.
//! Forwarding one message per changed document costs a channel send, a wake-up and a
//! state-machine call per document — 100,000 of them for a 100,000-document pull. The
//! state machines only need "collection `c` has changes up to `seq`", so the listener
//! keeps the highest sequence per collection and wakes the task once; the task takes
//! everything that accumulated. A notice is never lost and the writer never blocks.
//!
//! The listener hears of a commit as soon as it is readable ([`NotifyWhen::Visible`]),
//! before its `fdatasync` ends: a live change is on its way to the peer while the disk
//! works. The peer still acknowledges only what it has made durable, and the checkpoint
//! copy kept here is always written after the changes it covers, so a crash loses no
//! acknowledged write and skips no change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_channel::Receiver;
use peerlite_proto::{CollectionName, Seq};
use peerlite_storage::{Database, ListenerToken, NotifyWhen};

/// The receiving end: what changed since the last [`ChangeFeed::next`].
pub(crate) struct ChangeFeed {
    pending: Arc<Mutex<BTreeMap<CollectionName, Seq>>>,
    wake: Receiver<()>,
}

/// Registers a change listener on `db`. Remove it with the returned token when done.
pub(crate) fn watch(db: &Database) -> (ListenerToken, ChangeFeed) {
    let pending: Arc<Mutex<BTreeMap<CollectionName, Seq>>> = Arc::default();
    let (wake_tx, wake) = async_channel::bounded(1);
    let shared = pending.clone();
    let token = db.add_change_listener_when(NotifyWhen::Visible, move |notices| {
        {
            let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
            for n in notices {
                let seq = p.entry(n.collection.clone()).or_insert(n.seq);
                *seq = (*seq).max(n.seq);
            }
        }
        // Full means a wake-up is already pending: it will see these changes too.
        let _ = wake_tx.try_send(());
    });
    (token, ChangeFeed { pending, wake })
}

impl ChangeFeed {
    /// Waits until something changed, and returns the highest new sequence per
    /// collection. Pending forever once the database's listener is gone.
    pub(crate) async fn next(&self) -> Vec<(CollectionName, Seq)> {
        loop {
            if self.wake.recv().await.is_err() {
                return std::future::pending().await;
            }
            let taken =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            if !taken.is_empty() {
                return taken.into_iter().collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlite_proto::{Body, DocId};

    #[test]
    fn coalesces_and_never_loses_a_change() {
        let db = Database::in_memory().unwrap();
        let c = CollectionName::default();
        let (token, feed) = watch(&db);
        let doc = |i: u32| {
            (
                DocId::new(format!("d{i}")).unwrap(),
                Body::from_json_str(&format!(r#"{{"i": {i}}}"#)).unwrap(),
            )
        };
        db.save_batch(&c, (0..50).map(doc)).unwrap();
        db.save_batch(&c, (50..60).map(doc)).unwrap();
        let got = futures_lite::future::block_on(feed.next());
        assert_eq!(got, vec![(c.clone(), Seq(60))]);
        // Nothing more is pending: the next change wakes it again.
        db.save_batch(&c, (60..61).map(doc)).unwrap();
        assert_eq!(
            futures_lite::future::block_on(feed.next()),
            vec![(c.clone(), Seq(61))]
        );
        assert!(db.remove_change_listener(token));
    }
}
