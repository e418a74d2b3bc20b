//! Writes the fuzzers' seed corpora from real protocol traffic.
//!
//! ```text
//! cargo run -p peerlite-sim --example record_corpus   # writes fuzz/corpus/<target>/
//! ```

use std::path::Path;

use peerlite_proto::Body;
use peerlite_proto::record::{RecordingHeader, Role, Step, StepKind};
use peerlite_sim::Rng;
use peerlite_sim::fuzzing::{chunks, record_session};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let (from_active, from_passive) = record_session();
    for (i, f) in from_active.iter().chain(&from_passive).enumerate() {
        write(&root.join("frame_decode"), &format!("session-{i:03}"), f)?;
    }
    // The passive target performs the handshake itself: skip the active side's Hello.
    write(
        &root.join("passive_frames"),
        "session",
        &chunks(&from_active[1..]),
    )?;
    // The active target's first byte is its storage fault rate (out of 256).
    for rate in [0u8, 16, 96, 255] {
        let mut input = vec![rate];
        input.extend(chunks(&from_passive));
        write(
            &root.join("active_frames"),
            &format!("session-faults-{rate:03}"),
            &input,
        )?;
    }
    for (i, json) in [
        r#"{}"#,
        r#"{"a": 1, "b": [true, null, 1.5, -7], "c": {"d": "text"}}"#,
        r#"{"big": 18446744073709551615, "neg": -9223372036854775808, "f": 0.1}"#,
    ]
    .iter()
    .enumerate()
    {
        let body = Body::from_json_str(json).map_err(std::io::Error::other)?;
        write(
            &root.join("body_decode"),
            &format!("json-{i}"),
            body.as_bytes(),
        )?;
    }
    // A recording of the passive side's inputs in that session.
    let mut recording = peerlite_proto::record::encode_header(&RecordingHeader::new(
        Role::Passive,
        1_764_700_000_000,
    ));
    for (i, frame) in from_active.iter().enumerate() {
        recording.extend(peerlite_proto::record::encode_step(&Step {
            at_nanos: i as u64 * 100,
            kind: StepKind::Input(peerlite_proto::Input::Frame(frame.clone())),
        }));
    }
    recording.extend(peerlite_proto::record::encode_step(&Step {
        at_nanos: 1_000_000,
        kind: StepKind::Timeout,
    }));
    write(&root.join("recording_read"), "session", &recording)?;
    let mut rng = Rng::new(7);
    for target in ["revtree_ops", "convergence"] {
        for i in 0..4 {
            let len = 16 + rng.below(200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            write(&root.join(target), &format!("random-{i}"), &bytes)?;
        }
    }
    println!("wrote corpora under {}", root.display());
    Ok(())
}
