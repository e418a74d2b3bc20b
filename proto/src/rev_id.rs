//! Revision identifiers: `generation-digest`.
//!
//! The digest is the first 16 bytes of SHA-256 over
//!
//! ```text
//! "peerlite-rev-v1" ‖ parent ‖ deleted ‖ body
//! parent  = 0x00                                   (a first revision)
//!         | 0x01 ‖ generation as u64 big-endian ‖ digest (16 bytes)
//! deleted = 0x00 | 0x01
//! body    = the canonical CBOR bytes of the body
//! ```
//!
//! so two peers that make the same change on top of the same parent produce the same
//! revision ID, and a receiver can check that a revision's ID matches its content.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::Body;

/// Length of a revision digest in bytes.
pub const DIGEST_LEN: usize = 16;

const DOMAIN: &[u8] = b"peerlite-rev-v1";

/// Why text or values are not a valid [`RevId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum RevIdError {
    /// Not of the form `generation-digest`.
    #[error("revision ID {0:?} is not of the form <generation>-<32 hex digits>")]
    Malformed(String),
    /// Generation 0 or one that does not fit in 64 bits.
    #[error("revision ID {0:?} has an invalid generation (it must be 1 or more)")]
    BadGeneration(String),
    /// A digest of the wrong length.
    #[error("revision digest is {0} bytes long; it must be {DIGEST_LEN}")]
    BadDigestLength(usize),
    /// The parent is at the largest possible generation.
    #[error("revision generation overflow")]
    GenerationOverflow,
}

/// A revision ID: a generation (1 for a document's first revision, parent + 1 after) and a
/// content digest.
///
/// IDs order by generation, then digest; that order picks the winner among conflicting
/// revisions.
///
/// ```
/// use peerlite_proto::{Body, RevId};
/// let body = Body::from_json_str(r#"{"n": 1}"#)?;
/// let first = RevId::compute(None, false, &body)?;
/// assert_eq!(first.generation(), 1);
/// let second = RevId::compute(Some(&first), false, &body)?;
/// assert_eq!(second.generation(), 2);
/// let parsed: RevId = second.to_string().parse()?;
/// assert_eq!(parsed, second);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevId {
    generation: u64,
    digest: [u8; DIGEST_LEN],
}

impl RevId {
    /// Assembles a revision ID from its parts. `generation` must be at least 1.
    pub fn from_parts(generation: u64, digest: [u8; DIGEST_LEN]) -> Result<RevId, RevIdError> {
        if generation == 0 {
            return Err(RevIdError::BadGeneration("0".into()));
        }
        Ok(RevId { generation, digest })
    }

    /// Computes the ID of a revision from its parent, deleted flag and body.
    pub fn compute(
        parent: Option<&RevId>,
        deleted: bool,
        body: &Body,
    ) -> Result<RevId, RevIdError> {
        let generation = match parent {
            None => 1,
            Some(p) => p
                .generation
                .checked_add(1)
                .ok_or(RevIdError::GenerationOverflow)?,
        };
        let mut h = Sha256::new();
        h.update(DOMAIN);
        match parent {
            None => h.update([0u8]),
            Some(p) => {
                h.update([1u8]);
                h.update(p.generation.to_be_bytes());
                h.update(p.digest);
            }
        }
        h.update([u8::from(deleted)]);
        h.update(body.as_bytes());
        let full = h.finalize();
        let mut digest = [0u8; DIGEST_LEN];
        digest.copy_from_slice(&full[..DIGEST_LEN]);
        Ok(RevId { generation, digest })
    }

    /// The generation: 1 for a first revision, the parent's plus one otherwise.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The content digest.
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }
}

impl std::str::FromStr for RevId {
    type Err = RevIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (generation, hex) = s
            .split_once('-')
            .ok_or_else(|| RevIdError::Malformed(s.to_owned()))?;
        if generation.is_empty()
            || !generation.bytes().all(|b| b.is_ascii_digit())
            || (generation.len() > 1 && generation.starts_with('0'))
        {
            return Err(RevIdError::BadGeneration(s.to_owned()));
        }
        let generation: u64 = generation
            .parse()
            .map_err(|_| RevIdError::BadGeneration(s.to_owned()))?;
        if hex.len() != DIGEST_LEN * 2 {
            return Err(RevIdError::Malformed(s.to_owned()));
        }
        let mut digest = [0u8; DIGEST_LEN];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(|| RevIdError::Malformed(s.to_owned()))?;
            let lo = hex_value(pair[1]).ok_or_else(|| RevIdError::Malformed(s.to_owned()))?;
            digest[i] = (hi << 4) | lo;
        }
        RevId::from_parts(generation, digest).map_err(|_| RevIdError::BadGeneration(s.to_owned()))
    }
}

