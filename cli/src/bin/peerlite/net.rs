//! `peerlite serve` and `peerlite sync`.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use peerlite_cli::admin::{AdminError, AdminOptions, AdminServer, Served};
use peerlite_proto::{Activity, CollectionConfig, Direction, DocId, DocumentEvent, ReplicatorType};
use peerlite_smol::{
    AuthFailureLimit, Credentials, Gate, ListenerAuthenticator, ListenerConfig, ListenerTls,
    RecordOptions, Replicator, ReplicatorConfiguration, ReplicatorStatus, ServerTrust, TlsIdentity,
    User,
};
use peerlite_tokio::Listener;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Arguments of `peerlite serve`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Database directory (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// The largest blob accepted from a peer, in bytes; a document with a larger one is
    /// refused before any byte of it travels (default 4 GiB).
    #[arg(long, default_value_t = peerlite_storage::DEFAULT_MAX_BLOB_BYTES)]
    max_blob_bytes: u64,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 4984)]
    port: u16,
    /// Collections to serve (scope.name); repeat for several. Default: _default._default.
    #[arg(long = "collection")]
    collections: Vec<String>,
    /// A user allowed to connect, as NAME:PASSWORD, or NAME with the password in the
    /// PEERLITE_PASSWORD environment variable; repeat for several.
    #[arg(long = "user")]
    users: Vec<String>,
    /// Users allowed to connect, one NAME:PASSWORD per line (# starts a comment): keeps
    /// passwords out of the process list.
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
    /// Accept anyone, without credentials: whoever reaches the port may read and change
    /// the database. Without it, serve requires --user, --users-file or --client-ca.
    #[arg(long, conflicts_with_all = ["users", "users_file", "client_ca"])]
    no_auth: bool,
    /// Refuse pushes: clients may only pull.
    #[arg(long)]
    read_only: bool,
    /// Failed logins allowed per client address per minute before it is refused (HTTP
    /// 429) for a minute; 0 turns the limit off.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_auth_failures: u32,
    /// Serve plain WebSockets (development only: data and passwords travel in clear).
    #[arg(long, conflicts_with_all = ["tls_self_signed", "tls_cert", "tls_p12"])]
    no_tls: bool,
    /// Use the self-signed identity stored under LABEL, creating it if absent.
    #[arg(long, value_name = "LABEL", conflicts_with_all = ["tls_cert", "tls_p12"])]
    tls_self_signed: Option<String>,
    /// PEM certificate chain (with --tls-key).
    #[arg(
        long,
        value_name = "CERT.pem",
        requires = "tls_key",
        conflicts_with = "tls_p12"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key (with --tls-cert).
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PKCS#12 archive with the certificate and key.
    #[arg(long, value_name = "FILE", requires = "tls_p12_password")]
    tls_p12: Option<PathBuf>,
    /// Password of the PKCS#12 archive.
    #[arg(long, value_name = "PASS", requires = "tls_p12")]
    tls_p12_password: Option<String>,
    /// Require client certificates issued by the CA(s) in this PEM file.
    #[arg(long, value_name = "CA.pem", conflicts_with_all = ["users", "users_file", "no_tls"])]
    client_ca: Option<PathBuf>,
    /// Also serve the admin interface on this TCP address (plain HTTP, e.g.
    /// 127.0.0.1:4985), to the --admin-user only. The Unix socket DB/admin.sock is
    /// always served, to the database's owner.
    #[arg(long, value_name = "ADDR:PORT", requires = "admin_user")]
    admin_address: Option<std::net::SocketAddr>,
    /// The admin interface's user on --admin-address, as NAME:PASSWORD, or NAME with the
    /// password in the PEERLITE_ADMIN_PASSWORD environment variable.
    #[arg(long, value_name = "NAME", requires = "admin_address")]
    admin_user: Option<String>,
    /// Record each connection's sync session for the sync doctor, to FILE.1, FILE.2, …
    /// (mode 0600, at most 256 MiB each, the last 20 connections; no credentials, but
    /// document bodies).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Replace document bodies and blob bytes in the recordings by placeholders of the
    /// same length and shape (keys and blob references stay): for recordings to share.
    #[arg(long, requires = "record")]
    record_redact: bool,
}

