//! Blob commands: blob put, blob get, blob ls, put --attach, compact.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use peerlite_proto::BlobDigest;

use crate::target::Target;

/// What `peerlite blob` does.
#[derive(Subcommand)]
pub(crate) enum BlobCommand {
    /// Store a file as a blob and print the reference to put in a document.
    Put {
        /// Database directory (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// The file.
        file: PathBuf,
        /// Its MIME type (guessed from the file name if not given).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Write a blob's bytes (to standard output by default).
    Get {
        /// Database directory.
        #[arg(long)]
        db: PathBuf,
        /// The blob's digest, as in its reference ("sha256-...").
        digest: String,
        /// Write them to this file instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List blobs, one per line: digest, length in bytes, content type.
    Ls {
        /// Database directory.
        #[arg(long)]
        db: PathBuf,
    },
}

pub(crate) fn run(command: BlobCommand) -> Result<(), String> {
    match command {
        BlobCommand::Put {
            db,
            file,
            content_type,
        } => {
            if !file.is_file() {
                return Err(format!("cannot read {}: no such file", file.display()));
            }
            let blob = Target::open(&db)?.store_blob(&file, content_type)?;
            println!("{blob}");
            Ok(())
        }
        BlobCommand::Get { db, digest, out } => {
            let digest: BlobDigest = digest
                .parse()
                .map_err(|e| format!("invalid blob digest: {e}"))?;
            let mut db = Target::open_existing(&db)?;
            match out {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                    let written = db.read_blob(&digest, &mut file);
                    if written.is_err() {
                        let _ = std::fs::remove_file(&path);
                    }
                    written?;
                    file.sync_all()
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    db.read_blob(&digest, &mut stdout)?;
                    stdout
                        .flush()
                        .map_err(|e| format!("cannot write the blob: {e}"))?;
                }
            }
            Ok(())
        }
        BlobCommand::Ls { db } => {
            let mut db = Target::open_existing(&db)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for b in db.blobs().map_err(|e| e.to_string())? {
                let content_type = b.content_type.as_deref().unwrap_or("-");
                writeln!(out, "{}\t{}\t{content_type}", b.digest, b.length)
                    .map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())
        }
    }
}

/// Parses `--attach NAME=FILE`.
pub(crate) fn parse_attach(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NAME=FILE, got {arg:?}")),
    }
}

/// Removes the blobs no document refers to any more, rewrites the store without what
/// was deleted, purged or overwritten, and says what it reclaimed.
pub(crate) fn compact(db: &Path) -> Result<(), String> {
    let r = Target::open_existing(db)?
        .compact()
        .map_err(|e| e.to_string())?;
    println!(
        "forgot {} tombstones older than the retention",
        r.tombstones_forgotten
    );
    println!(
        "removed {} unreferenced blobs, reclaimed {} bytes ({} blobs kept)",
        r.blobs_removed, r.bytes_reclaimed, r.blobs_kept
    );
    println!(
        "rewrote the document store: {} bytes reclaimed",
        r.store_bytes_reclaimed
    );
    Ok(())
}
