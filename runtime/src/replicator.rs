//! The replicator: the active peer, driving `peerlite_proto::ActiveReplicator`.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::Sender;
use peerlite_proto::record::{RecordedConfig, StepKind};
use peerlite_proto::{
    ActiveReplicator, Activity, CollectionConfig, CollectionName, Disconnect, DocId, DocumentEvent,
    Event, FrameLimits, Input, Output, Progress, ReplicationError, ReplicatorConfig,
    ReplicatorType, Retry,
};
use peerlite_storage::{Database, ListenerToken, StorageError};

use crate::Transport;
use crate::custom::Connector;
use crate::drive::{Link, Msg, Side, drive};
use crate::executor::Runtime;
use crate::record::{RecordOptions, Recorder};
use crate::stats::{Counters, SyncStats};
use crate::transport::{DialOptions, Endpoint, dial};
use crate::{
    ConnectError, Credentials, ReplicatorConfigError, ReplicatorError, ServerTrust, TlsIdentity,
};

/// Settings of a [`Replicator`] (Couchbase Lite's `ReplicatorConfiguration`).
#[derive(Clone)]
pub struct ReplicatorConfiguration {
    /// `ws://host:port/db` or `wss://host:port/db`.
    pub endpoint: String,
    /// Collections to replicate, with their filters and conflict resolvers.
    pub collections: Vec<CollectionConfig>,
    /// Push, pull or both (default both).
    pub replicator_type: ReplicatorType,
    /// Keep running and replicate changes as they happen (default one-shot).
    pub continuous: bool,
    /// HTTP Basic credentials.
    pub credentials: Option<Credentials>,
    /// A client certificate, for listeners that authenticate by certificate.
    pub client_identity: Option<TlsIdentity>,
    /// How to trust the listener's certificate (default: nothing is trusted until you
    /// pin a certificate, accept self-signed ones, or add trusted roots).
    pub server_trust: ServerTrust,
    /// Extra HTTP headers sent with the WebSocket upgrade.
    pub headers: Vec<(String, String)>,
    /// Heartbeat interval (default 30 s).
    pub heartbeat: Duration,
    /// Connection attempts before giving up; 0 = 10 one-shot, unlimited continuous.
    pub max_attempts: u32,
    /// Longest wait between attempts (default 300 s).
    pub max_attempt_wait: Duration,
    /// Time allowed for TCP, TLS and WebSocket handshakes (default 10 s).
    pub connect_timeout: Duration,
    /// The largest message accepted from the listener (default 16 MiB). It is announced
    /// in the handshake, so the listener never sends more: a document too large for it
    /// is reported per document (`DocumentError::TooLarge`) instead.
    pub max_frame_bytes: usize,
    /// Record every input of the replicator's state machine to a file, for the sync
    /// doctor (default: no).
    pub record: Option<RecordOptions>,
}

impl ReplicatorConfiguration {
    /// One-shot push-and-pull of the default collection with `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> ReplicatorConfiguration {
        ReplicatorConfiguration {
            endpoint: endpoint.into(),
            collections: vec![CollectionConfig::new(CollectionName::default())],
            replicator_type: ReplicatorType::PushAndPull,
            continuous: false,
            credentials: None,
            client_identity: None,
            server_trust: ServerTrust::default(),
            headers: Vec::new(),
            heartbeat: Duration::from_secs(30),
            max_attempts: 0,
            max_attempt_wait: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: FrameLimits::DEFAULT.max_frame_bytes,
            record: None,
        }
    }
}

impl fmt::Debug for ReplicatorConfiguration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatorConfiguration")
            .field("endpoint", &self.endpoint)
            .field("collections", &self.collections)
            .field("replicator_type", &self.replicator_type)
            .field("continuous", &self.continuous)
            .field("credentials", &self.credentials)
            .field("server_trust", &self.server_trust)
            .finish_non_exhaustive()
    }
}

/// A replicator's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicatorStatus {
    /// Stopped, offline, connecting, idle or busy.
    pub activity: Activity,
    /// Progress since start.
    pub progress: Progress,
    /// The latest error, if any.
    pub error: Option<ReplicatorError>,
    /// While offline after a failure: which attempt failed and when the next one starts.
    pub retry: Option<Retry>,
}

/// Identifies a registered listener, for removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

type StatusListener = Arc<dyn Fn(&ReplicatorStatus) + Send + Sync>;
type DocumentListener = Arc<dyn Fn(&[DocumentEvent]) + Send + Sync>;

