//! `peerlite`: serve a database, sync with a peer, edit documents, manage TLS identities,
//! and run a demo.

mod allocator;
mod bench;
mod blobs;
mod demo;
mod docs;
mod identity;
mod inspect;
mod logs;
mod net;
mod replay;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use peerlite_proto::CollectionName;
use peerlite_storage::Database;
use target::Target;

// glibc's allocator spends up to a fifth of sync CPU in malloc and free (its
// consolidation of freed chunks); mimalloc makes storage and decoding ~1.7x faster
// (`peerlite-storage`'s replication_bench). `allocator::tune` keeps its resident memory
// close to what is in use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Peer-to-peer document sync: serve a database, sync with a peer, edit documents.
#[derive(Parser)]
#[command(name = "peerlite", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    logs: logs::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a database to replicators (a listener: the passive peer).
    Serve(net::ServeArgs),
    /// Replicate a database with a listener at URL (the active peer).
    Sync(net::SyncArgs),
    /// Save a document from JSON (an object).
    Put {
        #[command(flatten)]
        db: DbArgs,
        /// Document ID.
        id: String,
        /// The document body, a JSON object, or - to read it from standard input.
        json: String,
        /// Store FILE as a blob and set the body's key NAME to its reference (repeatable).
        #[arg(long, value_name = "NAME=FILE", value_parser = blobs::parse_attach)]
        attach: Vec<(String, PathBuf)>,
        /// The document expires this long after now (90s, 30m, 2h, 7d): it is then
        /// purged here, not deleted, and nothing is replicated for it.
        #[arg(long, value_name = "DURATION", value_parser = docs::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Show or set when a document expires: it is then purged from this database — no
    /// tombstone, nothing replicated (expiration is local; peers keep their copies).
    Expire {
        #[command(flatten)]
        db: DbArgs,
        /// Document ID.
        id: String,
        /// Expire at this RFC 3339 time (2030-01-01T00:00:00Z).
        #[arg(long, value_name = "TIME", group = "when")]
        at: Option<String>,
        /// Expire this long after now (90s, 30m, 2h, 7d).
        #[arg(long = "in", value_name = "DURATION", group = "when", value_parser = docs::parse_duration)]
        after: Option<std::time::Duration>,
        /// Never expire.
        #[arg(long, group = "when")]
        never: bool,
    },
    /// Print a document's body as JSON (or, with --meta, its revision, sequence, other
    /// leaves and history too).
    Get {
        #[command(flatten)]
        db: DbArgs,
        /// Document ID.
        id: String,
        /// Also its revision, deletion, sequence, other leaves and revision history (a
        /// deleted document too).
        #[arg(long)]
        meta: bool,
        /// With --meta: one JSON object instead of text.
        #[arg(long, requires = "meta")]
        json: bool,
    },
    /// Show what a database holds: collections with their documents, tombstones and last
    /// sequence, blobs, size on disk.
    Info {
        /// Database directory.
        #[arg(long)]
        db: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a collection's changes feed: each document once, at its latest change, in
    /// sequence order (`SEQ ID REV [deleted]`).
    Changes {
        #[command(flatten)]
        db: DbArgs,
        /// Only changes after this sequence.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Then keep printing each change as it is made, until interrupted (Ctrl-C).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Delete a document.
    Rm {
        #[command(flatten)]
        db: DbArgs,
        /// Document ID.
        id: String,
    },
    /// Remove every trace of documents from this database, all or none (not replicated:
    /// peers keep their copies, and send one back only once it changes there).
    Purge {
        #[command(flatten)]
        db: DbArgs,
        /// Document IDs.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// List document IDs, one per line.
    Ls {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Import documents from JSON lines, each an object with an "_id".
    Import {
        #[command(flatten)]
        db: DbArgs,
        /// The JSON-lines file ("-" for standard input).
        file: PathBuf,
    },
    /// Export documents as JSON lines, each with its "_id".
    Export {
        #[command(flatten)]
        db: DbArgs,
    },
    /// List a database's collections, one per line.
    Collections {
        /// Database directory (it must exist).
        #[arg(long)]
        db: PathBuf,
    },
    /// Delete a collection and every document in it from this database (not replicated:
    /// peers keep theirs). The default collection cannot be deleted.
    DeleteCollection {
        /// Database directory (it must exist).
        #[arg(long)]
        db: PathBuf,
        /// The collection, as SCOPE.NAME.
        collection: String,
    },
    /// Store, read and list blobs: files that documents refer to.
    Blob {
        #[command(subcommand)]
        command: blobs::BlobCommand,
    },
    /// Remove the blobs no document refers to any more, and say what was reclaimed.
    Compact {
        /// Database directory (it must exist).
        #[arg(long)]
        db: PathBuf,
    },
    /// Show or set how long deleted documents' tombstones are kept (30 days unless set).
    /// Older ones are forgotten, so the database does not grow forever; a peer that last
    /// synced before a forgotten deletion is refused, instead of bringing it back.
    Retention {
        /// Database directory (it must exist).
        #[arg(long)]
        db: PathBuf,
        /// Keep tombstones this long (30d, 12h; 0s forgets them at once).
        #[arg(long, value_name = "DURATION", group = "how_long")]
        keep: Option<String>,
        /// Keep tombstones forever (peers may stay away any time; the database keeps
        /// every deletion).
        #[arg(long, group = "how_long")]
        forever: bool,
    },
    /// Manage TLS identities stored in a database.
    Identity {
        /// Database directory.
        #[arg(long)]
        db: PathBuf,
        #[command(subcommand)]
        command: identity::IdentityCommand,
    },
    /// The sync doctor: replay a recording (sync --record, serve --record) without network
    /// or database, check that the state machine gives the same outputs at every step,
    /// and explain the session: timeline, exchanges, stalls, what it was waiting for.
    Replay(replay::ReplayArgs),
    /// Sync a generated data set between a listener and a replicator on loopback, with
    /// TLS and Basic auth, then make conflicts and resolve them.
    Demo {
        /// Number of documents to generate.
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
    },
    /// Measure sync speed: a listener process and a replicator over loopback, on disk,
    /// with TLS and Basic auth; prints figures per run and their medians.
    Bench(bench::BenchArgs),
    /// The listener process of `peerlite bench` (driven over standard input).
    #[command(hide = true)]
    BenchPeer,
}

/// A database directory and a collection.
#[derive(Args)]
struct DbArgs {
    /// Database directory (put and import create it; other commands need it to exist).
    #[arg(long)]
    db: PathBuf,
    /// Collection, as scope.name or name.
    #[arg(long, default_value = "_default._default")]
    collection: String,
}

impl DbArgs {
    /// For commands that write: the database (created if missing) and the collection
    /// (created by the write if missing).
    fn open(&self) -> Result<(Target, CollectionName), String> {
        let collection = parse_collection(&self.collection)?;
        Ok((Target::open(&self.db)?, collection))
    }

    /// For commands that read (or remove): the database must exist, and so must the
    /// collection (checked by the operation), so a mistyped name is an error instead of
    /// an empty answer.
    fn open_existing(&self) -> Result<(Target, CollectionName), String> {
        let collection = parse_collection(&self.collection)?;
        Ok((Target::open_existing(&self.db)?, collection))
    }
}

fn open_db(path: &std::path::Path) -> Result<Database, String> {
    open_db_with(path, peerlite_storage::DEFAULT_MAX_BLOB_BYTES)
}

/// Opens a database that accepts blobs of at most `max_blob_bytes`.
fn open_db_with(path: &std::path::Path, max_blob_bytes: u64) -> Result<Database, String> {
    let config = peerlite_storage::DatabaseConfig {
        max_blob_bytes,
        ..Default::default()
    };
    let db = Database::open_with_config(path, config)
        .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    // What expired while nothing held the database goes first: an expired document is
    // never read or sent.
    purge_expired(&db);
    Ok(db)
}

/// Purges the documents whose expiration has passed and forgets the tombstones older
/// than the retention (logged; a failure is a warning: the next open or timer tries
/// again).
fn purge_expired(db: &Database) {
    let now = std::time::SystemTime::now();
    match db.purge_expired(now) {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "expired documents purged"),
        Err(e) => tracing::warn!(error = %e, "expired documents could not be purged"),
    }
    match db.forget_tombstones(now) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            forgotten = n,
            "tombstones older than the retention forgotten"
        ),
        Err(e) => tracing::warn!(error = %e, "old tombstones could not be forgotten"),
    }
}

/// Opens a database that must already exist: reading commands never create one.
fn open_existing_db(path: &std::path::Path) -> Result<Database, String> {
    if !path.is_dir() {
        return Err(format!(
            "no database at {}: check --db (only put, import, serve and sync create one)",
            path.display()
        ));
    }
    open_db(path)
}

fn parse_collection(s: &str) -> Result<CollectionName, String> {
    peerlite_cli::admin::ops::collection(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    logs::init(&cli.logs);
    let result = match cli.command {
        Command::Serve(args) => net::serve(args),
        Command::Sync(args) => net::sync(args),
        Command::Put {
            db,
            id,
            json,
            attach,
            expires_in,
        } => docs::put(&db, &id, &json, &attach, expires_in),
        Command::Expire {
            db,
            id,
            at,
            after,
            never,
        } => docs::expire(&db, &id, at.as_deref(), after, never),
        Command::Blob { command } => blobs::run(command),
        Command::Compact { db } => blobs::compact(&db),
        Command::Retention { db, keep, forever } => {
            docs::retention(&db, keep.as_deref().or(forever.then_some("forever")))
        }
        Command::Get {
            db,
            id,
            meta: false,
            ..
        } => docs::get(&db, &id),
        Command::Get { db, id, json, .. } => inspect::get_meta(&db, &id, json),
        Command::Info { db, json } => inspect::info(&db, json),
        Command::Changes {
            db,
            since,
            json,
            follow,
        } => inspect::changes(&db, since, json, follow),
        Command::Rm { db, id } => docs::rm(&db, &id),
        Command::Purge { db, ids } => docs::purge(&db, &ids),
        Command::Ls { db } => docs::ls(&db),
        Command::Import { db, file } => docs::import(&db, &file),
        Command::Export { db } => docs::export(&db),
        Command::Collections { db } => docs::collections(&db),
        Command::DeleteCollection { db, collection } => docs::delete_collection(&db, &collection),
        Command::Identity { db, command } => identity::run(&db, command),
        Command::Replay(args) => replay::run(&args),
        Command::Demo { docs } => demo::run(docs),
        Command::Bench(args) => bench::run(args),
        Command::BenchPeer => bench::peer(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