/// Lower-case hex digits only, so each revision has exactly one text form.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for RevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.generation)?;
        for b in self.digest {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Text (`"3-…"`) in human-readable formats such as JSON; a two-element array
/// `[generation, digest bytes]` in CBOR.
impl serde::Serialize for RevId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        if s.is_human_readable() {
            return s.collect_str(self);
        }
        struct DigestBytes<'a>(&'a [u8]);
        impl serde::Serialize for DigestBytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.generation)?;
        t.serialize_element(&DigestBytes(&self.digest))?;
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for RevId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            return s.parse().map_err(D::Error::custom);
        }
        let (generation, digest): (u64, bytes::Bytes) = serde::Deserialize::deserialize(d)?;
        let digest: [u8; DIGEST_LEN] = digest
            .as_ref()
            .try_into()
            .map_err(|_| D::Error::custom(RevIdError::BadDigestLength(digest.len())))?;
        RevId::from_parts(generation, digest).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Body {
        Body::from_json_str(json).unwrap()
    }

    #[test]
    fn digest_depends_on_parent_deleted_and_body() {
        let b = body(r#"{"a": 1}"#);
        let r1 = RevId::compute(None, false, &b).unwrap();
        assert_eq!(r1, RevId::compute(None, false, &b).unwrap());
        assert_ne!(r1, RevId::compute(None, true, &b).unwrap());
        assert_ne!(
            r1,
            RevId::compute(None, false, &body(r#"{"a": 2}"#)).unwrap()
        );
        let r2 = RevId::compute(Some(&r1), false, &b).unwrap();
        assert_eq!(r2.generation(), 2);
        assert_ne!(r2.digest(), r1.digest());
    }

    #[test]
    fn text_form_round_trips_and_rejects_junk() {
        let r = RevId::compute(None, false, &Body::empty()).unwrap();
        let text = r.to_string();
        assert_eq!(text.len(), 2 + 32);
        assert_eq!(text.parse::<RevId>().unwrap(), r);
        for bad in [
            "",
            "1",
            "1-",
            "-00000000000000000000000000000000",
            "0-00000000000000000000000000000000",
            "01-00000000000000000000000000000000",
            "x-00000000000000000000000000000000",
            "1-0000000000000000000000000000000",
            "1-0000000000000000000000000000000g",
            "1-0000000000000000000000000000000A",
            "99999999999999999999999-00000000000000000000000000000000",
        ] {
            assert!(bad.parse::<RevId>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn cbor_and_json_forms() {
        let r = RevId::compute(None, false, &Body::empty()).unwrap();
        let mut buf = Vec::new();
        ciborium::into_writer(&r, &mut buf).unwrap();
        assert_eq!(buf.len(), 1 + 1 + 1 + DIGEST_LEN);
        assert_eq!(ciborium::from_reader::<RevId, _>(&buf[..]).unwrap(), r);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, format!("\"{r}\""));
        assert_eq!(serde_json::from_str::<RevId>(&json).unwrap(), r);
        // A short digest is refused.
        let mut bad = Vec::new();
        ciborium::into_writer(&(1u64, bytes::Bytes::from_static(&[1, 2])), &mut bad).unwrap();
        assert!(ciborium::from_reader::<RevId, _>(&bad[..]).is_err());
    }

    #[test]
    fn ordering_is_generation_then_digest() {
        let a = RevId::from_parts(2, [0xff; DIGEST_LEN]).unwrap();
        let b = RevId::from_parts(3, [0x00; DIGEST_LEN]).unwrap();
        let c = RevId::from_parts(3, [0x01; DIGEST_LEN]).unwrap();
        assert!(a < b && b < c);
        assert!(RevId::from_parts(0, [0; DIGEST_LEN]).is_err());
    }
}
