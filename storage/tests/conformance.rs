//! One behaviour suite, run against the fjall backend and the in-memory backend.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use peerlite_proto::{
    Blob, BlobDigest, Body, CollectionName, DocId, RevId, Revision, RevisionError, Seq,
};
use peerlite_storage::{
    CachedKv, ChangeOrigin, Database, DatabaseConfig, DatabaseUuid, Durability, Expected,
    FileBlobs, FjallKv, InsertMode, InsertOutcome, KvBackend, MemBlobs, MemKv, NotifyWhen,
    RevisionInsert, RevsDiff, Space, StorageError, WriteBatch,
};
use proptest::prelude::*;

/// A backend under test: can open, reopen and reach the raw key-value store.
trait Harness {
    fn open(&mut self) -> Database;
    fn kv(&self) -> Arc<dyn KvBackend>;
}

/// fjall behind the record cache, as `Database::open` sets it up.
struct FjallHarness {
    dir: tempfile::TempDir,
    kv: Option<Arc<CachedKv<FjallKv>>>,
    config: DatabaseConfig,
}

impl FjallHarness {
    fn new(config: DatabaseConfig) -> Self {
        FjallHarness {
            dir: tempfile::tempdir().unwrap(),
            kv: None,
            config,
        }
    }
}

impl Harness for FjallHarness {
    fn open(&mut self) -> Database {
        // Drop the previous handle first: fjall locks its directory.
        self.kv = None;
        let cache = DatabaseConfig::default().memory.record_cache_bytes as usize;
        let kv = Arc::new(CachedKv::new(
            FjallKv::open(self.dir.path()).unwrap(),
            cache,
        ));
        self.kv = Some(kv.clone());
        let blobs = Arc::new(FileBlobs::open(self.dir.path().join("blobs")).unwrap());
        Database::with_stores(kv, blobs, self.config.clone()).unwrap()
    }
    fn kv(&self) -> Arc<dyn KvBackend> {
        self.kv.clone().unwrap()
    }
}

struct MemHarness {
    kv: Arc<MemKv>,
    blobs: MemBlobs,
    config: DatabaseConfig,
}

impl MemHarness {
    fn new(config: DatabaseConfig) -> Self {
        MemHarness {
            kv: Arc::new(MemKv::new()),
            blobs: MemBlobs::new(),
            config,
        }
    }
}

impl Harness for MemHarness {
    fn open(&mut self) -> Database {
        let blobs = Arc::new(self.blobs.clone());
        Database::with_stores(self.kv.clone(), blobs, self.config.clone()).unwrap()
    }
    fn kv(&self) -> Arc<dyn KvBackend> {
        self.kv.clone()
    }
}

/// The in-memory backend behind a record cache small enough to evict all the time.
struct CachedHarness {
    kv: Arc<CachedKv<MemKv>>,
    blobs: MemBlobs,
    config: DatabaseConfig,
}

impl CachedHarness {
    fn new(config: DatabaseConfig) -> Self {
        CachedHarness {
            kv: Arc::new(CachedKv::new(MemKv::new(), 2 << 10)),
            blobs: MemBlobs::new(),
            config,
        }
    }
}

impl Harness for CachedHarness {
    fn open(&mut self) -> Database {
        let blobs = Arc::new(self.blobs.clone());
        Database::with_stores(self.kv.clone(), blobs, self.config.clone()).unwrap()
    }
    fn kv(&self) -> Arc<dyn KvBackend> {
        self.kv.clone()
    }
}

fn body(json: &str) -> Body {
    Body::from_json_str(json).unwrap()
}

fn id(s: &str) -> DocId {
    DocId::new(s).unwrap()
}

fn dc() -> CollectionName {
    CollectionName::default()
}

/// Instantiates each listed test for both backends, and for memory behind a record cache.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod fjall_backend {
            $( #[test] fn $name() { super::$name(&mut super::FjallHarness::new(Default::default())); } )*
        }
        mod memory_backend {
            $( #[test] fn $name() { super::$name(&mut super::MemHarness::new(Default::default())); } )*
        }
        mod cached_memory_backend {
            $( #[test] fn $name() { super::$name(&mut super::CachedHarness::new(Default::default())); } )*
        }
    };
}

conformance!(
    blobs_are_saved_once_read_back_and_listed,
    documents_refer_only_to_blobs_present,
    replicated_revisions_need_their_blobs,
    blob_writers_check_what_they_were_promised,
    suspended_transfers_resume_where_they_stopped,
    compaction_removes_only_unreferenced_blobs,
    save_get_and_optimistic_concurrency,
    delete_makes_tombstones_and_recreate_extends_them,
    changes_feed_orders_by_sequence_and_keeps_one_entry_per_doc,
    reopen_keeps_documents_sequences_uuid_and_collections,
    collections_are_separate,
    purge_removes_everything_and_never_reuses_sequences,
    deleting_a_collection_removes_it_whole_and_a_new_one_continues_its_sequence,
    expired_documents_are_purged_at_the_time_given_and_not_before,
    a_save_and_its_expiration_commit_together,
    tombstones_older_than_the_retention_are_forgotten_and_the_feed_refuses_readers_behind,
    local_documents,
    listeners_see_local_and_replicated_changes,
    visible_listeners_hear_first_and_can_read_the_change,
    revs_diff_and_get_revision,
    writes_after_revs_diff_are_read_fresh,
    insert_accepts_extensions_and_refuses_conflicts,
    insert_deletion_rules,
    insert_bundle_that_closes_a_branch,
    guarded_insert_writes_a_resolution_atomically,
    insert_rejects_invalid_revisions_without_writing,
    insert_many_documents_in_one_call,
    documents_pages_skip_tombstones,
    corrupt_records_are_typed_errors,
    revision_trees_are_pruned,
    save_batch_is_atomic,
    saving_the_same_body_is_a_no_op,
    execute_runs_every_operation,
);