/// Arguments of `peerlite sync`.
#[derive(Args)]
pub(crate) struct SyncArgs {
    /// The listener, e.g. wss://192.168.1.100:4984/db.
    url: String,
    /// Database directory (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// The largest blob accepted from the peer, in bytes; a document with a larger one is
    /// refused before any byte of it travels (default 4 GiB).
    #[arg(long, default_value_t = peerlite_storage::DEFAULT_MAX_BLOB_BYTES)]
    max_blob_bytes: u64,
    /// Only push.
    #[arg(long, conflicts_with = "pull")]
    push: bool,
    /// Only pull.
    #[arg(long)]
    pull: bool,
    /// Keep running and replicate changes as they happen (until Ctrl-C).
    #[arg(long)]
    continuous: bool,
    /// Collections to replicate (scope.name); repeat for several. Default: _default._default.
    #[arg(long = "collection")]
    collections: Vec<String>,
    /// Credentials, as NAME:PASSWORD, or NAME with the password from --password-file or
    /// the PEERLITE_PASSWORD environment variable (out of the process list).
    #[arg(long)]
    user: Option<String>,
    /// A file whose first line is the password of --user NAME.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// Trust only this certificate (PEM or DER file).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["accept_self_signed", "ca_cert"])]
    pinned_cert: Option<PathBuf>,
    /// Accept any self-signed certificate (and no CA-issued one).
    #[arg(long, conflicts_with = "ca_cert")]
    accept_self_signed: bool,
    /// Trust certificates issued by the CA(s) in this PEM file; the listener's
    /// certificate must also name the host of the URL.
    #[arg(long, value_name = "CA.pem")]
    ca_cert: Option<PathBuf>,
    /// Client certificate chain in PEM (with --client-key).
    #[arg(long, value_name = "CERT.pem", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Client private key in PEM (with --client-cert).
    #[arg(long, value_name = "KEY.pem", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Only replicate these documents; repeat for several.
    #[arg(long = "doc-id")]
    doc_ids: Vec<String>,
    /// Record the sync session for the sync doctor, to FILE (mode 0600, at most 256 MiB;
    /// no credentials, but document bodies).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Replace document bodies and blob bytes in the recording by placeholders of the
    /// same length and shape (keys and blob references stay): for a recording to share.
    #[arg(long, requires = "record")]
    record_redact: bool,
    /// Ping a quiet connection after this many seconds; a listener silent as long again
    /// after a ping is taken for dead, and the replicator reconnects.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = positive_seconds)]
    heartbeat: f64,
}

/// What `--record FILE [--record-redact]` asks for.
fn record_options(path: Option<&PathBuf>, redact: bool) -> Option<RecordOptions> {
    path.map(|p| {
        let mut options = RecordOptions::new(p);
        options.redact = redact;
        options
    })
}

/// A number of seconds above 0, for clap.
pub(crate) fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() && n <= 86_400.0 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// The environment variable a password may come from instead of the command line.
const PASSWORD_VAR: &str = "PEERLITE_PASSWORD";

/// The environment variable the admin user's password may come from.
const ADMIN_PASSWORD_VAR: &str = "PEERLITE_ADMIN_PASSWORD";

/// A user name and password from `NAME:PASSWORD`, or from `NAME` and a password file or
/// [`PASSWORD_VAR`]. Empty names and passwords are refused.
fn credentials(spec: &str, password_file: Option<&Path>) -> Result<(String, String), String> {
    credentials_from(spec, password_file, PASSWORD_VAR)
}

/// [`credentials`], with the password in `var` when not given otherwise.
fn credentials_from(
    spec: &str,
    password_file: Option<&Path>,
    var: &str,
) -> Result<(String, String), String> {
    let (name, password) = match spec.split_once(':') {
        Some((name, password)) => (name, password.to_owned()),
        None => {
            let password = match password_file {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                None => std::env::var(var).map_err(|_| {
                    format!(
                        "no password for user {spec:?}: write NAME:PASSWORD, or set {var}, or give --password-file (sync)"
                    )
                })?,
            };
            (spec, password)
        }
    };
    if name.is_empty() {
        return Err(format!("invalid user {spec:?}: write NAME:PASSWORD"));
    }
    if password.is_empty() {
        return Err(format!("user {name:?} has an empty password"));
    }
    Ok((name.to_owned(), password))
}

/// The users of a `--users-file`: one `NAME:PASSWORD` per line, `#` comments.
fn users_file(path: &Path) -> Result<Vec<User>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.contains(':') {
            return Err(format!(
                "{} line {}: write NAME:PASSWORD",
                path.display(),
                n + 1
            ));
        }
        let (name, password) = credentials(line, None)
            .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        users.push(User::new(name, &password));
    }
    if users.is_empty() {
        return Err(format!("{} holds no user", path.display()));
    }
    Ok(users)
}

