//! Tombstone retention in the simulator: a hub forgets tombstones older than its
//! retention while clients go offline for less and for more than it.
//!
//! The property, on every seed: after healing,
//! - **nothing deleted comes back**: no revision the hub held when it forgot a deleted
//!   document returns to it, except as history beneath a re-creation on top of the
//!   deletion;
//! - **the rule for long-offline peers holds**: a client is refused (terminal,
//!   [`ReplicationError::PeerForgotDeletions`]) only if it had been away longer than the
//!   retention, and pushed nothing once it came back; every other client converges with
//!   the hub;
//! - **nothing acknowledged is lost**, except what a forgotten tombstone closed;
//! - **the documented recovery works**: a new database pulled from the hub converges.
//!
//! `PEERLITE_SIM_CASES` sets the number of cases (default 200); `PEERLITE_SIM_SEED_BASE`
//! draws another set (see `convergence.rs`). A failure prints `SIM_SEED=<n>`; replay it
//! with `SIM_SEED=<n> cargo test -p peerlite-sim --test retention replay -- --nocapture`
//! (`SIM_VERBOSE=1` also prints each case's figures, statuses and checkpoints).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use peerlite_proto::{
    CollectionName, DocId, PassiveConfig, ReplicationError, ReplicatorType, RevId,
};
use peerlite_sim::{LinkId, PeerId, SimConfig, SimError, World};
use proptest::prelude::*;

use common::{cases, check, rng_seed};

mod common;

const DOCS: u64 = 6;
const RETENTION: Duration = Duration::from_secs(10);

/// A document the hub forgot (perhaps more than once): its tombstones and every revision
/// its tree held then.
#[derive(Default)]
struct Forgotten {
    tombstones: BTreeSet<RevId>,
    revisions: BTreeSet<RevId>,
}

/// The hub forgets what its retention allows at the simulated time, as its runtime's
/// timer would; what it forgot is written down.
fn forget(w: &mut World, hub: PeerId, forgotten: &mut BTreeMap<DocId, Forgotten>) {
    let c = CollectionName::default();
    let mut tombstones = Vec::new();
    for i in 0..DOCS {
        let id = DocId::new(format!("doc-{i}")).unwrap();
        if let Some(tree) = w.db(hub).rev_tree(&c, &id).unwrap()
            && tree.is_deleted()
        {
            let revisions: Vec<RevId> = tree.nodes().map(|(rev, _)| *rev).collect();
            tombstones.push((id, tree.current_rev().unwrap(), revisions));
        }
    }
    let now = SystemTime::UNIX_EPOCH + w.elapsed();
    w.db(hub).forget_tombstones(now).unwrap();
    for (id, tombstone, revisions) in tombstones {
        if w.db(hub).rev_tree(&c, &id).unwrap().is_none() {
            let f: &mut Forgotten = forgotten.entry(id).or_default();
            f.tombstones.insert(tombstone);
            f.revisions.extend(revisions);
        }
    }
}

fn live(c: &mut peerlite_proto::ReplicatorConfig) {
    c.continuous = true;
    c.initial_retry_wait = Duration::from_millis(50);
    c.max_attempt_wait = Duration::from_millis(500);
    c.checkpoint_interval = Duration::from_millis(500);
}

/// `peers` show the same documents: the same current revision and body of every live
/// one, and the same absent ones — a forgotten tombstone and a kept one both say "no such
/// document".
fn check_same_documents(w: &World, peers: &[PeerId]) {
    let c = CollectionName::default();
    for i in 0..DOCS {
        let id = DocId::new(format!("doc-{i}")).unwrap();
        let holdings: Vec<(String, Option<(RevId, String)>)> = peers
            .iter()
            .map(|p| {
                let doc = w.db(*p).get(&c, &id).unwrap();
                let live = doc.map(|d| (d.rev, d.body.to_json_string()));
                (w.name(*p).to_owned(), live)
            })
            .collect();
        assert!(
            holdings.windows(2).all(|h| h[0].1 == h[1].1),
            "{id} diverged: {holdings:?}\n{}",
            w.describe_doc(id.as_str())
        );
    }
}

