//! The listener: the passive peer, a WebSocket server driving `peerlite_proto::PassivePeer`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_channel::{Receiver, Sender};
use futures_rustls::TlsAcceptor;
use peerlite_proto::record::{RecordedConfig, StepKind};
use peerlite_proto::{
    CloseCode, CollectionName, FrameLimits, Output, PassiveConfig, PassivePeer, Principal,
    Validator,
};
use peerlite_storage::Database;

use crate::Transport;
use crate::drive::{Link, Msg, Side, drive};
use crate::executor::{Runtime, until};
use crate::gate::Gate;
use crate::record::{RecordOptions, Recorder};
use crate::stats::{Counters, SyncStats};
use crate::transport::{AcceptOptions, accept};
use crate::{
    AuthFailureLimit, IdentityAttributes, IdentityError, ListenerAuthenticator, ListenerError,
    TlsIdentity,
};

/// Where a listener's TLS identity comes from (the seed's `tlsIdentityConfig`).
#[derive(Clone, Debug)]
pub enum ListenerTls {
    /// A self-signed identity stored in the database under `label`: reused when present
    /// and not expired, created otherwise.
    SelfSigned {
        /// The label it is stored under.
        label: String,
        /// Subject attributes for a new certificate.
        attributes: IdentityAttributes,
        /// Expiration of a new certificate (default: one year from now).
        expiration: Option<SystemTime>,
    },
    /// A given identity (imported PKCS#12, PEM files, or made by hand).
    Identity(TlsIdentity),
}

impl Default for ListenerTls {
    fn default() -> Self {
        ListenerTls::SelfSigned {
            label: "peerlite".into(),
            attributes: IdentityAttributes::common_name("peerlite"),
            expiration: None,
        }
    }
}

/// Settings of a [`Listener`] (Couchbase Lite's `URLEndpointListenerConfiguration`).
#[derive(Clone)]
pub struct ListenerConfig {
    /// Collections served (created if missing).
    pub collections: Vec<CollectionName>,
    /// The path clients connect to: `ws(s)://host:port/{database_name}` (default "db").
    pub database_name: String,
    /// TCP port; 0 picks a free one ([`Listener::port`] tells which).
    pub port: u16,
    /// Address to listen on (default `0.0.0.0`: every interface).
    pub network_interface: IpAddr,
    /// Serve plain WebSockets. Only for development: data and passwords travel in clear.
    pub disable_tls: bool,
    /// The TLS identity (default: a self-signed identity labelled "peerlite").
    pub tls: ListenerTls,
    /// Who may connect (default: anyone).
    pub authenticator: Option<ListenerAuthenticator>,
    /// Refuse pushes from everyone.
    pub read_only: bool,
    /// Accepts or rejects pushed revisions.
    pub validator: Option<Arc<dyn Validator>>,
    /// Connections allowed at once (default 256); more are closed at once.
    pub max_connections: usize,
    /// Time allowed for the TLS and WebSocket handshakes (default 10 s).
    pub handshake_timeout: Duration,
    /// Close connections quiet for this long (default 120 s).
    pub idle_timeout: Duration,
    /// Largest WebSocket message accepted (default 16 MiB).
    pub max_frame_bytes: usize,
    /// Failed authentications allowed per client address before it is refused for a
    /// while (default: 10 per minute, then 60 s of HTTP 429). `None` disables the limit.
    /// Applies only with an [`authenticator`](ListenerConfig::authenticator).
    pub auth_failure_limit: Option<AuthFailureLimit>,
    /// Record every input of each connection's state machine, for the sync doctor: one
    /// file per connection, `PATH.1`, `PATH.2`, … (default: no).
    pub record: Option<RecordOptions>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            collections: vec![CollectionName::default()],
            database_name: "db".into(),
            port: 0,
            network_interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            disable_tls: false,
            tls: ListenerTls::default(),
            authenticator: None,
            read_only: false,
            validator: None,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_frame_bytes: 16 << 20,
            auth_failure_limit: Some(AuthFailureLimit::default()),
            record: None,
        }
    }
}

