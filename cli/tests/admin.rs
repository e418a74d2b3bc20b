//! A served database, operated while `peerlite serve` holds it: the commands through its
//! admin socket, `curl --unix-socket`, metrics, the TCP admin address, and what the
//! admin interface refuses.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Lines, serve_with, terminate};

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
        // Several at once, all or none: an unknown ID purges nothing.
        vec!["purge", "--db", DB, "i1", "no-such-doc", "i2", "nor-this"],
        vec!["ls", "--db", DB],
        vec!["purge", "--db", DB, "i1", "i2", "i1"],
        vec!["ls", "--db", DB],
        vec!["purge", "--db", DB],
        vec!["import", "--db", DB, lines],
        vec!["changes", "--db", DB],
        vec!["changes", "--db", DB, "--since", "2", "--json"],
        vec!["collections", "--db", DB],
        vec!["put", "--db", DB, "t1", "{}", "--collection", "app.trash"],
        vec!["delete-collection", "--db", DB, "app.trash"],
        vec!["delete-collection", "--db", DB, "app.trash"],
        vec!["delete-collection", "--db", DB, "_default._default"],
        vec!["delete-collection", "--db", DB, "no such"],
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
        vec!["retention", "--db", DB],
        vec!["retention", "--db", DB, "--keep", "0s"],
        vec!["retention", "--db", DB, "--keep", "a while"],
        vec!["changes", "--db", DB, "--since", "1"],
        vec!["retention", "--db", DB, "--forever"],
        vec!["compact", "--db", DB],
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

