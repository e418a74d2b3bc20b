//! The admin server: HTTP/JSON over a Unix domain socket only the database's owner can
//! reach, and optionally over TCP with Basic authentication.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use peerlite_runtime::{Gate, ListenerMonitor, Refusal};
use peerlite_storage::Database;
use serde::Deserialize;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api::{ErrorBody, NewIdentity, Peer, Status, Totals};
use super::ops::{self, Failure, OpResult};

/// The largest request body accepted, except a blob's (64 MiB: an import sends a
/// thousand documents a request).
const MAX_BODY: usize = 64 << 20;

/// How often a followed changes feed sends an empty line while nothing changes, so a
/// client that went away is noticed.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The listener an admin server reports on.
#[derive(Clone, Debug)]
pub struct Served {
    /// Reads its status and figures.
    pub monitor: ListenerMonitor,
    /// The URLs replicators use.
    pub urls: Vec<String>,
    /// Its certificate's SHA-256 fingerprint (none without TLS).
    pub certificate_sha256: Option<String>,
}

/// Where an admin server listens.
#[derive(Debug, Default)]
pub struct AdminOptions {
    /// Also listen on this TCP address, letting in only what this gate admits. Plain
    /// HTTP: keep it on loopback or a private network.
    pub tcp: Option<(SocketAddr, Gate)>,
    /// Serve no Unix socket (a TCP address only).
    pub no_socket: bool,
}

/// Why an admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The socket's path is longer than Unix sockets allow.
    #[error(
        "the admin socket path {0} is longer than the {max} bytes a Unix socket allows: serve a database whose path is shorter",
        max = MAX_SOCKET_PATH
    )]
    PathTooLong(String),
    /// Binding or preparing the socket failed.
    #[error("cannot open the admin interface at {at}: {source}")]
    Bind {
        /// The socket path or address.
        at: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Bytes a Unix socket path may have on Linux (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A running admin server. Stop it with [`AdminServer::stop`]; dropped, it stops too
/// (its socket file is then left behind, and replaced at the next start).
#[derive(Debug)]
pub struct AdminServer {
    socket: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
struct AppState {
    db: Database,
    path: Arc<PathBuf>,
    served: Option<Arc<Served>>,
    shutdown: watch::Receiver<bool>,
}

impl AdminServer {
    /// Serves `db` (the database at `path`) on `path/admin.sock` and, if asked, on TCP;
    /// reports on `served` if a listener serves it. Call within a tokio runtime.
    pub async fn start(
        db: Database,
        path: &Path,
        served: Option<Served>,
        options: AdminOptions,
    ) -> Result<AdminServer, AdminError> {
        let (shutdown, stopping) = watch::channel(false);
        let state = AppState {
            db,
            path: Arc::new(path.to_owned()),
            served: served.map(Arc::new),
            shutdown: stopping.clone(),
        };
        let app = router(state);
        let mut tasks = Vec::new();
        let mut socket = None;
        if !options.no_socket {
            let file = super::socket_path(path);
            let listener = bind_socket(&file)?;
            let owner = std::fs::metadata(&file)
                .map_err(|source| AdminError::Bind {
                    at: file.display().to_string(),
                    source,
                })?
                .uid();
            let owner_only = OwnerOnly { listener, owner };
            let mut stop = stopping.clone();
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let serving = axum::serve(owner_only, app)
                    .with_graceful_shutdown(async move { stopped(&mut stop).await });
                if let Err(e) = serving.await {
                    tracing::error!(error = %e, "the admin socket failed");
                }
            }));
            tracing::info!(socket = %file.display(), "admin interface listening");
            socket = Some(file);
        }
        let mut tcp = None;
        if let Some((address, gate)) = options.tcp {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| AdminError::Bind {
                    at: address.to_string(),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| AdminError::Bind {
                at: address.to_string(),
                source,
            })?;
            let gate = Arc::new(gate);
            let app = app.layer(axum::middleware::from_fn_with_state(gate, authenticate));
            let mut stop = stopping.clone();
            tasks.push(tokio::spawn(async move {
                let serving = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move { stopped(&mut stop).await });
                if let Err(e) = serving.await {
                    tracing::error!(error = %e, "the admin TCP listener failed");
                }
            }));
            tracing::info!(address = %local, "admin interface listening on TCP");
            tcp = Some(local);
        }
        Ok(AdminServer {
            socket,
            tcp,
            shutdown,
            tasks,
        })
    }

    /// The Unix socket's path, if it serves one.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The TCP address, if it serves one.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Ends followed changes feeds, finishes the requests under way, and removes the
    /// socket file.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(file) = &self.socket {
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Binds the socket file, replacing a stale one (whoever serves the database holds its
/// lock, so a socket left there is from a server that died), readable and writable by
/// its owner only.
fn bind_socket(file: &Path) -> Result<UnixListener, AdminError> {
    let text = file.display().to_string();
    if file.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(AdminError::PathTooLong(text));
    }
    let bind_error = |source| AdminError::Bind {
        at: text.clone(),
        source,
    };
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(bind_error(e)),
        _ => {}
    }
    let listener = UnixListener::bind(file).map_err(bind_error)?;
    // The database directory is the owner's alone (0700), so nobody else could reach
    // the socket between its creation and this.
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(listener)
}

