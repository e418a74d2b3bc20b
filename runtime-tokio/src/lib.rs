//! # peerlite-tokio — Peerlite on tokio
//!
//! The runtime for Peerlite's Sans-IO core on tokio, for applications that already run
//! one (axum and other servers, Tauri desktop apps): a [`Listener`] (the passive peer: a
//! WebSocket server) and a [`Replicator`] (the active peer) over TLS WebSockets, with
//! TLS identities (self-signed, PEM, PKCS#12), certificate pinning or "accept only
//! self-signed", and Basic or client-certificate authentication — the same types,
//! configuration and behaviour as `peerlite-smol`, from the same code
//! (`peerlite-runtime`); this crate is only [`Tokio`], its [`Runtime`].
//!
//! Create listeners and replicators from within a tokio runtime (as with
//! `tokio::spawn`): their tasks are spawned on it. Each connection's storage operations
//! run in order on a thread of their own, never on tokio's workers.
//!
//! ```no_run
//! use peerlite_tokio::{Credentials, Listener, ListenerAuthenticator, ListenerConfig,
//!                      Replicator, ReplicatorConfiguration, ServerTrust, User};
//! use peerlite_storage::Database;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Device A: serve a database.
//!     let listener = Listener::start(Database::open("a.db")?, ListenerConfig {
//!         authenticator: Some(ListenerAuthenticator::Basic(vec![User::new("alice", "s3cret")])),
//!         ..ListenerConfig::default()
//!     }).await?;
//!     let pinned = listener.tls_identity().expect("TLS is on").certificate().clone();
//!
//!     // Device B: sync with it.
//!     let mut config = ReplicatorConfiguration::new(format!("wss://127.0.0.1:{}/db", listener.port()));
//!     config.credentials = Some(Credentials::new("alice", "s3cret"));
//!     config.server_trust = ServerTrust::Pinned(pinned);
//!     let replicator = Replicator::new(Database::open("b.db")?, config)?;
//!     replicator.start();
//!     let status = replicator.wait_until_stopped().await;
//!     assert!(status.error.is_none());
//!     listener.stop().await;
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

pub use peerlite_runtime::{
    AuthFailureLimit, CertificateRejection, ClientCertificateProblem, ConnectError, ConnectionInfo,
    ConnectionStatus, Credentials, Gate, IdentityAttributes, IdentityError, ListenerAuthenticator,
    ListenerConfig, ListenerError, ListenerId, ListenerMonitor, ListenerTls, RecordOptions,
    Refusal, ReplicatorConfigError, ReplicatorConfiguration, ReplicatorError, ReplicatorStatus,
    Runtime, ServerTrust, SyncStats, TlsConfigError, TlsIdentity, Transport, User,
};

/// A listener (the passive peer) on tokio: see [`peerlite_runtime::Listener`].
pub type Listener = peerlite_runtime::Listener<Tokio>;

/// A replicator (the active peer) on tokio: see [`peerlite_runtime::Replicator`].
pub type Replicator = peerlite_runtime::Replicator<Tokio>;

/// tokio as a Peerlite [`Runtime`]: tasks on the current tokio runtime, its timers and
/// TCP (adapted to futures-io with `tokio_util::compat`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

/// A task on tokio, cancelled when dropped (as a smol task is).
#[derive(Debug)]
pub struct TokioTask(tokio::task::JoinHandle<()>);

impl Future for TokioTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A panicked or cancelled task has ended too.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Drop for TokioTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Runtime for Tokio {
    type Tcp = Compat<tokio::net::TcpStream>;
    type TcpListener = tokio::net::TcpListener;
    type Task = TokioTask;

    fn spawn<F>(&self, future: F) -> TokioTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        TokioTask(tokio::spawn(future))
    }

    fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn is_finished(task: &TokioTask) -> bool {
        task.0.is_finished()
    }

    async fn sleep_until(&self, at: Instant) {
        tokio::time::sleep_until(at.into()).await;
    }

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Tcp> {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp.compat())
    }

    async fn bind(&self, address: SocketAddr) -> io::Result<Self::TcpListener> {
        tokio::net::TcpListener::bind(address).await
    }

    fn local_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn peek(tcp: &Self::Tcp, buf: &mut [u8]) -> io::Result<usize> {
        tcp.get_ref().peek(buf).await
    }

    async fn accept(listener: &Self::TcpListener) -> io::Result<(Self::Tcp, SocketAddr)> {
        let (tcp, peer) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        Ok((tcp.compat(), peer))
    }
}
