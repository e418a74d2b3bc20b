//! Document bodies: canonical CBOR maps, with JSON and serde at the edges.
//!
//! A [`Body`] always holds the canonical CBOR encoding of a map in the JSON data model
//! (text keys; arrays; text; integers within `i64`/`u64`; finite floats; booleans; null).
//! Canonical means one encoding per value: minimal headers, the shortest lossless float
//! width and map keys sorted shorter-first then bytewise. Because every peer encodes the
//! same value to the same bytes, the revision digest computed over those bytes is
//! reproducible everywhere.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cbor::{self, ScanError, ScanLimits};

/// Limits a [`Body`] must stay within. Peers use them to bound what they accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Maximum encoded size in bytes.
    pub max_bytes: usize,
    /// Maximum nesting depth of maps and arrays (the body itself is depth 1).
    pub max_depth: usize,
    /// Maximum number of keys, values and array elements in total.
    pub max_items: usize,
}

impl BodyLimits {
    /// The defaults: 4 MiB, depth 64, 262,144 items.
    pub const DEFAULT: BodyLimits = BodyLimits {
        max_bytes: 4 << 20,
        max_depth: 64,
        max_items: 1 << 18,
    };
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why bytes, JSON or a value could not become a [`Body`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is larger than allowed.
    #[error("document body is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body nests maps and arrays too deeply.
    #[error("document body nests deeper than {0} levels")]
    TooDeep(usize),
    /// The body holds too many values.
    #[error("document body holds more than {0} values")]
    TooManyItems(usize),
    /// The top-level value is not a map (a JSON object).
    #[error("document body must be a map (a JSON object), found {0}")]
    NotAMap(&'static str),
    /// The bytes are not one well-formed CBOR item.
    #[error("document body is not well-formed CBOR: {0}")]
    Malformed(String),
    /// A value outside the JSON data model.
    #[error(
        "document body holds {0}, which Peerlite bodies do not support (use the JSON data model)"
    )]
    Unsupported(&'static str),
    /// An integer that fits neither `i64` nor `u64`.
    #[error("document body holds an integer outside the 64-bit range")]
    IntegerOutOfRange,
    /// NaN or infinity.
    #[error("document body holds NaN or an infinite number, which JSON cannot represent")]
    NonFiniteFloat,
    /// A map key that is not text.
    #[error("document body has a map key that is not a string")]
    NonTextKey,
    /// A map key appears twice.
    #[error("document body has the key {0:?} twice in one map")]
    DuplicateKey(String),
    /// A top-level property whose name starts with `_`.
    #[error("top-level property {0:?} starts with '_', which is reserved for Peerlite metadata")]
    ReservedProperty(String),
    /// The JSON text could not be parsed.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A value could not be serialized into, or deserialized from, the body.
    #[error("cannot convert the document body: {0}")]
    Serde(String),
}

impl From<ScanError> for BodyError {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Truncated => BodyError::Malformed("input ends inside an item".into()),
            ScanError::TrailingBytes => {
                BodyError::Malformed("bytes follow the end of the body".into())
            }
            ScanError::TooDeep(d) => BodyError::TooDeep(d),
            ScanError::TooManyItems(n) => BodyError::TooManyItems(n),
            ScanError::Unsupported(what) => BodyError::Unsupported(what),
            ScanError::IntegerOutOfRange => BodyError::IntegerOutOfRange,
            ScanError::NonFiniteFloat => BodyError::NonFiniteFloat,
            ScanError::InvalidUtf8 => BodyError::Malformed("text is not UTF-8".into()),
            ScanError::NonTextKey => BodyError::NonTextKey,
            ScanError::DuplicateKey(k) => BodyError::DuplicateKey(k),
            ScanError::Malformed(m) => BodyError::Malformed(m.into()),
        }
    }
}

/// A document body: the canonical CBOR encoding of a map.
///
/// Cheap to clone (the bytes are reference counted).
///
/// ```
/// use peerlite_proto::Body;
///
/// let body = Body::from_json_str(r#"{"name": "Ada", "langs": ["en", "fr"], "age": 36}"#)?;
/// assert_eq!(body.to_json()["name"], "Ada");
/// // Key order does not matter: the encoding is canonical.
/// let same = Body::from_json_str(r#"{"age": 36, "langs": ["en", "fr"], "name": "Ada"}"#)?;
/// assert_eq!(body, same);
/// assert_eq!(body.as_bytes(), same.as_bytes());
/// # Ok::<(), peerlite_proto::BodyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Body(Bytes);

/// The encoding of the empty map.
const EMPTY_MAP: &[u8] = &[0xa0];

impl Body {
    /// The empty body `{}` (also the body of a plain deletion tombstone).
    pub fn empty() -> Body {
        Body(Bytes::from_static(EMPTY_MAP))
    }

