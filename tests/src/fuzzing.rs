//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by the replay test
//! that runs every committed corpus file on the stable toolchain.
//!
//! Each function takes arbitrary bytes and panics only when a property is broken: a
//! decoder that accepts bytes it cannot re-encode identically, a state machine that
//! panics or writes on bad input, a revision tree that breaks its algebra, a simulated
//! network that does not converge.

use std::time::{Duration, Instant};

use bytes::Bytes;
use peerlite_proto::{
    ActiveReplicator, Body, CollectionName, DocId, Frame, FrameLimits, Hello, Input, InsertOutcome,
    Output, PassiveConfig, PassivePeer, Principal, ReplicatorConfig, Request, Response, RevTree,
    Revision, StorageFailure, StorageReply,
};
use peerlite_storage::Database;

use crate::{Rng, SimConfig, World};

/// Reads fuzz input as a stream of choices; runs out gracefully.
pub struct ByteReader<'a> {
    data: &'a [u8],
}

impl<'a> ByteReader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> ByteReader<'a> {
        ByteReader { data }
    }

    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte, or `None` at the end.
    pub fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }

    /// A number below `n` (0 when `n` is 0), from up to two bytes.
    pub fn below(&mut self, n: usize) -> Option<usize> {
        let v = (usize::from(self.byte()?) << 8) | usize::from(self.byte().unwrap_or(0));
        Some(if n == 0 { 0 } else { v % n })
    }

    /// A length-prefixed chunk (two-byte big-endian length), or the rest.
    pub fn chunk(&mut self) -> Option<&'a [u8]> {
        if self.data.is_empty() {
            return None;
        }
        let len = match self.data {
            [hi, lo, rest @ ..] => {
                self.data = rest;
                (usize::from(*hi) << 8) | usize::from(*lo)
            }
            _ => return self.take_rest(),
        };
        let len = len.min(self.data.len());
        let (chunk, rest) = self.data.split_at(len);
        self.data = rest;
        Some(chunk)
    }

    fn take_rest(&mut self) -> Option<&'a [u8]> {
        let rest = self.data;
        self.data = &[];
        Some(rest)
    }
}

/// Encodes frames as a [`ByteReader::chunk`] sequence (for seed corpora).
pub fn chunks(frames: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let len = f.len().min(0xffff);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&f[..len]);
    }
    out
}

/// Frame decoding: never panics; decoding from shared bytes gives the same result as
/// from a slice; whatever decodes re-encodes to a frame that decodes to the same value.
pub fn frame_decode(data: &[u8]) {
    let decoded = Frame::decode(data, &FrameLimits::DEFAULT);
    assert_eq!(
        Frame::decode_bytes(&Bytes::copy_from_slice(data), &FrameLimits::DEFAULT),
        decoded,
        "both decoders must agree"
    );
    if let Ok(frame) = decoded {
        let again = Frame::decode(&frame.encode(), &FrameLimits::DEFAULT);
        assert_eq!(
            again.as_ref(),
            Ok(&frame),
            "a decoded frame must round-trip"
        );
    }
}

/// Body decoding: never panics; an accepted body is canonical (re-validating it is the
/// identity) and survives a JSON round trip.
pub fn body_decode(data: &[u8]) {
    if let Ok(body) = Body::from_cbor(Bytes::copy_from_slice(data)) {
        let again = Body::from_cbor(body.to_bytes()).expect("a canonical body re-validates");
        assert_eq!(again.as_bytes(), body.as_bytes());
        let json = body.to_json();
        assert_eq!(
            Body::from_json(&json).expect("JSON of a body converts back"),
            body
        );
        // Its placeholder for a redacted recording: the same length, the same blob
        // references, and itself once redacted again.
        let redacted = peerlite_proto::record::redact_body(&body);
        assert_eq!(redacted.len(), body.len(), "a placeholder keeps the length");
        assert_eq!(
            redacted.blobs().ok(),
            body.blobs().ok(),
            "and the blob references"
        );
        assert_eq!(peerlite_proto::record::redact_body(&redacted), redacted);
    }
}

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// Runs a passive peer's storage operations against `db` until it is idle.
fn settle_passive(peer: &mut PassivePeer, db: &Database, t: Instant) {
    for _ in 0..10_000 {
        let mut progressed = false;
        while let Some(out) = peer.poll_output() {
            if let Output::Storage(id, op) = out {
                let reply = db.execute(op);
                peer.handle_input(Input::Storage(id, reply), t)
                    .expect("reply to a pending op");
                progressed = true;
            }
        }
        if !progressed {
            return;
        }
    }
}