/// Accepts connections from the socket's owner only (checked with the peer's
/// credentials, in case the file modes are not enough: root, a changed mode).
struct OwnerOnly {
    listener: UnixListener,
    owner: u32,
}

impl axum::serve::Listener for OwnerOnly {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == self.owner => return (stream, addr),
                    Ok(cred) => tracing::warn!(
                        uid = cred.uid(),
                        owner = self.owner,
                        "admin connection refused: only the database's owner may use it"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "admin connection refused: its credentials are unreadable")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Lets in only what the gate admits (the TCP admin address).
async fn authenticate(
    State(gate): State<Arc<Gate>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match gate.check(peer, authorization) {
        Ok(_) => next.run(request).await,
        Err(Refusal::TooManyFailures { retry_after }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications from this address; wait and retry",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            r
        }
        Err(Refusal::Unauthorized { challenge }) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "the admin interface needs the admin user's name and password (HTTP Basic)",
            );
            if let Some(challenge) = challenge {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            r
        }
        Err(_) => error(StatusCode::UNAUTHORIZED, "not authenticated"),
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/info", get(info))
        .route("/collections", get(collections))
        .route("/collections/{collection}", delete(delete_collection))
        .route("/c/{collection}/docs", get(list).post(import))
        .route(
            "/c/{collection}/docs/{id}",
            get(get_doc).put(put_doc).delete(delete_doc),
        )
        .route(
            "/c/{collection}/docs/{id}/expiration",
            get(get_expiration).put(put_expiration),
        )
        .route("/c/{collection}/purge/{id}", post(purge_doc))
        .route("/c/{collection}/purge", post(purge_docs))
        .route("/c/{collection}/changes", get(changes))
        .route("/blobs", get(blobs).put(put_blob))
        .route("/blobs/{digest}", get(get_blob))
        .route("/compact", post(compact))
        .route("/retention", get(get_retention).put(put_retention))
        .route("/identities", get(identities))
        .route(
            "/identities/{label}",
            post(create_identity).delete(delete_identity),
        )
        .route("/identities/{label}/renew", post(renew_identity))
        .route("/identities/{label}/certificate", get(certificate))
        .fallback(async || {
            error(
                StatusCode::NOT_FOUND,
                "no such admin endpoint (see docs/ADMIN.md)",
            )
        })
        .method_not_allowed_fallback(async || {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method (see docs/ADMIN.md)",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A JSON error answer.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.to_owned(),
        }),
    )
        .into_response()
}

fn failure(f: Failure) -> Response {
    let status = StatusCode::from_u16(f.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %f, "admin request failed");
    }
    error(status, &f.to_string())
}