impl fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("collections", &self.collections)
            .field("database_name", &self.database_name)
            .field("port", &self.port)
            .field("network_interface", &self.network_interface)
            .field("disable_tls", &self.disable_tls)
            .field("authenticator", &self.authenticator)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// Connection counts (Couchbase Lite's `ConnectionStatus`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// Open replication connections.
    pub connection_count: usize,
    /// Connections with replication work under way.
    pub active_connection_count: usize,
    /// Connections turned away since start: failed TLS or WebSocket handshakes (wrong
    /// credentials, wrong path, no subprotocol, timeouts) and connections over the limit.
    pub rejected_connection_count: u64,
}

/// One open sync connection, as [`ListenerMonitor::connections`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The replicator's address (`transport` for a custom transport).
    pub peer: String,
    /// The authenticated user (Basic) or certificate common name, if any.
    pub user: Option<String>,
    /// When its sync session began.
    pub since: SystemTime,
    /// Whether replication work is under way on it.
    pub active: bool,
    /// What it did so far: documents, frames and bytes each way, storage time.
    pub stats: SyncStats,
}

/// An open connection's entry in the listener's table.
struct OpenConnection {
    stop: Sender<Msg<Stop>>,
    peer: String,
    user: Option<String>,
    since: SystemTime,
    counters: Arc<Counters>,
    active: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    /// What closed connections did, and what the listener counts itself (connections
    /// turned away); an open connection counts in its own [`OpenConnection::counters`]
    /// until it closes.
    counters: Counters,
    connections: AtomicUsize,
    /// Connections over the limit being answered 503 (at most [`BUSY_ANSWERS`]).
    turning_away: AtomicUsize,
    active: AtomicUsize,
    next_conn: AtomicU64,
    /// The open connections.
    open: Mutex<BTreeMap<u64, OpenConnection>>,
}

impl Shared {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, OpenConnection>> {
        // The table holds plain values: a panic elsewhere cannot leave it inconsistent.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads a running listener's figures from anywhere (a monitoring task, an admin
/// endpoint) while the [`Listener`] itself stays with whoever stops it. Cheap to clone.
#[derive(Clone)]
pub struct ListenerMonitor {
    shared: Arc<Shared>,
}

impl fmt::Debug for ListenerMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerMonitor")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl ListenerMonitor {
    /// Connection counts.
    pub fn status(&self) -> ConnectionStatus {
        ConnectionStatus {
            connection_count: self.shared.connections.load(Ordering::Relaxed),
            active_connection_count: self.shared.active.load(Ordering::Relaxed),
            rejected_connection_count: self.shared.counters.snapshot().connections_failed,
        }
    }

    /// What the listener did since it started, all connections together (open and
    /// closed): documents, frames and bytes each way, failures, conflicts resolved,
    /// sessions, connections turned away, and its storage operations' latency.
    pub fn stats(&self) -> SyncStats {
        // Under the table's lock: a closing connection moves its figures into the
        // listener's while holding it, so nothing is counted twice or missed.
        let open = self.shared.open();
        let mut total = self.shared.counters.snapshot();
        for conn in open.values() {
            total += conn.counters.snapshot();
        }
        total
    }

    /// The open sync connections: who, since when, and what each did so far.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared
            .open()
            .values()
            .map(|c| ConnectionInfo {
                peer: c.peer.clone(),
                user: c.user.clone(),
                since: c.since,
                active: c.active.load(Ordering::Relaxed),
                stats: c.counters.snapshot(),
            })
            .collect()
    }
}

/// The passive peer: serves a [`Database`] to replicators.
///
/// ```no_run
/// use peerlite_smol::{Listener, ListenerAuthenticator, ListenerConfig, User};
/// # async fn run(db: peerlite_storage::Database) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = Listener::start(db, ListenerConfig {
///     port: 4984,
///     authenticator: Some(ListenerAuthenticator::Basic(vec![User::new("admin", "securepassword123")])),
///     ..ListenerConfig::default()
/// }).await?;
/// println!("listening on {:?}", listener.urls());
/// # listener.stop().await;
/// # Ok(()) }
/// ```
pub struct Listener<R: Runtime> {
    port: u16,
    urls: Vec<String>,
    identity: Option<TlsIdentity>,
    shared: Arc<Shared>,
    stop: Sender<()>,
    task: R::Task,
    /// Purges the database's documents as they expire, while the listener runs.
    _expiry: crate::expiry::ExpiryPurger,
}

