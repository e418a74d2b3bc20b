//! Storage side of replication: the sender's reads (changes feed + leaves with history)
//! and the receiver's writes (revs-diff + insert with history), as the protocol issues
//! them (changes of 200, inserts of 100), on fjall with the default durability.
//!
//! Two phases per run: N documents into an empty receiver, then resyncs after 1% of the
//! sender's documents changed (the receiver's reads are then of documents it holds, and
//! mostly not in fjall's block cache). Figures are medians over runs.
//!
//! ```text
//! cargo run --release -p peerlite-storage --example replication_bench -- [DOCS] [RUNS]
//! ```

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use peerlite_proto::{CollectionName, InsertMode, RevisionInsert, Seq, StorageOp, StorageReply};
use peerlite_storage::{Database, DatabaseConfig, Durability};

/// Resync rounds per run after the bulk transfer.
const RESYNC_ROUNDS: u32 = 10;

/// Seconds spent in each step of one transfer.
#[derive(Default)]
struct Spent {
    read: f64,
    diff: f64,
    insert: f64,
    docs: u64,
}

/// Moves every change of `source` after `since` into `target`; returns the last sequence.
fn transfer(
    source: &Database,
    target: &Database,
    mut since: Seq,
    spent: &mut Spent,
) -> Result<Seq, Box<dyn std::error::Error>> {
    let c = CollectionName::default();
    loop {
        let t = Instant::now();
        let StorageReply::Changes(changes) = source.execute(StorageOp::Changes {
            collection: c.clone(),
            since,
            limit: 200,
        }) else {
            return Err("changes failed".into());
        };
        let Some(last) = changes.last() else {
            return Ok(since);
        };
        since = last.seq;
        let ids: Vec<_> = changes.iter().map(|ch| ch.doc_id.clone()).collect();
        let StorageReply::Leaves(leaves) = source.execute(StorageOp::GetLeaves {
            collection: c.clone(),
            ids: ids.clone(),
            max_history: 20,
        }) else {
            return Err("leaves failed".into());
        };
        spent.read += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let revs = changes
            .iter()
            .map(|ch| (ch.doc_id.clone(), ch.rev))
            .collect();
        let StorageReply::RevsDiff(_) = target.execute(StorageOp::RevsDiff {
            collection: c.clone(),
            revs,
        }) else {
            return Err("revs-diff failed".into());
        };
        spent.diff += t.elapsed().as_secs_f64();
        let mut inserts: Vec<_> = ids
            .into_iter()
            .zip(leaves)
            .map(|(doc_id, revisions)| RevisionInsert {
                doc_id,
                revisions,
                mode: InsertMode::NoConflicts,
            })
            .collect();
        spent.docs += inserts.len() as u64;
        while !inserts.is_empty() {
            let rest = inserts.split_off(inserts.len().min(100));
            let t = Instant::now();
            let StorageReply::Inserted(_) = target.execute(StorageOp::InsertRevisions {
                collection: c.clone(),
                inserts: std::mem::replace(&mut inserts, rest),
            }) else {
                return Err("insert failed".into());
            };
            spent.insert += t.elapsed().as_secs_f64();
        }
    }
}

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
            let mut bulk = Spent::default();
            let mut since = transfer(&source, &target, Seq::ZERO, &mut bulk)?;
            let n = bulk.docs as f64;
            if durability == Durability::Sync {
                record("sender: changes + leaves (docs/s)", n / bulk.read);
            }
            record(
                &format!("receiver: revs-diff, {durability:?} (docs/s)"),
                n / bulk.diff,
            );
            record(
                &format!("receiver: insert, {durability:?} (docs/s)"),
                n / bulk.insert,
            );
            if durability == Durability::Buffered {
                continue;
            }
            // 1% changed, RESYNC_ROUNDS times; the edits spread over the whole set.
            let changed = (docs / 100).max(1);
            let mut resync = Spent::default();
            for round in 1..=RESYNC_ROUNDS {
                let edits: Vec<_> = (0..changed)
                    .map(|j| j * (docs / changed) + u64::from(round) % (docs / changed).max(1))
                    .map(|i| peerlite_storage::sample::edited_document(i, 12345, round))
                    .collect();
                source.save_batch(&c, edits)?;
                since = transfer(&source, &target, since, &mut resync)?;
            }
            let per_doc = |s: f64| s * 1e6 / resync.docs as f64;
            record("1% resync: sender reads (us/doc)", per_doc(resync.read));
            record(
                "1% resync: receiver revs-diff (us/doc)",
                per_doc(resync.diff),
            );
            record(
                "1% resync: receiver insert (us/doc)",
                per_doc(resync.insert),
            );
        }
    }
    println!("{docs} documents, median of {runs} runs [min - max]");
    for (name, mut v) in figures {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:<40} {:>10.1} [{:.1} - {:.1}]",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
    Ok(())
}
