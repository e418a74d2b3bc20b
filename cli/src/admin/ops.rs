//! What the document, blob and identity commands do to a database, written once: the
//! `peerlite` commands call these on a database they open, and the admin server calls
//! them on the database it serves.

use std::path::Path;
use std::time::{Duration, SystemTime};

use peerlite_proto::{Body, CollectionName, DocId, Seq};
use peerlite_runtime::{IdentityAttributes, TlsIdentity};
use peerlite_storage::{Database, Expected, Purged, StorageError};

use super::api::{
    BlobEntry, BlobTotals, Change, CollectionInfo, Compacted, Doc, DocMeta, DocPage, Expiration,
    Identity, Imported, Info, Leaf, NewIdentity, Retention, Written,
};

/// Why an operation failed; its message names the cause and, where there is one, the
/// fix. The admin interface answers it with [`Failure::status`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// What it names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// It conflicts with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The database failed (500).
    #[error("{0}")]
    Internal(String),
}

impl Failure {
    /// The HTTP status the admin interface answers with.
    pub fn status(&self) -> u16 {
        match self {
            Failure::BadRequest(_) => 400,
            Failure::NotFound(_) => 404,
            Failure::Conflict(_) => 409,
            Failure::Internal(_) => 500,
        }
    }

    /// The failure an HTTP error answer stands for.
    pub fn from_status(status: u16, message: String) -> Failure {
        match status {
            404 => Failure::NotFound(message),
            409 => Failure::Conflict(message),
            400..=499 => Failure::BadRequest(message),
            _ => Failure::Internal(message),
        }
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        match e {
            StorageError::MissingBlob { .. }
            | StorageError::BlobTooLarge { .. }
            | StorageError::DefaultCollection => Failure::BadRequest(e.to_string()),
            other => Failure::Internal(other.to_string()),
        }
    }
}

/// The result of an operation.
pub type OpResult<T> = Result<T, Failure>;

/// Ancestors shown with a document's metadata (the depth a revision tree keeps by
/// default).
const HISTORY: usize = 20;

/// Rows read from the store at a time when counting.
const PAGE: usize = 1000;

/// Parses `scope.name` or `name`.
pub fn collection(s: &str) -> OpResult<CollectionName> {
    s.parse()
        .map_err(|e| Failure::BadRequest(format!("invalid collection {s:?}: {e}")))
}

/// Parses a document ID.
pub fn doc_id(id: &str) -> OpResult<DocId> {
    DocId::new(id).map_err(|e| Failure::BadRequest(format!("invalid document ID {id:?}: {e}")))
}

/// Parses a JSON object as a document body.
pub fn body(value: &serde_json::Value) -> OpResult<Body> {
    Body::from_json(value).map_err(|e| Failure::BadRequest(e.to_string()))
}

/// Fails unless the collection exists: reading commands never create one, so a
/// mistyped name is an error instead of an empty answer.
pub fn existing(db: &Database, c: &CollectionName) -> OpResult<()> {
    if db.has_collection(c)? {
        return Ok(());
    }
    let names: Vec<String> = db.collections()?.iter().map(ToString::to_string).collect();
    Err(Failure::NotFound(format!(
        "this database has no collection {c}; it has: {}",
        names.join(", ")
    )))
}

fn not_found(id: &DocId, c: &CollectionName) -> Failure {
    Failure::NotFound(format!("document {:?} not found in {c}", id.as_str()))
}

/// Saves a document (creating the collection if missing).
pub fn put(
    db: &Database,
    c: &CollectionName,
    id: &DocId,
    body: Body,
    expires: Option<SystemTime>,
) -> OpResult<Written> {
    db.create_collection(c)?;
    let w = match expires {
        None => db.save(c, id, body)?,
        Some(at) => {
            refuse_past_expiration(id, at)?;
            db.save_expiring(c, id, body, Expected::Any, at)?
        }
    };
    Ok(Written {
        id: id.to_string(),
        rev: w.rev.to_string(),
        changed: w.changed,
        expires: expires.map(format_time),
    })
}

/// An expiration must be in the future: to remove a document now, purge it.
fn refuse_past_expiration(id: &DocId, at: SystemTime) -> OpResult<()> {
    if at <= SystemTime::now() {
        return Err(Failure::BadRequest(format!(
            "the expiration {} is in the past: to remove {:?} now, purge it",
            format_time(at),
            id.as_str()
        )));
    }
    Ok(())
}

