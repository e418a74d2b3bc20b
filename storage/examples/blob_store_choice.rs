//! Why blobs are files and not fjall values: writes a 256 MiB blob both ways and reads it
//! back, printing MB/s and the bytes each leaves on disk.
//!
//! ```text
//! cargo run --release -p peerlite-storage --example blob_store_choice [MiB]
//! ```

use std::io::Read;
use std::time::Instant;

use peerlite_storage::{Database, Durability, FjallKv, KvBackend, Space, WriteBatch};

const CHUNK: usize = 256 << 10;

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let p = entry.path();
        total += match p.is_dir() {
            true => du(&p),
            false => entry.metadata().map(|m| m.len()).unwrap_or(0),
        };
    }
    total
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let len = mib << 20;
    let bytes: Vec<u8> = (0..len)
        .map(|i| ((i * 2_654_435_761usize) >> 13) as u8)
        .collect();
    let mb = |secs: f64| len as f64 / 1e6 / secs;

    // Files: what Database::save_blob does (written aside, fsynced, renamed in).
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let before = du(dir.path());
    let t = Instant::now();
    let blob = db.save_blob(&bytes[..], None)?;
    let write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut back = Vec::with_capacity(len);
    db.open_blob(&blob.digest)?
        .ok_or("saved")?
        .read_to_end(&mut back)?;
    let read = t.elapsed().as_secs_f64();
    assert_eq!(back, bytes);
    let on_disk = du(dir.path()) - before;
    println!(
        "files: write {:.0} MB/s, read {:.0} MB/s, {:.1} MB on disk",
        mb(write),
        mb(read),
        on_disk as f64 / 1e6
    );

    // fjall values: 256 KiB chunks, committed 16 at a time, then made durable.
    let dir = tempfile::tempdir()?;
    let kv = FjallKv::open(dir.path())?;
    let before = du(dir.path());
    let t = Instant::now();
    for (n, group) in bytes.chunks(16 * CHUNK).enumerate() {
        let mut batch = WriteBatch::new();
        for (i, chunk) in group.chunks(CHUNK).enumerate() {
            let key = format!("blob/{:08}", n * 16 + i).into_bytes();
            batch.put(Space::Local, key, chunk.to_vec());
        }
        kv.commit(batch, Durability::Buffered)?;
    }
    kv.persist()?;
    let write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut back = Vec::with_capacity(len);
    for i in 0..len.div_ceil(CHUNK) {
        let key = format!("blob/{i:08}").into_bytes();
        back.extend(kv.get(Space::Local, &key)?.ok_or("chunk")?);
    }
    let read = t.elapsed().as_secs_f64();
    assert_eq!(back, bytes);
    let on_disk = du(dir.path()) - before;
    println!(
        "fjall: write {:.0} MB/s, read {:.0} MB/s, {:.1} MB on disk (journal and tables)",
        mb(write),
        mb(read),
        on_disk as f64 / 1e6
    );
    Ok(())
}