impl<R: Runtime> fmt::Debug for Listener<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("urls", &self.urls)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Listener<R> {
    /// Binds the port and starts accepting connections.
    pub async fn start(db: Database, config: ListenerConfig) -> Result<Listener<R>, ListenerError> {
        let rt = R::default();
        if config.database_name.is_empty() || config.database_name.contains('/') {
            return Err(ListenerError::Config(format!(
                "database name {:?} must be non-empty and contain no '/'",
                config.database_name
            )));
        }
        if config.disable_tls
            && matches!(
                config.authenticator,
                Some(ListenerAuthenticator::ClientCertificate { .. })
            )
        {
            return Err(ListenerError::Config(
                "client-certificate authentication needs TLS".into(),
            ));
        }
        for c in &config.collections {
            db.create_collection(c)?;
        }
        let identity = if config.disable_tls {
            None
        } else {
            Some(resolve_identity(&db, &config.tls)?)
        };
        let client_roots = match &config.authenticator {
            Some(ListenerAuthenticator::ClientCertificate { roots }) => Some(roots.as_slice()),
            _ => None,
        };
        let acceptor = match &identity {
            Some(id) => Some(TlsAcceptor::from(Arc::new(crate::tls::server_config(
                id,
                client_roots,
            )?))),
            None => None,
        };
        let address = SocketAddr::new(config.network_interface, config.port);
        let tcp = rt
            .bind(address)
            .await
            .map_err(|source| ListenerError::Bind {
                address: address.to_string(),
                source,
            })?;
        let port = R::local_addr(&tcp)
            .map_err(|source| ListenerError::Bind {
                address: address.to_string(),
                source,
            })?
            .port();
        let scheme = if config.disable_tls { "ws" } else { "wss" };
        let urls = listen_urls(config.network_interface)
            .into_iter()
            .map(|ip| match ip {
                IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}/{}", config.database_name),
                IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}/{}", config.database_name),
            })
            .collect();
        let shared = Arc::new(Shared::default());
        let accept_options = Arc::new(AcceptOptions {
            tls: acceptor,
            gate: Gate::new(config.authenticator.as_ref(), config.auth_failure_limit),
            path: format!("/{}", config.database_name),
            max_frame_bytes: config.max_frame_bytes,
        });
        let passive = Settings::of(&config);
        let expiry = crate::expiry::ExpiryPurger::start(db.clone());
        let (stop, stopped) = async_channel::bounded(1);
        let serving = Serving {
            rt: rt.clone(),
            db,
            config,
            passive,
            options: accept_options,
            shared: shared.clone(),
        };
        let task = rt.spawn(serving.accept_loop(tcp, stopped));
        tracing::info!(port, urls = ?urls, tls = identity.is_some(), "listener started");
        Ok(Listener {
            port,
            urls,
            identity,
            shared,
            stop,
            task,
            _expiry: expiry,
        })
    }

    /// Serves one replicator over a transport the application supplies instead of TCP
    /// and WebSockets (see [`Transport`] for what it must guarantee), until the connection
    /// ends; the replicator is made with [`Replicator::over`](crate::Replicator::over).
    ///
    /// `config` gives the collections, read-only mode, validator, idle timeout and frame
    /// limit; its address, TLS and authentication settings do not apply (the transport
    /// is the application's), and the peer may use every collection served. Serve each
    /// connection the transport accepts with its own call, concurrently.
    ///
    /// `cargo run -p peerlite-tokio --example unix_socket` serves a Unix domain socket
    /// this way.
    pub async fn serve_transport(
        db: Database,
        config: &ListenerConfig,
        transport: Transport,
    ) -> Result<(), ListenerError> {
        for c in &config.collections {
            db.create_collection(c)?;
        }
        let rt = R::default();
        let mut link = Link::none();
        link.connect_custom(&rt, transport, config.max_frame_bytes);
        let principal = Principal::default();
        let shared = Arc::new(Shared::default());
        let session = Session::new("transport".into(), &principal);
        serve(
            &rt,
            link,
            principal,
            db,
            Settings::of(config),
            shared,
            session,
        )
        .await;
        Ok(())
    }

    /// The TCP port in use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URLs replicators can use to reach this listener.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The TLS identity in use (`None` with TLS disabled): give its certificate to
    /// clients for pinning.
    pub fn tls_identity(&self) -> Option<&TlsIdentity> {
        self.identity.as_ref()
    }

    /// Connection counts.
    pub fn status(&self) -> ConnectionStatus {
        self.monitor().status()
    }

    /// What the listener did since it started: see [`ListenerMonitor::stats`].
    pub fn stats(&self) -> SyncStats {
        self.monitor().stats()
    }

    /// A handle that reads this listener's status, figures and open connections from
    /// another task, for as long as the listener runs.
    pub fn monitor(&self) -> ListenerMonitor {
        ListenerMonitor {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting, closes every connection with a close frame, and waits for them.
    pub async fn stop(self) {
        tracing::info!(port = self.port, "listener stopping");
        let _ = self.stop.send(()).await;
        self.task.await;
    }
}

/// What each of a listener's connections is served with.
#[derive(Clone)]
struct Settings {
    passive: PassiveConfig,
    record: Option<RecordOptions>,
}

impl Settings {
    fn of(config: &ListenerConfig) -> Settings {
        Settings {
            passive: passive_config(config),
            record: config.record.clone(),
        }
    }
}

/// The passive peer's settings from a listener's.
fn passive_config(config: &ListenerConfig) -> PassiveConfig {
    PassiveConfig {
        collections: config.collections.clone(),
        read_only: config.read_only,
        validator: config.validator.clone(),
        idle_timeout: config.idle_timeout,
        frame_limits: FrameLimits {
            max_frame_bytes: config.max_frame_bytes,
            ..FrameLimits::DEFAULT
        },
        ..PassiveConfig::default()
    }
}

/// The addresses a listener on `interface` can be reached at.
fn listen_urls(interface: IpAddr) -> Vec<IpAddr> {
    if !interface.is_unspecified() {
        return vec![interface];
    }
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| {
            list.into_iter()
                .map(|i| i.ip())
                .filter(|ip| match ip {
                    IpAddr::V4(_) => interface.is_ipv4(),
                    // Link-local IPv6 addresses are unusable without a scope: skip them.
                    IpAddr::V6(v6) => interface.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
                })
                .collect()
        })
        .unwrap_or_default();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips.sort();
    ips.dedup();
    ips
}

