//! Document commands: put, get, rm, purge, ls, import, export, collections.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use peerlite_cli::admin::api::Doc;
use peerlite_cli::admin::ops;
use peerlite_proto::{Body, DocId};

use crate::DbArgs;
use crate::target::Target;

fn doc_id(id: &str) -> Result<DocId, String> {
    ops::doc_id(id).map_err(|e| e.to_string())
}

/// Saves a document; `json` is the body, or `-` to read it from standard input (for
/// bodies larger than a command line allows). Prints the current revision; saving the
/// body the document already has changes nothing.
/// A duration such as `90s`, `30m`, `2h` or `7d`, for clap.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("the duration must be above zero".into()),
        Err(e) => Err(format!(
            "{s:?} is not a duration such as 90s, 30m, 2h or 7d: {e}"
        )),
    }
}

/// Shows or sets how long tombstones are kept.
pub(crate) fn retention(db: &Path, keep: Option<&str>) -> Result<(), String> {
    let mut target = Target::open_existing(db)?;
    let r = match keep {
        Some(keep) => target.set_retention(keep),
        None => target.retention(),
    }
    .map_err(|e| e.to_string())?;
    match r.seconds {
        Some(_) => println!("tombstones are kept {}", r.keep),
        None => println!("tombstones are kept forever"),
    }
    for (c, through) in &r.forgotten_through {
        println!(
            "{c}: tombstones up to sequence {through} forgotten (a peer that last pulled before it is refused)"
        );
    }
    Ok(())
}

/// Shows or sets when a document expires.
pub(crate) fn expire(
    args: &DbArgs,
    id: &str,
    at: Option<&str>,
    after: Option<std::time::Duration>,
    never: bool,
) -> Result<(), String> {
    let doc = doc_id(id)?;
    let when = match (at, after) {
        (Some(t), _) => Some(Some(ops::parse_time(t).map_err(|e| e.to_string())?)),
        (None, Some(d)) => Some(Some(std::time::SystemTime::now() + d)),
        (None, None) if never => Some(None),
        (None, None) => None,
    };
    let (mut db, c) = args.open_existing()?;
    let e = match when {
        Some(at) => db.set_expiration(&c, &doc, at),
        None => db.expiration(&c, &doc),
    }
    .map_err(|e| e.to_string())?;
    match e.expires {
        Some(t) => println!("{} expires at {t}", e.id),
        None => println!("{} never expires", e.id),
    }
    Ok(())
}

pub(crate) fn put(
    args: &DbArgs,
    id: &str,
    json: &str,
    attach: &[(String, PathBuf)],
    expires_in: Option<std::time::Duration>,
) -> Result<(), String> {
    let id = doc_id(id)?;
    let text = if json == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
            .map_err(|e| format!("cannot read the body from standard input: {e}"))?;
        text
    } else {
        json.to_owned()
    };
    let mut body = Body::from_json_str(without_bom(&text)).map_err(|e| e.to_string())?;
    for (_, file) in attach {
        if !file.is_file() {
            return Err(format!("cannot attach {}: no such file", file.display()));
        }
    }
    let (mut db, c) = args.open()?;
    if !attach.is_empty() {
        let mut value = body.to_json();
        let object = value
            .as_object_mut()
            .ok_or("--attach needs the body to be a JSON object")?;
        for (name, file) in attach {
            object.insert(name.clone(), db.store_blob(file, None)?);
        }
        body = Body::from_json(&value).map_err(|e| e.to_string())?;
    }
    let expires = expires_in.map(|d| std::time::SystemTime::now() + d);
    let w = db.put(&c, &id, body, expires).map_err(|e| e.to_string())?;
    println!("{}", w.rev);
    if let Some(t) = w.expires {
        eprintln!("{} expires at {t}", w.id);
    }
    Ok(())
}

/// Text without a leading UTF-8 byte-order mark (which some editors write).
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

pub(crate) fn get(args: &DbArgs, id: &str) -> Result<(), String> {
    let id = doc_id(id)?;
    let (mut db, c) = args.open_existing()?;
    let body = db.get(&c, &id).map_err(|e| e.to_string())?;
    println!("{body}");
    Ok(())
}

pub(crate) fn rm(args: &DbArgs, id: &str) -> Result<(), String> {
    let id = doc_id(id)?;
    let (mut db, c) = args.open_existing()?;
    let w = db.delete(&c, &id).map_err(|e| e.to_string())?;
    println!("{}", w.rev);
    Ok(())
}

/// Removes every trace of documents here, all or none; peers keep their copies.
pub(crate) fn purge(args: &DbArgs, ids: &[String]) -> Result<(), String> {
    let docs = ids
        .iter()
        .map(|id| doc_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut db, c) = args.open_existing()?;
    match db.purge(&c, &docs).map_err(|e| e.to_string())? {
        1 => println!("purged 1 document from {c}"),
        n => println!("purged {n} documents from {c}"),
    }
    Ok(())
}

/// Calls `f` for every live document of the collection, in ID order.
fn each_document(
    args: &DbArgs,
    mut f: impl FnMut(&Doc) -> std::io::Result<()>,
) -> Result<(), String> {
    let (mut db, c) = args.open_existing()?;
    let mut after: Option<String> = None;
    loop {
        let page = db
            .documents(&c, after.as_deref(), 1000)
            .map_err(|e| e.to_string())?;
        for d in &page.documents {
            f(d).map_err(|e| e.to_string())?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

pub(crate) fn ls(args: &DbArgs) -> Result<(), String> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    each_document(args, |d| writeln!(out, "{}", d.id))?;
    out.flush().map_err(|e| e.to_string())
}

/// Reads every line first, so a bad line imports nothing.
pub(crate) fn import(args: &DbArgs, file: &Path) -> Result<(), String> {
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut docs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let line = if n == 0 { without_bom(&line) } else { &line };
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| format!("line {}: {msg}", n + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
        docs.push(peerlite_cli::admin::split_id(value).map_err(at)?);
    }
    let (mut db, c) = args.open()?;
    let done = db.import(&c, docs).map_err(|e| e.to_string())?;
    match done.unchanged {
        0 => println!("imported {} documents into {c}", done.count),
        n => println!("imported {} documents into {c} ({n} unchanged)", done.count),
    }
    Ok(())
}

pub(crate) fn export(args: &DbArgs) -> Result<(), String> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    each_document(args, |d| {
        let mut line = serde_json::Map::new();
        line.insert("_id".into(), d.id.as_str().into());
        if let serde_json::Value::Object(body) = &d.body {
            line.extend(body.clone());
        }
        writeln!(out, "{}", serde_json::Value::Object(line))
    })?;
    out.flush().map_err(|e| e.to_string())
}

/// Deletes a collection and its documents here; peers keep theirs.
pub(crate) fn delete_collection(db: &Path, name: &str) -> Result<(), String> {
    let c: peerlite_proto::CollectionName = name
        .parse()
        .map_err(|e| format!("invalid collection {name:?}: {e}"))?;
    let mut db = Target::open_existing(db)?;
    let n = db.delete_collection(&c).map_err(|e| e.to_string())?;
    println!("deleted collection {c} and its {n} documents");
    Ok(())
}

pub(crate) fn collections(db: &Path) -> Result<(), String> {
    let mut db = Target::open_existing(db)?;
    for c in db.collections().map_err(|e| e.to_string())? {
        println!("{c}");
    }
    Ok(())
}
