//! Crash safety of the real binary: `peerlite serve` killed with SIGKILL during a large
//! push, `peerlite sync` killed with SIGKILL during a large pull, at seeded random points.
//! After each kill the database opens, holds only intact documents with the revisions of
//! the other side, nothing is duplicated, and the resumed sync transfers exactly what was
//! missing, ending converged.
//!
//! Two seeds per scenario run in CI; `PEERLITE_CRASH_SEEDS=<n>` runs more. A failure
//! prints `seed=<n>`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use peerlite_proto::{CollectionName, DocId, RevId};
use peerlite_storage::{Database, sample};

use common::{serve, terminate};

const DOCS: usize = 3000;

fn seeds() -> Vec<u64> {
    let n = std::env::var("PEERLITE_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    (1..=n).collect()
}

/// The port of a `wss://127.0.0.1:PORT/db` URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A kill delay in [60, 500) ms, from the seed (SplitMix64).
fn delay(seed: u64) -> Duration {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Duration::from_millis(60 + z % 440)
}

fn peerlite() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peerlite"))
}

fn sync(url: &str, db: &Path, direction: &str) -> Command {
    let mut c = peerlite();
    c.args(["sync", url, "--db"]).arg(db).args([
        direction,
        "--user",
        "sync:pw",
        "--accept-self-signed",
    ]);
    c
}

/// Every document's (current revision, body as JSON), read through a fresh open.
fn contents(db: &Path) -> BTreeMap<DocId, (RevId, String)> {
    let db = Database::open(db).unwrap();
    let c = CollectionName::default();
    let changes = db.changes(&c, Default::default(), usize::MAX).unwrap();
    let mut out = BTreeMap::new();
    for ch in changes {
        let doc = db.get(&c, &ch.doc_id).unwrap().unwrap();
        let previous = out.insert(ch.doc_id, (doc.rev, doc.body.to_json_string()));
        assert!(previous.is_none(), "a document appears twice in the feed");
    }
    out
}

fn counted(out: &Output, word: &str) -> usize {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sync failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split(", ")
        .find_map(|part| part.trim().strip_prefix(word))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {word:?} in {text:?}"))
}

fn filled(path: PathBuf) -> PathBuf {
    let db = Database::open(&path).unwrap();
    db.save_batch(&CollectionName::default(), sample::documents(DOCS, 7))
        .unwrap();
    path
}

/// Every document present is the source's, intact.
fn check_subset(
    got: &BTreeMap<DocId, (RevId, String)>,
    source: &BTreeMap<DocId, (RevId, String)>,
    seed: u64,
) {
    for (id, v) in got {
        assert_eq!(source.get(id), Some(v), "seed={seed}: {id} differs");
    }
}

#[test]
fn a_listener_killed_during_a_large_push_loses_nothing_it_acknowledged() {
    for seed in seeds() {
        let dir = tempfile::tempdir().unwrap();
        let client = filled(dir.path().join("client"));
        let source = contents(&client);
        let server_db = dir.path().join("server");
        let (mut server, url) = serve(&server_db, 0);
        let mut push = sync(&url, &client, "--push")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay(seed));
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        let _ = push.wait();

        let survived = contents(&server_db);
        check_subset(&survived, &source, seed);
        // Same URL, so the client resumes from its checkpoint: a revision the listener
        // acknowledged and then lost would never be sent again, and the final
        // comparison would catch it.
        let (server, url) = serve(&server_db, port_of(&url));
        let out = sync(&url, &client, "--push").output().unwrap();
        let pushed = counted(&out, "pushed ");
        let _ = terminate(server);
        assert_eq!(
            pushed,
            DOCS - survived.len(),
            "seed={seed}: the resumed push sent more than what was missing"
        );
        assert_eq!(contents(&server_db), source, "seed={seed}: not converged");
        println!(
            "seed={seed}: killed after {:?}: {} of {DOCS} documents had landed, resumed push sent {pushed}",
            delay(seed),
            survived.len()
        );
    }
}

#[test]
fn a_replicator_killed_during_a_large_pull_resumes_with_only_what_is_missing() {
    for seed in seeds() {
        let dir = tempfile::tempdir().unwrap();
        let server_db = filled(dir.path().join("server"));
        let source = contents(&server_db);
        let client = dir.path().join("client");
        let (server, url) = serve(&server_db, 0);
        let mut pull = sync(&url, &client, "--pull")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay(seed + 1000));
        pull.kill().unwrap(); // SIGKILL
        pull.wait().unwrap();

        let survived = if client.exists() {
            contents(&client)
        } else {
            BTreeMap::new()
        };
        check_subset(&survived, &source, seed);
        let out = sync(&url, &client, "--pull").output().unwrap();
        let pulled = counted(&out, "pulled ");
        let _ = terminate(server);
        assert_eq!(
            pulled,
            DOCS - survived.len(),
            "seed={seed}: the resumed pull fetched more than what was missing"
        );
        assert_eq!(contents(&client), source, "seed={seed}: not converged");
        println!(
            "seed={seed}: killed after {:?}: {} of {DOCS} documents had landed, resumed pull fetched {pulled}",
            delay(seed + 1000),
            survived.len()
        );
    }
}
