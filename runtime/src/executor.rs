//! What an async executor provides: the only part of a runtime that differs between smol
//! and tokio. Everything else — the drive loop, TLS, WebSockets, authentication, the
//! storage worker — is written once, over this trait.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

/// An async executor and its networking, as Peerlite's [`Listener`](crate::Listener) and
/// [`Replicator`](crate::Replicator) use them. `peerlite-smol` and `peerlite-tokio`
/// implement it; an application on another executor can too, in about a hundred lines
/// (see `runtime-smol/src/lib.rs`).
///
/// Byte streams are futures-io's [`AsyncRead`] and [`AsyncWrite`] (the traits
/// async-tungstenite and futures-rustls run on); a tokio stream is adapted with
/// `tokio_util::compat`.
pub trait Runtime: Clone + Default + Send + Sync + 'static {
    /// A connected TCP stream.
    type Tcp: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound, listening TCP socket.
    type TcpListener: Send + Sync + 'static;
    /// A spawned task: awaiting it waits for its end, dropping it cancels it.
    type Task: Future<Output = ()> + Send + Unpin + 'static;

    /// Runs `future` on the executor; the task is cancelled if the handle is dropped.
    fn spawn<F>(&self, future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static;

    /// Runs `future` on the executor to its end, without a handle.
    fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Whether `task` has ended.
    fn is_finished(task: &Self::Task) -> bool;

    /// Completes at `at`.
    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send;

    /// Connects to `host:port` (a name is resolved), with `TCP_NODELAY` set.
    fn connect(&self, host: &str, port: u16) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// Binds a listening socket to `address`.
    fn bind(
        &self,
        address: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpListener>> + Send;

    /// The address `listener` is bound to (with the port chosen for port 0).
    fn local_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr>;

    /// Copies the first bytes `tcp` has received into `buf` without consuming them.
    fn peek<'a>(
        tcp: &'a Self::Tcp,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Accepts the next connection on `listener`, with `TCP_NODELAY` set.
    fn accept(
        listener: &Self::TcpListener,
    ) -> impl Future<Output = io::Result<(Self::Tcp, SocketAddr)>> + Send;
}

/// Waits for `future` until `deadline`: `None` if the deadline came first.
pub(crate) async fn until<R: Runtime, T>(
    rt: &R,
    deadline: Instant,
    future: impl Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        rt.sleep_until(deadline).await;
        None
    })
    .await
}