/// Saving the body a document already has writes nothing: no revision, no sequence, no
/// change notice (so nothing replicates); a different body, a deletion, or saving over a
/// tombstone still writes.
fn saving_the_same_body_is_a_no_op(h: &mut dyn Harness) {
    let db = h.open();
    let heard = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = heard.clone();
    db.add_change_listener(move |n| {
        counter.fetch_add(n.len(), std::sync::atomic::Ordering::SeqCst);
    });
    let w1 = db.save(&dc(), &id("a"), body(r#"{"v": 1}"#)).unwrap();
    db.save(&dc(), &id("b"), body(r#"{"v": 1}"#)).unwrap();
    assert!(w1.changed);
    let again = db.save(&dc(), &id("a"), body(r#"{"v": 1}"#)).unwrap();
    assert_eq!(
        (again.rev, again.seq, again.changed),
        (w1.rev, w1.seq, false)
    );
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(2));
    // In a batch: unchanged documents stay as they are, changed ones are written.
    let results = db
        .save_batch(
            &dc(),
            [
                (id("a"), body(r#"{"v": 1}"#)),
                (id("b"), body(r#"{"v": 2}"#)),
            ],
        )
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.changed).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(results[0].seq, Seq(1));
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(3));
    let changes = db.changes(&dc(), Seq::ZERO, 10).unwrap();
    assert_eq!(
        changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [Seq(1), Seq(3)]
    );
    assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 3);
    // A deleted document saved with its old body is re-created.
    db.delete(&dc(), &id("a"), Expected::Any).unwrap();
    let back = db.save(&dc(), &id("a"), body(r#"{"v": 1}"#)).unwrap();
    assert!(back.changed && back.rev.generation() == 3);
}

fn save_get_and_optimistic_concurrency(h: &mut dyn Harness) {
    let db = h.open();
    let a = id("a");
    assert_eq!(db.get(&dc(), &a).unwrap(), None);
    let w1 = db.save(&dc(), &a, body(r#"{"v": 1}"#)).unwrap();
    assert_eq!(w1.rev.generation(), 1);
    assert_eq!(w1.seq, Seq(1));
    let doc = db.get(&dc(), &a).unwrap().unwrap();
    assert_eq!(
        (doc.rev, doc.deleted, doc.sequence),
        (w1.rev, false, Seq(1))
    );
    assert_eq!(doc.body, body(r#"{"v": 1}"#));

    let w2 = db
        .save_with(&dc(), &a, body(r#"{"v": 2}"#), Expected::Rev(w1.rev))
        .unwrap();
    assert_eq!(w2.rev.generation(), 2);
    // A save based on the stale revision is refused and changes nothing.
    let err = db
        .save_with(&dc(), &a, body(r#"{"v": 3}"#), Expected::Rev(w1.rev))
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::Conflict {
            doc_id: a.clone(),
            current: Some(w2.rev)
        }
    );
    assert_eq!(db.get(&dc(), &a).unwrap().unwrap().rev, w2.rev);
    assert!(matches!(
        db.save_with(&dc(), &a, body("{}"), Expected::Missing),
        Err(StorageError::Conflict { .. })
    ));
    assert!(matches!(
        db.save_with(&dc(), &id("new"), body("{}"), Expected::Rev(w1.rev)),
        Err(StorageError::Conflict { current: None, .. })
    ));
    db.save_with(&dc(), &id("new"), body("{}"), Expected::Missing)
        .unwrap();
    // Identical content on the same parent gives the same revision ID on any database.
    let other = Database::in_memory().unwrap();
    assert_eq!(
        other.save(&dc(), &a, body(r#"{"v": 1}"#)).unwrap().rev,
        w1.rev
    );
}

fn delete_makes_tombstones_and_recreate_extends_them(h: &mut dyn Harness) {
    let db = h.open();
    let a = id("a");
    assert!(matches!(
        db.delete(&dc(), &a, Expected::Any),
        Err(StorageError::NotFound { .. })
    ));
    let w1 = db.save(&dc(), &a, body(r#"{"v": 1}"#)).unwrap();
    let del = db.delete(&dc(), &a, Expected::Rev(w1.rev)).unwrap();
    assert_eq!(del.rev.generation(), 2);
    assert_eq!(db.get(&dc(), &a).unwrap(), None);
    let tomb = db.get_including_deleted(&dc(), &a).unwrap().unwrap();
    assert!(tomb.deleted);
    assert_eq!(tomb.rev, del.rev);
    assert!(matches!(
        db.delete(&dc(), &a, Expected::Any),
        Err(StorageError::NotFound { .. })
    ));
    let again = db
        .save_with(&dc(), &a, body(r#"{"v": "back"}"#), Expected::Missing)
        .unwrap();
    assert_eq!(again.rev.generation(), 3);
    let tree = db.rev_tree(&dc(), &a).unwrap().unwrap();
    assert!(tree.descends_from(&again.rev, &del.rev));
}

fn changes_feed_orders_by_sequence_and_keeps_one_entry_per_doc(h: &mut dyn Harness) {
    let db = h.open();
    for i in 0..10 {
        db.save(
            &dc(),
            &id(&format!("d{i}")),
            body(&format!(r#"{{"i": {i}}}"#)),
        )
        .unwrap();
    }
    // Update d3 and delete d5: they move to the end of the feed.
    let w = db.save(&dc(), &id("d3"), body(r#"{"i": 33}"#)).unwrap();
    let d = db.delete(&dc(), &id("d5"), Expected::Any).unwrap();
    assert_eq!((w.seq, d.seq), (Seq(11), Seq(12)));
    let all = db.changes(&dc(), Seq::ZERO, 100).unwrap();
    assert_eq!(all.len(), 10);
    let seqs: Vec<u64> = all.iter().map(|c| c.seq.0).collect();
    assert_eq!(seqs, vec![1, 2, 3, 5, 7, 8, 9, 10, 11, 12]);
    assert_eq!(all[8].doc_id, id("d3"));
    assert_eq!(all[8].rev, w.rev);
    assert!(all[9].deleted);
    let page = db.changes(&dc(), Seq(5), 3).unwrap();
    assert_eq!(
        page.iter().map(|c| c.seq.0).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    assert!(db.changes(&dc(), Seq(12), 10).unwrap().is_empty());
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(12));
}

fn reopen_keeps_documents_sequences_uuid_and_collections(h: &mut dyn Harness) {
    let c: CollectionName = "s.c".parse().unwrap();
    let (uuid, rev) = {
        let db = h.open();
        db.create_collection(&c).unwrap();
        db.save(&c, &id("x"), body(r#"{"k": "v"}"#)).unwrap();
        let w = db.save(&c, &id("x"), body(r#"{"k": "w"}"#)).unwrap();
        db.put_local("checkpoint", b"\x01\x02").unwrap();
        (db.uuid(), w.rev)
    };
    let db = h.open();
    assert_eq!(db.uuid(), uuid);
    assert!(db.has_collection(&c).unwrap());
    let doc = db.get(&c, &id("x")).unwrap().unwrap();
    assert_eq!((doc.rev, doc.sequence), (rev, Seq(2)));
    assert_eq!(db.last_sequence(&c).unwrap(), Seq(2));
    assert_eq!(db.get_local("checkpoint").unwrap(), Some(vec![1, 2]));
    // Sequences continue where they stopped.
    assert_eq!(db.save(&c, &id("y"), body("{}")).unwrap().seq, Seq(3));
}

fn collections_are_separate(h: &mut dyn Harness) {
    let db = h.open();
    let a: CollectionName = "app.a".parse().unwrap();
    let b: CollectionName = "app.b".parse().unwrap();
    assert_eq!(
        db.save(&a, &id("x"), body("{}")),
        Err(StorageError::NoSuchCollection(a.clone()))
    );
    db.create_collection(&a).unwrap();
    db.create_collection(&a).unwrap();
    db.create_collection(&b).unwrap();
    assert_eq!(db.collections().unwrap(), vec![dc(), a.clone(), b.clone()]);
    db.save(&a, &id("x"), body(r#"{"in": "a"}"#)).unwrap();
    db.save(&a, &id("y"), body(r#"{"in": "a"}"#)).unwrap();
    db.save(&b, &id("x"), body(r#"{"in": "b"}"#)).unwrap();
    assert_eq!(
        db.get(&b, &id("x")).unwrap().unwrap().body.to_json()["in"],
        "b"
    );
    assert_eq!(db.get(&dc(), &id("x")).unwrap(), None);
    assert_eq!(db.changes(&a, Seq::ZERO, 10).unwrap().len(), 2);
    assert_eq!(db.changes(&b, Seq::ZERO, 10).unwrap().len(), 1);
    assert_eq!(db.last_sequence(&b).unwrap(), Seq(1));
}

fn purge_removes_everything_and_never_reuses_sequences(h: &mut dyn Harness) {
    {
        let db = h.open();
        db.save(&dc(), &id("a"), body("{}")).unwrap();
        db.save(&dc(), &id("b"), body("{}")).unwrap();
        assert!(db.purge(&dc(), &id("b")).unwrap());
        assert!(!db.purge(&dc(), &id("b")).unwrap());
        assert_eq!(db.rev_tree(&dc(), &id("b")).unwrap(), None);
        assert_eq!(db.changes(&dc(), Seq::ZERO, 10).unwrap().len(), 1);
    }
    let db = h.open();
    // b had sequence 2, the highest; it must not be handed out again.
    assert_eq!(db.save(&dc(), &id("c"), body("{}")).unwrap().seq, Seq(3));
}

fn deleting_a_collection_removes_it_whole_and_a_new_one_continues_its_sequence(
    h: &mut dyn Harness,
) {
    let notes: CollectionName = "app.notes".parse().unwrap();
    let other: CollectionName = "app.other".parse().unwrap();
    {
        let db = h.open();
        db.create_collection(&notes).unwrap();
        db.create_collection(&other).unwrap();
        for i in 0..2500 {
            db.save(&notes, &id(&format!("n{i}")), body("{}")).unwrap();
        }
        db.delete(&notes, &id("n7"), peerlite_storage::Expected::Any)
            .unwrap();
        db.save(&other, &id("n1"), body(r#"{"kept": true}"#))
            .unwrap();
        db.save(&dc(), &id("d"), body("{}")).unwrap();
        assert_eq!(
            db.delete_collection(&notes).unwrap(),
            2500,
            "tombstones count"
        );
        assert_eq!(
            db.delete_collection(&notes),
            Err(StorageError::NoSuchCollection(notes.clone()))
        );
        assert_eq!(
            db.delete_collection(&dc()),
            Err(StorageError::DefaultCollection)
        );
        assert_eq!(db.collections().unwrap(), vec![dc(), other.clone()]);
    }
    let db = h.open();
    assert_eq!(db.collections().unwrap(), vec![dc(), other.clone()]);
    assert!(db.get(&other, &id("n1")).unwrap().is_some());
    assert!(db.get(&dc(), &id("d")).unwrap().is_some());
    // Created again: empty, and its sequence goes on after the deleted one's 2,501.
    db.create_collection(&notes).unwrap();
    assert_eq!(db.get(&notes, &id("n1")).unwrap(), None);
    assert!(db.changes(&notes, Seq::ZERO, 10).unwrap().is_empty());
    assert_eq!(
        db.save(&notes, &id("new"), body("{}")).unwrap().seq,
        Seq(2502)
    );
    drop(db);
    let db = h.open();
    assert_eq!(db.changes(&notes, Seq::ZERO, 10).unwrap().len(), 1);
    assert_eq!(
        db.save(&notes, &id("newer"), body("{}")).unwrap().seq,
        Seq(2503)
    );
}

fn expired_documents_are_purged_at_the_time_given_and_not_before(h: &mut dyn Harness) {
    use std::time::{Duration, SystemTime};
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let notes: CollectionName = "app.notes".parse().unwrap();
    {
        let db = h.open();
        db.create_collection(&notes).unwrap();
        assert_eq!(
            db.set_expiration(&dc(), &id("ghost"), Some(at(1))),
            Err(StorageError::NotFound {
                collection: dc(),
                doc_id: id("ghost")
            })
        );
        for i in 0..2500 {
            db.save(&dc(), &id(&format!("e{i}")), body("{}")).unwrap();
            db.set_expiration(&dc(), &id(&format!("e{i}")), Some(at(100)))
                .unwrap();
        }
        db.save(&dc(), &id("keep"), body("{}")).unwrap();
        db.save(&dc(), &id("later"), body("{}")).unwrap();
        db.set_expiration(&dc(), &id("later"), Some(at(10)))
            .unwrap();
        db.set_expiration(&dc(), &id("later"), Some(at(200)))
            .unwrap();
        // An update and a deletion keep the expiration; a tombstone expires too.
        db.save(&dc(), &id("later"), body(r#"{"v": 2}"#)).unwrap();
        db.save(&dc(), &id("gone"), body("{}")).unwrap();
        db.set_expiration(&dc(), &id("gone"), Some(at(50))).unwrap();
        db.delete(&dc(), &id("gone"), peerlite_storage::Expected::Any)
            .unwrap();
        // Cleared, purged or in a deleted collection: no longer expiring.
        db.save(&dc(), &id("cleared"), body("{}")).unwrap();
        db.set_expiration(&dc(), &id("cleared"), Some(at(5)))
            .unwrap();
        db.set_expiration(&dc(), &id("cleared"), None).unwrap();
        db.save(&dc(), &id("purged"), body("{}")).unwrap();
        db.set_expiration(&dc(), &id("purged"), Some(at(5)))
            .unwrap();
        assert!(db.purge(&dc(), &id("purged")).unwrap());
        db.save(&notes, &id("n"), body("{}")).unwrap();
        db.set_expiration(&notes, &id("n"), Some(at(1))).unwrap();
        db.delete_collection(&notes).unwrap();
        assert_eq!(db.expiration(&dc(), &id("later")).unwrap(), Some(at(200)));
        assert_eq!(db.expiration(&dc(), &id("cleared")).unwrap(), None);
    }
    let db = h.open();
    assert_eq!(db.next_expiration().unwrap(), Some(at(50)));
    assert_eq!(db.purge_expired(at(49)).unwrap(), 0);
    assert_eq!(db.purge_expired(at(50)).unwrap(), 1, "the tombstone");
    assert_eq!(db.rev_tree(&dc(), &id("gone")).unwrap(), None);
    assert_eq!(db.next_expiration().unwrap(), Some(at(100)));
    let before = db.changes(&dc(), Seq::ZERO, 10_000).unwrap().len();
    assert_eq!(db.purge_expired(at(150)).unwrap(), 2500);
    assert_eq!(
        db.changes(&dc(), Seq::ZERO, 10_000).unwrap().len(),
        before - 2500,
        "no tombstone, no change left behind"
    );
    assert!(db.get(&dc(), &id("e7")).unwrap().is_none());
    assert!(db.get(&dc(), &id("later")).unwrap().is_some());
    assert_eq!(db.next_expiration().unwrap(), Some(at(200)));
    assert_eq!(db.purge_expired(at(1_000)).unwrap(), 1);
    assert_eq!(db.next_expiration().unwrap(), None);
    for kept in ["keep", "cleared"] {
        assert!(db.get(&dc(), &id(kept)).unwrap().is_some(), "{kept}");
    }
}

/// `save_expiring` writes the revision and the expiration in one commit; a refused save
/// sets nothing; the same body again still sets the new time.
fn a_save_and_its_expiration_commit_together(h: &mut dyn Harness) {
    use std::time::{Duration, SystemTime};
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let at = |s: u64| t0 + Duration::from_secs(s);
    {
        let db = h.open();
        let w = db
            .save_expiring(
                &dc(),
                &id("otp"),
                body(r#"{"c": 1}"#),
                Expected::Any,
                at(60),
            )
            .unwrap();
        assert!(w.changed);
        assert_eq!(db.expiration(&dc(), &id("otp")).unwrap(), Some(at(60)));
        let again = db
            .save_expiring(
                &dc(),
                &id("otp"),
                body(r#"{"c": 1}"#),
                Expected::Any,
                at(90),
            )
            .unwrap();
        assert!(!again.changed && again.rev == w.rev);
        assert_eq!(db.expiration(&dc(), &id("otp")).unwrap(), Some(at(90)));
        assert!(matches!(
            db.save_expiring(&dc(), &id("new"), body("{}"), Expected::Rev(w.rev), at(5)),
            Err(StorageError::Conflict { .. })
        ));
        assert_eq!(db.rev_tree(&dc(), &id("new")).unwrap(), None);
        assert_eq!(
            db.next_expiration().unwrap(),
            Some(at(90)),
            "nothing set for new"
        );
    }
    let db = h.open();
    assert_eq!(db.expiration(&dc(), &id("otp")).unwrap(), Some(at(90)));
    assert_eq!(db.purge_expired(at(90)).unwrap(), 1);
    assert!(db.get(&dc(), &id("otp")).unwrap().is_none());
}

/// Tombstones are forgotten once a sequence mark at least the retention old lies past
/// them — not earlier, and not live documents or later deletions; the feed then refuses a
/// reader between zero and the last forgotten tombstone. Across reopen.
fn tombstones_older_than_the_retention_are_forgotten_and_the_feed_refuses_readers_behind(
    h: &mut dyn Harness,
) {
    use peerlite_proto::{StorageOp as Op, StorageReply as Reply};
    use std::time::{Duration, SystemTime};
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let hour = Duration::from_secs(3600);
    let day = 24 * hour;
    let notes: CollectionName = "app.notes".parse().unwrap();
    let changes = |since: u64| Op::Changes {
        collection: dc(),
        since: Seq(since),
        limit: 100_000,
    };
    let last_forgotten;
    {
        let db = h.open();
        assert_eq!(
            db.tombstone_retention().unwrap(),
            Some(peerlite_storage::DEFAULT_TOMBSTONE_RETENTION)
        );
        db.set_tombstone_retention(Some(day)).unwrap();
        db.create_collection(&notes).unwrap();
        assert_eq!(db.forget_tombstones(t0).unwrap(), 0);
        for i in 0..1500 {
            db.save(&dc(), &id(&format!("d{i}")), body("{}")).unwrap();
        }
        for i in 0..1200 {
            db.delete(&dc(), &id(&format!("d{i}")), Expected::Any)
                .unwrap();
        }
        // Deleted then created again: alive, kept.
        db.save(&dc(), &id("d5"), body(r#"{"back": true}"#))
            .unwrap();
        db.save(&notes, &id("n"), body("{}")).unwrap();
        db.delete(&notes, &id("n"), Expected::Any).unwrap();
        last_forgotten = db
            .changes(&dc(), Seq::ZERO, 100_000)
            .unwrap()
            .iter()
            .filter(|c| c.deleted)
            .map(|c| c.seq)
            .max()
            .unwrap();
        assert_eq!(db.forget_tombstones(t0 + hour).unwrap(), 0, "an hour old");
        // Deleted after the mark of t0 + 1h: a day old only after t0 + 2h + 1 day.
        db.save(&dc(), &id("late"), body("{}")).unwrap();
        db.delete(&dc(), &id("late"), Expected::Any).unwrap();
        assert_eq!(db.forget_tombstones(t0 + 2 * hour).unwrap(), 0);
        assert_eq!(
            db.forget_tombstones(t0 + day).unwrap(),
            0,
            "what the mark of t0 covers holds no tombstone"
        );
        assert_eq!(db.forgotten_through(&dc()).unwrap(), Seq::ZERO);
        assert!(matches!(db.execute(changes(3)), Reply::Changes(_)));
        assert_eq!(
            db.forget_tombstones(t0 + day + hour).unwrap(),
            1199 + 1,
            "every tombstone of both collections deleted before t0 + 1h (d5 came back)"
        );
    }
    let db = h.open();
    assert_eq!(db.tombstone_retention().unwrap(), Some(day));
    assert_eq!(db.forgotten_through(&dc()).unwrap(), last_forgotten);
    assert!(db.forgotten_through(&notes).unwrap() > Seq::ZERO);
    for gone in ["d0", "d1199"] {
        assert_eq!(db.rev_tree(&dc(), &id(gone)).unwrap(), None, "{gone}");
    }
    assert!(db.get(&dc(), &id("d5")).unwrap().is_some());
    assert!(db.get(&dc(), &id("d1200")).unwrap().is_some());
    assert!(
        db.get_including_deleted(&dc(), &id("late"))
            .unwrap()
            .is_some()
    );
    let feed = db.changes(&dc(), Seq::ZERO, 100_000).unwrap();
    assert_eq!(
        feed.len(),
        301 + 1,
        "the live documents (d5 too) and the late tombstone"
    );
    // A reader from zero, or at or past the last forgotten tombstone, reads on; one
    // between them is refused.
    assert!(matches!(db.execute(changes(0)), Reply::Changes(c) if c.len() == 302));
    assert_eq!(
        db.execute(changes(7)),
        Reply::DeletionsForgotten {
            through: last_forgotten
        }
    );
    assert!(matches!(
        db.execute(changes(last_forgotten.0)),
        Reply::Changes(_)
    ));
    // Forever: nothing more is forgotten, however late.
    db.set_tombstone_retention(None).unwrap();
    assert_eq!(db.forget_tombstones(t0 + 400 * day).unwrap(), 0);
    // Zero: everything deleted so far, at once; a clock gone backwards forgets nothing.
    db.set_tombstone_retention(Some(Duration::ZERO)).unwrap();
    assert_eq!(db.forget_tombstones(t0 + 2 * day).unwrap(), 1);
    assert_eq!(db.rev_tree(&dc(), &id("late")).unwrap(), None);
    db.set_tombstone_retention(Some(day)).unwrap();
    assert_eq!(db.forget_tombstones(t0).unwrap(), 0);
    // Deleting the collection takes what it forgot with it.
    db.delete_collection(&notes).unwrap();
    db.create_collection(&notes).unwrap();
    assert_eq!(db.forgotten_through(&notes).unwrap(), Seq::ZERO);
}

fn local_documents(h: &mut dyn Harness) {
    let db = h.open();
    assert_eq!(db.get_local("cp-1").unwrap(), None);
    db.put_local("cp-1", b"one").unwrap();
    db.put_local("cp-1", b"two").unwrap();
    assert_eq!(db.get_local("cp-1").unwrap(), Some(b"two".to_vec()));
    db.put_local("cp-2", b"x").unwrap();
    db.put_local("other", b"x").unwrap();
    assert_eq!(db.local_ids("cp-").unwrap(), vec!["cp-1", "cp-2"]);
    db.delete_local("cp-1").unwrap();
    assert_eq!(db.get_local("cp-1").unwrap(), None);
    assert_eq!(db.put_local("", b"x"), Err(StorageError::InvalidLocalId));
    assert_eq!(
        db.get_local(&"x".repeat(251)),
        Err(StorageError::InvalidLocalId)
    );
    // Local documents are not in the changes feed.
    assert!(db.changes(&dc(), Seq::ZERO, 10).unwrap().is_empty());
}

fn listeners_see_local_and_replicated_changes(h: &mut dyn Harness) {
    let db = h.open();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let token = db.add_change_listener(move |notices| {
        sink.lock().unwrap().extend(notices.iter().cloned());
    });
    let w = db.save(&dc(), &id("a"), body("{}")).unwrap();
    let remote = Revision::first(false, body(r#"{"from": "peer"}"#)).unwrap();
    db.insert_revisions(
        &dc(),
        vec![RevisionInsert {
            doc_id: id("b"),
            revisions: vec![remote.clone()],
            mode: InsertMode::NoConflicts,
        }],
    )
    .unwrap();
    db.delete(&dc(), &id("a"), Expected::Any).unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            (seen[0].rev, seen[0].seq, seen[0].origin),
            (w.rev, Seq(1), ChangeOrigin::Local)
        );
        assert_eq!(
            (seen[1].rev, seen[1].origin),
            (remote.rev, ChangeOrigin::Replicated)
        );
        assert!(seen[2].deleted);
    }
    assert!(db.remove_change_listener(token));
    assert!(!db.remove_change_listener(token));
    db.save(&dc(), &id("c"), body("{}")).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
}

/// A `Visible` listener hears of each commit before `Durable` ones, can already read the
/// change, and is told of saves, deletions and replicated inserts alike.
fn visible_listeners_hear_first_and_can_read_the_change(h: &mut dyn Harness) {
    let db = h.open();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sink, reader) = (log.clone(), db.clone());
    let early = db.add_change_listener_when(NotifyWhen::Visible, move |notices| {
        for n in notices {
            let readable = reader
                .get_including_deleted(&n.collection, &n.doc_id)
                .unwrap()
                .is_some_and(|d| d.rev == n.rev);
            let feed = reader.changes(&n.collection, Seq::ZERO, 100).unwrap();
            let in_feed = feed.iter().any(|c| c.seq == n.seq && c.rev == n.rev);
            sink.lock()
                .unwrap()
                .push(("visible", n.seq, readable && in_feed));
        }
    });
    let sink = log.clone();
    let late = db.add_change_listener(move |notices| {
        let mut l = sink.lock().unwrap();
        l.extend(notices.iter().map(|n| ("durable", n.seq, true)));
    });
    db.save(&dc(), &id("a"), body("{}")).unwrap();
    let remote = Revision::first(false, body(r#"{"from": "peer"}"#)).unwrap();
    db.insert_revisions(
        &dc(),
        vec![RevisionInsert {
            doc_id: id("b"),
            revisions: vec![remote],
            mode: InsertMode::NoConflicts,
        }],
    )
    .unwrap();
    db.delete(&dc(), &id("a"), Expected::Any).unwrap();
    let expected: Vec<_> = (1..=3)
        .flat_map(|s| [("visible", Seq(s), true), ("durable", Seq(s), true)])
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);
    assert!(db.remove_change_listener(early));
    assert!(db.remove_change_listener(late));
    db.save(&dc(), &id("c"), body("{}")).unwrap();
    assert_eq!(
        log.lock().unwrap().len(),
        6,
        "removed listeners hear nothing"
    );
}

/// With `Durability::Sync`, a `Visible` listener hears of a change while it is not yet
/// durable (a crash then would lose it) and a `Durable` one once it is; the save returns
/// once durable.
#[test]
fn visible_listeners_hear_before_the_sync_and_durable_ones_after() {
    let kv = Arc::new(MemKv::new());
    let config = DatabaseConfig {
        durability: Durability::Sync,
        ..DatabaseConfig::default()
    };
    let db = Database::with_backend(kv.clone(), config).unwrap();
    let pending = Arc::new(Mutex::new(Vec::new()));
    let (sink, probe) = (pending.clone(), kv.clone());
    let late = db.add_change_listener(move |_| {
        sink.lock()
            .unwrap()
            .push(("durable", probe.pending_batches()));
    });
    db.save(&dc(), &id("a"), body("{}")).unwrap();
    assert_eq!(*pending.lock().unwrap(), vec![("durable", 0)]);

    let (sink, probe) = (pending.clone(), kv.clone());
    let early = db.add_change_listener_when(NotifyWhen::Visible, move |_| {
        sink.lock()
            .unwrap()
            .push(("visible", probe.pending_batches()));
    });
    db.save(&dc(), &id("b"), body("{}")).unwrap();
    assert_eq!(
        pending.lock().unwrap()[1..],
        [("visible", 1), ("durable", 0)],
        "visible before the sync, durable after"
    );
    assert_eq!(kv.pending_batches(), 0, "the save returns once durable");
    db.remove_change_listener(early);
    db.remove_change_listener(late);
    drop(db);
    kv.crash();
    let db = Database::with_backend(kv.clone(), DatabaseConfig::default()).unwrap();
    assert!(
        db.get(&dc(), &id("b")).unwrap().is_some(),
        "a returned save survives"
    );
}

/// What revs-diff read (and a record cache kept) never hides a later write.
fn writes_after_revs_diff_are_read_fresh(h: &mut dyn Harness) {
    let db = h.open();
    let w1 = db.save(&dc(), &id("a"), body(r#"{"v": 1}"#)).unwrap();
    let r1 = db
        .get_revision(&dc(), &id("a"), &w1.rev, 10)
        .unwrap()
        .unwrap();
    let r2 = r1.child(false, body(r#"{"v": 2}"#), 10).unwrap();
    let fresh = Revision::first(false, body(r#"{"new": true}"#)).unwrap();
    let ask = [(id("a"), r2.rev), (id("new"), fresh.rev)];
    let missing = |leaves: Vec<RevId>| RevsDiff::Missing { leaves };
    assert_eq!(
        db.revs_diff(&dc(), &ask).unwrap(),
        vec![missing(vec![w1.rev]), missing(vec![])]
    );
    // The inserts that follow see what revs-diff saw, and then their own writes.
    assert!(
        matches!(insert_one(&db, "a", &r2), InsertOutcome::Inserted { rev, .. } if rev == r2.rev)
    );
    assert!(
        matches!(insert_one(&db, "new", &fresh), InsertOutcome::Inserted { rev, .. } if rev == fresh.rev)
    );
    assert_eq!(
        db.revs_diff(&dc(), &ask).unwrap(),
        vec![RevsDiff::Present; 2]
    );
    // A local save and a delete after another revs-diff.
    let w3 = db.save(&dc(), &id("a"), body(r#"{"v": 3}"#)).unwrap();
    assert_eq!(db.get(&dc(), &id("a")).unwrap().unwrap().rev, w3.rev);
    db.revs_diff(&dc(), &ask).unwrap();
    db.delete(&dc(), &id("new"), Expected::Any).unwrap();
    assert!(db.get(&dc(), &id("new")).unwrap().is_none());
    assert_eq!(
        db.revs_diff(&dc(), &[(id("a"), r2.rev)]).unwrap(),
        vec![RevsDiff::Present]
    );
    drop(db);
    let db = h.open();
    assert_eq!(db.get(&dc(), &id("a")).unwrap().unwrap().rev, w3.rev);
    assert!(db.get(&dc(), &id("new")).unwrap().is_none());
}

fn revs_diff_and_get_revision(h: &mut dyn Harness) {
    let db = h.open();
    let w1 = db.save(&dc(), &id("a"), body(r#"{"v": 1}"#)).unwrap();
    let w2 = db.save(&dc(), &id("a"), body(r#"{"v": 2}"#)).unwrap();
    let unknown = Revision::first(false, body(r#"{"v": "x"}"#)).unwrap().rev;
    let diff = db
        .revs_diff(
            &dc(),
            &[
                (id("a"), w1.rev),
                (id("a"), w2.rev),
                (id("a"), unknown),
                (id("zz"), unknown),
            ],
        )
        .unwrap();
    assert_eq!(diff[0], RevsDiff::Present);
    assert_eq!(diff[1], RevsDiff::Present);
    assert_eq!(
        diff[2],
        RevsDiff::Missing {
            leaves: vec![w2.rev]
        }
    );
    assert_eq!(diff[3], RevsDiff::Missing { leaves: vec![] });

    let r = db
        .get_revision(&dc(), &id("a"), &w2.rev, 10)
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.rev, r.deleted, r.history.clone()),
        (w2.rev, false, vec![w1.rev])
    );
    assert_eq!(r.body, body(r#"{"v": 2}"#));
    r.validate().unwrap();
    // Superseded revisions no longer have bodies.
    assert_eq!(db.get_revision(&dc(), &id("a"), &w1.rev, 10).unwrap(), None);
    assert_eq!(
        db.get_revision(&dc(), &id("zz"), &w1.rev, 10).unwrap(),
        None
    );
}

fn ins(doc: &str, revisions: Vec<Revision>) -> RevisionInsert {
    RevisionInsert {
        doc_id: id(doc),
        revisions,
        mode: InsertMode::NoConflicts,
    }
}

fn insert_one(db: &Database, doc: &str, r: &Revision) -> InsertOutcome {
    db.insert_revisions(&dc(), vec![ins(doc, vec![r.clone()])])
        .unwrap()
        .remove(0)
}

fn insert_accepts_extensions_and_refuses_conflicts(h: &mut dyn Harness) {
    let db = h.open();
    let r1 = Revision::first(false, body(r#"{"v": 1}"#)).unwrap();
    let r2 = r1.child(false, body(r#"{"v": 2}"#), 20).unwrap();
    let r3 = r2.child(false, body(r#"{"v": 3}"#), 20).unwrap();
    assert!(
        matches!(insert_one(&db, "a", &r2), InsertOutcome::Inserted { rev, .. } if rev == r2.rev)
    );
    assert_eq!(
        insert_one(&db, "a", &r2),
        InsertOutcome::AlreadyHad {
            current: Some(r2.rev)
        }
    );
    assert_eq!(
        insert_one(&db, "a", &r1),
        InsertOutcome::AlreadyHad {
            current: Some(r2.rev)
        }
    );
    assert!(
        matches!(insert_one(&db, "a", &r3), InsertOutcome::Inserted { rev, .. } if rev == r3.rev)
    );
    // A concurrent edit of r2 does not extend the current r3: refused, nothing stored.
    let rival = r2.child(false, body(r#"{"v": "rival"}"#), 20).unwrap();
    assert_eq!(
        insert_one(&db, "a", &rival),
        InsertOutcome::Conflict {
            current: Some(r3.rev)
        }
    );
    let tree = db.rev_tree(&dc(), &id("a")).unwrap().unwrap();
    assert!(!tree.contains(&rival.rev));
    // A local edit then a pushed edit of the same parent: conflict too.
    let local = db.save(&dc(), &id("a"), body(r#"{"v": "local"}"#)).unwrap();
    let pushed = r3.child(false, body(r#"{"v": "pushed"}"#), 20).unwrap();
    assert_eq!(
        insert_one(&db, "a", &pushed),
        InsertOutcome::Conflict {
            current: Some(local.rev)
        }
    );
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(3));
}

fn insert_deletion_rules(h: &mut dyn Harness) {
    let db = h.open();
    let base = Revision::first(false, body(r#"{"v": 0}"#)).unwrap();
    insert_one(&db, "a", &base);
    let local = db.save(&dc(), &id("a"), body(r#"{"v": "edit"}"#)).unwrap();
    // A concurrent deletion of base is a conflict (the deletion must win via resolution,
    // not be silently out-ranked by the live edit).
    let remote_del = base.child(true, Body::empty(), 20).unwrap();
    assert_eq!(
        insert_one(&db, "a", &remote_del),
        InsertOutcome::Conflict {
            current: Some(local.rev)
        }
    );

    // Deleted locally; a concurrent live edit may not bring the document back...
    insert_one(&db, "b", &base);
    let tomb = db.delete(&dc(), &id("b"), Expected::Any).unwrap();
    let edit = base.child(false, body(r#"{"v": "edit"}"#), 20).unwrap();
    assert_eq!(
        insert_one(&db, "b", &edit),
        InsertOutcome::Conflict {
            current: Some(tomb.rev)
        }
    );
    // ...but a concurrent deletion is fine (both sides agree it is gone)...
    let other_del = base.child(true, body(r#"{"why": "x"}"#), 20).unwrap();
    assert!(matches!(
        insert_one(&db, "b", &other_del),
        InsertOutcome::Inserted { deleted: true, .. }
    ));
    // ...and so is a re-creation that descends from a tombstone.
    let tomb_rev = db
        .get_revision(&dc(), &id("b"), &tomb.rev, 20)
        .unwrap()
        .unwrap();
    let recreated = tomb_rev
        .child(false, body(r#"{"v": "again"}"#), 20)
        .unwrap();
    assert!(
        matches!(insert_one(&db, "b", &recreated), InsertOutcome::Inserted { deleted: false, rev, .. } if rev == recreated.rev)
    );

    // Found by the convergence fuzzer: a branch deleted here, while another branch keeps
    // the document alive. A peer that never saw the deletion closes the live branch and
    // continues the deleted one: that revives what was deleted here — a conflict.
    let root = Revision::first(false, body(r#"{"v": "root"}"#)).unwrap();
    let kept = root.child(false, body(r#"{"v": "kept"}"#), 20).unwrap();
    let gone = root.child(false, body(r#"{"v": "gone"}"#), 20).unwrap();
    let c_id = "c";
    insert_one(&db, c_id, &kept);
    let both = db
        .insert_revisions(&dc(), vec![ins(c_id, vec![gone.clone()])])
        .unwrap();
    assert!(matches!(both[0], InsertOutcome::Conflict { .. }));
    // Build the two-branch state with a guarded write, as a resolution would.
    let gone_del = gone.child(true, Body::empty(), 20).unwrap();
    let out = db
        .insert_revisions(
            &dc(),
            vec![RevisionInsert {
                doc_id: id(c_id),
                revisions: vec![gone.clone(), gone_del.clone()],
                mode: InsertMode::Guarded {
                    expected: Some(kept.rev),
                },
            }],
        )
        .unwrap();
    assert!(matches!(out[0], InsertOutcome::Inserted { rev, .. } if rev == kept.rev));
    let kept_closed = kept.child(true, Body::empty(), 20).unwrap();
    let revived = gone.child(false, body(r#"{"v": "revived"}"#), 20).unwrap();
    assert_eq!(
        db.insert_revisions(
            &dc(),
            vec![ins(c_id, vec![kept_closed.clone(), revived.clone()])]
        )
        .unwrap()[0],
        InsertOutcome::Conflict {
            current: Some(kept.rev)
        }
    );
    // Having seen the deletion (its tombstone comes along), the same resolution is fine.
    let out = db
        .insert_revisions(
            &dc(),
            vec![ins(c_id, vec![gone_del, kept_closed, revived.clone()])],
        )
        .unwrap();
    assert!(
        matches!(out[0], InsertOutcome::Inserted { rev, deleted: false, .. } if rev == revived.rev)
    );
}

fn insert_bundle_that_closes_a_branch(h: &mut dyn Harness) {
    let db = h.open();
    let base = Revision::first(false, body(r#"{"v": 0}"#)).unwrap();
    let mine = base.child(false, body(r#"{"v": "mine"}"#), 20).unwrap();
    let theirs = base.child(false, body(r#"{"v": "theirs"}"#), 20).unwrap();
    insert_one(&db, "a", &mine);
    // A peer resolved mine-vs-theirs in favour of a child of theirs and closed mine.
    let close_mine = mine.child(true, Body::empty(), 20).unwrap();
    let resolved = theirs
        .child(false, body(r#"{"v": "resolved"}"#), 20)
        .unwrap();
    // The resolution alone leaves "mine" live: refused.
    assert!(matches!(
        insert_one(&db, "a", &resolved),
        InsertOutcome::Conflict { .. }
    ));
    // With the closing tombstone in the same bundle it is accepted.
    let out = db
        .insert_revisions(&dc(), vec![ins("a", vec![close_mine, resolved.clone()])])
        .unwrap();
    assert!(
        matches!(out[0], InsertOutcome::Inserted { rev, deleted: false, .. } if rev == resolved.rev)
    );
    let tree = db.rev_tree(&dc(), &id("a")).unwrap().unwrap();
    assert!(!tree.is_conflicted());
}

fn guarded_insert_writes_a_resolution_atomically(h: &mut dyn Harness) {
    use peerlite_proto::{
        Conflict, ConflictResolver, ConflictSide, DefaultConflictResolver, resolution_revisions,
    };
    let db = h.open();
    let base = Revision::first(false, body(r#"{"v": 0}"#)).unwrap();
    insert_one(&db, "a", &base);
    let local = db.save(&dc(), &id("a"), body(r#"{"v": "local"}"#)).unwrap();
    let remote = base
        .child(false, body(r#"{"v": "r1"}"#), 20)
        .unwrap()
        .child(false, body(r#"{"v": "r2"}"#), 20)
        .unwrap();
    assert!(matches!(
        insert_one(&db, "a", &remote),
        InsertOutcome::Conflict { .. }
    ));
    let local_rev = db
        .get_revision(&dc(), &id("a"), &local.rev, 20)
        .unwrap()
        .unwrap();
    let doc = id("a");
    let conflict = Conflict {
        doc_id: &doc,
        local: ConflictSide {
            revision: &local_rev,
        },
        remote: ConflictSide { revision: &remote },
    };
    let resolution = DefaultConflictResolver.resolve(&conflict);
    let mut revisions = vec![remote.clone()];
    revisions.extend(resolution_revisions(&conflict, &resolution, 20).unwrap());
    // A stale guard is refused...
    let stale = RevisionInsert {
        doc_id: doc.clone(),
        revisions: revisions.clone(),
        mode: InsertMode::Guarded {
            expected: Some(base.rev),
        },
    };
    assert!(matches!(
        db.insert_revisions(&dc(), vec![stale]).unwrap()[0],
        InsertOutcome::Conflict { .. }
    ));
    // ...the right one applies the remote revision and the resolution together.
    let good = RevisionInsert {
        doc_id: doc.clone(),
        revisions,
        mode: InsertMode::Guarded {
            expected: Some(local.rev),
        },
    };
    assert!(matches!(
        db.insert_revisions(&dc(), vec![good]).unwrap()[0],
        InsertOutcome::Inserted { .. }
    ));
    let d = db.get(&dc(), &doc).unwrap().unwrap();
    assert!(!d.conflicted);
    assert_eq!(d.body, body(r#"{"v": "r2"}"#)); // longer history wins
}

fn insert_rejects_invalid_revisions_without_writing(h: &mut dyn Harness) {
    let db = h.open();
    let r1 = Revision::first(false, body(r#"{"v": 1}"#)).unwrap();
    let mut forged = r1.child(false, body(r#"{"v": 2}"#), 20).unwrap();
    forged.body = body(r#"{"v": "evil"}"#);
    let mut broken = r1.child(false, body(r#"{"v": 2}"#), 20).unwrap();
    broken.history = vec![RevId::from_parts(5, [7; 16]).unwrap()];
    let out = db
        .insert_revisions(
            &dc(),
            vec![
                ins("a", vec![forged]),
                ins("b", vec![broken]),
                ins("c", vec![r1.clone()]),
            ],
        )
        .unwrap();
    assert!(matches!(
        out[0],
        InsertOutcome::Invalid(RevisionError::DigestMismatch { .. })
    ));
    assert!(matches!(
        out[1],
        InsertOutcome::Invalid(RevisionError::BrokenHistory { .. })
    ));
    assert!(matches!(
        out[2],
        InsertOutcome::Inserted { seq: Seq(1), .. }
    ));
    assert_eq!(db.rev_tree(&dc(), &id("a")).unwrap(), None);
    assert_eq!(db.rev_tree(&dc(), &id("b")).unwrap(), None);
    assert_eq!(db.changes(&dc(), Seq::ZERO, 10).unwrap().len(), 1);
}

fn insert_many_documents_in_one_call(h: &mut dyn Harness) {
    let db = h.open();
    let mut batch = Vec::new();
    let mut revs = Vec::new();
    for i in 0..50 {
        let r = Revision::first(false, body(&format!(r#"{{"i": {i}}}"#))).unwrap();
        revs.push(r.clone());
        batch.push(ins(&format!("d{i:02}"), vec![r]));
    }
    // The same document twice in one call: the second builds on the first.
    let r2 = revs[0].child(false, body(r#"{"i": "again"}"#), 20).unwrap();
    batch.push(ins("d00", vec![r2.clone()]));
    let out = db.insert_revisions(&dc(), batch).unwrap();
    assert_eq!(out.len(), 51);
    // d00 changed last, so its single changes-feed entry comes last.
    assert!(matches!(
        out[0],
        InsertOutcome::Inserted { seq: Seq(50), .. }
    ));
    assert!(matches!(
        out[1],
        InsertOutcome::Inserted { seq: Seq(1), .. }
    ));
    assert!(matches!(out[50], InsertOutcome::Inserted { seq: Seq(50), rev, .. } if rev == r2.rev));
    let feed = db.changes(&dc(), Seq::ZERO, 100).unwrap();
    assert_eq!(feed.len(), 50);
    assert_eq!(feed.last().unwrap().doc_id, id("d00"));
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(50));
}

fn documents_pages_skip_tombstones(h: &mut dyn Harness) {
    let db = h.open();
    for i in 0..7 {
        db.save(&dc(), &id(&format!("d{i}")), body("{}")).unwrap();
    }
    db.delete(&dc(), &id("d2"), Expected::Any).unwrap();
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = db.documents(&dc(), after.as_ref(), 3).unwrap();
        ids.extend(page.documents.iter().map(|d| d.id.as_str().to_owned()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(ids, vec!["d0", "d1", "d3", "d4", "d5", "d6"]);
}

fn corrupt_records_are_typed_errors(h: &mut dyn Harness) {
    let db = h.open();
    db.save(&dc(), &id("a"), body("{}")).unwrap();
    let kv = h.kv();
    // Overwrite the record of "a" (collection 1) with garbage.
    let mut key = 1u32.to_be_bytes().to_vec();
    key.extend_from_slice(b"a");
    let mut batch = WriteBatch::new();
    batch.put(Space::Docs, key, vec![0x83, 0x01, 0xff]);
    kv.commit(batch, Durability::Sync).unwrap();
    assert!(matches!(
        db.get(&dc(), &id("a")),
        Err(StorageError::Corrupt {
            what: "document",
            ..
        })
    ));
    // Writes to the corrupt document fail cleanly; other documents still work.
    assert!(matches!(
        db.save(&dc(), &id("a"), body("{}")),
        Err(StorageError::Corrupt { .. })
    ));
    db.save(&dc(), &id("b"), body("{}")).unwrap();
    // A corrupt changes-feed entry too.
    let mut batch = WriteBatch::new();
    let mut seq_key = 1u32.to_be_bytes().to_vec();
    seq_key.extend_from_slice(&99u64.to_be_bytes());
    batch.put(Space::Seq, seq_key, b"junk".to_vec());
    kv.commit(batch, Durability::Sync).unwrap();
    assert!(matches!(
        db.changes(&dc(), Seq::ZERO, 100),
        Err(StorageError::Corrupt {
            what: "sequence",
            ..
        })
    ));
}

fn revision_trees_are_pruned(h: &mut dyn Harness) {
    let db = h.open();
    for i in 0..30 {
        db.save(&dc(), &id("a"), body(&format!(r#"{{"i": {i}}}"#)))
            .unwrap();
    }
    let tree = db.rev_tree(&dc(), &id("a")).unwrap().unwrap();
    assert_eq!(tree.len(), 20);
    assert_eq!(tree.current_rev().unwrap().generation(), 30);
}

fn save_batch_is_atomic(h: &mut dyn Harness) {
    let db = h.open();
    let docs: Vec<_> = (0..100)
        .map(|i| (id(&format!("d{i:03}")), body(&format!(r#"{{"i": {i}}}"#))))
        .chain([(id("d000"), body(r#"{"i": "twice"}"#))])
        .collect();
    let out = db.save_batch(&dc(), docs).unwrap();
    assert_eq!(out.len(), 101);
    assert_eq!(out[100].rev.generation(), 2);
    assert_eq!(
        db.get(&dc(), &id("d000")).unwrap().unwrap().body,
        body(r#"{"i": "twice"}"#)
    );
    let feed = db.changes(&dc(), Seq::ZERO, 1000).unwrap();
    assert_eq!(feed.len(), 100);
    assert_eq!(feed.last().unwrap().doc_id, id("d000"));
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(101));
    // One bad record in the middle: the whole batch fails and nothing is written.
    let mut key = 1u32.to_be_bytes().to_vec();
    key.extend_from_slice(b"d050");
    let mut corrupt = WriteBatch::new();
    corrupt.put(Space::Docs, key, vec![0xff]);
    h.kv().commit(corrupt, Durability::Sync).unwrap();
    let again: Vec<_> = ["new1", "d050", "new2"]
        .into_iter()
        .map(|s| (id(s), body("{}")))
        .collect();
    assert!(matches!(
        db.save_batch(&dc(), again),
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(db.get(&dc(), &id("new1")).unwrap(), None);
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(101));
    assert!(db.save_batch(&dc(), Vec::new()).unwrap().is_empty());
}

fn execute_runs_every_operation(h: &mut dyn Harness) {
    use peerlite_proto::{StorageOp as Op, StorageReply as Reply};
    let db = h.open();
    assert_eq!(
        db.execute(Op::GetLocal { id: "cp".into() }),
        Reply::Local(None)
    );
    assert_eq!(
        db.execute(Op::PutLocal {
            id: "cp".into(),
            value: b"x"[..].into()
        }),
        Reply::Done
    );
    assert_eq!(
        db.execute(Op::GetLocal { id: "cp".into() }),
        Reply::Local(Some(b"x"[..].into()))
    );
    let base = Revision::first(false, body(r#"{"v": 0}"#)).unwrap();
    let left = base.child(false, body(r#"{"v": "l"}"#), 20).unwrap();
    let right = base.child(true, Body::empty(), 20).unwrap();
    let reply = db.execute(Op::InsertRevisions {
        collection: dc(),
        inserts: vec![
            RevisionInsert {
                doc_id: id("a"),
                revisions: vec![left.clone()],
                mode: InsertMode::NoConflicts,
            },
            RevisionInsert {
                doc_id: id("a"),
                revisions: vec![right.clone()],
                mode: InsertMode::Guarded {
                    expected: Some(left.rev),
                },
            },
        ],
    });
    assert!(matches!(&reply, Reply::Inserted(v) if v.len() == 2));
    let Reply::Changes(feed) = db.execute(Op::Changes {
        collection: dc(),
        since: Seq::ZERO,
        limit: 10,
    }) else {
        panic!("changes");
    };
    assert_eq!(feed.len(), 1);
    assert_eq!(
        db.execute(Op::RevsDiff {
            collection: dc(),
            revs: vec![(id("a"), right.rev)]
        }),
        Reply::RevsDiff(vec![RevsDiff::Present])
    );
    assert_eq!(
        db.execute(Op::GetRevisions {
            collection: dc(),
            revs: vec![(id("a"), left.rev), (id("a"), base.rev)],
            max_history: 5
        }),
        Reply::Revisions(vec![Some(left.clone()), None])
    );
    // Both branches are leaves: the live edit and the concurrent deletion.
    let Reply::Leaves(leaves) = db.execute(Op::GetLeaves {
        collection: dc(),
        ids: vec![id("a"), id("none")],
        max_history: 5,
    }) else {
        panic!("leaves");
    };
    let mut got: Vec<RevId> = leaves[0].iter().map(|r| r.rev).collect();
    got.sort();
    let mut want = vec![left.rev, right.rev];
    want.sort();
    assert_eq!(got, want);
    assert!(leaves[1].is_empty());
    let missing: CollectionName = "no.such".parse().unwrap();
    assert!(matches!(
        db.execute(Op::Changes { collection: missing, since: Seq::ZERO, limit: 1 }),
        Reply::Failed(f) if !f.transient && f.message.contains("no.such")
    ));
}

#[test]
fn memory_backend_crash_loses_only_buffered_writes() {
    let kv = Arc::new(MemKv::new());
    let sync = DatabaseConfig::default();
    let buffered = DatabaseConfig {
        durability: Durability::Buffered,
        ..DatabaseConfig::default()
    };
    let db = Database::with_backend(kv.clone(), sync.clone()).unwrap();
    db.save(&dc(), &id("durable"), body("{}")).unwrap();
    drop(db);
    let db = Database::with_backend(kv.clone(), buffered.clone()).unwrap();
    db.save(&dc(), &id("lost"), body("{}")).unwrap();
    assert_eq!(kv.pending_batches(), 1);
    drop(db);
    kv.crash();
    let db = Database::with_backend(kv.clone(), buffered).unwrap();
    assert!(db.get(&dc(), &id("durable")).unwrap().is_some());
    assert!(db.get(&dc(), &id("lost")).unwrap().is_none());
    // The sequence counter came back with the data: no gap, no reuse.
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq(1));
    db.save(&dc(), &id("after"), body("{}")).unwrap();
    db.persist().unwrap();
    kv.crash();
    let db = Database::with_backend(kv, sync).unwrap();
    assert!(db.get(&dc(), &id("after")).unwrap().is_some());
}

#[cfg(unix)]
#[test]
fn a_new_database_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let path = parent.path().join("nested").join("db");
    let _db = Database::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn fjall_directory_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Database::open(dir.path()).unwrap();
    assert!(matches!(
        Database::open(dir.path()),
        Err(StorageError::Kv(peerlite_storage::KvError::Locked))
    ));
}

/// Random operations for the differential test.
#[derive(Clone, Debug)]
enum Op {
    Save(u8, u8),
    SaveExpecting(u8, u8, bool),
    Delete(u8),
    Purge(u8),
    Insert(u8, u8, bool),
    Changes(u8, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, any::<u8>()).prop_map(|(d, v)| Op::Save(d, v)),
        1 => (0u8..6, any::<u8>(), any::<bool>()).prop_map(|(d, v, m)| Op::SaveExpecting(d, v, m)),
        2 => (0u8..6).prop_map(Op::Delete),
        1 => (0u8..6).prop_map(Op::Purge),
        2 => (0u8..6, any::<u8>(), any::<bool>()).prop_map(|(d, v, del)| Op::Insert(d, v, del)),
        2 => (0u8..20, 1u8..8).prop_map(|(s, l)| Op::Changes(s, l)),
        1 => Just(Op::Reopen),
    ]
}

/// Runs one operation and renders everything observable about its result.
fn run(db: &Database, op: &Op) -> String {
    let doc = |d: &u8| id(&format!("doc{d}"));
    let b = |v: &u8| body(&format!(r#"{{"v": {v}}}"#));
    match op {
        Op::Save(d, v) => format!("{:?}", db.save(&dc(), &doc(d), b(v))),
        Op::SaveExpecting(d, v, missing) => {
            let expected = if *missing {
                Expected::Missing
            } else {
                match db.get(&dc(), &doc(d)) {
                    Ok(Some(x)) => Expected::Rev(x.rev),
                    _ => Expected::Missing,
                }
            };
            format!("{:?}", db.save_with(&dc(), &doc(d), b(v), expected))
        }
        Op::Delete(d) => format!("{:?}", db.delete(&dc(), &doc(d), Expected::Any)),
        Op::Purge(d) => format!("{:?}", db.purge(&dc(), &doc(d))),
        Op::Insert(d, v, deleted) => {
            // A peer's edit on top of whatever revision this database has (or a new doc).
            let base = db.get_including_deleted(&dc(), &doc(d)).ok().flatten();
            let r = match base {
                Some(x) => {
                    let parent = db
                        .get_revision(&dc(), &doc(d), &x.rev, 20)
                        .unwrap()
                        .unwrap();
                    parent.child(*deleted, b(v), 20).unwrap()
                }
                None => Revision::first(*deleted, b(v)).unwrap(),
            };
            format!(
                "{:?}",
                db.insert_revisions(&dc(), vec![ins(&format!("doc{d}"), vec![r])])
            )
        }
        Op::Changes(s, l) => format!(
            "{:?}",
            db.changes(&dc(), Seq(u64::from(*s)), usize::from(*l))
        ),
        Op::Reopen => String::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Both backends give identical answers to identical operation sequences.
    #[test]
    fn backends_agree(ops in prop::collection::vec(op(), 1..40)) {
        let config = DatabaseConfig {
            durability: Durability::Buffered,
            uuid: Some(DatabaseUuid([9; 16])),
            ..DatabaseConfig::default()
        };
        let mut fj = FjallHarness::new(config.clone());
        let mut mem = MemHarness::new(config);
        let (mut a, mut b) = (fj.open(), mem.open());
        for op in &ops {
            if let Op::Reopen = op {
                drop(a);
                drop(b);
                a = fj.open();
                b = mem.open();
                continue;
            }
            prop_assert_eq!(run(&a, op), run(&b, op), "after {:?}", op);
        }
        let all_a = a.changes(&dc(), Seq::ZERO, 1000).unwrap();
        let all_b = b.changes(&dc(), Seq::ZERO, 1000).unwrap();
        prop_assert_eq!(all_a, all_b);
    }
}

/// Group commit: running operations together gives the replies of running them one by
/// one, with consecutive inserts of one collection in a single commit.
#[test]
fn execute_many_matches_one_by_one() {
    use peerlite_proto::{InsertMode, Revision, RevisionInsert, StorageOp, StorageReply};
    let c = CollectionName::default();
    let other: CollectionName = "app.other".parse().unwrap();
    let rev = |json: &str| Revision::first(false, Body::from_json_str(json).unwrap()).unwrap();
    let insert = |collection: &CollectionName, id: &str, r: &Revision| StorageOp::InsertRevisions {
        collection: collection.clone(),
        inserts: vec![RevisionInsert {
            doc_id: DocId::new(id).unwrap(),
            revisions: vec![r.clone()],
            mode: InsertMode::NoConflicts,
        }],
    };
    let (a, b) = (rev(r#"{"v": 1}"#), rev(r#"{"v": 2}"#));
    let ops = || {
        vec![
            insert(&c, "x", &a),
            insert(&c, "y", &a),
            // The same document again, conflicting with the first insert of the group.
            insert(&c, "x", &b),
            StorageOp::Changes {
                collection: c.clone(),
                since: Seq::ZERO,
                limit: 10,
            },
            insert(&other, "x", &b),
            insert(&c, "z", &b),
            insert(&c, "z", &b),
        ]
    };
    let (one, many) = (
        Database::in_memory().unwrap(),
        Database::in_memory().unwrap(),
    );
    for db in [&one, &many] {
        db.create_collection(&other).unwrap();
    }
    let singly: Vec<StorageReply> = ops().into_iter().map(|op| one.execute(op)).collect();
    let grouped = many.execute_many(ops());
    assert_eq!(grouped.len(), singly.len());
    // Outcomes agree, except that a group assigns one sequence per document.
    let strip = |r: &StorageReply| match r {
        StorageReply::Inserted(o) => format!(
            "{:?}",
            o.iter()
                .map(|o| match o {
                    peerlite_proto::InsertOutcome::Inserted { rev, deleted, .. } => {
                        format!("inserted {rev} {deleted}")
                    }
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
        ),
        StorageReply::Changes(ch) => format!(
            "{:?}",
            ch.iter()
                .map(|c| (c.doc_id.clone(), c.rev))
                .collect::<Vec<_>>()
        ),
        other => format!("{other:?}"),
    };
    for (s, g) in singly.iter().zip(&grouped) {
        assert_eq!(strip(s), strip(g));
    }
    assert!(matches!(
        &grouped[2],
        StorageReply::Inserted(o) if matches!(o[0], peerlite_proto::InsertOutcome::Conflict { .. })
    ));
    for name in [&c, &other] {
        let docs = |db: &Database| {
            db.documents(name, None, 100)
                .unwrap()
                .documents
                .iter()
                .map(|d| (d.id.clone(), d.rev))
                .collect::<Vec<_>>()
        };
        assert_eq!(docs(&one), docs(&many));
    }
    assert_eq!(
        many.last_sequence(&c).unwrap(),
        one.last_sequence(&c).unwrap()
    );
}

fn photo_doc(blob: &Blob) -> Body {
    Body::from_json(&serde_json::json!({"title": "beach", "media": [{"photo": blob.to_json()}]}))
        .unwrap()
}

fn blobs_are_saved_once_read_back_and_listed(h: &mut impl Harness) {
    let db = h.open();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let blob = db.save_blob(&bytes[..], Some("image/jpeg")).unwrap();
    assert_eq!(blob.digest, BlobDigest::of(&bytes));
    assert_eq!(blob.length, 300_000);
    assert_eq!(blob.content_type.as_deref(), Some("image/jpeg"));
    // The same bytes again: the same blob, stored once; the first content type stays.
    let again = db
        .save_blob(&bytes[..], Some("application/octet-stream"))
        .unwrap();
    assert_eq!((again.digest, again.length), (blob.digest, blob.length));
    assert_eq!(
        again.content_type.as_deref(),
        Some("application/octet-stream")
    );
    let stored = db.blob(&blob.digest).unwrap().unwrap();
    assert_eq!(stored.content_type.as_deref(), Some("image/jpeg"));
    let small = db.save_blob(&b"hello"[..], None).unwrap();
    assert_eq!(small.content_type, None);
    let listed = db.blobs().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.windows(2).all(|w| w[0].digest < w[1].digest));
    drop(db);
    let db = h.open();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut db.open_blob(&blob.digest).unwrap().unwrap(), &mut back)
        .unwrap();
    assert_eq!(back, bytes);
    assert_eq!(db.blob(&blob.digest).unwrap().unwrap().reference(), blob);
    assert!(db.has_blob(&small.digest).unwrap());
    let absent = BlobDigest::of(b"never saved");
    assert!(!db.has_blob(&absent).unwrap());
    assert!(db.open_blob(&absent).unwrap().is_none());
    assert_eq!(db.blob(&absent).unwrap(), None);
}

fn documents_refer_only_to_blobs_present(h: &mut impl Harness) {
    let db = h.open();
    let absent = Blob::new(BlobDigest::of(b"absent"), 6, None);
    let err = db.save(&dc(), &id("d"), photo_doc(&absent)).unwrap_err();
    assert!(
        matches!(err, StorageError::MissingBlob { ref digest, .. } if *digest == absent.digest),
        "{err}"
    );
    assert!(err.to_string().contains("save the blob first"), "{err}");
    assert_eq!(db.get(&dc(), &id("d")).unwrap(), None);
    let blob = db.save_blob(&b"absent"[..], None).unwrap();
    let wrong_length = Blob::new(blob.digest, 7, None);
    let err = db
        .save(&dc(), &id("d"), photo_doc(&wrong_length))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::BlobLengthMismatch {
                referenced: 7,
                stored: 6,
                ..
            }
        ),
        "{err}"
    );
    let malformed = body(r#"{"p": {"@type": "blob", "digest": "sha256-nope", "length": 1}}"#);
    let err = db.save(&dc(), &id("d"), malformed).unwrap_err();
    assert!(matches!(err, StorageError::BlobReference(_)), "{err}");
    // A batch with one bad document saves none.
    let still_absent = Blob::new(BlobDigest::of(b"still absent"), 12, None);
    let batch = vec![
        (id("ok"), photo_doc(&blob)),
        (id("bad"), photo_doc(&still_absent)),
    ];
    assert!(db.save_batch(&dc(), batch).is_err());
    assert_eq!(db.get(&dc(), &id("ok")).unwrap(), None);
    db.save(&dc(), &id("d"), photo_doc(&blob)).unwrap();
    assert_eq!(
        db.get(&dc(), &id("d"))
            .unwrap()
            .unwrap()
            .body
            .blobs()
            .unwrap(),
        vec![blob]
    );
}

fn replicated_revisions_need_their_blobs(h: &mut impl Harness) {
    let db = h.open();
    let absent = Blob::new(BlobDigest::of(b"remote bytes"), 12, None);
    let revision = Revision::first(false, photo_doc(&absent)).unwrap();
    let insert = |r: &Revision| RevisionInsert {
        doc_id: id("remote"),
        revisions: vec![r.clone()],
        mode: InsertMode::NoConflicts,
    };
    let out = db.insert_revisions(&dc(), vec![insert(&revision)]).unwrap();
    assert_eq!(out, vec![InsertOutcome::MissingBlobs(vec![absent.clone()])]);
    assert_eq!(db.get(&dc(), &id("remote")).unwrap(), None);
    assert_eq!(db.last_sequence(&dc()).unwrap(), Seq::ZERO);
    let malformed =
        Revision::first(false, body(r#"{"x": {"@type": "blob", "length": 1}}"#)).unwrap();
    let out = db
        .insert_revisions(&dc(), vec![insert(&malformed)])
        .unwrap();
    assert!(
        matches!(
            &out[0],
            InsertOutcome::Invalid(RevisionError::BlobReference { .. })
        ),
        "{out:?}"
    );
    db.save_blob(&b"remote bytes"[..], None).unwrap();
    let out = db.insert_revisions(&dc(), vec![insert(&revision)]).unwrap();
    assert!(matches!(out[0], InsertOutcome::Inserted { .. }), "{out:?}");
}

fn blob_writers_check_what_they_were_promised(h: &mut impl Harness) {
    let db = h.open();
    let promised = Blob::new(BlobDigest::of(b"0123456789"), 10, None);
    // Bytes that do not match: refused, nothing visible.
    let mut w = db.blob_writer_for(&promised).unwrap();
    w.write(b"01234").unwrap();
    w.write(b"xxxxx").unwrap();
    let err = w.finish(None).unwrap_err();
    assert!(matches!(err, StorageError::BlobMismatch { .. }), "{err}");
    assert!(!db.has_blob(&promised.digest).unwrap());
    // More bytes than promised: refused as they arrive.
    let mut w = db.blob_writer_for(&promised).unwrap();
    w.write(b"0123456789").unwrap();
    assert!(matches!(
        w.write(b"!"),
        Err(StorageError::BlobMismatch { .. })
    ));
    drop(w);
    // An unfinished writer leaves nothing.
    let mut w = db.blob_writer_for(&promised).unwrap();
    w.write(b"01234").unwrap();
    drop(w);
    assert!(db.blobs().unwrap().is_empty());
    // The right bytes, in chunks.
    let mut w = db.blob_writer_for(&promised).unwrap();
    w.write(b"01234").unwrap();
    w.write(b"56789").unwrap();
    assert_eq!(w.written(), 10);
    assert_eq!(
        w.finish(Some("text/plain")).unwrap().digest,
        promised.digest
    );
    assert!(db.has_blob(&promised.digest).unwrap());
}

/// A transfer whose connection ended is set aside and the next transfer of the same blob
/// goes on from its last byte; what it kept is checked with the rest, a bounded number
/// are kept, and none survives a restart.
fn suspended_transfers_resume_where_they_stopped(h: &mut impl Harness) {
    use peerlite_proto::{BlobTransfer, StorageOp as Op, StorageReply as Reply};
    fn begin(db: &Database, blob: &Blob) -> (BlobTransfer, u64) {
        match db.execute(Op::BeginBlob { blob: blob.clone() }) {
            Reply::BlobBegun {
                transfer,
                resume_at,
            } => (transfer, resume_at),
            other => panic!("{other:?}"),
        }
    }
    fn write(db: &Database, transfer: BlobTransfer, bytes: &'static [u8]) -> Reply {
        db.execute(Op::WriteBlob {
            transfer,
            bytes: bytes.into(),
        })
    }
    let promised = Blob::new(BlobDigest::of(b"0123456789"), 10, None);
    let db = h.open();
    let (t, at) = begin(&db, &promised);
    assert_eq!(at, 0);
    assert_eq!(
        write(&db, t, b"01234"),
        Reply::BlobWritten { complete: false }
    );
    assert_eq!(db.execute(Op::SuspendBlob { transfer: t }), Reply::Done);
    assert!(!db.has_blob(&promised.digest).unwrap());
    let (t, at) = begin(&db, &promised);
    assert_eq!(at, 5);
    assert_eq!(
        write(&db, t, b"56789"),
        Reply::BlobWritten { complete: true }
    );
    assert!(db.has_blob(&promised.digest).unwrap());

    // Wrong bytes kept aside fail the check at the end, and nothing of them stays.
    let other = Blob::new(BlobDigest::of(b"abcdefghij"), 10, None);
    let (t, _) = begin(&db, &other);
    write(&db, t, b"xxxxx");
    db.execute(Op::SuspendBlob { transfer: t });
    let (t, at) = begin(&db, &other);
    assert_eq!(at, 5);
    assert_eq!(write(&db, t, b"fghij"), Reply::BlobMismatch);
    assert_eq!(begin(&db, &other).1, 0);

    // At most 16 are kept: the oldest goes first.
    let many: Vec<Blob> = (0..17u8)
        .map(|i| Blob::new(BlobDigest::of(&[i; 2]), 2, None))
        .collect();
    for b in &many {
        let (t, _) = begin(&db, b);
        db.execute(Op::WriteBlob {
            transfer: t,
            bytes: vec![b.digest.as_bytes()[0]].into(),
        });
        db.execute(Op::SuspendBlob { transfer: t });
    }
    assert_eq!(begin(&db, &many[0]).1, 0);
    assert_eq!(begin(&db, &many[16]).1, 1);

    // Nothing set aside survives a restart.
    let (t, _) = begin(&db, &other);
    write(&db, t, b"abcde");
    db.execute(Op::SuspendBlob { transfer: t });
    drop(db);
    let db = h.open();
    assert_eq!(begin(&db, &other).1, 0);
    assert_eq!(db.blobs().unwrap().len(), 1);
}

fn compaction_removes_only_unreferenced_blobs(h: &mut impl Harness) {
    let db = h.open();
    let kept = db.save_blob(&b"kept by a live document"[..], None).unwrap();
    let old = db
        .save_blob(&b"only an old revision had it"[..], None)
        .unwrap();
    let deleted = db
        .save_blob(&b"its document was deleted"[..], None)
        .unwrap();
    let conflict = db.save_blob(&b"on a conflicting branch"[..], None).unwrap();
    db.save(&dc(), &id("a"), photo_doc(&kept)).unwrap();
    db.save(&dc(), &id("b"), photo_doc(&old)).unwrap();
    db.save(&dc(), &id("b"), body(r#"{"photo": null}"#))
        .unwrap();
    db.save(&dc(), &id("c"), photo_doc(&deleted)).unwrap();
    db.delete(&dc(), &id("c"), Expected::Any).unwrap();
    let other = CollectionName::new("s", "other").unwrap();
    db.create_collection(&other).unwrap();
    db.save(&other, &id("a"), photo_doc(&kept)).unwrap();
    // A second branch of d refers to `conflict`.
    let base = Revision::first(false, body(r#"{"v": 0}"#)).unwrap();
    let left = base.child(false, body(r#"{"v": 1}"#), 20).unwrap();
    let right = base.child(false, photo_doc(&conflict), 20).unwrap();
    for (r, expected) in [(&left, None), (&right, Some(left.rev))] {
        let out = db
            .insert_revisions(
                &dc(),
                vec![RevisionInsert {
                    doc_id: id("d"),
                    revisions: vec![base.clone(), r.clone()],
                    mode: InsertMode::Guarded { expected },
                }],
            )
            .unwrap();
        assert!(
            !matches!(
                out[0],
                InsertOutcome::MissingBlobs(_) | InsertOutcome::Invalid(_)
            ),
            "{out:?}"
        );
    }
    // A fresh handle: blobs saved through the first one are no longer spared as fresh.
    drop(db);
    let db = h.open();
    let unreferenced = db
        .save_blob(&b"saved just now, about to be used"[..], None)
        .unwrap();
    let report = db.compact(std::time::SystemTime::now()).unwrap();
    let removed = [&old, &deleted];
    assert_eq!(report.blobs_removed, 2, "{report:?}");
    assert_eq!(
        report.bytes_reclaimed,
        removed.iter().map(|b| b.length).sum::<u64>()
    );
    assert_eq!(report.blobs_kept, 3);
    for b in removed {
        assert!(!db.has_blob(&b.digest).unwrap());
    }
    for b in [&kept, &conflict, &unreferenced] {
        assert!(db.has_blob(&b.digest).unwrap());
    }
    // Nothing left to reclaim; a reopened handle removes the unreferenced one.
    assert_eq!(
        db.compact(std::time::SystemTime::now())
            .unwrap()
            .blobs_removed,
        0
    );
    drop(db);
    let db = h.open();
    assert_eq!(
        db.compact(std::time::SystemTime::now())
            .unwrap()
            .blobs_removed,
        1
    );
    assert_eq!(
        db.get(&dc(), &id("a")).unwrap().unwrap().body,
        photo_doc(&kept)
    );
}

/// Compaction on disk after every document but one was purged, across a reopen (so
/// the data is in the store's tables): what is left reads the same, nothing purged comes
/// back; in memory there is nothing to rewrite. (How much the directory shrinks is
/// measured in docs/PERFORMANCE.md, not asserted: the journal goes as fjall rotates it.)
#[test]
fn compaction_after_a_purge_keeps_what_is_left_and_nothing_purged() {
    let mut h = FjallHarness::new(Default::default());
    let db = h.open();
    let ids: Vec<DocId> = (0..3000).map(|i| id(&format!("d{i:04}"))).collect();
    for round in 0..3 {
        let docs: Vec<_> = ids
            .iter()
            .map(|d| {
                (
                    d.clone(),
                    body(&format!(
                        r#"{{"round": {round}, "pad": "{}"}}"#,
                        "x".repeat(200)
                    )),
                )
            })
            .collect();
        db.save_batch(&dc(), docs).unwrap();
    }
    db.save(&dc(), &id("kept"), body(r#"{"v": 1}"#)).unwrap();
    assert_eq!(
        db.purge_documents(&dc(), &ids).unwrap(),
        peerlite_storage::Purged::All(3000)
    );
    drop(db);
    let db = h.open();
    db.compact(std::time::SystemTime::now()).unwrap();
    drop(db);
    let db = h.open();
    assert_eq!(
        db.get(&dc(), &id("kept")).unwrap().unwrap().body.to_json()["v"],
        1
    );
    assert_eq!(db.changes(&dc(), Seq::ZERO, 10).unwrap().len(), 1);
    assert_eq!(db.get(&dc(), &id("d0007")).unwrap(), None);
    assert_eq!(db.documents(&dc(), None, 10).unwrap().documents.len(), 1);
    let mem = Database::in_memory().unwrap();
    assert_eq!(
        mem.compact(std::time::SystemTime::now())
            .unwrap()
            .store_bytes_reclaimed,
        0
    );
}
