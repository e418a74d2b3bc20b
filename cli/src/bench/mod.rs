//! `peerlite bench`: sync speed as a measured property.
//!
//! [`run`] measures one run: a listener in a child process (fjall on disk, TLS and
//! Basic auth on) and a replicator in this process, over loopback, with the database's
//! default durability ([`Durability::Sync`]: every commit is fdatasync'ed before it
//! returns, and pushed revisions are acknowledged only after that). It measures, on the
//! same sample documents:
//!
//! - the rate at which the store saves the documents in batches of 1,000 (the ceiling
//!   sync can approach);
//! - one-shot push of N documents into an empty listener, and pull of N into an empty
//!   replicator database;
//! - a sync with nothing to do, and resyncs after 1% of the documents changed (the median
//!   of [`BenchOptions::incr_rounds`] of them, each after a different 1% changed);
//! - live latency: continuous push-and-pull while one peer saves single documents at a
//!   steady rate, from the save call until the other peer has stored it;
//! - peak RSS and CPU time of each process.
//!
//! Every step checks its result (counts and a digest of both databases), so a fast but
//! wrong sync fails the bench rather than reporting a figure.
//!
//! ```no_run
//! use peerlite_cli::bench::{self, BenchOptions};
//!
//! // A program whose `bench-peer` command calls `bench::serve_peer` on stdin/stdout.
//! let options = BenchOptions::new("/usr/local/bin/peerlite", ["bench-peer"]);
//! let report = bench::run(&BenchOptions { docs: 10_000, ..options }, 1)?;
//! println!("{}", report.to_json());
//! # Ok::<(), peerlite_cli::bench::BenchError>(())
//! ```
//!
//! [`Durability::Sync`]: peerlite_storage::Durability::Sync

mod blobs;
mod data;
mod peer;
mod proc_stats;
mod report;
mod runtime;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use peerlite_proto::{Activity, CollectionName, Direction, ReplicatorType};
use peerlite_storage::{Database, DatabaseUuid, StorageError};

pub use blobs::{BlobReport, run_blobs};
pub use peer::serve_peer;
pub use report::{BenchReport, MetricSummary, summarize};
use runtime::AnyReplicator;
pub use runtime::BenchRuntime;

use peer::Peer;
use peerlite_smol::{
    Credentials, ReplicatorConfigError, ReplicatorConfiguration, ReplicatorError, ServerTrust,
};

/// What a bench run does.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Documents in the data set (default 100,000).
    pub docs: u64,
    /// Seed of the generated documents (default 12345).
    pub seed: u32,
    /// TLS between the peers (default on).
    pub tls: bool,
    /// The runtime both processes run on (default smol).
    pub runtime: BenchRuntime,
    /// Single writes per direction in the live-latency step (default 200).
    pub live_writes: u64,
    /// Rate of those writes, per second (default 20).
    pub live_rate: f64,
    /// Resyncs of 1% in each direction per run, each after other documents changed; the
    /// run reports their median (default 5). One resync alone is at the mercy of
    /// whether a background memtable flush happens to overlap it.
    pub incr_rounds: u32,
    /// The program that runs the listener process: it must call [`serve_peer`] on its
    /// standard input and output (`peerlite bench-peer` does).
    pub peer_program: PathBuf,
    /// Its arguments.
    pub peer_args: Vec<OsString>,
    /// Where the temporary databases go (default: the system's temporary directory).
    pub work_dir: Option<PathBuf>,
    /// Record every session of both peers for the sync doctor into this directory
    /// (`replicator-<step>.rec`, replaced at each sync; `listener.rec.N`, one per
    /// connection), to measure what recording costs. Default: no recording.
    pub record: Option<PathBuf>,
}

