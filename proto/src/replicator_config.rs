//! Configuration of the active replicator, its filters, and checkpoint identity.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{CollectionName, ConflictResolver, DocId, FrameLimits, Revision};

/// Push, pull, or both.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ReplicatorType {
    /// Send local changes.
    Push,
    /// Receive remote changes.
    Pull,
    /// Both (the default).
    #[default]
    PushAndPull,
}

impl ReplicatorType {
    /// True when pushing.
    pub fn pushes(self) -> bool {
        matches!(self, ReplicatorType::Push | ReplicatorType::PushAndPull)
    }

    /// True when pulling.
    pub fn pulls(self) -> bool {
        matches!(self, ReplicatorType::Pull | ReplicatorType::PushAndPull)
    }
}

/// What a [`ReplicationFilter`] sees.
#[derive(Clone, Copy, Debug)]
pub struct FilterContext<'a> {
    /// The collection.
    pub collection: &'a CollectionName,
    /// The document.
    pub doc_id: &'a DocId,
    /// The revision about to be pushed or stored.
    pub revision: &'a Revision,
}

/// Decides which documents replicate (Couchbase Lite's push and pull filters). Must be a
/// pure function.
///
/// ```
/// use peerlite_proto::{FilterContext, ReplicationFilter};
/// let only_public = |ctx: &FilterContext<'_>| ctx.revision.body.to_json()["public"] == true;
/// # fn takes(_: &dyn ReplicationFilter) {}
/// takes(&only_public);
/// ```
pub trait ReplicationFilter: Send + Sync {
    /// True to replicate the revision.
    fn include(&self, ctx: &FilterContext<'_>) -> bool;
}

impl<F> ReplicationFilter for F
where
    F: Fn(&FilterContext<'_>) -> bool + Send + Sync,
{
    fn include(&self, ctx: &FilterContext<'_>) -> bool {
        self(ctx)
    }
}

/// Per-collection settings.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct CollectionConfig {
    /// The collection.
    pub name: CollectionName,
    /// Replicate only these documents.
    pub doc_ids: Option<Vec<DocId>>,
    /// Push only what this accepts.
    #[serde(skip)]
    pub push_filter: Option<Arc<dyn ReplicationFilter>>,
    /// Store only pulled revisions this accepts.
    #[serde(skip)]
    pub pull_filter: Option<Arc<dyn ReplicationFilter>>,
    /// A name for the filters, part of the checkpoint identity: change it whenever the
    /// filters change meaning, so a replication never resumes from a checkpoint made
    /// under different filters.
    pub filter_name: Option<String>,
    /// Resolves pull conflicts (default: [`crate::DefaultConflictResolver`]).
    #[serde(skip)]
    pub conflict_resolver: Option<Arc<dyn ConflictResolver>>,
}

impl CollectionConfig {
    /// A collection with no filters and the default resolver.
    pub fn new(name: CollectionName) -> CollectionConfig {
        CollectionConfig {
            name,
            doc_ids: None,
            push_filter: None,
            pull_filter: None,
            filter_name: None,
            conflict_resolver: None,
        }
    }
}

impl fmt::Debug for CollectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectionConfig")
            .field("name", &self.name)
            .field("doc_ids", &self.doc_ids)
            .field("push_filter", &self.push_filter.is_some())
            .field("pull_filter", &self.pull_filter.is_some())
            .field("filter_name", &self.filter_name)
            .field("conflict_resolver", &self.conflict_resolver.is_some())
            .finish()
    }
}

/// Configuration of an [`crate::ActiveReplicator`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReplicatorConfig {
    /// The local database's UUID (part of the checkpoint identity).
    pub database_uuid: [u8; 16],
    /// The remote endpoint, e.g. `wss://host:4984/db` (part of the checkpoint identity).
    pub remote_url: String,
    /// Collections to replicate.
    pub collections: Vec<CollectionConfig>,
    /// Push, pull or both.
    pub replicator_type: ReplicatorType,
    /// Keep running and replicate new changes as they happen.
    pub continuous: bool,
    /// Ping a quiet connection this often; a peer silent for this long after a ping is
    /// considered dead (default 30 s).
    pub heartbeat: Duration,
    /// Total connection attempts before giving up; 0 = 10 for one-shot, unlimited for
    /// continuous.
    pub max_attempts: u32,
    /// Longest wait between attempts (default 300 s).
    pub max_attempt_wait: Duration,
    /// Wait before the first retry; doubles each time (default 1 s).
    pub initial_retry_wait: Duration,
    /// How often progress is checkpointed while busy (default 5 s).
    pub checkpoint_interval: Duration,
    /// Bounds on incoming frames.
    pub frame_limits: FrameLimits,
    /// Changes per push batch (default 200).
    pub changes_batch: usize,
    /// Push batches in flight: read and not yet acknowledged in full (default 8). A
    /// batch counts until its last revision is acknowledged, so with fewer of them a
    /// resync of a few batches waits for the first inserts before it even proposes the
    /// rest; each holds up to `changes_batch` documents' bodies.
    pub max_push_batches: usize,
    /// A push batch of at most this many documents (and 64 KiB of bodies) is sent with
    /// its revisions at once instead of being proposed first, which saves a round trip
    /// per live change; the receiver may then get a revision it already has (default 8;
    /// 0 proposes every batch). Revisions just pulled from the same peer are never
    /// pushed back to it either way.
    pub push_without_proposal: usize,
    /// Revisions per `Revs` message (default 100).
    pub revs_per_message: usize,
    /// Where messages are cut (default 1 MiB): entries are added to a `ProposeChanges` or
    /// `Revs` message while it stays within this size; a larger document still goes alone
    /// if the peer's announced frame limit allows, and is reported as
    /// [`DocumentError::TooLarge`](crate::DocumentError::TooLarge) if not.
    pub message_bytes: usize,
    /// Unacknowledged pushed bytes allowed (default 2 MiB).
    pub max_rev_bytes_in_flight: usize,
    /// Ancestors sent with each revision (default 20).
    pub max_history: usize,
}