fn collections(names: &[String]) -> Result<Vec<peerlite_proto::CollectionName>, String> {
    if names.is_empty() {
        return Ok(vec![Default::default()]);
    }
    names.iter().map(|n| crate::parse_collection(n)).collect()
}

/// Handles SIGINT and SIGTERM from now on: the returned channel receives one message
/// per signal. Installed before anything is printed, so a signal sent as soon as the
/// process says it is ready stops it cleanly instead of killing it.
fn signals() -> Result<async_channel::Receiver<()>, String> {
    let (tx, rx) = async_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .map_err(|e| format!("cannot handle signals: {e}"))?;
    Ok(rx)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pem: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if !pem.is_empty() {
        return Ok(pem);
    }
    // Not PEM: a single DER certificate.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    Err(format!("no certificate in {}", path.display()))
}

pub(crate) fn serve(args: ServeArgs) -> Result<(), String> {
    let tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        ListenerTls::Identity(TlsIdentity::from_pem_files(cert, key).map_err(|e| e.to_string())?)
    } else if let (Some(p12), Some(password)) = (&args.tls_p12, &args.tls_p12_password) {
        let der = std::fs::read(p12).map_err(|e| format!("cannot read {}: {e}", p12.display()))?;
        ListenerTls::Identity(TlsIdentity::from_pkcs12(&der, password).map_err(|e| e.to_string())?)
    } else {
        let label = args
            .tls_self_signed
            .clone()
            .unwrap_or_else(|| "peerlite".into());
        ListenerTls::SelfSigned {
            label,
            attributes: peerlite_smol::IdentityAttributes::common_name("peerlite"),
            expiration: None,
        }
    };
    let authenticator = match &args.client_ca {
        Some(ca) => Some(ListenerAuthenticator::ClientCertificate {
            roots: read_certs(ca)?,
        }),
        None if args.no_auth => {
            eprintln!(
                "warning: --no-auth: anyone who can reach {}:{} may read and change this database",
                args.host, args.port
            );
            None
        }
        None => {
            let mut users = args
                .users
                .iter()
                .map(|u| credentials(u, None).map(|(name, pass)| User::new(name, &pass)))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(file) = &args.users_file {
                users.extend(users_file(file)?);
            }
            if users.is_empty() {
                return Err("serve needs a way to authenticate clients: --user NAME:PASSWORD, --users-file FILE or --client-ca CA.pem (or --no-auth to accept anyone)".into());
            }
            Some(ListenerAuthenticator::Basic(users))
        }
    };
    let config = ListenerConfig {
        collections: collections(&args.collections)?,
        port: args.port,
        network_interface: args.host,
        disable_tls: args.no_tls,
        tls,
        authenticator,
        read_only: args.read_only,
        auth_failure_limit: (args.max_auth_failures > 0).then(|| AuthFailureLimit {
            max_failures: args.max_auth_failures,
            ..AuthFailureLimit::default()
        }),
        record: record_options(args.record.as_ref(), args.record_redact),
        ..ListenerConfig::default()
    };
    // The admin address: authenticated always, checked before anything is opened.
    let admin_tcp = match (&args.admin_address, &args.admin_user) {
        (Some(address), Some(user)) => {
            let (name, pass) = credentials_from(user, None, ADMIN_PASSWORD_VAR)?;
            if !address.ip().is_loopback() {
                eprintln!(
                    "warning: the admin interface on {address} is plain HTTP: its password and data cross the network in clear"
                );
            }
            let limit = (args.max_auth_failures > 0).then(|| AuthFailureLimit {
                max_failures: args.max_auth_failures,
                ..AuthFailureLimit::default()
            });
            Some((*address, Gate::basic(vec![User::new(name, &pass)], limit)))
        }
        _ => None,
    };
    let stop = signals()?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    rt.block_on(async {
        // Opened once every option is known good, so a bad one creates no database.
        let db = crate::open_db_with(&args.db, args.max_blob_bytes)?;
        let listener = Listener::start(db.clone(), config)
            .await
            .map_err(|e| e.to_string())?;
        let served = Served {
            monitor: listener.monitor(),
            urls: listener.urls().to_vec(),
            certificate_sha256: listener.tls_identity().map(|id| id.sha256_fingerprint()),
        };
        let options = AdminOptions {
            tcp: admin_tcp,
            ..AdminOptions::default()
        };
        let admin = match AdminServer::start(db, &args.db, Some(served), options).await {
            Ok(admin) => Some(admin),
            Err(e @ AdminError::PathTooLong(_)) => {
                eprintln!("warning: no admin interface: {e}");
                None
            }
            Err(e) => {
                listener.stop().await;
                return Err(e.to_string());
            }
        };
        let mut out = std::io::stdout().lock();
        for url in listener.urls() {
            let _ = writeln!(out, "listening on {url}");
        }
        if let Some(id) = listener.tls_identity() {
            let _ = writeln!(out, "certificate sha256 {}", id.sha256_fingerprint());
        }
        if let Some(admin) = &admin {
            if let Some(socket) = admin.socket_path() {
                let _ = writeln!(out, "admin socket {}", socket.display());
            }
            if let Some(address) = admin.tcp_address() {
                let _ = writeln!(out, "admin on http://{address}");
            }
        }
        let _ = out.flush();
        drop(out);
        let _ = stop.recv().await;
        if let Some(admin) = admin {
            admin.stop().await;
        }
        listener.stop().await;
        Ok(())
    })
}