/// The outcome of one case: how many clients were refused.
fn case(seed: u64) -> Result<usize, SimError> {
    let mut w = World::new(seed, SimConfig::default());
    let hub = w.add_peer("hub");
    w.listen(hub, PassiveConfig::default());
    w.db(hub).set_tombstone_retention(Some(RETENTION))?;
    let n = 2 + w.rng().below(3) as usize;
    let clients: Vec<PeerId> = (0..n).map(|i| w.add_peer(&format!("client{i}"))).collect();
    let links: Vec<LinkId> = clients.iter().map(|c| w.replicate(*c, hub, live)).collect();
    for c in &clients {
        // Only the hub forgets: a client's own forgetting is the unit tests' business.
        w.db(*c).set_tombstone_retention(None)?;
    }
    for l in &links {
        w.start(*l);
    }
    // Every client has synced once (and saved its checkpoint) before the schedule: a
    // peer that never saved one is a newcomer, whose documents are merged as they are
    // (see docs/RELIABILITY.md).
    for i in 0..2 {
        let doc = format!("doc-{i}");
        w.save(hub, &doc, r#"{"v": 0}"#)?;
    }
    w.run_until_quiet(Duration::from_secs(60))?;
    w.run_for(Duration::from_secs(1));
    let mut forgotten = BTreeMap::new();
    // Per client link: when it heals, and the longest it was away.
    let mut away: BTreeMap<LinkId, Duration> = BTreeMap::new();
    let mut longest: BTreeMap<LinkId, Duration> = BTreeMap::new();
    let steps = 80 + w.rng().below(80);
    for _ in 0..steps {
        let wait = Duration::from_millis(w.rng().range(0, 600));
        w.run_for(wait);
        let now = w.elapsed();
        let healed: Vec<LinkId> = away
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(l, _)| *l)
            .collect();
        for l in healed {
            away.remove(&l);
            w.heal(l);
        }
        forget(&mut w, hub, &mut forgotten);
        let i = w.rng().below(clients.len() as u64 + 1) as usize;
        let peer = if i == clients.len() { hub } else { clients[i] };
        let doc = format!("doc-{}", w.rng().below(DOCS));
        match w.rng().below(100) {
            0..=49 => {
                let v = w.rng().next_u64(); // unique: equal bodies would make equal revisions
                w.save(
                    peer,
                    &doc,
                    &format!(r#"{{"v": {v}, "by": "{}"}}"#, w.name(peer)),
                )?;
            }
            50..=74 => {
                w.delete(peer, &doc)?;
            }
            75..=84 => {
                let l = links[w.rng().below(links.len() as u64) as usize];
                if let std::collections::btree_map::Entry::Vacant(slot) = away.entry(l) {
                    let length = match w.rng().below(2) {
                        0 => Duration::from_millis(w.rng().range(200, 3_000)),
                        _ => Duration::from_millis(w.rng().range(15_000, 30_000)),
                    };
                    w.partition(l);
                    slot.insert(now + length);
                    let l_max = longest.entry(l).or_default();
                    *l_max = (*l_max).max(length);
                }
            }
            _ => {}
        }
    }
    for l in std::mem::take(&mut away).into_keys() {
        w.heal(l);
    }
    // Settle, the hub's timer still running.
    for _ in 0..200 {
        w.run_for(Duration::from_millis(500));
        forget(&mut w, hub, &mut forgotten);
        if w.is_quiet() {
            break;
        }
    }
    w.run_until_quiet(Duration::from_secs(600))?;

    if std::env::var_os("SIM_VERBOSE").is_some() {
        let c = CollectionName::default();
        println!("hub forgot through {:?}", w.db(hub).forgotten_through(&c)?);
        for (c, l) in clients.iter().zip(&links) {
            println!(
                "{}: {:?}, away at most {:?}",
                w.name(*c),
                w.status(*l),
                longest.get(l)
            );
        }
        for p in std::iter::once(&hub).chain(&clients) {
            for id in w.db(*p).local_ids("").unwrap() {
                let v = w.db(*p).get_local(&id).unwrap().unwrap();
                println!(
                    "{} {id}: {:?}",
                    w.name(*p),
                    peerlite_proto::Checkpoint::from_bytes(&v)
                );
            }
        }
    }
    let mut synced = vec![hub];
    let mut refused: Vec<PeerId> = Vec::new();
    for (c, l) in clients.iter().zip(&links) {
        match &w.status(*l).error {
            None => synced.push(*c),
            Some(ReplicationError::PeerForgotDeletions { .. }) => {
                let was_away = longest.get(l).copied().unwrap_or_default();
                assert!(
                    was_away > RETENTION,
                    "{} was refused after at most {was_away:?} away (retention {RETENTION:?})",
                    w.name(*c)
                );
                refused.push(*c);
            }
            Some(other) => panic!("{}: {other}", w.name(*c)),
        }
    }
    check_same_documents(&w, &synced);
    check_nothing_came_back(&w, hub, &forgotten);
    w.check_acknowledged_kept_unless(hub, &[hub], |doc, rev| {
        forgotten
            .get(doc)
            .is_some_and(|f| f.revisions.contains(rev))
    })?;

    // The recovery: a new database, pulled from the hub, is in step with it.
    for c in refused.clone() {
        let fresh = w.add_peer(&format!("{}-new", w.name(c)));
        let pull = w.replicate(fresh, hub, |cfg| {
            cfg.replicator_type = ReplicatorType::Pull;
        });
        w.start(pull);
        w.run_until_quiet(Duration::from_secs(600))?;
        assert!(w.status(pull).error.is_none(), "{:?}", w.status(pull).error);
        check_same_documents(&w, &[hub, fresh]);
    }
    check_nothing_came_back(&w, hub, &forgotten);
    if std::env::var_os("SIM_VERBOSE").is_some() {
        println!(
            "seed {seed}: {n} clients, {} s simulated, {} documents forgotten, {} refused, {} revisions moved",
            w.elapsed().as_secs(),
            forgotten.len(),
            refused.len(),
            w.stats().revisions_transferred
        );
    }
    Ok(refused.len())
}

/// No revision the hub held when it forgot a document is back on the hub, unless it is
/// history beneath a re-creation on top of the forgotten tombstone.
fn check_nothing_came_back(w: &World, hub: PeerId, forgotten: &BTreeMap<DocId, Forgotten>) {
    let c = CollectionName::default();
    for (id, f) in forgotten {
        let Some(tree) = w.db(hub).rev_tree(&c, id).unwrap() else {
            continue;
        };
        let back: Vec<&RevId> = tree
            .nodes()
            .map(|(rev, _)| rev)
            .filter(|rev| f.revisions.contains(rev))
            .collect();
        assert!(
            back.is_empty() || f.tombstones.iter().any(|t| tree.get(t).is_some()),
            "{id} came back on the hub after its tombstone {:?} was forgotten: {back:?}\n{}",
            f.tombstones,
            w.describe_doc(id.as_str())
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(200),
        rng_seed: rng_seed(0x7077_B570),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn deleted_documents_never_come_back_and_long_absent_peers_are_refused(seed in any::<u64>()) {
        check("retention", seed, case)?;
    }
}

/// Replays one case: `SIM_SEED=<n>`.
#[test]
fn replay() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let refused = case(seed.parse().expect("SIM_SEED is a u64")).unwrap();
        println!("{refused} clients refused");
    }
}

/// Seeds whose schedules refuse at least one long-absent client, pinned so the refusal
/// and the recovery are exercised on every run.
#[test]
fn pinned_seeds() {
    let mut refused = 0;
    // 4154399045982450739: the hub forgot a tombstone between announcing it to a client
    // and reading its revisions; the client's checkpoint passed a deletion it never got.
    for seed in [1u64, 2, 3, 4, 5, 6, 7, 8, 4154399045982450739] {
        refused += case(seed).unwrap_or_else(|e| panic!("SIM_SEED={seed}: {e}"));
    }
    println!("{refused} clients refused");
    assert!(refused > 0, "no pinned schedule exercises a refusal");
}

/// A replicator whose own database forgot deletions it had not pushed yet stops with
/// the reason before anything moves either way: the listener keeps its copy (edited
/// meanwhile), the phone does not pull it back, and its other change waits for the
/// recovery instead of half-syncing.
#[test]
fn a_replicator_that_forgot_deletions_it_never_pushed_stops_and_says_so() {
    let mut w = World::new(11, SimConfig::default());
    let hub = w.add_peer("hub");
    let phone = w.add_peer("phone");
    w.listen(hub, PassiveConfig::default());
    for doc in ["a", "b"] {
        w.save(phone, doc, r#"{"v": 1}"#).unwrap();
    }
    let first = w.replicate(phone, hub, |c| {
        c.replicator_type = ReplicatorType::PushAndPull
    });
    w.start(first);
    w.run_until_quiet(Duration::from_secs(60)).unwrap();
    assert!(w.status(first).error.is_none());

    // Offline, the phone deletes "a", changes "b", and forgets the tombstone at once;
    // meanwhile the hub edits "a" (with the tombstone kept, the deletion would win).
    w.save(hub, "a", r#"{"v": 2, "by": "hub"}"#).unwrap();
    w.delete(phone, "a").unwrap();
    w.save(phone, "b", r#"{"v": 2}"#).unwrap();
    w.db(phone)
        .set_tombstone_retention(Some(Duration::ZERO))
        .unwrap();
    let now = SystemTime::UNIX_EPOCH + w.elapsed();
    assert_eq!(w.db(phone).forget_tombstones(now).unwrap(), 1);

    let again = w.replicate(phone, hub, |c| {
        c.replicator_type = ReplicatorType::PushAndPull
    });
    let moved = w.stats().revisions_transferred;
    let subscribed = w.stats().requests.get("SubChanges").copied();
    w.start(again);
    w.run_until_quiet(Duration::from_secs(60)).unwrap();
    match &w.status(again).error {
        Some(e @ ReplicationError::ForgotDeletions { since, through }) => {
            assert!(since < through, "{e}");
            assert!(!e.is_retryable());
            let text = e.to_string();
            assert!(text.contains("forgotten deletions"), "{text}");
            assert!(text.contains("new database"), "{text}");
        }
        other => panic!("expected ForgotDeletions, got {other:?}"),
    }
    assert_eq!(w.stats().revisions_transferred, moved, "nothing moved");
    // Checked before anything moves: not even a subscription went out (a check after it
    // would let the hub's edit of "a" come back by pull).
    assert_eq!(
        w.stats().requests.get("SubChanges").copied(),
        subscribed,
        "it subscribed before checking its own feed"
    );
    assert_eq!(w.stats().requests.get("ProposeChanges").copied(), None);
    let c = CollectionName::default();
    let a = DocId::new("a").unwrap();
    assert!(
        w.db(hub).get(&c, &a).unwrap().is_some(),
        "the hub keeps its copy"
    );
    assert!(
        w.db(phone).get_including_deleted(&c, &a).unwrap().is_none(),
        "and the phone does not pull it back: it stopped before subscribing"
    );
}
