//! Storage benchmark: batched saves and changes-feed reads on fjall (and in memory).
//!
//! ```text
//! cargo run --release -p peerlite-storage --example bench -- [DOCS] [RUNS]
//! ```
//!
//! Documents are about 350 bytes of JSON, generated deterministically. Each figure is the
//! median of RUNS (default 3) runs on a fresh database, with min and max.

use std::time::{Duration, Instant};

use peerlite_proto::{CollectionName, Seq};
use peerlite_storage::{Database, DatabaseConfig, Durability};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let docs: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let bodies = peerlite_storage::sample::documents(docs, 12345);
    let avg_json = bodies
        .iter()
        .map(|(_, b)| b.to_json_string().len())
        .sum::<usize>()
        / docs;
    let avg_cbor = bodies.iter().map(|(_, b)| b.len()).sum::<usize>() / docs;
    println!(
        "{docs} documents, {avg_json} B JSON / {avg_cbor} B CBOR on average, median of {runs} runs"
    );
    println!("{:<44} {:>12} {:>24}", "scenario", "docs/s", "[min - max]");
    for (backend, durability, batch) in [
        ("fjall", Durability::Sync, 100),
        ("fjall", Durability::Sync, 1000),
        ("fjall", Durability::Flush, 1000),
        ("fjall", Durability::Buffered, 1000),
        ("memory", Durability::Sync, 1000),
    ] {
        let mut rates = Vec::new();
        let mut feed_times = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir()?;
            let config = DatabaseConfig {
                durability,
                ..DatabaseConfig::default()
            };
            let db = match backend {
                "fjall" => Database::open_with_config(dir.path(), config)?,
                _ => Database::in_memory()?,
            };
            let c = CollectionName::default();
            let start = Instant::now();
            for chunk in bodies.chunks(batch) {
                db.save_batch(&c, chunk.iter().cloned())?;
            }
            db.persist()?;
            rates.push(docs as f64 / start.elapsed().as_secs_f64());
            // A 1,000-entry changes-feed read at the end of the collection.
            let since = Seq(db.last_sequence(&c)?.0.saturating_sub(1000));
            let mut times = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                let feed = db.changes(&c, since, 1000)?;
                times.push(t.elapsed());
                assert_eq!(feed.len(), 1000.min(docs));
            }
            times.sort();
            feed_times.push(times[times.len() / 2]);
        }
        let label = format!("{backend}, {durability:?}, batches of {batch}");
        let (med, lo, hi) = stats(&mut rates);
        println!(
            "{label:<44} {med:>12.0} {:>24}",
            format!("[{lo:.0} - {hi:.0}]")
        );
        feed_times.sort();
        let f = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        println!(
            "{:<44} {:>12} {:>24}",
            "  changes feed: 1,000 entries at the end",
            f(feed_times[feed_times.len() / 2]),
            format!(
                "[{} - {}]",
                f(feed_times[0]),
                f(feed_times[feed_times.len() - 1])
            )
        );
    }
    Ok(())
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
