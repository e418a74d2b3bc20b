//! Connections: TCP, optional TLS, WebSocket upgrade with Basic authentication.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self, Error as WsError};
use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};

use crate::auth::Credentials;
use crate::executor::{Runtime, until};
use crate::gate::{Gate, Refusal};
use crate::{ClientCertificateProblem, ConnectError};
use peerlite_proto::{Principal, SUBPROTOCOL};

/// Any byte stream a WebSocket can run on (TCP, or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A WebSocket over TCP or TLS.
pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// A parsed `ws://` or `wss://` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, ConnectError> {
        let bad = || ConnectError::InvalidEndpoint(url.to_owned());
        let uri: tungstenite::http::Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        // The port as written: http::Uri silently ignores a port it cannot parse.
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let port_text = authority
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.contains(']'));
        let port = match port_text {
            None if tls => 443,
            None => 80,
            Some(text) => match text.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad()),
            },
        };
        if uri.path().len() < 2 {
            return Err(bad());
        }
        Ok(Endpoint {
            url: url.to_owned(),
            tls,
            host,
            port,
        })
    }

    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub(crate) fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// What a replicator sends when it connects.
pub(crate) struct DialOptions {
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) max_frame_bytes: usize,
}

/// Opens a WebSocket to `endpoint`.
pub(crate) async fn dial<R: Runtime>(
    rt: &R,
    endpoint: &Endpoint,
    options: &DialOptions,
) -> Result<Ws, ConnectError> {
    let address = endpoint.address();
    let attempt = async {
        let tcp = rt
            .connect(&endpoint.host, endpoint.port)
            .await
            .map_err(|e| ConnectError::Unreachable {
                address: address.clone(),
                message: e.to_string(),
            })?;
        let io: Box<dyn Io> = match (&options.tls, endpoint.tls) {
            (Some(config), true) => {
                let name = ServerName::try_from(endpoint.host.clone())
                    .map_err(|_| ConnectError::InvalidEndpoint(endpoint.url.clone()))?;
                let stream = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(classify_tls)?;
                Box::new(stream)
            }
            _ => Box::new(tcp),
        };
        let mut request = endpoint
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::InvalidEndpoint(format!("{}: {e}", endpoint.url)))?;
        let headers = request.headers_mut();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(credentials) = &options.credentials {
            let value =
                HeaderValue::from_str(&credentials.authorization_header()).map_err(|_| {
                    ConnectError::Config(
                        "credentials contain characters not allowed in a header".into(),
                    )
                })?;
            headers.insert(header::AUTHORIZATION, value);
        }
        for (name, value) in &options.headers {
            let name = header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConnectError::Config(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ConnectError::Config(format!("invalid value for header {name}")))?;
            headers.insert(name, value);
        }
        let config = ws_config(options.max_frame_bytes);
        match async_tungstenite::client_async_with_config(request, io, Some(config)).await {
            Ok((ws, _)) => Ok(ws),
            Err(e) => Err(classify_ws(e, endpoint.tls)),
        }
    };
    until(rt, Instant::now() + options.timeout, attempt)
        .await
        .unwrap_or_else(|| Err(ConnectError::Timeout(address.clone())))
}

fn classify_tls(e: std::io::Error) -> ConnectError {
    use crate::tls::CertificateRejection as R;
    if let Some(alert) = client_certificate_alert(&e) {
        return ConnectError::ClientCertificateRejected(alert);
    }
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                ConnectError::ClosedDuringTlsHandshake
            }
            _ => ConnectError::Tls(e.to_string()),
        };
    };
    if let Some(rejection) = crate::tls::rejection_of(tls) {
        return match rejection {
            R::PinMismatch => ConnectError::PinMismatch,
            R::NotSelfSigned => ConnectError::NotSelfSigned,
            R::NoTrustedRoots => {
                ConnectError::UntrustedCertificate("no trusted root is configured".into())
            }
        };
    }
    match tls {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => ConnectError::CertificateExpired,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => ConnectError::CertificateNotValidYet,
        rustls::Error::InvalidCertificate(other) => {
            ConnectError::UntrustedCertificate(format!("{other:?}"))
        }
        // Plain text where a TLS record was due, or the refusal a plain Peerlite listener
        // sends to a TLS handshake (see `refuse_tls`).
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion) => {
            ConnectError::TlsRefused
        }
        other => ConnectError::Tls(other.to_string()),
    }
}

/// A TLS alert from the listener saying it does not accept our client certificate.
fn client_certificate_alert(e: &std::io::Error) -> Option<ClientCertificateProblem> {
    use ClientCertificateProblem as P;
    use rustls::AlertDescription as A;
    let rustls::Error::AlertReceived(alert) = e.get_ref()?.downcast_ref::<rustls::Error>()? else {
        return None;
    };
    Some(match alert {
        A::CertificateRequired => P::Required,
        A::CertificateExpired => P::Expired,
        A::UnknownCA => P::UntrustedIssuer,
        A::UnsupportedCertificate => P::WrongPurpose,
        A::CertificateRevoked => P::Revoked,
        a @ (A::BadCertificate | A::CertificateUnknown | A::AccessDenied) => {
            P::Other(format!("{a:?}"))
        }
        _ => return None,
    })
}

