use super::*;
use proptest::prelude::*;

fn ciborium_bytes(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(frame, &mut out).unwrap();
    out
}

/// The general path: a bounded scan, then serde.
fn slow_decode(bytes: &[u8]) -> Option<Frame> {
    Frame::decode_with_serde(bytes, &FrameLimits::DEFAULT).ok()
}

fn bulk(frame: &Frame) -> bool {
    match frame {
        Frame::Request(_, Request::Revs { oversized, .. }) => oversized.is_empty(),
        _ => matches!(
            frame,
            Frame::Request(_, Request::Changes { .. } | Request::ProposeChanges { .. })
                | Frame::Response(_, Response::Wanted(_) | Response::RevStatuses(_))
        ),
    }
}

#[test]
fn writes_the_bytes_serde_writes_and_reads_them_back() {
    let mut covered = 0;
    for frame in super::super::tests::sample_frames() {
        let Some(bytes) = encode(&frame) else {
            assert!(!bulk(&frame), "{frame:?} should have a fast encoding");
            continue;
        };
        covered += 1;
        assert_eq!(bytes, ciborium_bytes(&frame), "{frame:?}");
        let limits = FrameLimits::DEFAULT;
        assert_eq!(decode(&bytes, None, &limits), Some(frame.clone()));
        let shared = Bytes::from(bytes.clone());
        assert_eq!(decode(&bytes, Some(&shared), &limits), Some(frame));
    }
    assert_eq!(covered, 5, "every bulk kind is in the samples");
}

#[test]
fn bodies_are_slices_of_a_shared_frame() {
    let frame = super::super::tests::sample_frames()
        .into_iter()
        .find(|f| matches!(f, Frame::Request(_, Request::Revs { .. })))
        .unwrap();
    let shared = Bytes::from(encode(&frame).unwrap());
    let Some(Frame::Request(_, Request::Revs { docs, .. })) =
        decode(&shared, Some(&shared), &FrameLimits::DEFAULT)
    else {
        panic!("not decoded");
    };
    let body = docs[0].revisions[0].body.to_bytes();
    let range = shared.as_ptr() as usize..shared.as_ptr() as usize + shared.len();
    assert!(range.contains(&(body.as_ptr() as usize)), "body was copied");
}

#[test]
fn other_shapes_are_left_to_serde() {
    let limits = FrameLimits::DEFAULT;
    // A field order serde accepts but the encoder never writes.
    let reordered = ciborium_bytes(&Frame::Request(
        1,
        Request::Changes {
            collection: CollectionName::default(),
            changes: vec![],
        },
    ));
    let mut swapped = reordered.clone();
    let collection_pos = swapped
        .windows(10)
        .position(|w| w == b"collection")
        .unwrap();
    assert!(decode(&swapped, None, &limits).is_some());
    swapped[collection_pos] = b'k';
    assert_eq!(decode(&swapped, None, &limits), None);
    // Non-bulk frames, and batches over the limit.
    assert_eq!(
        decode(
            &ciborium_bytes(&Frame::Request(1, Request::Ping)),
            None,
            &limits
        ),
        None
    );
    let many = ciborium_bytes(&Frame::Response(1, Response::Wanted(vec![None; 3])));
    let small = FrameLimits {
        max_batch: 2,
        ..limits
    };
    assert_eq!(decode(&many, None, &small), None);
    assert!(decode(&many, None, &limits).is_some());
    // More items than allowed: 2 for the frame's map and its key, 2 for the array
    // and request number, 2 for the variant's map and name, 1 for the list, 3 nulls.
    let few_items = FrameLimits {
        max_items: 9,
        ..limits
    };
    assert_eq!(decode(&many, None, &few_items), None);
    let enough = FrameLimits {
        max_items: 10,
        ..limits
    };
    assert!(decode(&many, None, &enough).is_some());
    assert!(Frame::decode_with_serde(&many, &few_items).is_err());
    assert!(Frame::decode_with_serde(&many, &enough).is_ok());
}

fn arb_rev() -> impl Strategy<Value = RevId> {
    (1u64..u64::MAX, any::<[u8; DIGEST_LEN]>()).prop_map(|(g, d)| RevId::from_parts(g, d).unwrap())
}

