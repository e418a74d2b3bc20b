//! Helpers shared by the tests that run the `peerlite` binary as a child process.
// Each test crate that includes this module uses only some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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
