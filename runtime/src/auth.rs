//! Authentication: Basic credentials and client certificates.

use std::collections::BTreeSet;
use std::fmt;

use async_tungstenite::tungstenite::http::HeaderValue;
use base64::Engine as _;
use peerlite_proto::{CollectionName, Principal};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A user name and password a replicator presents (HTTP Basic).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Credentials for `username`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    pub(crate) fn authorization_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A user a listener accepts.
#[derive(Clone)]
pub struct User {
    /// The user name.
    pub name: String,
    password_digest: [u8; 32],
    /// May only pull.
    pub read_only: bool,
    /// May only use these collections (`None`: all the listener serves).
    pub collections: Option<BTreeSet<CollectionName>>,
}

impl User {
    /// A user with full access.
    pub fn new(name: impl Into<String>, password: &str) -> User {
        User {
            name: name.into(),
            password_digest: digest(password.as_bytes()),
            read_only: false,
            collections: None,
        }
    }

    /// This user may only pull.
    pub fn read_only(mut self) -> User {
        self.read_only = true;
        self
    }

    /// This user may only use these collections.
    pub fn only_collections(
        mut self,
        collections: impl IntoIterator<Item = CollectionName>,
    ) -> User {
        self.collections = Some(collections.into_iter().collect());
        self
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("read_only", &self.read_only)
            .field("collections", &self.collections)
            .finish_non_exhaustive()
    }
}

/// How a listener authenticates replicators.
#[derive(Clone, Debug)]
pub enum ListenerAuthenticator {
    /// HTTP Basic: one of these users, checked before the WebSocket upgrade (401 with
    /// `WWW-Authenticate` otherwise).
    Basic(Vec<User>),
    /// Mutual TLS: a client certificate that chains to one of these roots. The
    /// certificate's common name becomes the principal's name. Requires TLS.
    ClientCertificate {
        /// Trusted issuers of client certificates.
        roots: Vec<CertificateDer<'static>>,
    },
}

pub(crate) struct Authenticator {
    users: Vec<User>,
    client_certificates: bool,
}

impl Authenticator {
    pub(crate) fn new(config: &ListenerAuthenticator) -> Authenticator {
        match config {
            ListenerAuthenticator::Basic(users) => Authenticator {
                users: users.clone(),
                client_certificates: false,
            },
            ListenerAuthenticator::ClientCertificate { .. } => Authenticator {
                users: Vec::new(),
                client_certificates: true,
            },
        }
    }

    /// The principal, or the challenge to send with a 401.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Principal, AuthFailure> {
        if self.client_certificates {
            // rustls has already verified the chain against the configured roots.
            let leaf = peer_certs
                .and_then(|c| c.first())
                .ok_or(AuthFailure::NO_CERTIFICATE)?;
            return Ok(Principal {
                name: common_name(leaf),
                ..Principal::default()
            });
        }
        let Some(authorization) = authorization else {
            return Err(AuthFailure::basic("no credentials", None));
        };
        let (name, password) = authorization
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
            .ok_or(AuthFailure::basic("malformed Basic credentials", None))?;
        let offered = digest(password.as_bytes());
        let offered_name = digest(name.as_bytes());
        // Compare with every user, in constant time, whatever matches.
        let mut found = None;
        for user in &self.users {
            let ok = digest(user.name.as_bytes()).ct_eq(&offered_name)
                & user.password_digest.ct_eq(&offered);
            if bool::from(ok) && found.is_none() {
                found = Some(user);
            }
        }
        let user = found.ok_or(AuthFailure::basic(
            "wrong user name or password",
            Some(name),
        ))?;
        Ok(Principal {
            name: Some(user.name.clone()),
            read_only: user.read_only,
            collections: user.collections.clone(),
        })
    }
}

/// Why a connection was not authenticated: for the 401 and for the log. Never holds a
/// password.
#[derive(Debug)]
pub(crate) struct AuthFailure {
    /// The `WWW-Authenticate` challenge to send, if any.
    pub(crate) challenge: Option<&'static str>,
    /// What was wrong.
    pub(crate) reason: &'static str,
    /// The user name the client claimed, if it sent one.
    pub(crate) claimed_user: Option<String>,
}

impl AuthFailure {
    const NO_CERTIFICATE: AuthFailure = AuthFailure {
        challenge: None,
        reason: "no client certificate",
        claimed_user: None,
    };

    fn basic(reason: &'static str, claimed_user: Option<String>) -> AuthFailure {
        AuthFailure {
            challenge: Some("Basic realm=\"peerlite\", charset=\"UTF-8\""),
            reason,
            claimed_user,
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    x.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pass: &str) -> HeaderValue {
        HeaderValue::from_str(&Credentials::new(user, pass).authorization_header()).unwrap()
    }

    #[test]
    fn basic_users() {
        let auth = Authenticator::new(&ListenerAuthenticator::Basic(vec![
            User::new("alice", "s3cret"),
            User::new("bob", "pw").read_only(),
        ]));
        let p = auth
            .authenticate(Some(&header("alice", "s3cret")), None)
            .unwrap();
        assert_eq!(p.name.as_deref(), Some("alice"));
        assert!(!p.read_only);
        assert!(
            auth.authenticate(Some(&header("bob", "pw")), None)
                .unwrap()
                .read_only
        );
        let wrong = auth
            .authenticate(Some(&header("alice", "wrong")), None)
            .unwrap_err();
        assert_eq!(wrong.claimed_user.as_deref(), Some("alice"));
        assert_eq!(wrong.reason, "wrong user name or password");
        assert!(
            !format!("{wrong:?}").contains("wrong\""),
            "no password in {wrong:?}"
        );
        assert!(
            auth.authenticate(Some(&header("carol", "s3cret")), None)
                .is_err()
        );
        let none = auth.authenticate(None, None).unwrap_err();
        assert!(none.challenge.is_some());
        assert_eq!(none.reason, "no credentials");
        let malformed = auth
            .authenticate(Some(&HeaderValue::from_static("Basic !!!")), None)
            .unwrap_err();
        assert_eq!(malformed.reason, "malformed Basic credentials");
        // Passwords may contain ':'.
        let auth = Authenticator::new(&ListenerAuthenticator::Basic(vec![User::new("u", "a:b")]));
        assert!(auth.authenticate(Some(&header("u", "a:b")), None).is_ok());
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Credentials::new("alice", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        let u = User::new("alice", "hunter2");
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