    /// Validates CBOR bytes under the default limits and returns the canonical body.
    ///
    /// Canonical input is kept as is, without copying; other valid input is re-encoded.
    pub fn from_cbor(bytes: impl Into<Bytes>) -> Result<Body, BodyError> {
        Self::from_cbor_with_limits(bytes, &BodyLimits::DEFAULT)
    }

    /// Like [`Body::from_cbor`], with explicit limits.
    pub fn from_cbor_with_limits(
        bytes: impl Into<Bytes>,
        limits: &BodyLimits,
    ) -> Result<Body, BodyError> {
        let bytes = bytes.into();
        if bytes.len() > limits.max_bytes {
            return Err(BodyError::TooLarge {
                size: bytes.len(),
                max: limits.max_bytes,
            });
        }
        let report = cbor::scan(
            &bytes,
            ScanLimits {
                max_depth: limits.max_depth,
                max_items: limits.max_items,
                allow_bytes: false,
            },
        )?;
        if report.root_major != 5 {
            return Err(BodyError::NotAMap(major_name(report.root_major)));
        }
        if let Some(key) = report.reserved_key {
            return Err(BodyError::ReservedProperty(key));
        }
        let body = if report.canonical {
            Body(bytes)
        } else {
            let value: ciborium::Value = ciborium::from_reader(&bytes[..])
                .map_err(|e| BodyError::Malformed(e.to_string()))?;
            let canonical = canonicalize(value)?;
            let mut out = Vec::with_capacity(bytes.len());
            ciborium::into_writer(&canonical, &mut out)
                .map_err(|e| BodyError::Serde(e.to_string()))?;
            if out.len() > limits.max_bytes {
                return Err(BodyError::TooLarge {
                    size: out.len(),
                    max: limits.max_bytes,
                });
            }
            Body(Bytes::from(out))
        };
        Ok(body)
    }

    /// Builds a body from any serde-serializable value that serializes as a map.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Task { title: String, done: bool }
    ///
    /// let task = Task { title: "write docs".into(), done: false };
    /// let body = peerlite_proto::Body::from_serialize(&task)?;
    /// let back: Task = body.deserialize()?;
    /// assert_eq!(back, task);
    /// # Ok::<(), peerlite_proto::BodyError>(())
    /// ```
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Body, BodyError> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).map_err(|e| BodyError::Serde(e.to_string()))?;
        Self::from_cbor(out)
    }

    /// Builds a body from a JSON value, which must be an object.
    pub fn from_json(value: &serde_json::Value) -> Result<Body, BodyError> {
        if !value.is_object() {
            return Err(BodyError::NotAMap(json_kind(value)));
        }
        Self::from_serialize(value)
    }

    /// Parses JSON text into a body; the text must hold one object.
    pub fn from_json_str(json: &str) -> Result<Body, BodyError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| BodyError::Json(e.to_string()))?;
        Self::from_json(&value)
    }

    /// The body as a JSON value (always an object).
    pub fn to_json(&self) -> serde_json::Value {
        // A validated body always converts: every CBOR type it may hold has a JSON form.
        ciborium::from_reader(&self.0[..]).unwrap_or(serde_json::Value::Null)
    }

    /// The body as compact JSON text.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// Deserializes the body into any serde type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        ciborium::from_reader(&self.0[..]).map_err(|e| BodyError::Serde(e.to_string()))
    }

    /// The canonical CBOR bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The canonical CBOR bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Size of the encoding in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty map `{}`.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref() == EMPTY_MAP
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({})", self.to_json_string())
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

impl serde::Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Bytes::deserialize(d)?;
        Body::from_cbor(bytes).map_err(serde::de::Error::custom)
    }
}

