//! The document database: collections, documents, the changes feed and local documents.

use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use peerlite_proto::{
    BlobDigest, Body, Change, CollectionName, DEFAULT_MAX_DEPTH, DocId, RevId, RevTree, Revision,
    Seq,
};

use crate::blobs::{BlobStore, FileBlobs, MemBlobs};
use crate::keys::{self, CollectionId};
use crate::kv::{Durability, KvBackend, Space, WriteBatch};
use crate::notify::{ChangeNotice, ChangeOrigin, ListenerToken, Listeners, NotifyWhen};
use crate::record::{DocRecord, RevSummary, SeqEntry};
use crate::{CachedKv, FjallKv, FjallMemory, KvError, MemKv, StorageError};

/// Version of the database layout written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Maximum length of a local document ID in bytes.
pub const MAX_LOCAL_ID_LEN: usize = 250;

/// A database's unique identifier, created with the database.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatabaseUuid(pub [u8; 16]);

impl DatabaseUuid {
    /// A random UUID from the operating system's generator.
    pub fn random() -> Result<DatabaseUuid, StorageError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)
            .map_err(|e| StorageError::Kv(KvError::Fjall(format!("no randomness: {e}"))))?;
        Ok(DatabaseUuid(b))
    }
}

impl fmt::Display for DatabaseUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DatabaseUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUuid({self})")
    }
}

/// [`DatabaseConfig::max_blob_bytes`]'s default: 4 GiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 4 << 30;

/// Options for opening a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Durability of each write (default [`Durability::Sync`]).
    pub durability: Durability,
    /// Revisions kept along each branch of a revision tree (default 20).
    pub max_rev_depth: usize,
    /// The UUID to give a *new* database (default: random). Ignored when opening an
    /// existing one. Simulations set it for reproducibility.
    pub uuid: Option<DatabaseUuid>,
    /// Memory limits of the on-disk store (ignored by other backends).
    pub memory: FjallMemory,
    /// The largest blob the database stores, saved locally or received (default 4 GiB).
    pub max_blob_bytes: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            durability: Durability::Sync,
            max_rev_depth: DEFAULT_MAX_DEPTH,
            uuid: None,
            memory: FjallMemory::default(),
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
        }
    }
}

/// What a save expects the document's current revision to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expected {
    /// No check: the save goes on top of whatever is current (last write wins).
    #[default]
    Any,
    /// The document must not exist (or be deleted).
    Missing,
    /// The current revision must be this one (optimistic concurrency).
    Rev(RevId),
}

/// A document as read from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The document ID.
    pub id: DocId,
    /// Its current revision.
    pub rev: RevId,
    /// True when the current revision is a tombstone.
    pub deleted: bool,
    /// The current revision's body.
    pub body: Body,
    /// The sequence of its latest change.
    pub sequence: Seq,
    /// True when it has more than one live branch (an unresolved conflict).
    pub conflicted: bool,
}

/// What [`Database::purge_documents`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purged {
    /// Every document named was purged: this many (each ID counted once).
    All(usize),
    /// These IDs name no document, so nothing was purged.
    Unknown(Vec<DocId>),
}

/// The result of a local write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The new current revision (or, when nothing changed, the current one).
    pub rev: RevId,
    /// The sequence assigned to the change (or, when nothing changed, the document's).
    pub seq: Seq,
    /// False when the body saved equals the current revision's: then nothing is written,
    /// no revision is made and nothing replicates.
    pub changed: bool,
}

/// One local edit inside [`Database::write_local`].
struct LocalEdit {
    id: DocId,
    deleted: bool,
    body: Body,
    expected: Expected,
    /// Set the document's expiration in the same commit.
    expires: Option<std::time::SystemTime>,
}

/// One page of documents from [`Database::documents`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocumentPage {
    /// Live documents in ID order.
    pub documents: Vec<Document>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<DocId>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CollectionState {
    pub(crate) id: CollectionId,
    pub(crate) last_seq: Seq,
}

#[derive(Default)]
pub(crate) struct Catalog {
    pub(crate) collections: BTreeMap<CollectionName, CollectionState>,
    next_id: CollectionId,
}

pub(crate) struct Inner {
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) config: DatabaseConfig,
    uuid: DatabaseUuid,
    pub(crate) catalog: RwLock<Catalog>,
    /// Serialises writers: a write reads, decides and commits under this lock.
    pub(crate) writer: Mutex<()>,
    pub(crate) listeners: Listeners,
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// Blobs saved through this handle and not referenced yet: compaction spares them.
    pub(crate) fresh_blobs: Mutex<BTreeSet<BlobDigest>>,
    /// Blobs being received by replication, by transfer number.
    pub(crate) transfers: Mutex<crate::blobs::Transfers>,
}