/// Runs a database operation on a blocking thread (the store reads and syncs files).
async fn blocking<T: Send + 'static>(
    state: &AppState,
    op: impl FnOnce(&Database) -> OpResult<T> + Send + 'static,
) -> OpResult<T> {
    let db = state.db.clone();
    match tokio::task::spawn_blocking(move || op(&db)).await {
        Ok(result) => result,
        Err(e) => Err(Failure::Internal(format!("the operation panicked: {e}"))),
    }
}

fn json<T: serde::Serialize>(result: OpResult<T>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(f) => failure(f),
    }
}

/// A request body as JSON, whatever its declared content type (`curl -d` says form).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> OpResult<T> {
    serde_json::from_slice(body).map_err(|e| Failure::BadRequest(format!("invalid JSON body: {e}")))
}

fn bad_query(e: QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("invalid query: {}", e.body_text()),
    )
}

async fn root(State(s): State<AppState>) -> Response {
    axum::Json(serde_json::json!({
        "peerlite": env!("CARGO_PKG_VERSION"),
        "database": s.path.display().to_string(),
        "served": s.served.is_some(),
    }))
    .into_response()
}

fn totals(s: &peerlite_runtime::SyncStats) -> Totals {
    Totals {
        documents_received: s.documents_received,
        documents_sent: s.documents_sent,
        documents_failed: s.documents_failed,
        bytes_received: s.bytes_received,
        bytes_sent: s.bytes_sent,
    }
}

fn server_status(served: &Served) -> Status {
    let status = served.monitor.status();
    Status {
        urls: served.urls.clone(),
        certificate_sha256: served.certificate_sha256.clone(),
        pid: std::process::id(),
        connection_count: status.connection_count,
        active_connection_count: status.active_connection_count,
        rejected_connection_count: status.rejected_connection_count,
        connections: served
            .monitor
            .connections()
            .into_iter()
            .map(|c| Peer {
                peer: c.peer,
                user: c.user,
                since: ops::format_time(c.since),
                active: c.active,
                totals: totals(&c.stats),
            })
            .collect(),
        totals: totals(&served.monitor.stats()),
    }
}

