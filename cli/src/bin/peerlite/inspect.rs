//! Looking into a database: `get --meta`, `info`, `changes [--follow]`. Plain text for a
//! person, `--json` for scripts.

use std::io::Write;
use std::path::Path;

use peerlite_cli::admin::api::{Change, Info, Status};
use peerlite_cli::admin::ops;

use crate::DbArgs;
use crate::target::Target;

/// Changes read at a time.
const PAGE: usize = 1000;

/// `peerlite get --meta`: a document's revision, deletion, sequence, other leaves and
/// history (a deleted document too), then its body.
pub(crate) fn get_meta(args: &DbArgs, id: &str, as_json: bool) -> Result<(), String> {
    let doc_id = ops::doc_id(id).map_err(|e| e.to_string())?;
    let (mut db, c) = args.open_existing()?;
    let meta = db.meta(&c, &doc_id).map_err(|e| e.to_string())?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string(&meta).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let field = |name: &str, value: &dyn std::fmt::Display| println!("{name:<13}{value}");
    field("id", &meta.id);
    field("collection", &meta.collection);
    field("rev", &meta.rev);
    field("deleted", &if meta.deleted { "yes" } else { "no" });
    field("sequence", &meta.sequence);
    let leaves_text = if meta.other_leaves.is_empty() {
        "none".to_owned()
    } else {
        let listed: Vec<String> = meta
            .other_leaves
            .iter()
            .map(|l| match l.deleted {
                true => format!("{} (deleted)", l.rev),
                false => format!("{} (live: an unresolved conflict)", l.rev),
            })
            .collect();
        listed.join(", ")
    };
    field("other leaves", &leaves_text);
    let mut chain = vec![meta.rev.clone()];
    chain.extend(meta.history.iter().cloned());
    field("history", &chain.join(" <- "));
    field("body", &meta.body);
    Ok(())
}

/// One line of `peerlite changes`.
fn change_line(change: &Change, as_json: bool) -> String {
    if as_json {
        return serde_json::to_string(change).unwrap_or_default();
    }
    let mut line = format!("{} {} {}", change.seq, change.id, change.rev);
    if change.deleted {
        line.push_str(" deleted");
    }
    line
}

/// `peerlite changes`: the collection's changes feed after `since`, one line per
/// document at its latest change; with `follow`, then each change as it is made, until
/// interrupted.
pub(crate) fn changes(
    args: &DbArgs,
    since: u64,
    as_json: bool,
    follow: bool,
) -> Result<(), String> {
    let (mut db, c) = args.open_existing()?;
    if follow {
        // A line at a time, flushed, so a pipe sees each change as it happens.
        let mut out = std::io::stdout().lock();
        return db.follow(&c, since, |change| {
            writeln!(out, "{}", change_line(change, as_json))?;
            out.flush()
        });
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut since = since;
    loop {
        let page = db.changes(&c, since, PAGE).map_err(|e| e.to_string())?;
        for change in &page {
            writeln!(out, "{}", change_line(change, as_json))
                .map_err(|e| format!("cannot write: {e}"))?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => since = last.seq,
            _ => break,
        }
    }
    out.flush().map_err(|e| format!("cannot write: {e}"))
}

/// `peerlite info`: what a database holds — its collections with live documents,
/// tombstones and last sequence, its blobs, its size on disk — and, when a server holds
/// it, the listener and its connected peers.
pub(crate) fn info(path: &Path, as_json: bool) -> Result<(), String> {
    let mut db = Target::open_existing(path)?;
    let mut info = db.info().map_err(|e| e.to_string())?;
    // The path as the user wrote it (a server reports its own spelling).
    info.path = path.display().to_string();
    if as_json {
        println!(
            "{}",
            serde_json::to_string(&info).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    print_info(&info);
    Ok(())
}

fn print_info(info: &Info) {
    println!("database    {}", info.path);
    println!("uuid        {}", info.uuid);
    println!("size        {} bytes on disk", info.size_bytes);
    for c in &info.collections {
        println!(
            "collection  {}: {} documents, {} deleted, last sequence {}",
            c.name, c.documents, c.tombstones, c.last_sequence
        );
    }
    println!(
        "blobs       {} ({} bytes)",
        info.blobs.count, info.blobs.bytes
    );
    match &info.server {
        None => println!("served      no"),
        Some(server) => print_server(server),
    }
}

fn print_server(s: &Status) {
    println!("served      by process {}", s.pid);
    for url in &s.urls {
        println!("listening   {url}");
    }
    if let Some(fp) = &s.certificate_sha256 {
        println!("certificate sha256 {fp}");
    }
    println!(
        "connections {} open ({} active), {} turned away since start",
        s.connection_count, s.active_connection_count, s.rejected_connection_count
    );
    for p in &s.connections {
        let who = p.user.as_deref().unwrap_or("anonymous");
        println!(
            "peer        {} {who} since {}: {} pushed here, {} pulled, {} bytes in, {} bytes out{}",
            p.peer,
            p.since,
            p.totals.documents_received,
            p.totals.documents_sent,
            p.totals.bytes_received,
            p.totals.bytes_sent,
            if p.active { " (busy)" } else { "" }
        );
    }
    println!(
        "since start {} documents pushed here, {} pulled, {} failed",
        s.totals.documents_received, s.totals.documents_sent, s.totals.documents_failed
    );
}
