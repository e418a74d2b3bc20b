//! Helpers shared by the tests that run the `peerlite` binary as a child process.
// Each test crate that includes this module uses only some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `peerlite serve --db DB --host 127.0.0.1 --port PORT --user sync:pw` (TLS with
/// its self-signed identity); returns the child and the URL it printed.
pub(crate) fn serve(db: &Path, port: u16) -> (Child, String) {
    let port = port.to_string();
    serve_with(db, &["--port", &port, "--user", "sync:pw"], |cmd| {
        cmd.stderr(Stdio::inherit());
    })
}

/// Starts `peerlite serve --db DB --host 127.0.0.1 EXTRA…`, `configure` setting its
/// stderr and environment; returns the child and the URL it printed.
pub(crate) fn serve_with(
    db: &Path,
    extra: &[&str],
    configure: impl FnOnce(&mut Command),
) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerlite"));
    cmd.args(["serve", "--db"])
        .arg(db)
        .args(["--host", "127.0.0.1"])
        .args(extra)
        .stdout(Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected: {first}"))
        .to_owned();
    (child, url)
}

/// Stops a `peerlite serve` child with SIGTERM; true when it exits cleanly.
pub(crate) fn terminate(mut child: Child) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap().success()
}

/// Reads lines from a child's output on a thread; `next` waits at most 20 s.
pub(crate) struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    /// Lines of `out` (a child's stdout or stderr, taken from it).
    pub(crate) fn of(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, or panics after 20 s naming what it waited for.
    pub(crate) fn next(&self, waiting_for: &str) -> String {
        self.0
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line within 20 s: waited for {waiting_for}"))
    }

    /// Lines until one contains `text`.
    pub(crate) fn until(&self, text: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self.next(text);
            let done = line.contains(text);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }
}
