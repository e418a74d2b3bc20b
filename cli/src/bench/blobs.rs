//! `peerlite bench --blobs`: blob transfer as a measured property, with the same listener
//! process, TLS, Basic auth and durable store as the document bench.
//!
//! One run measures:
//! - 1,000 documents, each with its own 100 KiB blob: one-shot push into the empty
//!   listener, and pull into an empty database (MB/s of blob bytes);
//! - one 256 MiB blob: push, then pull with a continuous replicator while the listener
//!   saves single documents at the live rate — the latency of those live changes, which
//!   travel on the connection the blob fills;
//! - a second document that refers to the large blob: the sync's time and every byte
//!   this process wrote meanwhile (files and sockets), which shows the blob does not
//!   travel again;
//! - peak RSS of both processes.
//!
//! Every step checks its result (document and blob counts and lengths on both sides).

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerlite_proto::{Blob, Body, CollectionName, DocId, ReplicatorType};
use peerlite_storage::Database;
use serde::Serialize;

use super::data::{self, unix_nanos};
use super::{BenchError, BenchOptions, Target, percentile, proc_stats, start_listener, work_dir};

/// Documents of the small-blob step.
const SMALL_DOCS: u64 = 1_000;
/// Bytes of each small blob.
const SMALL_BYTES: u64 = 100 << 10;
/// Bytes of the large blob.
const LARGE_BYTES: u64 = 256 << 20;

/// The figures of one blob bench run. Rates are megabytes (10^6 bytes) of blob data per
/// second.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BlobReport {
    /// Run number (from 1).
    pub run: usize,
    /// TLS between the peers.
    pub tls: bool,
    /// The runtime both processes ran on: `"smol"` or `"tokio"`.
    pub runtime: &'static str,
    /// 1,000 documents with their own 100 KiB blob, pushed into the empty listener.
    pub small_push_mb_per_s: f64,
    /// The same, pulled into an empty database.
    pub small_pull_mb_per_s: f64,
    /// One 256 MiB blob, pushed.
    pub large_push_mb_per_s: f64,
    /// One 256 MiB blob, pulled by a continuous replicator while live changes travel.
    pub large_pull_mb_per_s: f64,
    /// Live changes saved on the listener during the large pull: how many.
    pub live_writes_during_large: usize,
    /// Their latency, median (ms): from the save until this side stored it.
    pub live_during_large_p50_ms: f64,
    /// Their latency, 99th percentile (ms).
    pub live_during_large_p99_ms: f64,
    /// Their latency, worst (ms).
    pub live_during_large_max_ms: f64,
    /// A second document referring to the large blob, pushed: the sync's time (ms).
    pub reuse_sync_ms: f64,
    /// Bytes this process wrote during that sync, to files and sockets: far below the
    /// blob's 268,435,456 when the blob is not sent again.
    pub reuse_bytes_written: Option<u64>,
    /// Peak resident set size of the replicator process (MB).
    pub replicator_peak_rss_mb: Option<f64>,
    /// Peak resident set size of the listener process (MB).
    pub listener_peak_rss_mb: Option<f64>,
}

