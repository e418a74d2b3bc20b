//! Helpers shared by the cross-runtime and custom-transport tests.
// Each test crate that includes this module uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use peerlite_proto::{Body, CollectionName, DocId};
use peerlite_storage::Database;

/// Saves `json` as document `doc` of the default collection.
pub(crate) fn put(db: &Database, doc: &str, json: &str) {
    let id = DocId::new(doc).unwrap();
    db.save(
        &CollectionName::default(),
        &id,
        Body::from_json_str(json).unwrap(),
    )
    .unwrap();
}

/// Whether `db` holds live document `doc`.
pub(crate) fn has(db: &Database, doc: &str) -> bool {
    let id = DocId::new(doc).unwrap();
    db.get(&CollectionName::default(), &id).unwrap().is_some()
}

/// Every live document with its current revision and body, in ID order.
pub(crate) fn contents(db: &Database) -> Vec<(String, String, String)> {
    let page = db
        .documents(&CollectionName::default(), None, 10_000)
        .unwrap();
    page.documents
        .into_iter()
        .map(|d| {
            (
                d.id.to_string(),
                d.rev.to_string(),
                d.body.to_json().to_string(),
            )
        })
        .collect()
}

/// Waits until `cond` holds, at most 30 s (on any executor: the timer is async-io's).
pub(crate) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    panic!("not within 30 s: {what}");
}
