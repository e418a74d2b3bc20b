//! How a replicator decides whether to trust a listener's certificate.
//!
//! Every verifier here checks the TLS handshake signatures with the crypto provider, so a
//! pinned or self-signed certificate cannot be replayed by someone without its key.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

/// Why a server certificate was refused, beyond what rustls names itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateRejection {
    /// Pinning is on and no certificate of the chain is the pinned one.
    #[error("server certificate does not match the pinned certificate")]
    PinMismatch,
    /// "Accept only self-signed" is on and the certificate is issued by someone else.
    #[error(
        "server certificate is not self-signed, and only self-signed certificates are accepted"
    )]
    NotSelfSigned,
    /// No trusted root is configured, so only pinning or self-signed mode can trust a
    /// certificate.
    #[error(
        "server certificate is not trusted: configure a pinned certificate, accept self-signed certificates, or add its CA as a trusted root"
    )]
    NoTrustedRoots,
}

fn reject(why: CertificateRejection) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(why))))
}

/// What a [`ModeVerifier`] trusts.
pub(crate) enum Mode {
    /// Exactly one certificate, wherever it appears in the presented chain.
    Pinned(CertificateDer<'static>),
    /// Any certificate signed by its own key and within its validity window, and nothing
    /// else (Couchbase Lite's "accept only self-signed certificates").
    SelfSignedOnly,
    /// Nothing: no pin, no self-signed mode and no trusted root is configured, so the
    /// error says what to configure.
    NoRoots,
}

/// A server-certificate verifier for the modes rustls's WebPKI verifier does not cover.
pub(crate) struct ModeVerifier {
    mode: Mode,
    algs: WebPkiSupportedAlgorithms,
}

impl ModeVerifier {
    pub(crate) fn new(mode: Mode, algs: WebPkiSupportedAlgorithms) -> Self {
        ModeVerifier { mode, algs }
    }
}

impl fmt::Debug for ModeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Pinned(_) => "pinned",
            Mode::SelfSignedOnly => "self-signed only",
            Mode::NoRoots => "no trusted roots",
        };
        write!(f, "ModeVerifier({mode})")
    }
}

impl ServerCertVerifier for ModeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match &self.mode {
            Mode::Pinned(pinned) => {
                let pinned = pinned.as_ref();
                if end_entity.as_ref() != pinned
                    && intermediates.iter().all(|c| c.as_ref() != pinned)
                {
                    return Err(reject(CertificateRejection::PinMismatch));
                }
            }
            Mode::SelfSignedOnly => {
                if !intermediates.is_empty() {
                    return Err(reject(CertificateRejection::NotSelfSigned));
                }
                check_self_signed(end_entity, now)?;
            }
            Mode::NoRoots => return Err(reject(CertificateRejection::NoTrustedRoots)),
        }
        Ok(ServerCertVerified::assertion())
    }

    // The handshake signatures are always checked, so a pinned or self-signed
    // certificate cannot be replayed by someone without its key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Issuer equals subject, the signature verifies with the certificate's own key, and
/// `now` is within the validity window.
pub(crate) fn check_self_signed(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if x.issuer().as_raw() != x.subject().as_raw() {
        return Err(reject(CertificateRejection::NotSelfSigned));
    }
    x.verify_signature(None)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = x.validity();
    if now > validity.not_after.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    if now < validity.not_before.timestamp() {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    Ok(())
}

/// Finds the [`CertificateRejection`] inside a rustls error, if any.
pub(crate) fn rejection_of(e: &Error) -> Option<&CertificateRejection> {
    match e {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<CertificateRejection>()
        }
        _ => None,
    }
}