/// A live document's body.
pub fn get(db: &Database, c: &CollectionName, id: &DocId) -> OpResult<serde_json::Value> {
    existing(db, c)?;
    match db.get(c, id)? {
        Some(doc) => Ok(doc.body.to_json()),
        None => Err(not_found(id, c)),
    }
}

/// A document's revision, deletion, sequence, other leaves and history (a deleted
/// document too), with its body.
pub fn meta(db: &Database, c: &CollectionName, id: &DocId) -> OpResult<DocMeta> {
    existing(db, c)?;
    let doc = db
        .get_including_deleted(c, id)?
        .ok_or_else(|| not_found(id, c))?;
    let leaves = db.leaves(c, id, HISTORY)?;
    let history = leaves
        .iter()
        .find(|l| l.rev == doc.rev)
        .map(|l| l.history.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    Ok(DocMeta {
        id: id.to_string(),
        collection: c.to_string(),
        rev: doc.rev.to_string(),
        deleted: doc.deleted,
        sequence: doc.sequence.0,
        conflicted: doc.conflicted,
        other_leaves: leaves
            .iter()
            .filter(|l| l.rev != doc.rev)
            .map(|l| Leaf {
                rev: l.rev.to_string(),
                deleted: l.deleted,
            })
            .collect(),
        history,
        body: doc.body.to_json(),
    })
}

/// Deletes a document (a tombstone that replicates).
pub fn delete(db: &Database, c: &CollectionName, id: &DocId) -> OpResult<Written> {
    existing(db, c)?;
    let w = db.delete(c, id, Expected::Any).map_err(|e| match e {
        StorageError::NotFound { .. } => not_found(id, c),
        other => other.into(),
    })?;
    Ok(Written {
        id: id.to_string(),
        rev: w.rev.to_string(),
        changed: w.changed,
        expires: None,
    })
}

/// Removes every trace of these documents here (peers keep their copies), all or none:
/// an unknown ID is refused by name and nothing is purged. Returns how many were.
pub fn purge(db: &Database, c: &CollectionName, ids: &[DocId]) -> OpResult<usize> {
    existing(db, c)?;
    if ids.is_empty() {
        return Err(Failure::BadRequest("no document to purge".into()));
    }
    match db.purge_documents(c, ids)? {
        Purged::All(n) => Ok(n),
        Purged::Unknown(unknown) => {
            let names: Vec<String> = unknown
                .iter()
                .map(|id| format!("{:?}", id.as_str()))
                .collect();
            Err(Failure::NotFound(format!(
                "no document {} in {c}: nothing was purged",
                names.join(", ")
            )))
        }
    }
}

/// A page of live documents in ID order, after `after`.
pub fn documents(
    db: &Database,
    c: &CollectionName,
    after: Option<&DocId>,
    limit: usize,
) -> OpResult<DocPage> {
    existing(db, c)?;
    let page = db.documents(c, after, limit.clamp(1, 10_000))?;
    Ok(DocPage {
        documents: page
            .documents
            .into_iter()
            .map(|d| Doc {
                id: d.id.to_string(),
                rev: d.rev.to_string(),
                body: d.body.to_json(),
            })
            .collect(),
        next: page.next.map(|n| n.to_string()),
    })
}

/// Saves documents in batches of a thousand (creating the collection if missing).
pub fn import(db: &Database, c: &CollectionName, docs: Vec<(DocId, Body)>) -> OpResult<Imported> {
    db.create_collection(c)?;
    let count = docs.len();
    let mut unchanged = 0;
    let mut rest = docs;
    while !rest.is_empty() {
        let chunk: Vec<_> = rest.drain(..rest.len().min(1000)).collect();
        let results = db.save_batch(c, chunk)?;
        unchanged += results.iter().filter(|r| !r.changed).count();
    }
    Ok(Imported { count, unchanged })
}

/// Up to `limit` entries of the changes feed after `since`.
pub fn changes(
    db: &Database,
    c: &CollectionName,
    since: u64,
    limit: usize,
) -> OpResult<Vec<Change>> {
    existing(db, c)?;
    Ok(db
        .changes(c, Seq(since), limit.clamp(1, 10_000))?
        .into_iter()
        .map(|change| Change {
            seq: change.seq.0,
            id: change.doc_id.to_string(),
            rev: change.rev.to_string(),
            deleted: change.deleted,
            other_leaves: change
                .other_leaves
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
        .collect())
}

/// The collections, `scope.name`.
pub fn collections(db: &Database) -> OpResult<Vec<String>> {
    Ok(db.collections()?.iter().map(ToString::to_string).collect())
}

/// Sets or clears when a document expires: it is then purged — no tombstone, nothing
/// replicated; expiration is local to this database. A time in the past is refused (to
/// remove a document now, purge it).
pub fn set_expiration(
    db: &Database,
    c: &CollectionName,
    id: &DocId,
    at: Option<SystemTime>,
) -> OpResult<Expiration> {
    existing(db, c)?;
    if let Some(t) = at {
        refuse_past_expiration(id, t)?;
    }
    match db.set_expiration(c, id, at) {
        Err(StorageError::NotFound { .. }) => return Err(not_found(id, c)),
        other => other?,
    }
    Ok(Expiration {
        id: id.to_string(),
        expires: at.map(format_time),
    })
}

/// When a document expires.
pub fn expiration(db: &Database, c: &CollectionName, id: &DocId) -> OpResult<Expiration> {
    existing(db, c)?;
    if db.rev_tree(c, id)?.is_none() {
        return Err(not_found(id, c));
    }
    Ok(Expiration {
        id: id.to_string(),
        expires: db.expiration(c, id)?.map(format_time),
    })
}

/// How long tombstones are kept, and what each collection forgot.
pub fn retention(db: &Database) -> OpResult<Retention> {
    let seconds = db.tombstone_retention()?.map(|d| d.as_secs());
    let mut forgotten_through = std::collections::BTreeMap::new();
    for c in db.collections()? {
        let through = db.forgotten_through(&c)?;
        if through > Seq::ZERO {
            forgotten_through.insert(c.to_string(), through.0);
        }
    }
    Ok(Retention {
        seconds,
        keep: match seconds {
            Some(s) => humantime::format_duration(Duration::from_secs(s)).to_string(),
            None => "forever".into(),
        },
        forgotten_through,
    })
}

/// Sets how long tombstones are kept (`None`: forever), then forgets what is older
/// already.
pub fn set_retention(db: &Database, keep: Option<Duration>) -> OpResult<Retention> {
    if let Some(d) = keep
        && d.subsec_nanos() != 0
    {
        return Err(Failure::BadRequest(format!(
            "a retention is whole seconds, not {}",
            humantime::format_duration(d)
        )));
    }
    db.set_tombstone_retention(keep)?;
    db.forget_tombstones(SystemTime::now())?;
    retention(db)
}

/// Parses a retention: a duration (`30d`, `0s`) or `forever`.
pub fn parse_retention(text: &str) -> OpResult<Option<Duration>> {
    match text {
        "forever" => Ok(None),
        _ => humantime::parse_duration(text).map(Some).map_err(|e| {
            Failure::BadRequest(format!(
                "{text:?} is not a retention such as 30d, 12h, 0s or forever: {e}"
            ))
        }),
    }
}

/// Deletes a collection and every document in it here (not replicated); returns how
/// many documents it held.
pub fn delete_collection(db: &Database, c: &CollectionName) -> OpResult<u64> {
    existing(db, c)?;
    Ok(db.delete_collection(c)?)
}

/// What the database at `path` holds: collections with live documents, tombstones and
/// last sequence, its blobs, its size on disk.
pub fn info(db: &Database, path: &Path) -> OpResult<Info> {
    let mut collections = Vec::new();
    for c in db.collections()? {
        let (mut documents, mut tombstones) = (0u64, 0u64);
        let mut since = Seq::ZERO;
        loop {
            let page = db.changes(&c, since, PAGE)?;
            for change in &page {
                match change.deleted {
                    true => tombstones += 1,
                    false => documents += 1,
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => since = last.seq,
                _ => break,
            }
        }
        collections.push(CollectionInfo {
            name: c.to_string(),
            documents,
            tombstones,
            last_sequence: db.last_sequence(&c)?.0,
        });
    }
    let blobs = db.blobs()?;
    let size_bytes = dir_size(path)
        .map_err(|e| Failure::Internal(format!("cannot measure {}: {e}", path.display())))?;
    Ok(Info {
        path: path.display().to_string(),
        uuid: db.uuid().to_string(),
        size_bytes,
        collections,
        blobs: BlobTotals {
            count: blobs.len(),
            bytes: blobs.iter().map(|b| b.length).sum(),
        },
        server: None,
    })
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // A file can vanish while we look (a flush, a compaction, the admin socket).
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The blobs stored.
pub fn blobs(db: &Database) -> OpResult<Vec<BlobEntry>> {
    Ok(db
        .blobs()?
        .into_iter()
        .map(|b| BlobEntry {
            digest: b.digest.to_string(),
            length: b.length,
            content_type: b.content_type,
        })
        .collect())
}

/// Forgets the tombstones older than the retention, removes the blobs no document
/// refers to any more, and rewrites the store.
pub fn compact(db: &Database) -> OpResult<Compacted> {
    let r = db.compact(SystemTime::now())?;
    Ok(Compacted {
        tombstones_forgotten: r.tombstones_forgotten,
        blobs_removed: r.blobs_removed,
        bytes_reclaimed: r.bytes_reclaimed,
        blobs_kept: r.blobs_kept,
        store_bytes_reclaimed: r.store_bytes_reclaimed,
    })
}

/// Parses an RFC 3339 time.
pub fn parse_time(text: &str) -> OpResult<SystemTime> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            Failure::BadRequest(format!(
                "invalid time {text:?} (use RFC 3339, e.g. 2030-01-01T00:00:00Z): {e}"
            ))
        })?;
    Ok(t.into())
}

/// Formats a time as RFC 3339, to the second (`?` if it cannot be).
pub fn format_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

const A_YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn load_identity(db: &Database, label: &str) -> OpResult<TlsIdentity> {
    TlsIdentity::load(db, label)
        .map_err(|e| Failure::Internal(e.to_string()))?
        .ok_or_else(|| Failure::NotFound(format!("no identity labelled {label:?}")))
}

fn identity_entry(label: &str, id: &TlsIdentity) -> Identity {
    Identity {
        label: label.to_owned(),
        sha256: id.sha256_fingerprint(),
        expires: id
            .expiration()
            .map(format_time)
            .unwrap_or_else(|| "?".into()),
    }
}

/// Makes a self-signed identity for [`create_identity`], before any database is opened
/// (so bad options create none).
pub fn make_identity(request: &NewIdentity) -> OpResult<TlsIdentity> {
    let now = SystemTime::now();
    let expiration = match &request.expiration {
        Some(text) => parse_time(text)?,
        None => now + A_YEAR,
    };
    if request.common_name.is_empty() {
        return Err(Failure::BadRequest("the common name is empty".into()));
    }
    let attributes = IdentityAttributes {
        common_name: request.common_name.clone(),
        organization: request.organization.clone(),
        organization_unit: request.organization_unit.clone(),
        email: request.email.clone(),
    };
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        request.common_name.clone(),
    ];
    TlsIdentity::self_signed(&attributes, expiration, now, &names)
        .map_err(|e| Failure::BadRequest(e.to_string()))
}

/// Stores a new identity under `label`; an existing label is a conflict.
pub fn create_identity(db: &Database, label: &str, id: &TlsIdentity) -> OpResult<Identity> {
    if TlsIdentity::load(db, label)
        .map_err(|e| Failure::Internal(e.to_string()))?
        .is_some()
    {
        return Err(Failure::Conflict(format!(
            "an identity labelled {label:?} exists; delete it first (or renew it)"
        )));
    }
    id.save(db, label)
        .map_err(|e| Failure::Internal(e.to_string()))?;
    Ok(identity_entry(label, id))
}

/// Renews the self-signed identity `label` until `expiration` (default a year).
pub fn renew_identity(db: &Database, label: &str, expiration: Option<&str>) -> OpResult<Identity> {
    let old = load_identity(db, label)?;
    let now = SystemTime::now();
    let expiration = match expiration {
        Some(text) => parse_time(text)?,
        None => now + A_YEAR,
    };
    let new = old
        .renewed(expiration, now)
        .map_err(|e| Failure::BadRequest(e.to_string()))?;
    new.save(db, label)
        .map_err(|e| Failure::Internal(e.to_string()))?;
    Ok(identity_entry(label, &new))
}

/// The certificate of `label`, PEM.
pub fn certificate(db: &Database, label: &str) -> OpResult<String> {
    Ok(load_identity(db, label)?.certificate_pem())
}

/// Deletes the identity `label`.
pub fn delete_identity(db: &Database, label: &str) -> OpResult<()> {
    match TlsIdentity::delete(db, label).map_err(|e| Failure::Internal(e.to_string()))? {
        true => Ok(()),
        false => Err(Failure::NotFound(format!("no identity labelled {label:?}"))),
    }
}

/// The stored identities.
pub fn identities(db: &Database) -> OpResult<Vec<Identity>> {
    let mut list = Vec::new();
    for key in db.local_ids("identity/")? {
        let label = key.trim_start_matches("identity/");
        list.push(identity_entry(label, &load_identity(db, label)?));
    }
    Ok(list)
}
