//! The listener process of `peerlite bench`, and the bench's handle on it.
//!
//! The bench drives the child over its standard input and output, one command per line
//! and one reply line per command. The protocol is internal to Peerlite's bench and may
//! change with any release:
//!
//! | command | reply |
//! |---|---|
//! | `record <file…>` (record the listener's sessions, before `open`) | `ok` |
//! | `open <runtime> <tls 0/1> <user> <password> <directory…>` | `ready <port> <certificate base64 or ->` |
//! | `load <from> <count> <seed>` | `ok` |
//! | `edit <count> <total> <offset> <seed> <round>` | `ok` |
//! | `digest` | `digest <documents> <sha256 hex>` |
//! | `watch` (record when `live-push-*` documents arrive) | `ok` |
//! | `write <i> <seed>` (save `live-pull-<i>`) | `ok <unix ns before the save>` |
//! | `seen` | `seen <i>:<unix ns> …` |
//! | `quit` | `bye` |
//!
//! A failed command answers `error <message>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use peerlite_proto::CollectionName;
use peerlite_storage::Database;

use super::runtime::AnyListener;
use super::{BenchError, BenchRuntime, data};
use peerlite_smol::{IdentityAttributes, ListenerAuthenticator, ListenerConfig, ListenerTls, User};

/// Runs the listener side of `peerlite bench`: reads commands from `input` and answers
/// on `output` until `quit` or the end of `input`. The `peerlite bench-peer` command is
/// this function on standard input and output; [`BenchOptions::peer_program`] names a
/// program that calls it.
///
/// [`BenchOptions::peer_program`]: super::BenchOptions::peer_program
pub fn serve_peer(input: impl BufRead, mut output: impl Write) -> Result<(), BenchError> {
    let mut state = PeerState::default();
    for line in input.lines() {
        let line = line?;
        let reply = match state.command(line.trim()) {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                writeln!(output, "bye")?;
                output.flush()?;
                return Ok(());
            }
            Err(e) => format!("error {}", e.replace('\n', " ")),
        };
        writeln!(output, "{reply}")?;
        output.flush()?;
    }
    state.stop();
    Ok(())
}

#[derive(Default)]
struct PeerState {
    db: Option<Database>,
    listener: Option<AnyListener>,
    /// Arrival times of the replicator's live writes, once `watch` was sent.
    seen: Option<Arc<Mutex<BTreeMap<u64, u128>>>>,
    /// Where the listener records its sessions, if it does.
    record: Option<PathBuf>,
}

