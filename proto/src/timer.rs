//! Timers as data: a table of deadlines, one per kind of timer.

use std::time::Instant;

/// The timers a state machine may arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Timer {
    /// Send a ping if the connection has been quiet.
    Heartbeat,
    /// Give up on a peer that has said nothing for too long.
    DeadPeer,
    /// Reconnect after a backoff.
    Retry,
    /// Save the checkpoint.
    Checkpoint,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::Heartbeat,
        Timer::DeadPeer,
        Timer::Retry,
        Timer::Checkpoint,
    ];

    fn index(self) -> usize {
        match self {
            Timer::Heartbeat => 0,
            Timer::DeadPeer => 1,
            Timer::Retry => 2,
            Timer::Checkpoint => 3,
        }
    }
}

/// Deadlines of the armed timers.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; 4],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns every timer due at `now`.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Timer> {
        Timer::ALL
            .into_iter()
            .filter(|t| {
                let due = self.deadlines[t.index()].is_some_and(|d| d <= now);
                if due {
                    self.deadlines[t.index()] = None;
                }
                due
            })
            .collect()
    }

    pub(crate) fn clear(&mut self) {
        self.deadlines = Default::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_and_expiry() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Retry, t0 + Duration::from_secs(5));
        t.set(Timer::Heartbeat, t0 + Duration::from_secs(2));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
        assert!(t.expired(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(
            t.expired(t0 + Duration::from_secs(3)),
            vec![Timer::Heartbeat]
        );
        assert_eq!(t.expired(t0 + Duration::from_secs(3)), vec![]);
        t.stop(Timer::Retry);
        assert_eq!(t.next(), None);
    }
}
