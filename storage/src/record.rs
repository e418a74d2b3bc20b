//! Encoding of stored records (CBOR, versioned).

use peerlite_proto::{Body, DocId, RevId, RevNode, RevTree, RevTreeError, Seq};

use crate::StorageError;
use crate::cbor_io::{ReadError, Reader, Writer};

/// Version of the document record layout.
pub(crate) const RECORD_VERSION: u8 = 1;

/// A document as stored: its sequence and revision tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DocRecord {
    pub(crate) seq: Seq,
    pub(crate) tree: RevTree,
}

// Layout (CBOR, written and read by `cbor_io` exactly as serde + ciborium did for these
// tuple structs, so databases written before the hand-written codec read the same):
//   document: [version, seq, [node, …]]
//   node:     [rev, parent rev or null, deleted, body bytes or null]
//   rev:      [generation, digest bytes]
//   sequence: [doc id text, rev, deleted, [other leaf rev, …]]

impl DocRecord {
    /// Encodes a record from its parts (no tree is cloned into a `DocRecord` to write it).
    pub(crate) fn encode(seq: Seq, tree: &RevTree) -> Vec<u8> {
        let bodies: usize = tree
            .nodes()
            .filter_map(|(_, n)| n.body())
            .map(|b| b.as_bytes().len() + 5)
            .sum();
        let mut w = Writer::with_capacity(16 + 24 * tree.len() + bodies);
        w.array(3);
        w.uint(u64::from(RECORD_VERSION));
        w.uint(seq.0);
        w.array(tree.len());
        for (rev, node) in tree.nodes() {
            w.array(4);
            write_rev(&mut w, rev);
            match node.parent() {
                Some(parent) => write_rev(&mut w, parent),
                None => w.null(),
            }
            w.bool(node.is_deleted());
            match node.body() {
                Some(body) => w.bytes(body.as_bytes()),
                None => w.null(),
            }
        }
        w.into_vec()
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<DocRecord, StorageError> {
        let read = || -> Result<DocRecord, FieldError> {
            let mut r = Reader::new(bytes);
            let (seq, count) = read_header(&mut r)?;
            let mut nodes = Vec::with_capacity(count);
            for _ in 0..count {
                let n = read_node(&mut r)?;
                let body = n.body.map(|b| Body::from_cbor(b.to_vec())).transpose()?;
                nodes.push((n.rev, RevNode::new(n.parent, n.deleted, body)));
            }
            r.finish()?;
            let tree = RevTree::from_nodes(nodes)?;
            if tree.is_empty() {
                return Err(FieldError::NoRevisions);
            }
            Ok(DocRecord { seq, tree })
        };
        read().map_err(|e| StorageError::corrupt("document", key, e))
    }
}

/// What a revs-diff needs of a record: its revisions and their parents, without the
/// bodies (which [`DocRecord::decode`] copies and validates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RevSummary {
    /// Each revision with its parent, in ascending revision order, unique.
    nodes: Vec<(RevId, Option<RevId>)>,
}

impl RevSummary {
    /// Whether the document has revision `rev` (as [`RevTree::contains`]).
    pub(crate) fn contains(&self, rev: &RevId) -> bool {
        self.nodes.binary_search_by_key(rev, |(r, _)| *r).is_ok()
    }

    /// The leaves, in ascending order (as [`RevTree::leaf_ids`]).
    pub(crate) fn leaf_ids(&self) -> Vec<RevId> {
        let mut parents: Vec<RevId> = self.nodes.iter().filter_map(|(_, p)| *p).collect();
        parents.sort_unstable();
        self.nodes
            .iter()
            .map(|(rev, _)| *rev)
            .filter(|rev| parents.binary_search(rev).is_err())
            .collect()
    }
}

