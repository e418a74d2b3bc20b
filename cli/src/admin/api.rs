//! What the admin interface's requests and answers carry, as JSON. The `peerlite`
//! commands print these the same way whether they read the database directly or ask the
//! server that holds it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A document's body with its revision and place in the changes feed: `GET
/// /c/{collection}/docs/{id}?meta=true`, and `peerlite get --meta --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocMeta {
    /// Document ID.
    pub id: String,
    /// Collection, `scope.name`.
    pub collection: String,
    /// Current revision.
    pub rev: String,
    /// Whether the current revision is a tombstone.
    pub deleted: bool,
    /// Sequence of its latest change.
    pub sequence: u64,
    /// Whether another live leaf exists (an unresolved conflict).
    pub conflicted: bool,
    /// The leaves other than the current revision.
    pub other_leaves: Vec<Leaf>,
    /// The current revision's ancestors, newest first.
    pub history: Vec<String>,
    /// The current revision's body.
    pub body: Value,
}

/// A leaf revision of a document's tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    /// Revision ID.
    pub rev: String,
    /// Whether it is a tombstone.
    pub deleted: bool,
}

/// The outcome of a save or a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Document ID.
    pub id: String,
    /// The document's current revision afterwards.
    pub rev: String,
    /// False when the save changed nothing (the body was already that).
    pub changed: bool,
    /// When it expires (RFC 3339), if the save set that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A live document in a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// Document ID.
    pub id: String,
    /// Current revision.
    pub rev: String,
    /// Its body.
    pub body: Value,
}

/// A page of live documents in ID order: `GET /c/{collection}/docs?after=ID&limit=N`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocPage {
    /// The documents.
    pub documents: Vec<Doc>,
    /// Where the next page starts (`after=`), if there is one.
    pub next: Option<String>,
}

/// One entry of a changes feed: a document at its latest change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The change's sequence.
    pub seq: u64,
    /// Document ID.
    pub id: String,
    /// Its current revision.
    pub rev: String,
    /// Whether that revision is a tombstone.
    pub deleted: bool,
    /// Its other leaf revisions (a conflict), if any.
    pub other_leaves: Vec<String>,
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// Documents read.
    pub count: usize,
    /// Of them, those that already had that body.
    pub unchanged: usize,
}

/// What a database holds: `GET /info`, and `peerlite info --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// The database directory.
    pub path: String,
    /// Its UUID (what peers' checkpoints are keyed by).
    pub uuid: String,
    /// Bytes of every file under the directory.
    pub size_bytes: u64,
    /// Its collections.
    pub collections: Vec<CollectionInfo>,
    /// Its blobs.
    pub blobs: BlobTotals,
    /// The listener serving it, when asked through a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Status>,
}

/// A collection's counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// `scope.name`.
    pub name: String,
    /// Live documents.
    pub documents: u64,
    /// Deleted documents (tombstones).
    pub tombstones: u64,
    /// Its last sequence.
    pub last_sequence: u64,
}

/// How many blobs and their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobTotals {
    /// Blobs stored.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// A blob as `peerlite blob ls` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// `sha256-…`.
    pub digest: String,
    /// Length in bytes.
    pub length: u64,
    /// Content type, if it was saved with one.
    pub content_type: Option<String>,
}

/// What `compact` removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compacted {
    /// Tombstones older than the retention, forgotten.
    #[serde(default)]
    pub tombstones_forgotten: u64,
    /// Blobs removed: no stored revision refers to them.
    pub blobs_removed: u64,
    /// The bytes they held.
    pub bytes_reclaimed: u64,
    /// Blobs kept.
    pub blobs_kept: u64,
    /// The bytes the document store's files shrank by.
    #[serde(default)]
    pub store_bytes_reclaimed: u64,
}

/// The listener serving a database: `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// URLs replicators can use.
    pub urls: Vec<String>,
    /// SHA-256 fingerprint of its TLS certificate (none without TLS).
    pub certificate_sha256: Option<String>,
    /// The server's process ID.
    pub pid: u32,
    /// Open replication connections.
    pub connection_count: usize,
    /// Of them, those with work under way.
    pub active_connection_count: usize,
    /// Connections turned away since start.
    pub rejected_connection_count: u64,
    /// The open connections.
    pub connections: Vec<Peer>,
    /// Totals since start, all connections together.
    pub totals: Totals,
}

/// One connected replicator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its address.
    pub peer: String,
    /// Its user (or certificate common name), if authenticated as one.
    pub user: Option<String>,
    /// When its session began, RFC 3339.
    pub since: String,
    /// Whether replication work is under way.
    pub active: bool,
    /// What it did so far.
    pub totals: Totals,
}

/// Documents and bytes each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Documents the replicators pushed here.
    pub documents_received: u64,
    /// Documents they pulled from here.
    pub documents_sent: u64,
    /// Documents that did not replicate, either way.
    pub documents_failed: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
}

/// A stored TLS identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its label.
    pub label: String,
    /// SHA-256 fingerprint of its certificate.
    pub sha256: String,
    /// Its expiration, RFC 3339 (`?` if unreadable).
    pub expires: String,
}

/// What `POST /identities/{label}` creates: a self-signed identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIdentity {
    /// Common name.
    pub common_name: String,
    /// Organization.
    #[serde(default)]
    pub organization: Option<String>,
    /// Organizational unit.
    #[serde(default)]
    pub organization_unit: Option<String>,
    /// Contact email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Expiration, RFC 3339 (default one year from now).
    #[serde(default)]
    pub expiration: Option<String>,
}

/// The body of every error answer: `{"error": "…"}`, with a 4xx or 5xx status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and, where there is one, the fix.
    pub error: String,
}

/// How long the database keeps tombstones (`peerlite retention`, `GET`/`PUT /retention`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// How long, in seconds, or `None`: forever.
    pub seconds: Option<u64>,
    /// The same, for people (`30days`, `forever`).
    pub keep: String,
    /// Per collection (`scope.name`) that forgot any, the highest sequence a forgotten
    /// tombstone had: a peer that last pulled an earlier sequence is refused.
    pub forgotten_through: std::collections::BTreeMap<String, u64>,
}

/// A document's expiration (`peerlite expire`, `GET`/`PUT /c/{c}/docs/{id}/expiration`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiration {
    /// The document.
    pub id: String,
    /// When it expires (RFC 3339), or `None`: never.
    pub expires: Option<String>,
}
