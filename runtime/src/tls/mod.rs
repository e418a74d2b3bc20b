//! TLS: identities, server and client configurations, certificate verification.

mod identity;
mod verify;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use identity::{IdentityAttributes, IdentityError, TlsIdentity};
pub use verify::CertificateRejection;
pub(crate) use verify::rejection_of;

/// The one crypto provider used everywhere (ring), passed explicitly so nothing depends
/// on a process-wide default.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a replicator decides to trust the listener's certificate.
#[derive(Clone, Debug, Default)]
pub enum ServerTrust {
    /// Trust only this certificate (compared byte for byte with every certificate of the
    /// presented chain).
    Pinned(CertificateDer<'static>),
    /// Trust any self-signed certificate within its validity period, and nothing issued
    /// by a CA.
    SelfSignedOnly,
    /// Trust certificates issued by these roots for the endpoint's host name (empty: trust
    /// nothing, and say so).
    #[default]
    Roots,
    /// Like [`ServerTrust::Roots`] with the given roots.
    TrustedRoots(Vec<CertificateDer<'static>>),
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// rustls refused the configuration.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A root certificate could not be used.
    #[error("invalid root certificate: {0}")]
    Root(String),
}

pub(crate) fn server_config(
    identity: &TlsIdentity,
    client_roots: Option<&[CertificateDer<'static>]>,
) -> Result<ServerConfig, TlsConfigError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let store = root_store(roots)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                provider,
            )
            .build()
            .map_err(|e| TlsConfigError::Root(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(identity.chain().to_vec(), identity.private_key())?)
}

pub(crate) fn client_config(
    trust: &ServerTrust,
    client_identity: Option<&TlsIdentity>,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        ServerTrust::TrustedRoots(roots) if !roots.is_empty() => {
            builder.with_root_certificates(root_store(roots)?)
        }
        other => {
            let mode = match other {
                ServerTrust::Pinned(cert) => verify::Mode::Pinned(cert.clone()),
                ServerTrust::SelfSignedOnly => verify::Mode::SelfSignedOnly,
                _ => verify::Mode::NoRoots,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::ModeVerifier::new(mode, algs)))
        }
    };
    Ok(match client_identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder.with_client_auth_cert(id.chain().to_vec(), id.private_key())?,
    })
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| TlsConfigError::Root(e.to_string()))?;
    }
    Ok(store)
}
