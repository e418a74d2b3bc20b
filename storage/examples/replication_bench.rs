//! Storage side of replication: the sender's reads (changes feed + leaves with history)
//! and the receiver's writes (revs-diff + insert with history), 100 documents per
//! operation as the protocol issues them, on fjall with the default durability.
//!
//! ```text
//! cargo run --release -p peerlite-storage --example replication_bench -- [DOCS] [RUNS]
//! ```

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use peerlite_proto::{CollectionName, InsertMode, RevisionInsert, Seq, StorageOp, StorageReply};
use peerlite_storage::{Database, DatabaseConfig, Durability};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let docs: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let c = CollectionName::default();
    let mut figures: Vec<(String, Vec<f64>)> = Vec::new();
    let mut record = |name: &str, v: f64| match figures.iter_mut().find(|(n, _)| n == name) {
        Some((_, list)) => list.push(v),
        None => figures.push((name.to_owned(), vec![v])),
    };
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let source = Database::open(dir.path().join("source"))?;
        let mut start = 0;
        while start < docs {
            let end = (start + 1000).min(docs);
            let batch: Vec<_> = (start..end)
                .map(|i| peerlite_storage::sample::document(i, 12345))
                .collect();
            source.save_batch(&c, batch)?;
            start = end;
        }
        for durability in [Durability::Sync, Durability::Buffered] {
            let target = Database::open_with_config(
                dir.path().join(format!("target-{durability:?}")),
                DatabaseConfig {
                    durability,
                    ..DatabaseConfig::default()
                },
            )?;
            let (mut read_s, mut diff_s, mut insert_s) = (0.0, 0.0, 0.0);
            let mut since = Seq::ZERO;
            loop {
                let t = Instant::now();
                let StorageReply::Changes(changes) = source.execute(StorageOp::Changes {
                    collection: c.clone(),
                    since,
                    limit: 100,
                }) else {
                    panic!("changes failed")
                };
                if changes.is_empty() {
                    break;
                }
                since = changes[changes.len() - 1].seq;
                let ids: Vec<_> = changes.iter().map(|ch| ch.doc_id.clone()).collect();
                let StorageReply::Leaves(leaves) = source.execute(StorageOp::GetLeaves {
                    collection: c.clone(),
                    ids: ids.clone(),
                    max_history: 20,
                }) else {
                    panic!("leaves failed")
                };
                read_s += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let revs = changes
                    .iter()
                    .map(|ch| (ch.doc_id.clone(), ch.rev))
                    .collect();
                let StorageReply::RevsDiff(_) = target.execute(StorageOp::RevsDiff {
                    collection: c.clone(),
                    revs,
                }) else {
                    panic!("revs-diff failed")
                };
                diff_s += t.elapsed().as_secs_f64();
                let inserts = ids
                    .into_iter()
                    .zip(leaves)
                    .map(|(doc_id, revisions)| RevisionInsert {
                        doc_id,
                        revisions,
                        mode: InsertMode::NoConflicts,
                    })
                    .collect();
                let t = Instant::now();
                let StorageReply::Inserted(_) = target.execute(StorageOp::InsertRevisions {
                    collection: c.clone(),
                    inserts,
                }) else {
                    panic!("insert failed")
                };
                insert_s += t.elapsed().as_secs_f64();
            }
            let n = docs as f64;
            if durability == Durability::Sync {
                record("sender: changes + leaves (docs/s)", n / read_s);
            }
            record(
                &format!("receiver: revs-diff, {durability:?} (docs/s)"),
                n / diff_s,
            );
            record(
                &format!("receiver: insert, {durability:?} (docs/s)"),
                n / insert_s,
            );
        }
    }
    println!("{docs} documents in operations of 100, median of {runs} runs [min - max]");
    for (name, mut v) in figures {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:<40} {:>10.0} [{:.0} - {:.0}]",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
    Ok(())
}
