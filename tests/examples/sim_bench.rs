//! Simulator throughput: complete two-peer one-shot syncs of 100 documents per minute,
//! on one core.
//!
//! ```text
//! cargo run --release -p peerlite-sim --example sim_bench -- [SYNCS] [RUNS]
//! ```

use std::time::{Duration, Instant};

use peerlite_proto::{Activity, PassiveConfig};
use peerlite_sim::{SimConfig, World};

fn one_sync(seed: u64) -> u64 {
    let mut w = World::new(seed, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    w.listen(hub, PassiveConfig::default());
    for i in 0..50 {
        w.save(client, &format!("c{i}"), r#"{"from": "client", "n": 1}"#)
            .expect("save");
        w.save(hub, &format!("h{i}"), r#"{"from": "hub", "n": 2}"#)
            .expect("save");
    }
    let link = w.replicate(client, hub, |_| {});
    w.start(link);
    w.run_until_quiet(Duration::from_secs(3600)).expect("quiet");
    assert_eq!(w.status(link).activity, Activity::Stopped);
    assert!(w.status(link).error.is_none());
    w.check_converged(&[hub, client]).expect("converged");
    w.stats().revisions_transferred
}

fn main() {
    let mut args = std::env::args().skip(1);
    let syncs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let mut rates = Vec::new();
    for run in 0..runs {
        let start = Instant::now();
        let mut moved = 0;
        for s in 0..syncs {
            moved += one_sync(run as u64 * 1_000_000 + s);
        }
        assert_eq!(moved, syncs * 100);
        let per_min = syncs as f64 / start.elapsed().as_secs_f64() * 60.0;
        rates.push(per_min);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "two-peer syncs of 100 documents (push-and-pull, 50 each way), one thread: \
         median {:.0} per minute [min {:.0}, max {:.0}] over {runs} runs of {syncs}",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
