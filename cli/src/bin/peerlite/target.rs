//! The database a command works on: opened by the command itself, or — while
//! `peerlite serve` holds it — reached through that server's admin socket. Either way
//! the same operations (`peerlite_cli::admin::ops`) run and the same answers come back.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hyper::Method;
use peerlite_cli::admin::api::{
    BlobEntry, Change, Compacted, DocMeta, DocPage, Expiration, Identity, Imported, Info,
    NewIdentity, Retention, Written,
};
use peerlite_cli::admin::ops::{self, OpResult};
use peerlite_cli::admin::{Client, segment};
use peerlite_proto::{Body, CollectionName, DocId};
use peerlite_storage::Database;

/// A database, local or served.
pub(crate) enum Target {
    /// Opened by this process.
    Local { db: Database, path: PathBuf },
    /// Held by a server, reached through its admin socket.
    Served(Client),
}

/// Paths of the admin interface.
fn docs_path(c: &CollectionName) -> String {
    format!("/c/{}/docs", segment(&c.to_string()))
}

fn doc_path(c: &CollectionName, id: &DocId) -> String {
    format!("{}/{}", docs_path(c), segment(id.as_str()))
}

impl Target {
    /// For commands that write: the server's database, or the database opened here
    /// (created if missing).
    pub(crate) fn open(path: &Path) -> Result<Target, String> {
        if let Some(client) = Client::connect(path) {
            return Ok(Target::Served(client));
        }
        Ok(Target::Local {
            db: crate::open_db(path)?,
            path: path.to_owned(),
        })
    }

    /// For commands that read: the database must exist.
    pub(crate) fn open_existing(path: &Path) -> Result<Target, String> {
        if let Some(client) = Client::connect(path) {
            return Ok(Target::Served(client));
        }
        Ok(Target::Local {
            db: crate::open_existing_db(path)?,
            path: path.to_owned(),
        })
    }

    pub(crate) fn put(
        &mut self,
        c: &CollectionName,
        id: &DocId,
        body: Body,
        expires: Option<SystemTime>,
    ) -> OpResult<Written> {
        match self {
            Target::Local { db, .. } => ops::put(db, c, id, body, expires),
            Target::Served(s) => {
                let path = match expires {
                    Some(at) => format!(
                        "{}?expires={}",
                        doc_path(c, id),
                        segment(&ops::format_time(at))
                    ),
                    None => doc_path(c, id),
                };
                s.send_json(Method::PUT, &path, &body.to_json())
            }
        }
    }

    pub(crate) fn get(&mut self, c: &CollectionName, id: &DocId) -> OpResult<serde_json::Value> {
        match self {
            Target::Local { db, .. } => ops::get(db, c, id),
            Target::Served(s) => s.get(Method::GET, &doc_path(c, id)),
        }
    }

    pub(crate) fn meta(&mut self, c: &CollectionName, id: &DocId) -> OpResult<DocMeta> {
        match self {
            Target::Local { db, .. } => ops::meta(db, c, id),
            Target::Served(s) => s.get(Method::GET, &format!("{}?meta=true", doc_path(c, id))),
        }
    }

    pub(crate) fn delete(&mut self, c: &CollectionName, id: &DocId) -> OpResult<Written> {
        match self {
            Target::Local { db, .. } => ops::delete(db, c, id),
            Target::Served(s) => s.get(Method::DELETE, &doc_path(c, id)),
        }
    }

    pub(crate) fn purge(&mut self, c: &CollectionName, ids: &[DocId]) -> OpResult<usize> {
        match self {
            Target::Local { db, .. } => ops::purge(db, c, ids),
            Target::Served(s) => {
                let path = format!("/c/{}/purge", segment(&c.to_string()));
                let ids: Vec<&str> = ids.iter().map(DocId::as_str).collect();
                let answer: serde_json::Value =
                    s.send_json(Method::POST, &path, &serde_json::json!({ "ids": ids }))?;
                Ok(answer["purged"].as_u64().unwrap_or_default() as usize)
            }
        }
    }

    pub(crate) fn documents(
        &mut self,
        c: &CollectionName,
        after: Option<&str>,
        limit: usize,
    ) -> OpResult<DocPage> {
        match self {
            Target::Local { db, .. } => {
                let after = after.map(ops::doc_id).transpose()?;
                ops::documents(db, c, after.as_ref(), limit)
            }
            Target::Served(s) => {
                let mut path = format!("{}?limit={limit}", docs_path(c));
                if let Some(after) = after {
                    path.push_str(&format!("&after={}", segment(after)));
                }
                s.get(Method::GET, &path)
            }
        }
    }

