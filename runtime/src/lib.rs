//! # peerlite-runtime — what every Peerlite runtime shares
//!
//! The listener (the passive peer: a WebSocket server) and the replicator (the active
//! peer) around `peerlite_proto`'s state machines, written once over the [`Runtime`]
//! trait: the drive loop, TLS identities (self-signed, PEM, PKCS#12) and certificate
//! verifiers (pinning, self-signed only, trusted roots), Basic and client-certificate
//! authentication, the failed-authentication limiter, WebSockets, configurations,
//! errors, and the storage worker.
//!
//! Applications use a runtime crate, which names these types for its executor:
//! `peerlite-smol` (`peerlite_smol::Listener` is `Listener<Smol>`) or `peerlite-tokio`.
//! An application on another executor implements [`Runtime`] — spawning, a timer, and
//! TCP — and uses [`Listener`] and [`Replicator`] with it.
//!
//! Each connection is driven by one task that owns its state machine; its storage
//! operations run in order on a worker thread of their own (group commit for consecutive
//! inserts); the database's change listener feeds continuous replication.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod auth_limit;
mod change_feed;
mod custom;
mod drive;
mod error;
mod executor;
mod expiry;
mod gate;
mod listener;
mod record;
mod replicator;
mod stats;
mod storage_worker;
mod tls;
mod transport;
mod wake;

pub use auth::{Credentials, ListenerAuthenticator, User};
pub use auth_limit::AuthFailureLimit;
pub use custom::Transport;
pub use error::{
    ClientCertificateProblem, ConnectError, ListenerError, ReplicatorConfigError, ReplicatorError,
};
pub use executor::Runtime;
pub use gate::{Gate, Refusal};
pub use listener::{
    ConnectionInfo, ConnectionStatus, Listener, ListenerConfig, ListenerMonitor, ListenerTls,
};
pub use record::RecordOptions;
pub use replicator::{ListenerId, Replicator, ReplicatorConfiguration, ReplicatorStatus};
pub use stats::SyncStats;
pub use tls::{
    CertificateRejection, IdentityAttributes, IdentityError, ServerTrust, TlsConfigError,
    TlsIdentity,
};
