//! Blob commands: blob put, blob get, blob ls, put --attach, compact.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use peerlite_proto::{Blob, BlobDigest};
use peerlite_storage::Database;

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
            let db = crate::open_db(&db)?;
            let blob = store_file(&db, &file, content_type)?;
            println!("{}", blob.to_json());
            Ok(())
        }
        BlobCommand::Get { db, digest, out } => {
            let db = crate::open_existing_db(&db)?;
            let digest: BlobDigest = digest
                .parse()
                .map_err(|e| format!("invalid blob digest: {e}"))?;
            let mut reader = db
                .open_blob(&digest)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("no blob {digest} in this database (see peerlite blob ls)")
                })?;
            match out {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                    std::io::copy(&mut reader, &mut file)
                        .and_then(|_| file.sync_all())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    std::io::copy(&mut reader, &mut stdout)
                        .and_then(|_| stdout.flush())
                        .map_err(|e| format!("cannot write the blob: {e}"))?;
                }
            }
            Ok(())
        }
        BlobCommand::Ls { db } => {
            let db = crate::open_existing_db(&db)?;
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

/// Stores `file` as a blob, streaming; the content type is guessed from its name unless
/// given.
pub(crate) fn store_file(
    db: &Database,
    file: &Path,
    content_type: Option<String>,
) -> Result<Blob, String> {
    let reader =
        std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let content_type = content_type.or_else(|| {
        mime_guess::from_path(file)
            .first()
            .map(|m| m.essence_str().to_owned())
    });
    db.save_blob(reader, content_type.as_deref())
        .map_err(|e| format!("cannot store {}: {e}", file.display()))
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

/// Removes the blobs no document refers to any more, and says what it reclaimed.
pub(crate) fn compact(db: &Path) -> Result<(), String> {
    let db = crate::open_existing_db(db)?;
    let r = db.compact().map_err(|e| e.to_string())?;
    println!(
        "removed {} unreferenced blobs, reclaimed {} bytes ({} blobs kept)",
        r.blobs_removed, r.bytes_reclaimed, r.blobs_kept
    );
    Ok(())
}
