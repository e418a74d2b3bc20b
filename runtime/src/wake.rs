//! What a connection's driver task waits for, shared by the listener and the replicator.

use std::time::Instant;

use async_channel::{Receiver, Sender};
use async_tungstenite::tungstenite::error::CapacityError;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use bytes::Bytes;
use futures_lite::StreamExt;
use peerlite_proto::{CollectionName, Disconnect, Seq};

use crate::Runtime;
use crate::change_feed::ChangeFeed;

/// What a connection's reader task forwards, in order.
pub(crate) enum ReaderMsg {
    Frame(Bytes),
    /// The connection ended; retryable unless the peer's close code says otherwise.
    Closed(Disconnect),
    /// The peer sent a message larger than this side accepts; the connection is unusable.
    TooBig {
        /// Its size.
        size: usize,
        /// This side's limit.
        max: usize,
    },
}

/// Forwards a connection's messages to its driver until the connection ends. `peer`
/// names the other side in messages ("the listener", "the replicator").
pub(crate) fn spawn_reader<R: Runtime>(
    rt: &R,
    mut receiver: async_tungstenite::WebSocketReceiver<Box<dyn crate::transport::Io>>,
    tx: Sender<ReaderMsg>,
    peer: &'static str,
) {
    rt.spawn_detached(async move {
        let last = loop {
            match receiver.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    if tx.send(ReaderMsg::Frame(bytes)).await.is_err() {
                        return;
                    }
                }
                // A text message is not a Peerlite frame: the state machine rejects it.
                Some(Ok(Message::Text(text))) => {
                    let bytes = Bytes::copy_from_slice(text.as_bytes());
                    if tx.send(ReaderMsg::Frame(bytes)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break ReaderMsg::Closed(match frame {
                        Some(f) => Disconnect::from_close(u16::from(f.code), &f.reason),
                        None => Disconnect::transient(format!("closed by {peer}")),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    break ReaderMsg::TooBig {
                        size,
                        max: max_size,
                    };
                }
                Some(Err(e)) => {
                    break ReaderMsg::Closed(Disconnect::transient(format!(
                        "connection lost: {e}"
                    )));
                }
                None => break ReaderMsg::Closed(Disconnect::transient("connection closed")),
            }
        };
        let _ = tx.send(last).await;
    });
}

/// Forwards a custom transport's frames to its driver until the stream ends; a frame
/// over `max` bytes ends the connection as an over-long WebSocket message does.
pub(crate) fn spawn_stream_reader<R: Runtime>(
    rt: &R,
    mut stream: std::pin::Pin<Box<dyn futures_lite::Stream<Item = std::io::Result<Bytes>> + Send>>,
    tx: Sender<ReaderMsg>,
    max: usize,
) {
    rt.spawn_detached(async move {
        let last = loop {
            match stream.next().await {
                Some(Ok(frame)) if frame.len() > max => {
                    break ReaderMsg::TooBig {
                        size: frame.len(),
                        max,
                    };
                }
                Some(Ok(frame)) => {
                    if tx.send(ReaderMsg::Frame(frame)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    break ReaderMsg::Closed(Disconnect::transient(format!(
                        "connection lost: {e}"
                    )));
                }
                None => break ReaderMsg::Closed(Disconnect::transient("connection closed")),
            }
        };
        let _ = tx.send(last).await;
    });
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
pub(crate) async fn next<R: Runtime, M>(
    rt: &R,
    rx: &Receiver<M>,
    frames: Option<&Receiver<ReaderMsg>>,
    changes: &ChangeFeed,
    deadline: Option<Instant>,
) -> Wake<M> {
    futures_lite::future::or(
        futures_lite::future::or(
            async {
                match frames {
                    Some(f) => Wake::Reader(f.recv().await.ok()),
                    None => std::future::pending().await,
                }
            },
            async { Wake::Msg(rx.recv().await.ok()) },
        ),
        futures_lite::future::or(async { Wake::Changes(changes.next().await) }, async {
            match deadline {
                Some(at) => {
                    rt.sleep_until(at).await;
                    Wake::Tick
                }
                None => std::future::pending().await,
            }
        }),
    )
    .await
}
