//! A revision with its body and ancestry, as it travels between peers and into storage.

use crate::{Body, RevId, RevIdError};

/// The most ancestors a [`Revision`] may carry.
pub const MAX_HISTORY: usize = 1000;

/// Why a [`Revision`] is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum RevisionError {
    /// A blob reference in the body is malformed.
    #[error("revision {rev} has a malformed blob reference: {error}")]
    BlobReference {
        /// The revision.
        rev: RevId,
        /// What is wrong with it.
        error: crate::BlobRefError,
    },
    /// The ancestry does not go back one generation at a time.
    #[error(
        "history of revision {rev} does not chain: entry {index} is {found}, expected generation {expected}"
    )]
    BrokenHistory {
        /// The revision.
        rev: RevId,
        /// Position of the bad entry in the history (0 = parent).
        index: usize,
        /// The entry found there.
        found: RevId,
        /// The generation it should have had.
        expected: u64,
    },
    /// A deleted ancestor that is not in the history.
    #[error("revision {rev} lists {ancestor} as a deleted ancestor, but it is not in its history")]
    UnknownDeletedAncestor {
        /// The revision.
        rev: RevId,
        /// The ancestor named.
        ancestor: RevId,
    },
    /// A revision after the first generation without its parent.
    #[error("revision {0} has generation > 1 but no parent in its history")]
    MissingParent(RevId),
    /// More ancestors than [`MAX_HISTORY`].
    #[error("revision {rev} carries {len} ancestors; at most {MAX_HISTORY} are allowed")]
    HistoryTooLong {
        /// The revision.
        rev: RevId,
        /// Ancestors carried.
        len: usize,
    },
    /// The revision ID does not match its parent, deleted flag and body.
    #[error(
        "revision {rev} does not match its content (the content hashes to {computed}); it was altered or forged"
    )]
    DigestMismatch {
        /// The claimed ID.
        rev: RevId,
        /// The ID the content produces.
        computed: RevId,
    },
    /// The ID cannot be computed.
    #[error(transparent)]
    RevId(#[from] RevIdError),
}

/// One revision of a document: its ID, deleted flag, body and ancestors (newest first:
/// `history[0]` is the parent).
///
/// ```
/// use peerlite_proto::{Body, Revision};
/// let v1 = Revision::first(false, Body::from_json_str(r#"{"n": 1}"#)?)?;
/// let v2 = v1.child(false, Body::from_json_str(r#"{"n": 2}"#)?, 20)?;
/// assert_eq!(v2.parent(), Some(&v1.rev));
/// v2.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revision {
    /// The revision ID.
    pub rev: RevId,
    /// True for a tombstone (a deletion).
    pub deleted: bool,
    /// The body (`{}` for a plain deletion).
    pub body: Body,
    /// Ancestor IDs, parent first.
    pub history: Vec<RevId>,
    /// The ancestors (from `history`) that are tombstones: a document deleted and then
    /// re-created carries its deletion in its past, so every peer can tell a re-creation
    /// from a concurrent edit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_ancestors: Vec<RevId>,
}

impl Revision {
    /// A document's first revision (generation 1).
    pub fn first(deleted: bool, body: Body) -> Result<Revision, RevIdError> {
        Ok(Revision {
            rev: RevId::compute(None, deleted, &body)?,
            deleted,
            body,
            history: Vec::new(),
            deleted_ancestors: Vec::new(),
        })
    }

    /// A new revision on top of this one, keeping at most `max_history` ancestors.
    pub fn child(
        &self,
        deleted: bool,
        body: Body,
        max_history: usize,
    ) -> Result<Revision, RevIdError> {
        let rev = RevId::compute(Some(&self.rev), deleted, &body)?;
        let keep = max_history.max(1);
        let mut history = Vec::with_capacity((self.history.len() + 1).min(keep));
        history.push(self.rev);
        history.extend(self.history.iter().take(keep - 1).copied());
        let mut deleted_ancestors: Vec<RevId> = self
            .deleted_ancestors
            .iter()
            .filter(|r| history.contains(r))
            .copied()
            .collect();
        if self.deleted {
            deleted_ancestors.insert(0, self.rev);
        }
        Ok(Revision {
            rev,
            deleted,
            body,
            history,
            deleted_ancestors,
        })
    }

