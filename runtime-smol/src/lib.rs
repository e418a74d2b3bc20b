//! # peerlite-smol — Peerlite on smol
//!
//! The runtime for Peerlite's Sans-IO core: a [`Listener`] (the passive peer: a WebSocket
//! server) and a [`Replicator`] (the active peer) over TLS WebSockets, with TLS
//! identities (self-signed, PEM, PKCS#12), certificate pinning or "accept only
//! self-signed", and Basic or client-certificate authentication.
//!
//! Everything but the executor lives in `peerlite-runtime`, shared with
//! `peerlite-tokio`: this crate is [`Smol`], its [`Runtime`] implementation (spawning,
//! timers and TCP on smol), and the runtime's types named for it. Each connection is
//! driven by one task that owns a `peerlite_proto` state machine; its storage operations
//! run in order on a worker thread of their own.
//!
//! ```no_run
//! use peerlite_smol::{Credentials, Listener, ListenerAuthenticator, ListenerConfig,
//!                     Replicator, ReplicatorConfiguration, ServerTrust, User};
//! use peerlite_storage::Database;
//!
//! smol::block_on(async {
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
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub use peerlite_runtime::{
    AuthFailureLimit, CertificateRejection, ClientCertificateProblem, ConnectError, ConnectionInfo,
    ConnectionStatus, Credentials, Gate, IdentityAttributes, IdentityError, ListenerAuthenticator,
    ListenerConfig, ListenerError, ListenerId, ListenerMonitor, ListenerTls, RecordOptions,
    Refusal, ReplicatorConfigError, ReplicatorConfiguration, ReplicatorError, ReplicatorStatus,
    Runtime, ServerTrust, SyncStats, TlsConfigError, TlsIdentity, Transport, User,
};

/// A listener (the passive peer) on smol: see [`peerlite_runtime::Listener`].
pub type Listener = peerlite_runtime::Listener<Smol>;

/// A replicator (the active peer) on smol: see [`peerlite_runtime::Replicator`].
pub type Replicator = peerlite_runtime::Replicator<Smol>;

/// smol as a Peerlite [`Runtime`]: tasks on smol's global executor, `async-io` timers and
/// TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Tcp = smol::net::TcpStream;
    type TcpListener = smol::net::TcpListener;
    type Task = smol::Task<()>;

    fn spawn<F>(&self, future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future)
    }

    fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }

    fn is_finished(task: &Self::Task) -> bool {
        task.is_finished()
    }

    async fn sleep_until(&self, at: Instant) {
        smol::Timer::at(at).await;
    }

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Tcp> {
        let tcp = smol::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    async fn bind(&self, address: SocketAddr) -> io::Result<Self::TcpListener> {
        smol::net::TcpListener::bind(address).await
    }

    fn local_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn peek(tcp: &Self::Tcp, buf: &mut [u8]) -> io::Result<usize> {
        tcp.peek(buf).await
    }

    async fn accept(listener: &Self::TcpListener) -> io::Result<(Self::Tcp, SocketAddr)> {
        let (tcp, peer) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        Ok((tcp, peer))
    }
}
