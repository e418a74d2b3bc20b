//! Purging expired documents and forgetting tombstones older than the retention while a
//! listener or a replicator runs: the store keeps the expirations and the retention and
//! reads no clock ([`Database::purge_expired`], [`Database::forget_tombstones`]); this
//! brings the time.
//!
//! Both commit durably (an fsync per thousand documents), so they run on a thread of
//! their own rather than on the runtime's executor.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use peerlite_storage::Database;

/// The longest the thread sleeps: an expiration set meanwhile, earlier than the one it
/// waits for, is purged within this of its time.
const AT_MOST: Duration = Duration::from_secs(1);

/// How often old tombstones are looked for (the retention is days; the store's own
/// precision is a sixty-fourth of it).
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Purges a database's documents as they expire, until dropped.
pub(crate) struct ExpiryPurger {
    /// Dropping it wakes the thread, which then ends.
    _stop: Sender<()>,
}

impl ExpiryPurger {
    /// Starts purging `db` (a thread that cannot be started is a warning: the next open
    /// of the database purges what is due).
    pub(crate) fn start(db: Database) -> ExpiryPurger {
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("peerlite-expiry".into())
            .spawn(move || {
                let mut forgot_at: Option<Instant> = None;
                loop {
                    if forgot_at.is_none_or(|t| t.elapsed() >= FORGET_EVERY) {
                        forgot_at = Some(Instant::now());
                        match db.forget_tombstones(SystemTime::now()) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                forgotten = n,
                                "tombstones older than the retention forgotten"
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, "old tombstones could not be forgotten");
                            }
                        }
                    }
                    match db.purge_expired(SystemTime::now()) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(purged = n, "expired documents purged"),
                        Err(e) => {
                            tracing::warn!(error = %e, "expired documents could not be purged");
                        }
                    }
                    let wait = match db.next_expiration() {
                        Ok(Some(at)) => at
                            .duration_since(SystemTime::now())
                            .unwrap_or_default()
                            .min(AT_MOST),
                        _ => AT_MOST,
                    };
                    if let Err(RecvTimeoutError::Disconnected) = stopped.recv_timeout(wait) {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "expired documents are not purged while this runs");
        }
        ExpiryPurger { _stop: stop }
    }
}
