//! Revisions the remote peer recently sent, so they are not offered straight back to it.
//!
//! In a push-and-pull replication every revision received becomes a local change, and
//! the side that feeds changes to the peer would announce it to the peer it came from —
//! a round trip per document that only ever hears "not wanted". The peer certainly has
//! what it sent, so a change whose revisions are all among those it sent needs no
//! announcement at all. Both state machines keep one per collection: the active side for
//! what it pulled, the passive side for what it was pushed. The memory is bounded: the
//! oldest entries are forgotten first, and a forgotten entry only costs the announcement
//! that would have been sent anyway.

use std::collections::{HashMap, VecDeque};

use crate::{DocId, RevId};

/// Most documents remembered per collection.
pub(crate) const CAPACITY: usize = 4096;

/// Per document, the revisions (current and closed branches) the peer last sent.
#[derive(Debug, Default)]
pub(crate) struct PeerKnows {
    revs: HashMap<DocId, Vec<RevId>>,
    order: VecDeque<DocId>,
}

impl PeerKnows {
    /// Remembers that the peer holds `revs` of `doc`, replacing what was known of it.
    pub(crate) fn record(&mut self, doc: &DocId, revs: Vec<RevId>) {
        if self.revs.insert(doc.clone(), revs).is_none() {
            self.order.push_back(doc.clone());
        }
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.revs.remove(&old);
            }
        }
    }

    /// True when the peer is known to hold `current` and every one of `others`.
    pub(crate) fn peer_has(&self, doc: &DocId, current: &RevId, others: &[RevId]) -> bool {
        self.revs.get(doc).is_some_and(|known| {
            known.contains(current) && others.iter().all(|r| known.contains(r))
        })
    }

    /// Forgets everything (the peer's state is no longer known, e.g. after a reset).
    pub(crate) fn clear(&mut self) {
        self.revs.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Revision};

    fn rev(n: u8) -> RevId {
        Revision::first(
            false,
            Body::from_json_str(&format!(r#"{{"n": {n}}}"#)).unwrap(),
        )
        .unwrap()
        .rev
    }

    #[test]
    fn knows_only_whole_sets_of_received_revisions() {
        let mut r = PeerKnows::default();
        let d = DocId::new("d").unwrap();
        let (a, b, c) = (rev(1), rev(2), rev(3));
        r.record(&d, vec![b, a]);
        assert!(r.peer_has(&d, &a, &[]));
        assert!(r.peer_has(&d, &a, &[b]));
        assert!(
            !r.peer_has(&d, &a, &[c]),
            "a closed branch the peer never saw"
        );
        assert!(!r.peer_has(&d, &c, &[]), "a newer local revision");
        assert!(!r.peer_has(&DocId::new("e").unwrap(), &a, &[]));
        r.record(&d, vec![c]);
        assert!(!r.peer_has(&d, &a, &[]), "replaced by the latest pull");
        r.clear();
        assert!(!r.peer_has(&d, &c, &[]));
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut r = PeerKnows::default();
        let a = rev(1);
        for i in 0..CAPACITY + 10 {
            r.record(&DocId::new(format!("d{i}")).unwrap(), vec![a]);
        }
        assert_eq!(r.revs.len(), CAPACITY);
        assert!(!r.peer_has(&DocId::new("d0").unwrap(), &a, &[]));
        assert!(r.peer_has(&DocId::new(format!("d{}", CAPACITY + 9)).unwrap(), &a, &[]));
    }
}