#[test]
fn a_change_made_through_the_server_reaches_a_continuous_phone_and_changes_follow_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    let phone = dir.path().join("phone.db");
    let laptop_arg = laptop.to_str().unwrap();
    ok(&["put", "--db", laptop_arg, "before", r#"{"n": 0}"#]);
    let (server, url) = serve(&laptop, &[]);
    let mut follow = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args(["changes", "--db", laptop_arg, "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let followed = Lines::of(follow.stdout.take().unwrap());
    // What was there first.
    let first = json(&followed.next("the first change"));
    assert_eq!(
        (first["seq"].as_u64(), first["id"].as_str()),
        (Some(1), Some("before"))
    );
    let mut phone_sync = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args([
            "sync",
            &url,
            "--db",
            phone.to_str().unwrap(),
            "--user",
            "sync:pw",
        ])
        .args(["--accept-self-signed", "--continuous"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let synced = Lines::of(phone_sync.stdout.take().unwrap());
    synced.until("pulled 1");
    synced.until("idle");

    // A change through the server, and a deletion: the phone pulls both, the follower
    // prints both, as they happen.
    ok(&["put", "--db", laptop_arg, "live", r#"{"n": 1}"#]);
    let live = json(&followed.next("the put"));
    assert_eq!(
        (live["id"].as_str(), live["deleted"].as_bool()),
        (Some("live"), Some(false))
    );
    synced.until("pulled 1");
    ok(&["rm", "--db", laptop_arg, "before"]);
    let gone = json(&followed.next("the deletion"));
    assert_eq!(
        (gone["id"].as_str(), gone["deleted"].as_bool()),
        (Some("before"), Some(true))
    );
    synced.until("pulled 1");

    // While the phone is connected, the server lists it with what it pulled.
    let info = json(&ok(&["info", "--db", laptop_arg, "--json"]));
    let peers = info["server"]["connections"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{info}");
    assert_eq!(peers[0]["user"], "sync");
    assert!(peers[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        peers[0]["totals"]["documents_sent"].as_u64().unwrap() >= 3,
        "{info}"
    );
    assert!(
        peers[0]["totals"]["bytes_sent"].as_u64().unwrap() > 0,
        "{info}"
    );
    let text = ok(&["info", "--db", laptop_arg]);
    assert!(
        text.contains("peer        127.0.0.1:") && text.contains(" sync since "),
        "{text}"
    );

    // Stopping the phone's sync cleanly, then the server: the follower is told.
    assert!(terminate(phone_sync));
    assert_eq!(ok(&["ls", "--db", phone.to_str().unwrap()]), "live\n");
    assert!(terminate(server));
    let status = follow.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a follower whose server stopped fails"
    );

    // With no server, nothing else can change the database: --follow says so.
    let (code, _, err) = run(&["changes", "--db", phone.to_str().unwrap(), "--follow"]);
    assert_eq!(code, 1);
    assert!(err.contains("peerlite serve"), "{err}");
}

#[test]
fn curl_edits_and_inspects_a_served_database_and_bad_requests_get_a_json_4xx_that_changes_nothing()
{
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let db_arg = db.to_str().unwrap();
    ok(&["put", "--db", db_arg, "seed", r#"{"v": 0}"#]);
    let (server, url) = serve(&db, &[]);
    // Owner only: the socket 0600 inside the 0700 directory.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db.join("admin.sock")), 0o600);
    assert_eq!(mode(&db), 0o700);

    let base = "http://peerlite";
    let docs = format!("{base}/c/_default._default/docs");
    let (status, body) = curl(
        &db,
        &[
            "-X",
            "PUT",
            "-d",
            r#"{"from": "curl"}"#,
            &format!("{docs}/c1"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let written = json(&body);
    assert!(written["rev"].as_str().unwrap().starts_with("1-"));
    assert_eq!(ok(&["get", "--db", db_arg, "c1"]), "{\"from\":\"curl\"}\n");
    let (status, body) = curl(&db, &[&format!("{docs}/c1")]);
    assert_eq!(
        (status, json(&body)),
        (200, serde_json::json!({"from": "curl"}))
    );
    let (_, body) = curl(&db, &[&format!("{docs}/c1?meta=true")]);
    assert_eq!(json(&body)["sequence"], 2);
    let (_, body) = curl(&db, &[&format!("{docs}?limit=1")]);
    let page = json(&body);
    assert_eq!(
        (page["documents"][0]["id"].as_str(), page["next"].as_str()),
        (Some("c1"), Some("c1"))
    );
    let (_, body) = curl(
        &db,
        &[&format!("{base}/c/_default._default/changes?since=1")],
    );
    assert_eq!(json(&body).as_array().unwrap().len(), 1);
    let (_, body) = curl(&db, &[&format!("{base}/collections")]);
    assert_eq!(json(&body), serde_json::json!(["_default._default"]));
    let (_, body) = curl(&db, &[&format!("{base}/identities")]);
    assert_eq!(json(&body)[0]["label"], "peerlite");
    let (status, body) = curl(&db, &[&format!("{base}/identities/peerlite/certificate")]);
    assert!(
        status == 200 && body.starts_with("-----BEGIN CERTIFICATE-----"),
        "{body}"
    );
    let (status, body) = curl(&db, &["-X", "DELETE", &format!("{docs}/c1")]);
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["rev"].as_str().unwrap().starts_with("2-"));

    // A sync, then the status and the metrics count it.
    let phone = dir.path().join("phone.db");
    ok(&[
        "sync",
        &url,
        "--db",
        phone.to_str().unwrap(),
        "--user",
        "sync:pw",
        "--accept-self-signed",
    ]);
    let (status, body) = curl(&db, &[&format!("{base}/status")]);
    assert_eq!(status, 200);
    let s = json(&body);
    assert_eq!(s["totals"]["documents_sent"], 2, "{s}");
    assert!(s["totals"]["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(s["pid"], server.id());
    let (status, metrics) = curl(&db, &["-i", &format!("{base}/metrics")]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("application/openmetrics-text"),
        "{metrics}"
    );
    for line in [
        "peerlite_documents_sent_total 2",
        "peerlite_sessions_total 1",
        "peerlite_connections 0",
        "peerlite_last_sequence{collection=\"_default._default\"} 3",
        "peerlite_blobs 0",
        "# EOF",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE peerlite_storage_seconds counter"));

    // Bad requests: a 4xx with a JSON error naming the problem, and nothing changed.
    let before = ok(&["changes", "--db", db_arg, "--json"]);
    let bad: &[(&[&str], u16, &str)] = &[
        (
            &["-X", "PUT", "-d", "{not json", "DOCS/x"],
            400,
            "invalid JSON body",
        ),
        (&["-X", "PUT", "-d", "[1, 2]", "DOCS/x"], 400, "object"),
        (
            &["-X", "PUT", "-d", "{}", "BASE/c/no..such/docs/x"],
            400,
            "invalid collection",
        ),
        (
            &["-X", "PUT", "-d", "{}", "DOCS/tab%09here"],
            400,
            "invalid document ID",
        ),
        (
            &["-X", "PUT", "-d", "{}", "DOCS/x?expires=soon"],
            400,
            "RFC 3339",
        ),
        (
            &[
                "-X",
                "PUT",
                "-d",
                "{}",
                "DOCS/x?expires=2020-01-01T00:00:00Z",
            ],
            400,
            "is in the past",
        ),
        (
            &["-X", "PUT", "-d", "{\"keep\": \"ages\"}", "BASE/retention"],
            400,
            "30d, 12h",
        ),
        (
            &["-X", "PUT", "-d", "{}", "BASE/retention"],
            400,
            "expected",
        ),
        (&["DOCS/missing"], 404, "not found"),
        (
            &["BASE/c/app.none/docs/x"],
            404,
            "has no collection app.none",
        ),
        (&["-X", "DELETE", "DOCS/missing"], 404, "not found"),
        (&["DOCS?limit=many"], 400, "invalid query"),
        (
            &["BASE/c/_default._default/changes?feed=sideways"],
            400,
            "unknown feed",
        ),
        (
            &["-X", "POST", "-d", "[{\"no\": \"id\"}]", "DOCS"],
            400,
            "document 1",
        ),
        (&["-X", "POST", "DOCS/x"], 405, "does not take that method"),
        (&["BASE/nowhere"], 404, "no such admin endpoint"),
        (&["BASE/blobs/sha256-zz"], 400, "invalid blob digest"),
        (
            &[
                "-X",
                "POST",
                "-d",
                "{\"common_name\": \"\"}",
                "BASE/identities/x",
            ],
            400,
            "common name",
        ),
        (
            &["-X", "POST", "-d", "{}", "BASE/identities/peerlite"],
            400,
            "invalid JSON body",
        ),
        (
            &["BASE/identities/nope/certificate"],
            404,
            "no identity labelled",
        ),
    ];
    for (args, want, says) in bad {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("DOCS", &docs).replace("BASE", base))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, body) = curl(&db, &args);
        assert_eq!(status, *want, "{args:?}: {body}");
        let error = json(&body)["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned();
        assert!(error.contains(says), "{args:?}: {error}");
    }
    assert_eq!(ok(&["changes", "--db", db_arg, "--json"]), before);

    // An upload that breaks off stores nothing (no blob of what did arrive).
    let broken = Command::new("python3")
        .arg("-c")
        .arg(
            "import socket, sys\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.connect(sys.argv[1])\n\
             s.sendall(b'PUT /blobs HTTP/1.1\\r\\nHost: p\\r\\nContent-Length: 1000000\\r\\n\\r\\n' + b'x' * 100000)\n\
             s.close()\n",
        )
        .arg(db.join("admin.sock"))
        .status()
        .unwrap();
    assert!(broken.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(db.join("blobs/.staging")).map_or(0, Iterator::count) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken upload's staging file stayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ok(&["blob", "ls", "--db", db_arg]), "");

    // The sync port is not the admin interface.
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    let out = Command::new("curl")
        .args([
            "-sk",
            "-w",
            "\n%{http_code}",
            &format!("https://127.0.0.1:{port}/status"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // Not a WebSocket upgrade to /db: turned away without an answer.
    assert!(!text.ends_with("\n200") && !text.contains("pid"), "{text}");
    assert!(terminate(server));
}

#[test]
fn the_tcp_admin_address_needs_its_user_and_locks_out_guessing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    // Without a user, serve refuses to start and says what is missing.
    let db_arg = db.to_str().unwrap();
    let refused = |extra: &[&str]| {
        let mut args = vec!["serve", "--db", db_arg, "--user", "s:p"];
        args.extend_from_slice(&["--admin-address", "127.0.0.1:0"]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, _, err) = refused(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--admin-user"), "{err}");
    assert!(!db.exists(), "a refused start creates no database");
    let (code, _, err) = refused(&["--admin-user", "ops"]);
    assert_eq!(code, 1);
    assert!(err.contains("PEERLITE_ADMIN_PASSWORD"), "{err}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args([
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .args([
            "--user",
            "sync:pw",
            "--admin-address",
            "127.0.0.1:0",
            "--admin-user",
            "ops",
        ])
        .args(["--max-auth-failures", "3", "-v"])
        .env("PEERLITE_ADMIN_PASSWORD", "hunter2-admin")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(child.stdout.take().unwrap());
    let admin = lines
        .until("admin on http://")
        .pop()
        .unwrap()
        .trim_start_matches("admin on ")
        .to_owned();
    let get = |user: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code}", "-i"]);
        if let Some(u) = user {
            cmd.args(["-u", u]);
        }
        let out = cmd.arg(format!("{admin}/status")).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.parse::<u16>().unwrap(), body.to_owned())
    };
    let (status, body) = get(None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("www-authenticate: Basic") && body.contains("\"error\""),
        "{body}"
    );
    let (status, body) = get(Some("ops:hunter2-admin"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"urls\""));
    // The sync user is not the admin user.
    assert_eq!(get(Some("sync:pw")).0, 401);
    assert_eq!(get(Some("ops:guess-42")).0, 401);
    assert_eq!(get(Some("ops:guess-42")).0, 401);
    let (status, body) = get(Some("ops:guess-42"));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("retry-after:"), "{body}");
    // Locked out: even the right password waits.
    assert_eq!(get(Some("ops:hunter2-admin")).0, 429);
    let stderr = child.stderr.take().unwrap();
    assert!(terminate(child));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut log).unwrap();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(
        !log.contains("hunter2") && !log.contains("guess-42"),
        "a password in the log:\n{log}"
    );
}

#[test]
fn only_the_owner_gets_through_the_admin_socket() {
    // Needs a second user: root runs the server, `nobody` tries.
    let me = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    ok(&["put", "--db", db.to_str().unwrap(), "seed", "{}"]);
    let (server, _) = serve(&db, &[]);
    // Even with the file modes opened up, the peer's credentials are checked.
    let open = std::fs::Permissions::from_mode(0o777);
    for p in [dir.path(), db.as_path(), db.join("admin.sock").as_path()] {
        std::fs::set_permissions(p, open.clone()).unwrap();
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--unix-socket",
        ])
        .arg(db.join("admin.sock"))
        .arg("http://peerlite/status")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !stdout.contains("urls"),
        "another user got in: {stdout}"
    );
    // The owner still does.
    let (status, _) = curl(&db, &["http://peerlite/status"]);
    assert_eq!(status, 200);
    assert!(terminate(server));
}

#[test]
fn documents_expire_when_due_served_or_not_and_expiration_is_not_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    let phone = dir.path().join("phone.db");
    let (l, p) = (laptop.to_str().unwrap(), phone.to_str().unwrap());
    let wait = |ms| std::thread::sleep(Duration::from_millis(ms));

    // Not served: a command that opens the database purges what is due first.
    ok(&["put", "--db", l, "a", r#"{"n": 1}"#, "--expires-in", "1s"]);
    ok(&["put", "--db", l, "b", r#"{"n": 2}"#]);
    ok(&["expire", "--db", l, "b", "--in", "1h"]);
    assert!(ok(&["expire", "--db", l, "b"]).starts_with("b expires at 20"));
    assert_eq!(
        ok(&["expire", "--db", l, "b", "--never"]),
        "b never expires\n"
    );
    // Refused, changing nothing: a time in the past, a bad time or duration, no document.
    let (code, _, err) = run(&["expire", "--db", l, "b", "--at", "2020-01-01T00:00:00Z"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is in the past") && err.contains("purge"),
        "{err}"
    );
    let (code, _, err) = run(&["expire", "--db", l, "b", "--at", "tomorrow"]);
    assert!(code == 1 && err.contains("RFC 3339"), "{err}");
    let (code, _, err) = run(&["expire", "--db", l, "b", "--in", "soon"]);
    assert!(code == 2 && err.contains("90s, 30m, 2h or 7d"), "{err}");
    let (code, _, err) = run(&["expire", "--db", l, "ghost", "--in", "1h"]);
    assert!(code == 1 && err.contains("not found"), "{err}");
    let (code, _, err) = run(&["expire", "--db", l, "b", "--in", "1h", "--never"]);
    assert_eq!(code, 2, "{err}");
    wait(1100);
    assert_eq!(ok(&["ls", "--db", l]), "b\n");
    let changes = ok(&["changes", "--db", l, "--json"]);
    assert_eq!(changes.lines().count(), 1, "no tombstone: {changes}");

    // Expiration is local: the phone pulls d, which does not expire there.
    ok(&["put", "--db", l, "d", r#"{"n": 4}"#, "--expires-in", "3s"]);
    let (server, url) = serve(&laptop, &[]);
    let pull = |url: &str| {
        ok(&[
            "sync",
            url,
            "--db",
            p,
            "--pull",
            "--user",
            "sync:pw",
            "--accept-self-signed",
        ])
    };
    assert!(pull(&url).starts_with("pushed 0, pulled 2"));
    assert_eq!(ok(&["expire", "--db", p, "d"]), "d never expires\n");
    // Served: the server purges it when due, and a put through it expires as well.
    ok(&["put", "--db", l, "e", r#"{"n": 5}"#, "--expires-in", "1s"]);
    assert!(ok(&["expire", "--db", l, "e"]).starts_with("e expires at 20"));
    assert_eq!(ok(&["ls", "--db", l]), "b\nd\ne\n");
    wait(3300);
    assert_eq!(
        ok(&["ls", "--db", l]),
        "b\n",
        "purged by the running server"
    );
    // Nothing was replicated for them: the phone keeps d, and pulls nothing.
    assert!(pull(&url).starts_with("pushed 0, pulled 0"));
    assert!(terminate(server));
    assert_eq!(ok(&["ls", "--db", p]), "b\nd\n");
}

#[test]
fn a_phone_away_longer_than_the_retention_is_refused_and_recovers_into_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    let phone = dir.path().join("phone.db");
    let fresh = dir.path().join("phone-new.db");
    let (l, p, f) = (
        laptop.to_str().unwrap(),
        phone.to_str().unwrap(),
        fresh.to_str().unwrap(),
    );
    ok(&["put", "--db", l, "a", r#"{"n": 1}"#]);
    ok(&["put", "--db", l, "b", r#"{"n": 2}"#]);
    // Shown and set; bad input changes nothing.
    assert_eq!(
        ok(&["retention", "--db", l]),
        "tombstones are kept 30days\n"
    );
    let (code, _, err) = run(&["retention", "--db", l, "--keep", "a while"]);
    assert!(
        code == 1 && err.contains("30d, 12h, 0s or forever"),
        "{err}"
    );
    let (code, _, err) = run(&["retention", "--db", l, "--keep", "1d", "--forever"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        ok(&["retention", "--db", l, "--forever"]),
        "tombstones are kept forever\n"
    );
    let (server, url) = serve(&laptop, &[]);
    let sync = |db: &str, how: &str| {
        run(&[
            "sync",
            &url,
            "--db",
            db,
            how,
            "--user",
            "sync:pw",
            "--accept-self-signed",
        ])
    };
    let (code, out, err) = sync(p, "--pull");
    assert!(code == 0 && out.starts_with("pushed 0, pulled 2"), "{err}");

    // While the phone is away, the laptop deletes a and forgets it at once (through the
    // running server: retention and compact go through its admin socket).
    ok(&["rm", "--db", l, "a"]);
    assert_eq!(
        ok(&["retention", "--db", l, "--keep", "0s"]),
        "tombstones are kept 0s\n_default._default: tombstones up to sequence 3 forgotten (a peer that last pulled before it is refused)\n"
    );
    assert!(ok(&["compact", "--db", l]).starts_with("forgot 0 tombstones"));
    let (_, info) = curl(&laptop, &["http://admin/retention"]);
    assert_eq!(json(&info)["forgotten_through"]["_default._default"], 3);
    // The phone changed b meanwhile.
    ok(&["put", "--db", p, "b", r#"{"n": 3}"#]);

    // Coming back, it is refused: the reason and the way out, nothing pushed, no retry.
    let (code, _, err) = run(&[
        "sync",
        &url,
        "--db",
        p,
        "--user",
        "sync:pw",
        "--accept-self-signed",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("forgotten deletions"), "{err}");
    assert!(err.contains("new database"), "{err}");
    assert!(err.contains("up to sequence 3"), "{err}");
    assert!(!err.contains("retry"), "{err}");
    assert_eq!(
        ok(&["get", "--db", l, "b"]),
        "{\"n\":2}\n",
        "nothing was pushed"
    );
    assert_eq!(ok(&["ls", "--db", l]), "b\n", "a did not come back");
    // The recovery: a new database pulled from the laptop; the old one keeps b to export.
    let (code, out, err) = sync(f, "--pull");
    assert!(code == 0 && out.starts_with("pushed 0, pulled 1"), "{err}");
    assert_eq!(ok(&["ls", "--db", f]), "b\n");
    assert!(terminate(server));
    assert_eq!(ok(&["get", "--db", p, "b"]), "{\"n\":3}\n");
}
