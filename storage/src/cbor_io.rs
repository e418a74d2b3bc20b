//! A small CBOR reader and writer for the store's own records.
//!
//! Document records and changes-feed entries are read on every sync step (a push reads
//! each document it sends, a receiver each document it is sent), and decoding them
//! through serde and ciborium was the largest single cost of a resync. Their layout is
//! fixed and tiny — arrays, unsigned integers, byte and text strings, booleans and null —
//! so this module reads and writes exactly that subset, byte for byte as ciborium does
//! (minimal-length headers, definite lengths), and the on-disk format is unchanged. Item
//! heads are read and written by `peerlite_proto::cbor`, the one CBOR layer the wire
//! codec uses too.
//!
//! Every read is bounds-checked: a truncated or malformed record is an error, never a
//! panic, and a declared length larger than the bytes that remain is refused before
//! anything is allocated for it.

/// Why a record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// The input ended inside an item.
    #[error("record ends inside an item")]
    Truncated,
    /// An item of another type than the layout has at this place.
    #[error("expected {expected}, found initial byte {found:#04x}")]
    Unexpected {
        /// What the layout has here.
        expected: &'static str,
        /// The initial byte found.
        found: u8,
    },
    /// An array of another length than the layout has at this place.
    #[error("expected an array of {expected} elements, found {found}")]
    Length {
        /// The layout's length.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// A length that cannot fit in the input.
    #[error("length {0} exceeds the record")]
    TooLong(u64),
    /// A text string that is not UTF-8.
    #[error("text string is not UTF-8")]
    InvalidUtf8,
    /// Bytes after the end of the record.
    #[error("{0} bytes after the end of the record")]
    TrailingBytes(usize),
}

use peerlite_proto::cbor::major::{ARRAY, BYTES, TEXT, UINT};
use peerlite_proto::cbor::{self, FALSE, HeadError, NULL, TRUE};

/// Reads items from a byte slice, front to back.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.remaining() {
            return Err(ReadError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads an item head of major type `major`; returns its argument.
    fn head(&mut self, major: u8, expected: &'static str) -> Result<u64, ReadError> {
        let first = *self.buf.get(self.pos).ok_or(ReadError::Truncated)?;
        let unexpected = ReadError::Unexpected {
            expected,
            found: first,
        };
        if first >> 5 != major {
            return Err(unexpected);
        }
        match cbor::read_head(self.buf, &mut self.pos) {
            Ok(head) => Ok(head.arg),
            Err(HeadError::Truncated) => Err(ReadError::Truncated),
            // Indefinite lengths and reserved values: never written by the store.
            Err(_) => Err(unexpected),
        }
    }

    /// A length argument that the rest of the input can hold (each element or byte takes
    /// at least one byte), so no caller allocates for a length the record cannot have.
    fn length(&mut self, major: u8, expected: &'static str) -> Result<usize, ReadError> {
        let n = self.head(major, expected)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(ReadError::TooLong(n)),
        }
    }

    pub(crate) fn uint(&mut self) -> Result<u64, ReadError> {
        self.head(UINT, "an unsigned integer")
    }

    /// An array head; returns the number of elements.
    pub(crate) fn array(&mut self) -> Result<usize, ReadError> {
        self.length(ARRAY, "an array")
    }

    /// An array head that must announce `n` elements.
    pub(crate) fn array_of(&mut self, n: usize) -> Result<(), ReadError> {
        match self.array()? {
            len if len == n => Ok(()),
            found => Err(ReadError::Length { expected: n, found }),
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let n = self.length(BYTES, "a byte string")?;
        self.take(n)
    }

    pub(crate) fn text(&mut self) -> Result<&'a str, ReadError> {
        let n = self.length(TEXT, "a text string")?;
        std::str::from_utf8(self.take(n)?).map_err(|_| ReadError::InvalidUtf8)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, ReadError> {
        match self.take(1)?[0] {
            FALSE => Ok(false),
            TRUE => Ok(true),
            found => Err(ReadError::Unexpected {
                expected: "a boolean",
                found,
            }),
        }
    }

    /// Consumes a null if one is next; returns whether it did.
    pub(crate) fn null(&mut self) -> bool {
        let is_null = self.buf.get(self.pos) == Some(&NULL);
        if is_null {
            self.pos += 1;
        }
        is_null
    }

    /// Fails unless the whole input has been read.
    pub(crate) fn finish(&self) -> Result<(), ReadError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ReadError::TrailingBytes(n)),
        }
    }
}

/// Appends items to a byte vector, with minimal-length heads.
pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Writer {
        Writer {
            out: Vec::with_capacity(n),
        }
    }

    fn head(&mut self, major: u8, arg: u64) {
        cbor::write_head(&mut self.out, major, arg);
    }

    pub(crate) fn uint(&mut self, n: u64) {
        self.head(UINT, n);
    }

    pub(crate) fn array(&mut self, len: usize) {
        self.head(ARRAY, len as u64);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.head(BYTES, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.head(TEXT, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.out.push(if b { TRUE } else { FALSE });
    }

    pub(crate) fn null(&mut self) {
        self.out.push(NULL);
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_at_every_head_size_as_ciborium_writes_them() {
        for n in [
            0u64,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut w = Writer::with_capacity(9);
            w.uint(n);
            let bytes = w.into_vec();
            let mut theirs = Vec::new();
            ciborium::into_writer(&n, &mut theirs).unwrap();
            assert_eq!(bytes, theirs, "{n}");
            let mut r = Reader::new(&bytes);
            assert_eq!(r.uint().unwrap(), n);
            r.finish().unwrap();
        }
    }

    #[test]
    fn lengths_beyond_the_input_are_refused_before_allocating() {
        // An array announcing 2^32 elements in a 5-byte input.
        let mut r = Reader::new(&[0x9b, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(r.array(), Err(ReadError::TooLong(1 << 32)));
        let mut r = Reader::new(&[0x43, 1, 2]);
        assert_eq!(r.bytes(), Err(ReadError::TooLong(3)));
        let mut r = Reader::new(&[0x5f]);
        assert!(matches!(r.bytes(), Err(ReadError::Unexpected { .. })));
        let mut r = Reader::new(&[0x62, 0xff, 0xfe]);
        assert_eq!(r.text(), Err(ReadError::InvalidUtf8));
        let mut r = Reader::new(&[0xf6, 0x00]);
        assert!(r.null());
        assert_eq!(r.finish(), Err(ReadError::TrailingBytes(1)));
        let mut r = Reader::new(&[]);
        assert_eq!(r.bool(), Err(ReadError::Truncated));
    }
}
