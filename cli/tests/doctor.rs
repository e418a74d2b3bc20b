//! The sync doctor's recordings, made by the real `peerlite` processes over real sockets.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use common::{Lines, serve_with, terminate};
use peerlite_proto::Input;
use peerlite_proto::record::{RecordingReader, Role, Step, StepKind};

mod common;

fn peerlite(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "peerlite {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn read(path: &Path) -> (Role, Vec<Step>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let (mut reader, header) = RecordingReader::new(&bytes).unwrap();
    let mut steps = Vec::new();
    while let Some(step) = reader.next_step().unwrap() {
        steps.push(step);
    }
    (header.role, steps, bytes)
}

/// `peerlite replay FILE` expected to fail: its exit code and stderr.
fn replay_error(file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .arg("replay")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Serves `DIR/laptop.db` and syncs `DIR/phone.db` with it once (push and pull, TLS,
/// Basic `user`), both sides recording with `extra` flags; checks the summary says one
/// document pushed and three pulled. Returns the phone's and the laptop's recordings.
fn recorded_sync(dir: &Path, user: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let laptop_rec = dir.join("laptop.rec");
    let phone_rec = dir.join("phone.rec");
    let serve_args = [&["--port", "0", "--user", user], extra, &["--record"]].concat();
    let (server, url) = serve_with(&dir.join("laptop.db"), &serve_args, |cmd| {
        cmd.arg(&laptop_rec).stderr(Stdio::null());
    });
    let phone = dir.join("phone.db");
    let sync_args = [
        &[
            "sync",
            &url,
            "--db",
            phone.to_str().unwrap(),
            "--user",
            user,
        ][..],
        &["--accept-self-signed"],
        extra,
        &["--record", phone_rec.to_str().unwrap()],
    ]
    .concat();
    let summary = peerlite(&sync_args);
    assert!(summary.starts_with("pushed 1, pulled 3"), "{summary}");
    assert!(terminate(server));
    (phone_rec, dir.join("laptop.rec.1"))
}

/// The last line of `peerlite replay`: its verdict.
fn verdict(out: &str) -> String {
    out.lines().last().unwrap_or_default().to_owned()
}

/// `peerlite replay ARGS… --json`, parsed.
fn replay_json(file: &Path, args: &[&str]) -> serde_json::Value {
    let out = peerlite(&[&["replay", file.to_str().unwrap(), "--json"], args].concat());
    serde_json::from_str(&out).unwrap()
}

fn count(steps: &[Step], f: impl Fn(&StepKind) -> bool) -> usize {
    steps.iter().filter(|s| f(&s.kind)).count()
}

#[test]
fn both_sides_of_a_real_sync_are_recorded_0600_with_every_frame_and_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    let phone = dir.path().join("phone.db");
    let (laptop_arg, phone_arg) = (laptop.to_str().unwrap(), phone.to_str().unwrap());
    for i in 0..3 {
        peerlite(&[
            "put",
            "--db",
            laptop_arg,
            &format!("l{i}"),
            r#"{"marker": "laptop-body-7f3a"}"#,
        ]);
    }
    peerlite(&[
        "put",
        "--db",
        phone_arg,
        "p0",
        r#"{"marker": "phone-body-91c2"}"#,
    ]);
    let (phone_rec, laptop_rec) = recorded_sync(dir.path(), "sync:s3cret-pw-0451", &[]);
    for file in [&phone_rec, &laptop_rec] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let (role, steps, phone_bytes) = read(&phone_rec);
    assert_eq!(role, Role::Active);
    assert_eq!(
        steps.first().map(|s| &s.kind),
        Some(&StepKind::Start { reset: false })
    );
    assert_eq!(
        count(&steps, |k| matches!(k, StepKind::Input(Input::Connected))),
        1
    );
    assert!(count(&steps, |k| matches!(k, StepKind::Input(Input::Frame(_)))) >= 3);
    assert!(count(&steps, |k| matches!(k, StepKind::Input(Input::Storage(..)))) >= 3);
    assert!(
        steps.windows(2).all(|w| w[0].at_nanos <= w[1].at_nanos),
        "times only grow"
    );

    let (role, steps, laptop_bytes) = read(&laptop_rec);
    assert_eq!(role, Role::Passive);
    assert!(count(&steps, |k| matches!(k, StepKind::Input(Input::Frame(_)))) >= 3);
    assert!(count(&steps, |k| matches!(k, StepKind::Input(Input::Storage(..)))) >= 3);

    // Replayed without network or database, both machines give the same outputs.
    for file in [&phone_rec, &laptop_rec] {
        let replayed = verdict(&peerlite(&["replay", file.to_str().unwrap()]));
        assert!(replayed.starts_with("outputs identical: "), "{replayed}");
        let outputs: u64 = replayed
            .split(", ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(outputs >= 5, "{replayed}");
    }
    // A recording cut short is refused by name…
    let whole = std::fs::read(&laptop_rec).unwrap();
    let cut = dir.path().join("cut.rec");
    std::fs::write(&cut, &whole[..whole.len() - 3]).unwrap();
    let (code, err) = replay_error(&cut);
    assert_eq!(code, 1);
    assert!(err.contains("cut off at byte"), "{err}");
    // …and one whose session did not happen as recorded (a frame taken out) diverges,
    // naming the step.
    let (mut reader, header) = RecordingReader::new(&whole).unwrap();
    let mut edited = peerlite_proto::record::encode_header(&header);
    let mut removed = false;
    while let Some(step) = reader.next_step().unwrap() {
        if !removed && matches!(step.kind, StepKind::Input(Input::Frame(_))) {
            removed = true;
            continue;
        }
        edited.extend(peerlite_proto::record::encode_step(&step));
    }
    let edited_file = dir.path().join("edited.rec");
    std::fs::write(&edited_file, &edited).unwrap();
    let (code, err) = replay_error(&edited_file);
    assert_eq!(code, 1);
    assert!(err.contains("outputs diverged at step "), "{err}");

    // What the machines saw: the documents (bodies travel in frames and storage replies)…
    assert!(
        contains(&phone_bytes, b"laptop-body-7f3a"),
        "the pulled bodies are in the replicator's recording"
    );
    assert!(
        contains(&laptop_bytes, b"phone-body-91c2"),
        "the pushed body is in the listener's recording"
    );
    // …and never the credentials, which only the HTTP upgrade carried.
    let basic = base64::engine::general_purpose::STANDARD.encode("sync:s3cret-pw-0451");
    for bytes in [&phone_bytes, &laptop_bytes] {
        assert!(!contains(bytes, b"s3cret-pw-0451"));
        assert!(!contains(bytes, basic.as_bytes()));
        assert!(!contains(&bytes.to_ascii_lowercase(), b"authorization"));
    }
}

#[test]
fn a_recording_that_cannot_be_created_is_refused_before_the_sync_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args(["sync", "wss://127.0.0.1:9/db", "--db"])
        .arg(dir.path().join("phone.db"))
        .args(["--record"])
        .arg(dir.path().join("no/such/dir/phone.rec"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot record to") && err.contains("no/such/dir/phone.rec"),
        "{err}"
    );
}

#[test]
fn a_continuous_session_with_a_conflict_and_a_live_change_replays_identically_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    let phone = dir.path().join("phone.db");
    let (laptop_arg, phone_arg) = (laptop.to_str().unwrap(), phone.to_str().unwrap());
    // The same document written on both sides: a conflict the replicator resolves.
    peerlite(&["put", "--db", laptop_arg, "shared", r#"{"side": "laptop"}"#]);
    peerlite(&["put", "--db", phone_arg, "shared", r#"{"side": "phone"}"#]);
    let laptop_rec = dir.path().join("laptop.rec");
    let phone_rec = dir.path().join("phone.rec");
    let (server, url) = serve_with(
        &laptop,
        &["--port", "0", "--user", "sync:pw", "--record"],
        |cmd| {
            cmd.arg(&laptop_rec).stderr(Stdio::null());
        },
    );
    let mut sync = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args(["sync", &url, "--db", phone_arg, "--user", "sync:pw"])
        .args(["--accept-self-signed", "--continuous", "--record"])
        .arg(&phone_rec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Lines::of(sync.stdout.take().unwrap());
    lines.until("idle");
    // Quiet for longer than the doctor's threshold, then a change made on the laptop
    // while the phone is connected.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    peerlite(&["put", "--db", laptop_arg, "live", r#"{"n": 1}"#]);
    lines.until("pulled 1");
    assert!(terminate(sync));
    assert!(terminate(server));

    let laptop_rec = dir.path().join("laptop.rec.1");
    for file in [&phone_rec, &laptop_rec] {
        let text = peerlite(&["replay", file.to_str().unwrap()]);
        assert!(verdict(&text).starts_with("outputs identical: "), "{text}");
        assert!(text.contains("\ntimeline\n"), "{text}");
    }
    // The replicator's side: connected, handshake, a transfer, idle, the live change's
    // transfer, and its stop.
    let phone = replay_json(&phone_rec, &["--doc", "live"]);
    assert_eq!(phone["outputs"]["identical"], true);
    let d = &phone["diagnosis"];
    let phases: Vec<&str> = d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["connect", "handshake", "checkpoint", "transfer", "idle"] {
        assert!(phases.contains(&name), "{name} in {phases:?}");
    }
    let idle = phases.iter().position(|p| *p == "idle").unwrap();
    assert!(
        phases[idle..].contains(&"transfer"),
        "a transfer after the idle time: {phases:?}"
    );
    assert_eq!(d["ended"], "stopped by the application", "{d}");
    assert_eq!(d["stalls"], serde_json::json!([]), "{d}");
    // At most a checkpoint save the stop did not wait for: no request, no document.
    let waiting = d["waiting"].as_array().unwrap();
    assert!(waiting.iter().all(|w| w["kind"] == "storage"), "{d}");
    // The live document, step by step.
    let story: Vec<&str> = d["doc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["what"].as_str().unwrap())
        .collect();
    let expected = [
        "the peer announced",
        "this side wants it",
        "the peer sent",
        "InsertRevisions",
        "stored (current",
        "pull of",
    ];
    let mut at = 0;
    for want in expected {
        let found = story[at..].iter().position(|s| s.contains(want));
        assert!(found.is_some(), "{want:?} after step {at} of {story:#?}");
        at += found.unwrap() + 1;
    }
    // The conflict, seen from the listener: the phone's first revision refused, its
    // resolution stored.
    let laptop = replay_json(&laptop_rec, &["--doc", "shared"]);
    let story = laptop["diagnosis"]["doc"].to_string();
    let refused = story
        .find("not stored: conflicts with the current revision 1-")
        .unwrap_or_else(|| panic!("{story}"));
    let resolved = story.rfind("stored (current ").unwrap();
    assert!(
        refused < resolved,
        "the resolution is stored after: {story}"
    );
    assert!(story.contains("in Revs #"), "{story}");
}

#[test]
fn a_listener_that_stops_answering_mid_pull_is_diagnosed_with_what_the_replicator_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    let docs = dir.path().join("docs.jsonl");
    let lines: String = (0..4000)
        .map(|i| {
            format!(
                "{{\"_id\": \"d{i:05}\", \"text\": \"{}\"}}\n",
                "x".repeat(200)
            )
        })
        .collect();
    std::fs::write(&docs, lines).unwrap();
    peerlite(&[
        "import",
        "--db",
        laptop.to_str().unwrap(),
        docs.to_str().unwrap(),
    ]);
    let (mut server, url) = serve_with(&laptop, &["--port", "0", "--user", "sync:pw"], |cmd| {
        cmd.stderr(Stdio::null());
    });
    let rec = dir.path().join("phone.rec");
    let mut sync = Command::new(env!("CARGO_BIN_EXE_peerlite"))
        .args(["sync", &url, "--db"])
        .arg(dir.path().join("phone.db"))
        .args(["--pull", "--user", "sync:pw", "--accept-self-signed"])
        .args(["--heartbeat", "1", "--record"])
        .arg(&rec)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errors = Lines::of(sync.stderr.take().unwrap());
    // Once documents are arriving (the recording is flushed before every wait), the
    // listener freezes: its connection stays open, nothing answers.
    let started = std::time::Instant::now();
    while std::fs::metadata(&rec).map_or(0, |m| m.len()) < 60_000 {
        assert!(started.elapsed().as_secs() < 30, "the pull never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stop = |signal: &str, pid: u32| {
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
    };
    stop("-STOP", server.id());
    // The replicator notices within two heartbeats, and says so.
    let said = errors.until("stopped answering");
    assert!(said.last().unwrap().contains("retrying"), "{said:?}");
    server.kill().unwrap();
    server.wait().unwrap();
    stop("-TERM", sync.id());
    sync.wait().unwrap();

    // The doctor names what the replicator waited for: the revisions it asked for in
    // answer to one of the listener's Changes, and the answer to its ping.
    let report = replay_json(&rec, &[]);
    assert_eq!(report["outputs"]["identical"], true, "{report}");
    let stall = &report["diagnosis"]["stalls"][0];
    let waited = stall["waiting_for"].as_array().unwrap();
    let revisions = waited
        .iter()
        .find(|w| w["kind"] == "revisions")
        .unwrap_or_else(|| panic!("{stall}"));
    assert_eq!(revisions["request"], "Changes");
    assert!(revisions["documents"].as_u64().unwrap() > 0);
    assert!(
        waited
            .iter()
            .any(|w| w["kind"] == "answer" && w["request"] == "Ping"),
        "{stall}"
    );
    assert!(
        stall["ended_by"]
            .as_str()
            .unwrap()
            .contains("stopped answering"),
        "{stall}"
    );
    let seconds = |v: &serde_json::Value| v.as_u64().unwrap() as f64 / 1e9;
    let length = seconds(&stall["to_nanos"]) - seconds(&stall["from_nanos"]);
    assert!((1.0..3.5).contains(&length), "{length} s: {stall}");
    // In words, first thing after the summary.
    let text = peerlite(&["replay", rec.to_str().unwrap()]);
    let summary = text.lines().nth(3).unwrap();
    assert!(
        summary.contains("stall") && summary.contains("waiting for the revisions of"),
        "{text}"
    );
    assert!(
        text.contains("it wanted, the oldest asked for in its answer to the peer's Changes #"),
        "{text}"
    );
}

#[test]
fn a_redacted_recording_holds_no_body_and_no_blob_byte_and_replays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    let phone = dir.path().join("phone.db");
    let (laptop_arg, phone_arg) = (laptop.to_str().unwrap(), phone.to_str().unwrap());
    for i in 0..3 {
        peerlite(&[
            "put",
            "--db",
            laptop_arg,
            &format!("l{i}"),
            &format!(
                r#"{{"secret": "laptop-body-7f3a", "salary": {}, "ratio": 0.625}}"#,
                70_000 + i
            ),
        ]);
    }
    // A blob whose bytes are easy to look for.
    let photo = dir.path().join("photo.bin");
    let pattern: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&photo, &pattern).unwrap();
    peerlite(&[
        "put",
        "--db",
        phone_arg,
        "album",
        r#"{"title": "phone-secret-title"}"#,
        "--attach",
        &format!("photo={}", photo.display()),
    ]);
    let (phone_rec, laptop_rec) = recorded_sync(dir.path(), "sync:pw", &["--record-redact"]);

    for file in [&phone_rec, &laptop_rec] {
        let (_, steps, bytes) = read(file);
        assert!(count(&steps, |k| matches!(k, StepKind::Input(Input::Frame(_)))) >= 3);
        for secret in [
            &b"laptop-body-7f3a"[..],
            b"phone-secret-title",
            &pattern[1000..1032],
        ] {
            assert!(
                !contains(&bytes, secret),
                "{} holds {secret:?}",
                file.display()
            );
        }
        // The keys, the blob reference and the sizes stay: the session replays the same.
        assert!(contains(&bytes, b"salary") || contains(&bytes, b"title"));
        let text = peerlite(&["replay", file.to_str().unwrap()]);
        assert!(verdict(&text).starts_with("outputs identical: "), "{text}");
        let json = replay_json(file, &["--doc", "album"]);
        assert!(
            json["diagnosis"]["doc"].to_string().contains("stored"),
            "{json}"
        );
    }
    // The blob arrived whole on the laptop all the same.
    let got = peerlite(&["get", "--db", laptop_arg, "album"]);
    assert!(got.contains("\"length\":200000"), "{got}");
}
