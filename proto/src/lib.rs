//! # peerlite-proto — the Sans-IO core of Peerlite
//!
//! Peerlite syncs JSON documents between peers, in the manner of Couchbase Lite's
//! peer-to-peer replication. This crate holds everything that is pure logic: the document
//! model, revision trees, conflict resolution, the wire protocol, and the two replication
//! state machines — [`ActiveReplicator`] (connects, pushes, pulls) and [`PassivePeer`]
//! (the listener's side of one connection). It performs no I/O, reads no clock, spawns no
//! thread and holds no lock, so it runs the same inside a tokio or smol runtime, a
//! deterministic simulator or a fuzzer.
//!
//! ## Driving a state machine
//! Both machines have the same shape. Every call that can move time takes `now`.
//!
//! 1. Feed **one** input with `handle_input(input, now)`: [`Input::Connected`],
//!    [`Input::Frame`] (one WebSocket binary message), [`Input::Storage`] (the reply to a
//!    storage operation), [`Input::LocalChange`] (the local database committed a change)
//!    or [`Input::Disconnected`]. Or call `handle_timeout(now)` when the deadline from
//!    `poll_timeout()` has passed (early or repeated calls are harmless), or
//!    [`ActiveReplicator::start`] / [`ActiveReplicator::stop`].
//! 2. Drain `poll_output()` until it returns `None`, acting on each [`Output`]:
//!    [`Output::Connect`] (open a connection), [`Output::Send`] (write one binary
//!    message), [`Output::Storage`] (run a [`StorageOp`] and feed the reply back, in any
//!    order), [`Output::Event`] (status, documents, closed), [`Output::Close`].
//! 3. Read `poll_timeout()` and arm one timer for it.
//!
//! Storage is an effect: the machine never acknowledges a revision or saves a checkpoint
//! before the storage reply backing it has come back, so a crash in between loses nothing
//! that was acknowledged. `peerlite_storage::Database::execute` runs any [`StorageOp`].
//!
//! ```no_run
//! use std::time::Instant;
//! use peerlite_proto::{ActiveReplicator, Input, Output, ReplicatorConfig};
//! # fn send(_: bytes::Bytes) {} fn connect() {} fn run(_: peerlite_proto::StorageOp) -> peerlite_proto::StorageReply { peerlite_proto::StorageReply::Done }
//! # fn next_input() -> Option<Input> { None }
//!
//! let mut replicator = ActiveReplicator::new(ReplicatorConfig::new([0; 16], "wss://peer:4984/db"));
//! replicator.start(Instant::now());
//! loop {
//!     while let Some(output) = replicator.poll_output() {
//!         match output {
//!             Output::Connect => connect(),              // later: Input::Connected
//!             Output::Send(frame) => send(frame),
//!             Output::Storage(id, op) => {
//!                 let reply = run(op);                   // e.g. Database::execute
//!                 replicator.handle_input(Input::Storage(id, reply), Instant::now()).unwrap();
//!             }
//!             Output::Event(event) => println!("{event:?}"),
//!             Output::Close(reason) => println!("closing: {}", reason.message),
//!             _ => {}
//!         }
//!     }
//!     // Wait for a frame, a storage reply, a local change or replicator.poll_timeout().
//!     match next_input() {
//!         Some(input) => replicator.handle_input(input, Instant::now()).unwrap(),
//!         None => replicator.handle_timeout(Instant::now()),
//!     }
//! }
//! ```
//! `examples/drive_by_hand.rs` is a complete, runnable version with two in-memory peers.
//!
//! ## Document model
//! - A database holds **collections** named `scope.name` ([`CollectionName`]); the default
//!   is `_default._default`.
//! - A **document** has an ID ([`DocId`]), a body ([`Body`]: a canonical CBOR map in the
//!   JSON data model) and a **revision tree** ([`RevTree`]).
//! - A **revision ID** ([`RevId`]) is `generation-digest`, where the digest hashes the
//!   parent revision, the deleted flag and the body bytes: the same edit on the same parent
//!   yields the same ID on every peer, and receivers check IDs against content.
//! - The **current revision** is a deterministic function of the tree (live leaves beat
//!   tombstones, then higher generation, then higher digest), and merging trees is a set
//!   union, so peers that hold the same revisions agree.
//! - **Conflicts** are resolved on the pulling side by a [`ConflictResolver`] (by default
//!   [`DefaultConflictResolver`]: deletion wins, then the longer history, then the higher
//!   revision ID) into ordinary revisions ([`resolution_revisions`]): the winner becomes a
//!   child of the remote revision and the local branch is closed with a tombstone. A
//!   document always travels with the tombstones closing its other branches, so every peer
//!   learns how each conflict was resolved.
//!
//! ```
//! use peerlite_proto::{Body, RevTree, Revision};
//!
//! let v1 = Revision::first(false, Body::from_json_str(r#"{"title": "draft"}"#)?)?;
//! let v2 = v1.child(false, Body::from_json_str(r#"{"title": "final"}"#)?, 20)?;
//! v2.validate()?; // what a receiver checks: the ID matches the content and history
//!
//! let mut tree = RevTree::new();
//! tree.insert(&v2)?;
//! assert_eq!(tree.current_rev(), Some(v2.rev));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod active;
mod backoff;
mod blob;
mod body;
mod bundle;
pub mod cbor;
mod collection;
mod conflict;
mod conn;
mod doc_id;
mod io;
mod machine;
mod passive;
mod peer_knows;
mod receiver;
pub mod record;
mod replicator_config;
mod rev_id;
mod revision;
mod revtree;
mod sender;
mod seq;
mod store;
mod timer;
mod violation;
mod wire;

