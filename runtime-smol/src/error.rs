//! Errors of the runtime, typed so that each tells what went wrong and what to do.

use peerlite_proto::ReplicationError;
use peerlite_storage::StorageError;

use crate::{IdentityError, TlsConfigError};

/// Why a replicator could not connect to a listener.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint URL is not `ws://host:port/db` or `wss://host:port/db`.
    #[error("invalid endpoint {0:?}: use ws://host:port/database or wss://host:port/database")]
    InvalidEndpoint(String),
    /// Nothing listens at the address, or it is unreachable.
    #[error("cannot reach {address}: {message}")]
    Unreachable {
        /// Host and port.
        address: String,
        /// What the system said.
        message: String,
    },
    /// The connection or its handshake took too long.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The listener refused the credentials (HTTP 401).
    #[error("the listener refused the credentials (401): check the user name and password")]
    Unauthorized,
    /// The listener refuses this address for a while after too many failed
    /// authentications (HTTP 429).
    #[error(
        "the listener refuses this address after too many failed authentications (429): check the user name and password, then retry in {retry_after_secs} s"
    )]
    TooManyFailedAttempts {
        /// Seconds until the listener accepts attempts again (its `Retry-After`).
        retry_after_secs: u64,
    },
    /// The listener refused the request for another reason.
    #[error("the listener refused the connection with HTTP status {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The response body, if any.
        message: String,
    },
    /// The certificate is not the pinned one.
    #[error("server certificate does not match the pinned certificate")]
    PinMismatch,
    /// Only self-signed certificates are accepted, and this one is not.
    #[error(
        "server certificate is not self-signed, and only self-signed certificates are accepted"
    )]
    NotSelfSigned,
    /// The certificate is not trusted by the configured roots.
    #[error(
        "server certificate is not trusted ({0}): pin it, accept self-signed certificates, or add its CA as a trusted root"
    )]
    UntrustedCertificate(String),
    /// The certificate has expired.
    #[error("server certificate has expired")]
    CertificateExpired,
    /// The certificate is not valid yet.
    #[error("server certificate is not valid yet (check the clocks)")]
    CertificateNotValidYet,
    /// The listener requires TLS and the endpoint is `ws://`.
    #[error(
        "the listener closed the connection during the handshake; it probably requires TLS: use wss://"
    )]
    TlsRequired,
    /// The endpoint is `wss://` and the listener does not speak TLS.
    #[error("the listener does not speak TLS: use ws:// (TLS is disabled there)")]
    TlsRefused,
    /// The listener refused (or required and did not get) the client certificate.
    #[error(
        "the listener refused the client certificate ({0}): configure a certificate issued by a root the listener trusts"
    )]
    ClientCertificateRejected(String),
    /// The TLS handshake failed otherwise.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The listener did not accept the WebSocket upgrade or the subprotocol.
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(String),
    /// The local TLS configuration is invalid.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

impl ConnectError {
    /// True when trying again later may help (the network), false when only a change of
    /// configuration will (credentials, certificates, TLS mode).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. }
                | ConnectError::Timeout(_)
                | ConnectError::WebSocket(_)
                | ConnectError::Refused { status: 500.., .. }
        )
    }
}

/// Why replication failed or is retrying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicatorError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Replication failed after connecting.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
}

/// Why a replicator could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicatorConfigError {
    /// The endpoint URL is invalid.
    #[error(transparent)]
    Endpoint(#[from] ConnectError),
    /// The TLS settings are invalid.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS identity could not be created or loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The TLS settings are invalid.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The configuration is inconsistent.
    #[error("invalid listener configuration: {0}")]
    Config(String),
}
