//! Fuzz target `frame_decode`: see `peerlite_sim::fuzzing::frame_decode` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerlite_sim::fuzzing::frame_decode(data);
});
