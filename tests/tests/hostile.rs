//! Bad input and misbehaving peers, driving the state machines by hand.
//!
//! Each test asserts what a user would see: the connection closes with a protocol error
//! (or the request is refused), nothing panics, and no storage write is issued for the
//! offending message.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use peerlite_proto::{
    ActiveReplicator, Activity, ApiError, Body, CloseCode, CollectionName, DocId, ErrorBody, Event,
    Frame, Hello, Input, OpId, Output, PassiveConfig, PassivePeer, PeerMisbehaved, Principal,
    ReplicationError, ReplicatorConfig, Request, Response, RevBundle, Revision, Seq, StorageOp,
};
use peerlite_storage::Database;

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn drain(out: impl FnMut() -> Option<Output>) -> Vec<Output> {
    std::iter::from_fn(out).collect()
}

fn frames(outputs: &[Output]) -> Vec<Frame> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(Frame::decode(b, &Default::default()).unwrap()),
            _ => None,
        })
        .collect()
}

fn closed_with(outputs: &[Output], code: CloseCode) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::Close(r) if r.code == code))
}

fn writes(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Storage(
                    _,
                    StorageOp::InsertRevisions { .. } | StorageOp::PutLocal { .. }
                )
            )
        })
        .count()
}

fn request(n: u64, r: Request) -> Input {
    Input::Frame(Frame::Request(n, r).encode())
}

fn hello() -> Request {
    Request::Hello(Hello {
        versions: vec![1],
        collections: vec![CollectionName::default()],
        push: true,
        pull: true,
        max_frame_bytes: None,
    })
}

/// A passive peer that has completed the handshake.
fn open_passive() -> (PassivePeer, Instant) {
    let t = now();
    let mut p = PassivePeer::new(PassiveConfig::default(), Principal::default(), t);
    p.handle_input(request(1, hello()), t).unwrap();
    let out = drain(|| p.poll_output());
    assert!(matches!(
        frames(&out)[..],
        [Frame::Response(
            1,
            Response::Hello {
                version: 1,
                max_frame_bytes: Some(_),
            }
        )]
    ));
    (p, t)
}

#[test]
fn passive_closes_on_garbage_and_writes_nothing() {
    for garbage in [
        &b""[..],
        b"\xff\xff",
        b"\xa1\x61a\x01",
        &[0x9b; 9],
        b"not cbor at all",
    ] {
        let (mut p, t) = open_passive();
        p.handle_input(Input::Frame(Bytes::copy_from_slice(garbage)), t)
            .unwrap();
        let out = drain(|| p.poll_output());
        assert!(
            closed_with(&out, CloseCode::ProtocolError),
            "{garbage:?}: {out:?}"
        );
        assert_eq!(writes(&out), 0);
        assert!(p.is_closed());
        // Further input is ignored, not a panic.
        p.handle_input(request(9, Request::Ping), t).unwrap();
        assert!(drain(|| p.poll_output()).is_empty());
    }
}

#[test]
fn passive_requires_hello_first_and_refuses_unknown_versions() {
    let t = now();
    let mut p = PassivePeer::new(PassiveConfig::default(), Principal::default(), t);
    p.handle_input(request(1, Request::Ping), t).unwrap();
    assert!(closed_with(
        &drain(|| p.poll_output()),
        CloseCode::ProtocolError
    ));

    let mut p = PassivePeer::new(PassiveConfig::default(), Principal::default(), t);
    let future = Request::Hello(Hello {
        versions: vec![7, 8],
        collections: vec![],
        push: false,
        pull: true,
        max_frame_bytes: None,
    });
    p.handle_input(request(1, future), t).unwrap();
    let out = drain(|| p.poll_output());
    assert!(
        matches!(
            &frames(&out)[..],
            [Frame::Error(1, ErrorBody { code: 505, .. })]
        ),
        "{out:?}"
    );
    assert!(p.is_closed());

    let mut p = PassivePeer::new(PassiveConfig::default(), Principal::default(), t);
    let unknown = Request::Hello(Hello {
        versions: vec![1],
        collections: vec!["secret.stuff".parse().unwrap()],
        push: false,
        pull: true,
        max_frame_bytes: None,
    });
    p.handle_input(request(1, unknown), t).unwrap();
    let out = drain(|| p.poll_output());
    assert!(matches!(
        &frames(&out)[..],
        [Frame::Error(1, ErrorBody { code: 404, .. })]
    ));
}

