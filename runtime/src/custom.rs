//! Custom transports: a replicator and a listener over any message-oriented duplex the
//! application supplies (a Unix domain socket, Bluetooth, a serial link, an in-process
//! pipe) instead of TCP and WebSockets — Couchbase Lite's `MessageEndpoint`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::Stream;
use futures_sink::Sink;

/// A connection over a transport the application supplies: a [`Sink`] that sends frames
/// and a [`Stream`] that yields the peer's, one frame per message.
///
/// The transport must be **reliable** (no frame lost or altered), **ordered** (frames
/// arrive in the order sent) and **keep message boundaries** (each frame sent arrives
/// as one item, whole — a byte stream needs framing, for instance a length prefix, as
/// tokio-util's `LengthDelimitedCodec` gives). It needs no security of its own beyond
/// what the application wants: Peerlite adds no TLS and no authentication over it, and
/// a listener serving it treats the peer as any user of its collections.
///
/// The stream ending, or yielding an error, ends the connection; so does the sink
/// failing. A close code and reason (a violation, a read-only listener) are not carried:
/// the peer sees the connection end, and a replicator retries with backoff within its
/// `max_attempts`.
///
/// `cargo run -p peerlite-tokio --example unix_socket` replicates over a Unix domain
/// socket, framed with a length prefix.
pub struct Transport {
    pub(crate) sink: Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>,
    pub(crate) stream: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
}

impl Transport {
    /// A transport from its sending half and its receiving half.
    pub fn new(
        sink: impl Sink<Bytes, Error = io::Error> + Send + 'static,
        stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    ) -> Transport {
        Transport {
            sink: Box::pin(sink),
            stream: Box::pin(stream),
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

/// Opens a new [`Transport`] to the peer, each time a replicator connects (and
/// reconnects): see [`Replicator::over`](crate::Replicator::over). An error is retried
/// with backoff, as an unreachable listener is.
pub(crate) type Connector =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<Transport>> + Send>> + Send + Sync>;

/// Sends `frame` through `sink` and flushes it.
pub(crate) async fn send(
    sink: &mut Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>,
    frame: Bytes,
) -> io::Result<()> {
    std::future::poll_fn(|cx| sink.as_mut().poll_ready(cx)).await?;
    sink.as_mut().start_send(frame)?;
    std::future::poll_fn(|cx| sink.as_mut().poll_flush(cx)).await
}

/// Closes `sink`, ignoring a failure (the connection ends either way).
pub(crate) async fn close(sink: &mut Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>) {
    let _ = std::future::poll_fn(|cx| sink.as_mut().poll_close(cx)).await;
}
