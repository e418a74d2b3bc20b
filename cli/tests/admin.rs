//! A served database, operated while `peerlite serve` holds it: the commands through its
//! admin socket, `curl --unix-socket`, metrics, the TCP admin address, and what the
//! admin interface refuses.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{serve_with, terminate};

mod common;

fn peerlite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `peerlite ARGS`, returning (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = peerlite(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs `peerlite ARGS` and expects success; its stdout.
fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "peerlite {args:?}: {err}");
    out
}

/// `peerlite serve` on a free port with a user `sync:pw`; the child and its URL.
fn serve(db: &Path, extra: &[&str]) -> (Child, String) {
    let mut args = vec!["--port", "0", "--user", "sync:pw"];
    args.extend_from_slice(extra);
    serve_with(db, &args, |cmd| {
        cmd.stderr(Stdio::null());
    })
}

/// `curl --unix-socket DB/admin.sock` with `args`; (HTTP status, body).
fn curl(db: &Path, args: &[&str]) -> (u16, String) {
    let socket = db.join("admin.sock");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&socket)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What may differ between two databases with the same content: UUIDs, sizes, paths,
/// certificates and their fingerprints and expirations (new keys each), the served
/// part of `info`.
fn comparable(text: &str) -> String {
    if text.starts_with("-----BEGIN CERTIFICATE-----") {
        return "a certificate".into();
    }
    let differ = [
        "uuid",
        "size",
        "database",
        "served",
        "listening",
        "certificate",
        "connections",
        "since start",
    ];
    text.lines()
        .filter(|l| !differ.iter().any(|p| l.starts_with(p)))
        .map(|l| match l.split_once("sha256 ") {
            Some((head, _)) => format!("{head}sha256 …"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stands for the database's path in a scripted command.
const DB: &str = "{db}";

#[test]
fn every_document_blob_and_identity_command_answers_the_same_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.db");
    let served = dir.path().join("served.db");
    let file = dir.path().join("photo.png");
    std::fs::write(&file, vec![b'7'; 300_000]).unwrap();
    let file = file.to_str().unwrap();
    let lines = dir.path().join("docs.jsonl");
    std::fs::write(
        &lines,
        "{\"_id\": \"i1\", \"k\": 1}\n{\"_id\": \"i2\", \"k\": [1, 2]}\n",
    )
    .unwrap();
    let lines = lines.to_str().unwrap();
    let bad_lines = dir.path().join("bad.jsonl");
    std::fs::write(&bad_lines, "{\"_id\": \"ok\"}\n{\"no\": \"id\"}\n").unwrap();
    let bad_lines = bad_lines.to_str().unwrap();
    let mut digest = String::new();
    for db in [&local, &served] {
        let db = db.to_str().unwrap();
        ok(&["put", "--db", db, "seed", r#"{"v": 0}"#]);
        let blob = json(&ok(&["blob", "put", "--db", db, file]));
        digest = blob["digest"].as_str().unwrap().to_owned();
    }
    // What `serve` makes in the served database: its TLS identity.
    ok(&[
        "identity",
        "--db",
        local.to_str().unwrap(),
        "create",
        "peerlite",
    ]);
    let (server, _url) = serve(&served, &[]);
    let attach = format!("photo={file}");
    let script: Vec<Vec<&str>> = vec![
        vec!["put", "--db", DB, "a", r#"{"n": 1}"#],
        vec!["put", "--db", DB, "a", r#"{"n": 1}"#],
        vec!["put", "--db", DB, "a", r#"{"n": 2}"#],
        vec!["put", "--db", DB, "weird/id with space?", r#"{"x": true}"#],
        vec!["put", "--db", DB, "b", "[1, 2]"],
        vec![
            "put",
            "--db",
            DB,
            "b",
            r#"{"n": 1}"#,
            "--collection",
            "app.notes",
        ],
        vec!["get", "--db", DB, "a"],
        vec!["get", "--db", DB, "weird/id with space?"],
        vec!["get", "--db", DB, "missing"],
        vec!["get", "--db", DB, "a", "--collection", "app.nope"],
        vec!["get", "--db", DB, "a", "--meta"],
        vec!["get", "--db", DB, "a", "--meta", "--json"],
        vec!["ls", "--db", DB],
        vec!["ls", "--db", DB, "--collection", "app.notes"],
        vec!["rm", "--db", DB, "a"],
        vec!["rm", "--db", DB, "a"],
        vec!["get", "--db", DB, "a"],
        vec!["get", "--db", DB, "a", "--meta", "--json"],
        vec!["purge", "--db", DB, "weird/id with space?"],
        vec!["purge", "--db", DB, "weird/id with space?"],
        vec!["import", "--db", DB, lines],
        vec!["import", "--db", DB, lines],
        vec!["import", "--db", DB, bad_lines],
        vec!["export", "--db", DB],
        vec!["changes", "--db", DB],
        vec!["changes", "--db", DB, "--since", "2", "--json"],
        vec!["collections", "--db", DB],
        vec![
            "put",
            "--db",
            DB,
            "pic",
            r#"{"caption": "x"}"#,
            "--attach",
            &attach,
        ],
        vec!["blob", "ls", "--db", DB],
        vec!["blob", "get", "--db", DB, &digest],
        vec!["blob", "get", "--db", DB, "sha256-nonsense"],
        vec!["rm", "--db", DB, "pic"],
        vec!["compact", "--db", DB],
        vec!["blob", "get", "--db", DB, &digest],
        vec!["info", "--db", DB],
        vec![
            "identity",
            "--db",
            DB,
            "create",
            "hub",
            "--common-name",
            "hub.local",
        ],
        vec!["identity", "--db", DB, "create", "hub"],
        vec!["identity", "--db", DB, "list"],
        vec!["identity", "--db", DB, "renew", "nope"],
        vec![
            "identity",
            "--db",
            DB,
            "renew",
            "hub",
            "--expiration",
            "yesterday",
        ],
        vec!["identity", "--db", DB, "renew", "hub"],
        vec!["identity", "--db", DB, "export-cert", "hub"],
        vec!["identity", "--db", DB, "export-cert", "nope"],
        vec!["identity", "--db", DB, "delete", "hub"],
        vec!["identity", "--db", DB, "delete", "hub"],
    ];
    for step in &script {
        let answer = |db: &Path| {
            let db = db.to_str().unwrap();
            let args: Vec<&str> = step.iter().map(|a| if *a == DB { db } else { a }).collect();
            run(&args)
        };
        let (lc, lo, le) = answer(&local);
        let (sc, so, se) = answer(&served);
        assert_eq!(
            lc, sc,
            "exit codes differ for {step:?}: local {le:?}, served {se:?}"
        );
        assert_eq!(
            comparable(&lo),
            comparable(&so),
            "stdout differs for {step:?}"
        );
        assert_eq!(le, se, "stderr differs for {step:?}");
    }
    // The served database did change: the server holds it, and says so.
    let served_arg = served.to_str().unwrap();
    let info = json(&ok(&["info", "--db", served_arg, "--json"]));
    assert!(info["server"]["pid"].as_u64().is_some(), "{info}");
    assert!(ok(&["info", "--db", served_arg]).contains("served      by process"));
    assert!(ok(&["info", "--db", local.to_str().unwrap()]).contains("served      no"));
    assert!(terminate(server));
    // Stopped, the server removed its socket, and commands open the database again.
    assert!(!served.join("admin.sock").exists());
    assert_eq!(ok(&["get", "--db", served_arg, "i2"]), "{\"k\":[1,2]}\n");
}
