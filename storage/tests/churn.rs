//! Bounded growth: a database whose documents are written, updated, deleted and then
//! forgotten (retention 0) and compacted gives its space back — 50,000 documents once,
//! and 5,000 round after round. The long version with figures is
//! `cargo run --release -p peerlite-storage --example churn`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use peerlite_proto::{Body, CollectionName, DocId, Seq};
use peerlite_storage::{Database, DatabaseConfig, Durability, Expected};

#[path = "support/disk.rs"]
mod disk;
use disk::du;

/// A database in `dir` forgetting deletions at once, with `n` document IDs.
fn churned(dir: &Path, n: usize) -> (Database, Vec<DocId>, u64) {
    let path = dir.join("churn.db");
    let config = DatabaseConfig {
        durability: Durability::Buffered,
        ..DatabaseConfig::default()
    };
    let db = Database::open_with_config(&path, config).unwrap();
    db.set_tombstone_retention(Some(Duration::ZERO)).unwrap();
    db.persist().unwrap();
    let (_, empty) = du(&path);
    let ids = (0..n)
        .map(|i| DocId::new(format!("doc-{i:06}")).unwrap())
        .collect();
    (db, ids, empty)
}

/// One round: every document written, updated 10 times, deleted, then forgotten and
/// compacted. Returns the most the tables held, then the journal and tables after.
fn round(db: &Database, path: &Path, ids: &[DocId], round: u32) -> (u64, u64, u64) {
    let c = CollectionName::default();
    let mut peak = 0;
    for version in 0..=10 {
        for chunk in ids.chunks(1000) {
            let docs: Vec<(DocId, Body)> = chunk
                .iter()
                .map(|id| {
                    let json = format!(
                        r#"{{"round": {round}, "version": {version}, "text": "{}"}}"#,
                        "x".repeat(200)
                    );
                    (id.clone(), Body::from_json_str(&json).unwrap())
                })
                .collect();
            db.save_batch(&c, docs).unwrap();
        }
        db.persist().unwrap();
        peak = peak.max(du(path).1);
    }
    for id in ids {
        db.delete(&c, id, Expected::Any).unwrap();
    }
    let report = db.compact(SystemTime::now()).unwrap();
    assert_eq!(report.tombstones_forgotten, ids.len() as u64);
    db.persist().unwrap();
    let (journal, tables) = du(path);
    println!(
        "{} documents, round {round}: tables {peak} bytes at most, {tables} after; journal {journal}",
        ids.len()
    );
    (peak, journal, tables)
}

/// What stays of a churn: the tables hold nothing of it, within a small factor of an
/// empty database's files. The journal is fjall's: it starts a new file once the current
/// one passes 64 MB and deletes the old one once everything in it is flushed, so at most
/// two are on disk (the example shows the plateau over many rounds).
fn check_left(empty: u64, peak: u64, journal: u64, tables: u64) {
    assert!(peak > 2_000_000, "the round wrote {peak} bytes of tables");
    assert!(
        tables < 20 * empty.max(50_000),
        "{tables} bytes left in tables"
    );
    assert!(journal < 2 * 70_000_000, "journal {journal}");
}

#[test]
fn fifty_thousand_documents_updated_ten_times_and_deleted_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ids, empty) = churned(dir.path(), 50_000);
    let path = dir.path().join("churn.db");
    let (peak, journal, tables) = round(&db, &path, &ids, 0);
    check_left(empty, peak, journal, tables);
    let c = CollectionName::default();
    assert!(db.changes(&c, Seq::ZERO, 1).unwrap().is_empty());
    assert!(db.documents(&c, None, 1).unwrap().documents.is_empty());
    drop(db);
    let db = Database::open(&path).unwrap();
    assert!(db.changes(&c, Seq::ZERO, 1).unwrap().is_empty());
    assert_eq!(
        db.forgotten_through(&c).unwrap(),
        db.last_sequence(&c).unwrap()
    );
}

#[test]
fn churn_rounds_do_not_grow_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ids, empty) = churned(dir.path(), 5_000);
    let path = dir.path().join("churn.db");
    let mut after = Vec::new();
    for r in 0..4 {
        let (peak, journal, tables) = round(&db, &path, &ids, r);
        check_left(empty, peak, journal, tables);
        after.push(journal + tables);
    }
    // No growth with the rounds beyond the journal's two files.
    assert!(
        after.iter().all(|a| *a < 2 * 70_000_000 + 1_000_000),
        "{after:?}"
    );
}