impl ReplicatorConfig {
    /// A push-and-pull, one-shot configuration of the default collection.
    pub fn new(database_uuid: [u8; 16], remote_url: impl Into<String>) -> ReplicatorConfig {
        ReplicatorConfig {
            database_uuid,
            remote_url: remote_url.into(),
            collections: vec![CollectionConfig::new(CollectionName::default())],
            replicator_type: ReplicatorType::PushAndPull,
            continuous: false,
            heartbeat: Duration::from_secs(30),
            max_attempts: 0,
            max_attempt_wait: Duration::from_secs(300),
            initial_retry_wait: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(5),
            frame_limits: FrameLimits::DEFAULT,
            changes_batch: 200,
            max_push_batches: 8,
            push_without_proposal: 8,
            revs_per_message: 100,
            message_bytes: 1 << 20,
            max_rev_bytes_in_flight: 2 << 20,
            max_history: 20,
        }
    }

    /// The checkpoint ID: a digest of the local database UUID, the remote URL, and each
    /// collection with its document-ID list and filter name.
    pub fn checkpoint_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"peerlite-checkpoint-v1");
        h.update(self.database_uuid);
        field(&mut h, self.remote_url.as_bytes());
        let mut collections: Vec<&CollectionConfig> = self.collections.iter().collect();
        collections.sort_by(|a, b| a.name.cmp(&b.name));
        for c in collections {
            field(&mut h, c.name.as_str().as_bytes());
            match &c.doc_ids {
                None => h.update([0u8]),
                Some(ids) => {
                    h.update([1u8]);
                    let mut ids: Vec<&DocId> = ids.iter().collect();
                    ids.sort();
                    ids.dedup();
                    h.update((ids.len() as u64).to_be_bytes());
                    for id in ids {
                        field(&mut h, id.as_str().as_bytes());
                    }
                }
            }
            match &c.filter_name {
                None => h.update([0u8]),
                Some(name) => {
                    h.update([1u8]);
                    field(&mut h, name.as_bytes());
                }
            }
        }
        let digest = h.finalize();
        let mut id = String::from("cp-");
        for b in &digest[..16] {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }

    /// The attempts limit in effect.
    pub fn effective_max_attempts(&self) -> u32 {
        match (self.max_attempts, self.continuous) {
            (0, false) => 10,
            (0, true) => 0,
            (n, _) => n,
        }
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The local-document ID under which the replicator keeps its own checkpoint copy.
pub fn local_checkpoint_key(id: &str) -> String {
    format!("cp/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_id_changes_with_what_is_replicated() {
        let base = ReplicatorConfig::new([1; 16], "wss://a/db");
        let id = base.checkpoint_id();
        assert!(id.starts_with("cp-") && id.len() == 35);
        assert_eq!(id, base.clone().checkpoint_id());
        let mut other_db = base.clone();
        other_db.database_uuid = [2; 16];
        let mut other_url = base.clone();
        other_url.remote_url = "wss://b/db".into();
        let mut filtered = base.clone();
        filtered.collections[0].doc_ids = Some(vec![DocId::new("x").unwrap()]);
        let mut named = base.clone();
        named.collections[0].filter_name = Some("public-only".into());
        let mut more = base.clone();
        more.collections
            .push(CollectionConfig::new("s.c".parse().unwrap()));
        let ids = [&other_db, &other_url, &filtered, &named, &more].map(|c| c.checkpoint_id());
        for (i, a) in ids.iter().enumerate() {
            assert_ne!(a, &id);
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Order of collections and of document IDs does not matter.
        let mut reordered = more.clone();
        reordered.collections.reverse();
        assert_eq!(reordered.checkpoint_id(), more.checkpoint_id());
    }

    #[test]
    fn attempts_defaults() {
        let mut c = ReplicatorConfig::new([0; 16], "ws://x/db");
        assert_eq!(c.effective_max_attempts(), 10);
        c.continuous = true;
        assert_eq!(c.effective_max_attempts(), 0);
        c.max_attempts = 3;
        assert_eq!(c.effective_max_attempts(), 3);
    }
}
