//! Bounded growth under churn: for each round, writes DOCS documents, updates each
//! UPDATES times, deletes them all, then forgets the tombstones (retention 0) and
//! compacts; prints the directory's size (journal and tables apart) and the process's RSS
//! after each round. Disk must plateau, not grow with the rounds.
//!
//! ```text
//! cargo run --release -p peerlite-storage --example churn [DOCS] [UPDATES] [ROUNDS]
//! ```
//! (defaults 50,000, 10, 10). Writes are committed 1,000 documents at a time with
//! `Durability::Buffered`: durability changes how often the journal is synced, not what
//! it holds.

use std::time::{Duration, Instant, SystemTime};

use peerlite_proto::{Body, CollectionName, DocId};
use peerlite_storage::{Database, DatabaseConfig, Durability, Expected};

const BATCH: usize = 1000;

#[path = "../tests/support/disk.rs"]
mod disk;
use disk::du;

/// The process's resident set and its peak, in MB, from /proc (0 elsewhere).
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (docs, updates, rounds) = (arg(1, 50_000), arg(2, 10), arg(3, 10));
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("churn.db");
    let config = DatabaseConfig {
        durability: Durability::Buffered,
        ..DatabaseConfig::default()
    };
    let db = Database::open_with_config(&path, config)?;
    db.set_tombstone_retention(Some(Duration::ZERO))?;
    db.persist()?;
    let (j, t) = du(&path);
    println!(
        "empty database: {:.3} MB (journal {:.3}, tables and the rest {:.3})",
        mb(j + t),
        mb(j),
        mb(t)
    );
    println!(
        "{docs} documents × (1 write + {updates} updates + 1 deletion) per round, then retention 0 and compact"
    );
    println!(
        "round  peak MB  after MB  journal MB  tables MB  forgotten  reclaimed MB  RSS MB  peak RSS MB  secs"
    );
    let c = CollectionName::default();
    let ids: Vec<DocId> = (0..docs)
        .map(|i| DocId::new(format!("doc-{i:06}")))
        .collect::<Result<_, _>>()?;
    for round in 1..=rounds {
        let started = Instant::now();
        for version in 0..=updates {
            for chunk in ids.chunks(BATCH) {
                let batch = chunk.iter().map(|id| {
                    let json = format!(
                        r#"{{"round": {round}, "version": {version}, "title": "a document of the churn benchmark", "tags": ["a", "b", "c"], "n": {}}}"#,
                        id.as_str().len() * version
                    );
                    (id.clone(), Body::from_json_str(&json).expect("valid JSON"))
                });
                db.save_batch(&c, batch.collect::<Vec<_>>())?;
            }
        }
        let (pj, pt) = du(&path);
        for id in &ids {
            db.delete(&c, id, Expected::Any)?;
        }
        let report = db.compact(SystemTime::now())?;
        db.persist()?;
        let (j, t) = du(&path);
        let (now, peak) = rss();
        println!(
            "{round:>5}  {:>7.1}  {:>8.1}  {:>10.1}  {:>9.2}  {:>9}  {:>12.1}  {now:>6.1}  {peak:>11.1}  {:>4.1}",
            mb(pj + pt),
            mb(j + t),
            mb(j),
            mb(t),
            report.tombstones_forgotten,
            mb(report.store_bytes_reclaimed),
            started.elapsed().as_secs_f64()
        );
    }
    // Reopened, the database is empty and its feed too.
    drop(db);
    let db = Database::open(&path)?;
    assert!(db.changes(&c, peerlite_proto::Seq::ZERO, 1)?.is_empty());
    let (j, t) = du(&path);
    println!(
        "reopened: {:.1} MB (journal {:.1}, tables and the rest {:.2}), no document, empty changes feed",
        mb(j + t),
        mb(j),
        mb(t)
    );
    Ok(())
}
