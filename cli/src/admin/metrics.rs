//! `GET /metrics`: a listener's figures and a database's, in the OpenMetrics text format
//! Prometheus scrapes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use peerlite_runtime::{ConnectionStatus, SyncStats};
use peerlite_storage::Database;

use super::ops::OpResult;

/// What the metrics say of the database itself (cheap to read: no scan).
#[derive(Clone, Debug, Default)]
pub struct DatabaseFigures {
    /// Each collection's last sequence.
    pub last_sequences: Vec<(String, u64)>,
    /// Blobs stored and their bytes.
    pub blobs: (u64, u64),
}

/// Reads [`DatabaseFigures`].
pub fn database_figures(db: &Database) -> OpResult<DatabaseFigures> {
    let mut last_sequences = Vec::new();
    for c in db.collections()? {
        last_sequences.push((c.to_string(), db.last_sequence(&c)?.0));
    }
    let blobs = db.blobs()?;
    Ok(DatabaseFigures {
        last_sequences,
        blobs: (blobs.len() as u64, blobs.iter().map(|b| b.length).sum()),
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectionLabel {
    collection: String,
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The metrics text: the listener's counters (if one serves the database) and the
/// database's figures, every name prefixed `peerlite_`.
pub fn encode(
    listener: Option<(ConnectionStatus, SyncStats)>,
    db: &DatabaseFigures,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("peerlite");
    if let Some((status, s)) = listener {
        let r = &mut registry;
        counter(
            r,
            "documents_received",
            "Documents replicators pushed here and were stored",
            s.documents_received,
        );
        counter(
            r,
            "documents_sent",
            "Documents replicators pulled from here",
            s.documents_sent,
        );
        counter(
            r,
            "documents_failed",
            "Documents that did not replicate, either way",
            s.documents_failed,
        );
        counter(
            r,
            "conflicts_resolved",
            "Pulled revisions that conflicted and were resolved",
            s.conflicts_resolved,
        );
        counter(
            r,
            "frames_received",
            "Replication frames received",
            s.frames_received,
        );
        counter(
            r,
            "received_bytes",
            "Bytes of the replication frames received",
            s.bytes_received,
        );
        counter(r, "frames_sent", "Replication frames sent", s.frames_sent);
        counter(
            r,
            "sent_bytes",
            "Bytes of the replication frames sent",
            s.bytes_sent,
        );
        counter(
            r,
            "sessions",
            "Connections that became sync sessions",
            s.connections,
        );
        counter(
            r,
            "connections_refused",
            "Connections turned away (handshake, authentication, limit)",
            s.connections_failed,
        );
        counter(
            r,
            "storage_operations",
            "Storage operations run for replication",
            s.storage_operations,
        );
        let seconds: Counter<f64, AtomicU64> = Counter::default();
        seconds.inc_by(s.storage_time.as_secs_f64());
        r.register(
            "storage_seconds",
            "Time spent in storage operations for replication",
            seconds,
        );
        let longest: Gauge<f64, AtomicU64> = Gauge::default();
        longest.set(s.storage_max.as_secs_f64());
        r.register(
            "storage_longest_seconds",
            "The longest storage operation",
            longest,
        );
        gauge(
            r,
            "connections",
            "Open replication connections",
            status.connection_count as i64,
        );
        gauge(
            r,
            "active_connections",
            "Connections with replication work under way",
            status.active_connection_count as i64,
        );
    }
    let last: Family<CollectionLabel, Gauge> = Family::default();
    for (collection, seq) in &db.last_sequences {
        last.get_or_create(&CollectionLabel {
            collection: collection.clone(),
        })
        .set(i64::try_from(*seq).unwrap_or(i64::MAX));
    }
    registry.register("last_sequence", "A collection's last sequence", last);
    gauge(
        &mut registry,
        "blobs",
        "Blobs stored",
        i64::try_from(db.blobs.0).unwrap_or(i64::MAX),
    );
    gauge(
        &mut registry,
        "blob_bytes",
        "Bytes of the blobs stored",
        i64::try_from(db.blobs.1).unwrap_or(i64::MAX),
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}
