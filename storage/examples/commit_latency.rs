//! How long one durable write takes on this disk: the floor under live-sync latency.
//!
//! A live change costs two durable commits in a row — the local save, then the
//! receiver's insert — and neither can be skipped: a change becomes visible (and gets a
//! sequence that peers' checkpoints may pass) only once it is on disk. This measures,
//! one write at a time with a pause between them (as `peerlite bench`'s live step
//! writes), p50 and p90 of:
//! - `Database::save` of one document (`Durability::Sync`, the default);
//! - a raw fjall commit of one record and its feed entry with `fdatasync`;
//! - `write` + `fdatasync` of 500 bytes appended to a plain file, the disk's own floor.
//!
//! ```text
//! cargo run --release -p peerlite-storage --example commit_latency -- [WRITES] [DIR]
//! ```
//!
//! WRITES defaults to 200 and DIR to a temporary directory (pass one on the disk you
//! care about: temporary directories may be in memory).

use std::io::Write;
use std::time::{Duration, Instant};

use peerlite_proto::{CollectionName, DocId};
use peerlite_storage::{Database, Durability, FjallKv, KvBackend, Space, WriteBatch, sample};

/// The pause between writes (the bench's live step writes 20 a second).
const PAUSE: Duration = Duration::from_millis(50);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let writes: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let tmp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    println!(
        "{writes} single writes, {} ms apart, in {}",
        PAUSE.as_millis(),
        dir.display()
    );

    let db = Database::open(dir.join("commit-latency-db"))?;
    let c = CollectionName::default();
    let save = timed(writes, |i| {
        let (_, body) = sample::document(u64::from(i), 1);
        db.save(&c, &DocId::new(format!("live-{i:06}"))?, body)?;
        Ok(())
    })?;
    drop(db);

    let kv = FjallKv::open(dir.join("commit-latency-kv"))?;
    let commit = timed(writes, |i| {
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Docs,
            format!("live-{i:06}").into_bytes(),
            vec![7; 400],
        );
        batch.put(Space::Seq, i.to_be_bytes().to_vec(), vec![1; 20]);
        kv.commit(batch, Durability::Sync)?;
        Ok(())
    })?;
    drop(kv);

    let path = dir.join("commit-latency-file");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let raw = timed(writes, |_| {
        (&file).write_all(&[5; 500])?;
        file.sync_data()?;
        Ok(())
    })?;
    std::fs::remove_file(&path)?;

    for (name, mut t) in [
        ("Database::save (Sync)", save),
        ("fjall commit + fdatasync", commit),
        ("append + fdatasync", raw),
    ] {
        t.sort_by(f64::total_cmp);
        let at = |p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name:<26} p50 {:>6.0} µs   p90 {:>6.0} µs",
            at(0.5),
            at(0.9)
        );
    }
    Ok(())
}

/// Runs `write` `n` times, `PAUSE` apart; returns each duration in microseconds.
fn timed(
    n: u32,
    mut write: impl FnMut(u32) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let mut times = Vec::with_capacity(n as usize);
    for i in 0..n.max(1) {
        std::thread::sleep(PAUSE);
        let start = Instant::now();
        write(i)?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(times)
}
