//! Fuzz target `active_frames`: see `peerlite_sim::fuzzing::active_frames` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerlite_sim::fuzzing::active_frames(data);
});