impl BlobReport {
    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Runs the blob bench once; `run` numbers the report.
pub fn run_blobs(options: &BenchOptions, run: usize) -> Result<BlobReport, BenchError> {
    let tmp = work_dir(options)?;
    proc_stats::reset_peak_rss();
    let mut r = BlobReport {
        run,
        tls: options.tls,
        runtime: options.runtime.name(),
        ..BlobReport::default()
    };
    let (mut peer, target) = start_listener(options, tmp.path())?;
    let mb = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs.max(1e-9);

    // 1,000 documents with their own 100 KiB blob.
    let local = Database::open(tmp.path().join("replicator"))?;
    for i in 0..SMALL_DOCS {
        let seed = u64::from(options.seed) << 32 | i;
        let blob = local.save_blob(Generated::new(SMALL_BYTES, seed), None)?;
        save_with(&local, &format!("small-{i:04}"), &blob)?;
    }
    let push = target.sync(&local, ReplicatorType::Push, "small blobs push")?;
    push.expect("small blobs push", SMALL_DOCS, 0)?;
    r.small_push_mb_per_s = mb(SMALL_DOCS * SMALL_BYTES, push.secs);
    expect_blobs(
        &mut peer,
        "small blobs push",
        SMALL_DOCS,
        SMALL_DOCS * SMALL_BYTES,
    )?;
    let fresh = Database::open(tmp.path().join("replicator-2"))?;
    let pull = target.sync(&fresh, ReplicatorType::Pull, "small blobs pull")?;
    pull.expect("small blobs pull", 0, SMALL_DOCS)?;
    r.small_pull_mb_per_s = mb(SMALL_DOCS * SMALL_BYTES, pull.secs);
    check_local(&fresh, "small blobs pull", SMALL_DOCS)?;

    // One large blob, pushed; then a second document that refers to it.
    let large = local.save_blob(
        Generated::new(LARGE_BYTES, u64::from(options.seed)),
        Some("video/mp4"),
    )?;
    save_with(&local, "large", &large)?;
    let push = target.sync(&local, ReplicatorType::Push, "large blob push")?;
    push.expect("large blob push", 1, 0)?;
    r.large_push_mb_per_s = mb(LARGE_BYTES, push.secs);
    let total = SMALL_DOCS * SMALL_BYTES + LARGE_BYTES;
    expect_blobs(&mut peer, "large blob push", SMALL_DOCS + 1, total)?;
    save_with(&local, "large-copy", &large)?;
    let written = proc_stats::written_bytes();
    let reuse = target.sync(&local, ReplicatorType::Push, "reused blob push")?;
    reuse.expect("reused blob push", 1, 0)?;
    r.reuse_sync_ms = reuse.secs * 1e3;
    r.reuse_bytes_written = match (written, proc_stats::written_bytes()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    drop(local);

    // The large blob pulled while the listener saves live changes.
    let (secs, latencies) = large_pull_with_live_writes(options, &target, &fresh, &mut peer)?;
    r.large_pull_mb_per_s = mb(LARGE_BYTES, secs);
    r.live_writes_during_large = latencies.len();
    if !latencies.is_empty() {
        r.live_during_large_p50_ms = percentile(&latencies, 50.0);
        r.live_during_large_p99_ms = percentile(&latencies, 99.0);
        r.live_during_large_max_ms = latencies.iter().copied().fold(0.0, f64::max);
    }
    check_local(&fresh, "large blob pull", SMALL_DOCS + 1)?;

    if let Some(s) = proc_stats::read(Some(peer.pid())) {
        r.listener_peak_rss_mb = Some(s.peak_rss_bytes as f64 / 1e6);
    }
    peer.quit()?;
    if let Some(s) = proc_stats::read(None) {
        r.replicator_peak_rss_mb = Some(s.peak_rss_bytes as f64 / 1e6);
    }
    Ok(r)
}

/// Pulls everything new (the large blob's two documents) with a continuous pull while
/// the listener saves a document at the live rate; returns the seconds until the large
/// document was stored here, and the latencies (ms) of the live documents saved before.
fn large_pull_with_live_writes(
    options: &BenchOptions,
    target: &Target,
    db: &Database,
    peer: &mut super::peer::Peer,
) -> Result<(f64, Vec<f64>), BenchError> {
    let step = "large blob pull";
    let interval = Duration::from_secs_f64(1.0 / options.live_rate.max(0.001));
    let large_at: Arc<Mutex<Option<u128>>> = Arc::default();
    let seen = large_at.clone();
    let token = db.add_change_listener(move |notices| {
        if notices.iter().any(|n| n.doc_id.as_str() == "large") {
            let mut at = seen.lock().unwrap_or_else(|p| p.into_inner());
            at.get_or_insert_with(unix_nanos);
        }
    });
    let (live_token, arrived) = data::watch_live(db, "pull");
    let config = target.config(ReplicatorType::Pull, true);
    let replicator = super::AnyReplicator::new(target.runtime, db.clone(), config)?;
    let (busy_tx, busy_rx) = async_channel::unbounded();
    replicator.add_change_listener(move |s| {
        if s.activity == peerlite_proto::Activity::Busy {
            let _ = busy_tx.try_send(());
        }
    });
    let started = unix_nanos();
    replicator.start();
    // Live writes start once the transfer has (connected, handshaken, busy): their
    // latency is the transfer's effect, not the connection's setup.
    smol::block_on(async {
        smol::future::or(async { busy_rx.recv().await.ok() }, async {
            smol::Timer::after(Duration::from_secs(30)).await;
            None
        })
        .await
    })
    .ok_or(BenchError::Check {
        step,
        message: "the replicator never started transferring".into(),
    })?;
    let start = Instant::now();
    let mut written = std::collections::BTreeMap::new();
    let deadline = start + Duration::from_secs(600);
    let mut i = 0u64;
    while large_at.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
        if Instant::now() > deadline {
            return Err(BenchError::Check {
                step,
                message: "the large blob never arrived".into(),
            });
        }
        super::sleep_until(start + interval * i as u32);
        let reply = peer.call(&format!("write {i} {}", options.seed))?;
        let t0 = reply
            .strip_prefix("ok ")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| BenchError::Peer(format!("write: unexpected reply {reply:?}")))?;
        written.insert(i, t0);
        i += 1;
    }
    let large_at = large_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(started);
    let latencies = super::wait_for_all(&written, || {
        Ok(arrived.lock().unwrap_or_else(|p| p.into_inner()).clone())
    })?;
    db.remove_change_listener(token);
    db.remove_change_listener(live_token);
    replicator.stop();
    let status = replicator.wait_until_stopped();
    if let Some(source) = status.error {
        return Err(BenchError::Sync { step, source });
    }
    Ok((large_at.saturating_sub(started) as f64 / 1e9, latencies))
}

