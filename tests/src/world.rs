//! The simulated world: peers, links, a virtual clock and an event queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerlite_proto::Machine as StateMachine;
use peerlite_proto::record::{self, RecordedConfig, RecordingHeader, StepKind, Tape};
use peerlite_proto::{
    ActiveReplicator, Activity, Blob, BlobDigest, Body, CollectionName, Direction, Disconnect,
    DocId, Event, Frame, Input, OpId, Output, PassiveConfig, PassivePeer, Principal,
    ReplicatorConfig, Request, Response, RevId, Seq, Status, StorageOp, StorageReply,
};
use peerlite_storage::{
    Database, DatabaseConfig, DatabaseUuid, Durability, Expected, MemBlobs, MemKv, StorageError,
};

use crate::Rng;

/// Identifies a peer in a [`World`].
pub type PeerId = usize;

/// Identifies a replication link (an active replicator on one peer targeting another).
pub type LinkId = usize;

/// Timing of the simulated network and storage.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// One-way latency range of a message (kept in order per direction).
    pub latency: (Duration, Duration),
    /// Range of time a storage operation takes (operations may complete out of order).
    pub storage_delay: (Duration, Duration),
    /// Range of time a sync (`fdatasync`) takes. A write is readable, and replication
    /// hears of it, at once; it is durable, acknowledged and answered when the sync ends.
    /// Writes made meanwhile join that sync; a crash before it ends loses them all. Zero
    /// makes every write durable at once.
    pub sync_delay: (Duration, Duration),
    /// Revisions kept per branch in every database.
    pub max_rev_depth: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: (Duration::from_micros(100), Duration::from_millis(5)),
            storage_delay: (Duration::from_micros(10), Duration::from_millis(2)),
            sync_delay: (Duration::from_micros(50), Duration::from_millis(1)),
            max_rev_depth: 100,
        }
    }
}

/// Counters over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames delivered.
    pub frames: u64,
    /// Frame bytes delivered.
    pub bytes: u64,
    /// Revisions carried by delivered `Revs` frames.
    pub revisions_transferred: u64,
    /// Blob bytes carried by delivered `BlobChunk` frames.
    pub blob_bytes_transferred: u64,
    /// Connections opened.
    pub connections: u64,
    /// Connections dropped by faults.
    pub dropped_connections: u64,
    /// Peer crashes.
    pub crashes: u64,
    /// Writes (local saves and storage operations) that were readable but lost, because
    /// their peer crashed before their sync ended.
    pub unsynced_writes_lost: u64,
    /// Storage operations executed.
    pub storage_ops: u64,
    /// Requests delivered, by kind (`"Revs"`, `"ProposeChanges"`, `"Changes"`, an empty
    /// `Changes` batch as `"Changes (caught up)"`, …).
    pub requests: std::collections::BTreeMap<&'static str, u64>,
}

/// What a peer holds of a document: current revision, deleted flag and body as JSON.
pub type Holding = (RevId, bool, String);

/// Why a run did not end as expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// Replication was still busy when the time limit was reached.
    NotQuiet {
        /// Virtual time elapsed.
        elapsed: Duration,
        /// Each link's status.
        statuses: Vec<(LinkId, Status)>,
    },
    /// Two peers disagree about a document.
    Diverged {
        /// The document.
        doc: String,
        /// What each peer holds: (peer name, current revision and body, or nothing).
        holdings: Vec<(String, Option<Holding>)>,
    },
    /// A revision acknowledged by a peer is no longer in a document's history.
    LostWrite {
        /// The peer that acknowledged it.
        peer: String,
        /// The document.
        doc: String,
        /// The lost revision.
        rev: RevId,
        /// The document's current revision.
        current: Option<RevId>,
    },
    /// A current revision refers to a blob its peer does not hold intact.
    BlobMissing {
        /// The peer.
        peer: String,
        /// The document.
        doc: String,
        /// The blob.
        digest: BlobDigest,
    },
    /// A recorded replicator's recording did not replay with the same outputs.
    ReplayDiverged {
        /// The link.
        link: LinkId,
        /// What the replay found.
        outcome: String,
    },
    /// The store failed.
    Storage(StorageError),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for SimError {}

impl From<StorageError> for SimError {
    fn from(e: StorageError) -> Self {
        SimError::Storage(e)
    }
}

struct Peer {
    name: String,
    kv: Arc<MemKv>,
    /// Published blobs are durable: they survive crashes.
    blobs: MemBlobs,
    /// The largest blob its database accepts.
    max_blob_bytes: u64,
    db: Database,
    uuid: DatabaseUuid,
    /// Bumped on every crash: storage work of an earlier incarnation is void.
    incarnation: u64,
    listener: Option<PassiveConfig>,
    notified: BTreeMap<CollectionName, Seq>,
    /// Revisions this peer acknowledged: its own saves and accepted pushes.
    acknowledged: Vec<(DocId, RevId)>,
    /// The sync in flight, if any (its store is between `begin_sync` and `finish_sync`).
    syncing: Option<Syncing>,
    /// This peer's own sync delay, if set.
    sync_delay: Option<(Duration, Duration)>,
}

/// What waits for a peer's sync in flight.
#[derive(Default)]
struct Syncing {
    /// Local saves and deletions, acknowledged once it ends.
    saves: Vec<(DocId, RevId)>,
    /// Replies of storage operations that wrote, delivered once it ends.
    replies: Vec<(Machine, OpId, StorageReply)>,
}