fn major_name(major: u8) -> &'static str {
    match major {
        0 | 1 => "an integer",
        2 => "a byte string",
        3 => "a string",
        4 => "an array",
        6 => "a tagged value",
        _ => "a simple value or float",
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Sorts every map's keys into canonical order and rejects duplicates. The input has
/// already passed the scan, so types and bounds are known to be valid.
fn canonicalize(value: ciborium::Value) -> Result<ciborium::Value, BodyError> {
    use ciborium::Value;
    Ok(match value {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(canonicalize)
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut keyed = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let Value::Text(key) = k else {
                    return Err(BodyError::NonTextKey);
                };
                keyed.push((key, canonicalize(v)?));
            }
            keyed.sort_by(|a, b| cbor::key_order(a.0.as_bytes(), b.0.as_bytes()));
            if let Some(w) = keyed.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(BodyError::DuplicateKey(w[0].0.clone()));
            }
            Value::Map(
                keyed
                    .into_iter()
                    .map(|(k, v)| (Value::Text(k), v))
                    .collect(),
            )
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn json_round_trip_keeps_types() {
        let v = json!({"s": "x", "i": -5, "u": u64::MAX, "f": 1.5, "whole": 2.0,
                       "b": true, "n": null, "a": [1, "two", {"three": 3}], "o": {"k": []}});
        let body = Body::from_json(&v).unwrap();
        assert_eq!(body.to_json(), v);
    }

    #[test]
    fn canonical_form_does_not_depend_on_key_order_or_encoding() {
        let a = Body::from_json_str(r#"{"b": 1, "a": {"y": 2, "x": 1}}"#).unwrap();
        let b = Body::from_json_str(r#"{"a": {"x": 1, "y": 2}, "b": 1}"#).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        // A non-minimal integer and a double-width float re-encode to the same bytes.
        let mut wide = vec![0xa2, 0x61, b'a', 0x18, 0x01, 0x61, b'b', 0xfb];
        wide.extend_from_slice(&1.5f64.to_be_bytes());
        let narrow = Body::from_json_str(r#"{"a": 1, "b": 1.5}"#).unwrap();
        assert_eq!(Body::from_cbor(wide).unwrap(), narrow);
    }

    #[test]
    fn canonical_input_is_not_copied() {
        let body = Body::from_json_str(r#"{"k": "v"}"#).unwrap();
        let bytes = body.to_bytes();
        let again = Body::from_cbor(bytes.clone()).unwrap();
        assert_eq!(again.as_bytes().as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn rejects_non_maps_and_bad_json() {
        assert_eq!(
            Body::from_json_str("[1, 2]"),
            Err(BodyError::NotAMap("an array"))
        );
        assert_eq!(
            Body::from_json_str("3"),
            Err(BodyError::NotAMap("a number"))
        );
        assert!(matches!(Body::from_json_str("{"), Err(BodyError::Json(_))));
        assert_eq!(
            Body::from_cbor(vec![0x83, 1, 2, 3]),
            Err(BodyError::NotAMap("an array"))
        );
        assert!(matches!(
            Body::from_cbor(vec![0xa1]),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_reserved_and_duplicate_keys() {
        assert_eq!(
            Body::from_json_str(r#"{"_id": "x"}"#),
            Err(BodyError::ReservedProperty("_id".into()))
        );
        // Nested '_' keys are fine.
        assert!(Body::from_json_str(r#"{"a": {"_id": "x"}}"#).is_ok());
        // Duplicate keys that are not adjacent are found while re-sorting.
        let dup = vec![0xa3, 0x61, b'a', 1, 0x61, b'b', 2, 0x61, b'a', 3];
        assert_eq!(
            Body::from_cbor(dup),
            Err(BodyError::DuplicateKey("a".into()))
        );
    }

    #[test]
    fn hostile_nesting_is_refused_without_exhausting_the_stack() {
        // {"a": [[[[...]]]]} nested 200,000 deep: refused at the default depth of 64.
        let mut cbor = vec![0xa1, 0x61, b'a'];
        cbor.extend(std::iter::repeat_n(0x81, 200_000));
        cbor.push(0x00);
        assert!(matches!(
            Body::from_cbor(cbor.clone()),
            Err(BodyError::TooDeep(64))
        ));
        // As a frame: bare nesting, refused by the frame decoder's own bound.
        assert!(crate::Frame::decode(&cbor[3..], &crate::FrameLimits::default()).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let limits = BodyLimits {
            max_bytes: 16,
            max_depth: 2,
            max_items: 4,
        };
        let big = Body::from_json_str(r#"{"k": "0123456789abcdef"}"#).unwrap();
        assert!(matches!(
            Body::from_cbor_with_limits(big.to_bytes(), &limits),
            Err(BodyError::TooLarge { max: 16, .. })
        ));
        let deep = Body::from_json_str(r#"{"a": {"b": {}}}"#).unwrap();
        let roomy = BodyLimits {
            max_items: 100,
            ..limits
        };
        assert_eq!(
            Body::from_cbor_with_limits(deep.to_bytes(), &roomy),
            Err(BodyError::TooDeep(2))
        );
        let many = Body::from_json_str(r#"{"a": [1, 2, 3]}"#).unwrap();
        assert_eq!(
            Body::from_cbor_with_limits(many.to_bytes(), &limits),
            Err(BodyError::TooManyItems(4))
        );
    }

    #[test]
    fn empty_body() {
        assert!(Body::empty().is_empty());
        assert_eq!(Body::from_json_str("{}").unwrap(), Body::empty());
        assert_eq!(Body::empty().to_json(), json!({}));
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-z]{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_object_round_trips_canonically(
            entries in prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..8)
        ) {
            let v = serde_json::Value::Object(entries.into_iter().collect());
            let body = Body::from_json(&v).unwrap();
            prop_assert_eq!(body.to_json(), v);
            // Re-validating canonical bytes is the identity.
            let again = Body::from_cbor(body.to_bytes()).unwrap();
            prop_assert_eq!(again.as_bytes(), body.as_bytes());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Body::from_cbor(bytes);
        }
    }
}