async fn status(State(s): State<AppState>) -> Response {
    match &s.served {
        Some(served) => axum::Json(server_status(served)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no listener serves this database"),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let db_figures = blocking(&s, super::metrics::database_figures).await;
    let db_figures = match db_figures {
        Ok(f) => f,
        Err(f) => return failure(f),
    };
    let listener = s
        .served
        .as_ref()
        .map(|served| (served.monitor.status(), served.monitor.stats()));
    match super::metrics::encode(listener, &db_figures) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => failure(Failure::Internal(format!("cannot encode the metrics: {e}"))),
    }
}

async fn info(State(s): State<AppState>) -> Response {
    let path = s.path.clone();
    let result = blocking(&s, move |db| ops::info(db, &path)).await;
    json(result.map(|mut info| {
        info.server = s.served.as_deref().map(server_status);
        info
    }))
}

async fn collections(State(s): State<AppState>) -> Response {
    json(blocking(&s, ops::collections).await)
}

async fn delete_collection(
    State(s): State<AppState>,
    UrlPath(collection): UrlPath<String>,
) -> Response {
    let result = blocking(&s, move |db| {
        ops::delete_collection(db, &ops::collection(&collection)?)
    })
    .await;
    json(result.map(|n| serde_json::json!({ "documents": n })))
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

async fn list(
    State(s): State<AppState>,
    UrlPath(collection): UrlPath<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    json(
        blocking(&s, move |db| {
            let c = ops::collection(&collection)?;
            let after = q.after.as_deref().map(ops::doc_id).transpose()?;
            ops::documents(db, &c, after.as_ref(), q.limit)
        })
        .await,
    )
}

async fn import(
    State(s): State<AppState>,
    UrlPath(collection): UrlPath<String>,
    body: Bytes,
) -> Response {
    let values: Vec<serde_json::Value> = match parse(&body) {
        Ok(v) => v,
        Err(f) => return failure(f),
    };
    json(
        blocking(&s, move |db| {
            let c = ops::collection(&collection)?;
            // Every document is checked before any is saved.
            let docs = values
                .into_iter()
                .enumerate()
                .map(|(n, v)| {
                    split_id(v).map_err(|e| Failure::BadRequest(format!("document {}: {e}", n + 1)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            ops::import(db, &c, docs)
        })
        .await,
    )
}

/// Splits a JSON object with an `"_id"` string into the document's ID and body.
pub fn split_id(
    mut value: serde_json::Value,
) -> Result<(peerlite_proto::DocId, peerlite_proto::Body), String> {
    let object = value.as_object_mut().ok_or("expected a JSON object")?;
    let id = match object.remove("_id") {
        Some(serde_json::Value::String(id)) => ops::doc_id(&id).map_err(|e| e.to_string())?,
        _ => return Err("expected an \"_id\" string".into()),
    };
    let body = ops::body(&value).map_err(|e| e.to_string())?;
    Ok((id, body))
}

#[derive(Deserialize)]
struct DocQuery {
    #[serde(default)]
    meta: bool,
}

/// The body of `PUT /c/{collection}/docs/{id}/expiration`.
#[derive(Deserialize)]
struct ExpirationRequest {
    /// RFC 3339, or null: never.
    at: Option<String>,
}

async fn get_expiration(
    State(s): State<AppState>,
    UrlPath((collection, id)): UrlPath<(String, String)>,
) -> Response {
    json(
        blocking(&s, move |db| {
            ops::expiration(db, &ops::collection(&collection)?, &ops::doc_id(&id)?)
        })
        .await,
    )
}

async fn put_expiration(
    State(s): State<AppState>,
    UrlPath((collection, id)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    json(
        blocking(&s, move |db| {
            let request: ExpirationRequest = serde_json::from_slice(&body).map_err(|e| {
                Failure::BadRequest(format!(
                    "expected {{\"at\": \"2030-01-01T00:00:00Z\"}} or {{\"at\": null}}: {e}"
                ))
            })?;
            let at = request.at.as_deref().map(ops::parse_time).transpose()?;
            ops::set_expiration(db, &ops::collection(&collection)?, &ops::doc_id(&id)?, at)
        })
        .await,
    )
}

async fn get_doc(
    State(s): State<AppState>,
    UrlPath((collection, id)): UrlPath<(String, String)>,
    query: Result<Query<DocQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    if q.meta {
        return json(
            blocking(&s, move |db| {
                ops::meta(db, &ops::collection(&collection)?, &ops::doc_id(&id)?)
            })
            .await,
        );
    }
    json(
        blocking(&s, move |db| {
            ops::get(db, &ops::collection(&collection)?, &ops::doc_id(&id)?)
        })
        .await,
    )
}

/// The query of `PUT /c/{collection}/docs/{id}`.
#[derive(Deserialize)]
struct PutQuery {
    /// RFC 3339: the document expires then (set in the same commit as the save).
    expires: Option<String>,
}

async fn put_doc(
    State(s): State<AppState>,
    UrlPath((collection, id)): UrlPath<(String, String)>,
    query: Result<Query<PutQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let value: serde_json::Value = match parse(&body) {
        Ok(v) => v,
        Err(f) => return failure(f),
    };
    json(
        blocking(&s, move |db| {
            let (c, id) = (ops::collection(&collection)?, ops::doc_id(&id)?);
            let expires = q.expires.as_deref().map(ops::parse_time).transpose()?;
            ops::put(db, &c, &id, ops::body(&value)?, expires)
        })
        .await,
    )
}

async fn delete_doc(
    State(s): State<AppState>,
    UrlPath((collection, id)): UrlPath<(String, String)>,
) -> Response {
    json(
        blocking(&s, move |db| {
            ops::delete(db, &ops::collection(&collection)?, &ops::doc_id(&id)?)
        })
        .await,
    )
}

async fn purge_doc(
    State(s): State<AppState>,
    UrlPath((collection, id)): UrlPath<(String, String)>,
) -> Response {
    let result = blocking(&s, move |db| {
        ops::purge(db, &ops::collection(&collection)?, &[ops::doc_id(&id)?])
    })
    .await;
    json(result.map(|n| serde_json::json!({"purged": n})))
}

/// The body of `POST /c/{collection}/purge`.
#[derive(Deserialize)]
struct PurgeRequest {
    ids: Vec<String>,
}

async fn purge_docs(
    State(s): State<AppState>,
    UrlPath(collection): UrlPath<String>,
    body: Bytes,
) -> Response {
    let result = blocking(&s, move |db| {
        let request: PurgeRequest = serde_json::from_slice(&body)
            .map_err(|e| Failure::BadRequest(format!("expected {{\"ids\": [\"ID\", …]}}: {e}")))?;
        let ids = request
            .ids
            .iter()
            .map(|id| ops::doc_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        ops::purge(db, &ops::collection(&collection)?, &ids)
    })
    .await;
    json(result.map(|n| serde_json::json!({"purged": n})))
}

#[derive(Deserialize)]
struct ChangesQuery {
    #[serde(default)]
    since: u64,
    #[serde(default = "default_limit")]
    limit: usize,
    /// `continuous`: every change after `since`, then each as it happens, one JSON
    /// object per line.
    feed: Option<String>,
}

async fn changes(
    State(s): State<AppState>,
    UrlPath(collection): UrlPath<String>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    match q.feed.as_deref() {
        None | Some("normal") => json(
            blocking(&s, move |db| {
                ops::changes(db, &ops::collection(&collection)?, q.since, q.limit)
            })
            .await,
        ),
        Some("continuous") => {
            let c = match ops::collection(&collection) {
                Ok(c) => c,
                Err(f) => return failure(f),
            };
            let check = c.clone();
            if let Err(r) = blocking(&s, move |db| ops::existing(db, &check)).await {
                return failure(r);
            }
            follow(s, c, q.since)
        }
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            &format!("unknown feed {other:?}: use feed=continuous or leave it out"),
        ),
    }
}

/// Streams the changes after `since`, then each new one, as JSON lines, until the
/// client goes away or the server stops.
fn follow(s: AppState, c: peerlite_proto::CollectionName, since: u64) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let wake = Arc::new(tokio::sync::Notify::new());
    let notify = wake.clone();
    let watched = c.clone();
    let token = s.db.add_change_listener(move |notices| {
        if notices.iter().any(|n| n.collection == watched) {
            notify.notify_one();
        }
    });
    let mut stop = s.shutdown.clone();
    tokio::spawn(async move {
        let mut since = since;
        loop {
            let (db, c2) = (s.db.clone(), c.clone());
            let page =
                tokio::task::spawn_blocking(move || ops::changes(&db, &c2, since, 1000)).await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a followed changes feed ended");
                    break;
                }
                Err(_) => break,
            };
            let mut lines = Vec::new();
            for change in &page {
                since = change.seq;
                if let Ok(line) = serde_json::to_vec(change) {
                    lines.extend_from_slice(&line);
                    lines.push(b'\n');
                }
            }
            if !lines.is_empty() {
                if tx.send(Ok(Bytes::from(lines))).await.is_err() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = stopped(&mut stop) => break,
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                        break;
                    }
                }
            }
        }
        s.db.remove_change_listener(token);
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        channel_body(rx),
    )
        .into_response()
}

/// A response body streaming what a task sends on `rx`; the task sees its sends fail
/// once the client goes away.
fn channel_body(rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    Body::from_stream(futures_lite::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn blobs(State(s): State<AppState>) -> Response {
    json(blocking(&s, ops::blobs).await)
}

async fn compact(State(s): State<AppState>) -> Response {
    json(blocking(&s, ops::compact).await)
}

async fn get_retention(State(s): State<AppState>) -> Response {
    json(blocking(&s, ops::retention).await)
}

/// The body of `PUT /retention`.
#[derive(Deserialize)]
struct RetentionRequest {
    /// A duration (`30d`, `0s`) or `forever`.
    keep: String,
}

async fn put_retention(State(s): State<AppState>, body: Bytes) -> Response {
    json(
        blocking(&s, move |db| {
            let request: RetentionRequest = serde_json::from_slice(&body).map_err(|e| {
                Failure::BadRequest(format!(
                    "expected {{\"keep\": \"30d\"}} or {{\"keep\": \"forever\"}}: {e}"
                ))
            })?;
            ops::set_retention(db, ops::parse_retention(&request.keep)?)
        })
        .await,
    )
}

/// Stores the request body as a blob, streaming; answers its reference.
async fn put_blob(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    use http_body_util::BodyExt;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|t| *t != "application/octet-stream")
        .map(str::to_owned);
    // `None` marks the end of the body: a channel that closes without it (the client
    // went away, the body broke off) leaves the writer unfinished, which stores nothing.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(8);
    let writer = blocking(&s, move |db| {
        let mut writer = db.blob_writer()?;
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Some(chunk) => writer.write(&chunk)?,
                None => return Ok(writer.finish(content_type.as_deref())?),
            }
        }
        Err(Failure::BadRequest(
            "the upload broke off before its end: nothing was stored".into(),
        ))
    });
    let feed = async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let data = match frame {
                Ok(frame) => frame.into_data().ok(),
                Err(e) => return Err(e),
            };
            if let Some(data) = data
                && tx.send(Some(data)).await.is_err()
            {
                // The writer failed; it says why.
                return Ok(());
            }
        }
        let _ = tx.send(None).await;
        Ok(())
    };
    let (stored, fed) = tokio::join!(writer, feed);
    if let Err(e) = fed {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("the upload broke off: {e}; nothing was stored"),
        );
    }
    json(stored.map(|blob| blob.to_json()))
}