struct Shared {
    counters: Counters,
    status: Mutex<ReplicatorStatus>,
    next_id: Mutex<u64>,
    status_listeners: Mutex<Vec<(u64, StatusListener)>>,
    document_listeners: Mutex<Vec<(u64, DocumentListener)>>,
    stopped_waiters: Mutex<Vec<Sender<()>>>,
}

/// The replicator's own messages to its task.
enum Control {
    Start {
        reset: bool,
    },
    Stop,
    /// Connection attempt number `.0` ended.
    Dialed(u64, Box<Result<Connection, ConnectError>>),
}

/// How the replicator reaches its peer.
#[derive(Clone)]
enum Dialer {
    /// TCP, TLS when asked for, and a WebSocket upgrade.
    WebSocket {
        endpoint: Endpoint,
        options: Arc<DialOptions>,
    },
    /// A transport the application opens.
    Custom(Connector),
}

/// A connection just made.
enum Connection {
    WebSocket(Box<crate::transport::Ws>),
    Custom(Transport),
}

impl Dialer {
    /// Connects once; `name` names the peer in errors.
    async fn connect<R: Runtime>(self, rt: &R, name: &str) -> Result<Connection, ConnectError> {
        match self {
            Dialer::WebSocket { endpoint, options } => dial(rt, &endpoint, &options)
                .await
                .map(|ws| Connection::WebSocket(Box::new(ws))),
            Dialer::Custom(connect) => {
                connect()
                    .await
                    .map(Connection::Custom)
                    .map_err(|e| ConnectError::Unreachable {
                        address: name.to_owned(),
                        message: e.to_string(),
                    })
            }
        }
    }
}

/// The active peer: replicates a local [`Database`] with a listener.
///
/// ```no_run
/// use peerlite_smol::{Credentials, Replicator, ReplicatorConfiguration, ServerTrust};
/// # async fn run(db: peerlite_storage::Database) -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = ReplicatorConfiguration::new("wss://192.168.1.100:4984/db");
/// config.credentials = Some(Credentials::new("admin", "securepassword123"));
/// config.server_trust = ServerTrust::SelfSignedOnly;
/// let replicator = Replicator::new(db, config)?;
/// replicator.add_change_listener(|s| println!("{:?} {:?}", s.activity, s.progress));
/// replicator.start();
/// let status = replicator.wait_until_stopped().await;
/// assert!(status.error.is_none());
/// # Ok(()) }
/// ```
pub struct Replicator<R: Runtime> {
    db: Database,
    config: ReplicatorConfig,
    shared: Arc<Shared>,
    tx: Sender<Msg<Control>>,
    db_listener: ListenerToken,
    _task: R::Task,
    /// Purges the database's documents as they expire, while the replicator exists.
    _expiry: crate::expiry::ExpiryPurger,
}

