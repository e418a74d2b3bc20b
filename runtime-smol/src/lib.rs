//! # peerlite-smol — Peerlite on smol
//!
//! The runtime for Peerlite's Sans-IO core: a [`Listener`] (the passive peer: a WebSocket
//! server) and a [`Replicator`] (the active peer) over TLS WebSockets, with TLS
//! identities (self-signed, PEM, PKCS#12), certificate pinning or "accept only
//! self-signed", and Basic or client-certificate authentication.
//!
//! Each connection is driven by one task that owns a `peerlite_proto` state machine;
//! storage operations run on smol's blocking pool; the database's change listener feeds
//! continuous replication.
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

mod auth;
mod auth_limit;

mod change_feed;
mod error;
mod listener;
mod replicator;
mod storage_worker;
mod tls;
mod transport;
mod wake;

pub use auth::{Credentials, ListenerAuthenticator, User};
pub use auth_limit::AuthFailureLimit;
pub use error::{
    ClientCertificateProblem, ConnectError, ListenerError, ReplicatorConfigError, ReplicatorError,
};
pub use listener::{ConnectionStatus, Listener, ListenerConfig, ListenerTls};
pub use replicator::{ListenerId, Replicator, ReplicatorConfiguration, ReplicatorStatus};
pub use tls::{
    CertificateRejection, IdentityAttributes, IdentityError, ServerTrust, TlsConfigError,
    TlsIdentity,
};
