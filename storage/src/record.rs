//! Encoding of stored records (CBOR, versioned).

use peerlite_proto::{Body, DocId, RevId, RevNode, RevTree, Seq};

use crate::StorageError;

/// Version of the document record layout.
pub(crate) const RECORD_VERSION: u8 = 1;

/// A document as stored: its sequence and revision tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DocRecord {
    pub(crate) seq: Seq,
    pub(crate) tree: RevTree,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredNode(RevId, Option<RevId>, bool, Option<Body>);

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredDoc(u8, Seq, Vec<StoredNode>);

impl DocRecord {
    /// Encodes a record from its parts (no tree is cloned into a `DocRecord` to write it).
    pub(crate) fn encode(seq: Seq, tree: &RevTree) -> Vec<u8> {
        let nodes = tree
            .nodes()
            .map(|(rev, n)| {
                StoredNode(*rev, n.parent().copied(), n.is_deleted(), n.body().cloned())
            })
            .collect();
        let mut out = Vec::with_capacity(128);
        // Writing CBOR into a Vec cannot fail.
        let _ = ciborium::into_writer(&StoredDoc(RECORD_VERSION, seq, nodes), &mut out);
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<DocRecord, StorageError> {
        let StoredDoc(version, seq, nodes) =
            ciborium::de::from_reader_with_recursion_limit(bytes, 96)
                .map_err(|e| StorageError::corrupt("document", key, e))?;
        if version != RECORD_VERSION {
            return Err(StorageError::corrupt(
                "document",
                key,
                format!("record version {version}, expected {RECORD_VERSION}"),
            ));
        }
        let tree = RevTree::from_nodes(nodes.into_iter().map(
            |StoredNode(rev, parent, deleted, body)| (rev, RevNode::new(parent, deleted, body)),
        ))
        .map_err(|e| StorageError::corrupt("document", key, e))?;
        if tree.is_empty() {
            return Err(StorageError::corrupt("document", key, "no revisions"));
        }
        Ok(DocRecord { seq, tree })
    }
}

/// One entry of the changes feed as stored: enough to list a change without reading the
/// document record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SeqEntry(
    pub(crate) DocId,
    pub(crate) RevId,
    pub(crate) bool,
    /// The document's other leaves (closed branches).
    pub(crate) Vec<RevId>,
);

impl SeqEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<SeqEntry, StorageError> {
        ciborium::de::from_reader_with_recursion_limit(bytes, 8)
            .map_err(|e| StorageError::corrupt("sequence", key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlite_proto::Revision;

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
