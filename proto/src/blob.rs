//! Blobs: files inside documents. A blob is bytes identified by their SHA-256 digest and
//! length; a document refers to one with Couchbase Lite's convention, a JSON object at any
//! depth of its body:
//!
//! ```json
//! {"@type": "blob", "digest": "sha256-<base64 of the 32 bytes>", "length": 1234,
//!  "content_type": "image/jpeg"}
//! ```
//!
//! [`Blob`] builds and reads these references; [`Body::blobs`] finds every one in a body.
//! The bytes themselves live in the database's blob store, once however many documents
//! refer to them.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::Body;

/// The value of the `@type` key that marks a blob reference.
pub const BLOB_TYPE: &str = "blob";

/// The prefix of a digest's text form.
const DIGEST_PREFIX: &str = "sha256-";

/// A blob's identity: the SHA-256 of its bytes. Written `sha256-<base64>` in documents.
///
/// ```
/// use peerlite_proto::BlobDigest;
///
/// let d = BlobDigest::of(b"hello");
/// assert_eq!(d.to_string(), "sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
/// assert_eq!(d.to_string().parse::<BlobDigest>()?, d);
/// # Ok::<(), peerlite_proto::BlobRefError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobDigest([u8; 32]);

impl BlobDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobDigest {
        BlobDigest(Sha256::digest(bytes).into())
    }

    /// A digest from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> BlobDigest {
        BlobDigest(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters: a name safe for any file system.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A digest from [`BlobDigest::to_hex`]'s form.
    pub fn from_hex(hex: &str) -> Option<BlobDigest> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(BlobDigest(out))
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.0);
        write!(f, "{DIGEST_PREFIX}{b64}")
    }
}

impl fmt::Debug for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for BlobDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match s.is_human_readable() {
            true => s.collect_str(self),
            false => s.serialize_bytes(&self.0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for BlobDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = BlobDigest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SHA-256 digest")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BlobDigest, E> {
                let bytes: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &"32 bytes"))?;
                Ok(BlobDigest(bytes))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BlobDigest, E> {
                v.parse().map_err(E::custom)
            }
        }
        match d.is_human_readable() {
            true => d.deserialize_str(Visitor),
            false => d.deserialize_bytes(Visitor),
        }
    }
}

impl FromStr for BlobDigest {
    type Err = BlobRefError;

    fn from_str(s: &str) -> Result<BlobDigest, BlobRefError> {
        let bad = || BlobRefError::BadDigest(s.chars().take(80).collect());
        let b64 = s.strip_prefix(DIGEST_PREFIX).ok_or_else(bad)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(BlobDigest(bytes))
    }
}

/// Incremental SHA-256 of a blob's bytes, for checking a blob as it streams in.
#[derive(Clone, Default)]
pub struct BlobHasher {
    hasher: Sha256,
    length: u64,
}

impl BlobHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> BlobHasher {
        BlobHasher::default()
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.length += bytes.len() as u64;
    }

    /// How many bytes it has seen.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The digest of everything seen, and its length.
    pub fn finish(self) -> (BlobDigest, u64) {
        (BlobDigest(self.hasher.finalize().into()), self.length)
    }
}

impl fmt::Debug for BlobHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobHasher")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// A reference to a blob, as a document holds it.
///
/// ```
/// use peerlite_proto::{Blob, BlobDigest, Body};
///
/// let photo = Blob::new(BlobDigest::of(b"jpeg bytes"), 10, Some("image/jpeg".into()));
/// let body = Body::from_json(&serde_json::json!({"title": "Beach", "photo": photo.to_json()}))?;
/// assert_eq!(body.blobs()?, vec![photo]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Blob {
    /// The SHA-256 of the bytes.
    pub digest: BlobDigest,
    /// How many bytes.
    pub length: u64,
    /// The MIME type, if known.
    pub content_type: Option<String>,
}

impl Blob {
    /// A reference to the blob `digest` of `length` bytes.
    pub fn new(digest: BlobDigest, length: u64, content_type: Option<String>) -> Blob {
        Blob {
            digest,
            length,
            content_type,
        }
    }

    /// The JSON object a document holds.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("@type".into(), Value::from(BLOB_TYPE));
        m.insert("digest".into(), Value::from(self.digest.to_string()));
        m.insert("length".into(), Value::from(self.length));
        if let Some(t) = &self.content_type {
            m.insert("content_type".into(), Value::from(t.as_str()));
        }
        Value::Object(m)
    }

    /// Reads a reference: `Ok(None)` for a value that is not one (no `"@type": "blob"`),
    /// an error for one that is but is malformed.
    pub fn from_json(value: &Value) -> Result<Option<Blob>, BlobRefError> {
        let Some(obj) = value.as_object() else {
            return Ok(None);
        };
        if obj.get("@type").and_then(Value::as_str) != Some(BLOB_TYPE) {
            return Ok(None);
        }
        let digest = obj
            .get("digest")
            .ok_or(BlobRefError::Missing("digest"))?
            .as_str()
            .ok_or(BlobRefError::WrongType("digest"))?
            .parse()?;
        let length = obj
            .get("length")
            .ok_or(BlobRefError::Missing("length"))?
            .as_u64()
            .ok_or(BlobRefError::WrongType("length"))?;
        let content_type = match obj.get("content_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(BlobRefError::WrongType("content_type")),
        };
        Ok(Some(Blob {
            digest,
            length,
            content_type,
        }))
    }
}