fn resolve_identity(db: &Database, tls: &ListenerTls) -> Result<TlsIdentity, ListenerError> {
    match tls {
        ListenerTls::Identity(id) => Ok(id.clone()),
        ListenerTls::SelfSigned {
            label,
            attributes,
            expiration,
        } => {
            let now = SystemTime::now();
            if let Some(existing) = TlsIdentity::load(db, label)? {
                return match existing.expiration() {
                    Some(expired) if expired <= now => Err(IdentityError::Expired {
                        label: label.clone(),
                        expired,
                    }
                    .into()),
                    _ => Ok(existing),
                };
            }
            let expiration = expiration.unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.push(attributes.common_name.clone());
            names.dedup();
            let id = TlsIdentity::self_signed(attributes, expiration, now, &names)?;
            id.save(db, label)?;
            Ok(id)
        }
    }
}

/// What a listener's accept loop serves connections with.
struct Serving<R: Runtime> {
    rt: R,
    db: Database,
    config: ListenerConfig,
    passive: Settings,
    options: Arc<AcceptOptions>,
    shared: Arc<Shared>,
}

impl<R: Runtime> Serving<R> {
    /// Accepts connections on `tcp` until `stopped`, then closes them and waits for them.
    async fn accept_loop(self, tcp: R::TcpListener, stopped: Receiver<()>) {
        let Serving {
            rt,
            db,
            config,
            passive,
            options,
            shared,
        } = self;
        let mut tasks = Vec::new();
        loop {
            let next = futures_lite::future::or(async { Some(R::accept(&tcp).await) }, async {
                let _ = stopped.recv().await;
                None
            })
            .await;
            let Some(accepted) = next else { break };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            tasks.retain(|t: &R::Task| !R::is_finished(t));
            if shared.connections.load(Ordering::Relaxed) >= config.max_connections {
                shared
                    .counters
                    .connections_failed
                    .fetch_add(1, Ordering::Relaxed);
                // Say so (HTTP 503 with Retry-After, after the TLS handshake a client needs to
                // read it) to a few at a time; past that, a flood is just dropped.
                tracing::warn!(
                    peer = %peer,
                    limit = config.max_connections,
                    "connection refused: the listener is at its connection limit"
                );
                if shared.turning_away.load(Ordering::Relaxed) >= BUSY_ANSWERS {
                    drop(stream);
                    continue;
                }
                shared.turning_away.fetch_add(1, Ordering::Relaxed);
                let (options, shared) = (options.clone(), shared.clone());
                // Short, so idle connections cannot hold these slots for long.
                let timeout = config.handshake_timeout.min(Duration::from_secs(2));
                let limit = config.max_connections;
                let task_rt = rt.clone();
                tasks.push(rt.spawn(async move {
                    let busy = crate::transport::turn_away(stream, &options, limit);
                    until(&task_rt, Instant::now() + timeout, busy).await;
                    shared.turning_away.fetch_sub(1, Ordering::Relaxed);
                }));
                continue;
            }
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let (db, options, shared, passive) =
                (db.clone(), options.clone(), shared.clone(), passive.clone());
            let timeout = config.handshake_timeout;
            let task_rt = rt.clone();
            tasks.push(rt.spawn(async move {
                let handshake = accept::<R>(stream, peer, &options);
                match until(&task_rt, Instant::now() + timeout, handshake).await {
                    Some(Ok((ws, principal))) => {
                        let mut link = Link::none();
                        link.connect(&task_rt, ws, "the replicator");
                        let session = Session::new(peer.to_string(), &principal);
                        serve(
                            &task_rt,
                            link,
                            principal,
                            db,
                            passive,
                            shared.clone(),
                            session,
                        )
                        .await
                    }
                    Some(Err(e)) => {
                        // An authentication failure was logged with its reason already.
                        tracing::info!(peer = %peer, error = %e, "connection refused");
                        shared
                            .counters
                            .connections_failed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        tracing::info!(
                            peer = %peer,
                            timeout_ms = timeout.as_millis() as u64,
                            "connection refused: the handshake did not finish in time"
                        );
                        shared
                            .counters
                            .connections_failed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                shared.connections.fetch_sub(1, Ordering::Relaxed);
            }));
        }
        // Close every open connection, then wait for them.
        let open: Vec<Sender<Msg<Stop>>> = shared.open().values().map(|c| c.stop.clone()).collect();
        for conn in open {
            let _ = conn.send(Msg::Control(Stop)).await;
        }
        for t in tasks {
            t.await;
        }
    }
}

/// A connection's own message: the listener is stopping.
struct Stop;

/// Connections over the limit answered "busy" at once; more are dropped unanswered.
const BUSY_ANSWERS: usize = 16;

/// One connection's side of the drive loop.
struct Connection<'a> {
    peer: PassivePeer,
    shared: &'a Shared,
    /// This connection's own figures (the listener's once it closes).
    counters: Arc<Counters>,
    /// Whether it counts among the listener's active connections.
    busy: bool,
    /// `busy`, for [`ListenerMonitor::connections`].
    active: Arc<AtomicBool>,
    /// Where its machine's inputs are recorded, if they are.
    recorder: Option<Recorder>,
    session: Session,
}

/// What a sync session's log says of it.
struct Session {
    peer: String,
    user: Option<String>,
    began: Instant,
    /// Documents the replicator pushed here, and pulled from here.
    pushed: u64,
    pulled: u64,
    /// Documents refused or failed, either way.
    failed: u64,
    /// Why it ended, once it did.
    ended: Option<String>,
}

impl Session {
    fn new(peer: String, principal: &Principal) -> Session {
        let user = principal.name.clone();
        tracing::info!(peer, user, "sync session began");
        Session {
            peer,
            user,
            began: Instant::now(),
            pushed: 0,
            pulled: 0,
            failed: 0,
            ended: None,
        }
    }