impl<R: Runtime> fmt::Debug for Replicator<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicator")
            .field("endpoint", &self.config.remote_url)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Replicator<R> {
    /// Creates a stopped replicator for `db`; call [`Replicator::start`].
    pub fn new(
        db: Database,
        config: ReplicatorConfiguration,
    ) -> Result<Replicator<R>, ReplicatorConfigError> {
        let endpoint = Endpoint::parse(&config.endpoint)?;
        let tls = if endpoint.tls {
            Some(Arc::new(crate::tls::client_config(
                &config.server_trust,
                config.client_identity.as_ref(),
            )?))
        } else {
            None
        };
        let options = DialOptions {
            tls,
            credentials: config.credentials.clone(),
            headers: config.headers.clone(),
            timeout: config.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
        };
        let dialer = Dialer::WebSocket {
            endpoint,
            options: Arc::new(options),
        };
        Replicator::build(db, config, dialer)
    }

    /// Creates a stopped replicator for `db` that talks to its peer over a transport the
    /// application supplies instead of TCP and WebSockets: `connect` opens a new
    /// [`Transport`] each time the replicator connects or reconnects (an error is retried
    /// with backoff, as an unreachable listener is). The peer serves it with
    /// [`Listener::serve_transport`](crate::Listener::serve_transport).
    ///
    /// `config.endpoint` only names the peer — checkpoints are kept per name, so use the
    /// same one for the same peer — and its TLS, credential, header and connection-timeout
    /// settings do not apply: the transport is the application's.
    ///
    /// `cargo run -p peerlite-tokio --example unix_socket` replicates over a Unix domain
    /// socket this way.
    pub fn over<F, Fut>(
        db: Database,
        config: ReplicatorConfiguration,
        connect: F,
    ) -> Result<Replicator<R>, ReplicatorConfigError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<Transport>> + Send + 'static,
    {
        let connect: Connector = Arc::new(move || Box::pin(connect()));
        Replicator::build(db, config, Dialer::Custom(connect))
    }

    fn build(
        db: Database,
        config: ReplicatorConfiguration,
        dialer: Dialer,
    ) -> Result<Replicator<R>, ReplicatorConfigError> {
        let rt = R::default();
        for c in &config.collections {
            db.create_collection(&c.name)?;
        }
        let mut proto = ReplicatorConfig::new(db.uuid().0, config.endpoint.clone());
        proto.collections = config.collections.clone();
        proto.replicator_type = config.replicator_type;
        proto.continuous = config.continuous;
        proto.heartbeat = config.heartbeat;
        proto.max_attempts = config.max_attempts;
        proto.max_attempt_wait = config.max_attempt_wait;
        proto.frame_limits.max_frame_bytes = config.max_frame_bytes;
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            status: Mutex::new(ReplicatorStatus {
                activity: Activity::Stopped,
                progress: Progress::default(),
                error: None,
                retry: None,
            }),
            next_id: Mutex::new(0),
            status_listeners: Mutex::new(Vec::new()),
            document_listeners: Mutex::new(Vec::new()),
            stopped_waiters: Mutex::new(Vec::new()),
        });
        let recorder = match &config.record {
            Some(r) => Some(
                Recorder::create(&r.path, r, RecordedConfig::Active(proto.clone())).map_err(
                    |source| ReplicatorConfigError::Record {
                        path: r.path.display().to_string(),
                        source,
                    },
                )?,
            ),
            None => None,
        };
        let (tx, rx) = async_channel::unbounded();
        let (db_listener, changes) = crate::change_feed::watch(&db);
        let mut driver = Driver {
            recorder,
            rt: rt.clone(),
            machine: ActiveReplicator::new(proto.clone()),
            name: config.endpoint.clone(),
            logged: Activity::Stopped,
            max_frame_bytes: config.max_frame_bytes,
            dialer,
            shared: shared.clone(),
            tx: tx.clone(),
            conn: 0,
            last_connect_error: None,
        };
        let storage = crate::storage_worker::spawn(db.clone(), tx.clone(), Msg::Storage);
        let expiry = crate::expiry::ExpiryPurger::start(db.clone());
        let task = rt.spawn(async move {
            let mut link = Link::none();
            let rt = driver.rt.clone();
            drive(&rt, &mut driver, &mut link, &rx, &changes, &storage).await;
        });
        Ok(Replicator {
            db,
            config: proto,
            shared,
            tx,
            db_listener,
            _task: task,
            _expiry: expiry,
        })
    }

    /// Starts replicating (from the saved checkpoints).
    pub fn start(&self) {
        self.begin(false);
    }

    /// Starts replicating from the beginning, ignoring saved checkpoints.
    pub fn start_with_reset(&self) {
        self.begin(true);
    }

    fn begin(&self, reset: bool) {
        if let Ok(mut s) = self.shared.status.lock()
            && s.activity == Activity::Stopped
        {
            s.activity = Activity::Connecting;
            s.error = None;
        }
        let _ = self.tx.try_send(Msg::Control(Control::Start { reset }));
    }

    /// Stops replicating and closes the connection.
    pub fn stop(&self) {
        let _ = self.tx.try_send(Msg::Control(Control::Stop));
    }

    /// The current status.
    pub fn status(&self) -> ReplicatorStatus {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Waits until the replicator is stopped (a one-shot replication finished, it gave
    /// up, or [`Replicator::stop`] was called) and returns the final status.
    pub async fn wait_until_stopped(&self) -> ReplicatorStatus {
        let (tx, rx) = async_channel::bounded(1);
        {
            let status = self.status();
            if status.activity == Activity::Stopped {
                return status;
            }
            if let Ok(mut w) = self.shared.stopped_waiters.lock() {
                w.push(tx);
            }
        }
        // The status may have changed between the check and the registration.
        if self.status().activity != Activity::Stopped {
            let _ = rx.recv().await;
        }
        self.status()
    }

    /// Calls `listener` on every status change.
    pub fn add_change_listener(
        &self,
        listener: impl Fn(&ReplicatorStatus) + Send + Sync + 'static,
    ) -> ListenerId {
        let id = self.next_id();
        if let Ok(mut l) = self.shared.status_listeners.lock() {
            l.push((id, Arc::new(listener)));
        }
        ListenerId(id)
    }

    /// Calls `listener` with documents as they are pushed or pulled (or fail to be).
    pub fn add_document_listener(
        &self,
        listener: impl Fn(&[DocumentEvent]) + Send + Sync + 'static,
    ) -> ListenerId {
        let id = self.next_id();
        if let Ok(mut l) = self.shared.document_listeners.lock() {
            l.push((id, Arc::new(listener)));
        }
        ListenerId(id)
    }

    /// Removes a status or document listener; returns whether it was registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        let mut removed = false;
        if let Ok(mut l) = self.shared.status_listeners.lock() {
            let before = l.len();
            l.retain(|(i, _)| *i != id.0);
            removed |= l.len() != before;
        }
        if let Ok(mut l) = self.shared.document_listeners.lock() {
            let before = l.len();
            l.retain(|(i, _)| *i != id.0);
            removed |= l.len() != before;
        }
        removed
    }

    /// What the replicator did since it was made, over all its connections: documents,
    /// frames and bytes each way, failures, conflicts resolved, connections made and
    /// failed attempts, and its storage operations' latency.
    pub fn stats(&self) -> SyncStats {
        self.shared.counters.snapshot()
    }

    /// Documents of `collection` not pushed yet (from the last saved checkpoint).
    pub fn pending_document_ids(
        &self,
        collection: &CollectionName,
    ) -> Result<BTreeSet<DocId>, StorageError> {
        self.db.pending_document_ids(&self.config, collection)
    }

    /// True when `id` is among [`Replicator::pending_document_ids`].
    pub fn is_document_pending(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<bool, StorageError> {
        self.db.is_document_pending(&self.config, collection, id)
    }

    fn next_id(&self) -> u64 {
        let mut n = self
            .shared
            .next_id
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    }
}

impl<R: Runtime> Drop for Replicator<R> {
    fn drop(&mut self) {
        self.db.remove_change_listener(self.db_listener);
        let _ = self.tx.try_send(Msg::Control(Control::Stop));
    }
}

/// The replicator's side of the drive loop: its task owns the state machine.
struct Driver<R: Runtime> {
    rt: R,
    machine: ActiveReplicator,
    /// The peer's name (its URL, for a WebSocket).
    name: String,
    /// The activity last logged.
    logged: Activity,
    max_frame_bytes: usize,
    dialer: Dialer,
    shared: Arc<Shared>,
    tx: Sender<Msg<Control>>,
    /// Number of the current connection attempt.
    conn: u64,
    last_connect_error: Option<ConnectError>,
    recorder: Option<Recorder>,
}

impl<R: Runtime> Side<R> for Driver<R> {
    type Machine = ActiveReplicator;
    type Control = Control;
    const ME: &'static str = "this replicator";
    const PEER: &'static str = "the listener";

    fn machine(&mut self) -> &mut ActiveReplicator {
        &mut self.machine
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    fn output(&mut self, output: Output) {
        match output {
            Output::Connect => {
                self.conn += 1;
                let (id, tx, dialer, name, rt) = (
                    self.conn,
                    self.tx.clone(),
                    self.dialer.clone(),
                    self.name.clone(),
                    self.rt.clone(),
                );
                self.rt.spawn_detached(async move {
                    let result = dialer.connect(&rt, &name).await;
                    let dialed = Control::Dialed(id, Box::new(result));
                    let _ = tx.send(Msg::Control(dialed)).await;
                });
            }
            Output::Event(event) => self.publish(event),
            _ => {}
        }
    }

    fn control(&mut self, msg: Control, link: &mut Link, now: Instant) {
        let input = match msg {
            Control::Start { reset } => {
                if let Some(r) = &mut self.recorder {
                    r.step(now, StepKind::Start { reset });
                }
                return match reset {
                    true => self.machine.start_with_reset(now),
                    false => self.machine.start(now),
                };
            }
            Control::Stop => {
                if let Some(r) = &mut self.recorder {
                    r.step(now, StepKind::Stop);
                }
                return self.machine.stop(now);
            }
            Control::Dialed(id, result) if id == self.conn => match *result {
                Ok(connection) => {
                    match connection {
                        Connection::WebSocket(ws) => link.connect(&self.rt, *ws, "the listener"),
                        Connection::Custom(t) => {
                            link.connect_custom(&self.rt, t, self.max_frame_bytes)
                        }
                    }
                    self.last_connect_error = None;
                    Input::Connected
                }
                Err(e) => {
                    let d = Disconnect {
                        message: e.to_string(),
                        retryable: e.is_retryable(),
                        retry_after: e.retry_after(),
                    };
                    self.last_connect_error = Some(e);
                    Input::Disconnected(d)
                }
            },
            Control::Dialed(..) => return, // a stale attempt
        };
        crate::drive::feed::<R, Self>(self, input, now);
    }

    fn keep_going(&mut self) -> bool {
        true
    }

    fn recorder(&mut self) -> Option<&mut Recorder> {
        self.recorder.as_mut()
    }
}

impl<R: Runtime> Driver<R> {
    /// Logs what changed in the status: connected, retrying and why, stopped. At info
    /// level: the application hears of all of it through its status listeners.
    fn log_status(&mut self, status: &ReplicatorStatus) {
        let before = std::mem::replace(&mut self.logged, status.activity);
        let peer = self.name.as_str();
        match status.activity {
            Activity::Busy | Activity::Idle if before == Activity::Connecting => {
                self.shared
                    .counters
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(peer, "connected");
            }
            Activity::Offline if before != Activity::Offline => {
                if let (Some(retry), Some(error)) = (&status.retry, &status.error) {
                    self.shared
                        .counters
                        .connections_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        peer,
                        attempt = retry.failed_attempts,
                        max_attempts = retry.max_attempts,
                        wait_ms = retry.wait.as_millis() as u64,
                        error = %error,
                        "connection failed; retrying"
                    );
                }
            }
            Activity::Stopped if before != Activity::Stopped => match &status.error {
                Some(error) => tracing::info!(peer, error = %error, "replication stopped"),
                None => tracing::info!(
                    peer,
                    completed = status.progress.completed,
                    total = status.progress.total,
                    "replication stopped"
                ),
            },
            _ => {}
        }
    }

    fn publish(&mut self, event: Event) {
        match event {
            Event::Status(s) => {
                let error = s.error.map(|e| match (&e, &self.last_connect_error) {
                    (ReplicationError::Transport { .. }, Some(c)) => {
                        ReplicatorError::Connect(c.clone())
                    }
                    (ReplicationError::GaveUp { last, .. }, Some(c))
                        if matches!(**last, ReplicationError::Transport { .. }) =>
                    {
                        ReplicatorError::Connect(c.clone())
                    }
                    _ => ReplicatorError::Replication(e),
                });
                let status = ReplicatorStatus {
                    activity: s.activity,
                    progress: s.progress,
                    error,
                    retry: s.retry,
                };
                self.log_status(&status);
                // Whoever sees the stop may exit right after: the recording is written
                // before the status says it.
                if status.activity == Activity::Stopped
                    && let Some(r) = &mut self.recorder
                {
                    r.sync();
                }
                if let Ok(mut current) = self.shared.status.lock() {
                    *current = status.clone();
                }
                let listeners: Vec<StatusListener> = self
                    .shared
                    .status_listeners
                    .lock()
                    .map(|l| l.iter().map(|(_, f)| f.clone()).collect())
                    .unwrap_or_default();
                for l in listeners {
                    l(&status);
                }
                if status.activity == Activity::Stopped {
                    let waiters = self
                        .shared
                        .stopped_waiters
                        .lock()
                        .map(|mut w| std::mem::take(&mut *w))
                        .unwrap_or_default();
                    for w in waiters {
                        let _ = w.try_send(());
                    }
                }
            }
            Event::Documents(docs) => {
                self.shared.counters.documents(&docs, true);
                // Info, not warn: the application hears of these through its listeners.
                for d in docs.iter().filter(|d| d.error.is_some()) {
                    tracing::info!(
                        peer = self.name,
                        collection = %d.collection,
                        doc = %d.doc_id,
                        rev = %d.rev,
                        direction = ?d.direction,
                        error = ?d.error,
                        "document not replicated"
                    );
                }
                let listeners: Vec<DocumentListener> = self
                    .shared
                    .document_listeners
                    .lock()
                    .map(|l| l.iter().map(|(_, f)| f.clone()).collect())
                    .unwrap_or_default();
                for l in listeners {
                    l(&docs);
                }
            }
            _ => {}
        }
    }
}
