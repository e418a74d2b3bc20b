//! Fuzz target `recording_read`: see `peerlite_sim::fuzzing::recording_read` for what it
//! checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerlite_sim::fuzzing::recording_read(data);
});