/// A blob reference in a document that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[non_exhaustive]
pub enum BlobRefError {
    /// The digest is not `sha256-` and the base64 of 32 bytes.
    #[error("blob digest {0:?} is not sha256- followed by the base64 of 32 bytes")]
    BadDigest(String),
    /// A required key is missing.
    #[error("blob reference has no {0:?}")]
    Missing(&'static str),
    /// A key has the wrong type.
    #[error("blob reference's {0:?} has the wrong type")]
    WrongType(&'static str),
}

/// [`BlobRefError`] as a recording holds it: its key names are read back as the static
/// names the error holds.
#[derive(serde::Deserialize)]
enum BlobRefErrorRecord {
    BadDigest(String),
    Missing(String),
    WrongType(String),
}

impl<'de> serde::Deserialize<'de> for BlobRefError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BlobRefError, D::Error> {
        let key = |key: String| {
            ["digest", "length", "content_type"]
                .into_iter()
                .find(|k| *k == key)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown blob reference key {key:?}"))
                })
        };
        Ok(match BlobRefErrorRecord::deserialize(d)? {
            BlobRefErrorRecord::BadDigest(digest) => BlobRefError::BadDigest(digest),
            BlobRefErrorRecord::Missing(k) => BlobRefError::Missing(key(k)?),
            BlobRefErrorRecord::WrongType(k) => BlobRefError::WrongType(key(k)?),
        })
    }
}

impl Body {
    /// Every blob this body refers to, at any depth, in document order (a blob referred
    /// to twice appears twice). A body with no `@type` key anywhere is answered without
    /// decoding it.
    pub fn blobs(&self) -> Result<Vec<Blob>, BlobRefError> {
        if !self.may_refer_to_blobs() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        collect(&self.to_json(), &mut out)?;
        Ok(out)
    }
}

impl Body {
    /// Whether the body may hold a blob reference: it has an `@type` key somewhere (CBOR
    /// text strings are raw UTF-8, so without these bytes there is none).
    pub(crate) fn may_refer_to_blobs(&self) -> bool {
        let bytes = self.as_bytes();
        memchr::memchr_iter(b'@', bytes).any(|at| bytes[at..].starts_with(b"@type"))
    }
}

/// Collects the references in `value` (its depth is bounded by the body's limits).
fn collect(value: &Value, out: &mut Vec<Blob>) -> Result<(), BlobRefError> {
    if let Some(blob) = Blob::from_json(value)? {
        out.push(blob);
        return Ok(());
    }
    match value {
        Value::Object(m) => m.values().try_for_each(|v| collect(v, out)),
        Value::Array(a) => a.iter().try_for_each(|v| collect(v, out)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digests_round_trip_and_refuse_what_is_not_one() {
        let d = BlobDigest::of(b"abc");
        assert_eq!(BlobDigest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(d.to_string().parse::<BlobDigest>(), Ok(d));
        for bad in [
            "",
            "sha256-",
            "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
            "sha256-!!!",
            "sha256-YWJj",
        ] {
            assert!(
                matches!(bad.parse::<BlobDigest>(), Err(BlobRefError::BadDigest(_))),
                "{bad}"
            );
        }
        assert_eq!(BlobDigest::from_hex("zz"), None);
    }

    #[test]
    fn hasher_matches_the_one_shot_digest() {
        let mut h = BlobHasher::new();
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), (BlobDigest::of(b"hello"), 5));
    }

    #[test]
    fn references_are_found_at_any_depth_and_malformed_ones_refused() {
        let a = Blob::new(BlobDigest::of(b"a"), 1, None);
        let b = Blob::new(BlobDigest::of(b"bb"), 2, Some("text/plain".into()));
        let body = Body::from_json(&json!({
            "x": a.to_json(),
            "list": [1, {"deep": b.to_json()}],
            "@type": "not a blob",
        }))
        .unwrap();
        let mut found = body.blobs().unwrap();
        found.sort_by_key(|x| x.length);
        assert_eq!(found, vec![a, b]);
        assert_eq!(
            Body::from_json(&json!({"a": 1})).unwrap().blobs(),
            Ok(vec![])
        );
        let bad =
            Body::from_json(&json!({"p": {"@type": "blob", "digest": "sha256-x", "length": 1}}));
        assert!(matches!(
            bad.unwrap().blobs(),
            Err(BlobRefError::BadDigest(_))
        ));
        let bad = Body::from_json(&json!({"p": {"@type": "blob", "digest": a_digest()}}));
        assert_eq!(bad.unwrap().blobs(), Err(BlobRefError::Missing("length")));
        let bad =
            Body::from_json(&json!({"p": {"@type": "blob", "digest": a_digest(), "length": -1}}));
        assert_eq!(bad.unwrap().blobs(), Err(BlobRefError::WrongType("length")));
    }

    fn a_digest() -> String {
        BlobDigest::of(b"a").to_string()
    }
}
