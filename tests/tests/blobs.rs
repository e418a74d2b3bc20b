//! Blobs in replication, on the deterministic simulator: each blob crosses once, whole
//! and verified, before the revision that refers to it is stored; what cannot come is
//! reported per document and the rest syncs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use peerlite_proto::{
    Activity, Blob, CollectionName, DocId, DocumentError, Event, PassiveConfig, PeerMisbehaved,
    ReplicationError, ReplicatorType,
};
use peerlite_sim::{LinkId, PeerId, SimConfig, World};

const LIMIT: Duration = Duration::from_secs(3600);

fn hub_and_client(seed: u64) -> (World, PeerId, PeerId) {
    let mut w = World::new(seed, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    w.listen(hub, PassiveConfig::default());
    (w, hub, client)
}

/// `len` bytes that differ from blob to blob.
fn bytes(len: usize, tag: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ tag)
        .collect()
}

fn save_with_blob(w: &mut World, peer: PeerId, doc: &str, blob: &Blob) {
    let json = serde_json::json!({"name": doc, "photo": blob.to_json()}).to_string();
    w.save(peer, doc, &json).unwrap();
}

fn run(w: &mut World, link: LinkId) {
    w.start(link);
    w.run_until_quiet(LIMIT).unwrap();
}

fn blob_bytes_in(w: &mut World, f: impl FnOnce(&mut World)) -> u64 {
    let before = w.stats().blob_bytes_transferred;
    f(w);
    w.stats().blob_bytes_transferred - before
}

