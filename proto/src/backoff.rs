//! Exponential backoff for reconnecting, as a pure function of the attempt number.

use std::time::Duration;

/// When to retry: `min(initial × 2^(attempt-1), max_wait)`, for at most `max_attempts`
/// attempts in all (0 = unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the second attempt.
    pub initial: Duration,
    /// The longest wait between attempts.
    pub max_wait: Duration,
    /// Total attempts, including the first; 0 means unlimited.
    pub max_attempts: u32,
}

impl Backoff {
    /// The wait before attempt `attempt + 1`, after `attempt` failed attempts (1-based);
    /// `None` when no attempt is left.
    pub fn delay(&self, failed_attempts: u32) -> Option<Duration> {
        if self.max_attempts != 0 && failed_attempts >= self.max_attempts {
            return None;
        }
        let exp = failed_attempts.saturating_sub(1).min(32);
        let wait = self
            .initial
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max_wait);
        Some(wait.min(self.max_wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_stops_after_max_attempts() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max_wait: Duration::from_secs(10),
            max_attempts: 5,
        };
        let waits: Vec<_> = (1..=5).map(|n| b.delay(n)).collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(8)),
                None
            ]
        );
        let unlimited = Backoff {
            max_attempts: 0,
            ..b
        };
        assert_eq!(unlimited.delay(1000), Some(Duration::from_secs(10)));
    }
}
