//! The sync doctor's recordings, made by the real `peerlite` processes over real sockets.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use common::{serve_with, terminate};
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
    let laptop_rec = dir.path().join("laptop.rec");
    let phone_rec = dir.path().join("phone.rec");
    let (server, url) = serve_with(
        &laptop,
        &[
            "--port",
            "0",
            "--user",
            "sync:s3cret-pw-0451",
            "--record",
            laptop_rec.to_str().unwrap(),
        ],
        |cmd| {
            cmd.stderr(Stdio::null());
        },
    );
    let summary = peerlite(&[
        "sync",
        &url,
        "--db",
        phone_arg,
        "--user",
        "sync:s3cret-pw-0451",
        "--accept-self-signed",
        "--record",
        phone_rec.to_str().unwrap(),
    ]);
    assert!(summary.starts_with("pushed 1, pulled 3"), "{summary}");
    assert!(terminate(server));

    let laptop_rec = dir.path().join("laptop.rec.1");
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
        let replayed = peerlite(&["replay", file.to_str().unwrap()]);
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
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
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
