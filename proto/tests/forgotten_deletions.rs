//! A replicator that forgot deletions, driven by hand over the public API (the two
//! machines, in-memory databases, no runtime): what it sends, and in which order.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use peerlite_proto::{
    ActiveReplicator, Body, CollectionName, DocId, Frame, FrameLimits, Input, Output,
    PassiveConfig, PassivePeer, Principal, ReplicationError, ReplicatorConfig,
};
use peerlite_storage::{Database, Expected};

/// Runs one replication from `phone` to `laptop` to its end; the names of the requests
/// the phone sent, in order.
fn sync(
    phone: &Database,
    laptop: &Database,
    config: &ReplicatorConfig,
) -> (Vec<&'static str>, ActiveReplicator) {
    #[allow(clippy::disallowed_methods)] // a test is its own runtime
    let now = Instant::now();
    let mut active = ActiveReplicator::new(config.clone());
    let mut passive: Option<PassivePeer> = None;
    let (mut to_passive, mut to_active) = (VecDeque::new(), VecDeque::new());
    let mut sent = Vec::new();
    active.start(now);
    loop {
        while let Some(out) = active.poll_output() {
            match out {
                Output::Connect => {
                    passive = Some(PassivePeer::new(
                        PassiveConfig::default(),
                        Principal::default(),
                        now,
                    ));
                    active.handle_input(Input::Connected, now).unwrap();
                }
                Output::Send(frame) => {
                    if let Ok(Frame::Request(_, request)) =
                        Frame::decode(&frame, &FrameLimits::DEFAULT)
                    {
                        sent.push(request.name());
                    }
                    to_passive.push_back(frame);
                }
                Output::Storage(id, op) => active
                    .handle_input(Input::Storage(id, phone.execute(op)), now)
                    .unwrap(),
                _ => {}
            }
        }
        if let Some(p) = passive.as_mut() {
            while let Some(out) = p.poll_output() {
                match out {
                    Output::Send(frame) => to_active.push_back(frame),
                    Output::Storage(id, op) => p
                        .handle_input(Input::Storage(id, laptop.execute(op)), now)
                        .unwrap(),
                    _ => {}
                }
            }
        }
        let (a, b) = (to_passive.pop_front(), to_active.pop_front());
        if a.is_none() && b.is_none() {
            return (sent, active);
        }
        if let (Some(frame), Some(p)) = (a, passive.as_mut()) {
            p.handle_input(Input::Frame(frame), now).unwrap();
        }
        if let Some(frame) = b {
            active.handle_input(Input::Frame(frame), now).unwrap();
        }
    }
}

#[test]
fn a_replicator_that_forgot_an_unpushed_deletion_stops_before_subscribing_or_pushing() {
    let (phone, laptop) = (
        Database::in_memory().unwrap(),
        Database::in_memory().unwrap(),
    );
    let c = CollectionName::default();
    let (a, b) = (DocId::new("a").unwrap(), DocId::new("b").unwrap());
    for id in [&a, &b] {
        phone
            .save(&c, id, Body::from_json_str("{}").unwrap())
            .unwrap();
    }
    let config = ReplicatorConfig::new(phone.uuid().0, "ws://laptop/db");
    let (sent, first) = sync(&phone, &laptop, &config);
    assert!(first.status().error.is_none(), "{:?}", first.status().error);
    assert!(sent.contains(&"SubChanges"), "{sent:?}");

    // The laptop edits a; the phone deletes it, forgets the tombstone, and edits b.
    laptop
        .save(&c, &a, Body::from_json_str(r#"{"edited": true}"#).unwrap())
        .unwrap();
    phone.delete(&c, &a, Expected::Any).unwrap();
    phone
        .save(&c, &b, Body::from_json_str(r#"{"v": 2}"#).unwrap())
        .unwrap();
    phone.set_tombstone_retention(Some(Duration::ZERO)).unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(phone.forget_tombstones(now).unwrap(), 1);

    let (sent, again) = sync(&phone, &laptop, &config);
    assert!(
        matches!(
            again.status().error,
            Some(ReplicationError::ForgotDeletions { .. })
        ),
        "{:?}",
        again.status().error
    );
    // Checked before anything moves: no subscription (the laptop's edit of a would come
    // back), no proposal, no revisions.
    assert_eq!(sent, ["Hello", "GetCheckpoint"], "{sent:?}");
    assert!(phone.get_including_deleted(&c, &a).unwrap().is_none());
    assert_eq!(
        laptop.get(&c, &b).unwrap().unwrap().body.to_json_string(),
        "{}",
        "b was not pushed"
    );
}