impl PeerState {
    /// Runs one command: `Ok(None)` for `quit`.
    fn command(&mut self, line: &str) -> Result<Option<String>, String> {
        let e = |x: &dyn std::fmt::Display| x.to_string();
        let c = CollectionName::default();
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or_default();
        let mut num = || -> Result<u64, String> {
            words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("{verb}: expected a number"))
        };
        let reply = match verb {
            "open" => {
                let mut parts = line.splitn(6, ' ').skip(1);
                let (Some(runtime), Some(tls), Some(user), Some(password), Some(dir)) = (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                ) else {
                    return Err(
                        "open: expected <runtime> <tls> <user> <password> <directory>".into(),
                    );
                };
                let runtime = BenchRuntime::from_name(runtime)
                    .ok_or_else(|| format!("open: unknown runtime {runtime:?}"))?;
                self.open(runtime, tls == "1", user, password, PathBuf::from(dir))?
            }
            "record" => {
                let file = line.split_once(' ').map(|(_, f)| f).unwrap_or_default();
                if file.is_empty() {
                    return Err("record: expected a file".into());
                }
                self.record = Some(PathBuf::from(file));
                "ok".into()
            }
            "load" => {
                let (from, count, seed) = (num()?, num()?, num()? as u32);
                data::load(self.db()?, &c, from..from + count, seed).map_err(|x| e(&x))?;
                "ok".into()
            }
            "edit" => {
                let (count, total, offset) = (num()?, num()?, num()?);
                let (seed, round) = (num()? as u32, num()? as u32);
                data::edit(self.db()?, &c, count, total, offset, seed, round).map_err(|x| e(&x))?;
                "ok".into()
            }
            "digest" => {
                let (n, hex) = data::digest(self.db()?, &c).map_err(|x| e(&x))?;
                format!("digest {n} {hex}")
            }
            "watch" => {
                if self.seen.is_none() {
                    self.seen = Some(data::watch_live(self.db()?, "push").1);
                }
                "ok".into()
            }
            "write" => {
                let (i, seed) = (num()?, num()? as u32);
                let t0 = data::live_write(self.db()?, &c, "pull", i, seed).map_err(|x| e(&x))?;
                format!("ok {t0}")
            }
            "seen" => {
                let mut reply = String::from("seen");
                if let Some(seen) = &self.seen {
                    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    for (i, t) in seen.iter() {
                        reply.push_str(&format!(" {i}:{t}"));
                    }
                }
                reply
            }
            "has" => {
                let id = words.next().unwrap_or_default();
                let id = peerlite_proto::DocId::new(id).map_err(|x| e(&x))?;
                let has = self.db()?.get(&c, &id).map_err(|x| e(&x))?.is_some();
                format!("has {}", u8::from(has))
            }
            "blobsum" => {
                let blobs = self.db()?.blobs().map_err(|x| e(&x))?;
                let total: u64 = blobs.iter().map(|b| b.length).sum();
                format!("blobsum {} {total}", blobs.len())
            }
            "quit" => {
                self.stop();
                return Ok(None);
            }
            other => return Err(format!("unknown command {other:?}")),
        };
        Ok(Some(reply))
    }

    fn db(&self) -> Result<&Database, String> {
        self.db
            .as_ref()
            .ok_or_else(|| "no database: send open first".into())
    }

    fn open(
        &mut self,
        runtime: BenchRuntime,
        tls: bool,
        user: &str,
        password: &str,
        dir: PathBuf,
    ) -> Result<String, String> {
        if self.db.is_some() {
            return Err("open: already open".into());
        }
        let db = Database::open(&dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        let config = ListenerConfig {
            network_interface: IpAddr::V4(Ipv4Addr::LOCALHOST),
            disable_tls: !tls,
            tls: ListenerTls::SelfSigned {
                label: "peerlite-bench".into(),
                attributes: IdentityAttributes::common_name("peerlite-bench"),
                expiration: None,
            },
            authenticator: Some(ListenerAuthenticator::Basic(vec![User::new(
                user, password,
            )])),
            record: self.record.clone().map(peerlite_smol::RecordOptions::new),
            ..ListenerConfig::default()
        };
        let listener =
            AnyListener::start(runtime, db.clone(), config).map_err(|e| e.to_string())?;
        let cert = listener
            .tls_identity()
            .map(|id| base64::engine::general_purpose::STANDARD.encode(id.certificate()))
            .unwrap_or_else(|| "-".into());
        let reply = format!("ready {} {cert}", listener.port());
        self.db = Some(db);
        self.listener = Some(listener);
        Ok(reply)
    }

    fn stop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.stop();
        }
        if let Some(db) = self.db.take() {
            let _ = db.persist();
        }
    }
}

/// The bench's handle on its listener process.
pub(crate) struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts `program args…`, which must run [`serve_peer`] on its standard streams.
    pub(crate) fn spawn(
        program: &std::path::Path,
        args: &[std::ffi::OsString],
    ) -> Result<Peer, BenchError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| BenchError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(BenchError::Peer("the listener process has no pipes".into()));
        };
        Ok(Peer {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// The listener process's ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command and returns its reply (without the trailing newline).
    pub(crate) fn call(&mut self, command: &str) -> Result<String, BenchError> {
        let verb = command.split(' ').next().unwrap_or_default();
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| BenchError::Peer(format!("{verb}: the listener process is gone ({e})")))?;
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line)?;
        if n == 0 {
            return Err(BenchError::Peer(format!(
                "{verb}: the listener process exited without answering"
            )));
        }
        let line = line.trim_end().to_owned();
        match line.strip_prefix("error ") {
            Some(message) => Err(BenchError::Peer(format!("{verb}: {message}"))),
            None => Ok(line),
        }
    }

    /// Asks the process to stop its listener and exit, and waits for it.
    pub(crate) fn quit(mut self) -> Result<(), BenchError> {
        self.call("quit")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