fn save_with(db: &Database, id: &str, blob: &Blob) -> Result<(), BenchError> {
    let body = Body::from_json(&serde_json::json!({ "id": id, "data": blob.to_json() }))
        .map_err(peerlite_storage::StorageError::from)?;
    let id = DocId::new(id).map_err(|e| BenchError::Check {
        step: "data",
        message: e.to_string(),
    })?;
    db.save(&CollectionName::default(), &id, body)?;
    Ok(())
}

/// Checks the listener's blobs: how many and their total length.
fn expect_blobs(
    peer: &mut super::peer::Peer,
    step: &'static str,
    count: u64,
    bytes: u64,
) -> Result<(), BenchError> {
    let reply = peer.call("blobsum")?;
    if reply != format!("blobsum {count} {bytes}") {
        return Err(BenchError::Check {
            step,
            message: format!(
                "the listener holds {reply:?}, expected {count} blobs of {bytes} bytes"
            ),
        });
    }
    Ok(())
}

/// Checks that `db` holds `count` blobs, each as long as its reference says.
fn check_local(db: &Database, step: &'static str, count: u64) -> Result<(), BenchError> {
    let blobs = db.blobs()?;
    if blobs.len() as u64 != count {
        return Err(BenchError::Check {
            step,
            message: format!("{} blobs here, expected {count}", blobs.len()),
        });
    }
    Ok(())
}

/// `len` pseudo-random bytes from `seed` (xorshift64*), generated as they are read: a
/// large blob is never held in memory.
struct Generated {
    left: u64,
    state: u64,
}

impl Generated {
    fn new(len: u64, seed: u64) -> Generated {
        // SplitMix64 of the seed: distinct seeds give distinct, non-zero states.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Generated {
            left: len,
            state: (z ^ (z >> 31)) | 1,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}