/// A Peerlite document database.
///
/// Cheap to clone (all clones share one database) and safe to use from many threads.
/// Writes are serialised; each document change — the document record, its revision tree
/// and its changes-feed entry (the old entry removed) — commits in one atomic batch.
///
/// ```
/// use peerlite_storage::{Database, Expected};
/// use peerlite_proto::{Body, CollectionName, DocId, Seq};
///
/// let db = Database::in_memory()?;
/// let tasks: CollectionName = "app.tasks".parse()?;
/// db.create_collection(&tasks)?;
///
/// let id = DocId::new("task-1")?;
/// let v1 = db.save(&tasks, &id, Body::from_json_str(r#"{"title": "write"}"#)?)?;
/// // Optimistic concurrency: this save only applies on top of v1.
/// db.save_with(&tasks, &id, Body::from_json_str(r#"{"title": "ship"}"#)?, Expected::Rev(v1.rev))?;
///
/// let doc = db.get(&tasks, &id)?.expect("saved");
/// assert_eq!(doc.body.to_json()["title"], "ship");
/// assert_eq!(db.changes(&tasks, Seq::ZERO, 100)?.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("uuid", &self.inner.uuid)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (or creates) a database on disk in directory `path`, with default options.
    /// A new database appears whole or not at all: a process killed while creating it
    /// leaves nothing at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Database, StorageError> {
        Self::open_with_config(path, DatabaseConfig::default())
    }

    /// Opens (or creates) a database on disk with the given options.
    pub fn open_with_config(
        path: impl AsRef<Path>,
        config: DatabaseConfig,
    ) -> Result<Database, StorageError> {
        let path = path.as_ref();
        if path.exists() {
            crate::create::remove_leftovers(path);
        } else {
            crate::create::create(path, &config)?;
        }
        let kv = FjallKv::open_with(path, &config.memory)?;
        // After the store's lock: no other process uses the blob directory.
        let blobs = FileBlobs::open(path.join("blobs"))?;
        let cache = usize::try_from(config.memory.record_cache_bytes).unwrap_or(usize::MAX);
        Self::with_stores(Arc::new(CachedKv::new(kv, cache)), Arc::new(blobs), config)
    }

    /// A new, empty in-memory database.
    pub fn in_memory() -> Result<Database, StorageError> {
        Self::with_backend(Arc::new(MemKv::new()), DatabaseConfig::default())
    }

    /// Opens a database on any backend (a new one is initialised), its blobs in memory.
    pub fn with_backend(
        kv: Arc<dyn KvBackend>,
        config: DatabaseConfig,
    ) -> Result<Database, StorageError> {
        Self::with_stores(kv, Arc::new(MemBlobs::new()), config)
    }

    /// Opens a database on any backend and blob store (a new one is initialised).
    pub fn with_stores(
        kv: Arc<dyn KvBackend>,
        blobs: Arc<dyn BlobStore>,
        config: DatabaseConfig,
    ) -> Result<Database, StorageError> {
        let uuid = match kv.get(Space::Meta, keys::META_UUID)? {
            Some(existing) => {
                check_format(kv.as_ref())?;
                let b: [u8; 16] = existing.as_slice().try_into().map_err(|_| {
                    StorageError::corrupt("metadata", keys::META_UUID, "UUID is not 16 bytes")
                })?;
                DatabaseUuid(b)
            }
            None => {
                let uuid = match config.uuid {
                    Some(u) => u,
                    None => DatabaseUuid::random()?,
                };
                let mut batch = WriteBatch::new();
                batch.put(
                    Space::Meta,
                    keys::META_FORMAT.to_vec(),
                    FORMAT_VERSION.to_be_bytes().to_vec(),
                );
                batch.put(Space::Meta, keys::META_UUID.to_vec(), uuid.0.to_vec());
                let default = CollectionName::default();
                batch.put(
                    Space::Meta,
                    keys::collection_meta_key(default.as_str()),
                    1u32.to_be_bytes().to_vec(),
                );
                kv.commit(batch, Durability::Sync)?;
                uuid
            }
        };
        let catalog = load_catalog(kv.as_ref())?;
        Ok(Database {
            inner: Arc::new(Inner {
                kv,
                config,
                uuid,
                catalog: RwLock::new(catalog),
                writer: Mutex::new(()),
                listeners: Listeners::default(),
                blobs,
                fresh_blobs: Mutex::new(BTreeSet::new()),
                transfers: Mutex::new(Default::default()),
            }),
        })
    }

    /// The database's UUID.
    pub fn uuid(&self) -> DatabaseUuid {
        self.inner.uuid
    }

    /// The options the database was opened with.
    pub fn config(&self) -> &DatabaseConfig {
        &self.inner.config
    }

    /// Creates a collection; does nothing if it exists.
    pub fn create_collection(&self, name: &CollectionName) -> Result<(), StorageError> {
        let _w = self.lock_writer()?;
        if self.read_catalog()?.collections.contains_key(name) {
            return Ok(());
        }
        let id = self.read_catalog()?.next_id;
        if id > keys::MAX_COLLECTION_ID {
            return Err(StorageError::TooManyCollections);
        }
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Meta,
            keys::collection_meta_key(name.as_str()),
            id.to_be_bytes().to_vec(),
        );
        // A collection deleted under this name continues its sequence: a peer's
        // checkpoint of the old one must not skip the new one's changes.
        let retired = keys::retired_seq_meta_key(name.as_str());
        let last_seq = match self.inner.kv.get(Space::Meta, &retired)? {
            Some(b) => Seq(u64::from_be_bytes(b.as_slice().try_into().map_err(
                |_| StorageError::corrupt("collection", &retired, "last sequence is not 8 bytes"),
            )?)),
            None => Seq::ZERO,
        };
        if last_seq > Seq::ZERO {
            batch.put(
                Space::Meta,
                keys::last_seq_meta_key(id),
                last_seq.0.to_be_bytes().to_vec(),
            );
            batch.delete(Space::Meta, retired);
        }
        self.inner.kv.commit(batch, self.inner.config.durability)?;
        let mut cat = self.write_catalog()?;
        cat.collections
            .insert(name.clone(), CollectionState { id, last_seq });
        cat.next_id = id + 1;
        Ok(())
    }

    /// Deletes a collection and every document in it — records, tombstones, changes feed
    /// — in one atomic commit, and returns how many documents it held. Like a purge it is
    /// not replicated: peers keep theirs. Blobs only its documents referred to are
    /// reclaimed by [`Database::compact`]. The default collection cannot be deleted
    /// ([`StorageError::DefaultCollection`]).
    ///
    /// ```
    /// use peerlite_proto::{Body, CollectionName, DocId};
    /// use peerlite_storage::Database;
    ///
    /// let db = Database::in_memory()?;
    /// let notes: CollectionName = "app.notes".parse()?;
    /// db.create_collection(&notes)?;
    /// db.save(&notes, &DocId::new("n1")?, Body::from_json_str("{}")?)?;
    /// assert_eq!(db.delete_collection(&notes)?, 1);
    /// assert!(!db.has_collection(&notes)?);
    /// assert!(db.delete_collection(&CollectionName::default()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_collection(&self, name: &CollectionName) -> Result<u64, StorageError> {
        if *name == CollectionName::default() {
            return Err(StorageError::DefaultCollection);
        }
        let _w = self.lock_writer()?;
        let state = self.collection(name)?;
        let mut batch = WriteBatch::new();
        let mut docs = 0;
        for space in [Space::Docs, Space::Seq] {
            let mut range = keys::collection_range(state.id);
            loop {
                let rows = self.inner.kv.scan(space, range.clone(), 1024)?;
                let done = rows.len() < 1024;
                if let Some((last, _)) = rows.last() {
                    range.0 = std::ops::Bound::Excluded(last.clone());
                }
                for (key, _) in rows {
                    docs += u64::from(space == Space::Docs);
                    batch.delete(space, key);
                }
                if done {
                    break;
                }
            }
        }
        // Its documents' expirations.
        let expiring =
            self.inner
                .kv
                .scan(Space::Meta, keys::expires_range(state.id), usize::MAX)?;
        for (key, _) in expiring {
            let id = keys::doc_id_from_key(&key[keys::META_EXPIRES_PREFIX.len()..])?;
            self.stage_expiration_removal(&mut batch, state.id, &id)?;
        }
        batch.delete(Space::Meta, keys::collection_meta_key(name.as_str()));
        batch.delete(Space::Meta, keys::last_seq_meta_key(state.id));
        batch.delete(Space::Meta, keys::forgotten_key(state.id));
        batch.delete(Space::Meta, keys::forget_scanned_key(state.id));
        batch.put(
            Space::Meta,
            keys::retired_seq_meta_key(name.as_str()),
            state.last_seq.0.to_be_bytes().to_vec(),
        );
        self.inner.kv.commit(batch, self.inner.config.durability)?;
        self.write_catalog()?.collections.remove(name);
        Ok(docs)
    }

    /// The collections, in name order.
    pub fn collections(&self) -> Result<Vec<CollectionName>, StorageError> {
        Ok(self.read_catalog()?.collections.keys().cloned().collect())
    }

    /// True when the collection exists.
    pub fn has_collection(&self, name: &CollectionName) -> Result<bool, StorageError> {
        Ok(self.read_catalog()?.collections.contains_key(name))
    }

    /// The sequence of the collection's latest change ([`Seq::ZERO`] if none).
    pub fn last_sequence(&self, collection: &CollectionName) -> Result<Seq, StorageError> {
        Ok(self.collection(collection)?.last_seq)
    }

    /// Saves a new revision of a document on top of its current revision (or as its first
    /// revision), without a concurrency check. Saving the body the document already has
    /// is a no-op ([`WriteResult::changed`] is false): no revision, nothing to replicate,
    /// so re-importing unchanged data sends nothing.
    pub fn save(
        &self,
        collection: &CollectionName,
        id: &DocId,
        body: Body,
    ) -> Result<WriteResult, StorageError> {
        self.save_with(collection, id, body, Expected::Any)
    }

    /// Saves a new revision, failing with [`StorageError::Conflict`] when the current
    /// revision is not what `expected` says.
    pub fn save_with(
        &self,
        collection: &CollectionName,
        id: &DocId,
        body: Body,
        expected: Expected,
    ) -> Result<WriteResult, StorageError> {
        self.write_one(collection, id, false, body, expected)
    }

    /// Saves a document and sets when it expires ([`Database::set_expiration`]) in one
    /// atomic commit: a crash leaves either both or neither. Saving the body it already
    /// has still sets the expiration.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use peerlite_proto::{Body, CollectionName, DocId};
    /// use peerlite_storage::{Database, Expected};
    ///
    /// let db = Database::in_memory()?;
    /// let (c, id) = (CollectionName::default(), DocId::new("otp")?);
    /// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    /// db.save_expiring(&c, &id, Body::from_json_str(r#"{"code": 4711}"#)?, Expected::Any, at)?;
    /// assert_eq!(db.expiration(&c, &id)?, Some(at));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_expiring(
        &self,
        collection: &CollectionName,
        id: &DocId,
        body: Body,
        expected: Expected,
        expires: std::time::SystemTime,
    ) -> Result<WriteResult, StorageError> {
        let edit = LocalEdit {
            id: id.clone(),
            deleted: false,
            body,
            expected,
            expires: Some(expires),
        };
        let mut results = self.write_local(collection, vec![edit])?;
        results.pop().ok_or_else(|| {
            StorageError::corrupt("document", id.as_str().as_bytes(), "no write result")
        })
    }

    /// Deletes a document by adding a tombstone revision. Fails with
    /// [`StorageError::NotFound`] if it does not exist or is already deleted.
    pub fn delete(
        &self,
        collection: &CollectionName,
        id: &DocId,
        expected: Expected,
    ) -> Result<WriteResult, StorageError> {
        self.write_one(collection, id, true, Body::empty(), expected)
    }

    /// Saves many documents in one atomic commit, each on top of its current revision
    /// (last write wins). Either every document is saved or, on error, none is. Much
    /// faster than one [`Database::save`] per document, which commits each time.
    pub fn save_batch(
        &self,
        collection: &CollectionName,
        docs: impl IntoIterator<Item = (DocId, Body)>,
    ) -> Result<Vec<WriteResult>, StorageError> {
        let edits = docs
            .into_iter()
            .map(|(id, body)| LocalEdit {
                id,
                deleted: false,
                body,
                expected: Expected::Any,
                expires: None,
            })
            .collect();
        self.write_local(collection, edits)
    }

    fn write_one(
        &self,
        collection: &CollectionName,
        id: &DocId,
        deleted: bool,
        body: Body,
        expected: Expected,
    ) -> Result<WriteResult, StorageError> {
        let edit = LocalEdit {
            id: id.clone(),
            deleted,
            body,
            expected,
            expires: None,
        };
        let mut results = self.write_local(collection, vec![edit])?;
        results.pop().ok_or_else(|| {
            StorageError::corrupt("document", id.as_str().as_bytes(), "no write result")
        })
    }

    /// Applies local edits atomically: checks every expectation, builds the new revisions,
    /// then commits all documents in one batch.
    fn write_local(
        &self,
        collection: &CollectionName,
        edits: Vec<LocalEdit>,
    ) -> Result<Vec<WriteResult>, StorageError> {
        let depth = self.inner.config.max_rev_depth;
        let w = self.lock_writer()?;
        let state = self.collection(collection)?;
        // Each touched document: (sequence on disk before, working tree, latest sequence).
        let mut work: BTreeMap<DocId, (Option<Seq>, RevTree, Seq)> = BTreeMap::new();
        let mut results = Vec::with_capacity(edits.len());
        let mut notices = Vec::with_capacity(edits.len());
        let mut seq = state.last_seq;
        let mut expirations = Vec::new();
        for LocalEdit {
            id,
            deleted,
            body,
            expected,
            expires,
        } in edits
        {
            if let Some(at) = expires {
                expirations.push((id.clone(), at));
            }
            let entry = match work.entry(id.clone()) {
                btree_map::Entry::Occupied(e) => e.into_mut(),
                btree_map::Entry::Vacant(e) => {
                    let (disk_seq, tree) = match self.load_doc(state.id, &id)? {
                        Some(rec) => (Some(rec.seq), rec.tree),
                        None => (None, RevTree::new()),
                    };
                    e.insert((disk_seq, tree, Seq::ZERO))
                }
            };
            let tree = &mut entry.1;
            let current = tree.current().map(|(rev, n)| (*rev, n.is_deleted()));
            let live_current = current.filter(|(_, del)| !del).map(|(rev, _)| rev);
            let ok = match expected {
                Expected::Any => true,
                Expected::Missing => live_current.is_none(),
                Expected::Rev(rev) => live_current == Some(rev),
            };
            if !ok {
                return Err(StorageError::Conflict {
                    doc_id: id,
                    current: live_current,
                });
            }
            if deleted && live_current.is_none() {
                return Err(StorageError::NotFound {
                    collection: collection.clone(),
                    doc_id: id,
                });
            }
            if !deleted {
                self.check_blobs(&id, &body)?;
            }
            let revision = match current {
                None => Revision::first(deleted, body)?,
                Some((parent, parent_deleted)) => {
                    let parent_rev = tree.revision(&parent, depth).ok_or_else(|| {
                        StorageError::corrupt(
                            "document",
                            id.as_str().as_bytes(),
                            "current revision has no body",
                        )
                    })?;
                    if !deleted && !parent_deleted && parent_rev.body == body {
                        // The same body again: no new revision, nothing to replicate.
                        let doc_seq = match entry.2 {
                            Seq::ZERO => entry.0.unwrap_or(Seq::ZERO),
                            touched => touched,
                        };
                        results.push(WriteResult {
                            rev: parent,
                            seq: doc_seq,
                            changed: false,
                        });
                        continue;
                    }
                    parent_rev.child(deleted, body, depth)?
                }
            };
            tree.insert(&revision)
                .map_err(|e| StorageError::corrupt("document", id.as_str().as_bytes(), e))?;
            tree.prune(depth);
            seq = seq.next();
            entry.2 = seq;
            results.push(WriteResult {
                rev: revision.rev,
                seq,
                changed: true,
            });
            notices.push(ChangeNotice {
                collection: collection.clone(),
                doc_id: id,
                rev: revision.rev,
                deleted,
                seq,
                origin: ChangeOrigin::Local,
            });
        }
        let mut batch = WriteBatch::new();
        for (id, at) in &expirations {
            self.stage_expiration(&mut batch, state.id, id, Some(*at))?;
        }
        if notices.is_empty() {
            if !expirations.is_empty() {
                self.inner.kv.commit(batch, self.inner.config.durability)?;
            }
            return Ok(results);
        }
        // Documents whose every edit was a no-op stay as they are.
        for (id, (disk_seq, tree, doc_seq)) in work.iter().filter(|(_, w)| w.2 != Seq::ZERO) {
            self.stage_doc(&mut batch, state.id, id, *disk_seq, *doc_seq, tree)?;
        }
        batch.put(
            Space::Meta,
            keys::last_seq_meta_key(state.id),
            seq.0.to_be_bytes().to_vec(),
        );
        self.commit_changes(collection, seq, batch, &notices)?;
        drop(w);
        self.inner.listeners.notify(NotifyWhen::Durable, &notices);
        Ok(results)
    }

    /// Reads a live document; `None` if it does not exist or is deleted.
    pub fn get(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<Document>, StorageError> {
        Ok(self
            .get_including_deleted(collection, id)?
            .filter(|d| !d.deleted))
    }

    /// Reads a document even when its current revision is a tombstone.
    pub fn get_including_deleted(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<Document>, StorageError> {
        let state = self.collection(collection)?;
        let Some(rec) = self.load_doc(state.id, id)? else {
            return Ok(None);
        };
        document_from(id.clone(), &rec).map(Some)
    }

    /// The whole revision tree of a document.
    pub fn rev_tree(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<RevTree>, StorageError> {
        let state = self.collection(collection)?;
        Ok(self.load_doc(state.id, id)?.map(|r| r.tree))
    }

    /// Removes every trace of a document (not replicated: peers keep their copies).
    /// Returns whether it existed.
    pub fn purge(&self, collection: &CollectionName, id: &DocId) -> Result<bool, StorageError> {
        let purged = self.purge_documents(collection, std::slice::from_ref(id))?;
        Ok(purged == Purged::All(1))
    }

    /// Removes every trace of these documents — revisions, tombstones, changes-feed
    /// entries — in one atomic commit, or nothing at all if any ID names no document.
    /// Not replicated: a peer keeps its copy, and does not send it back until it changes
    /// there (its changes feed is past it; a replication started over with reset
    /// checkpoints does send it). Blobs only purged documents referred to are reclaimed
    /// by [`Database::compact`].
    ///
    /// ```
    /// use peerlite_proto::{Body, CollectionName, DocId};
    /// use peerlite_storage::{Database, Purged};
    ///
    /// let db = Database::in_memory()?;
    /// let c = CollectionName::default();
    /// let (a, b) = (DocId::new("a")?, DocId::new("b")?);
    /// db.save(&c, &a, Body::from_json_str("{}")?)?;
    /// db.save(&c, &b, Body::from_json_str("{}")?)?;
    /// let typo = DocId::new("c")?;
    /// assert_eq!(db.purge_documents(&c, &[a.clone(), typo.clone()])?, Purged::Unknown(vec![typo]));
    /// assert!(db.get(&c, &a)?.is_some(), "nothing was purged");
    /// assert_eq!(db.purge_documents(&c, &[a.clone(), b, a.clone()])?, Purged::All(2));
    /// assert!(db.changes(&c, peerlite_proto::Seq::ZERO, 10)?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge_documents(
        &self,
        collection: &CollectionName,
        ids: &[DocId],
    ) -> Result<Purged, StorageError> {
        let _w = self.lock_writer()?;
        let state = self.collection(collection)?;
        let mut batch = WriteBatch::new();
        let (mut seen, mut unknown) = (BTreeSet::new(), Vec::new());
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            match self.load_doc(state.id, id)? {
                Some(rec) => {
                    batch.delete(Space::Docs, keys::doc_key(state.id, id));
                    batch.delete(Space::Seq, keys::seq_key(state.id, rec.seq));
                    self.stage_expiration_removal(&mut batch, state.id, id)?;
                }
                None => unknown.push(id.clone()),
            }
        }
        if !unknown.is_empty() {
            return Ok(Purged::Unknown(unknown));
        }
        self.inner.kv.commit(batch, self.inner.config.durability)?;
        Ok(Purged::All(seen.len()))
    }

    /// Up to `limit` changes with sequence greater than `since`, in sequence order. Each
    /// document appears once, at its latest change.
    pub fn changes(
        &self,
        collection: &CollectionName,
        since: Seq,
        limit: usize,
    ) -> Result<Vec<Change>, StorageError> {
        let state = self.collection(collection)?;
        let rows = self
            .inner
            .kv
            .scan(Space::Seq, keys::seq_after(state.id, since), limit)?;
        rows.into_iter()
            .map(|(k, v)| {
                let seq = keys::seq_from_key(&k)?;
                let SeqEntry(doc_id, rev, deleted, other_leaves) = SeqEntry::decode(&k, &v)?;
                Ok(Change {
                    seq,
                    doc_id,
                    rev,
                    deleted,
                    other_leaves,
                })
            })
            .collect()
    }

    /// A page of live documents in ID order, starting after `after`. A page may hold fewer
    /// than `limit` documents when deleted ones were skipped; continue with
    /// [`DocumentPage::next`] until it is `None`.
    pub fn documents(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<DocumentPage, StorageError> {
        let state = self.collection(collection)?;
        let limit = limit.max(1);
        let rows = self
            .inner
            .kv
            .scan(Space::Docs, keys::docs_after(state.id, after), limit)?;
        let full = rows.len() == limit;
        let mut page = DocumentPage::default();
        let mut last = None;
        for (k, v) in rows {
            let id = keys::doc_id_from_key(&k)?;
            let rec = DocRecord::decode(&k, &v)?;
            let doc = document_from(id.clone(), &rec)?;
            if !doc.deleted {
                page.documents.push(doc);
            }
            last = Some(id);
        }
        page.next = if full { last } else { None };
        Ok(page)
    }

    /// Reads a local document (not replicated; used for checkpoints).
    pub fn get_local(&self, id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_local_id(id)?;
        Ok(self.inner.kv.get(Space::Local, id.as_bytes())?)
    }

    /// IDs of the local documents that start with `prefix`, in order.
    pub fn local_ids(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let start = std::ops::Bound::Included(prefix.as_bytes().to_vec());
        let rows = self.inner.kv.scan(
            Space::Local,
            (start, std::ops::Bound::Unbounded),
            usize::MAX,
        )?;
        Ok(rows
            .into_iter()
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix.as_bytes()))
            .filter_map(|k| String::from_utf8(k).ok())
            .collect())
    }

    /// Writes a local document.
    pub fn put_local(&self, id: &str, value: &[u8]) -> Result<(), StorageError> {
        check_local_id(id)?;
        let mut batch = WriteBatch::new();
        batch.put(Space::Local, id.as_bytes().to_vec(), value.to_vec());
        Ok(self.inner.kv.commit(batch, self.inner.config.durability)?)
    }

    /// Removes a local document.
    pub fn delete_local(&self, id: &str) -> Result<(), StorageError> {
        check_local_id(id)?;
        let mut batch = WriteBatch::new();
        batch.delete(Space::Local, id.as_bytes().to_vec());
        Ok(self.inner.kv.commit(batch, self.inner.config.durability)?)
    }

    /// Makes every write so far durable (useful with [`Durability::Buffered`]).
    pub fn persist(&self) -> Result<(), StorageError> {
        Ok(self.inner.kv.persist()?)
    }

    /// Calls `listener` after every committed change, once it is durable, with the
    /// changes of one commit: [`Database::add_change_listener_when`] with
    /// [`NotifyWhen::Durable`].
    ///
    /// Listeners run on the writing thread after the write lock is released; keep them
    /// short (e.g. send to a channel). Notices from concurrent writers may arrive out of
    /// sequence order.
    pub fn add_change_listener(
        &self,
        listener: impl Fn(&[ChangeNotice]) + Send + Sync + 'static,
    ) -> ListenerToken {
        self.add_change_listener_when(NotifyWhen::Durable, listener)
    }

    /// Calls `listener` after every committed change, with the changes of one commit,
    /// at the point `when` says: once durable, or as soon as readable (which is how
    /// replication runtimes feed live changes to their state machines, so that a change
    /// travels to the peer while its `fdatasync` runs here).
    ///
    /// Keep listeners short (e.g. send to a channel): they run on the writing thread.
    /// [`NotifyWhen::Visible`] listeners run while the write lock is held and must not
    /// write to the database.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use peerlite_storage::{Database, NotifyWhen};
    /// use peerlite_proto::{Body, CollectionName, DocId};
    ///
    /// let db = Database::in_memory()?;
    /// let heard = Arc::new(Mutex::new(Vec::new()));
    /// let log = heard.clone();
    /// db.add_change_listener_when(NotifyWhen::Visible, move |notices| {
    ///     log.lock().unwrap().extend(notices.iter().map(|n| n.seq));
    /// });
    /// let c = CollectionName::default();
    /// db.save(&c, &DocId::new("a")?, Body::from_json_str("{}")?)?;
    /// assert_eq!(heard.lock().unwrap().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_change_listener_when(
        &self,
        when: NotifyWhen,
        listener: impl Fn(&[ChangeNotice]) + Send + Sync + 'static,
    ) -> ListenerToken {
        self.inner.listeners.add(when, Arc::new(listener))
    }

    /// Removes a listener; returns whether it was registered.
    pub fn remove_change_listener(&self, token: ListenerToken) -> bool {
        self.inner.listeners.remove(token)
    }

    // ---- internals shared with the replication operations ----

    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, ()>, StorageError> {
        self.inner
            .writer
            .lock()
            .map_err(|_| StorageError::Kv(KvError::Poisoned))
    }

    pub(crate) fn read_catalog(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, Catalog>, StorageError> {
        self.inner
            .catalog
            .read()
            .map_err(|_| StorageError::Kv(KvError::Poisoned))
    }

    fn write_catalog(&self) -> Result<std::sync::RwLockWriteGuard<'_, Catalog>, StorageError> {
        self.inner
            .catalog
            .write()
            .map_err(|_| StorageError::Kv(KvError::Poisoned))
    }

    pub(crate) fn collection(
        &self,
        name: &CollectionName,
    ) -> Result<CollectionState, StorageError> {
        self.read_catalog()?
            .collections
            .get(name)
            .copied()
            .ok_or_else(|| StorageError::NoSuchCollection(name.clone()))
    }

    /// Commits the changes `batch` makes to `collection` (its last sequence becoming
    /// `seq`), as durably as configured, and tells [`NotifyWhen::Visible`] listeners of
    /// `notices` as soon as they are readable. With [`Durability::Sync`] and such
    /// listeners, that is before the sync: the batch commits buffered, the listeners
    /// hear of it, then the journal is synced. Call with the write lock held, and tell
    /// [`NotifyWhen::Durable`] listeners after releasing it.
    pub(crate) fn commit_changes(
        &self,
        collection: &CollectionName,
        seq: Seq,
        batch: WriteBatch,
        notices: &[ChangeNotice],
    ) -> Result<(), StorageError> {
        let durability = self.inner.config.durability;
        let early = durability == Durability::Sync && self.inner.listeners.any_visible();
        let first = if early {
            Durability::Buffered
        } else {
            durability
        };
        self.inner.kv.commit(batch, first)?;
        self.set_last_seq(collection, seq)?;
        self.inner.listeners.notify(NotifyWhen::Visible, notices);
        if early {
            // A failed sync poisons the store: the change stays readable (and may have
            // been sent), but this write reports the failure and no later write succeeds.
            self.inner.kv.persist()?;
        }
        Ok(())
    }

    pub(crate) fn set_last_seq(&self, name: &CollectionName, seq: Seq) -> Result<(), StorageError> {
        if let Some(state) = self.write_catalog()?.collections.get_mut(name) {
            state.last_seq = seq;
        }
        Ok(())
    }

    pub(crate) fn load_doc(
        &self,
        cid: CollectionId,
        id: &DocId,
    ) -> Result<Option<DocRecord>, StorageError> {
        let key = keys::doc_key(cid, id);
        let bytes = self.inner.kv.get(Space::Docs, &key)?;
        bytes.map(|b| DocRecord::decode(&key, &b)).transpose()
    }

    /// The revisions of a document that is about to be read again (see
    /// [`KvBackend::get_for_reuse`]), without decoding its bodies.
    pub(crate) fn load_revs_for_reuse(
        &self,
        cid: CollectionId,
        id: &DocId,
    ) -> Result<Option<RevSummary>, StorageError> {
        let key = keys::doc_key(cid, id);
        let bytes = self.inner.kv.get_for_reuse(Space::Docs, &key)?;
        bytes.map(|b| DocRecord::decode_revs(&key, &b)).transpose()
    }

    /// Adds the writes of one document change to `batch`: the record with its new
    /// sequence, the new changes-feed entry, and removal of the old one.
    pub(crate) fn stage_doc(
        &self,
        batch: &mut WriteBatch,
        cid: CollectionId,
        id: &DocId,
        old_seq: Option<Seq>,
        seq: Seq,
        tree: &RevTree,
    ) -> Result<(), StorageError> {
        let (rev, deleted) = tree
            .current()
            .map(|(r, n)| (*r, n.is_deleted()))
            .ok_or_else(|| {
                StorageError::corrupt("document", id.as_str().as_bytes(), "no revisions")
            })?;
        if let Some(old) = old_seq {
            batch.delete(Space::Seq, keys::seq_key(cid, old));
        }
        batch.put(
            Space::Docs,
            keys::doc_key(cid, id),
            DocRecord::encode(seq, tree),
        );
        let others = tree.leaf_ids().into_iter().filter(|l| *l != rev).collect();
        batch.put(
            Space::Seq,
            keys::seq_key(cid, seq),
            SeqEntry(id.clone(), rev, deleted, others).encode(),
        );
        Ok(())
    }
}

