//! The door an HTTP request passes before it is served: credentials, and the
//! failed-authentication limit of its address. The listener's WebSocket handshake and
//! any other HTTP endpoint of an application (Peerlite's admin interface) use the same
//! one, so both log, count and lock out the same way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::http::HeaderValue;
use peerlite_proto::Principal;
use rustls::pki_types::CertificateDer;

use crate::auth::Authenticator;
use crate::auth_limit::FailedAuthLimiter;
use crate::{AuthFailureLimit, ListenerAuthenticator, User};

/// Checks the credentials of HTTP requests and limits failed attempts per address.
///
/// ```
/// use peerlite_smol::{AuthFailureLimit, Gate, Refusal, User};
///
/// let gate = Gate::basic(vec![User::new("admin", "s3cret-enough")], Some(AuthFailureLimit::default()));
/// let peer = "127.0.0.1:50000".parse().unwrap();
/// // "admin:s3cret-enough" in Base64.
/// let ok = gate.check(peer, Some("Basic YWRtaW46czNjcmV0LWVub3VnaA=="));
/// assert_eq!(ok.unwrap().as_deref(), Some("admin"));
/// assert!(matches!(gate.check(peer, None), Err(Refusal::Unauthorized { .. })));
/// ```
pub struct Gate {
    authenticator: Option<Authenticator>,
    limiter: Option<FailedAuthLimiter>,
}

/// Why a [`Gate`] turned a request away.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No valid credentials: answer 401, with this `WWW-Authenticate` challenge if any.
    Unauthorized {
        /// The challenge to send.
        challenge: Option<&'static str>,
    },
    /// Too many failed attempts from this address: answer 429 with `Retry-After`.
    TooManyFailures {
        /// How long the address stays refused.
        retry_after: Duration,
    },
}

impl Gate {
    /// Accepts one of `users` (HTTP Basic), limiting failed attempts per address if
    /// `limit` is given.
    pub fn basic(users: Vec<User>, limit: Option<AuthFailureLimit>) -> Gate {
        Gate::new(Some(&ListenerAuthenticator::Basic(users)), limit)
    }

    /// A gate for `authenticator` (`None` lets everyone in; the limit then never applies).
    pub(crate) fn new(
        authenticator: Option<&ListenerAuthenticator>,
        limit: Option<AuthFailureLimit>,
    ) -> Gate {
        Gate {
            limiter: limit
                .filter(|_| authenticator.is_some())
                .map(FailedAuthLimiter::new),
            authenticator: authenticator.map(Authenticator::new),
        }
    }

    /// Checks a request from `peer` with this `Authorization` header: the user's name, or
    /// why it is refused. Failures are logged (never the password) and counted.
    pub fn check(
        &self,
        peer: SocketAddr,
        authorization: Option<&str>,
    ) -> Result<Option<String>, Refusal> {
        let header = authorization.and_then(|a| HeaderValue::from_str(a).ok());
        self.admit(peer, header.as_ref(), None).map(|p| p.name)
    }

    /// Checks a request's `Authorization` header or TLS client certificates.
    pub(crate) fn admit(
        &self,
        peer: SocketAddr,
        authorization: Option<&HeaderValue>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Principal, Refusal> {
        let Some(auth) = &self.authenticator else {
            return Ok(Principal::default());
        };
        let limiter = self.limiter.as_ref();
        let ip = peer.ip();
        if let Some(wait) = limiter.and_then(|l| l.locked_for(ip, Instant::now())) {
            tracing::warn!(peer = %peer, retry_after_s = wait.as_secs(), "connection refused: too many failed logins from this address");
            return Err(Refusal::TooManyFailures { retry_after: wait });
        }
        match auth.authenticate(authorization, peer_certs) {
            Ok(principal) => {
                if let Some(limiter) = limiter {
                    limiter.succeeded(ip);
                }
                Ok(principal)
            }
            Err(failure) => {
                tracing::warn!(
                    peer = %peer,
                    user = failure.claimed_user.as_deref(),
                    reason = failure.reason,
                    "authentication failed"
                );
                if let Some(wait) = limiter.and_then(|l| l.failed(ip, Instant::now())) {
                    tracing::warn!(peer = %peer, retry_after_s = wait.as_secs(), "too many failed logins: this address is refused for a while");
                    return Err(Refusal::TooManyFailures { retry_after: wait });
                }
                Err(Refusal::Unauthorized {
                    challenge: failure.challenge,
                })
            }
        }
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("authenticates", &self.authenticator.is_some())
            .field("limits_failures", &self.limiter.is_some())
            .finish()
    }
}