pub(crate) fn sync(args: SyncArgs) -> Result<(), String> {
    let mut config = ReplicatorConfiguration::new(args.url.clone());
    config.replicator_type = match (args.push, args.pull) {
        (true, _) => ReplicatorType::Push,
        (_, true) => ReplicatorType::Pull,
        _ => ReplicatorType::PushAndPull,
    };
    config.continuous = args.continuous;
    let doc_ids = args
        .doc_ids
        .iter()
        .map(|d| DocId::new(d.as_str()).map_err(|e| format!("invalid --doc-id {d:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    config.collections = collections(&args.collections)?
        .into_iter()
        .map(|c| CollectionConfig {
            doc_ids: (!doc_ids.is_empty()).then(|| doc_ids.clone()),
            ..CollectionConfig::new(c)
        })
        .collect();
    if let Some(user) = &args.user {
        let (name, pass) = credentials(user, args.password_file.as_deref())?;
        config.credentials = Some(Credentials::new(name, pass));
    }
    config.server_trust = match (&args.pinned_cert, &args.ca_cert, args.accept_self_signed) {
        (Some(file), _, _) => {
            let cert = read_certs(file)?
                .into_iter()
                .next()
                .ok_or("no certificate in the pinned file")?;
            ServerTrust::Pinned(cert)
        }
        (None, Some(file), _) => ServerTrust::TrustedRoots(read_certs(file)?),
        (None, None, true) => ServerTrust::SelfSignedOnly,
        (None, None, false) => ServerTrust::default(),
    };
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        config.client_identity =
            Some(TlsIdentity::from_pem_files(cert, key).map_err(|e| e.to_string())?);
    }
    if !args.continuous {
        config.max_attempts = 3;
    }
    config.record = record_options(args.record.as_ref(), args.record_redact);
    config.heartbeat = std::time::Duration::from_secs_f64(args.heartbeat);
    let db = crate::open_db_with(&args.db, args.max_blob_bytes)?;
    let replicator = Replicator::new(db, config).map_err(|e| e.to_string())?;
    let report = Arc::new(Report::new(
        args.continuous && !std::io::stdout().is_terminal(),
    ));
    let r = report.clone();
    replicator.add_document_listener(move |docs| r.documents(docs));
    let r = report.clone();
    replicator.add_change_listener(move |s| r.status(s));
    // A continuous sync stops cleanly on Ctrl-C; a one-shot one is simply interrupted.
    let stop = match args.continuous {
        true => Some(signals()?),
        false => None,
    };
    replicator.start();
    let status = smol::block_on(async {
        if let Some(stop) = stop {
            // Until Ctrl-C, or until the replicator stops by itself (a fatal error).
            let interrupted = smol::future::or(async { stop.recv().await.is_ok() }, async {
                replicator.wait_until_stopped().await;
                false
            })
            .await;
            if interrupted {
                replicator.stop();
                let mut status = replicator.wait_until_stopped().await;
                status.error = None;
                return status;
            }
        }
        replicator.wait_until_stopped().await
    });
    report.finish();
    match status.error {
        // The summary goes to standard output only when the sync succeeded; after a
        // failure, what did replicate is said on standard error with the error.
        None => {
            println!("{}", report.counts.summary());
            Ok(())
        }
        Some(e) if report.counts.any() => Err(format!(
            "{e}\n(before it failed: {})",
            report.counts.summary()
        )),
        Some(e) => Err(e.to_string()),
    }
}

/// What `peerlite sync` tells its user while it runs: a progress bar on a terminal,
/// a line per retry and per document that did not replicate on standard error, and
/// in continuous mode without a terminal, a line per change of activity and per batch
/// of documents on standard output.
struct Report {
    counts: Counts,
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    last: Mutex<(Option<Activity>, Option<peerlite_proto::Retry>)>,
}

impl Report {
    fn new(lines: bool) -> Report {
        Report {
            counts: Counts::default(),
            bar: progress_bar(),
            lines,
            last: Mutex::new((None, None)),
        }
    }

    /// Prints a line on standard error, above the progress bar if there is one.
    fn warn(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn status(&self, s: &ReplicatorStatus) {
        if let Some(bar) = &self.bar {
            // No bar until there is something to count: an idle sync shows no "0/1".
            if s.progress.total > 0 {
                bar.set_length(s.progress.total);
                bar.set_position(s.progress.completed);
            }
            bar.set_message(activity_name(s.activity));
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (activity, retry) = &mut *last;
        if let (Some(r), None) = (s.retry, *retry) {
            let error = s
                .error
                .as_ref()
                .map_or_else(|| "the connection failed".into(), |e| e.to_string());
            let attempt = match r.max_attempts {
                0 => format!("attempt {}", r.failed_attempts),
                max => format!("attempt {} of {max}", r.failed_attempts),
            };
            self.warn(&format!(
                "{attempt} failed: {error}; retrying in {}",
                human_duration(r.wait)
            ));
        }
        *retry = s.retry;
        if self.lines && *activity != Some(s.activity) {
            println!("{}", activity_name(s.activity));
        }
        *activity = Some(s.activity);
    }

    fn documents(&self, docs: &[DocumentEvent]) {
        let (mut pushed, mut pulled) = (0, 0);
        for d in docs {
            match (&d.error, d.direction) {
                (Some(e), dir) => {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    let verb = match dir {
                        Direction::Push => "not pushed",
                        Direction::Pull => "not pulled",
                    };
                    self.warn(&format!("{verb}: {} ({}): {e}", d.doc_id, d.collection));
                }
                (None, _) if d.already_had => {
                    self.counts.already.fetch_add(1, Ordering::Relaxed);
                }
                (None, Direction::Push) => pushed += 1,
                (None, Direction::Pull) => pulled += 1,
            }
            if d.conflict_resolved {
                self.counts.resolved.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counts.pushed.fetch_add(pushed, Ordering::Relaxed);
        self.counts.pulled.fetch_add(pulled, Ordering::Relaxed);
        if self.lines && pushed + pulled > 0 {
            println!("pushed {pushed}, pulled {pulled}");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn activity_name(a: Activity) -> &'static str {
    match a {
        Activity::Stopped => "stopped",
        Activity::Offline => "offline",
        Activity::Connecting => "connecting",
        Activity::Idle => "idle",
        Activity::Busy => "busy",
    }
}

/// `1.5 s`, `300 ms`, `2 min 30 s`.
fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 if ms.is_multiple_of(1_000) => format!("{} s", ms / 1_000),
        1_000..60_000 => format!("{:.1} s", d.as_secs_f64()),
        _ if d.as_secs().is_multiple_of(60) => format!("{} min", d.as_secs() / 60),
        _ => format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60),
    }
}

#[derive(Default)]
struct Counts {
    pushed: AtomicU64,
    pulled: AtomicU64,
    resolved: AtomicU64,
    already: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn any(&self) -> bool {
        [&self.pushed, &self.pulled, &self.already, &self.failed]
            .iter()
            .any(|c| c.load(Ordering::Relaxed) > 0)
    }

    /// `pushed N, pulled M, conflicts resolved K`, then what the peer already had and
    /// what did not replicate, when there is any.
    fn summary(&self) -> String {
        let mut s = format!(
            "pushed {}, pulled {}, conflicts resolved {}",
            self.pushed.load(Ordering::Relaxed),
            self.pulled.load(Ordering::Relaxed),
            self.resolved.load(Ordering::Relaxed)
        );
        let already = self.already.load(Ordering::Relaxed);
        if already > 0 {
            s.push_str(&format!(", {already} already on the other side"));
        }
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            s.push_str(&format!(", {failed} not replicated (see above)"));
        }
        s
    }
}

/// A progress bar on standard error, when it is a terminal.
pub(crate) fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg:10} [{bar:40}] {human_pos}/{human_len} documents",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}