fn document_from(id: DocId, rec: &DocRecord) -> Result<Document, StorageError> {
    let (rev, node) = rec
        .tree
        .current()
        .ok_or_else(|| StorageError::corrupt("document", id.as_str().as_bytes(), "no revisions"))?;
    let body = node.body().cloned().ok_or_else(|| {
        StorageError::corrupt(
            "document",
            id.as_str().as_bytes(),
            "current revision has no body",
        )
    })?;
    Ok(Document {
        rev: *rev,
        deleted: node.is_deleted(),
        body,
        sequence: rec.seq,
        conflicted: rec.tree.is_conflicted(),
        id,
    })
}

fn check_local_id(id: &str) -> Result<(), StorageError> {
    if id.is_empty() || id.len() > MAX_LOCAL_ID_LEN {
        return Err(StorageError::InvalidLocalId);
    }
    Ok(())
}

fn check_format(kv: &dyn KvBackend) -> Result<(), StorageError> {
    let found = match kv.get(Space::Meta, keys::META_FORMAT)? {
        None => {
            return Err(StorageError::corrupt(
                "metadata",
                keys::META_FORMAT,
                "missing format version",
            ));
        }
        Some(b) => u32::from_be_bytes(b.as_slice().try_into().map_err(|_| {
            StorageError::corrupt("metadata", keys::META_FORMAT, "format is not 4 bytes")
        })?),
    };
    if found != FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

fn load_catalog(kv: &dyn KvBackend) -> Result<Catalog, StorageError> {
    let mut catalog = Catalog {
        collections: BTreeMap::new(),
        next_id: 1,
    };
    let rows = kv.scan(
        Space::Meta,
        keys::prefix_range(keys::META_COLLECTION_PREFIX),
        usize::MAX,
    )?;
    for (k, v) in rows {
        let name = std::str::from_utf8(&k[keys::META_COLLECTION_PREFIX.len()..])
            .ok()
            .and_then(|s| CollectionName::parse(s).ok())
            .ok_or_else(|| StorageError::corrupt("collection", &k, "invalid collection name"))?;
        let id = u32::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| StorageError::corrupt("collection", &k, "id is not 4 bytes"))?,
        );
        let last_seq = match kv.get(Space::Meta, &keys::last_seq_meta_key(id))? {
            None => Seq::ZERO,
            Some(b) => Seq(u64::from_be_bytes(b.as_slice().try_into().map_err(
                |_| StorageError::corrupt("collection", &k, "last sequence is not 8 bytes"),
            )?)),
        };
        catalog.next_id = catalog.next_id.max(id.saturating_add(1));
        catalog
            .collections
            .insert(name, CollectionState { id, last_seq });
    }
    Ok(catalog)
}
