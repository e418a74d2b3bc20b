use super::cut::{Cut, cut};
use super::*;
use crate::{Body, Frame, MAX_BUNDLE, Request, Revision, Seq};
use crate::{Change, CollectionName, Oversized};
use proptest::prelude::*;

fn rev(generation: u64, fill: u8) -> RevId {
    RevId::from_parts(generation, [fill; crate::DIGEST_LEN]).unwrap()
}

fn long_collection() -> CollectionName {
    CollectionName::new(&"s".repeat(125), &"c".repeat(125)).unwrap()
}

fn long_id(tag: u64) -> DocId {
    let tag = tag.to_string();
    DocId::new(format!(
        "{tag}{}",
        "d".repeat(crate::MAX_DOC_ID_LEN - tag.len())
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every bound is at least what the codec writes, at the widest numbers and IDs.
    #[test]
    fn bounds_hold(
        body_len in prop_oneof![0usize..64, 20usize..70_000],
        revisions in 1usize..=MAX_BUNDLE,
        history in 0usize..=crate::MAX_HISTORY,
        deleted_ancestors in 0usize..4,
        docs in 1usize..4,
        unavailable in 0usize..4,
        oversized in 0usize..4,
        other_leaves in 0usize..8,
    ) {
        let body = Body::from_json_str(&format!(r#"{{"b":"{}"}}"#, "z".repeat(body_len))).unwrap();
        let revision = Revision {
            rev: rev(u64::MAX >> 1, 0xff),
            deleted: false,
            body,
            history: (0..history).map(|i| rev(u64::MAX >> 2, i as u8)).collect(),
            deleted_ancestors: (0..deleted_ancestors.min(history)).map(|i| rev(u64::MAX >> 2, i as u8)).collect(),
        };
        let bundles: Vec<RevBundle> = (0..docs as u64)
            .map(|d| RevBundle {
                doc_id: long_id(d),
                revisions: vec![revision.clone(); revisions],
                seq: Seq(u64::MAX),
            })
            .collect();
        let collection = long_collection();
        let unavailable: Vec<DocId> = (0..unavailable as u64).map(|d| long_id(100 + d)).collect();
        let frame = Frame::Request(u64::MAX, Request::Revs {
            collection: collection.clone(),
            docs: bundles.clone(),
            unavailable: unavailable.clone(),
            oversized: (0..oversized as u64)
                .map(|d| Oversized { doc_id: long_id(200 + d), rev: rev(u64::MAX, 1), bytes: u64::MAX })
                .collect(),
        });
        let bound = wire_size::envelope(&collection)
            + bundles.iter().map(wire_size::bundle).sum::<usize>()
            + wire_size::notes_room(&unavailable, oversized);
        prop_assert!(frame.encode().len() <= bound, "{} > {bound}", frame.encode().len());

        let changes: Vec<Change> = (0..docs as u64)
            .map(|d| Change {
                seq: Seq(u64::MAX),
                doc_id: long_id(d),
                rev: rev(u64::MAX >> 1, 3),
                deleted: true,
                other_leaves: (0..other_leaves).map(|i| rev(u64::MAX >> 1, i as u8)).collect(),
            })
            .collect();
        let bound = wire_size::envelope(&collection)
            + changes.iter().map(wire_size::change).sum::<usize>();
        for frame in [
            Request::Changes { collection: collection.clone(), changes: changes.clone() },
            Request::ProposeChanges { collection: collection.clone(), changes },
        ] {
            let bytes = Frame::Request(u64::MAX, frame).encode();
            prop_assert!(bytes.len() <= bound, "{} > {bound}", bytes.len());
        }
    }

    /// Frames keep every entry, in order, within the budget; only what cannot fit
    /// alone is left out.
    #[test]
    fn cut_keeps_order_and_budget(
        sizes in prop::collection::vec(1usize..5_000, 0..60),
        max_entries in 1usize..10,
        soft in 100usize..8_000,
        hard in 500usize..6_000,
    ) {
        let budget = FrameBudget { max_entries, soft_bytes: soft, hard_bytes: hard };
        let items: Vec<(usize, usize)> = sizes.iter().copied().enumerate().collect();
        let Cut { frames, too_large } = cut(items, |(_, s)| *s, 100, budget);
        let mut seen: Vec<usize> = frames.iter().flat_map(|(f, _)| f.iter().map(|(i, _)| *i)).collect();
        seen.extend(too_large.iter().map(|((i, _), _)| *i));
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..sizes.len()).collect::<Vec<_>>());
        for ((_, s), need) in &too_large {
            prop_assert!(100 + s > hard);
            prop_assert_eq!(*need, 100 + s);
        }
        for (frame, bytes) in &frames {
            prop_assert!(!frame.is_empty() && frame.len() <= max_entries);
            prop_assert_eq!(*bytes, frame.iter().map(|(_, s)| s).sum::<usize>());
            prop_assert!(100 + bytes <= hard);
            prop_assert!(frame.len() == 1 || 100 + bytes <= soft);
            prop_assert!(frame.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