impl DocRecord {
    /// Reads only the revisions of a record, with the structural checks of
    /// [`DocRecord::decode`] (parent generations, a body on every leaf) but not the
    /// validation of each body's content.
    pub(crate) fn decode_revs(key: &[u8], bytes: &[u8]) -> Result<RevSummary, StorageError> {
        let read = || -> Result<RevSummary, FieldError> {
            let mut r = Reader::new(bytes);
            let (_, count) = read_header(&mut r)?;
            // (revision, parent, has a body), in record order.
            let mut nodes = Vec::with_capacity(count);
            for _ in 0..count {
                let n = read_node(&mut r)?;
                nodes.push((n.rev, n.parent, n.body.is_some()));
            }
            r.finish()?;
            // As a map would: the last node of a revision wins.
            nodes.reverse();
            nodes.sort_by_key(|(rev, _, _)| *rev);
            nodes.dedup_by_key(|(rev, _, _)| *rev);
            if nodes.is_empty() {
                return Err(FieldError::NoRevisions);
            }
            for (rev, parent, _) in &nodes {
                if let Some(parent) = parent
                    && parent.generation().checked_add(1) != Some(rev.generation())
                {
                    return Err(RevTreeError::ParentGeneration {
                        rev: *rev,
                        parent: *parent,
                    }
                    .into());
                }
            }
            let summary = RevSummary {
                nodes: nodes
                    .iter()
                    .map(|(rev, parent, _)| (*rev, *parent))
                    .collect(),
            };
            let leaves = summary.leaf_ids();
            if let Some((rev, _, _)) = nodes
                .iter()
                .find(|(rev, _, body)| !body && leaves.contains(rev))
            {
                return Err(RevTreeError::LeafWithoutBody(*rev).into());
            }
            Ok(summary)
        };
        read().map_err(|e| StorageError::corrupt("document", key, e))
    }
}

