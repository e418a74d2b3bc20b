//! The benchmark's data set and the checks on it, shared by both processes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerlite_proto::{CollectionName, DocId};
use peerlite_storage::{ChangeOrigin, Database, ListenerToken, StorageError, sample};
use sha2::{Digest, Sha256};

/// Documents saved per batch when a peer loads the data set.
pub(crate) const LOAD_BATCH: u64 = 1000;

/// Saves sample documents `range` in batches of [`LOAD_BATCH`]; returns the time spent
/// inside `save_batch` (document generation excluded).
pub(crate) fn load(
    db: &Database,
    collection: &CollectionName,
    range: Range<u64>,
    seed: u32,
) -> Result<Duration, StorageError> {
    let mut saving = Duration::ZERO;
    let mut start = range.start;
    while start < range.end {
        let end = (start + LOAD_BATCH).min(range.end);
        let docs: Vec<_> = (start..end).map(|i| sample::document(i, seed)).collect();
        let t = Instant::now();
        db.save_batch(collection, docs)?;
        saving += t.elapsed();
        start = end;
    }
    Ok(saving)
}

/// The `count` document numbers of a `total`-document set that an "x% changed" step
/// edits: spread evenly, starting at `offset` (so two peers can edit disjoint sets).
pub(crate) fn edit_indices(count: u64, total: u64, offset: u64) -> impl Iterator<Item = u64> {
    let stride = total.checked_div(count).unwrap_or(1).max(1);
    (0..count)
        .map(move |j| j * stride + offset % stride)
        .filter(move |i| *i < total)
}

/// Saves edit `round` of `count` documents spread over `total`, in batches of
/// [`LOAD_BATCH`] (so that the bench's own batches do not set a process's peak memory).
pub(crate) fn edit(
    db: &Database,
    collection: &CollectionName,
    count: u64,
    total: u64,
    offset: u64,
    seed: u32,
    round: u32,
) -> Result<(), StorageError> {
    let mut indices = edit_indices(count, total, offset).peekable();
    while indices.peek().is_some() {
        let docs: Vec<_> = indices
            .by_ref()
            .take(LOAD_BATCH as usize)
            .map(|i| sample::edited_document(i, seed, round))
            .collect();
        db.save_batch(collection, docs)?;
    }
    Ok(())
}

/// Number of live documents and a SHA-256 over every document's ID, current revision
/// and deletion flag, in ID order: equal digests mean equal databases.
pub(crate) fn digest(
    db: &Database,
    collection: &CollectionName,
) -> Result<(u64, String), StorageError> {
    let mut h = Sha256::new();
    let mut count = 0u64;
    let mut after: Option<DocId> = None;
    loop {
        let page = db.documents(collection, after.as_ref(), 1000)?;
        for d in &page.documents {
            h.update(d.id.as_str().as_bytes());
            h.update([0]);
            h.update(d.rev.to_string().as_bytes());
            h.update([u8::from(d.deleted)]);
            count += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((count, hex))
}

/// The ID of live-latency write `i` made on side `side` ("push": the replicator's
/// database, "pull": the listener's).
pub(crate) fn live_id(side: &'static str, i: u64) -> DocId {
    // Always valid: `side` is "push" or "pull", so the ID is short ASCII.
    DocId::new(format!("live-{side}-{i:06}")).unwrap_or_else(|_| unreachable!())
}

/// Saves live-latency write `i`; returns the wall-clock time just before the save, in
/// nanoseconds since the Unix epoch (both processes read the same clock).
pub(crate) fn live_write(
    db: &Database,
    collection: &CollectionName,
    side: &'static str,
    i: u64,
    seed: u32,
) -> Result<u128, StorageError> {
    let id = live_id(side, i);
    let (_, body) = sample::document(i, seed);
    let t0 = unix_nanos();
    db.save(collection, &id, body)?;
    Ok(t0)
}

/// When each live-latency write made on side `side` arrived here by replication:
/// write number → Unix nanoseconds. Returns the listener token and the shared map.
pub(crate) fn watch_live(
    db: &Database,
    side: &'static str,
) -> (ListenerToken, Arc<Mutex<BTreeMap<u64, u128>>>) {
    let arrived: Arc<Mutex<BTreeMap<u64, u128>>> = Arc::default();
    let seen = arrived.clone();
    let prefix = format!("live-{side}-");
    let token = db.add_change_listener(move |notices| {
        let now = unix_nanos();
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for n in notices
            .iter()
            .filter(|n| n.origin == ChangeOrigin::Replicated)
        {
            if let Some(i) = n.doc_id.as_str().strip_prefix(prefix.as_str())
                && let Ok(i) = i.parse()
            {
                seen.entry(i).or_insert(now);
            }
        }
    });
    (token, arrived)
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_indices_spread_and_stay_in_range() {
        let v: Vec<u64> = edit_indices(10, 1000, 0).collect();
        assert_eq!(v, (0..10).map(|j| j * 100).collect::<Vec<_>>());
        let w: Vec<u64> = edit_indices(10, 1000, 50).collect();
        assert!(v.iter().all(|i| !w.contains(i)));
        assert_eq!(edit_indices(5, 3, 0).count(), 3);
        assert_eq!(edit_indices(0, 3, 0).count(), 0);
    }

    #[test]
    fn digest_tells_databases_apart() {
        let c = CollectionName::default();
        let (a, b) = (
            Database::in_memory().unwrap(),
            Database::in_memory().unwrap(),
        );
        load(&a, &c, 0..2500, 9).unwrap();
        load(&b, &c, 0..2500, 9).unwrap();
        let (n, da) = digest(&a, &c).unwrap();
        assert_eq!(n, 2500);
        assert_eq!(digest(&b, &c).unwrap().1, da);
        edit(&b, &c, 1, 2500, 7, 9, 1).unwrap();
        assert_ne!(digest(&b, &c).unwrap().1, da);
    }
}