/// Streams a blob's bytes.
async fn get_blob(State(s): State<AppState>, UrlPath(digest): UrlPath<String>) -> Response {
    let digest: peerlite_proto::BlobDigest = match digest.parse() {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid blob digest: {e}"),
            );
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let opened = blocking(&s, move |db| {
        db.open_blob(&digest)?.ok_or_else(|| {
            Failure::NotFound(format!(
                "no blob {digest} in this database (see peerlite blob ls)"
            ))
        })
    })
    .await;
    let mut reader = match opened {
        Ok(r) => r,
        Err(f) => return failure(f),
    };
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        channel_body(rx),
    )
        .into_response()
}

async fn identities(State(s): State<AppState>) -> Response {
    json(blocking(&s, ops::identities).await)
}

async fn create_identity(
    State(s): State<AppState>,
    UrlPath(label): UrlPath<String>,
    body: Bytes,
) -> Response {
    let request: NewIdentity = match parse(&body) {
        Ok(v) => v,
        Err(f) => return failure(f),
    };
    json(
        blocking(&s, move |db| {
            let id = ops::make_identity(&request)?;
            ops::create_identity(db, &label, &id)
        })
        .await,
    )
}

#[derive(Deserialize, Default)]
struct Renewal {
    expiration: Option<String>,
}

async fn renew_identity(
    State(s): State<AppState>,
    UrlPath(label): UrlPath<String>,
    body: Bytes,
) -> Response {
    // An empty body renews for a year.
    let renewal: Renewal = match body.is_empty() {
        true => Renewal::default(),
        false => match parse(&body) {
            Ok(v) => v,
            Err(f) => return failure(f),
        },
    };
    json(
        blocking(&s, move |db| {
            ops::renew_identity(db, &label, renewal.expiration.as_deref())
        })
        .await,
    )
}

async fn certificate(State(s): State<AppState>, UrlPath(label): UrlPath<String>) -> Response {
    match blocking(&s, move |db| ops::certificate(db, &label)).await {
        Ok(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
        Err(f) => failure(f),
    }
}

async fn delete_identity(State(s): State<AppState>, UrlPath(label): UrlPath<String>) -> Response {
    json(
        blocking(&s, move |db| ops::delete_identity(db, &label))
            .await
            .map(|()| serde_json::json!({"deleted": true})),
    )
}
