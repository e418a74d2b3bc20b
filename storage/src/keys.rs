//! Key layouts of the keyspaces.
//!
//! - `docs`: collection id (u32 BE) ‖ document ID bytes
//! - `seq`:  collection id (u32 BE) ‖ sequence (u64 BE), so a range scan is the changes feed
//! - `local`: local document ID bytes
//! - `meta`: `format`, `uuid`, `coll/<scope.name>` → id, `lastseq/<id BE>` → u64 BE,
//!   `blob/<digest>` → content type

use std::ops::Bound;

use peerlite_proto::{DocId, Seq};

use crate::StorageError;

/// Compact identifier of a collection inside one database.
pub(crate) type CollectionId = u32;

/// Collection ids run from 1 up to (excluding) this, so `id + 1` bounds every range.
pub(crate) const MAX_COLLECTION_ID: CollectionId = u32::MAX - 1;

pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_UUID: &[u8] = b"uuid";
pub(crate) const META_COLLECTION_PREFIX: &[u8] = b"coll/";
const META_LAST_SEQ_PREFIX: &[u8] = b"lastseq/";
/// The last sequence of a deleted collection, by name: a collection created again under
/// that name continues after it, so peers' checkpoints never skip its new changes.
const META_RETIRED_SEQ_PREFIX: &[u8] = b"retiredseq/";
const META_BLOB_PREFIX: &[u8] = b"blob/";

/// The content type of blob `digest`: `blob/` ‖ its 32 bytes.
pub(crate) fn blob_meta_key(digest: &peerlite_proto::BlobDigest) -> Vec<u8> {
    [META_BLOB_PREFIX, digest.as_bytes()].concat()
}

pub(crate) fn doc_key(cid: CollectionId, id: &DocId) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + id.as_str().len());
    k.extend_from_slice(&cid.to_be_bytes());
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

pub(crate) fn doc_id_from_key(key: &[u8]) -> Result<DocId, StorageError> {
    let id = key
        .get(4..)
        .ok_or_else(|| StorageError::corrupt("document", key, "key too short"))?;
    DocId::from_bytes(id).map_err(|e| StorageError::corrupt("document", key, e))
}

pub(crate) fn seq_key(cid: CollectionId, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&cid.to_be_bytes());
    k.extend_from_slice(&seq.0.to_be_bytes());
    k
}

pub(crate) fn seq_from_key(key: &[u8]) -> Result<Seq, StorageError> {
    let bytes: [u8; 8] = key
        .get(4..12)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StorageError::corrupt("sequence", key, "key is not 12 bytes"))?;
    Ok(Seq(u64::from_be_bytes(bytes)))
}

/// All keys of one collection in `docs` or `seq`.
pub(crate) fn collection_range(cid: CollectionId) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(cid.to_be_bytes().to_vec()),
        Bound::Excluded(cid.saturating_add(1).to_be_bytes().to_vec()),
    )
}

/// Keys of one collection's documents after `after` (exclusive), or all of them.
pub(crate) fn docs_after(
    cid: CollectionId,
    after: Option<&DocId>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (start, end) = collection_range(cid);
    match after {
        Some(id) => (Bound::Excluded(doc_key(cid, id)), end),
        None => (start, end),
    }
}

/// The changes feed of one collection after `since` (exclusive).
pub(crate) fn seq_after(cid: CollectionId, since: Seq) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (_, end) = collection_range(cid);
    (Bound::Excluded(seq_key(cid, since)), end)
}

