//! Purging expired documents while a listener or a replicator runs: the store keeps the
//! expirations and reads no clock ([`Database::purge_expired`]); this task brings the
//! time.

use std::time::{Duration, Instant, SystemTime};

use peerlite_storage::Database;

use crate::Runtime;

/// The longest the task sleeps: an expiration set meanwhile, earlier than the one it
/// waits for, is purged within this of its time.
const AT_MOST: Duration = Duration::from_secs(1);

/// Purges `db`'s documents as they expire, until the task is dropped.
pub(crate) async fn purge_on_expiry<R: Runtime>(rt: R, db: Database) {
    loop {
        match db.purge_expired(SystemTime::now()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired documents purged"),
            Err(e) => tracing::warn!(error = %e, "expired documents could not be purged"),
        }
        let wait = match db.next_expiration() {
            Ok(Some(at)) => at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(AT_MOST),
            _ => AT_MOST,
        };
        rt.sleep_until(Instant::now() + wait).await;
    }
}
