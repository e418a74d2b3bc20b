//! Change notifications, which feed continuous replication.

use std::sync::atomic::{AtomicUsize, Ordering};
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

/// When a change listener hears of a commit (see [`Database::add_change_listener_when`]).
///
/// [`Database::add_change_listener_when`]: crate::Database::add_change_listener_when
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotifyWhen {
    /// Once the change is as durable as the database's [`Durability`] makes it: with
    /// [`Durability::Sync`], after its `fdatasync`. A change heard of survives a crash.
    /// Right for application code.
    ///
    /// [`Durability`]: crate::Durability
    /// [`Durability::Sync`]: crate::Durability::Sync
    #[default]
    Durable,
    /// As soon as the change is readable, which with [`Durability::Sync`] is before its
    /// `fdatasync` ends: replication can send the change while the disk works, instead
    /// of after. If the machine then loses power, the change may be gone here but held
    /// by a peer (as if the interrupted save had completed), and its sequence is reused
    /// by the next write here; replication checkpoints stay correct because the copy
    /// kept here is always written after the changes it covers. Listeners run while
    /// the database's write lock is held: they must not write to the database.
    ///
    /// [`Durability::Sync`]: crate::Durability::Sync
    Visible,
}

/// Identifies a registered listener, for removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerToken(u64);

type Listener = Arc<dyn Fn(&[ChangeNotice]) + Send + Sync>;

/// A registered listener: its token number, when it is called, and the callback.
type Registered = (u64, NotifyWhen, Listener);

#[derive(Default)]
pub(crate) struct Listeners {
    inner: Mutex<(u64, Vec<Registered>)>,
    /// How many listeners are registered for [`NotifyWhen::Visible`].
    visible: AtomicUsize,
}

impl Listeners {
    pub(crate) fn add(&self, when: NotifyWhen, listener: Listener) -> ListenerToken {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.push((id, when, listener));
        if when == NotifyWhen::Visible {
            self.visible.fetch_add(1, Ordering::Relaxed);
        }
        ListenerToken(id)
    }

    pub(crate) fn remove(&self, token: ListenerToken) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = g.1.iter().position(|(id, _, _)| *id == token.0) else {
            return false;
        };
        let (_, when, _) = g.1.remove(i);
        if when == NotifyWhen::Visible {
            self.visible.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// True when some listener wants to hear of changes before they are durable.
    pub(crate) fn any_visible(&self) -> bool {
        self.visible.load(Ordering::Relaxed) > 0
    }

    /// Calls every listener registered for `when`, outside the registry lock so
    /// listeners may (un)register.
    pub(crate) fn notify(&self, when: NotifyWhen, notices: &[ChangeNotice]) {
        if notices.is_empty() || (when == NotifyWhen::Visible && !self.any_visible()) {
            return;
        }
        let listeners: Vec<Listener> = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.1.iter()
                .filter(|(_, w, _)| *w == when)
                .map(|(_, _, l)| l.clone())
                .collect()
        };
        for l in listeners {
            l(notices);
        }
    }
}