fn doc_errors(w: &World, link: LinkId) -> Vec<(String, DocumentError)> {
    w.events(link)
        .iter()
        .filter_map(|e| match e {
            Event::Documents(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|d| Some((d.doc_id.to_string(), d.error?)))
        .collect()
}

#[test]
fn blobs_travel_once_each_way_before_their_documents() {
    let (mut w, hub, client) = hub_and_client(1);
    let photo = w.save_blob(client, &bytes(1_000_000, 1)).unwrap();
    save_with_blob(&mut w, client, "beach", &photo);
    let link = w.replicate(client, hub, |c| {
        c.replicator_type = ReplicatorType::PushAndPull
    });
    // Pushed: the blob crosses once, in chunks, and is whole on the hub.
    assert_eq!(blob_bytes_in(&mut w, |w| run(w, link)), 1_000_000);
    w.check_converged(&[hub, client]).unwrap();
    assert!(w.db(hub).has_blob(&photo.digest).unwrap());

    // A second document and a document in a resync refer to it again: no blob byte.
    save_with_blob(&mut w, client, "beach-copy", &photo);
    assert_eq!(blob_bytes_in(&mut w, |w| run(w, link)), 0);
    w.check_converged(&[hub, client]).unwrap();

    // Pulled: the hub's own blob crosses the other way.
    let audio = w.save_blob(hub, &bytes(300_000, 2)).unwrap();
    save_with_blob(&mut w, hub, "song", &audio);
    assert_eq!(blob_bytes_in(&mut w, |w| run(w, link)), 300_000);
    w.check_converged(&[hub, client]).unwrap();
    assert!(w.db(client).has_blob(&audio.digest).unwrap());
    assert_eq!(w.status(link).error, None);
    assert!(
        doc_errors(&w, link).is_empty(),
        "{:?}",
        doc_errors(&w, link)
    );
}

#[test]
fn blobs_reach_every_peer_in_continuous_mode_and_empty_blobs_too() {
    let (mut w, hub, client) = hub_and_client(2);
    let other = w.add_peer("other");
    let a = w.replicate(client, hub, |c| c.continuous = true);
    let b = w.replicate(other, hub, |c| c.continuous = true);
    w.start(a);
    w.start(b);
    w.run_until_quiet(LIMIT).unwrap();
    let empty = w.save_blob(client, b"").unwrap();
    let big = w.save_blob(client, &bytes(700_001, 3)).unwrap();
    save_with_blob(&mut w, client, "empty", &empty);
    save_with_blob(&mut w, client, "big", &big);
    w.run_until_quiet(LIMIT).unwrap();
    w.check_converged(&[hub, client, other]).unwrap();
    for peer in [hub, other] {
        assert!(w.db(peer).has_blob(&empty.digest).unwrap());
        assert!(w.db(peer).has_blob(&big.digest).unwrap());
    }
    assert_eq!(w.status(a).activity, Activity::Idle);
}

#[test]
fn a_blob_the_sender_lost_rejects_that_document_and_the_rest_syncs() {
    let (mut w, hub, client) = hub_and_client(3);
    let lost = w.save_blob(client, &bytes(50_000, 4)).unwrap();
    let kept = w.save_blob(client, &bytes(50_000, 5)).unwrap();
    save_with_blob(&mut w, client, "lost", &lost);
    save_with_blob(&mut w, client, "kept", &kept);
    w.save(client, "plain", r#"{"n": 1}"#).unwrap();
    w.lose_blob(client, &lost.digest);
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    run(&mut w, link);
    assert_eq!(w.status(link).activity, Activity::Stopped);
    assert_eq!(w.status(link).error, None);
    let errors = doc_errors(&w, link);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (doc, DocumentError::Rejected { code: 404, reason }) = &errors[0] else {
        panic!("{errors:?}");
    };
    assert_eq!(doc, "lost");
    assert!(reason.contains("does not hold this blob"), "{reason}");
    let hub_db = w.db(hub);
    let get = |d: &str| {
        hub_db
            .get(&CollectionName::default(), &DocId::new(d).unwrap())
            .unwrap()
    };
    assert!(get("lost").is_none());
    assert!(get("kept").is_some() && get("plain").is_some());
    assert!(!hub_db.has_blob(&lost.digest).unwrap());
}

#[test]
fn corrupt_blob_bytes_close_the_connection_and_store_nothing() {
    for pull in [false, true] {
        let (mut w, hub, client) = hub_and_client(4);
        let (sender, receiver) = if pull { (hub, client) } else { (client, hub) };
        let photo = w.save_blob(sender, &bytes(600_000, 6)).unwrap();
        save_with_blob(&mut w, sender, "photo", &photo);
        let mut damaged = bytes(600_000, 6);
        damaged[599_999] ^= 1;
        w.corrupt_blob(sender, photo.digest, &damaged);
        let link = w.replicate(client, hub, |c| {
            c.replicator_type = match pull {
                true => ReplicatorType::Pull,
                false => ReplicatorType::Push,
            }
        });
        run(&mut w, link);
        let status = w.status(link).clone();
        assert_eq!(status.activity, Activity::Stopped, "{status:?}");
        // The receiver names the violation; a pushing replicator hears it in the close.
        match (&status.error, pull) {
            (Some(ReplicationError::Protocol(v)), true) => {
                assert_eq!(**v, PeerMisbehaved::BlobMismatch(photo.digest))
            }
            (
                Some(ReplicationError::Transport {
                    message,
                    retryable: false,
                }),
                false,
            ) => {
                assert!(message.contains("do not match its digest"), "{message}")
            }
            (other, _) => panic!("{other:?}"),
        }
        assert!(w.db(receiver).blobs().unwrap().is_empty());
        let doc = DocId::new("photo").unwrap();
        let stored = w
            .db(receiver)
            .get(&CollectionName::default(), &doc)
            .unwrap();
        assert!(stored.is_none());
    }
}

/// Runs `link` until at least `at` blob bytes crossed in all; returns how many did.
fn run_until_blob_bytes(w: &mut World, at: u64) -> u64 {
    while w.stats().blob_bytes_transferred < at {
        w.run_for(Duration::from_millis(1));
    }
    w.stats().blob_bytes_transferred
}

/// The most blob bytes asked for and not yet received: 16 chunks of 256 KiB.
const WINDOW: u64 = 16 * (256 << 10);

#[test]
fn a_transfer_cut_by_a_dropped_connection_resumes_where_it_stopped() {
    const LEN: u64 = 12_000_000;
    for pull in [false, true] {
        let (mut w, hub, client) = hub_and_client(5);
        let (sender, receiver) = if pull { (hub, client) } else { (client, hub) };
        let video = w.save_blob(sender, &bytes(LEN as usize, 7)).unwrap();
        save_with_blob(&mut w, sender, "video", &video);
        let link = w.replicate(client, hub, |c| {
            c.replicator_type = if pull {
                ReplicatorType::Pull
            } else {
                ReplicatorType::Push
            }
        });
        w.start(link);
        let at_drop = run_until_blob_bytes(&mut w, LEN / 2);
        w.drop_connection(link);
        w.run_until_quiet(LIMIT).unwrap();
        assert_eq!(w.status(link).error, None, "{:?}", w.status(link));
        w.check_converged(&[hub, client]).unwrap();
        assert!(w.db(receiver).has_blob(&video.digest).unwrap());
        assert_eq!(w.db(receiver).blobs().unwrap().len(), 1);
        // Only what had not been written crossed again: starting over would have cost
        // at least `at_drop` more.
        let total = w.stats().blob_bytes_transferred;
        eprintln!("pull={pull}: cut at {at_drop} bytes, {total} crossed for {LEN}");
        assert!(total <= LEN + WINDOW, "{total} bytes crossed");
        assert!(total < LEN + at_drop);
    }
}

#[test]
fn a_receiver_restarted_mid_transfer_fetches_the_blob_again_whole() {
    const LEN: u64 = 6_000_000;
    let (mut w, hub, client) = hub_and_client(7);
    let video = w.save_blob(client, &bytes(LEN as usize, 8)).unwrap();
    save_with_blob(&mut w, client, "video", &video);
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    w.start(link);
    let at_crash = run_until_blob_bytes(&mut w, LEN / 2);
    w.crash(hub);
    w.run_until_quiet(LIMIT).unwrap();
    w.check_converged(&[hub, client]).unwrap();
    // What was written aside did not survive the restart: all of it crossed again.
    let total = w.stats().blob_bytes_transferred;
    assert!(total >= LEN + at_crash - WINDOW, "{total} bytes crossed");
    assert_eq!(w.db(hub).blobs().unwrap().len(), 1);
}

#[test]
fn bytes_resumed_from_a_peer_that_sent_corrupt_ones_are_not_blamed_on_the_next() {
    const LEN: usize = 8_000_000;
    let mut w = World::new(8, SimConfig::default());
    let hub = w.add_peer("hub");
    let (bad, good) = (w.add_peer("bad"), w.add_peer("good"));
    w.listen(hub, PassiveConfig::default());
    let video = w.save_blob(bad, &bytes(LEN, 9)).unwrap();
    let mut damaged = bytes(LEN, 9);
    damaged[10] ^= 1;
    w.corrupt_blob(bad, video.digest, &damaged);
    save_with_blob(&mut w, bad, "from-bad", &video);
    assert_eq!(w.save_blob(good, &bytes(LEN, 9)).unwrap(), video);
    save_with_blob(&mut w, good, "from-good", &video);

    // The bad peer's first half is kept aside when its connection drops.
    let bad_link = w.replicate(bad, hub, |c| c.replicator_type = ReplicatorType::Push);
    w.start(bad_link);
    run_until_blob_bytes(&mut w, LEN as u64 / 2);
    w.drop_connection(bad_link);
    w.stop(bad_link);
    w.run_until_quiet(LIMIT).unwrap();
    assert!(!w.db(hub).has_blob(&video.digest).unwrap());

    // The good peer's transfer resumes it, the digest does not match, and the hub
    // fetches the whole blob from the good peer instead of closing on it.
    let before = w.stats().blob_bytes_transferred;
    let good_link = w.replicate(good, hub, |c| c.replicator_type = ReplicatorType::Push);
    run(&mut w, good_link);
    assert_eq!(w.status(good_link).error, None, "{:?}", w.status(good_link));
    assert!(doc_errors(&w, good_link).is_empty());
    let crossed = w.stats().blob_bytes_transferred - before;
    assert!(crossed > LEN as u64, "{crossed}: resumed, then whole");
    let mut stored = Vec::new();
    std::io::Read::read_to_end(
        &mut w.db(hub).open_blob(&video.digest).unwrap().unwrap(),
        &mut stored,
    )
    .unwrap();
    assert!(stored == bytes(LEN, 9));
    let doc = DocId::new("from-good").unwrap();
    assert!(
        w.db(hub)
            .get(&CollectionName::default(), &doc)
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_blob_over_the_receivers_limit_is_refused_before_any_byte_and_the_rest_syncs() {
    let (mut w, hub, client) = hub_and_client(6);
    w.set_max_blob_bytes(hub, 100_000);
    let big = w.save_blob(client, &bytes(200_000, 8)).unwrap();
    let small = w.save_blob(client, &bytes(50_000, 9)).unwrap();
    save_with_blob(&mut w, client, "big", &big);
    save_with_blob(&mut w, client, "small", &small);
    w.save(client, "plain", r#"{"n": 1}"#).unwrap();
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    // Only the small blob crosses: the big one is refused before its first chunk.
    assert_eq!(blob_bytes_in(&mut w, |w| run(w, link)), 50_000);
    assert_eq!(w.status(link).error, None);
    let errors = doc_errors(&w, link);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (doc, DocumentError::Rejected { reason, .. }) = &errors[0] else {
        panic!("{errors:?}");
    };
    assert_eq!(doc, "big");
    assert!(
        reason.contains("over the receiver's limit of 100000"),
        "{reason}"
    );
    assert!(!w.db(hub).has_blob(&big.digest).unwrap());
    assert!(w.db(hub).has_blob(&small.digest).unwrap());
    // A second sync neither retries it nor sends anything else.
    assert_eq!(blob_bytes_in(&mut w, |w| run(w, link)), 0);
}
