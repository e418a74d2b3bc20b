//! `peerlite bench`: measured sync speed, and `peerlite bench-peer`, its listener process.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use peerlite_cli::bench::{self, BenchOptions, BenchReport, BenchRuntime};

/// Options of `peerlite bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Documents in the data set.
    #[arg(long, default_value_t = 100_000)]
    docs: u64,
    /// Number of runs; the summary gives the median and spread.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Plain WebSockets between the peers instead of TLS.
    #[arg(long)]
    no_tls: bool,
    /// The runtime both processes run on.
    #[arg(long, default_value = "smol", value_parser = ["smol", "tokio"])]
    runtime: String,
    /// Print one JSON line per run and nothing else on standard output.
    #[arg(long)]
    json: bool,
    /// Seed of the generated documents.
    #[arg(long, default_value_t = 12345)]
    seed: u32,
    /// Single writes each way in the live-latency step.
    #[arg(long, default_value_t = 200)]
    live_writes: u64,
    /// Rate of those writes, per second.
    #[arg(long, default_value_t = 20.0)]
    live_rate: f64,
    /// Resyncs of 1% each way per run; the run reports their median.
    #[arg(long, default_value_t = 5)]
    incr_rounds: u32,
    /// Directory for the temporary databases (default: the system's temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Measure blobs instead of documents: 1,000 documents with their own 100 KiB blob
    /// and one 256 MiB blob each way, live changes during the large transfer, a reused
    /// blob, peak memory.
    #[arg(long)]
    blobs: bool,
    /// Record every session of both peers for the sync doctor into this directory (to
    /// measure what recording costs; the files are replaced run after run).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
}

/// Targets shown next to the medians: (figure, target, higher is better).
const TARGETS: &[(&str, &str)] = &[
    ("push_docs_per_s", ">= 100,000"),
    ("pull_docs_per_s", ">= 100,000"),
    ("noop_sync_ms", "<= 10"),
    ("incr_push_ms", "<= 20"),
    ("incr_pull_ms", "<= 20"),
    ("live_p50_ms", "<= 1"),
    ("live_p99_ms", "<= 5"),
    ("replicator_peak_rss_mb", "<= 50"),
    ("listener_peak_rss_mb", "<= 50"),
];

pub(crate) fn run(args: BenchArgs) -> Result<(), String> {
    if args.runs == 0 || args.docs == 0 || args.incr_rounds == 0 {
        return Err("--runs, --docs and --incr-rounds must be at least 1".into());
    }
    if !(args.live_rate > 0.0 && args.live_rate.is_finite()) {
        return Err("--live-rate must be a positive number".into());
    }
    let program = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let options = BenchOptions {
        docs: args.docs,
        seed: args.seed,
        tls: !args.no_tls,
        runtime: BenchRuntime::from_name(&args.runtime).unwrap_or_default(),
        live_writes: args.live_writes,
        live_rate: args.live_rate,
        incr_rounds: args.incr_rounds,
        work_dir: args.work_dir,
        record: args.record,
        ..BenchOptions::new(program, ["bench-peer"])
    };
    if args.blobs {
        return run_blobs(&options, args.runs, args.json);
    }
    if !args.json {
        println!(
            "peerlite bench: {} documents, {} run(s), {}, Basic auth, fjall on disk with durability sync (fdatasync per commit)",
            options.docs,
            args.runs,
            if options.tls { "TLS 1.3" } else { "no TLS" },
        );
    }
    let mut reports = Vec::new();
    for run in 1..=args.runs {
        let report = bench::run(&options, run).map_err(|e| format!("run {run}: {e}"))?;
        if args.json {
            println!("{}", report.to_json());
        } else {
            print_run(&report);
        }
        let _ = std::io::stdout().flush();
        reports.push(report);
    }
    if !args.json {
        print_summary(&reports);
    }
    Ok(())
}