struct Link {
    from: PeerId,
    to: PeerId,
    config: ReplicatorConfig,
    replicator: ActiveReplicator,
    conn: Option<ConnId>,
    partitioned: bool,
    /// Incremented when the replicator is recreated after a crash.
    generation: u64,
    events: Vec<Event>,
    /// The replicator's recording, while it records ([`World::record`]).
    tape: Option<Tape>,
    recording: Option<Vec<u8>>,
}

type ConnId = u64;

struct Conn {
    link: LinkId,
    passive: PassivePeer,
    active_open: bool,
    passive_open: bool,
    to_passive_at: Instant,
    to_active_at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Machine {
    Active(LinkId, u64),
    Passive(ConnId),
}

enum Action {
    ToPassive(ConnId, Bytes),
    ToActive(ConnId, Bytes),
    PassiveDisconnected(ConnId, Disconnect),
    ActiveDisconnected(ConnId, Disconnect),
    ConnectResult(LinkId, u64),
    StorageDone {
        peer: PeerId,
        incarnation: u64,
        machine: Machine,
        id: OpId,
        op: StorageOp,
    },
    SyncDone {
        peer: PeerId,
        incarnation: u64,
    },
}

/// A deterministic world of peers replicating over a simulated network.
///
/// One seed drives every random choice (latencies, storage delays, and whatever
/// workload and faults the caller draws from [`World::rng`]); time is virtual and jumps
/// to the next event, so hours of replication run in milliseconds.
///
/// ```
/// use peerlite_sim::{SimConfig, World};
/// use peerlite_proto::{PassiveConfig, ReplicatorType};
/// use std::time::Duration;
///
/// let mut world = World::new(7, SimConfig::default());
/// let hub = world.add_peer("hub");
/// let phone = world.add_peer("phone");
/// world.listen(hub, PassiveConfig::default());
/// world.save(phone, "note-1", r#"{"text": "hello"}"#)?;
/// let link = world.replicate(phone, hub, |c| c.replicator_type = ReplicatorType::PushAndPull);
/// world.start(link);
/// world.run_until_quiet(Duration::from_secs(60))?;
/// world.check_converged(&[hub, phone])?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct World {
    config: SimConfig,
    rng: Rng,
    base: Instant,
    now: Instant,
    queue: BTreeMap<(Instant, u64), Action>,
    next_action: u64,
    peers: Vec<Peer>,
    links: Vec<Link>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    stats: Stats,
}

impl World {
    /// An empty world driven by `seed`.
    pub fn new(seed: u64, config: SimConfig) -> World {
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        World {
            config,
            rng: Rng::new(seed),
            base,
            now: base,
            queue: BTreeMap::new(),
            next_action: 0,
            peers: Vec::new(),
            links: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            stats: Stats::default(),
        }
    }

    /// The world's random generator (use it for workloads and faults to keep one seed).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Virtual time since the world began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Adds a peer with an empty in-memory database.
    pub fn add_peer(&mut self, name: &str) -> PeerId {
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        uuid[8..].copy_from_slice(&(self.peers.len() as u64).to_be_bytes());
        let uuid = DatabaseUuid(uuid);
        let kv = Arc::new(MemKv::new());
        let blobs = MemBlobs::new();
        let max_blob_bytes = peerlite_storage::DEFAULT_MAX_BLOB_BYTES;
        let db = open(&kv, &blobs, uuid, self.config.max_rev_depth, max_blob_bytes);
        self.peers.push(Peer {
            name: name.to_owned(),
            kv,
            blobs,
            max_blob_bytes,
            db,
            uuid,
            incarnation: 0,
            listener: None,
            notified: BTreeMap::new(),
            acknowledged: Vec::new(),
            syncing: None,
            sync_delay: None,
        });
        self.peers.len() - 1
    }

    /// A peer's database.
    pub fn db(&self, peer: PeerId) -> &Database {
        &self.peers[peer].db
    }

    /// A peer's name.
    pub fn name(&self, peer: PeerId) -> &str {
        &self.peers[peer].name
    }

    /// Makes a peer accept connections with `config`.
    pub fn listen(&mut self, peer: PeerId, config: PassiveConfig) {
        for c in &config.collections {
            // Simulated listeners create the collections they serve.
            let _ = self.peers[peer].db.create_collection(c);
        }
        self.peers[peer].listener = Some(config);
    }

    /// Sets how long `peer`'s syncs take, in place of [`SimConfig::sync_delay`] (from
    /// its next sync on).
    pub fn set_sync_delay(&mut self, peer: PeerId, range: (Duration, Duration)) {
        self.peers[peer].sync_delay = Some(range);
    }

    /// Adds a replicator on `from` targeting the listener on `to`, configured by
    /// `configure` (starting from one-shot push-and-pull of the default collection).
    pub fn replicate(
        &mut self,
        from: PeerId,
        to: PeerId,
        configure: impl FnOnce(&mut ReplicatorConfig),
    ) -> LinkId {
        let url = format!("ws://{}/db", self.peers[to].name);
        let mut config = ReplicatorConfig::new(self.peers[from].uuid.0, url);
        configure(&mut config);
        for c in &config.collections {
            let _ = self.peers[from].db.create_collection(&c.name);
        }
        self.links.push(Link {
            from,
            to,
            replicator: ActiveReplicator::new(config.clone()),
            config,
            conn: None,
            partitioned: false,
            generation: 0,
            events: Vec::new(),
            tape: None,
            recording: None,
        });
        self.links.len() - 1
    }