/// Why one field of a record is unreadable.
#[derive(Debug, thiserror::Error)]
enum FieldError {
    #[error("{0}")]
    Cbor(#[from] ReadError),
    #[error("{0}")]
    Rev(#[from] peerlite_proto::RevIdError),
    #[error("{0}")]
    Body(#[from] peerlite_proto::BodyError),
    #[error("{0}")]
    DocId(#[from] peerlite_proto::DocIdError),
    #[error("{0}")]
    Tree(#[from] peerlite_proto::RevTreeError),
    #[error("record version {0}, expected {RECORD_VERSION}")]
    Version(u64),
    #[error("no revisions")]
    NoRevisions,
}

fn write_rev(w: &mut Writer, rev: &RevId) {
    w.array(2);
    w.uint(rev.generation());
    w.bytes(rev.digest());
}

fn read_rev(r: &mut Reader<'_>) -> Result<RevId, FieldError> {
    r.array_of(2)?;
    let generation = r.uint()?;
    let digest = r.bytes()?;
    let digest = digest
        .try_into()
        .map_err(|_| peerlite_proto::RevIdError::BadDigestLength(digest.len()))?;
    Ok(RevId::from_parts(generation, digest)?)
}

/// A stored revision-tree node, its body still the raw bytes of the record.
struct StoredNode<'a> {
    rev: RevId,
    parent: Option<RevId>,
    deleted: bool,
    body: Option<&'a [u8]>,
}

/// Reads a document record's `[version, seq, [` and returns the sequence and node count.
fn read_header(r: &mut Reader<'_>) -> Result<(Seq, usize), FieldError> {
    r.array_of(3)?;
    let version = r.uint()?;
    if version != u64::from(RECORD_VERSION) {
        return Err(FieldError::Version(version));
    }
    let seq = Seq(r.uint()?);
    Ok((seq, r.array()?))
}

fn read_node<'a>(r: &mut Reader<'a>) -> Result<StoredNode<'a>, FieldError> {
    r.array_of(4)?;
    let rev = read_rev(r)?;
    let parent = if r.null() { None } else { Some(read_rev(r)?) };
    let deleted = r.bool()?;
    let body = if r.null() { None } else { Some(r.bytes()?) };
    Ok(StoredNode {
        rev,
        parent,
        deleted,
        body,
    })
}

/// One entry of the changes feed as stored: enough to list a change without reading the
/// document record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeqEntry(
    pub(crate) DocId,
    pub(crate) RevId,
    pub(crate) bool,
    /// The document's other leaves (closed branches).
    pub(crate) Vec<RevId>,
);

impl SeqEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let SeqEntry(id, rev, deleted, others) = self;
        let mut w = Writer::with_capacity(32 + id.as_str().len() + 24 * others.len());
        w.array(4);
        w.text(id.as_str());
        write_rev(&mut w, rev);
        w.bool(*deleted);
        w.array(others.len());
        for other in others {
            write_rev(&mut w, other);
        }
        w.into_vec()
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<SeqEntry, StorageError> {
        let read = || -> Result<SeqEntry, FieldError> {
            let mut r = Reader::new(bytes);
            r.array_of(4)?;
            let id = DocId::new(r.text()?)?;
            let rev = read_rev(&mut r)?;
            let deleted = r.bool()?;
            let count = r.array()?;
            let mut others = Vec::with_capacity(count);
            for _ in 0..count {
                others.push(read_rev(&mut r)?);
            }
            r.finish()?;
            Ok(SeqEntry(id, rev, deleted, others))
        };
        read().map_err(|e| StorageError::corrupt("sequence", key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlite_proto::Revision;

    // The serde layout the store wrote before the hand-written codec: both must agree
    // byte for byte, so that existing databases read the same.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct StoredNode(RevId, Option<RevId>, bool, Option<Body>);
    #[derive(serde::Serialize, serde::Deserialize)]
    struct StoredDoc(u8, Seq, Vec<StoredNode>);
    #[derive(serde::Serialize)]
    struct StoredSeq(DocId, RevId, bool, Vec<RevId>);

    fn serde_bytes(seq: Seq, tree: &RevTree) -> Vec<u8> {
        let nodes = tree
            .nodes()
            .map(|(rev, n)| {
                StoredNode(*rev, n.parent().copied(), n.is_deleted(), n.body().cloned())
            })
            .collect();
        let mut out = Vec::new();
        ciborium::into_writer(&StoredDoc(RECORD_VERSION, seq, nodes), &mut out).unwrap();
        out
    }

    /// A tree with a long line, a deleted side branch and bodies of several sizes.
    fn sample_tree() -> RevTree {
        let mut tree = RevTree::new();
        let mut rev = Revision::first(false, Body::from_json_str(r#"{"n": 0}"#).unwrap()).unwrap();
        tree.insert(&rev).unwrap();
        for i in 1..30u32 {
            let text = "x".repeat(i as usize * 13);
            let body = Body::from_json_str(&format!(r#"{{"n": {i}, "t": "{text}"}}"#)).unwrap();
            let next = rev.child(false, body, 1000).unwrap();
            if i == 7 {
                tree.insert(&rev.child(true, Body::empty(), 1000).unwrap())
                    .unwrap();
            }
            tree.insert(&next).unwrap();
            rev = next;
        }
        tree.prune(20);
        tree
    }

    #[test]
    fn records_are_byte_for_byte_what_serde_and_ciborium_wrote() {
        let tree = sample_tree();
        for seq in [Seq(0), Seq(23), Seq(24), Seq(70_000), Seq(u64::MAX)] {
            let ours = DocRecord::encode(seq, &tree);
            assert_eq!(ours, serde_bytes(seq, &tree));
            let back = DocRecord::decode(b"k", &ours).unwrap();
            assert_eq!(
                back,
                DocRecord {
                    seq,
                    tree: tree.clone()
                }
            );
        }
        let others = tree.leaf_ids();
        for (id, others) in [("a", vec![]), ("user:42-ünï", others)] {
            let entry = SeqEntry(
                DocId::new(id).unwrap(),
                *tree.current().unwrap().0,
                true,
                others.clone(),
            );
            let mut theirs = Vec::new();
            ciborium::into_writer(
                &StoredSeq(entry.0.clone(), entry.1, entry.2, others),
                &mut theirs,
            )
            .unwrap();
            assert_eq!(entry.encode(), theirs);
            assert_eq!(SeqEntry::decode(b"k", &theirs).unwrap(), entry);
        }
    }

    /// The summary revs-diff reads agrees with the full decode on every record the full
    /// decode accepts, including damaged ones it still reads.
    fn assert_summary_agrees(bytes: &[u8]) {
        let Ok(full) = DocRecord::decode(b"k", bytes) else {
            return;
        };
        let summary = DocRecord::decode_revs(b"k", bytes).expect("the full decode read it");
        assert_eq!(summary.leaf_ids(), full.tree.leaf_ids());
        for (rev, node) in full.tree.nodes() {
            assert!(summary.contains(rev));
            if let Some(parent) = node.parent() {
                assert_eq!(summary.contains(parent), full.tree.contains(parent));
            }
        }
        assert_eq!(summary.nodes.len(), full.tree.len());
    }

    #[test]
    fn revision_summaries_match_full_decodes() {
        let tree = sample_tree();
        let bytes = DocRecord::encode(Seq(3), &tree);
        assert_summary_agrees(&bytes);
        let summary = DocRecord::decode_revs(b"k", &bytes).unwrap();
        assert_eq!(summary.leaf_ids().len(), 2);
        let unknown = Revision::first(false, Body::from_json_str("{}").unwrap()).unwrap();
        assert!(!summary.contains(&unknown.rev));
        // Structural damage is refused as the full decode refuses it.
        let r1 = Revision::first(false, Body::from_json_str(r#"{"a": 1}"#).unwrap()).unwrap();
        let r2 = r1
            .child(false, Body::from_json_str(r#"{"a": 2}"#).unwrap(), 20)
            .unwrap();
        let mut w = Writer::with_capacity(256);
        w.array(3);
        w.uint(u64::from(RECORD_VERSION));
        w.uint(1);
        w.array(2);
        for (rev, parent, body) in [(r1.rev, None, false), (r2.rev, Some(r1.rev), false)] {
            w.array(4);
            write_rev(&mut w, &rev);
            match parent {
                Some(p) => write_rev(&mut w, &p),
                None => w.null(),
            }
            w.bool(false);
            if body { w.bytes(b"x") } else { w.null() }
        }
        let leaf_without_body = w.into_vec();
        assert!(DocRecord::decode(b"k", &leaf_without_body).is_err());
        assert!(DocRecord::decode_revs(b"k", &leaf_without_body).is_err());
        let mut w = Writer::with_capacity(16);
        w.array(3);
        w.uint(u64::from(RECORD_VERSION));
        w.uint(1);
        w.array(0);
        assert!(DocRecord::decode_revs(b"k", &w.into_vec()).is_err());
    }

    #[test]
    fn damaged_records_are_errors_never_panics() {
        let tree = sample_tree();
        let good = DocRecord::encode(Seq(5), &tree);
        let entry = SeqEntry(
            DocId::new("doc").unwrap(),
            *tree.current().unwrap().0,
            false,
            tree.leaf_ids(),
        )
        .encode();
        // Every truncation, and single-byte changes at every position (deterministic).
        for bytes in [&good, &entry] {
            for cut in 0..bytes.len() {
                assert!(DocRecord::decode(b"k", &bytes[..cut]).is_err());
                assert!(DocRecord::decode_revs(b"k", &bytes[..cut]).is_err());
                assert!(SeqEntry::decode(b"k", &bytes[..cut]).is_err());
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..good.len() {
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut bad = good.clone();
                bad[i] = x as u8;
                // May decode (a changed body byte can still be a valid body); must not panic.
                let _ = DocRecord::decode(b"k", &bad);
                let _ = DocRecord::decode_revs(b"k", &bad);
                assert_summary_agrees(&bad);
                let mut bad = entry.clone();
                let j = i % bad.len();
                bad[j] = x as u8;
                let _ = SeqEntry::decode(b"k", &bad);
            }
        }
    }

    #[test]
    fn record_round_trip_and_corruption() {
        let r1 = Revision::first(false, Body::from_json_str(r#"{"a": 1}"#).unwrap()).unwrap();
        let r2 = r1.child(true, Body::empty(), 20).unwrap();
        let mut tree = RevTree::new();
        tree.insert(&r2).unwrap();
        let rec = DocRecord { seq: Seq(9), tree };
        let bytes = DocRecord::encode(rec.seq, &rec.tree);
        assert_eq!(DocRecord::decode(b"k", &bytes).unwrap(), rec);
        for cut in 0..bytes.len() {
            assert!(DocRecord::decode(b"k", &bytes[..cut]).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[0] ^= 0xff;
        assert!(matches!(
            DocRecord::decode(b"k", &flipped),
            Err(StorageError::Corrupt {
                what: "document",
                ..
            })
        ));
        let mut wrong_version = bytes;
        wrong_version[1] = 7;
        assert!(DocRecord::decode(b"k", &wrong_version).is_err());
    }
}
