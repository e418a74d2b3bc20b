//! # peerlite-storage — Peerlite's document database
//!
//! A [`Database`] holds collections of JSON documents with revision trees, a changes feed
//! per collection, local (non-replicated) documents and a UUID. It runs on one of two
//! backends behind the [`KvBackend`] trait, with identical behaviour (one conformance
//! suite runs against both):
//!
//! - [`FjallKv`]: on disk, on the fjall LSM engine ([`Database::open`], which puts a small
//!   [`CachedKv`] in front of it for documents read twice in a row by replication);
//! - [`MemKv`]: in memory, with a crash model for simulations ([`Database::in_memory`]).
//!
//! Blobs — files inside documents — live beside the documents, once per database, in a
//! [`BlobStore`] ([`FileBlobs`] on disk, [`MemBlobs`] in memory): see
//! [`Database::save_blob`] and [`Database::compact`].
//!
//! Each document change commits atomically: the document record (revision tree and
//! sequence), its new changes-feed entry and the removal of the old entry are one batch.
//! Durability is configurable ([`Durability`]); the default syncs every commit to disk.
//!
//! The replication core in `peerlite-proto` asks storage for four things, all here:
//! the changes feed ([`Database::changes`]), which revisions are missing
//! ([`Database::revs_diff`]), a revision with its history ([`Database::get_revision`]),
//! and inserting revisions with their history ([`Database::insert_revisions`]).
//!
//! ```
//! use peerlite_storage::Database;
//! use peerlite_proto::{Body, CollectionName, DocId};
//!
//! let dir = tempfile::tempdir()?;
//! let c = CollectionName::default();
//! {
//!     let db = Database::open(dir.path())?;
//!     db.save(&c, &DocId::new("greeting")?, Body::from_json_str(r#"{"text": "hello"}"#)?)?;
//! }
//! let db = Database::open(dir.path())?; // reopening keeps everything
//! let doc = db.get(&c, &DocId::new("greeting")?)?.expect("persisted");
//! assert_eq!(doc.body.to_json()["text"], "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod blobs;
mod cbor_io;
mod create;
mod database;
mod error;
mod expiry;
mod fjall_backend;
mod keys;
mod kv;
mod mem;
mod notify;
mod pending;
mod record;
mod record_cache;
mod replication;
mod retention;
pub mod sample;

pub use blobs::{BlobInfo, BlobStore, BlobWrite, BlobWriter, CompactReport, FileBlobs, MemBlobs};
pub use database::{
    DEFAULT_MAX_BLOB_BYTES, Database, DatabaseConfig, DatabaseUuid, Document, DocumentPage,
    Expected, FORMAT_VERSION, MAX_LOCAL_ID_LEN, Purged, WriteResult,
};
pub use error::{KvError, StorageError};
pub use fjall_backend::{FjallKv, FjallMemory};
pub use kv::{Durability, KvBackend, KvPair, Space, WriteBatch, WriteOp};
pub use mem::MemKv;
pub use notify::{ChangeNotice, ChangeOrigin, ListenerToken, NotifyWhen};
pub use peerlite_proto::{Change, InsertMode, InsertOutcome, RevisionInsert, RevsDiff};
pub use record_cache::{CacheStats, CachedKv};
pub use retention::DEFAULT_TOMBSTONE_RETENTION;
