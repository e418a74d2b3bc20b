//! Where a sender is in its own changes feed: reading it in batches, one read at a time,
//! following new local changes when asked to.

use crate::{Change, Seq};

/// A sender's position in the local changes feed.
#[derive(Debug, Default)]
pub(crate) struct ChangesCursor {
    since: Seq,
    reading: bool,
    at_end: bool,
    /// A local change arrived since the last read.
    dirty: bool,
}

impl ChangesCursor {
    /// A cursor reading the changes after `since`.
    pub(crate) fn new(since: Seq) -> ChangesCursor {
        ChangesCursor {
            since,
            ..ChangesCursor::default()
        }
    }

    /// The last sequence read.
    pub(crate) fn since(&self) -> Seq {
        self.since
    }

    /// A local change at `seq` happened: read again, if it is past what was read.
    pub(crate) fn changed(&mut self, seq: Seq) {
        if seq > self.since {
            self.dirty = true;
        }
    }

    /// A local change happened that the feed may not have seen yet.
    pub(crate) fn touch(&mut self) {
        self.dirty = true;
    }

    /// Whether there is more to read, now or once a read under way is back.
    pub(crate) fn has_more(&self) -> bool {
        self.reading || !self.at_end || self.dirty
    }

    /// Whether the last read reached the end of the feed.
    pub(crate) fn at_end(&self) -> bool {
        self.at_end
    }

    /// The sequence to read after, marked as read, when no read is under way, there is
    /// more to read (new local changes count only when `follow`) and the caller's flow
    /// control `allows` it.
    pub(crate) fn next_read(&mut self, follow: bool, allows: bool) -> Option<Seq> {
        let more = !self.at_end || (follow && self.dirty);
        if self.reading || !more || !allows {
            return None;
        }
        self.reading = true;
        self.dirty = false;
        Some(self.since)
    }

    /// A read of at most `limit` changes came back: the last sequence it holds, if any,
    /// which is where the next read starts.
    pub(crate) fn read_done(&mut self, changes: &[Change], limit: usize) -> Option<Seq> {
        self.reading = false;
        self.at_end = changes.len() < limit;
        let last = changes.last()?.seq;
        self.since = self.since.max(last);
        Some(last)
    }
}
