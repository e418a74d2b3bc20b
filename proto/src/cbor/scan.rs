//! An allocation-free structural scan of CBOR input.
//!
//! Everything a peer sends is scanned before it is decoded: the scan bounds nesting depth
//! and the number of items (so a 1 MiB input cannot expand into a gigabyte of decoded
//! values), rejects what the Peerlite data model does not hold (byte strings, tags,
//! undefined, indefinite lengths, integers outside `i64`/`u64`, non-finite floats), and
//! reports whether the input is already in canonical form (minimal headers, shortest
//! lossless floats, map keys in length-then-bytewise order), which lets canonical input be
//! accepted without re-encoding.

use half::f16;

use super::head::{Head, HeadError, major, read_head};

/// Limits applied while scanning one CBOR item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanLimits {
    /// Maximum nesting depth of arrays and maps (the outermost map is depth 1).
    pub(crate) max_depth: usize,
    /// Maximum number of data items, counting every key, value and element.
    pub(crate) max_items: usize,
    /// Accept byte strings (frames carry digests and bodies as bytes; bodies may not).
    pub(crate) allow_bytes: bool,
}

/// Why a scan failed. Converted into the public error of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// The input ended inside an item.
    Truncated,
    /// Bytes follow the first complete item.
    TrailingBytes,
    /// Nesting deeper than the limit.
    TooDeep(usize),
    /// More items than the limit.
    TooManyItems(usize),
    /// A type or encoding outside the data model.
    Unsupported(&'static str),
    /// An integer outside the range of `i64` / `u64`.
    IntegerOutOfRange,
    /// A NaN or infinite float.
    NonFiniteFloat,
    /// A text string that is not UTF-8.
    InvalidUtf8,
    /// A map key that is not a text string.
    NonTextKey,
    /// The same key twice in one map.
    DuplicateKey(String),
    /// A reserved header value.
    Malformed(&'static str),
}

/// The result of a successful scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScanReport {
    /// Major type of the outermost item (5 = map).
    pub(crate) root_major: u8,
    /// True when the input is byte-for-byte what the canonical encoder would write.
    pub(crate) canonical: bool,
    /// The first key of the outermost map that starts with `_`, if any.
    pub(crate) reserved_key: Option<String>,
}

/// Scans exactly one CBOR item occupying all of `input`.
pub(crate) fn scan(input: &[u8], limits: ScanLimits) -> Result<ScanReport, ScanError> {
    let mut s = Scanner {
        buf: input,
        pos: 0,
        items: 0,
        canonical: true,
        reserved_key: None,
        limits,
    };
    let root_major = s.peek_major()?;
    s.item(1)?;
    if s.pos != input.len() {
        return Err(ScanError::TrailingBytes);
    }
    Ok(ScanReport {
        root_major,
        canonical: s.canonical,
        reserved_key: s.reserved_key,
    })
}

/// Compares two map keys in canonical order: shorter first, then bytewise.
pub(crate) fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    items: usize,
    canonical: bool,
    reserved_key: Option<String>,
    limits: ScanLimits,
}

