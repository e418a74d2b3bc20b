//! What the property suites share: how many cases to run, where proptest's generator
//! starts, and turning a case's failure (an error or a panic) into one that names its
//! seed.

use proptest::test_runner::{RngSeed, TestCaseError};

/// `PEERLITE_SIM_CASES`, or `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PEERLITE_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where proptest's generator starts: `default` (so CI runs the same cases every time)
/// unless `PEERLITE_SIM_SEED_BASE` gives another base, or `random` for a fresh one.
pub(crate) fn rng_seed(default: u64) -> RngSeed {
    match std::env::var("PEERLITE_SIM_SEED_BASE").as_deref() {
        Ok("random") => RngSeed::Random,
        Ok(n) => RngSeed::Fixed(
            n.parse()
                .expect("PEERLITE_SIM_SEED_BASE is a u64 or `random`"),
        ),
        Err(_) => RngSeed::Fixed(default),
    }
}

/// Runs case `name` on `seed`; a failure or a panic names the seed to replay.
pub(crate) fn check<T, E: std::fmt::Display>(
    name: &str,
    seed: u64,
    case: fn(u64) -> Result<T, E>,
) -> Result<(), TestCaseError> {
    match std::panic::catch_unwind(|| case(seed)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(TestCaseError::fail(format!("{name}: SIM_SEED={seed}: {e}"))),
        Err(p) => {
            let message = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(TestCaseError::fail(format!(
                "{name}: SIM_SEED={seed}: panicked: {message}"
            )))
        }
    }
}