    fn event(&mut self, event: &peerlite_proto::Event) {
        match event {
            peerlite_proto::Event::Documents(docs) => {
                for d in docs {
                    if let Some(error) = &d.error {
                        self.failed += 1;
                        tracing::info!(
                            peer = self.peer,
                            user = self.user,
                            collection = %d.collection,
                            doc = %d.doc_id,
                            rev = %d.rev,
                            error = %error,
                            "document not replicated"
                        );
                    } else if d.direction == peerlite_proto::Direction::Push {
                        self.pushed += 1;
                    } else {
                        self.pulled += 1;
                    }
                }
            }
            peerlite_proto::Event::Closed(reason) => {
                self.ended = Some(format!("{:?}: {}", reason.code, reason.message))
            }
            _ => {}
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        tracing::info!(
            peer = self.peer,
            user = self.user,
            pushed = self.pushed,
            pulled = self.pulled,
            failed = self.failed,
            elapsed_ms = self.began.elapsed().as_millis() as u64,
            reason = self.ended.as_deref(),
            "sync session ended"
        );
    }
}

impl<R: Runtime> Side<R> for Connection<'_> {
    type Machine = PassivePeer;
    type Control = Stop;
    const ME: &'static str = "this listener";
    const PEER: &'static str = "the replicator";

