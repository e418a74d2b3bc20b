//! A client of the admin interface over its Unix socket: what the `peerlite` commands
//! use when `peerlite serve` holds the database. Blocking; each call runs on its own
//! small tokio runtime.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::ErrorBody;
use super::ops::{Failure, OpResult};

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What a path segment keeps unescaped: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes `s` for use as one path segment (a document ID may hold `/`, `?`, spaces…).
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A connection to a server's admin socket.
pub struct Client {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
    sender: Option<SendRequest<Body>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the admin socket of the database at `db`, if a server listens there:
    /// `None` when there is no socket or nobody answers it (a server that died).
    pub fn connect(db: &Path) -> Option<Client> {
        let socket = super::socket_path(db);
        if !socket.exists() {
            return None;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let mut client = Client {
            socket,
            rt,
            sender: None,
        };
        client.sender = Some(client.sender().ok()?);
        Some(client)
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Failure {
        Failure::Internal(format!(
            "the server holding this database does not answer on {}: {e}",
            self.socket.display()
        ))
    }

    /// The open connection, opening one if the last was closed.
    fn sender(&mut self) -> OpResult<SendRequest<Body>> {
        if let Some(s) = self.sender.take()
            && !s.is_closed()
        {
            return Ok(s);
        }
        let socket = self.socket.clone();
        let opened = self.rt.block_on(async move {
            let stream = tokio::net::UnixStream::connect(&socket).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(sender)
        });
        opened.map_err(|e| self.unreachable(e))
    }

    /// Sends a request; answers the response if its status is a success, and the
    /// server's error (with the same message a local command gives) otherwise.
    fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Body,
    ) -> OpResult<hyper::Response<hyper::body::Incoming>> {
        let mut sender = self.sender()?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "peerlite");
        if let Some(t) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, t);
        }
        let request = request
            .body(body)
            .map_err(|e| Failure::BadRequest(e.to_string()))?;
        let response = self.rt.block_on(async {
            sender.ready().await?;
            sender.send_request(request).await
        });
        let response = response.map_err(|e| self.unreachable(e))?;
        // Reused for the next request once this answer's body is read.
        self.sender = Some(sender);
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = self
            .rt
            .block_on(response.into_body().collect())
            .map_err(|e| self.unreachable(e))?
            .to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("the server answered {status}"));
        Err(Failure::from_status(status.as_u16(), message))
    }

    fn full(bytes: Vec<u8>) -> Body {
        Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed()
    }

    /// The whole body of a successful answer.
    pub fn bytes(&mut self, method: Method, path: &str) -> OpResult<Bytes> {
        let response = self.send(method, path, None, Self::full(Vec::new()))?;
        self.rt
            .block_on(response.into_body().collect())
            .map(|b| b.to_bytes())
            .map_err(|e| self.unreachable(e))
    }

    /// A JSON answer to a request without a body.
    pub fn get<T: DeserializeOwned>(&mut self, method: Method, path: &str) -> OpResult<T> {
        let bytes = self.bytes(method, path)?;
        decode(&bytes)
    }

    /// A JSON answer to a request with a JSON body.
    pub fn send_json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> OpResult<T> {
        let bytes = serde_json::to_vec(body).map_err(|e| Failure::BadRequest(e.to_string()))?;
        let response = self.send(method, path, Some("application/json"), Self::full(bytes))?;
        let bytes = self
            .rt
            .block_on(response.into_body().collect())
            .map_err(|e| self.unreachable(e))?
            .to_bytes();
        decode(&bytes)
    }

    /// Uploads `file` as the body (streamed), answering JSON.
    pub fn upload<T: DeserializeOwned>(
        &mut self,
        path: &str,
        file: &Path,
        content_type: Option<&str>,
    ) -> OpResult<T> {
        let opened = self.rt.block_on(tokio::fs::File::open(file));
        let f = opened
            .map_err(|e| Failure::BadRequest(format!("cannot read {}: {e}", file.display())))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 64 << 10);
        let body = StreamBody::new(futures_lite::StreamExt::map(stream, |chunk| {
            chunk.map(Frame::data)
        }))
        .boxed();
        let content_type = content_type.unwrap_or("application/octet-stream");
        let response = self.send(Method::PUT, path, Some(content_type), body)?;
        let bytes = self
            .rt
            .block_on(response.into_body().collect())
            .map_err(|e| self.unreachable(e))?
            .to_bytes();
        decode(&bytes)
    }

    /// Streams the answer's body to `each`, chunk by chunk as it arrives, until it ends
    /// or `each` fails.
    pub fn stream(
        &mut self,
        path: &str,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> OpResult<()> {
        let response = self.send(Method::GET, path, None, Self::full(Vec::new()))?;
        let mut body = response.into_body();
        loop {
            let frame = self.rt.block_on(body.frame());
            match frame {
                None => return Ok(()),
                Some(Err(e)) => return Err(self.unreachable(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        each(&data).map_err(|e| Failure::Internal(format!("cannot write: {e}")))?;
                    }
                }
            }
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> OpResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Failure::Internal(format!("the server's answer is not what was expected: {e}"))
    })
}
