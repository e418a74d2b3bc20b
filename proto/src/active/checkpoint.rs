//! Checkpoints: starting from the earlier of the two saved copies, and saving progress on
//! both sides.

use super::*;

impl ActiveReplicator {
    /// Starts replicating once both checkpoint copies are known.
    pub(super) fn begin(&mut self, now: Instant) {
        let (Some(local), Some(remote)) = (&self.local_cp, &self.remote_cp) else {
            return;
        };
        let cp = Checkpoint::reconcile(local.as_ref(), remote.as_ref());
        self.progress_cp = Checkpoint {
            collections: self
                .cols
                .keys()
                .map(|name| (name.clone(), cp.get(name)))
                .collect(),
        };
        self.saved_cp = Some(cp);
        self.phase = Phase::Running;
        self.failed_attempts = 0;
        self.status.error = None;
        // Progress counts this connection's work: a retry starts over from the checkpoint.
        self.status.progress = Progress::default();
        self.timers
            .set(Timer::Checkpoint, now + self.config.checkpoint_interval);
        let names: Vec<CollectionName> = self.cols.keys().cloned().collect();
        for name in names {
            let start = self.progress_cp.get(&name);
            let pushes = self.config.replicator_type.pushes();
            let Some(c) = self.cols.get_mut(&name) else {
                continue;
            };
            if pushes {
                // Nothing moves until both feeds are known complete: this side's (a
                // deletion it forgot before pushing it would stay alive on the peer, and
                // come back here by pull), then the peer's (see `open_collection`).
                c.push.cursor = crate::sender::ChangesCursor::new(start.push);
                c.push.held = true;
                if start.push > Seq::ZERO {
                    let check = StorageOp::Changes {
                        collection: name.clone(),
                        since: start.push,
                        limit: 0,
                    };
                    self.op(check, Op::PushCheck(name));
                    continue;
                }
            }
            self.open_collection(&name);
        }
        self.update_activity(now);
    }

    /// Starts moving one collection once this side's feed is known complete: subscribes
    /// to the peer's changes, and pushes once the peer accepts that (a peer that forgot
    /// deletions since this side last pulled refuses it, and nothing should have been
    /// pushed to it meanwhile: a document it deleted and forgot would come back there);
    /// or pushes at once when not pulling.
    pub(super) fn open_collection(&mut self, name: &CollectionName) {
        let start = self.progress_cp.get(name);
        let continuous = self.config.continuous;
        let Some(c) = self.cols.get_mut(name) else {
            return;
        };
        if !self.config.replicator_type.pulls() {
            c.push.held = false;
            self.pump_push(name);
            return;
        }
        let doc_ids = c.config.doc_ids.clone();
        self.conn.request(
            Request::SubChanges {
                collection: name.clone(),
                since: start.pull,
                continuous,
                doc_ids,
            },
            Sent::SubChanges(name.clone()),
        );
    }

    /// Saves the progress checkpoint on both sides, unless it is unchanged.
    pub(super) fn save_checkpoint(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        if self.saving > 0 {
            self.save_again = true;
            return;
        }
        if self.saved_cp.as_ref() == Some(&self.progress_cp) {
            return;
        }
        let cp = self.progress_cp.clone();
        self.saving = 2;
        self.conn.request(
            Request::SetCheckpoint {
                id: self.checkpoint_id.clone(),
                checkpoint: cp.clone(),
            },
            Sent::SetCheckpoint,
        );
        let id = local_checkpoint_key(&self.checkpoint_id);
        let value = cp.to_bytes();
        self.saving_cp = Some(cp);
        self.op(StorageOp::PutLocal { id, value }, Op::SaveLocalCheckpoint);
    }

    pub(super) fn checkpoint_part_saved(&mut self, now: Instant) {
        self.saving = self.saving.saturating_sub(1);
        if self.saving > 0 {
            return;
        }
        if let Some(cp) = self.saving_cp.take() {
            self.saved_cp = Some(cp);
        }
        if std::mem::take(&mut self.save_again) {
            self.save_checkpoint();
        }
        self.update_activity(now);
    }
}
