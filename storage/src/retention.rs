//! Tombstone retention: a deleted document's tombstone is kept for a while so that peers
//! learn of the deletion, then forgotten — record, history and changes-feed entry — so a
//! database where documents come and go does not grow forever.
//!
//! Forgetting must not let a deleted document come back. A peer that last read this
//! database's changes feed *before* a tombstone it never saw was forgotten could still hold
//! the document alive, and nothing here would tell it otherwise. So each collection
//! remembers the highest sequence a forgotten tombstone had ([`Database::forgotten_through`]),
//! and its changes feed refuses a reader whose position is after 0 but before it
//! ([`StorageReply::DeletionsForgotten`](peerlite_proto::StorageReply::DeletionsForgotten)):
//! the replication stops with an error naming the cause and the way back, instead of
//! going on with an incomplete feed. A reader starting from 0 (a first sync, or one
//! started over) is not refused: it has no position to be behind.
//!
//! The store reads no clock. It learns the time when [`Database::forget_tombstones`] is
//! called (every `peerlite` command opening a database, the runtimes' timer, and
//! [`Database::compact`]) and keeps a few *sequence marks* — where each collection's feed
//! stood at a time. A tombstone is forgotten once a mark at least the retention old lies
//! past it: never early, and late by at most a sixty-fourth of the retention plus the time
//! between two calls.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use peerlite_proto::{Body, CollectionName, DocId, Seq};
//! use peerlite_storage::Database;
//!
//! let db = Database::in_memory()?;
//! let c = CollectionName::default();
//! let day = Duration::from_secs(86_400);
//! db.set_tombstone_retention(Some(7 * day))?;
//! let monday = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! db.forget_tombstones(monday)?; // the first call marks where the feed stands
//!
//! let draft = DocId::new("draft")?;
//! db.save(&c, &draft, Body::from_json_str("{}")?)?;
//! db.delete(&c, &draft, peerlite_storage::Expected::Any)?;
//! db.forget_tombstones(monday + day)?; // marks again: the tombstone is a day old
//! assert_eq!(db.forget_tombstones(monday + 7 * day)?, 0, "kept while it is younger than a week");
//! assert_eq!(db.forget_tombstones(monday + 8 * day)?, 1);
//! assert!(db.get_including_deleted(&c, &draft)?.is_none());
//! assert_eq!(db.forgotten_through(&c)?, Seq(2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::Bound;
use std::time::{Duration, SystemTime};

use peerlite_proto::{CollectionName, Seq};

use crate::database::Database;
use crate::keys::{self, CollectionId};
use crate::record::SeqEntry;
use crate::{Space, StorageError, WriteBatch};

/// How long a tombstone is kept when the database was given no retention: 30 days.
///
/// Couchbase Server forgets tombstones after its metadata purge interval (3 days by
/// default), and Sync Gateway's documentation asks for it to be set to the longest time a
/// client may stay offline; CouchDB and Couchbase Lite keep them until purged. A phone
/// left in a drawer over a holiday is ordinary, so Peerlite keeps a month; a peer away
/// longer is refused with a clear error rather than allowed to bring deletions back.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Tombstones forgotten per commit.
const FORGET_BATCH: usize = 1000;

/// Stored for "keep tombstones forever".
const FOREVER: u64 = u64::MAX;

fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn read_u64(what: &'static str, key: &[u8], value: &[u8]) -> Result<u64, StorageError> {
    Ok(u64::from_be_bytes(value.try_into().map_err(|_| {
        StorageError::corrupt(what, key, "not 8 bytes")
    })?))
}

/// Where each collection's feed stood: (collection id, last sequence) pairs.
type Positions = Vec<(CollectionId, Seq)>;

fn encode_positions(positions: &Positions) -> Vec<u8> {
    positions
        .iter()
        .flat_map(|(cid, seq)| [&cid.to_be_bytes()[..], &seq.0.to_be_bytes()].concat())
        .collect()
}

