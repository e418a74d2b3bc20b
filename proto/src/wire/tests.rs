use super::*;
use crate::Body;
use proptest::prelude::*;

pub(super) fn sample_frames() -> Vec<Frame> {
    let r1 = Revision::first(
        false,
        Body::from_json_str(r#"{"a": [1, 2.5, "x"]}"#).unwrap(),
    )
    .unwrap();
    let r2 = r1.child(true, Body::empty(), 20).unwrap();
    let r2_rev = r2.rev;
    let c: CollectionName = "s.c".parse().unwrap();
    let id = DocId::new("doc").unwrap();
    let mut cp = Checkpoint::default();
    cp.collections.insert(
        c.clone(),
        CollectionCheckpoint {
            push: Seq(3),
            pull: Seq(9),
        },
    );
    vec![
        Frame::Request(
            1,
            Request::Hello(Hello {
                versions: vec![1],
                collections: vec![c.clone()],
                push: true,
                pull: false,
                max_frame_bytes: Some(1 << 20),
            }),
        ),
        Frame::Request(2, Request::GetCheckpoint { id: "cp-1".into() }),
        Frame::Request(
            3,
            Request::SetCheckpoint {
                id: "cp-1".into(),
                checkpoint: cp.clone(),
            },
        ),
        Frame::Request(
            4,
            Request::SubChanges {
                collection: c.clone(),
                since: Seq(7),
                continuous: true,
                doc_ids: Some(vec![id.clone()]),
            },
        ),
        Frame::Request(
            5,
            Request::Changes {
                collection: c.clone(),
                changes: vec![Change {
                    seq: Seq(8),
                    doc_id: id.clone(),
                    rev: r2.rev,
                    deleted: true,
                    other_leaves: vec![],
                }],
            },
        ),
        Frame::Request(
            6,
            Request::ProposeChanges {
                collection: c.clone(),
                changes: vec![Change {
                    seq: Seq(2),
                    doc_id: id.clone(),
                    rev: r1.rev,
                    deleted: false,
                    other_leaves: vec![r2.rev],
                }],
            },
        ),
        Frame::Request(
            7,
            Request::Revs {
                collection: c,
                docs: vec![RevBundle {
                    doc_id: id.clone(),
                    revisions: vec![r1, r2],
                    seq: Seq(8),
                }],
                unavailable: vec![id.clone()],
                oversized: vec![],
            },
        ),
        Frame::Request(
            9,
            Request::Revs {
                collection: CollectionName::default(),
                docs: vec![],
                unavailable: vec![],
                oversized: vec![Oversized {
                    doc_id: id,
                    rev: r2_rev,
                    bytes: 20 << 20,
                }],
            },
        ),
        Frame::Request(8, Request::Ping),
        Frame::Response(
            1,
            Response::Hello {
                version: 1,
                max_frame_bytes: None,
            },
        ),
        Frame::Response(
            1,
            Response::Hello {
                version: 1,
                max_frame_bytes: Some(16 << 20),
            },
        ),
        Frame::Response(2, Response::Checkpoint(Some(cp))),
        Frame::Response(2, Response::Checkpoint(None)),
        Frame::Response(3, Response::Ok),
        Frame::Response(
            5,
            Response::Wanted(vec![Some(vec![]), None, Some(vec![r2_rev])]),
        ),
        Frame::Response(
            7,
            Response::RevStatuses(vec![
                RevStatus::Ok,
                RevStatus::AlreadyHad,
                RevStatus::Conflict { current: None },
                RevStatus::Rejected {
                    code: 403,
                    reason: "no".into(),
                },
            ]),
        ),
        Frame::Response(8, Response::Pong),
        Frame::Error(9, ErrorBody::new(400, "bad")),
    ]
}

#[test]
fn every_frame_round_trips() {
    for f in sample_frames() {
        let bytes = f.encode();
        assert_eq!(Frame::decode(&bytes, &FrameLimits::DEFAULT).unwrap(), f);
    }
}

#[test]
fn truncations_and_garbage_are_errors() {
    for f in sample_frames() {
        let bytes = f.encode();
        for cut in 0..bytes.len() {
            assert!(Frame::decode(&bytes[..cut], &FrameLimits::DEFAULT).is_err());
        }
    }
    assert!(matches!(
        Frame::decode(b"\xa0", &FrameLimits::DEFAULT),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        Frame::decode(b"", &FrameLimits::DEFAULT),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn limits_are_enforced() {
    let limits = FrameLimits {
        max_frame_bytes: 64,
        max_items: 50,
        max_batch: 2,
        max_collections: 1,
    };
    let big = Frame::Error(1, ErrorBody::new(400, "x".repeat(100)));
    assert!(matches!(
        Frame::decode(&big.encode(), &limits),
        Err(FrameError::TooLarge { .. })
    ));
    let wanted = Frame::Response(1, Response::Wanted(vec![None; 3]));
    assert!(matches!(
        Frame::decode(&wanted.encode(), &limits),
        Err(FrameError::TooManyEntries {
            what: "Wanted",
            len: 3,
            max: 2
        })
    ));
    let many = Frame::Response(1, Response::Wanted(vec![None; 60]));
    let roomy = FrameLimits {
        max_frame_bytes: 1 << 20,
        ..limits
    };
    assert!(matches!(
        Frame::decode(&many.encode(), &roomy),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn bodies_inside_frames_are_validated() {
    // A Revs frame whose body bytes are not a map must not decode.
    let r = Revision::first(false, Body::empty()).unwrap();
    let f = Frame::Request(
        1,
        Request::Revs {
            collection: CollectionName::default(),
            docs: vec![RevBundle {
                doc_id: DocId::new("d").unwrap(),
                revisions: vec![r],
                seq: Seq(1),
            }],
            unavailable: vec![],
            oversized: vec![],
        },
    );
    let mut bytes = f.encode().to_vec();
    // The empty body is the byte string 0x41 0xa0; make it 0x41 0x80 (an empty array).
    let pos = bytes.windows(2).position(|w| w == [0x41, 0xa0]).unwrap();
    bytes[pos + 1] = 0x80;
    assert!(matches!(
        Frame::decode(&bytes, &FrameLimits::DEFAULT),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn checkpoint_reconciliation_takes_the_earlier_position() {
    let a: CollectionName = "s.a".parse().unwrap();
    let b: CollectionName = "s.b".parse().unwrap();
    let mut local = Checkpoint::default();
    local.collections.insert(
        a.clone(),
        CollectionCheckpoint {
            push: Seq(10),
            pull: Seq(3),
        },
    );
    local.collections.insert(
        b.clone(),
        CollectionCheckpoint {
            push: Seq(1),
            pull: Seq(1),
        },
    );
    let mut remote = Checkpoint::default();
    remote.collections.insert(
        a.clone(),
        CollectionCheckpoint {
            push: Seq(7),
            pull: Seq(5),
        },
    );
    let r = Checkpoint::reconcile(Some(&local), Some(&remote));
    assert_eq!(
        r.get(&a),
        CollectionCheckpoint {
            push: Seq(7),
            pull: Seq(3)
        }
    );
    assert_eq!(r.get(&b), CollectionCheckpoint::default());
    assert_eq!(
        Checkpoint::reconcile(Some(&local), None),
        Checkpoint::default()
    );
    assert_eq!(Checkpoint::from_bytes(&local.to_bytes()), Some(local));
    assert_eq!(Checkpoint::from_bytes(b"junk"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Frame::decode(&bytes, &FrameLimits::DEFAULT);
    }

    #[test]
    fn mutated_frames_never_panic(idx in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let frames = sample_frames();
        let mut bytes = frames[idx.index(frames.len())].encode().to_vec();
        let p = pos.index(bytes.len());
        bytes[p] = byte;
        let _ = Frame::decode(&bytes, &FrameLimits::DEFAULT);
    }
}

#[test]
fn codes_are_their_numbers_on_the_wire() {
    for code in Code::ALL {
        assert_eq!(Code::from_u16(code.as_u16()), Some(code));
        assert_eq!(ErrorBody::with_code(code, "x").kind(), Some(code));
    }
    assert_eq!(Code::from_u16(418), None);
    assert_eq!(
        RevStatus::rejected(Code::Forbidden, "no"),
        RevStatus::Rejected {
            code: 403,
            reason: "no".into()
        }
    );
}
