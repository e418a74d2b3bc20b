//! Blobs as files: `<database>/blobs/<hex digest>`, written in `<database>/blobs/.staging/`
//! and renamed into place once durable. Files are 0600 and directories 0700.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use peerlite_proto::BlobDigest;

use super::{BlobStore, BlobWrite};
use crate::StorageError;

/// The staging directory's name inside the blobs directory.
const STAGING: &str = ".staging";

/// A blob being written is synced every this many bytes, so the sync that publishes it
/// has little left to flush: one 256 MiB `fdatasync` at the end stalled the operations
/// queued behind it (a live change waited 128 ms) where several small ones do not.
const SYNC_EVERY: u64 = 8 << 20;

/// One file per blob in a directory.
#[derive(Debug)]
pub struct FileBlobs {
    dir: PathBuf,
}

impl FileBlobs {
    /// Opens (or creates) the blob directory `dir`, removing what a killed write left in
    /// its staging directory. Only one process may use it at a time (the database's lock
    /// ensures it).
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileBlobs, StorageError> {
        let dir = dir.into();
        let staging = dir.join(STAGING);
        create_private_dir(&dir).map_err(|e| io_error("create", &dir, e))?;
        create_private_dir(&staging).map_err(|e| io_error("create", &staging, e))?;
        for entry in fs::read_dir(&staging).map_err(|e| io_error("read", &staging, e))? {
            let path = entry.map_err(|e| io_error("read", &staging, e))?.path();
            fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
        }
        Ok(FileBlobs { dir })
    }

    fn path(&self, digest: &BlobDigest) -> PathBuf {
        self.dir.join(digest.to_hex())
    }
}

impl BlobStore for FileBlobs {
    fn create(&self) -> Result<Box<dyn BlobWrite>, StorageError> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name)
            .map_err(|e| StorageError::BlobIo(format!("no randomness for a file name: {e}")))?;
        let name: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(STAGING).join(name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        Ok(Box::new(FileWrite {
            file: Some(file),
            path,
            dir: self.dir.clone(),
            unsynced: 0,
        }))
    }

    fn open(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>, StorageError> {
        let path = self.path(digest);
        match File::open(&path) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("open", &path, e)),
        }
    }

    fn read_range(
        &self,
        digest: &BlobDigest,
        offset: u64,
        max: u32,
    ) -> Result<Option<bytes::Bytes>, StorageError> {
        use std::io::{Seek, SeekFrom};
        let path = self.path(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", &path, e)),
        };
        let mut out = Vec::with_capacity(max as usize);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.take(u64::from(max)).read_to_end(&mut out))
            .map_err(|e| io_error("read", &path, e))?;
        Ok(Some(out.into()))
    }

    fn length(&self, digest: &BlobDigest) -> Result<Option<u64>, StorageError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    fn list(&self) -> Result<Vec<(BlobDigest, u64)>, StorageError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error("read", &self.dir, e))? {
            let entry = entry.map_err(|e| io_error("read", &self.dir, e))?;
            let Some(digest) = entry.file_name().to_str().and_then(BlobDigest::from_hex) else {
                continue;
            };
            let len = entry
                .metadata()
                .map_err(|e| io_error("read", &entry.path(), e))?
                .len();
            out.push((digest, len));
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, digest: &BlobDigest) -> Result<bool, StorageError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir).map_err(|e| io_error("sync", &self.dir, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }
}

/// A blob file in the staging directory; removed if dropped unpublished.
struct FileWrite {
    file: Option<File>,
    path: PathBuf,
    dir: PathBuf,
    /// Bytes written since the last sync.
    unsynced: u64,
}

impl Write for FileWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(f) = &mut self.file else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let n = f.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            f.sync_data()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWrite for FileWrite {
    fn publish(mut self: Box<Self>, digest: &BlobDigest) -> Result<(), StorageError> {
        let file = self.file.take().ok_or_else(|| {
            StorageError::BlobIo(format!("{} was already published", self.path.display()))
        })?;
        file.sync_data()
            .map_err(|e| io_error("sync", &self.path, e))?;
        drop(file);
        let target = self.dir.join(digest.to_hex());
        if target.exists() {
            // Already here: the same bytes, by their digest.
            return Ok(());
        }
        fs::rename(&self.path, &target).map_err(|e| io_error("publish", &target, e))?;
        sync_dir(&self.dir).map_err(|e| io_error("sync", &self.dir, e))
    }
}

impl Drop for FileWrite {
    fn drop(&mut self) {
        // Published: renamed away, so this finds nothing. Otherwise: abandoned.
        let _ = fs::remove_file(&self.path);
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StorageError {
    StorageError::BlobIo(format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_cut_short_leaves_nothing_after_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let blobs_dir = dir.path().join("blobs");
        let store = FileBlobs::open(&blobs_dir).unwrap();
        let mut w = store.create().unwrap();
        w.write_all(b"half a blob").unwrap();
        // A killed process runs no destructor.
        std::mem::forget(w);
        assert_eq!(fs::read_dir(blobs_dir.join(STAGING)).unwrap().count(), 1);
        let store = FileBlobs::open(&blobs_dir).unwrap();
        assert_eq!(fs::read_dir(blobs_dir.join(STAGING)).unwrap().count(), 0);
        assert!(store.list().unwrap().is_empty());
        // A published blob is whole under its name, and nothing else is left aside.
        let digest = BlobDigest::of(b"whole");
        let mut w = store.create().unwrap();
        w.write_all(b"whole").unwrap();
        w.publish(&digest).unwrap();
        assert_eq!(store.list().unwrap(), vec![(digest, 5)]);
        assert_eq!(fs::read(blobs_dir.join(digest.to_hex())).unwrap(), b"whole");
        assert_eq!(fs::read_dir(blobs_dir.join(STAGING)).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn blobs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let blobs_dir = dir.path().join("blobs");
        let store = FileBlobs::open(&blobs_dir).unwrap();
        let digest = BlobDigest::of(b"secret");
        let mut w = store.create().unwrap();
        w.write_all(b"secret").unwrap();
        w.publish(&digest).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&blobs_dir), 0o700);
        assert_eq!(mode(&blobs_dir.join(STAGING)), 0o700);
        assert_eq!(mode(&blobs_dir.join(digest.to_hex())), 0o600);
    }
}