impl BenchOptions {
    /// Default options, with the listener process `program args…`.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> BenchOptions {
        BenchOptions {
            docs: 100_000,
            seed: 12345,
            tls: true,
            runtime: BenchRuntime::Smol,
            live_writes: 200,
            live_rate: 20.0,
            incr_rounds: 5,
            peer_program: program.into(),
            peer_args: args.into_iter().map(Into::into).collect(),
            work_dir: None,
            record: None,
        }
    }
}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The listener process could not be started.
    #[error("cannot start the listener process {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listener process failed a command or went away.
    #[error("listener process: {0}")]
    Peer(String),
    /// A local database operation failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A replicator could not be configured.
    #[error("replicator configuration: {0}")]
    Config(#[from] ReplicatorConfigError),
    /// A sync failed.
    #[error("{step}: sync failed: {source}")]
    Sync {
        /// The bench step.
        step: &'static str,
        /// Why.
        source: ReplicatorError,
    },
    /// A sync finished but its result is wrong: the bench reports no figure for it.
    #[error("{step}: wrong result: {message}")]
    Check {
        /// The bench step.
        step: &'static str,
        /// What differs.
        message: String,
    },
    /// Local I/O (temporary directories, pipes).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the bench once; `run` numbers the report.
pub fn run(options: &BenchOptions, run: usize) -> Result<BenchReport, BenchError> {
    let tmp = work_dir(options)?;
    proc_stats::reset_peak_rss();
    let cpu_start = proc_stats::read(None).map(|s| s.cpu_secs);
    let c = CollectionName::default();
    let n = options.docs;
    let seed = options.seed;
    let incr = (n / 100).max(1);
    let mut r = BenchReport {
        run,
        docs: n,
        incr_docs: incr,
        incr_rounds: options.incr_rounds.max(1),
        tls: options.tls,
        runtime: options.runtime.name(),
        durability: "sync",
        ..BenchReport::default()
    };

    // The store's own rate, on the replicator's database.
    let local = Database::open(tmp.path().join("replicator"))?;
    let saving = data::load(&local, &c, 0..n, seed)?;
    r.store_ingest_docs_per_s = n as f64 / saving.as_secs_f64().max(1e-9);

    // The listener process, with an empty database.
    let (mut peer, target) = start_listener(options, tmp.path())?;

    // Push N into the empty listener, then nothing, then 1% changed here.
    let push = target.sync(&local, ReplicatorType::Push, "push")?;
    push.expect("push", n, 0)?;
    r.push_docs_per_s = n as f64 / push.secs;
    same_content(&local, &mut peer, "push")?;
    let noop = target.sync(&local, ReplicatorType::Push, "no-op push")?;
    noop.expect("no-op push", 0, 0)?;
    r.noop_push_ms = noop.secs * 1e3;
    let rounds = options.incr_rounds.max(1);
    let mut times = Vec::new();
    for round in 0..rounds {
        data::edit(&local, &c, incr, n, u64::from(round), seed, 1 + round)?;
        let incr_push = target.sync(&local, ReplicatorType::Push, "incremental push")?;
        incr_push.expect("incremental push", incr, 0)?;
        times.push(incr_push.secs * 1e3);
    }
    r.incr_push_ms = percentile(&times, 50.0);

    // Pull N into a new, empty database, then nothing, then 1% changed there. The first
    // database is closed: a device holds one.
    drop(local);
    let fresh = Database::open(tmp.path().join("replicator-2"))?;
    let pull = target.sync(&fresh, ReplicatorType::Pull, "pull")?;
    pull.expect("pull", 0, n)?;
    r.pull_docs_per_s = n as f64 / pull.secs;
    same_content(&fresh, &mut peer, "pull")?;
    let noop = target.sync(&fresh, ReplicatorType::Pull, "no-op pull")?;
    noop.expect("no-op pull", 0, 0)?;
    r.noop_pull_ms = noop.secs * 1e3;
    let mut times = Vec::new();
    for round in 0..rounds {
        // Other documents than the pushed edits (offsets from half a stride on).
        let offset = (n / incr / 2).max(1) + u64::from(round);
        peer.call(&format!(
            "edit {incr} {n} {offset} {seed} {}",
            1 + rounds + round
        ))?;
        let incr_pull = target.sync(&fresh, ReplicatorType::Pull, "incremental pull")?;
        incr_pull.expect("incremental pull", 0, incr)?;
        times.push(incr_pull.secs * 1e3);
    }
    r.incr_pull_ms = percentile(&times, 50.0);

    // Push-and-pull with nothing changed. The first one proposes the pulled documents
    // back (this database has never pushed); the second is the no-op sync.
    target.sync(&fresh, ReplicatorType::PushAndPull, "first push-and-pull")?;
    let noop = target.sync(&fresh, ReplicatorType::PushAndPull, "no-op sync")?;
    noop.expect("no-op sync", 0, 0)?;
    r.noop_sync_ms = noop.secs * 1e3;
    same_content(&fresh, &mut peer, "no-op sync")?;

    // Live latency, both ways, over one continuous push-and-pull replicator.
    let (push_lat, pull_lat) = live(options, &target, &fresh, &mut peer)?;
    (r.live_p50_ms, r.live_p99_ms) = (percentile(&push_lat, 50.0), percentile(&push_lat, 99.0));
    (r.live_pull_p50_ms, r.live_pull_p99_ms) =
        (percentile(&pull_lat, 50.0), percentile(&pull_lat, 99.0));

    if let Some(s) = proc_stats::read(Some(peer.pid())) {
        r.listener_peak_rss_mb = Some(s.peak_rss_bytes as f64 / 1e6);
        r.listener_cpu_s = Some(s.cpu_secs);
    }
    peer.quit()?;
    if let (Some(s), Some(cpu0)) = (proc_stats::read(None), cpu_start) {
        r.replicator_peak_rss_mb = Some(s.peak_rss_bytes as f64 / 1e6);
        r.replicator_cpu_s = Some(s.cpu_secs - cpu0);
    }
    Ok(r)
}

/// A temporary directory for a run's databases, in [`BenchOptions::work_dir`] if given.
fn work_dir(options: &BenchOptions) -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("peerlite-bench");
    match &options.work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
}