impl<'a> Scanner<'a> {
    fn peek_major(&self) -> Result<u8, ScanError> {
        self.buf
            .get(self.pos)
            .map(|b| b >> 5)
            .ok_or(ScanError::Truncated)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ScanError> {
        let n = usize::try_from(n).map_err(|_| ScanError::Truncated)?;
        let end = self.pos.checked_add(n).ok_or(ScanError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(ScanError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn head(&mut self) -> Result<Head, ScanError> {
        let head = read_head(self.buf, &mut self.pos).map_err(|e| match e {
            HeadError::Indefinite => ScanError::Unsupported("indefinite-length items"),
            HeadError::Reserved => ScanError::Malformed("reserved additional information"),
            _ => ScanError::Truncated,
        })?;
        // Floats (major 7 with 2/4/8 bytes) have their own canonical rule.
        if !head.is_minimal() && head.major != major::SIMPLE {
            self.canonical = false;
        }
        Ok(head)
    }

    fn count_item(&mut self) -> Result<(), ScanError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(ScanError::TooManyItems(self.limits.max_items));
        }
        Ok(())
    }

    fn item(&mut self, depth: usize) -> Result<(), ScanError> {
        self.count_item()?;
        let head = self.head()?;
        match head.major {
            0 => Ok(()),
            1 => {
                if head.arg > i64::MAX as u64 {
                    Err(ScanError::IntegerOutOfRange)
                } else {
                    Ok(())
                }
            }
            2 if self.limits.allow_bytes => self.take(head.arg).map(|_| ()),
            2 => Err(ScanError::Unsupported("byte strings")),
            3 => {
                let bytes = self.take(head.arg)?;
                std::str::from_utf8(bytes).map_err(|_| ScanError::InvalidUtf8)?;
                Ok(())
            }
            4 => {
                self.enter(depth)?;
                for _ in 0..head.arg {
                    self.item(depth + 1)?;
                }
                Ok(())
            }
            5 => {
                self.enter(depth)?;
                let mut previous: Option<&'a [u8]> = None;
                for _ in 0..head.arg {
                    self.count_item()?;
                    let key_head = self.head()?;
                    if key_head.major != 3 {
                        return Err(ScanError::NonTextKey);
                    }
                    let key = self.take(key_head.arg)?;
                    let text = std::str::from_utf8(key).map_err(|_| ScanError::InvalidUtf8)?;
                    if depth == 1 && self.reserved_key.is_none() && text.starts_with('_') {
                        self.reserved_key = Some(text.to_owned());
                    }
                    if let Some(prev) = previous {
                        match key_order(prev, key) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => {
                                return Err(ScanError::DuplicateKey(
                                    String::from_utf8_lossy(key).into_owned(),
                                ));
                            }
                            // Out of order: valid, but must be re-sorted. Duplicates
                            // that are not adjacent are caught when re-encoding.
                            std::cmp::Ordering::Greater => self.canonical = false,
                        }
                    }
                    previous = Some(key);
                    self.item(depth + 1)?;
                }
                Ok(())
            }
            6 => Err(ScanError::Unsupported("tags")),
            _ => self.simple_or_float(&head),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), ScanError> {
        if depth > self.limits.max_depth {
            Err(ScanError::TooDeep(self.limits.max_depth))
        } else {
            Ok(())
        }
    }

    fn simple_or_float(&mut self, head: &Head) -> Result<(), ScanError> {
        let (value, width) = match head.info {
            20..=22 => return Ok(()), // false, true, null
            23 => return Err(ScanError::Unsupported("undefined")),
            0..=19 | 24 => return Err(ScanError::Unsupported("simple values")),
            25 => (f64::from(f16::from_bits(head.arg as u16)), 2),
            26 => (f64::from(f32::from_bits(head.arg as u32)), 4),
            _ => (f64::from_bits(head.arg), 8),
        };
        if !value.is_finite() {
            return Err(ScanError::NonFiniteFloat);
        }
        if canonical_float_width(value) != width {
            self.canonical = false;
        }
        Ok(())
    }
}

/// The width ciborium (and so the canonical form) uses for a float: the shortest of
/// half, single and double precision that holds the value exactly.
fn canonical_float_width(v: f64) -> u8 {
    if f64::from(f16::from_f64(v)).to_bits() == v.to_bits() {
        2
    } else if f64::from(v as f32).to_bits() == v.to_bits() {
        4
    } else {
        8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ScanLimits = ScanLimits {
        max_depth: 4,
        max_items: 100,
        allow_bytes: false,
    };

    #[test]
    fn frame_profile_allows_byte_strings() {
        let frame = ScanLimits {
            allow_bytes: true,
            ..LIMITS
        };
        assert!(scan(&[0x82, 0x01, 0x42, 0xaa, 0xbb], frame).is_ok());
        assert_eq!(
            scan(&[0x82, 0x01, 0x42, 0xaa], frame),
            Err(ScanError::Truncated)
        );
    }

    fn enc(v: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).expect("encode");
        out
    }

    #[test]
    fn canonical_map_is_reported_canonical() {
        use ciborium::Value as V;
        let v = V::Map(vec![
            (V::Text("a".into()), V::Integer(1.into())),
            (V::Text("bb".into()), V::Float(1.5)),
            (V::Text("ab".into()), V::Null),
        ]);
        // "bb" before "ab" is out of order.
        let r = scan(&enc(&v), LIMITS).expect("scan");
        assert!(!r.canonical);
        let v = V::Map(vec![
            (V::Text("a".into()), V::Integer(1.into())),
            (V::Text("ab".into()), V::Float(1.5)),
            (V::Text("bb".into()), V::Null),
        ]);
        let r = scan(&enc(&v), LIMITS).expect("scan");
        assert!(r.canonical);
        assert_eq!(r.root_major, 5);
    }

    #[test]
    fn non_minimal_headers_and_wide_floats_are_not_canonical() {
        // {"a": 1} with the integer in a 1-byte extension.
        assert!(
            !scan(&[0xa1, 0x61, b'a', 0x18, 0x01], LIMITS)
                .unwrap()
                .canonical
        );
        // {"a": 1.0} as a double.
        let mut d = vec![0xa1, 0x61, b'a', 0xfb];
        d.extend_from_slice(&1.0f64.to_be_bytes());
        assert!(!scan(&d, LIMITS).unwrap().canonical);
    }

    #[test]
    fn rejects_what_the_model_does_not_hold() {
        assert_eq!(
            scan(&[0xa1, 0x61, b'a', 0x41, 0x00], LIMITS),
            Err(ScanError::Unsupported("byte strings"))
        );
        assert_eq!(
            scan(&[0xa1, 0x61, b'a', 0xc1, 0x00], LIMITS),
            Err(ScanError::Unsupported("tags"))
        );
        assert_eq!(
            scan(&[0xbf, 0xff], LIMITS),
            Err(ScanError::Unsupported("indefinite-length items"))
        );
        assert_eq!(
            scan(&[0xa1, 0x01, 0x01], LIMITS),
            Err(ScanError::NonTextKey)
        );
        assert_eq!(
            scan(&[0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02], LIMITS),
            Err(ScanError::DuplicateKey("a".into()))
        );
        let mut nan = vec![0xa1, 0x61, b'a', 0xfb];
        nan.extend_from_slice(&f64::NAN.to_be_bytes());
        assert_eq!(scan(&nan, LIMITS), Err(ScanError::NonFiniteFloat));
        // -2^64 does not fit an i64.
        let mut big = vec![0xa1, 0x61, b'a', 0x3b];
        big.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(scan(&big, LIMITS), Err(ScanError::IntegerOutOfRange));
        assert_eq!(
            scan(&[0xa1, 0x61, 0xff, 0x01], LIMITS),
            Err(ScanError::InvalidUtf8)
        );
    }

    #[test]
    fn bounds_depth_items_and_length() {
        // Five nested arrays inside a map: depth 6 > 4.
        let deep = [0xa1, 0x61, b'a', 0x81, 0x81, 0x81, 0x81, 0x80];
        assert_eq!(scan(&deep, LIMITS), Err(ScanError::TooDeep(4)));
        // An array claiming 2^63 elements ends at the input's end, not in an allocation.
        let mut huge = vec![0xa1, 0x61, b'a', 0x9b];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(scan(&huge, LIMITS), Err(ScanError::Truncated));
        let many: Vec<u8> = [0xa1, 0x61, b'a', 0x98, 200]
            .into_iter()
            .chain(std::iter::repeat_n(0u8, 200))
            .collect();
        assert_eq!(scan(&many, LIMITS), Err(ScanError::TooManyItems(100)));
        assert_eq!(scan(&[0xa1, 0x61], LIMITS), Err(ScanError::Truncated));
        assert_eq!(scan(&[0xa0, 0x00], LIMITS), Err(ScanError::TrailingBytes));
        assert_eq!(scan(&[], LIMITS), Err(ScanError::Truncated));
    }
}
