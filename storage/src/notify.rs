//! Change notifications, which feed continuous replication.

use std::sync::{Arc, Mutex};

use peerlite_proto::{CollectionName, DocId, RevId, Seq};

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeOrigin {
    /// A local save or delete.
    Local,
    /// Revisions inserted by replication.
    Replicated,
}

/// One committed change, as delivered to change listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeNotice {
    /// The collection.
    pub collection: CollectionName,
    /// The document.
    pub doc_id: DocId,
    /// Its current revision after the change.
    pub rev: RevId,
    /// True when that revision is a tombstone.
    pub deleted: bool,
    /// The sequence assigned to the change.
    pub seq: Seq,
    /// Local write or replication.
    pub origin: ChangeOrigin,
}

/// Identifies a registered listener, for removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerToken(u64);

type Listener = Arc<dyn Fn(&[ChangeNotice]) + Send + Sync>;

#[derive(Default)]
pub(crate) struct Listeners {
    inner: Mutex<(u64, Vec<(u64, Listener)>)>,
}

impl Listeners {
    pub(crate) fn add(&self, listener: Listener) -> ListenerToken {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.push((id, listener));
        ListenerToken(id)
    }

    pub(crate) fn remove(&self, token: ListenerToken) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = g.1.len();
        g.1.retain(|(id, _)| *id != token.0);
        g.1.len() != before
    }

    /// Calls every listener, outside the registry lock so listeners may (un)register.
    pub(crate) fn notify(&self, notices: &[ChangeNotice]) {
        if notices.is_empty() {
            return;
        }
        let listeners: Vec<Listener> = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.1.iter().map(|(_, l)| l.clone()).collect()
        };
        for l in listeners {
            l(notices);
        }
    }
}