fn classify_ws(e: WsError, tls: bool) -> ConnectError {
    if let WsError::Io(io) = &e
        && let Some(alert) = client_certificate_alert(io)
    {
        return ConnectError::ClientCertificateRejected(alert);
    }
    match e {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let message = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            if status == 401 {
                ConnectError::Unauthorized
            } else if status == 429 || status == 503 {
                let retry_after_secs = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if status == 429 {
                    ConnectError::TooManyFailedAttempts { retry_after_secs }
                } else {
                    ConnectError::ListenerBusy {
                        retry_after_secs,
                        message,
                    }
                }
            } else {
                ConnectError::Refused { status, message }
            }
        }
        // A TLS listener drops a plain-text upgrade request without an HTTP answer.
        WsError::Io(_)
        | WsError::Protocol(_)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
            if !tls =>
        {
            ConnectError::TlsRequired
        }
        other => ConnectError::WebSocket(other.to_string()),
    }
}

/// What a listener accepts.
pub(crate) struct AcceptOptions {
    pub(crate) tls: Option<TlsAcceptor>,
    /// Credentials and the failed-authentication limit.
    pub(crate) gate: Gate,
    pub(crate) path: String,
    pub(crate) max_frame_bytes: usize,
}

/// Why an incoming connection was turned away (counted by the listener, not fatal).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(WsError),
}

/// Runs the TLS and WebSocket handshakes of an incoming connection, checking the path,
/// the credentials (401 before the upgrade, no frame exchanged) and the subprotocol.
pub(crate) async fn accept<R: Runtime>(
    mut tcp: R::Tcp,
    peer: SocketAddr,
    options: &AcceptOptions,
) -> Result<(Ws, Principal), AcceptError> {
    let (io, peer_certs): (
        Box<dyn Io>,
        Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) = match &options.tls {
        Some(acceptor) => {
            let stream = acceptor.accept(tcp).await.map_err(AcceptError::Tls)?;
            let certs = stream.get_ref().1.peer_certificates().map(|c| c.to_vec());
            (Box::new(stream), certs)
        }
        None => {
            refuse_tls::<R>(&mut tcp).await;
            (Box::new(tcp), None)
        }
    };
    let mut principal: Option<Principal> = None;
    // tungstenite's callback type fixes the error type; it is built once per handshake.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path().trim_end_matches('/') != options.path {
            tracing::info!(peer = %peer, path = request.uri().path(), "connection refused: no such database");
            return Err(error_response(StatusCode::NOT_FOUND, "no such database"));
        }
        let offered = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if !offered {
            tracing::info!(peer = %peer, "connection refused: no {SUBPROTOCOL} subprotocol offered");
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                &format!("the WebSocket subprotocol {SUBPROTOCOL} is required"),
            ));
        }
        match options.gate.admit(
            peer,
            request.headers().get(header::AUTHORIZATION),
            peer_certs.as_deref(),
        ) {
            Ok(p) => principal = Some(p),
            Err(Refusal::TooManyFailures { retry_after }) => {
                return Err(too_many_failures(retry_after));
            }
            Err(Refusal::Unauthorized { challenge }) => {
                let mut e = error_response(StatusCode::UNAUTHORIZED, "authentication required");
                if let Some(challenge) = challenge {
                    e.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(challenge),
                    );
                }
                return Err(e);
            }
        }
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    };
    let ws = async_tungstenite::accept_hdr_async_with_config(
        io,
        callback,
        Some(ws_config(options.max_frame_bytes)),
    )
    .await
    .map_err(AcceptError::WebSocket)?;
    Ok((ws, principal.unwrap_or_default()))
}

/// On a plain listener, answers a TLS handshake (a `wss://` client) with a TLS alert
/// record (fatal, protocol_version), so the client can tell "this listener does not speak
/// TLS" from a connection dropped because the listener is overloaded. The WebSocket
/// handshake that follows fails on the same bytes.
async fn refuse_tls<R: Runtime>(tcp: &mut R::Tcp) {
    use futures_lite::AsyncWriteExt;
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    const FATAL_PROTOCOL_VERSION: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46];
    let mut first = [0u8; 1];
    if matches!(R::peek(tcp, &mut first).await, Ok(1)) && first[0] == TLS_HANDSHAKE_RECORD {
        let _ = tcp.write_all(&FATAL_PROTOCOL_VERSION).await;
        let _ = tcp.flush().await;
    }
}

/// Answers an incoming connection that is over the listener's connection limit: HTTP 503
/// with `Retry-After`, after the TLS handshake (a client cannot read an answer without it).
pub(crate) async fn turn_away<T: Io + 'static>(tcp: T, options: &AcceptOptions, limit: usize) {
    let io: Box<dyn Io> = match &options.tls {
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => Box::new(stream),
            Err(_) => return,
        },
        None => Box::new(tcp),
    };
    #[allow(clippy::result_large_err)]
    let busy = |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
        let mut e = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the listener is at its connection limit ({limit})"),
        );
        e.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(BUSY_RETRY_AFTER_SECS),
        );
        Err(e)
    };
    let _ = async_tungstenite::accept_hdr_async(io, busy).await;
}

/// What a listener at its connection limit asks clients to wait.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// 429 with `Retry-After` (whole seconds, rounded up).
#[allow(clippy::result_large_err)]
fn too_many_failures(wait: Duration) -> ErrorResponse {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut e = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed authentications from this address",
    );
    e.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    e
}

#[allow(clippy::result_large_err)]
fn error_response(status: StatusCode, message: &str) -> ErrorResponse {
    let mut e = ErrorResponse::new(Some(format!("{message}\n")));
    *e.status_mut() = status;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("wss://example.com:4984/db").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "example.com", 4984)
        );
        let e = Endpoint::parse("ws://[::1]:80/db").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.address()),
            (false, "::1", "[::1]:80".to_string())
        );
        assert_eq!(Endpoint::parse("ws://h/db").unwrap().port, 80);
        for bad in [
            "http://h/db",
            "ws://h",
            "ws:///db",
            "nonsense",
            "wss://h:99999/db",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
