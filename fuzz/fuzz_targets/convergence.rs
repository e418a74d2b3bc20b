//! Fuzz target `convergence`: see `peerlite_sim::fuzzing::convergence` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerlite_sim::fuzzing::convergence(data);
});