/// Starts the listener process on an empty database in `dir/listener`.
fn start_listener(
    options: &BenchOptions,
    dir: &std::path::Path,
) -> Result<(Peer, Target), BenchError> {
    let mut peer = Peer::spawn(&options.peer_program, &options.peer_args)?;
    if let Some(dir) = &options.record {
        peer.call(&format!("record {}", dir.join("listener.rec").display()))?;
    }
    let password = DatabaseUuid::random()?.to_string();
    let ready = peer.call(&format!(
        "open {} {} bench {password} {}",
        options.runtime.name(),
        u8::from(options.tls),
        dir.join("listener").display()
    ))?;
    let mut words = ready.split(' ').skip(1);
    let port: u16 = words
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| BenchError::Peer(format!("open: unexpected reply {ready:?}")))?;
    let trust = match words.next() {
        Some("-") | None => ServerTrust::default(),
        Some(b64) => ServerTrust::Pinned(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| BenchError::Peer("open: bad certificate".into()))?
                .into(),
        ),
    };
    let scheme = if options.tls { "wss" } else { "ws" };
    let target = Target {
        runtime: options.runtime,
        url: format!("{scheme}://127.0.0.1:{port}/db"),
        trust,
        credentials: Credentials::new("bench", &password),
        record: options.record.clone(),
    };
    Ok((peer, target))
}

/// Where and how the replicator connects.
struct Target {
    runtime: BenchRuntime,
    url: String,
    trust: ServerTrust,
    credentials: Credentials,
    /// Where the replicator records its sessions, if it does.
    record: Option<PathBuf>,
}

/// What one sync did.
struct Synced {
    secs: f64,
    pushed: u64,
    pulled: u64,
}

impl Synced {
    fn expect(&self, step: &'static str, pushed: u64, pulled: u64) -> Result<(), BenchError> {
        if (self.pushed, self.pulled) != (pushed, pulled) {
            return Err(BenchError::Check {
                step,
                message: format!(
                    "expected {pushed} pushed and {pulled} pulled documents, got {} and {}",
                    self.pushed, self.pulled
                ),
            });
        }
        Ok(())
    }
}

impl Target {
    fn config(&self, kind: ReplicatorType, continuous: bool) -> ReplicatorConfiguration {
        let mut config = ReplicatorConfiguration::new(self.url.clone());
        if let Some(dir) = &self.record {
            let name = format!(
                "replicator-{kind:?}{}.rec",
                if continuous { "-live" } else { "" }
            );
            config.record = Some(peerlite_smol::RecordOptions::new(dir.join(name)));
        }
        config.replicator_type = kind;
        config.continuous = continuous;
        config.credentials = Some(self.credentials.clone());
        config.server_trust = self.trust.clone();
        config
    }

