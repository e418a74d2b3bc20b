//! Helpers shared by the tests that run the `peerlite` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `peerlite serve --db DB --host 127.0.0.1 --port PORT --user sync:pw` (TLS with
/// its self-signed identity); returns the child and the URL it printed.
pub(crate) fn serve(db: &Path, port: u16) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args(["serve", "--db"])
        .arg(db)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--user", "sync:pw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
