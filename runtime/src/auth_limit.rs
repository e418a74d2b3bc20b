//! Rate limiting of failed authentication attempts, per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failed authentications a client address may make before the listener refuses
/// it for a while (HTTP 429 with `Retry-After`, even with the right credentials, so a
/// password cannot be guessed at network speed).
///
/// ```
/// use std::time::Duration;
/// use peerlite_smol::AuthFailureLimit;
///
/// let strict = AuthFailureLimit {
///     max_failures: 3,
///     window: Duration::from_secs(60),
///     lockout: Duration::from_secs(300),
/// };
/// assert!(strict.max_failures < AuthFailureLimit::default().max_failures);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthFailureLimit {
    /// Failures allowed within `window` (default 10); the next one starts a lockout.
    pub max_failures: u32,
    /// The window failures are counted in (default 60 s).
    pub window: Duration,
    /// How long an address is refused after too many failures (default 60 s).
    pub lockout: Duration,
}

impl Default for AuthFailureLimit {
    fn default() -> Self {
        AuthFailureLimit {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        }
    }
}

/// Addresses tracked at once; beyond this the stalest entries are forgotten, so a flood
/// of addresses cannot grow the listener's memory without bound.
const MAX_TRACKED: usize = 10_000;

#[derive(Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Failed attempts per address, shared by a listener's connections.
pub(crate) struct FailedAuthLimiter {
    limit: AuthFailureLimit,
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl FailedAuthLimiter {
    pub(crate) fn new(limit: AuthFailureLimit) -> FailedAuthLimiter {
        FailedAuthLimiter {
            limit,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        // The map holds plain counters: a panic elsewhere cannot leave it inconsistent.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `ip` is still refused, if it is.
    pub(crate) fn locked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.records().get(&ip)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failed attempt; returns the lockout if this one started it.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let limit = self.limit;
        let mut records = self.records();
        if records.len() >= MAX_TRACKED && !records.contains_key(&ip) {
            records.retain(|_, r| {
                r.locked_until.is_some_and(|u| u > now) || now - r.window_start < limit.window
            });
            if records.len() >= MAX_TRACKED
                && let Some(stalest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.window_start)
                    .map(|(ip, _)| *ip)
            {
                records.remove(&stalest);
            }
        }
        let r = records.entry(ip).or_insert(Record {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now - r.window_start >= limit.window || r.locked_until.is_some_and(|u| u <= now) {
            *r = Record {
                window_start: now,
                failures: 0,
                locked_until: None,
            };
        }
        r.failures = r.failures.saturating_add(1);
        if r.failures > limit.max_failures && r.locked_until.is_none() {
            r.locked_until = Some(now + limit.lockout);
            return Some(limit.lockout);
        }
        None
    }

    /// Forgets `ip`'s failures after a successful authentication.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        self.records().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> FailedAuthLimiter {
        FailedAuthLimiter::new(AuthFailureLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(30),
        })
    }

    #[test]
    fn locks_after_too_many_failures_then_releases() {
        let l = limiter();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        for i in 0..3 {
            assert_eq!(l.failed(ip, t + Duration::from_secs(i)), None);
            assert_eq!(l.locked_for(ip, t + Duration::from_secs(i)), None);
        }
        assert_eq!(
            l.failed(ip, t + Duration::from_secs(3)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            l.locked_for(ip, t + Duration::from_secs(13)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(l.locked_for(other, t + Duration::from_secs(13)), None);
        assert_eq!(l.locked_for(ip, t + Duration::from_secs(33)), None);
        // After the lockout the count starts again.
        assert_eq!(l.failed(ip, t + Duration::from_secs(34)), None);
    }

    #[test]
    fn failures_outside_the_window_and_successes_reset_the_count() {
        let l = limiter();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.failed(ip, t), None);
        }
        assert_eq!(l.failed(ip, t + Duration::from_secs(61)), None);
        l.succeeded(ip);
        for _ in 0..3 {
            assert_eq!(l.failed(ip, t + Duration::from_secs(62)), None);
        }
        assert!(l.failed(ip, t + Duration::from_secs(62)).is_some());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let l = limiter();
        let t = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            l.failed(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(l.records().len() <= MAX_TRACKED);
    }
}