    /// One one-shot sync, timed from `start` until it has stopped.
    fn sync(
        &self,
        db: &Database,
        kind: ReplicatorType,
        step: &'static str,
    ) -> Result<Synced, BenchError> {
        let replicator = AnyReplicator::new(self.runtime, db.clone(), self.config(kind, false))?;
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let c = counts.clone();
        replicator.add_document_listener(move |docs| {
            for d in docs.iter().filter(|d| d.error.is_none()) {
                let i = usize::from(d.direction == Direction::Pull);
                c[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        replicator.start();
        let status = replicator.wait_until_stopped();
        let secs = start.elapsed().as_secs_f64();
        if let Some(source) = status.error {
            return Err(BenchError::Sync { step, source });
        }
        Ok(Synced {
            secs,
            pushed: counts[0].load(Ordering::Relaxed),
            pulled: counts[1].load(Ordering::Relaxed),
        })
    }
}

/// Checks that `db` and the listener's database hold the same documents and revisions.
fn same_content(db: &Database, peer: &mut Peer, step: &'static str) -> Result<(), BenchError> {
    let (count, hex) = data::digest(db, &CollectionName::default())?;
    let mine = format!("digest {count} {hex}");
    let theirs = peer.call("digest")?;
    if mine != theirs {
        return Err(BenchError::Check {
            step,
            message: format!("the databases differ: here {mine:?}, listener {theirs:?}"),
        });
    }
    Ok(())
}

/// How long to wait for live writes to arrive before calling them lost.
const LIVE_DEADLINE: Duration = Duration::from_secs(30);

/// The live-latency step; returns the latencies in milliseconds of writes made here
/// (push) and on the listener (pull).
fn live(
    options: &BenchOptions,
    target: &Target,
    db: &Database,
    peer: &mut Peer,
) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    let c = CollectionName::default();
    let writes = options.live_writes;
    let interval = Duration::from_secs_f64(1.0 / options.live_rate.max(0.001));
    let config = target.config(ReplicatorType::PushAndPull, true);
    let replicator = AnyReplicator::new(target.runtime, db.clone(), config)?;
    let (idle_tx, idle_rx) = async_channel::unbounded();
    replicator.add_change_listener(move |s| {
        let _ = idle_tx.try_send((s.activity, s.error.clone()));
    });
    let (token, arrived) = data::watch_live(db, "pull");
    replicator.start();
    // Wait until it has caught up and is idle.
    let deadline = Instant::now() + LIVE_DEADLINE;
    loop {
        let next = smol::block_on(async {
            smol::future::or(async { idle_rx.recv().await.ok() }, async {
                smol::Timer::at(deadline).await;
                None
            })
            .await
        });
        match next {
            Some((Activity::Idle, _)) => break,
            Some((Activity::Stopped, Some(source))) => {
                return Err(BenchError::Sync {
                    step: "live",
                    source,
                });
            }
            Some(_) => {}
            None => {
                return Err(BenchError::Check {
                    step: "live",
                    message: "the continuous replicator never became idle".into(),
                });
            }
        }
    }
    peer.call("watch")?;

    // Writes here, seen by the listener.
    let mut written = BTreeMap::new();
    let start = Instant::now();
    for i in 0..writes {
        sleep_until(start + interval * i as u32);
        written.insert(i, data::live_write(db, &c, "push", i, options.seed)?);
    }
    let push = wait_for_all(&written, || {
        let reply = peer.call("seen")?;
        Ok(reply
            .split(' ')
            .skip(1)
            .filter_map(|pair| {
                let (i, t) = pair.split_once(':')?;
                Some((i.parse().ok()?, t.parse().ok()?))
            })
            .collect())
    })?;

    // Writes on the listener, seen here.
    let mut written = BTreeMap::new();
    let start = Instant::now();
    for i in 0..writes {
        sleep_until(start + interval * i as u32);
        let reply = peer.call(&format!("write {i} {}", options.seed))?;
        let t0 = reply
            .strip_prefix("ok ")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| BenchError::Peer(format!("write: unexpected reply {reply:?}")))?;
        written.insert(i, t0);
    }
    let pull = wait_for_all(&written, || {
        Ok(arrived.lock().unwrap_or_else(|p| p.into_inner()).clone())
    })?;
    db.remove_change_listener(token);
    replicator.stop();
    let status = replicator.wait_until_stopped();
    if let Some(source) = status.error {
        return Err(BenchError::Sync {
            step: "live",
            source,
        });
    }
    Ok((push, pull))
}

/// Polls `seen` until every write in `written` has arrived; returns the latencies (ms).
fn wait_for_all(
    written: &BTreeMap<u64, u128>,
    mut seen: impl FnMut() -> Result<BTreeMap<u64, u128>, BenchError>,
) -> Result<Vec<f64>, BenchError> {
    let deadline = Instant::now() + LIVE_DEADLINE;
    loop {
        let arrived = seen()?;
        if written.keys().all(|i| arrived.contains_key(i)) {
            return Ok(written
                .iter()
                .map(|(i, t0)| arrived[i].saturating_sub(*t0) as f64 / 1e6)
                .collect());
        }
        if Instant::now() > deadline {
            let missing = written.keys().filter(|i| !arrived.contains_key(i)).count();
            return Err(BenchError::Check {
                step: "live",
                message: format!("{missing} of {} live writes never arrived", written.len()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// The `p`th percentile (nearest rank) of `values`; 0 when empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