/// A passive peer after a valid handshake, fed arbitrary frames: it never panics, and
/// after it closes it ignores everything.
pub fn passive_frames(data: &[u8]) {
    let db = Database::in_memory().expect("in-memory database");
    let mut t = now();
    let mut peer = PassivePeer::new(PassiveConfig::default(), Principal::default(), t);
    let hello = Request::Hello(Hello {
        versions: vec![1],
        collections: vec![CollectionName::default()],
        push: true,
        pull: true,
        max_frame_bytes: None,
    });
    peer.handle_input(Input::Frame(Frame::Request(1, hello).encode()), t)
        .expect("frame");
    settle_passive(&mut peer, &db, t);
    let mut r = ByteReader::new(data);
    while let Some(chunk) = r.chunk() {
        t += Duration::from_millis(10);
        let was_closed = peer.is_closed();
        peer.handle_input(Input::Frame(Bytes::copy_from_slice(chunk)), t)
            .expect("frame");
        if was_closed {
            assert!(
                peer.poll_output().is_none(),
                "a closed peer must stay silent"
            );
        }
        settle_passive(&mut peer, &db, t);
        peer.handle_timeout(t);
        settle_passive(&mut peer, &db, t);
    }
}

/// An active replicator past its handshake, fed arbitrary frames and, when the first
/// byte is not zero, distorted storage replies (failures, replies of the wrong kind or
/// length, garbage checkpoints) at a rate of `first byte / 256`: it never panics.
pub fn active_frames(data: &[u8]) {
    let (fault_rate, data) = data.split_first().map_or((0, data), |(f, rest)| (*f, rest));
    let mut faults = Rng::new(u64::from(fault_rate));
    let db = Database::in_memory().expect("in-memory database");
    let mut t = now();
    let mut config = ReplicatorConfig::new(db.uuid().0, "ws://fuzz/db");
    config.continuous = true;
    let mut a = ActiveReplicator::new(config);
    a.start(t);
    let mut settle = |a: &mut ActiveReplicator, t: Instant| {
        for _ in 0..10_000 {
            let mut progressed = false;
            while let Some(out) = a.poll_output() {
                if let Output::Storage(id, op) = out {
                    let mut reply = db.execute(op);
                    if faults.below(256) < u64::from(fault_rate) {
                        reply = distort(reply, &mut faults);
                    }
                    a.handle_input(Input::Storage(id, reply), t)
                        .expect("reply to a pending op");
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    };
    settle(&mut a, t);
    a.handle_input(Input::Connected, t).expect("connected");
    a.handle_input(
        Input::Frame(
            Frame::Response(
                1,
                Response::Hello {
                    version: 1,
                    max_frame_bytes: None,
                },
            )
            .encode(),
        ),
        t,
    )
    .expect("frame");
    a.handle_input(
        Input::Frame(Frame::Response(2, Response::Checkpoint(None)).encode()),
        t,
    )
    .expect("frame");
    settle(&mut a, t);
    let mut r = ByteReader::new(data);
    while let Some(chunk) = r.chunk() {
        t += Duration::from_millis(10);
        a.handle_input(Input::Frame(Bytes::copy_from_slice(chunk)), t)
            .expect("frame");
        settle(&mut a, t);
        a.handle_timeout(t);
        settle(&mut a, t);
    }
}

/// A storage reply as a broken or hostile store might give it.
fn distort(reply: StorageReply, rng: &mut Rng) -> StorageReply {
    match rng.below(6) {
        0 => StorageReply::Failed(StorageFailure {
            message: "injected I/O error".into(),
            transient: true,
        }),
        1 => StorageReply::Failed(StorageFailure {
            message: "injected permanent failure".into(),
            transient: false,
        }),
        2 => StorageReply::Done,
        3 => StorageReply::Local(Some(Bytes::from_static(b"\xa1\x61x\xff not cbor"))),
        4 => match reply {
            StorageReply::Changes(_) => StorageReply::Changes(Vec::new()),
            StorageReply::RevsDiff(_) => StorageReply::RevsDiff(Vec::new()),
            StorageReply::Revisions(_) => StorageReply::Revisions(Vec::new()),
            StorageReply::Leaves(_) => StorageReply::Leaves(Vec::new()),
            StorageReply::Inserted(_) => StorageReply::Inserted(Vec::new()),
            other => other,
        },
        _ => match reply {
            StorageReply::Revisions(mut v) => {
                v.push(None);
                StorageReply::Revisions(v)
            }
            StorageReply::Leaves(mut v) => {
                v.push(Vec::new());
                StorageReply::Leaves(v)
            }
            StorageReply::Inserted(mut v) => {
                v.push(InsertOutcome::Conflict { current: None });
                StorageReply::Inserted(v)
            }
            other => other,
        },
    }
}

/// Random revision-tree operations: merge is commutative, associative and idempotent;
/// the winner does not depend on insertion order; pruning keeps leaves and the winner.
pub fn revtree_ops(data: &[u8]) {
    let mut r = ByteReader::new(data);
    let mut revs: Vec<Revision> = Vec::new();
    // Grow a forest of up to 40 revisions.
    while revs.len() < 40 {
        let Some(op) = r.byte() else { break };
        let deleted = op & 1 == 1;
        let body = if deleted {
            Body::empty()
        } else {
            Body::from_json(&serde_json::json!({ "v": op, "n": revs.len() })).expect("body")
        };
        let rev = if revs.is_empty() || op & 0x80 != 0 {
            Revision::first(deleted, body)
        } else {
            let parent = &revs[r.below(revs.len()).unwrap_or(0)];
            parent.child(deleted, body, 1000)
        };
        if let Ok(rev) = rev {
            revs.push(rev);
        }
    }
    if revs.is_empty() {
        return;
    }
    let pick = |r: &mut ByteReader<'_>| {
        let mut t = RevTree::new();
        for rev in &revs {
            if r.byte().unwrap_or(1) & 1 == 1 {
                t.insert(rev).expect("valid history");
            }
        }
        t
    };
    let (a, b, c) = (pick(&mut r), pick(&mut r), pick(&mut r));
    let merged = |x: &RevTree, y: &RevTree| {
        let mut m = x.clone();
        m.merge(y);
        m
    };
    assert_eq!(merged(&a, &b), merged(&b, &a));
    assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    assert_eq!(merged(&a, &a), a);
    let mut forward = RevTree::new();
    let mut backward = RevTree::new();
    for rev in &revs {
        forward.insert(rev).expect("valid history");
    }
    for rev in revs.iter().rev() {
        backward.insert(rev).expect("valid history");
    }
    assert_eq!(forward, backward);
    let winner = forward.current_rev();
    let leaves = forward.leaf_ids();
    let depth = 1 + r.below(8).unwrap_or(0);
    forward.prune(depth);
    assert_eq!(forward.leaf_ids(), leaves);
    assert_eq!(forward.current_rev(), winner);
}

/// A whole simulation decoded from the input: a hub and up to three continuous clients,
/// then writes, deletes, drops, partitions and crashes; after healing, every peer holds
/// the same current revision and body for every document, and everything the hub
/// acknowledged survives.
pub fn convergence(data: &[u8]) {
    let mut r = ByteReader::new(data);
    let seed = u64::from(r.byte().unwrap_or(0)) << 8 | u64::from(r.byte().unwrap_or(0));
    let mut w = World::new(seed, SimConfig::default());
    let hub = w.add_peer("hub");
    w.listen(hub, PassiveConfig::default());
    let n = 1 + r.below(3).unwrap_or(0);
    let clients: Vec<_> = (0..n).map(|i| w.add_peer(&format!("c{i}"))).collect();
    let links: Vec<_> = clients
        .iter()
        .map(|c| {
            w.replicate(*c, hub, |cfg| {
                cfg.continuous = true;
                cfg.initial_retry_wait = Duration::from_millis(10);
                cfg.max_attempt_wait = Duration::from_millis(200);
            })
        })
        .collect();
    for l in &links {
        w.start(*l);
    }
    let mut peers = vec![hub];
    peers.extend(&clients);
    let mut steps = 0;
    while let Some(op) = r.byte() {
        steps += 1;
        if steps > 200 {
            break;
        }
        let peer = peers[r.below(peers.len()).unwrap_or(0)];
        let doc = format!("d{}", r.below(6).unwrap_or(0));
        let link = links[r.below(links.len()).unwrap_or(0)];
        match op % 16 {
            0..=7 => {
                let _ = w.save(peer, &doc, &format!(r#"{{"v": {op}}}"#));
            }
            8..=10 => {
                let _ = w.delete(peer, &doc);
            }
            11 => w.drop_connection(link),
            12 => w.partition(link),
            13 => w.heal(link),
            14 => w.crash(peer),
            _ => w.run_for(Duration::from_millis(u64::from(op))),
        }
        w.run_for(Duration::from_micros(500));
    }
    for l in &links {
        w.heal(*l);
    }
    w.run_until_quiet(Duration::from_secs(3600))
        .expect("replication settles");
    if let Err(e) = w.check_converged(&peers) {
        let doc = match &e {
            crate::SimError::Diverged { doc, .. } => w.describe_doc(doc),
            _ => String::new(),
        };
        panic!("peers diverge: {e}\n{doc}");
    }
    w.check_acknowledged_kept(hub, &[hub])
        .expect("nothing acknowledged is lost");
}

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target, by name, for the replay test and the corpus recorder.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_decode", frame_decode),
    ("body_decode", body_decode),
    ("passive_frames", passive_frames),
    ("active_frames", active_frames),
    ("revtree_ops", revtree_ops),
    ("convergence", convergence),
    ("recording_read", recording_read),
];

/// Reading a sync-doctor recording: never panics, whatever the bytes; every step read
/// encodes and reads back to itself.
pub fn recording_read(data: &[u8]) {
    use peerlite_proto::record::{self, RecordingReader};
    let Ok((mut reader, header)) = RecordingReader::new(data) else {
        return;
    };
    let mut again = record::encode_header(&header);
    let mut steps = Vec::new();
    while let Ok(Some(step)) = reader.next_step() {
        again.extend(record::encode_step(&step));
        steps.push(step);
    }
    let (mut reader, read_header) = RecordingReader::new(&again).expect("re-encoded header");
    assert_eq!(
        record::encode_header(&read_header),
        record::encode_header(&header)
    );
    for step in steps {
        assert_eq!(reader.next_step().expect("re-encoded step"), Some(step));
    }
}

/// Frames of a real replication between two in-memory peers, for seed corpora:
/// (frames the active peer sent, frames the passive peer sent).
pub fn record_session() -> (Vec<Bytes>, Vec<Bytes>) {
    let phone = Database::in_memory().expect("db");
    let laptop = Database::in_memory().expect("db");
    let c = CollectionName::default();
    for (db, prefix) in [(&phone, "p"), (&laptop, "l")] {
        for i in 0..5 {
            let id = DocId::new(format!("{prefix}{i}")).expect("id");
            let body =
                Body::from_json(&serde_json::json!({ "n": i, "tags": ["a", "b"] })).expect("body");
            db.save(&c, &id, body).expect("save");
        }
    }
    // A blob each way, so the corpora hold GetBlob and BlobChunk frames.
    for (db, len) in [(&phone, 3_000usize), (&laptop, 700)] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let blob = db.save_blob(&bytes[..], Some("image/png")).expect("blob");
        let body = Body::from_json(&serde_json::json!({ "photo": blob.to_json() })).expect("body");
        let id = DocId::new(format!("photo-{len}")).expect("id");
        db.save(&c, &id, body).expect("save");
    }
    let shared = DocId::new("shared").expect("id");
    for db in [&phone, &laptop] {
        let body =
            Body::from_json(&serde_json::json!({ "who": db.uuid().to_string() })).expect("body");
        db.save(&c, &shared, body).expect("save");
    }
    let _ = laptop.delete(
        &c,
        &DocId::new("l0").expect("id"),
        peerlite_storage::Expected::Any,
    );
    let t = now();
    let mut active = ActiveReplicator::new(ReplicatorConfig::new(phone.uuid().0, "ws://laptop/db"));
    let mut passive = PassivePeer::new(PassiveConfig::default(), Principal::default(), t);
    let (mut sent_by_active, mut sent_by_passive) = (Vec::new(), Vec::new());
    active.start(t);
    let mut to_passive = std::collections::VecDeque::new();
    let mut to_active = std::collections::VecDeque::new();
    for _ in 0..10_000 {
        while let Some(out) = active.poll_output() {
            match out {
                Output::Connect => active.handle_input(Input::Connected, t).expect("connected"),
                Output::Send(f) => {
                    sent_by_active.push(f.clone());
                    to_passive.push_back(f);
                }
                Output::Storage(id, op) => {
                    let reply = phone.execute(op);
                    active
                        .handle_input(Input::Storage(id, reply), t)
                        .expect("reply");
                }
                _ => {}
            }
        }
        while let Some(out) = passive.poll_output() {
            match out {
                Output::Send(f) => {
                    sent_by_passive.push(f.clone());
                    to_active.push_back(f);
                }
                Output::Storage(id, op) => {
                    let reply = laptop.execute(op);
                    passive
                        .handle_input(Input::Storage(id, reply), t)
                        .expect("reply");
                }
                _ => {}
            }
        }
        match (to_passive.pop_front(), to_active.pop_front()) {
            (None, None) => break,
            (a, b) => {
                if let Some(f) = a {
                    passive.handle_input(Input::Frame(f), t).expect("frame");
                }
                if let Some(f) = b {
                    active.handle_input(Input::Frame(f), t).expect("frame");
                }
            }
        }
    }
    (sent_by_active, sent_by_passive)
}
