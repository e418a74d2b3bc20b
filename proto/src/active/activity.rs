//! Activity and progress: whether the replicator is busy, idle or done, the status
//! events that say so, and the one-shot replication's end once it has caught up.

use super::*;

impl ActiveReplicator {
    pub(super) fn set_activity(&mut self, activity: Activity) {
        if self.status.activity != activity {
            self.set_activity_forced(activity);
        }
    }

    pub(super) fn set_activity_forced(&mut self, activity: Activity) {
        self.status.activity = activity;
        self.progress_dirty = false;
        self.conn.event(Event::Status(self.status.clone()));
    }

    /// Counts progress. One status event per input carries it (not one per document).
    pub(super) fn progress(&mut self, completed: u64, total: u64) {
        if completed == 0 && total == 0 {
            return;
        }
        self.status.progress.completed += completed;
        self.status.progress.total += total;
        self.progress_dirty = true;
    }

    pub(super) fn flush_progress(&mut self) {
        if self.progress_dirty {
            self.progress_dirty = false;
            self.conn.event(Event::Status(self.status.clone()));
        }
    }

    pub(super) fn is_busy(&self) -> bool {
        let pushes = self.config.replicator_type.pushes();
        let pulls = self.config.replicator_type.pulls();
        !self.pull_revs.is_empty()
            || self
                .cols
                .values()
                .any(|c| (pushes && c.push.is_busy()) || (pulls && c.pull.is_busy()))
    }

    /// Busy or idle; a one-shot replication that has caught up saves its checkpoint and
    /// stops.
    pub(super) fn update_activity(&mut self, _now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if self.is_busy() {
            return self.set_activity(Activity::Busy);
        }
        if self.config.continuous {
            self.save_checkpoint();
            return self.set_activity(Activity::Idle);
        }
        self.save_checkpoint();
        if self.saving == 0 && self.saved_cp.as_ref() == Some(&self.progress_cp) {
            self.conn.outputs.push_back(Output::Close(CloseReason::new(
                CloseCode::Normal,
                "replication complete",
            )));
            self.end_connection();
            self.phase = Phase::Stopped;
            self.timers.clear();
            self.set_activity(Activity::Stopped);
        }
    }
}