#[test]
fn passive_rejects_forged_and_broken_revisions_without_storing() {
    let r1 = Revision::first(false, Body::from_json_str(r#"{"v": 1}"#).unwrap()).unwrap();
    let mut forged = r1
        .child(false, Body::from_json_str(r#"{"v": 2}"#).unwrap(), 20)
        .unwrap();
    forged.body = Body::from_json_str(r#"{"v": "evil"}"#).unwrap();
    let mut broken = r1.child(false, Body::empty(), 20).unwrap();
    broken.history = vec![r1.child(false, Body::empty(), 20).unwrap().rev];
    for bad in [forged, broken] {
        let (mut p, t) = open_passive();
        let revs = Request::Revs {
            collection: CollectionName::default(),
            docs: vec![RevBundle {
                doc_id: DocId::new("d").unwrap(),
                revisions: vec![bad],
                seq: Seq(1),
            }],
            unavailable: vec![],
            oversized: vec![],
        };
        p.handle_input(request(2, revs), t).unwrap();
        let out = drain(|| p.poll_output());
        assert!(closed_with(&out, CloseCode::ProtocolError), "{out:?}");
        assert_eq!(writes(&out), 0);
    }
}

#[test]
fn passive_bounds_requests_in_flight_and_closes_idle_connections() {
    let (mut p, t) = open_passive();
    let limit = PassiveConfig::default().max_pending_requests;
    for n in 0..=limit as u64 {
        p.handle_input(
            request(10 + n, Request::GetCheckpoint { id: "cp".into() }),
            t,
        )
        .unwrap();
    }
    let out = drain(|| p.poll_output());
    assert!(
        closed_with(&out, CloseCode::ProtocolError),
        "a flood of unanswered requests"
    );

    let (mut p, t) = open_passive();
    let idle = PassiveConfig::default().idle_timeout;
    assert_eq!(p.poll_timeout(), Some(t + idle));
    p.handle_timeout(t + idle / 2);
    assert!(!p.is_closed());
    p.handle_timeout(t + idle);
    assert!(closed_with(
        &drain(|| p.poll_output()),
        CloseCode::PolicyViolation
    ));
}

#[test]
fn passive_answers_out_of_order_responses_with_a_protocol_error() {
    let (mut p, t) = open_passive();
    p.handle_input(
        Input::Frame(Frame::Response(42, Response::Wanted(vec![Some(vec![])])).encode()),
        t,
    )
    .unwrap();
    assert!(closed_with(
        &drain(|| p.poll_output()),
        CloseCode::ProtocolError
    ));
    // A passive peer never receives Changes.
    let (mut p, t) = open_passive();
    p.handle_input(
        request(
            2,
            Request::Changes {
                collection: CollectionName::default(),
                changes: vec![],
            },
        ),
        t,
    )
    .unwrap();
    assert!(closed_with(
        &drain(|| p.poll_output()),
        CloseCode::ProtocolError
    ));
}

#[test]
fn storage_replies_must_match_an_operation() {
    let (mut p, t) = open_passive();
    assert_eq!(
        p.handle_input(
            Input::Storage(OpId(999), peerlite_proto::StorageReply::Done),
            t
        ),
        Err(ApiError::UnknownStorageOp(OpId(999)))
    );
    assert!(matches!(
        p.handle_input(Input::Connected, t),
        Err(ApiError::Unexpected(_))
    ));
}

/// An active replicator connected and past the handshake, with its storage run by `db`.
fn running_active(db: &Database) -> (ActiveReplicator, Instant) {
    let t = now();
    let mut config = ReplicatorConfig::new(db.uuid().0, "ws://peer/db");
    config.continuous = true;
    let mut a = ActiveReplicator::new(config);
    a.start(t);
    assert!(matches!(a.poll_output(), Some(Output::Connect)));
    a.handle_input(Input::Connected, t).unwrap();
    pump(&mut a, db, t);
    a.handle_input(
        Input::Frame(
            Frame::Response(
                1,
                Response::Hello {
                    version: 1,
                    max_frame_bytes: None,
                },
            )
            .encode(),
        ),
        t,
    )
    .unwrap();
    pump(&mut a, db, t);
    a.handle_input(
        Input::Frame(Frame::Response(2, Response::Checkpoint(None)).encode()),
        t,
    )
    .unwrap();
    pump(&mut a, db, t);
    (a, t)
}

/// Runs the replicator's storage operations against `db`; returns the other outputs.
fn pump(a: &mut ActiveReplicator, db: &Database, t: Instant) -> Vec<Output> {
    let mut rest = Vec::new();
    while let Some(o) = a.poll_output() {
        match o {
            Output::Storage(id, op) => {
                let reply = db.execute(op);
                a.handle_input(Input::Storage(id, reply), t).unwrap();
            }
            other => rest.push(other),
        }
    }
    rest
}

#[test]
fn active_stops_on_a_protocol_violation_and_stores_nothing() {
    let db = Database::in_memory().unwrap();
    let (mut a, t) = running_active(&db);
    let mut forged = Revision::first(false, Body::from_json_str(r#"{"v": 1}"#).unwrap()).unwrap();
    forged.body = Body::from_json_str(r#"{"v": 2}"#).unwrap();
    let revs = Request::Revs {
        collection: CollectionName::default(),
        docs: vec![RevBundle {
            doc_id: DocId::new("x").unwrap(),
            revisions: vec![forged],
            seq: Seq(1),
        }],
        unavailable: vec![],
        oversized: vec![],
    };
    a.handle_input(request(1, revs), t).unwrap();
    let out = pump(&mut a, &db, t);
    assert!(closed_with(&out, CloseCode::ProtocolError), "{out:?}");
    assert_eq!(a.status().activity, Activity::Stopped);
    assert!(matches!(
        a.status().error,
        Some(ReplicationError::Protocol(_))
    ));
    assert_eq!(
        db.get(&CollectionName::default(), &DocId::new("x").unwrap())
            .unwrap(),
        None
    );
}

#[test]
fn active_rejects_garbage_and_unknown_responses() {
    let db = Database::in_memory().unwrap();
    let (mut a, t) = running_active(&db);
    a.handle_input(Input::Frame(Bytes::from_static(b"\x00\x01\x02")), t)
        .unwrap();
    assert!(closed_with(&pump(&mut a, &db, t), CloseCode::ProtocolError));

    let (mut a, t) = running_active(&db);
    a.handle_input(Input::Frame(Frame::Response(777, Response::Ok).encode()), t)
        .unwrap();
    assert!(closed_with(&pump(&mut a, &db, t), CloseCode::ProtocolError));
    assert!(matches!(
        a.status().error,
        Some(ReplicationError::Protocol(_))
    ));
}

#[test]
fn active_detects_a_dead_peer_and_reconnects() {
    let db = Database::in_memory().unwrap();
    let (mut a, t) = running_active(&db);
    let beat = Duration::from_secs(30);
    // Quiet connection: a ping goes out at the heartbeat.
    a.handle_timeout(t + beat);
    let out = pump(&mut a, &db, t + beat);
    assert!(
        frames(&out)
            .iter()
            .any(|f| matches!(f, Frame::Request(_, Request::Ping)))
    );
    // No answer within another heartbeat: the peer is dead.
    a.handle_timeout(t + beat * 2);
    let out = pump(&mut a, &db, t + beat * 2);
    assert!(closed_with(&out, CloseCode::PolicyViolation));
    assert_eq!(a.status().activity, Activity::Offline);
    assert!(matches!(
        a.status().error,
        Some(ReplicationError::Timeout(_))
    ));
    // After the backoff it asks for a new connection.
    a.handle_timeout(t + beat * 2 + Duration::from_secs(1));
    assert!(matches!(a.poll_output(), Some(Output::Connect)));
}

#[test]
fn active_reports_a_remote_refusal() {
    let db = Database::in_memory().unwrap();
    let t = now();
    let mut a = ActiveReplicator::new(ReplicatorConfig::new(db.uuid().0, "ws://peer/db"));
    a.start(t);
    let _ = a.poll_output();
    a.handle_input(Input::Connected, t).unwrap();
    pump(&mut a, &db, t);
    let refusal = Frame::Error(1, ErrorBody::new(505, "this peer speaks version 9"));
    a.handle_input(Input::Frame(refusal.encode()), t).unwrap();
    pump(&mut a, &db, t);
    assert_eq!(a.status().activity, Activity::Stopped);
    assert!(matches!(
        a.status().error,
        Some(ReplicationError::UnsupportedVersion { .. })
    ));
}

#[test]
fn oversized_bodies_close_the_connection() {
    // Encode a Revs frame with a small body, then splice in a 5 MiB body (over the 4 MiB
    // body limit, under the 16 MiB frame limit): no Body value can hold it, so it is built
    // as raw CBOR: {"blob": "xxx…"}.
    let small = Body::from_json_str(r#"{"blob": "y"}"#).unwrap();
    let rev = Revision::first(false, small.clone()).unwrap();
    let frame = Frame::Request(
        2,
        Request::Revs {
            collection: CollectionName::default(),
            docs: vec![RevBundle {
                doc_id: DocId::new("d").unwrap(),
                revisions: vec![rev],
                seq: Seq(1),
            }],
            unavailable: vec![],
            oversized: vec![],
        },
    )
    .encode()
    .to_vec();
    let mut small_bytes = vec![0x40 | small.len() as u8];
    small_bytes.extend_from_slice(small.as_bytes());
    let pos = frame
        .windows(small_bytes.len())
        .position(|w| w == small_bytes)
        .unwrap();

    let long = vec![b'x'; 5 << 20];
    let mut body = vec![0xa1, 0x64];
    body.extend_from_slice(b"blob");
    body.push(0x7a);
    body.extend_from_slice(&(long.len() as u32).to_be_bytes());
    body.extend_from_slice(&long);
    let mut hostile = frame[..pos].to_vec();
    hostile.push(0x5a);
    hostile.extend_from_slice(&(body.len() as u32).to_be_bytes());
    hostile.extend_from_slice(&body);
    hostile.extend_from_slice(&frame[pos + small_bytes.len()..]);

    let (mut p, t) = open_passive();
    p.handle_input(Input::Frame(Bytes::from(hostile)), t)
        .unwrap();
    let out = drain(|| p.poll_output());
    assert!(closed_with(&out, CloseCode::ProtocolError), "{out:?}");
    assert_eq!(writes(&out), 0);
}

/// Each violation is named by its own variant, in the close reason the peer reports and
/// sends (and on the active side, in the replication error).
#[test]
fn violations_are_typed_in_close_reasons_and_events() {
    let (mut p, t) = open_passive();
    p.handle_input(request(2, hello()), t).unwrap();
    let out = drain(|| p.poll_output());
    let sent = out.iter().find_map(|o| match o {
        Output::Close(r) => Some(r.clone()),
        _ => None,
    });
    let sent = sent.expect("closed");
    assert_eq!(sent.violation, Some(PeerMisbehaved::HelloTwice));
    assert_eq!(
        (sent.code, sent.message.as_str()),
        (CloseCode::ProtocolError, "Hello sent twice")
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::Closed(r)) if r.violation == Some(PeerMisbehaved::HelloTwice)
    )));

    let (mut p, t) = open_passive();
    let answer = Frame::Response(77, Response::Pong).encode();
    p.handle_input(Input::Frame(answer), t).unwrap();
    let out = drain(|| p.poll_output());
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Close(r) if r.violation == Some(PeerMisbehaved::ResponseToUnknownRequest(77))
            && r.message == "response to unknown request 77"
    )));
}

/// A listener that asks to wait (`Retry-After`, carried in `Disconnect::retry_after`) gets
/// at least that wait before the next attempt, never more than `max_attempt_wait`.
#[test]
fn the_next_attempt_waits_what_the_listener_asked() {
    for (asked, max_wait, expected) in [
        (5, 300, 5), // longer than the 1 s backoff: the listener's wait
        (5, 3, 3),   // bounded by max_attempt_wait
        (0, 300, 1), // shorter than the backoff: the backoff
    ] {
        let t = now();
        let mut config = ReplicatorConfig::new([1; 16], "wss://peer/db");
        config.max_attempt_wait = Duration::from_secs(max_wait);
        let mut a = ActiveReplicator::new(config);
        a.start(t);
        assert!(matches!(a.poll_output(), Some(Output::Connect)));
        let mut busy = peerlite_proto::Disconnect::transient("the listener is busy (503)");
        busy.retry_after = Some(Duration::from_secs(asked));
        a.handle_input(Input::Disconnected(busy), t).unwrap();
        let retry = a.status().retry.expect("a retry is scheduled");
        assert_eq!(retry.wait, Duration::from_secs(expected), "asked {asked}");
        assert_eq!(a.poll_timeout(), Some(t + Duration::from_secs(expected)));
    }
}

#[test]
fn blobs_are_served_only_when_offered_and_chunks_must_match_the_request() {
    use peerlite_proto::{Blob, BlobDigest, BlobTransfer, InsertOutcome, StorageReply};
    // A replicator asking for a blob no unanswered Revs refers to gets a 404 and no read.
    let (mut p, t) = open_passive();
    let digest = BlobDigest::of(b"someone else's photo");
    let ask = |max| Request::GetBlob {
        digest,
        offset: 0,
        max,
    };
    p.handle_input(request(2, ask(1024)), t).unwrap();
    let out = drain(|| p.poll_output());
    assert!(
        matches!(
            &frames(&out)[..],
            [Frame::Error(2, ErrorBody { code: 404, .. })]
        ),
        "{out:?}"
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Storage(..))));
    // Absurd chunk sizes are refused too (the blob is not offered either way).
    p.handle_input(request(3, ask(0)), t).unwrap();
    assert!(!p.is_closed());

    // A pushed revision refers to a blob the listener lacks: it asks for chunks; an
    // answer of another length than asked closes the connection, storing nothing.
    let (mut p, t) = open_passive();
    let blob = Blob::new(BlobDigest::of(&[7u8; 1000]), 1000, None);
    let body = serde_json::json!({"photo": blob.to_json()});
    let r = Revision::first(false, Body::from_json(&body).unwrap()).unwrap();
    let revs = Request::Revs {
        collection: CollectionName::default(),
        docs: vec![RevBundle {
            doc_id: DocId::new("d").unwrap(),
            revisions: vec![r],
            seq: Seq(1),
        }],
        unavailable: vec![],
        oversized: vec![],
    };
    p.handle_input(request(2, revs), t).unwrap();
    let insert = drain(|| p.poll_output());
    let Some(Output::Storage(id, StorageOp::InsertRevisions { .. })) = insert.last() else {
        panic!("{insert:?}");
    };
    let missing = StorageReply::Inserted(vec![InsertOutcome::MissingBlobs(vec![blob.clone()])]);
    p.handle_input(Input::Storage(*id, missing), t).unwrap();
    let begin = drain(|| p.poll_output());
    let Some(Output::Storage(id, StorageOp::BeginBlob { blob: asked })) = begin.last() else {
        panic!("{begin:?}");
    };
    assert_eq!(*asked, blob);
    let begun = StorageReply::BlobBegun {
        transfer: BlobTransfer(1),
        resume_at: 0,
    };
    p.handle_input(Input::Storage(*id, begun), t).unwrap();
    let out = drain(|| p.poll_output());
    let [
        Frame::Request(
            n,
            Request::GetBlob {
                offset: 0,
                max: 1000,
                ..
            },
        ),
    ] = frames(&out)[..]
    else {
        panic!("{out:?}");
    };
    let short = Frame::Response(n, Response::BlobChunk(Bytes::from_static(&[7u8; 999])));
    p.handle_input(Input::Frame(short.encode()), t).unwrap();
    let out = drain(|| p.poll_output());
    assert!(closed_with(&out, CloseCode::ProtocolError), "{out:?}");
    assert_eq!(writes(&out), 0);
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Event(Event::Closed(r)) if matches!(
                r.violation.as_ref(),
                Some(PeerMisbehaved::BlobChunkLength { asked: 1000, got: 999, .. })
            )
        )),
        "{out:?}"
    );
    // The transfer is set aside (nothing of it is visible), to be resumed or dropped.
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Storage(
            _,
            StorageOp::SuspendBlob {
                transfer: BlobTransfer(1)
            }
        )
    )));
}