    /// Saves documents (given as objects with an `"_id"`), a thousand a request.
    pub(crate) fn import(
        &mut self,
        c: &CollectionName,
        docs: Vec<(DocId, Body)>,
    ) -> OpResult<Imported> {
        match self {
            Target::Local { db, .. } => ops::import(db, c, docs),
            Target::Served(s) => {
                let mut total = Imported {
                    count: 0,
                    unchanged: 0,
                };
                for chunk in docs.chunks(1000) {
                    let values: Vec<serde_json::Value> = chunk
                        .iter()
                        .map(|(id, body)| {
                            let mut value = body.to_json();
                            if let Some(object) = value.as_object_mut() {
                                object.insert("_id".into(), id.as_str().into());
                            }
                            value
                        })
                        .collect();
                    let done: Imported = s.send_json(Method::POST, &docs_path(c), &values)?;
                    total.count += done.count;
                    total.unchanged += done.unchanged;
                }
                Ok(total)
            }
        }
    }

    pub(crate) fn changes(
        &mut self,
        c: &CollectionName,
        since: u64,
        limit: usize,
    ) -> OpResult<Vec<Change>> {
        match self {
            Target::Local { db, .. } => ops::changes(db, c, since, limit),
            Target::Served(s) => s.get(
                Method::GET,
                &format!(
                    "/c/{}/changes?since={since}&limit={limit}",
                    segment(&c.to_string())
                ),
            ),
        }
    }

    pub(crate) fn collections(&mut self) -> OpResult<Vec<String>> {
        match self {
            Target::Local { db, .. } => ops::collections(db),
            Target::Served(s) => s.get(Method::GET, "/collections"),
        }
    }

    pub(crate) fn set_expiration(
        &mut self,
        c: &CollectionName,
        id: &DocId,
        at: Option<SystemTime>,
    ) -> OpResult<Expiration> {
        match self {
            Target::Local { db, .. } => ops::set_expiration(db, c, id, at),
            Target::Served(s) => {
                let at = at.map(ops::format_time);
                let path = format!("{}/expiration", doc_path(c, id));
                s.send_json(Method::PUT, &path, &serde_json::json!({ "at": at }))
            }
        }
    }

    pub(crate) fn retention(&mut self) -> OpResult<Retention> {
        match self {
            Target::Local { db, .. } => ops::retention(db),
            Target::Served(s) => s.get(Method::GET, "/retention"),
        }
    }

    pub(crate) fn set_retention(&mut self, keep: &str) -> OpResult<Retention> {
        match self {
            Target::Local { db, .. } => ops::set_retention(db, ops::parse_retention(keep)?),
            Target::Served(s) => s.send_json(
                Method::PUT,
                "/retention",
                &serde_json::json!({ "keep": keep }),
            ),
        }
    }

    pub(crate) fn expiration(&mut self, c: &CollectionName, id: &DocId) -> OpResult<Expiration> {
        match self {
            Target::Local { db, .. } => ops::expiration(db, c, id),
            Target::Served(s) => s.get(Method::GET, &format!("{}/expiration", doc_path(c, id))),
        }
    }

    pub(crate) fn delete_collection(&mut self, c: &CollectionName) -> OpResult<u64> {
        match self {
            Target::Local { db, .. } => ops::delete_collection(db, c),
            Target::Served(s) => {
                let path = format!("/collections/{}", segment(&c.to_string()));
                let answer: serde_json::Value = s.get(Method::DELETE, &path)?;
                Ok(answer["documents"].as_u64().unwrap_or_default())
            }
        }
    }

    pub(crate) fn info(&mut self) -> OpResult<Info> {
        match self {
            Target::Local { db, path } => ops::info(db, path),
            Target::Served(s) => s.get(Method::GET, "/info"),
        }
    }

    pub(crate) fn blobs(&mut self) -> OpResult<Vec<BlobEntry>> {
        match self {
            Target::Local { db, .. } => ops::blobs(db),
            Target::Served(s) => s.get(Method::GET, "/blobs"),
        }
    }

    pub(crate) fn compact(&mut self) -> OpResult<Compacted> {
        match self {
            Target::Local { db, .. } => ops::compact(db),
            Target::Served(s) => s.get(Method::POST, "/compact"),
        }
    }

