//! Document identifiers.

use std::fmt;

/// Maximum length of a document ID in bytes (as Sync Gateway).
pub const MAX_DOC_ID_LEN: usize = 250;

/// Why a string or bytes are not a valid [`DocId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocIdError {
    /// The ID is the empty string.
    #[error("document ID is empty")]
    Empty,
    /// The ID is longer than [`MAX_DOC_ID_LEN`].
    #[error("document ID is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The bytes are not UTF-8.
    #[error("document ID is not valid UTF-8")]
    InvalidUtf8,
    /// The ID contains a control character (such as NUL or a newline).
    #[error("document ID contains the control character U+{code:04X} at byte {index}")]
    ControlCharacter {
        /// Byte offset of the character.
        index: usize,
        /// Its code point.
        code: u32,
    },
}

/// A document identifier: non-empty UTF-8 of at most [`MAX_DOC_ID_LEN`] bytes, without
/// control characters.
///
/// ```
/// use peerlite_proto::DocId;
/// let id = DocId::new("user:42")?;
/// assert_eq!(id.as_str(), "user:42");
/// assert!(DocId::new("").is_err());
/// assert!(DocId::from_bytes(&[0xff]).is_err());
/// # Ok::<(), peerlite_proto::DocIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocId(String);

impl DocId {
    /// Validates and wraps a string.
    pub fn new(id: impl Into<String>) -> Result<DocId, DocIdError> {
        let id = id.into();
        validate(&id)?;
        Ok(DocId(id))
    }

    /// Validates raw bytes (for IDs read from the wire or from disk).
    pub fn from_bytes(bytes: &[u8]) -> Result<DocId, DocIdError> {
        let s = std::str::from_utf8(bytes).map_err(|_| DocIdError::InvalidUtf8)?;
        DocId::new(s)
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(id: &str) -> Result<(), DocIdError> {
    if id.is_empty() {
        return Err(DocIdError::Empty);
    }
    if id.len() > MAX_DOC_ID_LEN {
        return Err(DocIdError::TooLong {
            len: id.len(),
            max: MAX_DOC_ID_LEN,
        });
    }
    if let Some((index, c)) = id.char_indices().find(|(_, c)| c.is_control()) {
        return Err(DocIdError::ControlCharacter {
            index,
            code: u32::from(c),
        });
    }
    Ok(())
}

impl TryFrom<String> for DocId {
    type Error = DocIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DocId::new(s)
    }
}

impl TryFrom<&str> for DocId {
    type Error = DocIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        DocId::new(s)
    }
}

impl std::str::FromStr for DocId {
    type Err = DocIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DocId::new(s)
    }
}

impl From<DocId> for String {
    fn from(id: DocId) -> String {
        id.0
    }
}

impl AsRef<str> for DocId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(DocId::new("a").is_ok());
        assert!(DocId::new("ünïcødé ok").is_ok());
        assert_eq!(DocId::new(""), Err(DocIdError::Empty));
        assert_eq!(
            DocId::new("x".repeat(251)),
            Err(DocIdError::TooLong { len: 251, max: 250 })
        );
        assert!(DocId::new("x".repeat(250)).is_ok());
        assert_eq!(
            DocId::new("a\nb"),
            Err(DocIdError::ControlCharacter { index: 1, code: 10 })
        );
        assert_eq!(DocId::from_bytes(b"ok\xff"), Err(DocIdError::InvalidUtf8));
    }

    #[test]
    fn serde_validates() {
        let mut buf = Vec::new();
        ciborium::into_writer(&"", &mut buf).unwrap();
        assert!(ciborium::from_reader::<DocId, _>(&buf[..]).is_err());
        let mut buf = Vec::new();
        ciborium::into_writer(&DocId::new("k").unwrap(), &mut buf).unwrap();
        assert_eq!(
            ciborium::from_reader::<DocId, _>(&buf[..])
                .unwrap()
                .as_str(),
            "k"
        );
    }
}
