//! TLS identities: a certificate chain and its private key.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use peerlite_storage::{Database, StorageError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use sha2::{Digest, Sha256};

/// Why an identity could not be created, loaded or stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The requested expiration is not in the future.
    #[error("the identity's expiration {} is in the past; choose a later date", rfc3339(*.0))]
    ExpirationInPast(SystemTime),
    /// The stored self-signed identity has expired. It is not replaced silently: a new
    /// certificate has a new fingerprint, which clients that pin the old one refuse.
    #[error(
        "the identity {label:?} expired on {}: renew it (`peerlite identity renew {label}`, or TlsIdentity::renewed) — it keeps its attributes, but clients that pin its certificate need the new one",
        rfc3339(*.expired)
    )]
    Expired {
        /// Its label.
        label: String,
        /// When it expired.
        expired: SystemTime,
    },
    /// A certificate attribute is unusable (e.g. an email that is not ASCII).
    #[error("invalid certificate attribute: {0}")]
    InvalidAttribute(String),
    /// Certificate generation failed.
    #[error("could not generate the certificate: {0}")]
    Generate(String),
    /// No certificate found in the PEM input.
    #[error("no certificate found in {0}")]
    NoCertificate(String),
    /// No private key found, or it is unreadable.
    #[error("no usable private key in {what}: {reason}")]
    NoPrivateKey {
        /// Where it was looked for.
        what: String,
        /// Why it could not be read.
        reason: String,
    },
    /// The certificate is X.509 v1 or v2: TLS needs v3, whose extensions say what the
    /// certificate is for.
    #[error(
        "the certificate is X.509 v{version}, and TLS accepts only v3 certificates: sign it again with extensions, e.g. `openssl x509 -req ... -extfile ext.cnf` where ext.cnf holds basicConstraints=CA:FALSE, keyUsage=digitalSignature and extendedKeyUsage=clientAuth (or serverAuth for a listener)"
    )]
    UnsupportedCertificateVersion {
        /// 1 or 2.
        version: u32,
    },
    /// The leaf certificate cannot be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate: {0}")]
    KeyMismatch(String),
    /// A PKCS#12 archive could not be opened.
    #[error("cannot open the PKCS#12 archive: {0}")]
    Pkcs12(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The label is empty, too long or has control characters.
    #[error("identity label {0:?} is invalid: use 1 to 100 printable characters")]
    InvalidLabel(String),
    /// A stored identity could not be decoded.
    #[error("stored identity {0:?} is corrupt")]
    Corrupt(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Subject attributes of a self-signed certificate (the seed's `certAttr…` keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityAttributes {
    /// Common name, e.g. the host name clients use.
    pub common_name: String,
    /// Organization.
    pub organization: Option<String>,
    /// Organizational unit.
    pub organization_unit: Option<String>,
    /// Contact email address.
    pub email: Option<String>,
}

impl IdentityAttributes {
    /// Attributes with just a common name.
    pub fn common_name(name: impl Into<String>) -> IdentityAttributes {
        IdentityAttributes {
            common_name: name.into(),
            ..IdentityAttributes::default()
        }
    }
}

/// A certificate chain (leaf first) and its private key.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use peerlite_smol::{IdentityAttributes, TlsIdentity};
///
/// let now = SystemTime::now();
/// let id = TlsIdentity::self_signed(
///     &IdentityAttributes::common_name("my-server"),
///     now + Duration::from_secs(365 * 24 * 3600),
///     now,
///     &["localhost".into(), "127.0.0.1".into()],
/// )?;
/// assert!(id.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// # Ok::<(), peerlite_smol::IdentityError>(())
/// ```
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    // Never print the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.sha256_fingerprint())
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

const EMAIL_OID: [u64; 7] = [1, 2, 840, 113549, 1, 9, 1];

impl TlsIdentity {
    /// Generates a self-signed identity (ECDSA P-256) valid from shortly before `now`
    /// until `expiration`, for `server_names` (DNS names or IP addresses, as subject
    /// alternative names).
    pub fn self_signed(
        attributes: &IdentityAttributes,
        expiration: SystemTime,
        now: SystemTime,
        server_names: &[String],
    ) -> Result<TlsIdentity, IdentityError> {
        use rcgen::{
            CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose,
            KeyPair, SanType,
        };
        if expiration <= now {
            return Err(IdentityError::ExpirationInPast(expiration));
        }
        let mut params = CertificateParams::new(server_names.to_vec())
            .map_err(|e| IdentityError::InvalidAttribute(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, attributes.common_name.as_str());
        if let Some(o) = &attributes.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        if let Some(ou) = &attributes.organization_unit {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        if let Some(email) = &attributes.email {
            let ia5 = rcgen::string::Ia5String::try_from(email.as_str())
                .map_err(|e| IdentityError::InvalidAttribute(format!("email {email:?}: {e}")))?;
            dn.push(
                DnType::CustomDnType(EMAIL_OID.to_vec()),
                DnValue::Ia5String(ia5.clone()),
            );
            params.subject_alt_names.push(SanType::Rfc822Name(ia5));
        }
        params.distinguished_name = dn;
        // An hour of slack for clocks that disagree.
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = expiration.into();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(|e| IdentityError::Generate(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Ok(TlsIdentity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// An identity from a certificate chain and its key (the key must match the leaf).
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsIdentity, IdentityError> {
        if chain.is_empty() {
            return Err(IdentityError::NoCertificate("the chain".into()));
        }
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        if leaf.version() != x509_parser::x509::X509Version::V3 {
            return Err(IdentityError::UnsupportedCertificateVersion {
                version: leaf.version().0 + 1,
            });
        }
        let identity = TlsIdentity { chain, key };
        identity.check_key()?;
        Ok(identity)
    }

    /// An identity from PEM text: a certificate chain (leaf first) and a private key
    /// (PKCS#8, PKCS#1 or SEC1), as Sync Gateway's `SSLCert` / `SSLKey` files hold.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, IdentityError> {
        Self::from_pem_named(
            cert_chain_pem,
            key_pem,
            "the certificate PEM",
            "the key PEM",
        )
    }

    /// Reads [`TlsIdentity::from_pem`] input from two files.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsIdentity, IdentityError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| IdentityError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        let (cert, key) = (cert.as_ref(), key.as_ref());
        Self::from_pem_named(
            &read(cert)?,
            &read(key)?,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    fn from_pem_named(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_name: &str,
        key_name: &str,
    ) -> Result<TlsIdentity, IdentityError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| IdentityError::NoCertificate(cert_name.into()))?;
        if chain.is_empty() {
            return Err(IdentityError::NoCertificate(cert_name.into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| IdentityError::NoPrivateKey {
                what: key_name.into(),
                reason: e.to_string(),
            })?;
        Self::from_parts(chain, key)
    }

    /// An identity from a PKCS#12 archive (`.p12` / `.pfx`, as `openssl pkcs12 -export`
    /// writes, including `-legacy` and `-nomac` files), protected by `password`.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<TlsIdentity, IdentityError> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            der,
            password,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) => IdentityError::Pkcs12(
                "wrong password (the archive's integrity check failed)".into(),
            ),
            other => IdentityError::Pkcs12(other.to_string()),
        })?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| IdentityError::NoPrivateKey {
                what: "the PKCS#12 archive".into(),
                reason: "it holds no private key with its certificate (wrong password?)".into(),
            })?;
        let certs = chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
        Self::from_parts(certs, key)
    }

    /// Imports a base64-encoded PKCS#12 archive and stores it in `db` under `label` (the
    /// seed's `tlsIdentityConfig` with `mode: 'imported'`).
    pub fn import_pkcs12_base64(
        db: &Database,
        label: &str,
        base64_der: &str,
        password: &str,
    ) -> Result<TlsIdentity, IdentityError> {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(base64_der.trim())
            .map_err(|e| IdentityError::Pkcs12(format!("not valid base64: {e}")))?;
        let identity = Self::from_pkcs12(&der, password)?;
        identity.save(db, label)?;
        Ok(identity)
    }

    /// Checks that the key signs for the leaf certificate.
    fn check_key(&self) -> Result<(), IdentityError> {
        let provider = crate::tls::provider();
        let signing = provider
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|e| IdentityError::NoPrivateKey {
                what: "the identity".into(),
                reason: e.to_string(),
            })?;
        let certified = rustls::sign::CertifiedKey::new(self.chain.clone(), signing);
        certified
            .keys_match()
            .map_err(|e| IdentityError::KeyMismatch(e.to_string()))
    }

    /// The leaf certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The whole chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The leaf certificate in PEM, e.g. to give to clients for pinning.
    pub fn certificate_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.certificate().as_ref())
    }

    /// SHA-256 of the leaf certificate, in lower-case hex.
    pub fn sha256_fingerprint(&self) -> String {
        Sha256::digest(self.certificate().as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The subject attributes and server names (DNS names and IP addresses) of the leaf
    /// certificate, as [`TlsIdentity::self_signed`] takes them.
    pub fn attributes(&self) -> Result<(IdentityAttributes, Vec<String>), IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, x) = x509_parser::parse_x509_certificate(self.certificate().as_ref())
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let subject = x.subject();
        fn first<'a>(
            mut it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
        ) -> Option<String> {
            it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
        }
        let attributes = IdentityAttributes {
            common_name: first(subject.iter_common_name()).unwrap_or_default(),
            organization: first(subject.iter_organization()),
            organization_unit: first(subject.iter_organizational_unit()),
            email: first(subject.iter_email()),
        };
        let mut names = Vec::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    GeneralName::IPAddress(ip) => {
                        let ip: Option<std::net::IpAddr> = match ip.len() {
                            4 => <[u8; 4]>::try_from(*ip).ok().map(Into::into),
                            16 => <[u8; 16]>::try_from(*ip).ok().map(Into::into),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
        Ok((attributes, names))
    }

    /// A new self-signed identity with this one's subject attributes and server names,
    /// valid until `expiration`: how an expired self-signed identity is renewed. Its key
    /// and fingerprint are new, so clients that pin the old certificate need this one.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use peerlite_smol::{IdentityAttributes, TlsIdentity};
    ///
    /// let now = SystemTime::now();
    /// let year = Duration::from_secs(365 * 24 * 3600);
    /// let old = TlsIdentity::self_signed(&IdentityAttributes::common_name("laptop"), now + year, now, &["laptop.local".into()])?;
    /// let new = old.renewed(now + 2 * year, now)?;
    /// assert_eq!(new.attributes()?, old.attributes()?);
    /// assert_ne!(new.sha256_fingerprint(), old.sha256_fingerprint());
    /// # Ok::<(), peerlite_smol::IdentityError>(())
    /// ```
    pub fn renewed(
        &self,
        expiration: SystemTime,
        now: SystemTime,
    ) -> Result<TlsIdentity, IdentityError> {
        let (attributes, names) = self.attributes()?;
        TlsIdentity::self_signed(&attributes, expiration, now, &names)
    }

    /// When the leaf certificate expires.
    pub fn expiration(&self) -> Option<SystemTime> {
        let (_, x) = x509_parser::parse_x509_certificate(self.certificate().as_ref()).ok()?;
        let secs = u64::try_from(x.validity().not_after.timestamp()).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    // ---- storage by label ----

    /// Stores the identity in `db` under `label`, replacing any previous one.
    pub fn save(&self, db: &Database, label: &str) -> Result<(), IdentityError> {
        check_label(label)?;
        let (kind, key) = match &self.key {
            PrivateKeyDer::Pkcs1(k) => (1u8, k.secret_pkcs1_der().to_vec()),
            PrivateKeyDer::Sec1(k) => (2u8, k.secret_sec1_der().to_vec()),
            _ => (8u8, self.key.secret_der().to_vec()),
        };
        let stored = Stored {
            version: 1,
            chain: self
                .chain
                .iter()
                .map(|c| Bytes::copy_from_slice(c.as_ref()))
                .collect(),
            key_kind: kind,
            key: Bytes::from(key),
        };
        let mut out = Vec::new();
        ciborium::into_writer(&stored, &mut out)
            .map_err(|_| IdentityError::Corrupt(label.into()))?;
        db.put_local(&storage_key(label), &out)?;
        Ok(())
    }

    /// Loads the identity stored under `label`, if any.
    pub fn load(db: &Database, label: &str) -> Result<Option<TlsIdentity>, IdentityError> {
        check_label(label)?;
        let Some(bytes) = db.get_local(&storage_key(label))? else {
            return Ok(None);
        };
        let stored: Stored =
            ciborium::from_reader(&bytes[..]).map_err(|_| IdentityError::Corrupt(label.into()))?;
        let chain = stored
            .chain
            .into_iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect();
        let key = match stored.key_kind {
            1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(stored.key.to_vec())),
            2 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(stored.key.to_vec())),
            8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(stored.key.to_vec())),
            _ => return Err(IdentityError::Corrupt(label.into())),
        };
        TlsIdentity::from_parts(chain, key)
            .map(Some)
            .map_err(|_| IdentityError::Corrupt(label.into()))
    }

    /// Deletes the identity stored under `label`; returns whether it existed.
    pub fn delete(db: &Database, label: &str) -> Result<bool, IdentityError> {
        check_label(label)?;
        let key = storage_key(label);
        let existed = db.get_local(&key)?.is_some();
        db.delete_local(&key)?;
        Ok(existed)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    version: u8,
    chain: Vec<Bytes>,
    key_kind: u8,
    key: Bytes,
}

fn storage_key(label: &str) -> String {
    format!("identity/{label}")
}

fn check_label(label: &str) -> Result<(), IdentityError> {
    if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(IdentityError::InvalidLabel(label.into()));
    }
    Ok(())
}

/// A time as RFC 3339 (`2030-01-01T00:00:00Z`), as every message of Peerlite writes it.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}
