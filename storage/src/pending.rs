//! Which local documents a push replication has not sent yet.

use std::collections::BTreeSet;

use peerlite_proto::{
    Checkpoint, CollectionName, DocId, FilterContext, ReplicatorConfig, local_checkpoint_key,
};

use crate::{Database, StorageError};

const PAGE: usize = 1000;

impl Database {
    /// The documents of `collection` that the replication described by `config` has not
    /// pushed yet, as far as its last saved checkpoint knows: local changes after the
    /// checkpoint that pass its document-ID list and push filter. (Couchbase Lite's
    /// `pendingDocumentIds`.) A document pushed since the last checkpoint save may still
    /// be listed until the next save.
    pub fn pending_document_ids(
        &self,
        config: &ReplicatorConfig,
        collection: &CollectionName,
    ) -> Result<BTreeSet<DocId>, StorageError> {
        let Some(cc) = config.collections.iter().find(|c| c.name == *collection) else {
            return Ok(BTreeSet::new());
        };
        if !config.replicator_type.pushes() {
            return Ok(BTreeSet::new());
        }
        let checkpoint = self
            .get_local(&local_checkpoint_key(&config.checkpoint_id()))?
            .and_then(|b| Checkpoint::from_bytes(&b))
            .unwrap_or_default();
        let mut since = checkpoint.get(collection).push;
        let mut pending = BTreeSet::new();
        loop {
            let changes = self.changes(collection, since, PAGE)?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                break;
            };
            for change in changes {
                if cc
                    .doc_ids
                    .as_ref()
                    .is_some_and(|ids| !ids.contains(&change.doc_id))
                {
                    continue;
                }
                if let Some(filter) = &cc.push_filter {
                    let Some(rev) =
                        self.get_revision(collection, &change.doc_id, &change.rev, 0)?
                    else {
                        continue;
                    };
                    let ctx = FilterContext {
                        collection,
                        doc_id: &change.doc_id,
                        revision: &rev,
                    };
                    if !filter.include(&ctx) {
                        continue;
                    }
                }
                pending.insert(change.doc_id);
            }
            since = last;
        }
        Ok(pending)
    }

    /// True when [`Database::pending_document_ids`] would list `id`.
    pub fn is_document_pending(
        &self,
        config: &ReplicatorConfig,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<bool, StorageError> {
        Ok(self.pending_document_ids(config, collection)?.contains(id))
    }
}
