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
    /// The listener is at its connection limit (HTTP 503); trying again later may work.
    #[error("{message} (503): retrying later may work (it asks for {retry_after_secs} s)")]
    ListenerBusy {
        /// Seconds the listener asks to wait (its `Retry-After`).
        retry_after_secs: u64,
        /// What the listener said.
        message: String,
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
        "server certificate is not trusted ({0}): pin it, accept self-signed certificates, or trust its CA (peerlite sync: --pinned-cert, --accept-self-signed, --ca-cert)"
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
    /// The endpoint is `wss://` and the listener does not speak TLS (it answered the TLS
    /// handshake with a plain-text refusal, as Peerlite's plain listeners do).
    #[error("the listener does not speak TLS: use ws:// (TLS is disabled there)")]
    TlsRefused,
    /// The listener closed the connection during the TLS handshake without a word: it is
    /// overloaded (past its connection limit), or it is not a TLS listener. Retried.
    #[error(
        "the listener closed the connection during the TLS handshake: it may be at its connection limit (retrying), or not speak TLS (then use ws://)"
    )]
    ClosedDuringTlsHandshake,
    /// The listener refused (or required and did not get) the client certificate.
    #[error("the listener refused the client certificate: {0}")]
    ClientCertificateRejected(ClientCertificateProblem),
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
    /// How long the listener asked to wait before trying again (its `Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ConnectError::ListenerBusy {
                retry_after_secs, ..
            }
            | ConnectError::TooManyFailedAttempts { retry_after_secs } => {
                Some(std::time::Duration::from_secs(*retry_after_secs))
            }
            _ => None,
        }
    }

    /// True when trying again later may help (the network), false when only a change of
    /// configuration will (credentials, certificates, TLS mode).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. }
                | ConnectError::Timeout(_)
                | ConnectError::WebSocket(_)
                | ConnectError::ListenerBusy { .. }
                | ConnectError::ClosedDuringTlsHandshake
                | ConnectError::Refused { status: 500.., .. }
        )
    }
}

/// What the listener found wrong with the client certificate, from the TLS alert it sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientCertificateProblem {
    /// The listener requires a client certificate and none was configured.
    #[error(
        "the listener requires a client certificate: configure one (--client-cert and --client-key)"
    )]
    Required,
    /// It has expired, or is not valid yet.
    #[error("it has expired or is not valid yet (check the clocks): issue a new one")]
    Expired,
    /// It is not issued by a CA the listener trusts.
    #[error(
        "it is not issued by a CA the listener trusts: use a certificate from the listener's client CA"
    )]
    UntrustedIssuer,
    /// Its extended key usage does not allow client authentication (e.g. serverAuth only).
    #[error(
        "it is not meant for clients (its extended key usage lacks clientAuth): issue one with extendedKeyUsage=clientAuth"
    )]
    WrongPurpose,
    /// It has been revoked.
    #[error("it has been revoked")]
    Revoked,
    /// Another refusal, with the TLS alert.
    #[error("TLS alert {0}")]
    Other(String),
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
    /// The recording file cannot be created.
    #[error("cannot record to {path}: {source}")]
    Record {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
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