    /// Stores `file` as a blob, streaming; answers its reference (JSON).
    pub(crate) fn store_blob(
        &mut self,
        file: &Path,
        content_type: Option<String>,
    ) -> Result<serde_json::Value, String> {
        let content_type = content_type.or_else(|| {
            mime_guess::from_path(file)
                .first()
                .map(|m| m.essence_str().to_owned())
        });
        match self {
            Target::Local { db, .. } => {
                let reader = std::fs::File::open(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                db.save_blob(reader, content_type.as_deref())
                    .map(|b| b.to_json())
                    .map_err(|e| format!("cannot store {}: {e}", file.display()))
            }
            Target::Served(s) => s
                .upload("/blobs", file, content_type.as_deref())
                .map_err(|e| format!("cannot store {}: {e}", file.display())),
        }
    }

    /// Writes a blob's bytes to `out`.
    pub(crate) fn read_blob(
        &mut self,
        digest: &peerlite_proto::BlobDigest,
        out: &mut dyn std::io::Write,
    ) -> Result<(), String> {
        match self {
            Target::Local { db, .. } => {
                let mut reader = db
                    .open_blob(digest)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!("no blob {digest} in this database (see peerlite blob ls)")
                    })?;
                std::io::copy(&mut reader, out)
                    .map(drop)
                    .map_err(|e| format!("cannot write the blob: {e}"))
            }
            Target::Served(s) => s
                .stream(&format!("/blobs/{digest}"), |chunk| out.write_all(chunk))
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn identities(&mut self) -> OpResult<Vec<Identity>> {
        match self {
            Target::Local { db, .. } => ops::identities(db),
            Target::Served(s) => s.get(Method::GET, "/identities"),
        }
    }

    /// Creates a self-signed identity; `made` is it, made beforehand for a local
    /// database (a server makes its own from `request`).
    pub(crate) fn create_identity(
        &mut self,
        label: &str,
        request: &NewIdentity,
        made: &peerlite_runtime::TlsIdentity,
    ) -> OpResult<Identity> {
        match self {
            Target::Local { db, .. } => ops::create_identity(db, label, made),
            Target::Served(s) => s.send_json(
                Method::POST,
                &format!("/identities/{}", segment(label)),
                request,
            ),
        }
    }

    pub(crate) fn renew_identity(
        &mut self,
        label: &str,
        expiration: Option<&str>,
    ) -> OpResult<Identity> {
        match self {
            Target::Local { db, .. } => ops::renew_identity(db, label, expiration),
            Target::Served(s) => s.send_json(
                Method::POST,
                &format!("/identities/{}/renew", segment(label)),
                &serde_json::json!({ "expiration": expiration }),
            ),
        }
    }

    pub(crate) fn certificate(&mut self, label: &str) -> OpResult<String> {
        match self {
            Target::Local { db, .. } => ops::certificate(db, label),
            Target::Served(s) => {
                let pem = s.bytes(
                    Method::GET,
                    &format!("/identities/{}/certificate", segment(label)),
                )?;
                Ok(String::from_utf8_lossy(&pem).into_owned())
            }
        }
    }

    pub(crate) fn delete_identity(&mut self, label: &str) -> OpResult<()> {
        match self {
            Target::Local { db, .. } => ops::delete_identity(db, label),
            Target::Served(s) => s
                .get::<serde_json::Value>(
                    Method::DELETE,
                    &format!("/identities/{}", segment(label)),
                )
                .map(drop),
        }
    }

    /// Calls `each` with every change after `since`, then with each new one as it is
    /// made, until `each` fails or the server stops. Only a served database changes
    /// while a command runs.
    pub(crate) fn follow(
        &mut self,
        c: &CollectionName,
        since: u64,
        mut each: impl FnMut(&Change) -> std::io::Result<()>,
    ) -> Result<(), String> {
        match self {
            // The database is this process's alone: nothing else could change it.
            Target::Local { .. } => Err(
                "--follow needs a running server: start peerlite serve on this database (it holds it, takes changes and replicates them), then follow it".into(),
            ),
            Target::Served(s) => {
                let path = format!(
                    "/c/{}/changes?feed=continuous&since={since}",
                    segment(&c.to_string())
                );
                let mut pending = Vec::new();
                s.stream(&path, |chunk| {
                    pending.extend_from_slice(chunk);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        if line.len() > 1 {
                            let change: Change =
                                serde_json::from_slice(&line).map_err(std::io::Error::other)?;
                            each(&change)?;
                        }
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
                Err("the server stopped".into())
            }
        }
    }
}
