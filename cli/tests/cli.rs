//! The `peerlite` command-line tool, as a user runs it.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};

use assert_cmd::Command;
use common::terminate;
use predicates::prelude::*;

mod common;

fn peerlite() -> Command {
    Command::cargo_bin("peerlite").unwrap()
}

fn db_arg(dir: &Path) -> String {
    dir.to_str().unwrap().to_owned()
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["sync", "--help"],
        vec!["put", "--help"],
        vec!["get", "--help"],
        vec!["rm", "--help"],
        vec!["ls", "--help"],
        vec!["import", "--help"],
        vec!["export", "--help"],
        vec!["identity", "--help"],
        vec!["identity", "create", "--help"],
        vec!["demo", "--help"],
        vec!["bench", "--help"],
        vec!["blob", "--help"],
        vec!["blob", "put", "--help"],
        vec!["blob", "get", "--help"],
        vec!["blob", "ls", "--help"],
        vec!["compact", "--help"],
    ] {
        peerlite()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage"));
    }
}

#[test]
fn document_commands_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(dir.path());
    peerlite()
        .args(["put", "--db", &db, "a", r#"{"n": 1}"#])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("1-"));
    peerlite()
        .args(["put", "--db", &db, "b", r#"{"n": 2}"#])
        .assert()
        .success();
    peerlite()
        .args(["put", "--db", &db, "--collection", "app.notes", "c", "{}"])
        .assert()
        .success();
    peerlite()
        .args(["get", "--db", &db, "a"])
        .assert()
        .success()
        .stdout("{\"n\":1}\n");
    peerlite()
        .args(["ls", "--db", &db])
        .assert()
        .success()
        .stdout("a\nb\n");
    peerlite()
        .args(["ls", "--db", &db, "--collection", "app.notes"])
        .assert()
        .success()
        .stdout("c\n");
    peerlite()
        .args(["rm", "--db", &db, "b"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("2-"));
    peerlite()
        .args(["ls", "--db", &db])
        .assert()
        .success()
        .stdout("a\n");

    // Errors: one clear line, non-zero exit.
    for (args, says) in [
        (vec!["get", "--db", &db, "b"], "not found"),
        (vec!["rm", "--db", &db, "b"], "not found"),
        (vec!["put", "--db", &db, "x", "[1, 2]"], "must be a map"),
        (vec!["put", "--db", &db, "x", "{nope"], "invalid JSON"),
        (vec!["put", "--db", &db, "", "{}"], "invalid document ID"),
        (
            vec!["put", "--db", &db, "--collection", "a.b.c", "x", "{}"],
            "invalid collection",
        ),
    ] {
        peerlite()
            .args(&args)
            .assert()
            .failure()
            .stderr(predicate::str::starts_with("error: ").and(predicate::str::contains(says)));
    }
}

#[test]
fn import_and_export_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(&dir.path().join("db"));
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        "{\"_id\": \"k1\", \"v\": 1}\n\n{\"_id\": \"k2\", \"v\": [true, null]}\n",
    )
    .unwrap();
    peerlite()
        .args(["import", "--db", &db, file.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("imported 2 documents"));
    peerlite()
        .args(["export", "--db", &db])
        .assert()
        .success()
        .stdout("{\"_id\":\"k1\",\"v\":1}\n{\"_id\":\"k2\",\"v\":[true,null]}\n");
    // A bad line anywhere imports nothing.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"_id\": \"k3\"}\n{\"v\": 1}\n").unwrap();
    peerlite()
        .args(["import", "--db", &db, bad.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("line 2").and(predicate::str::contains("_id")));
    peerlite()
        .args(["get", "--db", &db, "k3"])
        .assert()
        .failure();
    peerlite()
        .args(["import", "--db", &db, "/no/such/file.jsonl"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot read"));
}

#[test]
fn identity_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(dir.path());
    peerlite()
        .args([
            "identity",
            "--db",
            &db,
            "create",
            "my-server-identity",
            "--common-name",
            "My Server",
            "--organization",
            "My Company",
            "--organization-unit",
            "Mobile",
            "--email",
            "admin@mycompany.com",
            "--expiration",
            "2031-01-01T00:00:00Z",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "created my-server-identity sha256 ",
        ));
    peerlite()
        .args(["identity", "--db", &db, "create", "my-server-identity"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("exists"));
    peerlite()
        .args([
            "identity",
            "--db",
            &db,
            "create",
            "old",
            "--expiration",
            "2001-01-01T00:00:00Z",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("in the past"));
    peerlite()
        .args([
            "identity",
            "--db",
            &db,
            "create",
            "x",
            "--expiration",
            "next tuesday",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("RFC 3339"));
    peerlite()
        .args(["identity", "--db", &db, "list"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("my-server-identity\tsha256 ")
                .and(predicate::str::contains("expires 2031-01-01")),
        );
    let pem = peerlite()
        .args(["identity", "--db", &db, "export-cert", "my-server-identity"])
        .output()
        .unwrap();
    let pem = String::from_utf8(pem.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // openssl reads it and sees the attributes.
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, &pem).unwrap();
    let text = StdCommand::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        subject.contains("My Server")
            && subject.contains("My Company")
            && subject.contains("Mobile"),
        "{subject}"
    );
    peerlite()
        .args(["identity", "--db", &db, "delete", "my-server-identity"])
        .assert()
        .success();
    peerlite()
        .args(["identity", "--db", &db, "delete", "my-server-identity"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no identity"));
}

/// A `peerlite serve` child process; its URL and certificate fingerprint.
struct Server {
    child: Child,
    url: String,
    fingerprint: Option<String>,
}

impl Server {
    fn start(db: &str, extra: &[&str]) -> Server {
        let bin = assert_cmd::cargo::cargo_bin("peerlite");
        let mut child = StdCommand::new(bin)
            .args(["serve", "--db", db, "--host", "127.0.0.1", "--port", "0"])
            .args(extra)
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
        let fingerprint = if url.starts_with("wss") {
            let second = lines.next().unwrap().unwrap();
            Some(
                second
                    .strip_prefix("certificate sha256 ")
                    .unwrap()
                    .to_owned(),
            )
        } else {
            None
        };
        Server {
            child,
            url,
            fingerprint,
        }
    }

    /// Stops it with SIGTERM and checks that it exits cleanly.
    fn stop(mut self) {
        let status = StdCommand::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "serve exited with {exit:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn serve_and_sync_as_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    for i in 0..50 {
        peerlite()
            .args(["put", "--db", &a, &format!("a{i}"), r#"{"from": "a"}"#])
            .assert()
            .success();
    }
    peerlite()
        .args(["put", "--db", &b, "b0", r#"{"from": "b"}"#])
        .assert()
        .success();
    let server = Server::start(&a, &["--user", "alice:s3cret"]);
    assert!(server.url.starts_with("wss://127.0.0.1:") && server.url.ends_with("/db"));
    assert_eq!(server.fingerprint.as_ref().unwrap().len(), 64);

    peerlite()
        .args([
            "sync",
            &server.url,
            "--db",
            &b,
            "--user",
            "alice:s3cret",
            "--accept-self-signed",
        ])
        .assert()
        .success()
        .stdout("pushed 1, pulled 50, conflicts resolved 0\n");
    let export = |db: &str| {
        peerlite()
            .args(["export", "--db", db])
            .output()
            .unwrap()
            .stdout
    };
    // The listener holds its database open; compare after stopping it.
    let from_b = export(&b);

    // Failure paths: wrong password, no trust configured, TLS required.
    peerlite()
        .args([
            "sync",
            &server.url,
            "--db",
            &b,
            "--user",
            "alice:wrong",
            "--accept-self-signed",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("401"));
    peerlite()
        .args(["sync", &server.url, "--db", &b, "--user", "alice:s3cret"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not trusted"));
    let plain = server.url.replacen("wss://", "ws://", 1);
    peerlite()
        .args(["sync", &plain, "--db", &b, "--user", "alice:s3cret"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("wss://"));
    server.stop();
    assert_eq!(export(&a), from_b);
    assert_eq!(String::from_utf8(from_b).unwrap().lines().count(), 51);
}

#[test]
fn sync_with_a_pinned_certificate_and_push_only() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    peerlite()
        .args([
            "identity",
            "--db",
            &a,
            "create",
            "server",
            "--common-name",
            "localhost",
        ])
        .assert()
        .success();
    let pem = peerlite()
        .args(["identity", "--db", &a, "export-cert", "server"])
        .output()
        .unwrap()
        .stdout;
    let pin = dir.path().join("server.pem");
    std::fs::write(&pin, pem).unwrap();
    peerlite()
        .args(["put", "--db", &b, "only-b", "{}"])
        .assert()
        .success();
    let server = Server::start(&a, &["--tls-self-signed", "server", "--no-auth"]);
    peerlite()
        .args([
            "sync",
            &server.url,
            "--db",
            &b,
            "--push",
            "--pinned-cert",
            pin.to_str().unwrap(),
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("pushed 1, pulled 0"));
    // A pin that does not match.
    let other = dir.path().join("other");
    peerlite()
        .args(["identity", "--db", other.to_str().unwrap(), "create", "x"])
        .assert()
        .success();
    let other_pem = peerlite()
        .args([
            "identity",
            "--db",
            other.to_str().unwrap(),
            "export-cert",
            "x",
        ])
        .output()
        .unwrap()
        .stdout;
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other_pem).unwrap();
    peerlite()
        .args([
            "sync",
            &server.url,
            "--db",
            &b,
            "--pinned-cert",
            wrong.to_str().unwrap(),
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "does not match the pinned certificate",
        ));
    server.stop();
}

#[test]
fn demo_runs_and_converges() {
    peerlite()
        .args(["demo", "--docs", "300"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("pushed 300")
                .and(predicate::str::contains("conflicts resolved 10"))
                .and(predicate::str::contains(
                    "both devices hold the same 295 documents",
                )),
        );
}

#[test]
fn serve_and_sync_argument_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(&dir.path().join("a"));
    peerlite()
        .args(["serve", "--db", &db, "--port", "0", "--user", "no-password"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("NAME:PASSWORD"));
    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    peerlite()
        .args([
            "serve",
            "--db",
            &db,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--no-auth",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot listen"));
    // Options that cannot go together are refused by the parser.
    peerlite()
        .args(["serve", "--db", &db, "--no-tls", "--tls-self-signed", "x"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot be used with"));
    peerlite()
        .args(["sync", "http://example.com/db", "--db", &db])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid endpoint"));
    peerlite()
        .args([
            "sync",
            "ws://127.0.0.1:1/db",
            "--db",
            &db,
            "--push",
            "--pull",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn serve_limits_failed_logins() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    let server = Server::start(&a, &["--user", "alice:s3cret", "--max-auth-failures", "1"]);
    let attempt = |user: &str| {
        peerlite()
            .args(["sync", &server.url, "--db", &b, "--user", user])
            .arg("--accept-self-signed")
            .assert()
    };
    attempt("alice:wrong")
        .failure()
        .stderr(predicate::str::contains("401"));
    attempt("alice:wrong")
        .failure()
        .stderr(predicate::str::contains("429").and(predicate::str::contains("retry in 60 s")));
    // Locked out: even the right password waits.
    attempt("alice:s3cret")
        .failure()
        .stderr(predicate::str::contains("429"));
    server.stop();
}

#[test]
fn bench_prints_one_checked_json_line_per_run() {
    let work = tempfile::tempdir().unwrap();
    for (tls, runtime) in [(true, "smol"), (false, "tokio")] {
        let mut args = vec![
            "bench",
            "--docs",
            "700",
            "--runs",
            "2",
            "--json",
            "--live-writes",
            "8",
            "--live-rate",
            "200",
            "--incr-rounds",
            "3",
            "--work-dir",
            work.path().to_str().unwrap(),
            "--runtime",
            runtime,
        ];
        if !tls {
            args.push("--no-tls");
        }
        let out = peerlite()
            .args(&args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (i, r) in lines.iter().enumerate() {
            assert_eq!(r["run"], i + 1);
            assert_eq!(r["runtime"], runtime);
            assert_eq!(r["docs"], 700);
            assert_eq!(r["incr_docs"], 7);
            assert_eq!(r["incr_rounds"], 3);
            assert_eq!(r["tls"], tls);
            assert_eq!(r["durability"], "sync");
            for rate in [
                "store_ingest_docs_per_s",
                "push_docs_per_s",
                "pull_docs_per_s",
            ] {
                assert!(r[rate].as_f64().unwrap() > 0.0, "{rate}: {r}");
            }
            for ms in [
                "noop_sync_ms",
                "noop_push_ms",
                "noop_pull_ms",
                "incr_push_ms",
                "incr_pull_ms",
                "live_p50_ms",
                "live_p99_ms",
                "live_pull_p50_ms",
                "live_pull_p99_ms",
            ] {
                let v = r[ms].as_f64().unwrap();
                assert!(v > 0.0 && v < 30_000.0, "{ms}: {r}");
            }
            assert!(r["live_p99_ms"].as_f64() >= r["live_p50_ms"].as_f64());
            if Path::new("/proc/self/status").exists() {
                for mb in ["replicator_peak_rss_mb", "listener_peak_rss_mb"] {
                    assert!(r[mb].as_f64().unwrap() > 1.0, "{mb}: {r}");
                }
                assert!(r["listener_cpu_s"].as_f64().is_some(), "{r}");
            }
        }
    }
    // Nothing is left behind in the work directory.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn bench_argument_and_peer_errors() {
    for (args, message) in [
        (
            vec!["bench", "--runs", "0"],
            "--runs, --docs and --incr-rounds must be at least 1",
        ),
        (
            vec!["bench", "--incr-rounds", "0"],
            "--runs, --docs and --incr-rounds must be at least 1",
        ),
        (
            vec!["bench", "--live-rate", "0"],
            "--live-rate must be a positive number",
        ),
        (
            vec!["bench", "--runtime", "fast"],
            "invalid value 'fast' for '--runtime <RUNTIME>'",
        ),
    ] {
        peerlite()
            .args(&args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(message));
    }
    // The listener process answers every command, and says what is wrong.
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "digest\nfrobnicate\nload 1\nopen fast 0 u p {0}\nopen tokio 0 u p {0}\nload 0 10 1\ndigest\nwatch\nseen\nquit\nignored\n",
        dir.path().join("db").display()
    );
    let out = peerlite()
        .arg("bench-peer")
        .write_stdin(script)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10, "{out}");
    assert_eq!(lines[0], "error no database: send open first");
    assert_eq!(lines[1], "error unknown command \"frobnicate\"");
    assert_eq!(lines[2], "error load: expected a number");
    assert_eq!(lines[3], "error open: unknown runtime \"fast\"");
    assert!(lines[4].starts_with("ready "), "{out}");
    assert!(
        lines[4].ends_with(" -"),
        "plain WebSocket: no certificate: {out}"
    );
    assert_eq!(lines[5], "ok");
    assert!(lines[6].starts_with("digest 10 "), "{out}");
    assert_eq!(lines[7], "ok");
    assert_eq!(lines[8], "seen");
    assert_eq!(lines[9], "bye");
}

#[test]
fn a_one_shot_sync_says_why_it_retries_and_prints_a_summary_only_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(&dir.path().join("a"));
    // Nothing listens on this port once the socket is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = peerlite()
        .args(["sync", &format!("ws://127.0.0.1:{port}/db"), "--db", &db])
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .failure()
        .get_output()
        .clone();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "no summary after a failure"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("attempt 1 of 3 failed: cannot reach 127.0.0.1:")
            && lines[0].ends_with("; retrying in 1 s"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("attempt 2 of 3 failed: ") && lines[1].ends_with("retrying in 2 s")
    );
    assert!(lines[2].starts_with("error: cannot reach"), "{stderr}");
}

#[test]
fn large_documents_sync_and_the_summary_counts_what_the_peer_took() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    let jsonl = dir.path().join("six.jsonl");
    let big = "z".repeat(3 << 20);
    let lines: String = (0..6)
        .map(|i| format!("{{\"_id\": \"c{i}\", \"b\": \"{big}\"}}\n"))
        .collect();
    std::fs::write(&jsonl, lines).unwrap();
    peerlite()
        .args(["import", "--db", &b, jsonl.to_str().unwrap()])
        .assert()
        .success();
    for id in ["s0", "s1"] {
        peerlite()
            .args(["put", "--db", &a, id, "{}"])
            .assert()
            .success();
    }
    let server = Server::start(&a, &["--user", "u:p"]);
    let sync = |extra: &[&str]| {
        peerlite()
            .args(["sync", &server.url, "--db", &b, "--user", "u:p"])
            .arg("--accept-self-signed")
            .args(extra)
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .success()
            .stderr("")
    };
    // Six documents of 3 MiB in one attempt (this used to retry forever, silently).
    sync(&["--push"]).stdout("pushed 6, pulled 0, conflicts resolved 0\n");
    sync(&["--pull"]).stdout("pushed 0, pulled 2, conflicts resolved 0\n");
    // The two pulled documents go back unasked (a small batch is sent without a
    // proposal); the listener had them, and the summary says so instead of "pushed 2".
    sync(&[]).stdout("pushed 0, pulled 0, conflicts resolved 0, 2 already on the other side\n");
    sync(&[]).stdout("pushed 0, pulled 0, conflicts resolved 0\n");
    server.stop();
}

#[test]
fn continuous_sync_without_a_terminal_prints_a_line_per_activity_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    for id in ["s0", "s1", "s2"] {
        peerlite()
            .args(["put", "--db", &a, id, "{}"])
            .assert()
            .success();
    }
    let server = Server::start(&a, &["--no-tls", "--no-auth"]);
    let bin = assert_cmd::cargo::cargo_bin("peerlite");
    let mut child = StdCommand::new(bin)
        .args(["sync", &server.url, "--db", &b, "--continuous", "--pull"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("idle") {
        seen.push(lines.next().unwrap().unwrap());
        assert!(seen.len() < 10, "{seen:?}");
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("connecting"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l == "busy"), "{seen:?}");
    assert!(seen.iter().any(|l| l == "pushed 0, pulled 3"), "{seen:?}");
    StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("pushed 0, pulled 3, conflicts resolved 0"),
        "{rest:?}"
    );
    server.stop();
}

#[test]
fn read_commands_need_an_existing_database_and_collection() {
    let dir = tempfile::tempdir().unwrap();
    let missing = db_arg(&dir.path().join("typo"));
    for args in [
        vec!["get", "--db", &missing, "x"],
        vec!["ls", "--db", &missing],
        vec!["export", "--db", &missing],
        vec!["rm", "--db", &missing, "x"],
        vec!["collections", "--db", &missing],
        vec!["identity", "--db", &missing, "list"],
        vec!["identity", "--db", &missing, "export-cert", "peerlite"],
    ] {
        peerlite().args(&args).assert().failure().stderr(
            predicate::str::starts_with("error: no database at")
                .and(predicate::str::contains("check --db")),
        );
    }
    assert!(
        !dir.path().join("typo").exists(),
        "a read command created the database"
    );

    let db = db_arg(&dir.path().join("db"));
    peerlite()
        .args(["put", "--db", &db, "a", "{}"])
        .assert()
        .success();
    peerlite()
        .args(["put", "--db", &db, "--collection", "app.notes", "n", "{}"])
        .assert()
        .success();
    peerlite()
        .args(["collections", "--db", &db])
        .assert()
        .success()
        .stdout("_default._default\napp.notes\n");
    peerlite()
        .args(["ls", "--db", &db, "--collection", "app.note"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "has no collection app.note; it has: _default._default, app.notes",
        ));
    // The mistyped collection was not created either.
    peerlite()
        .args(["collections", "--db", &db])
        .assert()
        .success()
        .stdout("_default._default\napp.notes\n");
}

#[test]
fn put_reads_stdin_import_takes_a_bom_and_saving_the_same_body_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(&dir.path().join("db"));
    // A body larger than one command-line argument may be (128 KiB on Linux).
    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(300 << 10));
    let rev = peerlite()
        .args(["put", "--db", &db, "big", "-"])
        .write_stdin(big.clone())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&rev).starts_with("1-"));
    peerlite()
        .args(["put", "--db", &db, "big", "-"])
        .write_stdin(big)
        .assert()
        .success()
        .stdout(String::from_utf8(rev).unwrap());

    let file = dir.path().join("bom.jsonl");
    std::fs::write(
        &file,
        "\u{feff}{\"_id\": \"a\", \"n\": 1}\n{\"_id\": \"b\", \"n\": 2}\n",
    )
    .unwrap();
    let import = || {
        peerlite()
            .args(["import", "--db", &db, file.to_str().unwrap()])
            .assert()
            .success()
    };
    import().stdout("imported 2 documents into _default._default\n");
    import().stdout("imported 2 documents into _default._default (2 unchanged)\n");
    peerlite()
        .args(["get", "--db", &db, "a"])
        .assert()
        .success()
        .stdout("{\"n\":1}\n");
    // Still generation 1: re-importing made no revision.
    peerlite()
        .args(["put", "--db", &db, "a", r#"{"n": 1}"#])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("1-"));
    // The body limit is said as such.
    let huge = format!(r#"{{"text": "{}"}}"#, "x".repeat(5 << 20));
    peerlite()
        .args(["put", "--db", &db, "huge", "-"])
        .write_stdin(huge)
        .assert()
        .failure()
        .stderr(predicate::str::contains("4194304"));
}

#[test]
fn serve_requires_authentication_unless_told_and_passwords_stay_out_of_argv() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    peerlite()
        .args(["serve", "--db", &a, "--host", "127.0.0.1", "--port", "0"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("serve needs a way to authenticate clients")
                .and(predicate::str::contains("--no-auth")),
        );
    peerlite()
        .args(["serve", "--db", &a, "--port", "0", "--user", "alice:"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "user \"alice\" has an empty password",
        ));

    // An open listener says so on standard error, and serves (a separate database, so
    // stopping it cannot leave this test's database half made).
    let open_db = db_arg(&dir.path().join("open"));
    let bin = assert_cmd::cargo::cargo_bin("peerlite");
    let mut open = StdCommand::new(&bin)
        .args([
            "serve",
            "--db",
            &open_db,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-auth",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let warning = BufReader::new(open.stderr.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(
        warning.starts_with("warning: --no-auth: anyone who can reach 127.0.0.1:0"),
        "{warning}"
    );
    let listening = BufReader::new(open.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(
        listening.starts_with("listening on wss://127.0.0.1:"),
        "{listening}"
    );
    open.kill().unwrap();
    open.wait().unwrap();

    let users = dir.path().join("users");
    std::fs::write(&users, "# who may sync\nalice:s3cret\nbob:hunter2\n").unwrap();
    let server = Server::start(&a, &["--users-file", users.to_str().unwrap()]);
    let password = dir.path().join("password");
    std::fs::write(&password, "hunter2\n").unwrap();
    peerlite()
        .args([
            "sync",
            &server.url,
            "--db",
            &b,
            "--accept-self-signed",
            "--user",
            "bob",
        ])
        .arg("--password-file")
        .arg(&password)
        .assert()
        .success();
    peerlite()
        .args([
            "sync",
            &server.url,
            "--db",
            &b,
            "--accept-self-signed",
            "--user",
            "alice",
        ])
        .env("PEERLITE_PASSWORD", "s3cret")
        .assert()
        .success();
    peerlite()
        .args([
            "sync",
            &server.url,
            "--db",
            &b,
            "--accept-self-signed",
            "--user",
            "alice",
        ])
        .env_remove("PEERLITE_PASSWORD")
        .assert()
        .failure()
        .stderr(predicate::str::contains("no password for user \"alice\""));
    server.stop();
}

#[test]
fn a_read_only_listener_says_to_pull() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    peerlite()
        .args(["put", "--db", &a, "s", "{}"])
        .assert()
        .success();
    peerlite()
        .args(["put", "--db", &b, "c", "{}"])
        .assert()
        .success();
    let server = Server::start(&a, &["--no-tls", "--no-auth", "--read-only"]);
    peerlite()
        .args(["sync", &server.url, "--db", &b])
        .assert()
        .failure()
        .stdout("")
        .stderr(predicate::str::contains(
            "this listener is read-only: sync with pull only (peerlite sync --pull",
        ));
    peerlite()
        .args(["sync", &server.url, "--db", &b, "--pull"])
        .assert()
        .success()
        .stdout("pushed 0, pulled 1, conflicts resolved 0\n");
    server.stop();
}

#[test]
fn an_expired_identity_is_refused_with_how_to_renew_it_and_renewal_keeps_its_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(&dir.path().join("db"));
    peerlite()
        .args([
            "identity",
            "--db",
            &db,
            "create",
            "old",
            "--expiration",
            "2020-01-01T00:00:00Z",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "expiration 2020-01-01T00:00:00Z is in the past",
        ));
    assert!(
        !dir.path().join("db").exists(),
        "a refused command created the database"
    );
    // One that expires in two seconds.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    peerlite()
        .args([
            "identity",
            "--db",
            &db,
            "create",
            "srv",
            "--common-name",
            "laptop.local",
        ])
        .args(["--organization", "Acme", "--expiration", &soon])
        .assert()
        .success();
    std::thread::sleep(std::time::Duration::from_secs(3));
    peerlite()
        .args([
            "serve",
            "--db",
            &db,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-auth",
        ])
        .args(["--tls-self-signed", "srv"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains(format!("the identity \"srv\" expired on {soon}"))
                .and(predicate::str::contains("peerlite identity renew srv")),
        );
    let renewed = peerlite()
        .args(["identity", "--db", &db, "renew", "srv"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let renewed = String::from_utf8(renewed).unwrap();
    let fingerprint = renewed
        .strip_prefix("renewed srv sha256 ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{renewed}"))
        .to_owned();
    let pem = peerlite()
        .args(["identity", "--db", &db, "export-cert", "srv"])
        .output()
        .unwrap()
        .stdout;
    let cert = dir.path().join("srv.pem");
    std::fs::write(&cert, pem).unwrap();
    let subject = StdCommand::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(&cert)
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&subject.stdout);
    assert!(
        subject.contains("CN = laptop.local") && subject.contains("O = Acme"),
        "{subject}"
    );
    assert!(subject.contains("DNS:laptop.local"), "{subject}");
    let server = Server::start(&db, &["--tls-self-signed", "srv", "--no-auth"]);
    assert_eq!(server.fingerprint.as_deref(), Some(fingerprint.as_str()));
    server.stop();
}

/// Runs a shell script in `dir` (the README's openssl recipes, verbatim).
fn sh(dir: &Path, script: &str) {
    let out = StdCommand::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_openssl_recipe_for_client_certificates_and_a_ca_works_and_v1_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The recipe in README.md ("Client certificates with openssl").
    sh(
        d,
        r#"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 3650 -subj "/CN=My Devices CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key -out device.csr \
    -subj "/CN=phone-1"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in device.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out device.pem \
    -days 365 -extfile client.ext
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 365 -extfile server.ext
# The common recipe without -extfile makes an X.509 v1 certificate.
openssl x509 -req -in device.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out v1.pem -days 365
"#,
    );
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let (a, b) = (db_arg(&d.join("a")), db_arg(&d.join("b")));
    peerlite()
        .args(["put", "--db", &a, "s", "{}"])
        .assert()
        .success();
    let server = Server::start(
        &a,
        &[
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
            "--client-ca",
            &path("ca.pem"),
        ],
    );
    let url = server.url.replacen("127.0.0.1", "localhost", 1);
    let sync = |cert: &str| {
        peerlite()
            .args(["sync", &url, "--db", &b, "--ca-cert", &path("ca.pem")])
            .args([
                "--client-cert",
                &path(cert),
                "--client-key",
                &path("device.key"),
            ])
            .assert()
    };
    sync("device.pem")
        .success()
        .stdout("pushed 0, pulled 1, conflicts resolved 0\n");
    sync("v1.pem")
        .failure()
        .stderr(predicate::str::contains("X.509 v1").and(predicate::str::contains("-extfile")));
    // Without --ca-cert the CA-issued certificate is not trusted, and the error says how.
    peerlite()
        .args(["sync", &url, "--db", &b])
        .args([
            "--client-cert",
            &path("device.pem"),
            "--client-key",
            &path("device.key"),
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--ca-cert"));
    server.stop();
}

/// A database killed while it was being created (Ctrl-C during a first `put` or `serve`)
/// still opens: creation is all or nothing. Before, about 1 kill in 20 left a directory
/// that could never be opened ("File exists", "InvalidVersion").
#[test]
fn a_database_killed_while_being_created_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("peerlite");
    for i in 0..60u64 {
        let db = db_arg(&dir.path().join(format!("db{i}")));
        let mut child = StdCommand::new(&bin)
            .args(["put", "--db", &db, "x", "{}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill points spread over the first ~10 ms, where creation happens.
        std::thread::sleep(std::time::Duration::from_micros(i * 167));
        let _ = child.kill();
        let _ = child.wait();
        peerlite()
            .args(["put", "--db", &db, "y", "{}"])
            .assert()
            .success();
    }
}

/// SIGTERM sent the moment `serve` says it listens stops it cleanly: its signal handler
/// is in place before it prints anything (before, a signal in that gap killed it).
#[test]
fn serve_stops_cleanly_on_sigterm_as_soon_as_it_says_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_arg(&dir.path().join("db"));
    for _ in 0..25 {
        Server::start(&db, &["--no-tls", "--no-auth"]).stop();
    }
}

#[test]
fn blobs_travel_with_sync_over_tls_and_the_blob_commands_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    let file = |name: &str, len: usize, tag: u8| {
        let path = dir.path().join(name);
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31) as u8 ^ tag).collect();
        std::fs::write(&path, &bytes).unwrap();
        (path.to_str().unwrap().to_owned(), bytes)
    };
    let (photo, photo_bytes) = file("beach.jpg", 2_500_000, 1);
    let (song, song_bytes) = file("song.mp3", 300_000, 2);
    let digest_of = |db: &str, content_type: &str| -> String {
        let out = peerlite()
            .args(["blob", "ls", "--db", db])
            .assert()
            .success();
        let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.ends_with(content_type))
            .unwrap_or_else(|| panic!("no {content_type} blob in {text}"));
        line.split('\t').next().unwrap().to_owned()
    };
    let blob_bytes = |db: &str, digest: &str| -> Vec<u8> {
        let out = peerlite()
            .args(["blob", "get", "--db", db, digest])
            .assert()
            .success();
        out.get_output().stdout.clone()
    };

    peerlite()
        .args(["put", "--db", &b, "beach", r#"{"title": "Beach"}"#])
        .args(["--attach", &format!("photo={photo}")])
        .assert()
        .success();
    peerlite()
        .args([
            "put",
            "--db",
            &a,
            "song",
            "{}",
            "--attach",
            &format!("audio={song}"),
        ])
        .assert()
        .success();
    let server = Server::start(&a, &["--user", "u:p"]);
    let sync = |extra: &[&str]| {
        peerlite()
            .args(["sync", &server.url, "--db", &b, "--user", "u:p"])
            .arg("--accept-self-signed")
            .args(extra)
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .success()
            .stderr("")
    };
    sync(&[]).stdout("pushed 1, pulled 1, conflicts resolved 0\n");
    server.stop();
    // Each side holds the other's file, byte for byte, under the document's reference.
    let photo_digest = digest_of(&a, "image/jpeg");
    assert_eq!(blob_bytes(&a, &photo_digest), photo_bytes);
    assert_eq!(blob_bytes(&b, &digest_of(&b, "audio/mpeg")), song_bytes);
    peerlite()
        .args(["get", "--db", &a, "beach"])
        .assert()
        .success()
        .stdout(predicate::str::contains(&photo_digest));

    // Errors: one line on stderr, a non-zero exit.
    let fails = |args: &[&str], says: &str| {
        peerlite()
            .args(args)
            .assert()
            .failure()
            .stdout("")
            .stderr(predicate::str::starts_with("error: ").and(predicate::str::contains(says)));
    };
    fails(
        &["blob", "get", "--db", &a, "sha256-nope"],
        "is not sha256- followed by",
    );
    let absent = "sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
    fails(
        &["blob", "get", "--db", &a, absent],
        "no blob sha256-LPJNul",
    );
    let missing = dir.path().join("missing.png");
    let missing = missing.to_str().unwrap();
    fails(&["blob", "put", "--db", &a, missing], "cannot read");
    let attach = format!("p={missing}");
    fails(
        &["put", "--db", &a, "x", "{}", "--attach", &attach],
        "cannot attach",
    );
    fails(
        &["put", "--db", &a, "x", "{}", "--attach", "nofile"],
        "expected NAME=FILE",
    );
    let nowhere = dir.path().join("nowhere");
    fails(
        &["blob", "ls", "--db", nowhere.to_str().unwrap()],
        "no database at",
    );
    fails(
        &["compact", "--db", nowhere.to_str().unwrap()],
        "no database at",
    );
    peerlite().args(["get", "--db", &a, "x"]).assert().failure();

    // A blob no document refers to any more is reclaimed by compact, once.
    peerlite()
        .args(["rm", "--db", &b, "beach"])
        .assert()
        .success();
    peerlite()
        .args(["compact", "--db", &b])
        .assert()
        .success()
        .stdout(predicates::str::starts_with(
            "forgot 0 tombstones older than the retention\nremoved 1 unreferenced blobs, reclaimed 2500000 bytes (1 blobs kept)\nrewrote the document store: ",
        ));
    peerlite()
        .args(["compact", "--db", &b])
        .assert()
        .success()
        .stdout(predicates::str::starts_with(
            "forgot 0 tombstones older than the retention\nremoved 0 unreferenced blobs, reclaimed 0 bytes (1 blobs kept)\n",
        ));
    // A file stored on its own prints the reference to put in a document.
    peerlite()
        .args([
            "blob",
            "put",
            "--db",
            &b,
            &song,
            "--content-type",
            "audio/x-test",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(r#""@type":"blob""#)
                .and(predicate::str::contains(r#""content_type":"audio/x-test""#)),
        );
}

#[test]
fn a_listener_refuses_blobs_over_its_max_blob_bytes_and_the_sync_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (db_arg(&dir.path().join("a")), db_arg(&dir.path().join("b")));
    for (doc, len) in [("big", 2_000_000usize), ("small", 1_000)] {
        let path = dir.path().join(format!("{doc}.bin"));
        std::fs::write(&path, vec![7u8; len]).unwrap();
        peerlite()
            .args(["put", "--db", &b, doc, "{}", "--attach"])
            .arg(format!("f={}", path.display()))
            .assert()
            .success();
    }
    let server = Server::start(&a, &["--user", "u:p", "--max-blob-bytes", "1000000"]);
    peerlite()
        .args(["sync", &server.url, "--db", &b, "--user", "u:p", "--push"])
        .arg("--accept-self-signed")
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .success()
        .stdout("pushed 1, pulled 0, conflicts resolved 0, 1 not replicated (see above)\n")
        .stderr(
            predicate::str::starts_with(
                "not pushed: big (_default._default): rejected (404): blob sha256-",
            )
            .and(predicate::str::contains(
                "has 2000000 bytes, over the receiver's limit of 1000000",
            )),
        );
    server.stop();
    // Nothing of the refused blob reached the listener.
    peerlite()
        .args(["blob", "ls", "--db", &a])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("\t1000\t").and(predicate::str::contains("2000000").not()),
        );
}

/// `peerlite serve` logging at `flags` (stderr to `log`, `env` set), on `db`, user
/// alice; returns the child and its URL.
fn serve_logging(
    db: &Path,
    log: &Path,
    flags: &[&str],
    env: Option<(&str, &str)>,
) -> (Child, String) {
    let mut args = vec!["--port", "0", "--user", "alice:Pw-Secret-123"];
    args.extend_from_slice(flags);
    common::serve_with(db, &args, |cmd| {
        cmd.env_remove("RUST_LOG")
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
    })
}

#[test]
fn logs_say_who_connected_and_why_a_login_failed_and_never_hold_a_secret() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let phone = dir.path().join("phone");
    peerlite()
        .args(["put", "--db"])
        .arg(&phone)
        .args(["note", r#"{"text": "Body-Text-Xyz"}"#])
        .assert()
        .success();
    let secrets = [
        "Pw-Secret-123".to_owned(),
        "Wrong-Pw-456".to_owned(),
        base64::engine::general_purpose::STANDARD.encode("alice:Pw-Secret-123"),
        base64::engine::general_purpose::STANDARD.encode("alice:Wrong-Pw-456"),
        "PRIVATE KEY".to_owned(),
    ];
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);
    let cases: [Case; 3] = [
        (&["-v", "--log-format", "json"], None),
        (&["-vvv"], None),
        (&[], Some(("RUST_LOG", "trace"))),
    ];
    for (i, (flags, env)) in cases.into_iter().enumerate() {
        let laptop = dir.path().join(format!("laptop-{i}"));
        let log = dir.path().join(format!("serve-{i}.log"));
        let (server, url) = serve_logging(&laptop, &log, flags, env);
        let sync = |password: &str| {
            let mut cmd = peerlite();
            cmd.args(["sync", "--db"])
                .arg(&phone)
                .arg(&url)
                .args([
                    "--user",
                    &format!("alice:{password}"),
                    "--accept-self-signed",
                ])
                .args(flags)
                .env_remove("RUST_LOG");
            if let Some((k, v)) = env {
                cmd.env(k, v);
            }
            cmd.output().unwrap()
        };
        let refused = sync("Wrong-Pw-456");
        assert!(!refused.status.success());
        let synced = sync("Pw-Secret-123");
        assert!(synced.status.success(), "{synced:?}");
        assert!(terminate(server));
        let served = std::fs::read_to_string(&log).unwrap();
        let replicated = String::from_utf8_lossy(&synced.stderr).into_owned()
            + &String::from_utf8_lossy(&refused.stderr);
        for secret in &secrets {
            assert!(
                !served.contains(secret.as_str()),
                "case {i}: {secret} in the listener's log"
            );
            assert!(
                !replicated.contains(secret.as_str()),
                "case {i}: {secret} in the replicator's log"
            );
        }
        for text in [&served, &replicated] {
            assert!(
                !text.to_ascii_lowercase().contains("authorization: "),
                "case {i}"
            );
        }
        if i < 2 {
            // Bodies only at the most verbose level (RUST_LOG=trace shows frames).
            assert!(!served.contains("Body-Text-Xyz") && !replicated.contains("Body-Text-Xyz"));
        }
        assert!(
            served.contains("authentication failed"),
            "case {i}: {served}"
        );
        assert!(served.contains("wrong user name or password"), "case {i}");
        assert!(served.contains("sync session ended"), "case {i}");
        assert!(
            replicated.contains("replication stopped"),
            "case {i}: {replicated}"
        );
        if i == 0 {
            // JSON lines with stable field names.
            let events: Vec<serde_json::Value> = served
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
            let failed = events
                .iter()
                .find(|e| e["message"] == "authentication failed")
                .unwrap();
            assert_eq!(failed["user"], "alice");
            assert!(failed["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
            let ended = events
                .iter()
                .find(|e| e["message"] == "sync session ended")
                .unwrap();
            assert_eq!(ended["user"], "alice");
            assert_eq!(ended["pushed"], 1);
            assert!(ended["elapsed_ms"].is_u64());
        }
    }
    // Without -v: warnings only — the refused login, not the sessions.
    let log = dir.path().join("serve-quiet.log");
    let (server, url) = serve_logging(&dir.path().join("laptop-q"), &log, &[], None);
    let out = peerlite()
        .args(["sync", "--db"])
        .arg(&phone)
        .arg(&url)
        .args(["--user", "alice:nope", "--accept-self-signed"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(terminate(server));
    let quiet = std::fs::read_to_string(&log).unwrap();
    assert!(quiet.contains("authentication failed"), "{quiet}");
    assert!(
        !quiet.contains("sync session") && !quiet.contains("listener started"),
        "{quiet}"
    );
}

#[test]
fn get_meta_info_and_changes_show_revisions_conflicts_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop").to_str().unwrap().to_owned();
    let phone = dir.path().join("phone").to_str().unwrap().to_owned();
    let run = |args: &[&str]| -> String {
        let out = peerlite()
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    };
    run(&["put", "--db", &laptop, "note", r#"{"v": 0}"#]);
    run(&["put", "--db", &laptop, "gone", "{}"]);
    run(&["rm", "--db", &laptop, "gone"]);
    let sync = |server: &Server| {
        run(&[
            "sync",
            &server.url,
            "--db",
            &phone,
            "--user",
            "u:p",
            "--accept-self-signed",
        ]);
    };
    let server = Server::start(&laptop, &["--user", "u:p"]);
    sync(&server);
    server.stop();
    // Both sides edit the same document, then sync: the conflict is resolved and its
    // losing branch stays as a deleted leaf.
    run(&["put", "--db", &laptop, "note", r#"{"v": "laptop"}"#]);
    run(&["put", "--db", &phone, "note", r#"{"v": "phone"}"#]);
    let server = Server::start(&laptop, &["--user", "u:p"]);
    sync(&server);
    server.stop();

    let meta: serde_json::Value =
        serde_json::from_str(&run(&["get", "--db", &phone, "note", "--meta", "--json"])).unwrap();
    assert_eq!(meta["deleted"], false);
    assert_eq!(meta["conflicted"], false);
    let rev = meta["rev"].as_str().unwrap();
    assert!(rev.starts_with("3-"), "the resolution: {meta}");
    let others = meta["other_leaves"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{meta}");
    assert_eq!(others[0]["deleted"], true);
    let history: Vec<&str> = meta["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(history.len(), 2, "{meta}");
    assert!(history[0].starts_with("2-") && history[1].starts_with("1-"));
    let text = run(&["get", "--db", &phone, "note", "--meta"]);
    assert!(text.contains(&format!("rev          {rev}")), "{text}");
    assert!(
        text.contains("(deleted)") && text.contains("history      3-"),
        "{text}"
    );
    // A deleted document can be looked into too.
    let gone: serde_json::Value =
        serde_json::from_str(&run(&["get", "--db", &phone, "gone", "--meta", "--json"])).unwrap();
    assert_eq!(gone["deleted"], true);

    let info: serde_json::Value =
        serde_json::from_str(&run(&["info", "--db", &phone, "--json"])).unwrap();
    let c = &info["collections"][0];
    assert_eq!(
        (c["documents"].as_u64(), c["tombstones"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(c["last_sequence"].as_u64().unwrap() >= 3);
    assert!(info["size_bytes"].as_u64().unwrap() > 0);
    assert!(run(&["info", "--db", &phone]).contains("1 documents, 1 deleted"));

    let changes: Vec<serde_json::Value> = run(&["changes", "--db", &phone, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(changes.len(), 2);
    assert!(changes[0]["seq"].as_u64() < changes[1]["seq"].as_u64());
    let last = changes[1]["seq"].as_u64().unwrap();
    assert_eq!(
        run(&["changes", "--db", &phone, "--since", &last.to_string()]),
        ""
    );
    let text = run(&["changes", "--db", &phone]);
    assert!(
        text.lines()
            .any(|l| l.ends_with(" deleted") && l.contains(" gone ")),
        "{text}"
    );

    // Wrong input: one line on stderr, exit 1 or 2.
    for (args, message) in [
        (
            vec!["get", "--db", &phone, "nope", "--meta"],
            "document \"nope\" not found",
        ),
        (
            vec!["info", "--db", "/nonexistent/db"],
            "no database at /nonexistent/db",
        ),
        (
            vec!["changes", "--db", &phone, "--collection", "no.such"],
            "no.such",
        ),
        (vec!["get", "--db", &phone, "note", "--json"], "--meta"),
    ] {
        peerlite()
            .args(&args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(message));
    }
}