/// `peerlite bench --blobs`.
fn run_blobs(options: &BenchOptions, runs: usize, json: bool) -> Result<(), String> {
    if !json {
        println!(
            "peerlite bench --blobs: {runs} run(s), {}, Basic auth, fjall on disk with durability sync",
            if options.tls { "TLS 1.3" } else { "no TLS" },
        );
    }
    let mut reports = Vec::new();
    for run in 1..=runs {
        let r = bench::run_blobs(options, run).map_err(|e| format!("run {run}: {e}"))?;
        match json {
            true => println!("{}", r.to_json()),
            false => println!(
                "run {run}: 1,000 x 100 KiB push {:.0} MB/s pull {:.0} MB/s; 256 MiB push {:.0} MB/s pull {:.0} MB/s; live during it p50 {:.1} ms max {:.1} ms; reuse {:.1} ms",
                r.small_push_mb_per_s,
                r.small_pull_mb_per_s,
                r.large_push_mb_per_s,
                r.large_pull_mb_per_s,
                r.live_during_large_p50_ms,
                r.live_during_large_max_ms,
                r.reuse_sync_ms,
            ),
        }
        let _ = std::io::stdout().flush();
        reports.push(r);
    }
    if !json {
        println!(
            "\n{:<28} {:>12} {:>25}  target",
            "figure", "median", "[min - max]"
        );
        let rows: Vec<serde_json::Value> = reports
            .iter()
            .filter_map(|r| serde_json::from_str(&r.to_json()).ok())
            .collect();
        let Some(serde_json::Value::Object(first)) = rows.first() else {
            return Ok(());
        };
        for name in first.keys().filter(|k| *k != "run" && *k != "tls") {
            let mut v: Vec<f64> = rows.iter().filter_map(|r| r[name].as_f64()).collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(f64::total_cmp);
            let target = BLOB_TARGETS
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, t)| *t);
            println!(
                "{name:<28} {:>12} {:>25}  {target}",
                fmt(v[v.len() / 2]),
                format!("[{} - {}]", fmt(v[0]), fmt(v[v.len() - 1])),
            );
        }
    }
    Ok(())
}

/// Targets shown next to the blob medians.
const BLOB_TARGETS: &[(&str, &str)] = &[
    ("large_push_mb_per_s", ">= 300"),
    ("large_pull_mb_per_s", ">= 300"),
    ("replicator_peak_rss_mb", "<= 80"),
    ("listener_peak_rss_mb", "<= 80"),
];

fn print_run(r: &BenchReport) {
    println!(
        "run {}: ingest {:.0}/s, push {:.0}/s, pull {:.0}/s, no-op {:.1} ms, 1% push {:.1} ms, 1% pull {:.1} ms, live p50 {:.2} ms p99 {:.2} ms",
        r.run,
        r.store_ingest_docs_per_s,
        r.push_docs_per_s,
        r.pull_docs_per_s,
        r.noop_sync_ms,
        r.incr_push_ms,
        r.incr_pull_ms,
        r.live_p50_ms,
        r.live_p99_ms,
    );
}

fn print_summary(reports: &[BenchReport]) {
    let summary = bench::summarize(reports);
    println!(
        "\n{:<26} {:>12} {:>25}  target",
        "figure", "median", "[min - max]"
    );
    for m in &summary {
        let target = TARGETS
            .iter()
            .find(|(name, _)| *name == m.name)
            .map(|(_, t)| *t)
            .unwrap_or("");
        println!(
            "{:<26} {:>12} {:>25}  {target}",
            m.name,
            fmt(m.median),
            format!("[{} - {}]", fmt(m.min), fmt(m.max)),
        );
    }
    let median = |name: &str| summary.iter().find(|m| m.name == name).map(|m| m.median);
    if let (Some(push), Some(ingest)) =
        (median("push_docs_per_s"), median("store_ingest_docs_per_s"))
    {
        println!(
            "push / store ingest: {:.0}% (target >= 50%)",
            push / ingest.max(1e-9) * 100.0
        );
    }
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `peerlite bench-peer`: the listener process of `peerlite bench`.
pub(crate) fn peer() -> Result<(), String> {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    bench::serve_peer(stdin, stdout).map_err(|e| e.to_string())
}