    /// Records `link`'s replicator for the sync doctor from now on, as `sync --record`
    /// does in the field: call it before starting the link. The recording ends if its
    /// peer crashes (the machine is rebuilt). Read it with [`World::recording`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use peerlite_proto::PassiveConfig;
    /// use peerlite_proto::record::{DiagnosisOptions, ReplayOutcome};
    /// use peerlite_sim::{SimConfig, World};
    ///
    /// let mut world = World::new(7, SimConfig::default());
    /// let (hub, phone) = (world.add_peer("hub"), world.add_peer("phone"));
    /// world.listen(hub, PassiveConfig::default());
    /// world.save(hub, "doc", r#"{"v": 1}"#)?;
    /// let link = world.replicate(phone, hub, |_| {});
    /// world.record(link);
    /// world.start(link);
    /// world.run_until_quiet(Duration::from_secs(60))?;
    ///
    /// let replayed = peerlite_sim::replay(&world.recording(link).unwrap(), DiagnosisOptions::default())?;
    /// assert!(matches!(replayed.outcome, ReplayOutcome::Identical { .. }));
    /// assert_eq!(replayed.report.documents_in, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record(&mut self, link: LinkId) {
        let l = &mut self.links[link];
        let header = RecordingHeader::for_machine(RecordedConfig::Active(l.config.clone()), 0);
        l.recording = Some(record::encode_header(&header));
        l.tape = Some(Tape::new(self.now));
    }

    /// `link`'s recording so far, if it was recorded: a file `peerlite replay` reads.
    pub fn recording(&mut self, link: LinkId) -> Option<Vec<u8>> {
        let l = &mut self.links[link];
        if let (Some(tape), Some(out)) = (&mut l.tape, &mut l.recording) {
            tape.outputs_done(out);
        }
        l.recording.clone()
    }

    /// Replays every recorded link's recording ([`World::record`]) and checks that each
    /// machine gives its recorded outputs again: the sync doctor's promise, for this
    /// world's whole schedule of faults.
    pub fn check_recordings_replay(&mut self) -> Result<(), SimError> {
        for link in 0..self.links.len() {
            let Some(bytes) = self.recording(link) else {
                continue;
            };
            let outcome =
                crate::replay(&bytes, record::DiagnosisOptions::default()).map_err(|e| {
                    SimError::ReplayDiverged {
                        link,
                        outcome: e.to_string(),
                    }
                })?;
            if !matches!(outcome.outcome, record::ReplayOutcome::Identical { .. }) {
                return Err(SimError::ReplayDiverged {
                    link,
                    outcome: format!("{:?}", outcome.outcome),
                });
            }
        }
        Ok(())
    }

    /// Records a step done to `link`'s replicator, if it records.
    fn tape_step(&mut self, link: LinkId, kind: StepKind) {
        let now = self.now;
        let l = &mut self.links[link];
        if let (Some(tape), Some(out)) = (&mut l.tape, &mut l.recording) {
            tape.step(out, now, kind);
        }
    }

    /// Records an input given to `link`'s replicator, if it records.
    fn tape_input(&mut self, link: LinkId, input: &Input) {
        let now = self.now;
        let l = &mut self.links[link];
        if let (Some(tape), Some(out)) = (&mut l.tape, &mut l.recording) {
            tape.input(out, now, input);
        }
    }

    /// Starts a link's replicator.
    pub fn start(&mut self, link: LinkId) {
        let now = self.now;
        self.tape_step(link, StepKind::Start { reset: false });
        self.links[link].replicator.start(now);
        self.drain(Machine::Active(link, self.links[link].generation));
    }

    /// Starts a link's replicator, ignoring its checkpoints.
    pub fn start_with_reset(&mut self, link: LinkId) {
        let now = self.now;
        self.tape_step(link, StepKind::Start { reset: true });
        self.links[link].replicator.start_with_reset(now);
        self.drain(Machine::Active(link, self.links[link].generation));
    }

    /// Stops a link's replicator.
    pub fn stop(&mut self, link: LinkId) {
        let now = self.now;
        self.tape_step(link, StepKind::Stop);
        self.links[link].replicator.stop(now);
        self.drain(Machine::Active(link, self.links[link].generation));
    }

    /// The documents a link has not pushed yet (from its last saved checkpoint).
    pub fn pending_document_ids(&self, link: LinkId) -> Result<Vec<String>, SimError> {
        let l = &self.links[link];
        let mut out = Vec::new();
        for c in &l.config.collections {
            let ids = self.peers[l.from]
                .db
                .pending_document_ids(&l.config, &c.name)?;
            out.extend(ids.into_iter().map(|id| id.to_string()));
        }
        Ok(out)
    }

    /// A link's replicator configuration.
    pub fn replicator_config(&self, link: LinkId) -> &ReplicatorConfig {
        &self.links[link].config
    }

    /// A link's replicator status.
    pub fn status(&self, link: LinkId) -> &Status {
        self.links[link].replicator.status()
    }

    /// Every event a link's replicator emitted.
    pub fn events(&self, link: LinkId) -> &[Event] {
        &self.links[link].events
    }

    /// Revisions a peer acknowledged (its own saves and the pushes it accepted).
    pub fn acknowledged(&self, peer: PeerId) -> &[(DocId, RevId)] {
        &self.peers[peer].acknowledged
    }

    /// Saves a document (JSON object) in the default collection of a peer, as its
    /// application would.
    pub fn save(&mut self, peer: PeerId, id: &str, json: &str) -> Result<RevId, SimError> {
        self.save_in(peer, &CollectionName::default(), id, json)
    }

    /// Saves a document (JSON object) in `collection` (created if needed) of a peer.
    pub fn save_in(
        &mut self,
        peer: PeerId,
        collection: &CollectionName,
        id: &str,
        json: &str,
    ) -> Result<RevId, SimError> {
        let c = collection.clone();
        self.peers[peer].db.create_collection(&c)?;
        let id = DocId::new(id).map_err(|e| {
            SimError::Storage(StorageError::Corrupt {
                what: "document ID",
                key: id.into(),
                reason: e.to_string(),
            })
        })?;
        let body = Body::from_json_str(json).map_err(StorageError::Body)?;
        let before = self.begin_write(peer);
        let saved = self.peers[peer].db.save_with(&c, &id, body, Expected::Any);
        self.end_write(peer, before);
        let w = saved?;
        self.acknowledge_save(peer, id, w.rev);
        self.notify(peer);
        Ok(w.rev)
    }

    /// Deletes a document on a peer (if it is live there).
    pub fn delete(&mut self, peer: PeerId, id: &str) -> Result<Option<RevId>, SimError> {
        let c = CollectionName::default();
        let Ok(id) = DocId::new(id) else {
            return Ok(None);
        };
        let before = self.begin_write(peer);
        let deleted = self.peers[peer].db.delete(&c, &id, Expected::Any);
        self.end_write(peer, before);
        match deleted {
            Ok(w) => {
                self.acknowledge_save(peer, id, w.rev);
                self.notify(peer);
                Ok(Some(w.rev))
            }
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Cuts a link's connection now (both sides see it drop).
    pub fn drop_connection(&mut self, link: LinkId) {
        if let Some(conn) = self.links[link].conn.take() {
            self.stats.dropped_connections += 1;
            self.kill_conn(conn, "connection reset (simulated)");
        }
    }

    /// Partitions a link: its connection drops and reconnects fail until [`World::heal`].
    pub fn partition(&mut self, link: LinkId) {
        self.links[link].partitioned = true;
        self.drop_connection(link);
    }

    /// Heals a partition.
    pub fn heal(&mut self, link: LinkId) {
        self.links[link].partitioned = false;
    }

    /// Crashes a peer and restarts it at once: unfinished storage work and every
    /// non-durable write are lost, its connections drop, and its replicators restart
    /// (as a restarted application would).
    pub fn crash(&mut self, peer: PeerId) {
        self.stats.crashes += 1;
        let links: Vec<LinkId> = (0..self.links.len())
            .filter(|l| self.links[*l].from == peer || self.links[*l].to == peer)
            .collect();
        for l in &links {
            if let Some(conn) = self.links[*l].conn.take() {
                self.kill_conn(conn, "peer crashed");
            }
        }
        let p = &mut self.peers[peer];
        p.incarnation += 1;
        // Writes whose sync had not ended are lost, unacknowledged and unanswered.
        if let Some(sync) = p.syncing.take() {
            self.stats.unsynced_writes_lost += (sync.saves.len() + sync.replies.len()) as u64;
        }
        p.kv.crash();
        p.db = open(
            &p.kv,
            &p.blobs,
            p.uuid,
            self.config.max_rev_depth,
            p.max_blob_bytes,
        );
        p.notified.clear();
        let own: Vec<LinkId> = links
            .into_iter()
            .filter(|l| self.links[*l].from == peer)
            .collect();
        for l in own {
            let link = &mut self.links[l];
            let was_running = link.replicator.status().activity != Activity::Stopped;
            link.generation += 1;
            link.replicator = ActiveReplicator::new(link.config.clone());
            // A recording replays one machine: the rebuilt one is not in it.
            if let (Some(mut tape), Some(out)) = (link.tape.take(), link.recording.as_mut()) {
                tape.outputs_done(out);
            }
            if was_running {
                self.start(l);
            }
        }
    }

    /// Runs until nothing is in flight and every replicator is idle or stopped.
    pub fn run_until_quiet(&mut self, limit: Duration) -> Result<(), SimError> {
        let deadline = self.now + limit;
        loop {
            if self.is_quiet() {
                return Ok(());
            }
            if !self.step(deadline) {
                return if self.is_quiet() {
                    Ok(())
                } else {
                    Err(SimError::NotQuiet {
                        elapsed: self.elapsed(),
                        statuses: self
                            .links
                            .iter()
                            .enumerate()
                            .map(|(i, l)| (i, l.replicator.status().clone()))
                            .collect(),
                    })
                };
            }
        }
    }

    /// Runs for `duration` of virtual time, whatever happens.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        while self.step(deadline) {}
        self.now = self.now.max(deadline);
    }

    /// True when nothing is in flight and every replicator is idle or stopped.
    pub fn is_quiet(&self) -> bool {
        self.queue.is_empty()
            && self.links.iter().all(|l| {
                matches!(
                    l.replicator.status().activity,
                    Activity::Idle | Activity::Stopped
                )
            })
    }

    /// Checks that `peers` hold the same current revision and body for every document.
    pub fn check_converged(&self, peers: &[PeerId]) -> Result<(), SimError> {
        let c = CollectionName::default();
        let mut ids = std::collections::BTreeSet::new();
        for p in peers {
            let mut after = None;
            loop {
                let feed = self.peers[*p]
                    .db
                    .changes(&c, after.unwrap_or(Seq::ZERO), 10_000)?;
                let Some(last) = feed.last().map(|ch| ch.seq) else {
                    break;
                };
                ids.extend(feed.into_iter().map(|ch| ch.doc_id));
                after = Some(last);
            }
        }
        for id in ids {
            let mut holdings = Vec::with_capacity(peers.len());
            for p in peers {
                let doc = self.peers[*p].db.get_including_deleted(&c, &id)?;
                if let Some(d) = doc.as_ref().filter(|d| !d.deleted) {
                    self.check_blobs_intact(*p, &id, &d.body)?;
                }
                holdings.push((
                    self.peers[*p].name.clone(),
                    doc.map(|d| (d.rev, d.deleted, d.body.to_json_string())),
                ));
            }
            if holdings.windows(2).any(|w| w[0].1 != w[1].1) {
                return Err(SimError::Diverged {
                    doc: id.to_string(),
                    holdings,
                });
            }
        }
        Ok(())
    }

    /// Checks that every blob `body` (`doc`'s current revision on `peer`) refers to is
    /// there, whole: its bytes hash to its digest.
    fn check_blobs_intact(&self, peer: PeerId, doc: &DocId, body: &Body) -> Result<(), SimError> {
        let p = &self.peers[peer];
        for blob in body.blobs().unwrap_or_default() {
            let mut bytes = Vec::new();
            let intact = match p.db.open_blob(&blob.digest)? {
                Some(mut r) => {
                    std::io::Read::read_to_end(&mut r, &mut bytes).is_ok()
                        && BlobDigest::of(&bytes) == blob.digest
                        && bytes.len() as u64 == blob.length
                }
                None => false,
            };
            if !intact {
                return Err(SimError::BlobMissing {
                    peer: p.name.clone(),
                    doc: doc.to_string(),
                    digest: blob.digest,
                });
            }
        }
        Ok(())
    }

    /// Sets the largest blob `peer`'s database accepts (its database is reopened).
    pub fn set_max_blob_bytes(&mut self, peer: PeerId, max: u64) {
        let depth = self.config.max_rev_depth;
        let p = &mut self.peers[peer];
        p.max_blob_bytes = max;
        p.db = open(&p.kv, &p.blobs, p.uuid, depth, max);
    }

    /// Replaces the bytes of blob `digest` on `peer` with `bytes`, as a damaged disk would.
    pub fn corrupt_blob(&mut self, peer: PeerId, digest: BlobDigest, bytes: &[u8]) {
        self.peers[peer]
            .blobs
            .put_unchecked(digest, bytes::Bytes::copy_from_slice(bytes));
    }

    /// Removes blob `digest` from `peer` behind its database's back, as a lost file would.
    pub fn lose_blob(&mut self, peer: PeerId, digest: &BlobDigest) {
        self.peers[peer].blobs.lose(digest);
    }

    /// Saves `bytes` as a blob on `peer` (durable at once, as a saved blob is).
    pub fn save_blob(&mut self, peer: PeerId, bytes: &[u8]) -> Result<Blob, SimError> {
        Ok(self.peers[peer].db.save_blob(bytes, None)?)
    }

    /// Checks that every revision `peer` acknowledged survives on each of `on` (as far as
    /// the kept history reaches): it is the current revision or an ancestor of it, or a
    /// deletion that saw it removed it and the document stayed deleted or was re-created
    /// after a deletion at least as recent. Run it on peers that stored the revisions
    /// themselves: ancestors learned only from history lists carry no deleted flag.
    pub fn check_acknowledged_kept(&self, peer: PeerId, on: &[PeerId]) -> Result<(), SimError> {
        self.check_acknowledged_kept_unless(peer, on, |_, _| false)
    }

    /// [`World::check_acknowledged_kept`], except for the revisions `excused` names (such
    /// as those a forgotten tombstone had closed: they are gone with it, as they should).
    pub fn check_acknowledged_kept_unless(
        &self,
        peer: PeerId,
        on: &[PeerId],
        excused: impl Fn(&DocId, &RevId) -> bool,
    ) -> Result<(), SimError> {
        let c = CollectionName::default();
        for (doc, rev) in &self.peers[peer].acknowledged {
            if excused(doc, rev) {
                continue;
            }
            for p in on {
                let tree = self.peers[*p].db.rev_tree(&c, doc)?;
                let current = tree.as_ref().and_then(|t| t.current_rev());
                let kept = match (&tree, current) {
                    (Some(t), Some(cur)) => {
                        let beyond_history = cur.generation().saturating_sub(rev.generation())
                            >= self.config.max_rev_depth as u64;
                        beyond_history || acknowledged_kept(t, &cur, rev)
                    }
                    _ => false,
                };
                if !kept {
                    return Err(SimError::LostWrite {
                        peer: self.peers[peer].name.clone(),
                        doc: doc.to_string(),
                        rev: *rev,
                        current,
                    });
                }
            }
        }
        Ok(())
    }

    /// Every peer's revision tree of one document, for diagnosing a failed check.
    pub fn describe_doc(&self, doc: &str) -> String {
        let c = CollectionName::default();
        let mut out = String::new();
        let Ok(id) = DocId::new(doc) else { return out };
        for p in &self.peers {
            out.push_str(&format!("{}:\n", p.name));
            if let Ok(Some(tree)) = p.db.rev_tree(&c, &id) {
                let current = tree.current_rev();
                for (rev, node) in tree.nodes() {
                    let mark = if Some(*rev) == current {
                        " <- current"
                    } else {
                        ""
                    };
                    let parent = node
                        .parent()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "-".into());
                    let body = node.body().map(|b| b.to_json_string()).unwrap_or_default();
                    let del = if node.is_deleted() { " deleted" } else { "" };
                    out.push_str(&format!("  {rev} <- {parent}{del} {body}{mark}\n"));
                }
            }
        }
        out
    }

    // ---- the engine ----

    fn schedule(&mut self, at: Instant, action: Action) {
        self.next_action += 1;
        self.queue.insert((at, self.next_action), action);
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.config.latency;
        Duration::from_nanos(self.rng.range(lo.as_nanos() as u64, hi.as_nanos() as u64))
    }

    fn storage_delay(&mut self) -> Duration {
        let (lo, hi) = self.config.storage_delay;
        Duration::from_nanos(self.rng.range(lo.as_nanos() as u64, hi.as_nanos() as u64))
    }

    /// Processes the next event or due timer, if any is due before `deadline`.
    fn step(&mut self, deadline: Instant) -> bool {
        let next_event = self.queue.keys().next().map(|(t, _)| *t);
        let next_timer = self.next_timer();
        let next = match (next_event, next_timer) {
            (Some(e), Some(t)) => e.min(t),
            (Some(e), None) => e,
            (None, Some(t)) => t,
            (None, None) => return false,
        };
        if next > deadline {
            return false;
        }
        self.now = self.now.max(next);
        if next_event.is_some_and(|e| e <= self.now) {
            if let Some((_, action)) = self.queue.pop_first() {
                self.perform(action);
            }
        } else {
            self.fire_timers();
        }
        true
    }

    fn next_timer(&self) -> Option<Instant> {
        let active = self
            .links
            .iter()
            .filter_map(|l| l.replicator.poll_timeout());
        let passive = self
            .conns
            .values()
            .filter(|c| c.passive_open)
            .filter_map(|c| c.passive.poll_timeout());
        active.chain(passive).min()
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for l in 0..self.links.len() {
            if self.links[l]
                .replicator
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.tape_step(l, StepKind::Timeout);
                self.links[l].replicator.handle_timeout(now);
                self.drain(Machine::Active(l, self.links[l].generation));
            }
        }
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.passive_open && c.passive.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(c) = self.conns.get_mut(&id) {
                c.passive.handle_timeout(now);
            }
            self.drain(Machine::Passive(id));
        }
    }

    fn perform(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::ToPassive(id, frame) => {
                self.count_frame(&frame);
                if let Some(c) = self.conns.get_mut(&id).filter(|c| c.passive_open) {
                    let _ = c.passive.handle_input(Input::Frame(frame), now);
                    self.drain(Machine::Passive(id));
                }
            }
            Action::ToActive(id, frame) => {
                self.count_frame(&frame);
                let Some(c) = self.conns.get(&id).filter(|c| c.active_open) else {
                    return;
                };
                let link = c.link;
                let input = Input::Frame(frame);
                self.tape_input(link, &input);
                let _ = self.links[link].replicator.handle_input(input, now);
                self.drain(Machine::Active(link, self.links[link].generation));
            }
            Action::PassiveDisconnected(id, why) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    if c.passive_open {
                        c.passive_open = false;
                        let _ = c.passive.handle_input(Input::Disconnected(why), now);
                        self.drain(Machine::Passive(id));
                    }
                    self.reap(id);
                }
            }
            Action::ActiveDisconnected(id, why) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    let link = c.link;
                    if c.active_open {
                        c.active_open = false;
                        if self.links[link].conn == Some(id) {
                            self.links[link].conn = None;
                        }
                        let input = Input::Disconnected(why);
                        self.tape_input(link, &input);
                        let _ = self.links[link].replicator.handle_input(input, now);
                        self.drain(Machine::Active(link, self.links[link].generation));
                    }
                    self.reap(id);
                }
            }
            Action::ConnectResult(link, generation) => self.connect(link, generation),
            Action::StorageDone {
                peer,
                incarnation,
                machine,
                id,
                op,
            } => {
                if self.peers[peer].incarnation != incarnation {
                    return; // the peer crashed before this work finished
                }
                self.stats.storage_ops += 1;
                let before = self.begin_write(peer);
                let reply = self.peers[peer].db.execute(op);
                let wrote = self.end_write(peer, before);
                if wrote && let Some(sync) = self.peers[peer].syncing.as_mut() {
                    // It wrote: answered once durable.
                    sync.replies.push((machine, id, reply));
                } else {
                    self.reply(machine, id, reply);
                }
                self.notify(peer);
            }
            Action::SyncDone { peer, incarnation } => {
                if self.peers[peer].incarnation != incarnation {
                    return; // the peer crashed before the sync ended
                }
                let Some(sync) = self.peers[peer].syncing.take() else {
                    return;
                };
                self.peers[peer].kv.finish_sync();
                self.peers[peer].acknowledged.extend(sync.saves);
                for (machine, id, reply) in sync.replies {
                    self.reply(machine, id, reply);
                }
            }
        }
    }

    /// Feeds a storage reply to the machine that asked, if it is still there.
    fn reply(&mut self, machine: Machine, id: OpId, reply: StorageReply) {
        self.feed(machine, Input::Storage(id, reply));
    }

    /// Before a write on `peer`: makes its store hold commits until a sync ends, and
    /// returns how many were pending (for [`World::end_write`]).
    fn begin_write(&mut self, peer: PeerId) -> usize {
        let kv = &self.peers[peer].kv;
        if !kv.is_syncing() {
            kv.begin_sync();
        }
        kv.pending_batches()
    }

    /// After a write on `peer`: true when it committed something. A commit starts a sync
    /// (unless one is in flight, which it joins) that ends after the sync delay; with
    /// nothing committed, or a zero delay, the store is durable again at once.
    fn end_write(&mut self, peer: PeerId, before: usize) -> bool {
        let wrote = self.peers[peer].kv.pending_batches() > before;
        if self.peers[peer].syncing.is_some() {
            return wrote;
        }
        let (lo, hi) = self.peers[peer]
            .sync_delay
            .unwrap_or(self.config.sync_delay);
        let delay = if wrote {
            Duration::from_nanos(self.rng.range(lo.as_nanos() as u64, hi.as_nanos() as u64))
        } else {
            Duration::ZERO
        };
        if delay.is_zero() {
            self.peers[peer].kv.finish_sync();
            return false;
        }
        self.peers[peer].syncing = Some(Syncing::default());
        let incarnation = self.peers[peer].incarnation;
        self.schedule(self.now + delay, Action::SyncDone { peer, incarnation });
        wrote
    }

    /// Records a local save or deletion as acknowledged: now, or when the sync ends.
    fn acknowledge_save(&mut self, peer: PeerId, doc: DocId, rev: RevId) {
        let p = &mut self.peers[peer];
        match p.syncing.as_mut() {
            Some(sync) => sync.saves.push((doc, rev)),
            None => p.acknowledged.push((doc, rev)),
        }
    }

    fn count_frame(&mut self, frame: &Bytes) {
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        let request = match Frame::decode(frame, &Default::default()) {
            Ok(Frame::Request(_, request)) => request,
            Ok(Frame::Response(_, Response::BlobChunk(bytes))) => {
                self.stats.blob_bytes_transferred += bytes.len() as u64;
                return;
            }
            _ => return,
        };
        let kind = match &request {
            Request::Hello(_) => "Hello",
            Request::GetCheckpoint { .. } => "GetCheckpoint",
            Request::SetCheckpoint { .. } => "SetCheckpoint",
            Request::SubChanges { .. } => "SubChanges",
            Request::Changes { changes, .. } if changes.is_empty() => "Changes (caught up)",
            Request::Changes { .. } => "Changes",
            Request::ProposeChanges { .. } => "ProposeChanges",
            Request::Revs { .. } => "Revs",
            Request::Ping => "Ping",
            Request::GetBlob { .. } => "GetBlob",
            _ => "other",
        };
        *self.stats.requests.entry(kind).or_default() += 1;
        if let Request::Revs { docs, .. } = request {
            self.stats.revisions_transferred +=
                docs.iter().map(|d| d.revisions.len() as u64).sum::<u64>();
        }
    }

    fn connect(&mut self, link: LinkId, generation: u64) {
        let now = self.now;
        if self.links[link].generation != generation {
            return;
        }
        let to = self.links[link].to;
        let refused = self.links[link].partitioned || self.peers[to].listener.is_none();
        if refused {
            let input =
                Input::Disconnected(Disconnect::transient("connection refused (simulated)"));
            self.tape_input(link, &input);
            let _ = self.links[link].replicator.handle_input(input, now);
            return self.drain(Machine::Active(link, generation));
        }
        let config = self.peers[to].listener.clone().unwrap_or_default();
        let id = self.next_conn;
        self.next_conn += 1;
        self.stats.connections += 1;
        self.conns.insert(
            id,
            Conn {
                link,
                passive: PassivePeer::new(config, Principal::default(), now),
                active_open: true,
                passive_open: true,
                to_passive_at: now,
                to_active_at: now,
            },
        );
        self.links[link].conn = Some(id);
        self.tape_input(link, &Input::Connected);
        let _ = self.links[link]
            .replicator
            .handle_input(Input::Connected, now);
        self.drain(Machine::Active(link, generation));
    }

    /// Closes a connection abruptly: both sides are told at once; frames in flight are lost.
    fn kill_conn(&mut self, id: ConnId, why: &str) {
        let now = self.now;
        self.schedule(
            now,
            Action::PassiveDisconnected(id, Disconnect::transient(why)),
        );
        self.schedule(
            now,
            Action::ActiveDisconnected(id, Disconnect::transient(why)),
        );
        if let Some(c) = self.conns.get_mut(&id) {
            // Nothing more is delivered on this connection.
            c.to_passive_at = now;
            c.to_active_at = now;
        }
        self.queue.retain(
            |_, a| !matches!(a, Action::ToPassive(c, _) | Action::ToActive(c, _) if *c == id),
        );
    }

    fn reap(&mut self, id: ConnId) {
        if self
            .conns
            .get(&id)
            .is_some_and(|c| !c.active_open && !c.passive_open)
        {
            self.conns.remove(&id);
        }
    }

    /// Dispatches everything a machine wants done.
    /// The state machine `machine` names, if it is still there, through the trait both
    /// kinds share (as a runtime's drive loop sees them).
    fn machine(&mut self, machine: Machine) -> Option<&mut dyn StateMachine> {
        match machine {
            Machine::Active(link, generation) => {
                let link = &mut self.links[link];
                (link.generation == generation).then_some(&mut link.replicator as _)
            }
            Machine::Passive(id) => self.conns.get_mut(&id).map(|c| &mut c.passive as _),
        }
    }

    /// Feeds `input` to `machine`, if it is still there, and acts on its outputs.
    fn feed(&mut self, machine: Machine, input: Input) {
        let now = self.now;
        if let Machine::Active(link, generation) = machine
            && self.links[link].generation == generation
        {
            self.tape_input(link, &input);
        }
        if let Some(m) = self.machine(machine) {
            // An error would be this simulator's misrouting, which the machine ignores.
            let _ = m.handle_input(input, now);
            self.drain(machine);
        }
    }

    fn drain(&mut self, machine: Machine) {
        while let Some(output) = self.machine(machine).and_then(|m| m.poll_output()) {
            if let Machine::Active(link, _) = machine
                && let Some(tape) = &mut self.links[link].tape
            {
                tape.output(&output);
            }
            self.dispatch(machine, output);
        }
    }

    fn dispatch(&mut self, machine: Machine, output: Output) {
        let now = self.now;
        match (machine, output) {
            (Machine::Active(link, generation), Output::Connect) => {
                let rtt = self.latency() * 2;
                self.schedule(now + rtt, Action::ConnectResult(link, generation));
            }
            (Machine::Active(link, _), Output::Send(frame)) => {
                let Some(id) = self.links[link].conn else {
                    return;
                };
                let lat = self.latency();
                if let Some(c) = self.conns.get_mut(&id).filter(|c| c.active_open) {
                    c.to_passive_at = c.to_passive_at.max(now + lat);
                    let at = c.to_passive_at;
                    self.schedule(at, Action::ToPassive(id, frame));
                }
            }
            (Machine::Passive(id), Output::Send(frame)) => {
                let lat = self.latency();
                if let Some(c) = self.conns.get_mut(&id).filter(|c| c.passive_open) {
                    c.to_active_at = c.to_active_at.max(now + lat);
                    let at = c.to_active_at;
                    self.schedule(at, Action::ToActive(id, frame));
                }
            }
            (Machine::Active(link, _), Output::Close(reason)) => {
                if let Some(id) = self.links[link].conn.take() {
                    let lat = self.latency();
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.active_open = false;
                        c.to_passive_at = c.to_passive_at.max(now + lat);
                        let at = c.to_passive_at;
                        let why = Disconnect::from_close(reason.code.as_u16(), &reason.message);
                        self.schedule(at, Action::PassiveDisconnected(id, why));
                    }
                }
            }
            (Machine::Passive(id), Output::Close(reason)) => {
                let lat = self.latency();
                if let Some(c) = self.conns.get_mut(&id) {
                    c.passive_open = false;
                    c.to_active_at = c.to_active_at.max(now + lat);
                    let at = c.to_active_at;
                    let why = Disconnect::from_close(reason.code.as_u16(), &reason.message);
                    self.schedule(at, Action::ActiveDisconnected(id, why));
                }
            }
            (machine, Output::Storage(id, op)) => {
                let peer = match machine {
                    Machine::Active(link, _) => self.links[link].from,
                    Machine::Passive(conn) => match self.conns.get(&conn) {
                        Some(c) => self.links[c.link].to,
                        None => return,
                    },
                };
                let delay = self.storage_delay();
                let incarnation = self.peers[peer].incarnation;
                self.schedule(
                    now + delay,
                    Action::StorageDone {
                        peer,
                        incarnation,
                        machine,
                        id,
                        op,
                    },
                );
            }
            (Machine::Active(link, _), Output::Event(event)) => self.links[link].events.push(event),
            (Machine::Passive(id), Output::Event(Event::Documents(docs))) => {
                let Some(c) = self.conns.get(&id) else { return };
                let peer = self.links[c.link].to;
                for d in docs {
                    if d.direction == Direction::Push && d.error.is_none() {
                        self.peers[peer].acknowledged.push((d.doc_id, d.rev));
                    }
                }
            }
            (_, _) => {}
        }
    }

    /// Tells every machine on `peer` about new local changes.
    fn notify(&mut self, peer: PeerId) {
        let collections = match self.peers[peer].db.collections() {
            Ok(c) => c,
            Err(_) => return,
        };
        for c in collections {
            let Ok(last) = self.peers[peer].db.last_sequence(&c) else {
                continue;
            };
            let seen = self.peers[peer]
                .notified
                .get(&c)
                .copied()
                .unwrap_or(Seq::ZERO);
            if last <= seen {
                continue;
            }
            self.peers[peer].notified.insert(c.clone(), last);
            for l in 0..self.links.len() {
                if self.links[l].from == peer {
                    let active = Machine::Active(l, self.links[l].generation);
                    self.feed(active, Input::LocalChange(c.clone(), last));
                }
            }
            let conns: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, conn)| conn.passive_open && self.links[conn.link].to == peer)
                .map(|(id, _)| *id)
                .collect();
            for id in conns {
                self.feed(Machine::Passive(id), Input::LocalChange(c.clone(), last));
            }
        }
    }
}

