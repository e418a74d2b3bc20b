//! The CPU cost of the protocol and the document store alone: one one-shot sync of N
//! sample documents (push, then pull into a third peer) between in-memory peers in the
//! simulator, on one thread, with no network, TLS or disk. This is the ceiling that
//! `peerlite bench` approaches once I/O is overlapped.
//!
//! ```text
//! cargo run --release -p peerlite-sim --example sim_bulk -- [DOCS] [RUNS]
//! ```

use std::time::{Duration, Instant};

use peerlite_proto::{CollectionName, PassiveConfig, ReplicatorType};
use peerlite_sim::{SimConfig, World};
use peerlite_storage::sample;

fn main() {
    let mut args = std::env::args().skip(1);
    let docs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let c = CollectionName::default();
    let (mut push, mut pull) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut w = World::new(run as u64, SimConfig::default());
        let hub = w.add_peer("hub");
        let a = w.add_peer("a");
        let b = w.add_peer("b");
        w.listen(hub, PassiveConfig::default());
        let mut start = 0;
        while start < docs {
            let end = (start + 1000).min(docs);
            let batch: Vec<_> = (start..end).map(|i| sample::document(i, 12345)).collect();
            w.db(a).save_batch(&c, batch).expect("save");
            start = end;
        }
        for (peer, kind, rates) in [
            (a, ReplicatorType::Push, &mut push),
            (b, ReplicatorType::Pull, &mut pull),
        ] {
            let link = w.replicate(peer, hub, |c| c.replicator_type = kind);
            let t = Instant::now();
            w.start(link);
            w.run_until_quiet(Duration::from_secs(36_000))
                .expect("quiet");
            rates.push(docs as f64 / t.elapsed().as_secs_f64());
            assert!(w.status(link).error.is_none(), "{:?}", w.status(link));
        }
        w.check_converged(&[hub, a, b]).expect("converged");
    }
    for (name, rates) in [("push", &mut push), ("pull", &mut pull)] {
        rates.sort_by(f64::total_cmp);
        println!(
            "{name} {docs} documents in memory, one thread: median {:.0} docs/s [min {:.0}, max {:.0}] over {runs} runs",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1]
        );
    }
}