pub(crate) fn collection_meta_key(name: &str) -> Vec<u8> {
    [META_COLLECTION_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn retired_seq_meta_key(name: &str) -> Vec<u8> {
    [META_RETIRED_SEQ_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn last_seq_meta_key(cid: CollectionId) -> Vec<u8> {
    [META_LAST_SEQ_PREFIX, &cid.to_be_bytes()].concat()
}

/// A document's expiration: collection id ‖ document ID → milliseconds since the epoch.
pub(crate) const META_EXPIRES_PREFIX: &[u8] = b"expires/";
/// Expirations in time order: milliseconds (big-endian) ‖ collection id ‖ document ID.
pub(crate) const META_EXPIRY_QUEUE_PREFIX: &[u8] = b"expiryq/";

pub(crate) fn expires_key(cid: CollectionId, id: &DocId) -> Vec<u8> {
    [META_EXPIRES_PREFIX, &doc_key(cid, id)].concat()
}

/// The expirations of one collection's documents.
pub(crate) fn expires_range(cid: CollectionId) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included([META_EXPIRES_PREFIX, &cid.to_be_bytes()].concat()),
        Bound::Excluded([META_EXPIRES_PREFIX, &cid.saturating_add(1).to_be_bytes()].concat()),
    )
}

pub(crate) fn expiry_queue_key(at_ms: u64, cid: CollectionId, id: &DocId) -> Vec<u8> {
    [
        META_EXPIRY_QUEUE_PREFIX,
        &at_ms.to_be_bytes(),
        &doc_key(cid, id),
    ]
    .concat()
}

/// The time, collection id and document of an expiry-queue key.
pub(crate) fn expiry_from_queue_key(
    key: &[u8],
) -> Result<(u64, CollectionId, DocId), StorageError> {
    let rest = key
        .strip_prefix(META_EXPIRY_QUEUE_PREFIX)
        .filter(|r| r.len() > 12)
        .ok_or_else(|| StorageError::corrupt("expiry", key, "key too short"))?;
    let (at, doc) = rest.split_at(8);
    let at = u64::from_be_bytes(
        at.try_into()
            .map_err(|_| StorageError::corrupt("expiry", key, "bad time"))?,
    );
    let cid = CollectionId::from_be_bytes(
        doc[..4]
            .try_into()
            .map_err(|_| StorageError::corrupt("expiry", key, "bad collection"))?,
    );
    Ok((at, cid, doc_id_from_key(doc)?))
}

/// Tombstone retention, in seconds (absent: the default; `u64::MAX`: forever).
pub(crate) const META_TOMBSTONE_RETENTION: &[u8] = b"tombretention";
/// Sequence marks: milliseconds since the epoch (BE) → (collection id BE, last sequence BE)
/// pairs, the position of every collection's feed at that time.
pub(crate) const META_SEQ_MARK_PREFIX: &[u8] = b"seqmark/";
/// The highest sequence a forgotten tombstone had, per collection id (BE) → u64 BE.
const META_FORGOTTEN_PREFIX: &[u8] = b"forgot/";
/// How far the feed of a collection was scanned for tombstones to forget.
const META_FORGET_SCANNED_PREFIX: &[u8] = b"forgotscan/";

pub(crate) fn seq_mark_key(at_ms: u64) -> Vec<u8> {
    [META_SEQ_MARK_PREFIX, &at_ms.to_be_bytes()].concat()
}

/// The time of a sequence-mark key.
pub(crate) fn seq_mark_time(key: &[u8]) -> Result<u64, StorageError> {
    key.strip_prefix(META_SEQ_MARK_PREFIX)
        .and_then(|t| t.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::corrupt("sequence mark", key, "key is not 16 bytes"))
}

pub(crate) fn forgotten_key(cid: CollectionId) -> Vec<u8> {
    [META_FORGOTTEN_PREFIX, &cid.to_be_bytes()].concat()
}

pub(crate) fn forget_scanned_key(cid: CollectionId) -> Vec<u8> {
    [META_FORGET_SCANNED_PREFIX, &cid.to_be_bytes()].concat()
}

pub(crate) fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    // Prefixes used here are ASCII and end in '/', so incrementing the last byte is safe.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (Bound::Included(prefix.to_vec()), Bound::Excluded(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_collection_then_sequence() {
        let a = seq_key(1, Seq(2));
        let b = seq_key(1, Seq(256));
        let c = seq_key(2, Seq(1));
        assert!(a < b && b < c);
        assert_eq!(seq_from_key(&b).unwrap(), Seq(256));
        let (lo, hi) = collection_range(1);
        assert_eq!(lo, Bound::Included(vec![0, 0, 0, 1]));
        assert_eq!(hi, Bound::Excluded(vec![0, 0, 0, 2]));
    }

    #[test]
    fn doc_keys_round_trip() {
        let id = DocId::new("user:1").unwrap();
        assert_eq!(doc_id_from_key(&doc_key(7, &id)).unwrap(), id);
        assert!(doc_id_from_key(&[0, 0]).is_err());
        assert!(seq_from_key(&[0, 0, 0, 1, 0]).is_err());
    }
}