/// Whether an acknowledged revision `rev` survives in `tree` whose current revision is
/// `current`: either it is the current revision or an ancestor of it, or it was deleted by
/// a tombstone that descends from it (a deletion that saw it) and the document then
/// stayed deleted or was re-created after a deletion — through a tombstone that is not
/// part of `rev`'s own past.
///
/// A live branch that brings a document back without passing through such a deletion —
/// a concurrent edit resurrecting a deleted document, or a write silently dropped —
/// fails the check.
fn acknowledged_kept(tree: &peerlite_proto::RevTree, current: &RevId, rev: &RevId) -> bool {
    if tree.descends_from(current, rev) {
        return true;
    }
    let tombstones: Vec<RevId> = tree
        .nodes()
        .filter(|(_, n)| n.is_deleted())
        .map(|(r, _)| *r)
        .collect();
    let deleted_by_one_that_saw_it = tombstones.iter().any(|t| tree.descends_from(t, rev));
    deleted_by_one_that_saw_it
        && (tree.is_deleted()
            || tombstones
                .iter()
                .any(|t| tree.descends_from(current, t) && !tree.descends_from(rev, t)))
}

fn open(
    kv: &Arc<MemKv>,
    blobs: &MemBlobs,
    uuid: DatabaseUuid,
    depth: usize,
    max_blob_bytes: u64,
) -> Database {
    let config = DatabaseConfig {
        max_blob_bytes,
        durability: Durability::Sync,
        max_rev_depth: depth,
        uuid: Some(uuid),
        ..DatabaseConfig::default()
    };
    match Database::with_stores(kv.clone(), Arc::new(blobs.clone()), config) {
        Ok(db) => db,
        // An in-memory store that opened once always reopens.
        Err(e) => panic!("in-memory database failed to open: {e}"),
    }
}