fn arb_revision() -> impl Strategy<Value = Revision> {
    (
        arb_rev(),
        any::<bool>(),
        "[a-z]{0,12}",
        any::<i64>(),
        prop::collection::vec(arb_rev(), 0..4),
        prop::collection::vec(arb_rev(), 0..2),
    )
        .prop_map(
            |(rev, deleted, s, n, history, deleted_ancestors)| Revision {
                rev,
                deleted,
                body: Body::from_serialize(&serde_json::json!({ "s": s, "n": n })).unwrap(),
                history,
                deleted_ancestors,
            },
        )
}

fn arb_doc_id() -> impl Strategy<Value = DocId> {
    "[a-zA-Z0-9:é]{1,30}".prop_map(|s| DocId::new(s).unwrap())
}

fn arb_change() -> impl Strategy<Value = Change> {
    (
        any::<u64>(),
        arb_doc_id(),
        arb_rev(),
        any::<bool>(),
        prop::collection::vec(arb_rev(), 0..3),
    )
        .prop_map(|(seq, doc_id, rev, deleted, other_leaves)| Change {
            seq: Seq(seq),
            doc_id,
            rev,
            deleted,
            other_leaves,
        })
}

fn arb_bulk_frame() -> impl Strategy<Value = Frame> {
    let collection = prop_oneof![
        Just(CollectionName::default()),
        Just(CollectionName::parse("s.c").unwrap())
    ];
    let bundle = (
        arb_doc_id(),
        prop::collection::vec(arb_revision(), 1..3),
        any::<u64>(),
    )
        .prop_map(|(doc_id, revisions, seq)| RevBundle {
            doc_id,
            revisions,
            seq: Seq(seq),
        });
    let status = prop_oneof![
        Just(RevStatus::Ok),
        Just(RevStatus::AlreadyHad),
        prop::option::of(arb_rev()).prop_map(|current| RevStatus::Conflict { current }),
        (any::<u16>(), ".{0,20}").prop_map(|(code, reason)| RevStatus::Rejected { code, reason }),
    ];
    prop_oneof![
        (
            any::<u64>(),
            collection.clone(),
            prop::collection::vec(arb_change(), 0..5),
            any::<bool>(),
        )
            .prop_map(|(n, collection, changes, propose)| {
                Frame::Request(
                    n,
                    if propose {
                        Request::ProposeChanges {
                            collection,
                            changes,
                        }
                    } else {
                        Request::Changes {
                            collection,
                            changes,
                        }
                    },
                )
            }),
        (
            any::<u64>(),
            collection,
            prop::collection::vec(bundle, 0..4),
            prop::collection::vec(arb_doc_id(), 0..3)
        )
            .prop_map(|(n, collection, docs, unavailable)| Frame::Request(
                n,
                Request::Revs {
                    collection,
                    docs,
                    unavailable,
                    oversized: Vec::new(),
                }
            )),
        (
            any::<u64>(),
            prop::collection::vec(
                prop::option::of(prop::collection::vec(arb_rev(), 0..3)),
                0..6
            )
        )
            .prop_map(|(n, w)| Frame::Response(n, Response::Wanted(w))),
        (any::<u64>(), prop::collection::vec(status, 0..6))
            .prop_map(|(n, s)| Frame::Response(n, Response::RevStatuses(s))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agrees_with_serde(frame in arb_bulk_frame()) {
        let bytes = encode(&frame).expect("a bulk frame");
        prop_assert_eq!(&bytes, &ciborium_bytes(&frame));
        prop_assert_eq!(decode(&bytes, None, &FrameLimits::DEFAULT), Some(frame));
    }

    /// Whatever the fast path accepts, the scan and serde accept with the same value.
    #[test]
    fn never_accepts_what_the_general_decoder_would_not(
        frame in arb_bulk_frame(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode(&frame).expect("a bulk frame");
        let p = pos.index(bytes.len());
        bytes[p] = byte;
        if let Some(fast) = decode(&bytes, None, &FrameLimits::DEFAULT) {
            prop_assert_eq!(Some(fast), slow_decode(&bytes));
        }
    }
}
