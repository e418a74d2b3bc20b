//! Fuzz target `body_decode`: see `peerlite_sim::fuzzing::body_decode` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerlite_sim::fuzzing::body_decode(data);
});
