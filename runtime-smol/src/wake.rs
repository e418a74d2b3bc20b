//! What a connection's driver task waits for, shared by the listener and the replicator.

use std::time::Instant;

use async_channel::Receiver;
use bytes::Bytes;
use peerlite_proto::{CollectionName, Seq};

use crate::change_feed::ChangeFeed;

/// What a connection's reader task forwards, in order.
pub(crate) enum ReaderMsg {
    Frame(Bytes),
    Closed(String),
}

/// Why a driver woke up.
pub(crate) enum Wake<M> {
    /// A control message or storage reply (`None`: every sender is gone).
    Msg(Option<M>),
    /// A frame or the end of the connection (`None`: the reader is gone).
    Reader(Option<ReaderMsg>),
    /// Local changes, the highest new sequence per collection.
    Changes(Vec<(CollectionName, Seq)>),
    /// The state machine's timer is due.
    Tick,
}

/// Waits for the first of: a message on `rx`, a frame from `frames`, local changes, or
/// `deadline`.
pub(crate) async fn next<M>(
    rx: &Receiver<M>,
    frames: Option<&Receiver<ReaderMsg>>,
    changes: &ChangeFeed,
    deadline: Option<Instant>,
) -> Wake<M> {
    smol::future::or(
        smol::future::or(
            async {
                match frames {
                    Some(f) => Wake::Reader(f.recv().await.ok()),
                    None => std::future::pending().await,
                }
            },
            async { Wake::Msg(rx.recv().await.ok()) },
        ),
        smol::future::or(async { Wake::Changes(changes.next().await) }, async {
            match deadline {
                Some(at) => {
                    smol::Timer::at(at).await;
                    Wake::Tick
                }
                None => std::future::pending().await,
            }
        }),
    )
    .await
}