    /// The parent revision, if any.
    pub fn parent(&self) -> Option<&RevId> {
        self.history.first()
    }

    /// True when `rev` is this revision or one of the ancestors it carries.
    ///
    /// ```
    /// use peerlite_proto::{Body, Revision};
    ///
    /// let first = Revision::first(false, Body::empty()).unwrap();
    /// let second = first.child(true, Body::empty(), 20).unwrap();
    /// assert!(second.is_or_descends_from(&first.rev));
    /// assert!(second.is_or_descends_from(&second.rev));
    /// assert!(!first.is_or_descends_from(&second.rev));
    /// ```
    pub fn is_or_descends_from(&self, rev: &RevId) -> bool {
        self.rev == *rev || self.history.contains(rev)
    }

    /// Checks that the history chains one generation at a time back from the revision.
    pub fn check_history(&self) -> Result<(), RevisionError> {
        if self.history.len() > MAX_HISTORY {
            return Err(RevisionError::HistoryTooLong {
                rev: self.rev,
                len: self.history.len(),
            });
        }
        if self.rev.generation() > 1 && self.history.is_empty() {
            return Err(RevisionError::MissingParent(self.rev));
        }
        if let Some(a) = self
            .deleted_ancestors
            .iter()
            .find(|a| !self.history.contains(a))
        {
            return Err(RevisionError::UnknownDeletedAncestor {
                rev: self.rev,
                ancestor: *a,
            });
        }
        let mut expected = self.rev.generation();
        for (index, found) in self.history.iter().enumerate() {
            expected -= 1;
            if found.generation() != expected {
                return Err(RevisionError::BrokenHistory {
                    rev: self.rev,
                    index,
                    found: *found,
                    expected,
                });
            }
        }
        Ok(())
    }

    /// Checks the history and that the ID is the digest of the parent, deleted flag and
    /// body: what a receiver must do before storing a revision from a peer.
    pub fn validate(&self) -> Result<(), RevisionError> {
        self.check_history()?;
        let computed = RevId::compute(self.parent(), self.deleted, &self.body)?;
        if computed != self.rev {
            return Err(RevisionError::DigestMismatch {
                rev: self.rev,
                computed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: i64) -> Body {
        Body::from_serialize(&serde_json::json!({ "n": n })).unwrap()
    }

    #[test]
    fn children_chain_and_validate() {
        let mut r = Revision::first(false, body(0)).unwrap();
        r.validate().unwrap();
        for n in 1..30 {
            r = r.child(false, body(n), 20).unwrap();
            r.validate().unwrap();
        }
        assert_eq!(r.rev.generation(), 30);
        assert_eq!(r.history.len(), 20);
        assert_eq!(r.history[0].generation(), 29);
    }

    #[test]
    fn broken_history_and_forgery_are_detected() {
        let r1 = Revision::first(false, body(1)).unwrap();
        let r2 = r1.child(false, body(2), 20).unwrap();
        let r3 = r2.child(false, body(3), 20).unwrap();

        let mut skipped = r3.clone();
        skipped.history = vec![r1.rev];
        assert!(matches!(
            skipped.validate(),
            Err(RevisionError::BrokenHistory {
                index: 0,
                expected: 2,
                ..
            })
        ));

        let mut orphan = r3.clone();
        orphan.history.clear();
        assert_eq!(orphan.validate(), Err(RevisionError::MissingParent(r3.rev)));

        let mut forged = r3.clone();
        forged.body = body(666);
        assert!(matches!(
            forged.validate(),
            Err(RevisionError::DigestMismatch { .. })
        ));

        let mut flipped = r3;
        flipped.deleted = true;
        assert!(matches!(
            flipped.validate(),
            Err(RevisionError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn first_revision_with_history_is_broken() {
        let r1 = Revision::first(false, body(1)).unwrap();
        let mut bad = Revision::first(false, body(2)).unwrap();
        bad.history = vec![r1.rev];
        assert!(matches!(
            bad.validate(),
            Err(RevisionError::BrokenHistory { index: 0, .. })
        ));
    }
}
