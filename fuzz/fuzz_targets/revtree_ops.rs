//! Fuzz target `revtree_ops`: see `peerlite_sim::fuzzing::revtree_ops` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerlite_sim::fuzzing::revtree_ops(data);
});