fn decode_positions(key: &[u8], value: &[u8]) -> Result<Positions, StorageError> {
    if !value.len().is_multiple_of(12) {
        return Err(StorageError::corrupt(
            "sequence mark",
            key,
            "not whole (collection, sequence) pairs",
        ));
    }
    Ok(value
        .chunks_exact(12)
        .map(|pair| {
            let (cid, seq) = pair.split_at(4);
            let cid = CollectionId::from_be_bytes([cid[0], cid[1], cid[2], cid[3]]);
            let mut s = [0u8; 8];
            s.copy_from_slice(seq);
            (cid, Seq(u64::from_be_bytes(s)))
        })
        .collect())
}

impl Database {
    /// How long tombstones are kept before [`Database::forget_tombstones`] forgets them
    /// (`None`: forever). [`DEFAULT_TOMBSTONE_RETENTION`] unless set otherwise.
    pub fn tombstone_retention(&self) -> Result<Option<Duration>, StorageError> {
        let key = keys::META_TOMBSTONE_RETENTION;
        match self.inner.kv.get(Space::Meta, key)? {
            None => Ok(Some(DEFAULT_TOMBSTONE_RETENTION)),
            Some(v) => match read_u64("tombstone retention", key, &v)? {
                FOREVER => Ok(None),
                ms => Ok(Some(Duration::from_millis(ms))),
            },
        }
    }

