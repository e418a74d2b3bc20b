//! Runs every committed fuzz corpus file and crash reproducer through the fuzz target
//! bodies, on the stable toolchain, so CI checks them without cargo-fuzz.
//!
//! Corpora live in `fuzz/corpus/<target>/`; reproducers of fixed crashes in
//! `fuzz/regressions/<target>/`.

use std::path::Path;

use peerlite_sim::fuzzing::TARGETS;

#[test]
fn every_corpus_file_and_regression_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (name, target) in TARGETS {
        let mut ran = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).expect("readable corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} fails", file.display());
                ran += 1;
            }
        }
        assert!(
            ran > 0,
            "no corpus for {name}: run `cargo run -p peerlite-sim --example record_corpus`"
        );
    }
}
