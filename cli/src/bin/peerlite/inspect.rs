//! Looking into a database: `get --meta`, `info`, `changes`. Plain text for a person,
//! `--json` for scripts.

use std::path::Path;

use peerlite_proto::{DocId, Seq};
use serde_json::json;

use crate::DbArgs;

/// Ancestors shown by `get --meta` (the depth a revision tree keeps by default).
const HISTORY: usize = 20;

/// Changes read from the store at a time.
const PAGE: usize = 1000;

/// `peerlite get --meta`: a document's revision, deletion, sequence, other leaves and
/// history (a deleted document too), then its body.
pub(crate) fn get_meta(args: &DbArgs, id: &str, as_json: bool) -> Result<(), String> {
    let (db, c) = args.open_existing()?;
    let doc_id = DocId::new(id).map_err(|e| format!("invalid document ID {id:?}: {e}"))?;
    let doc = db
        .get_including_deleted(&c, &doc_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("document {id:?} not found in {c}"))?;
    let leaves = db.leaves(&c, &doc_id, HISTORY).map_err(|e| e.to_string())?;
    let history: Vec<String> = leaves
        .iter()
        .find(|l| l.rev == doc.rev)
        .map(|l| l.history.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let others: Vec<(String, bool)> = leaves
        .iter()
        .filter(|l| l.rev != doc.rev)
        .map(|l| (l.rev.to_string(), l.deleted))
        .collect();
    if as_json {
        let value = json!({
            "id": id,
            "collection": c.to_string(),
            "rev": doc.rev.to_string(),
            "deleted": doc.deleted,
            "sequence": doc.sequence.0,
            "conflicted": doc.conflicted,
            "other_leaves": others
                .iter()
                .map(|(rev, deleted)| json!({"rev": rev, "deleted": deleted}))
                .collect::<Vec<_>>(),
            "history": history,
            "body": doc.body.to_json(),
        });
        println!("{value}");
        return Ok(());
    }
    let field = |name: &str, value: &dyn std::fmt::Display| println!("{name:<13}{value}");
    field("id", &id);
    field("collection", &c);
    field("rev", &doc.rev);
    field("deleted", &if doc.deleted { "yes" } else { "no" });
    field("sequence", &doc.sequence);
    let leaves_text = if others.is_empty() {
        "none".to_owned()
    } else {
        let listed: Vec<String> = others
            .iter()
            .map(|(rev, deleted)| match deleted {
                true => format!("{rev} (deleted)"),
                false => format!("{rev} (live: an unresolved conflict)"),
            })
            .collect();
        listed.join(", ")
    };
    field("other leaves", &leaves_text);
    let mut chain = vec![doc.rev.to_string()];
    chain.extend(history);
    field("history", &chain.join(" <- "));
    field("body", &doc.body.to_json_string());
    Ok(())
}

/// `peerlite changes`: the collection's changes feed after `since`, one line per
/// document at its latest change.
pub(crate) fn changes(args: &DbArgs, since: u64, as_json: bool) -> Result<(), String> {
    let (db, c) = args.open_existing()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut since = Seq(since);
    loop {
        let page = db.changes(&c, since, PAGE).map_err(|e| e.to_string())?;
        for change in &page {
            let line = if as_json {
                json!({
                    "seq": change.seq.0,
                    "id": change.doc_id.to_string(),
                    "rev": change.rev.to_string(),
                    "deleted": change.deleted,
                    "other_leaves": change.other_leaves.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
                .to_string()
            } else {
                let mut line = format!("{} {} {}", change.seq, change.doc_id, change.rev);
                if change.deleted {
                    line.push_str(" deleted");
                }
                line
            };
            std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())
                .map_err(|e| format!("cannot write: {e}"))?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => since = last.seq,
            _ => break,
        }
    }
    std::io::Write::flush(&mut out).map_err(|e| format!("cannot write: {e}"))
}

/// `peerlite info`: what a database holds — its collections with live documents,
/// tombstones and last sequence, its blobs, its size on disk.
pub(crate) fn info(path: &Path, as_json: bool) -> Result<(), String> {
    let db = crate::open_existing_db(path)?;
    let mut collections = Vec::new();
    for c in db.collections().map_err(|e| e.to_string())? {
        let (mut live, mut tombstones) = (0u64, 0u64);
        let mut since = Seq::ZERO;
        loop {
            let page = db.changes(&c, since, PAGE).map_err(|e| e.to_string())?;
            for change in &page {
                match change.deleted {
                    true => tombstones += 1,
                    false => live += 1,
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => since = last.seq,
                _ => break,
            }
        }
        let last = db.last_sequence(&c).map_err(|e| e.to_string())?;
        collections.push((c, live, tombstones, last));
    }
    let blobs = db.blobs().map_err(|e| e.to_string())?;
    let blob_bytes: u64 = blobs.iter().map(|b| b.length).sum();
    let uuid = db.uuid();
    drop(db);
    let size = dir_size(path).map_err(|e| format!("cannot measure {}: {e}", path.display()))?;
    if as_json {
        let value = json!({
            "path": path.display().to_string(),
            "uuid": uuid.to_string(),
            "size_bytes": size,
            "collections": collections
                .iter()
                .map(|(c, live, tombstones, last)| json!({
                    "name": c.to_string(),
                    "documents": live,
                    "tombstones": tombstones,
                    "last_sequence": last.0,
                }))
                .collect::<Vec<_>>(),
            "blobs": {"count": blobs.len(), "bytes": blob_bytes},
        });
        println!("{value}");
        return Ok(());
    }
    println!("database    {}", path.display());
    println!("uuid        {uuid}");
    println!("size        {size} bytes on disk");
    for (c, live, tombstones, last) in &collections {
        println!("collection  {c}: {live} documents, {tombstones} deleted, last sequence {last}");
    }
    println!("blobs       {} ({blob_bytes} bytes)", blobs.len());
    Ok(())
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
