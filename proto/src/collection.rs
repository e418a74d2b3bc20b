//! Collection names: `scope.name`, as in Couchbase Lite.

use std::fmt;

/// Maximum length of a scope or collection name.
pub const MAX_COLLECTION_NAME_LEN: usize = 251;

/// The name of the default scope and of the default collection.
pub const DEFAULT_NAME: &str = "_default";

/// Why a string is not a valid [`CollectionName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollectionNameError {
    /// The scope or the name is empty.
    #[error("{part} name is empty")]
    Empty {
        /// "scope" or "collection".
        part: &'static str,
    },
    /// Longer than [`MAX_COLLECTION_NAME_LEN`].
    #[error("{part} name is {len} characters long; the maximum is {max}")]
    TooLong {
        /// "scope" or "collection".
        part: &'static str,
        /// The length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A character outside `A-Z a-z 0-9 _ - %`.
    #[error(
        "{part} name {name:?} contains {found:?}; only letters, digits, '_', '-' and '%' are allowed"
    )]
    InvalidCharacter {
        /// "scope" or "collection".
        part: &'static str,
        /// The offending name.
        name: String,
        /// The character.
        found: char,
    },
    /// Starts with `_` or `%` (reserved, except for `_default`).
    #[error(
        "{part} name {name:?} starts with '_' or '%', which is reserved (only \"_default\" may)"
    )]
    Reserved {
        /// "scope" or "collection".
        part: &'static str,
        /// The offending name.
        name: String,
    },
    /// More than one `.` separator.
    #[error("collection {0:?} has more than one '.'; write it as scope.name")]
    TooManyDots(String),
}

/// A collection, written `scope.name`; `_default._default` is the default collection.
///
/// ```
/// use peerlite_proto::CollectionName;
/// let c: CollectionName = "inventory.parts".parse()?;
/// assert_eq!((c.scope(), c.name()), ("inventory", "parts"));
/// // A bare name lives in the default scope.
/// assert_eq!("parts".parse::<CollectionName>()?.to_string(), "_default.parts");
/// assert!(CollectionName::default().is_default());
/// # Ok::<(), peerlite_proto::CollectionNameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CollectionName {
    full: String,
    dot: usize,
}

impl CollectionName {
    /// Builds a collection name from its scope and name.
    pub fn new(scope: &str, name: &str) -> Result<CollectionName, CollectionNameError> {
        validate_part("scope", scope)?;
        validate_part("collection", name)?;
        Ok(CollectionName {
            full: format!("{scope}.{name}"),
            dot: scope.len(),
        })
    }

    /// Parses `scope.name`, or a bare `name` in the default scope.
    pub fn parse(s: &str) -> Result<CollectionName, CollectionNameError> {
        let mut parts = s.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, _) => CollectionName::new(DEFAULT_NAME, name),
            (Some(scope), Some(name), None) => CollectionName::new(scope, name),
            _ => Err(CollectionNameError::TooManyDots(s.to_owned())),
        }
    }

    /// The default collection `_default._default`.
    pub fn default_collection() -> CollectionName {
        CollectionName {
            full: format!("{DEFAULT_NAME}.{DEFAULT_NAME}"),
            dot: DEFAULT_NAME.len(),
        }
    }

    /// The scope part.
    pub fn scope(&self) -> &str {
        &self.full[..self.dot]
    }

    /// The collection part.
    pub fn name(&self) -> &str {
        &self.full[self.dot + 1..]
    }

    /// `scope.name`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// True for `_default._default`.
    pub fn is_default(&self) -> bool {
        self.scope() == DEFAULT_NAME && self.name() == DEFAULT_NAME
    }
}

fn validate_part(part: &'static str, s: &str) -> Result<(), CollectionNameError> {
    if s.is_empty() {
        return Err(CollectionNameError::Empty { part });
    }
    let len = s.chars().count();
    if len > MAX_COLLECTION_NAME_LEN {
        return Err(CollectionNameError::TooLong {
            part,
            len,
            max: MAX_COLLECTION_NAME_LEN,
        });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '%')))
    {
        return Err(CollectionNameError::InvalidCharacter {
            part,
            name: s.to_owned(),
            found,
        });
    }
    if (s.starts_with('_') || s.starts_with('%')) && s != DEFAULT_NAME {
        return Err(CollectionNameError::Reserved {
            part,
            name: s.to_owned(),
        });
    }
    Ok(())
}

impl Default for CollectionName {
    fn default() -> Self {
        CollectionName::default_collection()
    }
}

impl std::str::FromStr for CollectionName {
    type Err = CollectionNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CollectionName::parse(s)
    }
}

impl TryFrom<String> for CollectionName {
    type Error = CollectionNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CollectionName::parse(&s)
    }
}

impl From<CollectionName> for String {
    fn from(c: CollectionName) -> String {
        c.full
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_validation() {
        let c = CollectionName::parse("_default._default").unwrap();
        assert!(c.is_default());
        assert_eq!(c, CollectionName::default());
        assert_eq!(CollectionName::parse("a.b-c%1").unwrap().name(), "b-c%1");
        assert_eq!(
            CollectionName::parse("a.b.c"),
            Err(CollectionNameError::TooManyDots("a.b.c".into()))
        );
        assert_eq!(
            CollectionName::parse("a."),
            Err(CollectionNameError::Empty { part: "collection" })
        );
        assert!(matches!(
            CollectionName::parse("s.na me"),
            Err(CollectionNameError::InvalidCharacter { found: ' ', .. })
        ));
        assert!(matches!(
            CollectionName::parse("_system.x"),
            Err(CollectionNameError::Reserved { part: "scope", .. })
        ));
        assert!(matches!(
            CollectionName::parse(&"x".repeat(252)),
            Err(CollectionNameError::TooLong { len: 252, .. })
        ));
    }
}
