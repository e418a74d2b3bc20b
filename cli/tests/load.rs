//! Load: many continuous replicators, each writing while it syncs, against one `peerlite
//! serve` process (TLS, Basic auth, fjall). Everything converges, and the listener's
//! resident memory stays bounded. Prints throughput and memory figures.
//!
//! `PEERLITE_LOAD_CLIENTS` and `PEERLITE_LOAD_DOCS` (per client) scale it (defaults 50
//! and 20; release builds run much larger loads in seconds).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use peerlite_proto::{Body, CollectionName, DocId, RevId};
use peerlite_smol::{Credentials, Replicator, ReplicatorConfiguration, ServerTrust};
use peerlite_storage::Database;

use common::{serve, terminate};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The listener's resident set size, from `/proc` (Linux), in KiB.
fn rss_kib(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn count(db: &Database) -> usize {
    db.changes(&CollectionName::default(), Default::default(), usize::MAX)
        .unwrap()
        .len()
}

/// Every document's current revision.
fn revisions(db: &Database) -> BTreeSet<(DocId, RevId)> {
    db.changes(&CollectionName::default(), Default::default(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|c| (c.doc_id, c.rev))
        .collect()
}

fn put(db: &Database, doc: &str, client: usize) {
    let body = Body::from_json_str(&format!(r#"{{"client": {client}, "doc": "{doc}"}}"#)).unwrap();
    db.save(&CollectionName::default(), &DocId::new(doc).unwrap(), body)
        .unwrap();
}

#[test]
fn fifty_writing_replicators_converge_and_the_listener_stays_bounded() {
    let clients = env_or("PEERLITE_LOAD_CLIENTS", 50);
    let docs = env_or("PEERLITE_LOAD_DOCS", 20).max(2);
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = serve(&dir.path().join("server"), 0);
    let rss_idle = rss_kib(&server);

    let started = Instant::now();
    let dbs: Vec<Database> = (0..clients)
        .map(|_| Database::in_memory().unwrap())
        .collect();
    let mut replicators = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        for j in 0..docs / 2 {
            put(db, &format!("c{i}-{j}"), i);
        }
        let mut c = ReplicatorConfiguration::new(url.clone());
        c.credentials = Some(Credentials::new("sync", "pw"));
        c.server_trust = ServerTrust::SelfSignedOnly;
        c.continuous = true;
        c.max_attempts = 0;
        c.max_attempt_wait = Duration::from_millis(500);
        let r = Replicator::new(db.clone(), c).unwrap();
        r.start();
        replicators.push(r);
    }
    // The second half of each client's documents is written while everything syncs.
    for j in docs / 2..docs {
        for (i, db) in dbs.iter().enumerate() {
            put(db, &format!("c{i}-{j}"), i);
        }
    }
    let expected = clients * docs;
    let mut rss_peak = rss_idle.unwrap_or(0);
    let deadline = started + Duration::from_secs(300);
    loop {
        if let Some(rss) = rss_kib(&server) {
            rss_peak = rss_peak.max(rss);
        }
        if dbs.iter().all(|db| count(db) == expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged after 300 s: {:?}",
            dbs.iter().map(count).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    for r in &replicators {
        assert_eq!(r.status().error, None);
    }
    // Every client holds the same revision of every document.
    let reference = revisions(&dbs[0]);
    for db in &dbs[1..] {
        assert_eq!(revisions(db), reference);
    }
    for r in &replicators {
        r.stop();
    }
    assert!(terminate(server));

    let delivered = expected * clients; // every document reaches every client
    println!(
        "load: {clients} continuous replicators x {docs} documents: converged in {:.2} s, \
         {:.0} document deliveries/s; listener RSS idle {} KiB, peak {} KiB",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        rss_idle.unwrap_or(0),
        rss_peak
    );
    // Bounded: the listener's memory does not grow with the number of documents that
    // flowed through it beyond a generous ceiling.
    assert!(
        rss_peak < 512 * 1024,
        "listener RSS peaked at {rss_peak} KiB"
    );
}