pub use active::ActiveReplicator;
pub use backoff::Backoff;
pub use blob::{BLOB_TYPE, Blob, BlobDigest, BlobHasher, BlobRefError};
pub use body::{Body, BodyError, BodyLimits};
pub use bundle::{MAX_BUNDLE, bundle_from_leaves, other_leaf_ids};
pub use collection::{CollectionName, CollectionNameError, DEFAULT_NAME, MAX_COLLECTION_NAME_LEN};
pub use conflict::{
    Conflict, ConflictResolver, ConflictSide, DefaultConflictResolver, Resolution,
    resolution_revisions,
};
pub use doc_id::{DocId, DocIdError, MAX_DOC_ID_LEN};
pub use io::{
    Activity, ApiError, CloseCode, CloseReason, Direction, Disconnect, DocumentError,
    DocumentEvent, Event, Input, Output, Progress, ReplicationError, Retry, Status,
};
pub use machine::Machine;
pub use passive::{
    PassiveConfig, PassivePeer, Principal, ValidationContext, Validator, peer_checkpoint_key,
};
pub use replicator_config::{
    CollectionConfig, FilterContext, ReplicationFilter, ReplicatorConfig, ReplicatorType,
    local_checkpoint_key,
};
pub use rev_id::{DIGEST_LEN, RevId, RevIdError};
pub use revision::{MAX_HISTORY, Revision, RevisionError};
pub use revtree::{DEFAULT_MAX_DEPTH, RevNode, RevTree, RevTreeError};
pub use seq::Seq;
pub use store::{
    BlobTransfer, Change, InsertMode, InsertOutcome, OpId, RevisionInsert, RevsDiff,
    StorageFailure, StorageOp, StorageReply,
};
pub use violation::PeerMisbehaved;
pub use wire::{
    Checkpoint, Code, CollectionCheckpoint, ErrorBody, Frame, FrameError, FrameLimits, Hello,
    Oversized, PROTOCOL_VERSION, Request, RequestNumber, Response, RevBundle, RevStatus,
    SUBPROTOCOL,
};
