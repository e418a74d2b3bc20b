//! One run's figures, and the median and spread of several runs.

use serde::Serialize;

/// The figures of one bench run. Rates are documents per second; times are
/// milliseconds unless named otherwise.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BenchReport {
    /// Run number (from 1).
    pub run: usize,
    /// Documents in the data set.
    pub docs: u64,
    /// Documents changed before each incremental resync (1%, at least 1).
    pub incr_docs: u64,
    /// Incremental resyncs in each direction; `incr_*_ms` is their median.
    pub incr_rounds: u32,
    /// TLS between the peers.
    pub tls: bool,
    /// The runtime both processes ran on: `"smol"` or `"tokio"`.
    pub runtime: &'static str,
    /// The store's durability: `"sync"` (fdatasync on every commit, the default).
    pub durability: &'static str,
    /// The replicator's store saving the documents in batches of 1,000.
    pub store_ingest_docs_per_s: f64,
    /// One-shot push of all documents into the empty listener.
    pub push_docs_per_s: f64,
    /// One-shot pull of all documents into an empty database.
    pub pull_docs_per_s: f64,
    /// A push-and-pull sync with nothing changed on either side.
    pub noop_sync_ms: f64,
    /// A push with nothing changed.
    pub noop_push_ms: f64,
    /// A pull with nothing changed.
    pub noop_pull_ms: f64,
    /// A push after `incr_docs` documents changed locally: the median of `incr_rounds`
    /// such resyncs, each after other documents changed.
    pub incr_push_ms: f64,
    /// A pull after `incr_docs` documents changed on the listener (median of
    /// `incr_rounds`).
    pub incr_pull_ms: f64,
    /// Continuous push-and-pull, single writes on the replicator's side: median time
    /// from the save call until the listener has stored it.
    pub live_p50_ms: f64,
    /// The same, 99th percentile.
    pub live_p99_ms: f64,
    /// Single writes on the listener's side: median time until the replicator's
    /// database has stored it.
    pub live_pull_p50_ms: f64,
    /// The same, 99th percentile.
    pub live_pull_p99_ms: f64,
    /// Peak resident memory of the replicator (bench) process during the run, MB
    /// (10^6 bytes); `None` where `/proc` is unavailable.
    pub replicator_peak_rss_mb: Option<f64>,
    /// Peak resident memory of the listener process, MB.
    pub listener_peak_rss_mb: Option<f64>,
    /// CPU time (user + system) of the replicator process during the run, seconds.
    pub replicator_cpu_s: Option<f64>,
    /// CPU time of the listener process, seconds.
    pub listener_cpu_s: Option<f64>,
}

impl BenchReport {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every figure with its name, in display order.
    pub fn metrics(&self) -> Vec<(&'static str, Option<f64>)> {
        vec![
            (
                "store_ingest_docs_per_s",
                Some(self.store_ingest_docs_per_s),
            ),
            ("push_docs_per_s", Some(self.push_docs_per_s)),
            ("pull_docs_per_s", Some(self.pull_docs_per_s)),
            ("noop_sync_ms", Some(self.noop_sync_ms)),
            ("noop_push_ms", Some(self.noop_push_ms)),
            ("noop_pull_ms", Some(self.noop_pull_ms)),
            ("incr_push_ms", Some(self.incr_push_ms)),
            ("incr_pull_ms", Some(self.incr_pull_ms)),
            ("live_p50_ms", Some(self.live_p50_ms)),
            ("live_p99_ms", Some(self.live_p99_ms)),
            ("live_pull_p50_ms", Some(self.live_pull_p50_ms)),
            ("live_pull_p99_ms", Some(self.live_pull_p99_ms)),
            ("replicator_peak_rss_mb", self.replicator_peak_rss_mb),
            ("listener_peak_rss_mb", self.listener_peak_rss_mb),
            ("replicator_cpu_s", self.replicator_cpu_s),
            ("listener_cpu_s", self.listener_cpu_s),
        ]
    }
}

/// The median, minimum and maximum of one figure over several runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricSummary {
    /// The figure's name (a [`BenchReport`] field).
    pub name: &'static str,
    /// Median over the runs (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Median and spread of every figure over `reports` (figures missing from a run are
/// left out of that figure's summary).
///
/// ```
/// use peerlite_cli::bench::{BenchReport, summarize};
/// let runs: Vec<BenchReport> = [3.0, 1.0, 2.0]
///     .into_iter()
///     .map(|r| BenchReport { push_docs_per_s: r, ..BenchReport::default() })
///     .collect();
/// let push = summarize(&runs).into_iter().find(|m| m.name == "push_docs_per_s").unwrap();
/// assert_eq!((push.median, push.min, push.max), (2.0, 1.0, 3.0));
/// ```
pub fn summarize(reports: &[BenchReport]) -> Vec<MetricSummary> {
    let Some(first) = reports.first() else {
        return Vec::new();
    };
    first
        .metrics()
        .iter()
        .enumerate()
        .filter_map(|(k, (name, _))| {
            let mut v: Vec<f64> = reports.iter().filter_map(|r| r.metrics()[k].1).collect();
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let mid = v.len() / 2;
            let median = if v.len() % 2 == 1 {
                v[mid]
            } else {
                (v[mid - 1] + v[mid]) / 2.0
            };
            Some(MetricSummary {
                name,
                median,
                min: v[0],
                max: v[v.len() - 1],
            })
        })
        .collect()
}
