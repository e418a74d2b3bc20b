//! Sequence numbers of the changes feed.

use std::fmt;

/// A position in a collection's changes feed.
///
/// Every local change to a document gives it the collection's next sequence number, so
/// "changes since `s`" is "documents whose sequence is greater than `s`". Sequences start
/// at 1; [`Seq::ZERO`] means "from the beginning".
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first change.
    pub const ZERO: Seq = Seq(0);

    /// The following sequence number (saturating at `u64::MAX`).
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