    fn machine(&mut self) -> &mut PassivePeer {
        &mut self.peer
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn output(&mut self, output: Output) {
        if let Output::Event(event) = output {
            if let peerlite_proto::Event::Documents(docs) = &event {
                // The replicator's push is what this side receives.
                self.counters.documents(docs, false);
            }
            self.session.event(&event);
        }
    }

    fn control(&mut self, _: Stop, _: &mut Link, now: Instant) {
        const STOPPING: &str = "the listener is stopping";
        if let Some(r) = &mut self.recorder {
            r.step(
                now,
                StepKind::Close {
                    code: CloseCode::GoingAway,
                    message: STOPPING.into(),
                },
            );
        }
        self.peer.close(CloseCode::GoingAway, STOPPING);
    }

    fn recorder(&mut self) -> Option<&mut Recorder> {
        self.recorder.as_mut()
    }

    fn keep_going(&mut self) -> bool {
        let busy = self.peer.is_busy();
        if busy != self.busy {
            self.busy = busy;
            self.active.store(busy, Ordering::Relaxed);
            if busy {
                self.shared.active.fetch_add(1, Ordering::Relaxed);
            } else {
                self.shared.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        !self.peer.is_closed()
    }
}

/// Drives one connection's passive peer until it closes.
async fn serve<R: Runtime>(
    rt: &R,
    mut link: Link,
    principal: Principal,
    db: Database,
    settings: Settings,
    shared: Arc<Shared>,
    session: Session,
) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let recorder = settings.record.as_ref().and_then(|r| {
        let path = r.connection_file(id + 1);
        let config = RecordedConfig::Passive {
            config: settings.passive.clone(),
            principal: principal.clone(),
        };
        Recorder::create(&path, r, config)
            .inspect_err(|e| {
                tracing::warn!(path = %path.display(), error = %e, "this connection is not recorded: the file cannot be created");
            })
            .ok()
    });
    let (tx, rx) = async_channel::unbounded();
    let counters = Arc::new(Counters::default());
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let active = Arc::new(AtomicBool::new(false));
    shared.open().insert(
        id,
        OpenConnection {
            stop: tx.clone(),
            peer: session.peer.clone(),
            user: session.user.clone(),
            since: SystemTime::now(),
            counters: counters.clone(),
            active: active.clone(),
        },
    );
    let (token, changes) = crate::change_feed::watch(&db);
    let storage = crate::storage_worker::spawn(db.clone(), tx, Msg::Storage);
    // A recorded machine is built at the recording's start, as a replay builds it.
    let created = recorder.as_ref().map_or_else(Instant::now, Recorder::start);
    let mut conn = Connection {
        peer: PassivePeer::new(settings.passive, principal, created),
        shared: &shared,
        counters,
        busy: false,
        active,
        session,
        recorder,
    };
    drive(rt, &mut conn, &mut link, &rx, &changes, &storage).await;
    if conn.busy {
        shared.active.fetch_sub(1, Ordering::Relaxed);
    }
    db.remove_change_listener(token);
    // Its figures become the listener's under the table's lock (see `stats`).
    let mut open = shared.open();
    open.remove(&id);
    shared.counters.absorb(&conn.counters.snapshot());
}