    /// Sets how long tombstones are kept (`None`: forever), for this database, durably.
    /// A peer that stays away longer than this and then syncs is refused (see the
    /// module documentation); `Some(Duration::ZERO)` forgets every tombstone at the next
    /// [`Database::forget_tombstones`].
    pub fn set_tombstone_retention(&self, retention: Option<Duration>) -> Result<(), StorageError> {
        let _w = self.lock_writer()?;
        let ms = retention.map_or(FOREVER, |d| millis(d).min(FOREVER - 1));
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Meta,
            keys::META_TOMBSTONE_RETENTION.to_vec(),
            ms.to_be_bytes().to_vec(),
        );
        self.inner.kv.commit(batch, self.inner.config.durability)?;
        Ok(())
    }

    /// The highest sequence a forgotten tombstone of this collection had ([`Seq::ZERO`]
    /// if none was forgotten): the collection's changes feed is complete only for readers
    /// at or past it (or starting from zero).
    pub fn forgotten_through(&self, collection: &CollectionName) -> Result<Seq, StorageError> {
        let state = self.collection(collection)?;
        self.forgotten_through_id(state.id)
    }

    fn forgotten_through_id(&self, cid: CollectionId) -> Result<Seq, StorageError> {
        let key = keys::forgotten_key(cid);
        match self.inner.kv.get(Space::Meta, &key)? {
            Some(v) => Ok(Seq(read_u64("forgotten sequence", &key, &v)?)),
            None => Ok(Seq::ZERO),
        }
    }

    /// Whether a reader of `collection`'s changes feed at `since` would miss deletions
    /// because their tombstones were forgotten: the sequence the feed is complete from,
    /// if so.
    pub(crate) fn feed_incomplete_after(
        &self,
        collection: &CollectionName,
        since: Seq,
    ) -> Result<Option<Seq>, StorageError> {
        if since == Seq::ZERO {
            return Ok(None);
        }
        let through = self.forgotten_through(collection)?;
        Ok((since < through).then_some(through))
    }

    /// Forgets the tombstones older than the retention at time `now`, a thousand per
    /// atomic commit, and returns how many. A forgotten tombstone leaves no record, no
    /// history and no changes-feed entry; only the collection's
    /// [`forgotten_through`](Database::forgotten_through) remembers that something was
    /// forgotten. Also records where the feeds stand at `now`, which is how later calls
    /// know the age of what is deleted from now on.
    pub fn forget_tombstones(&self, now: SystemTime) -> Result<u64, StorageError> {
        let Some(retention) = self.tombstone_retention()? else {
            return Ok(0);
        };
        let Some(eligible) = self.mark(to_millis(now), millis(retention))? else {
            return Ok(0);
        };
        let mut forgotten = 0;
        for (cid, upto) in eligible {
            forgotten += self.forget_up_to(cid, upto)?;
        }
        Ok(forgotten)
    }

    /// Records the feeds' positions at `now_ms` (unless a mark is recent enough) and drops
    /// the marks no longer needed; returns the positions tombstones may be forgotten up
    /// to: those of the newest mark at least `retention_ms` old.
    fn mark(&self, now_ms: u64, retention_ms: u64) -> Result<Option<Positions>, StorageError> {
        let _w = self.lock_writer()?;
        let current: Positions = self
            .read_catalog()?
            .collections
            .values()
            .map(|s| (s.id, s.last_seq))
            .collect();
        if retention_ms == 0 {
            return Ok(Some(current));
        }
        let mut marks = Vec::new();
        let rows = self.inner.kv.scan(
            Space::Meta,
            keys::prefix_range(keys::META_SEQ_MARK_PREFIX),
            usize::MAX,
        )?;
        for (k, v) in rows {
            marks.push((keys::seq_mark_time(&k)?, k, v));
        }
        let granularity = (retention_ms / 64).max(1000);
        let mut batch = WriteBatch::new();
        let newest = marks
            .iter()
            .map(|(t, _, _)| *t)
            .filter(|t| *t <= now_ms)
            .max();
        if newest.is_none_or(|t| t.saturating_add(granularity) <= now_ms) {
            batch.put(
                Space::Meta,
                keys::seq_mark_key(now_ms),
                encode_positions(&current),
            );
        }
        let cutoff = now_ms.saturating_sub(retention_ms);
        let eligible = marks
            .iter()
            .filter(|(t, _, _)| *t <= cutoff && now_ms >= retention_ms)
            .max_by_key(|(t, _, _)| *t);
        let positions = match eligible {
            Some((t, k, v)) => {
                // Older marks will never be the newest old-enough one again.
                for (older, key, _) in &marks {
                    if older < t {
                        batch.delete(Space::Meta, key.clone());
                    }
                }
                Some(decode_positions(k, v)?)
            }
            None => None,
        };
        self.inner.kv.commit(batch, self.inner.config.durability)?;
        Ok(positions)
    }

    /// Forgets the tombstones of collection `cid` with sequences up to `upto`.
    fn forget_up_to(&self, cid: CollectionId, upto: Seq) -> Result<u64, StorageError> {
        let mut forgotten = 0;
        loop {
            let _w = self.lock_writer()?;
            if !self
                .read_catalog()?
                .collections
                .values()
                .any(|s| s.id == cid)
            {
                return Ok(forgotten); // deleted meanwhile
            }
            let scanned_key = keys::forget_scanned_key(cid);
            let scanned = match self.inner.kv.get(Space::Meta, &scanned_key)? {
                Some(v) => Seq(read_u64("forget progress", &scanned_key, &v)?),
                None => Seq::ZERO,
            };
            if scanned >= upto {
                return Ok(forgotten);
            }
            let range = (
                Bound::Excluded(keys::seq_key(cid, scanned)),
                Bound::Included(keys::seq_key(cid, upto)),
            );
            let rows = self.inner.kv.scan(Space::Seq, range, FORGET_BATCH)?;
            let mut batch = WriteBatch::new();
            let mut through = self.forgotten_through_id(cid)?;
            for (k, v) in &rows {
                let seq = keys::seq_from_key(k)?;
                let SeqEntry(id, _, deleted, _) = SeqEntry::decode(k, v)?;
                if !deleted {
                    continue;
                }
                batch.delete(Space::Seq, k.clone());
                batch.delete(Space::Docs, keys::doc_key(cid, &id));
                self.stage_expiration_removal(&mut batch, cid, &id)?;
                through = through.max(seq);
                forgotten += 1;
            }
            let reached = match rows.last() {
                Some((k, _)) if rows.len() == FORGET_BATCH => keys::seq_from_key(k)?,
                _ => upto,
            };
            batch.put(Space::Meta, scanned_key, reached.0.to_be_bytes().to_vec());
            batch.put(
                Space::Meta,
                keys::forgotten_key(cid),
                through.0.to_be_bytes().to_vec(),
            );
            self.inner.kv.commit(batch, self.inner.config.durability)?;
        }
    }
}
