//! Creating a database on disk so that it appears whole or not at all.
//!
//! A database is built in a hidden sibling directory, initialised (format, UUID, default
//! collection), made durable, and only then renamed to its path. A process killed while
//! creating one — Ctrl-C during a first `serve` — leaves only the hidden directory, which
//! a later creation removes, instead of a half-made database that can never be opened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::fjall_backend::FjallKv;
use crate::{Database, DatabaseConfig, KvError, StorageError};

/// Staging directories older than this are left-overs of a killed creation (a creation
/// takes milliseconds); younger ones may belong to another process creating right now.
const STALE_AFTER: Duration = Duration::from_secs(600);

/// Creates the database at `path` (which does not exist) with `config`. If another
/// process creates it meanwhile, theirs is kept.
pub(crate) fn create(path: &Path, config: &DatabaseConfig) -> Result<(), StorageError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StorageError::Kv(KvError::Fjall(format!(
            "cannot {what} {}: {e}",
            p.display()
        )))
    };
    let name = path
        .file_name()
        .ok_or_else(|| io("create", path, std::io::ErrorKind::InvalidInput.into()))?
        .to_string_lossy()
        .into_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| io("create", &parent, e))?;
    let prefix = format!(".{name}.creating-");
    remove_stale(&parent, &prefix);
    let staging = parent.join(format!("{prefix}{}", std::process::id()));
    if staging.exists() {
        // Ours, from an earlier attempt in this process that failed.
        std::fs::remove_dir_all(&staging).map_err(|e| io("remove", &staging, e))?;
    }
    {
        let kv = FjallKv::open_with(&staging, &config.memory)?;
        let db = Database::with_backend(Arc::new(kv), config.clone())?;
        db.persist()?;
    }
    match std::fs::rename(&staging, path) {
        Ok(()) => {
            // Make the rename itself durable.
            if let Ok(dir) = std::fs::File::open(&parent) {
                let _ = dir.sync_all();
            }
            Ok(())
        }
        Err(_) if path.exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(io("create", path, e))
        }
    }
}

/// Removes the staging directories that creations of the database at `path` killed a
/// while ago left beside it (called on every open, so none outlives the next one).
pub(crate) fn remove_leftovers(path: &Path) {
    if let (Some(name), Some(parent)) = (path.file_name(), path.parent()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        remove_stale(parent, &format!(".{}.creating-", name.to_string_lossy()));
    }
}

/// Removes the staging directories named `prefix…` in `parent` that are older than
/// [`STALE_AFTER`].
fn remove_stale(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_AFTER));
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_appears_whole_and_killed_creations_leave_nothing_for_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // What a killed creation leaves: a young one (maybe another process's, kept) and
        // an old one (removed).
        let young = dir.path().join(".db.creating-1");
        let old = dir.path().join(".db.creating-2");
        std::fs::create_dir(&young).unwrap();
        std::fs::create_dir(&old).unwrap();
        let long_ago = SystemTime::now() - 2 * STALE_AFTER;
        std::fs::File::open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let db = Database::open(&path).unwrap();
        assert!(db.collections().unwrap().len() == 1);
        drop(db);
        assert!(young.exists() && !old.exists());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with(".db.creating-") && n != ".db.creating-1")
        );
        // Reopening keeps the UUID: the database was not made twice.
        let uuid = Database::open(&path).unwrap().uuid();
        assert_eq!(Database::open(&path).unwrap().uuid(), uuid);
        // A later open removes leftovers once they are old.
        std::fs::File::open(&young)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        drop(Database::open(&path).unwrap());
        assert!(!young.exists());
    }
}
