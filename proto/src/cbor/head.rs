//! Item heads: the initial byte (major type and additional information) and the argument
//! that follows it.

/// Major types.
pub mod major {
    /// Unsigned integer.
    pub const UINT: u8 = 0;
    /// Negative integer.
    pub const NINT: u8 = 1;
    /// Byte string.
    pub const BYTES: u8 = 2;
    /// Text string.
    pub const TEXT: u8 = 3;
    /// Array.
    pub const ARRAY: u8 = 4;
    /// Map.
    pub const MAP: u8 = 5;
    /// Tag.
    pub const TAG: u8 = 6;
    /// Simple values and floats.
    pub const SIMPLE: u8 = 7;
}

/// The item `false`.
pub const FALSE: u8 = 0xf4;
/// The item `true`.
pub const TRUE: u8 = 0xf5;
/// The item `null`.
pub const NULL: u8 = 0xf6;

/// A decoded item head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The major type (see [`major`]).
    pub major: u8,
    /// The additional information: 0–23 is the argument itself, 24–27 the size of the
    /// argument that follows (1, 2, 4 or 8 bytes).
    pub info: u8,
    /// The argument: a value, a length or a count.
    pub arg: u64,
}

impl Head {
    /// True when the argument is written in the fewest bytes, as a canonical encoder
    /// writes it. (Floats, major type 7 with 2, 4 or 8 bytes, have their own rule.)
    pub fn is_minimal(&self) -> bool {
        match self.info {
            0..=23 => true,
            24 => self.arg >= 24,
            25 => self.arg > 0xff,
            26 => self.arg > 0xffff,
            _ => self.arg > 0xffff_ffff,
        }
    }
}

/// Why a head could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The input ended inside the head.
    #[error("the input ends inside an item head")]
    Truncated,
    /// Additional information 31: an indefinite length (or a break), which no Peerlite
    /// layout uses.
    #[error("indefinite-length item")]
    Indefinite,
    /// Additional information 28–30, reserved by the standard.
    #[error("reserved additional information")]
    Reserved,
}

/// Reads the head at `*pos` and moves `*pos` past it.
#[inline]
pub fn read_head(buf: &[u8], pos: &mut usize) -> Result<Head, HeadError> {
    let first = *buf.get(*pos).ok_or(HeadError::Truncated)?;
    let (major, info) = (first >> 5, first & 0x1f);
    let size = match info {
        0..=23 => {
            *pos += 1;
            return Ok(Head {
                major,
                info,
                arg: u64::from(info),
            });
        }
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => return Err(HeadError::Indefinite),
        _ => return Err(HeadError::Reserved),
    };
    let start = *pos + 1;
    let bytes = buf.get(start..start + size).ok_or(HeadError::Truncated)?;
    let arg = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    *pos = start + size;
    Ok(Head { major, info, arg })
}

/// Appends the head of an item of major type `major` with argument `arg`, in the fewest
/// bytes.
#[inline]
pub fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    // The casts cannot truncate: each arm's range bounds the value.
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every argument round-trips in the shortest form, as ciborium writes it.
        #[test]
        fn heads_round_trip_in_the_shortest_form(arg in prop_oneof![0u64..30, 0u64..70_000, any::<u64>()]) {
            let mut out = Vec::new();
            write_head(&mut out, major::UINT, arg);
            let mut theirs = Vec::new();
            ciborium::into_writer(&arg, &mut theirs).unwrap();
            prop_assert_eq!(&out, &theirs);
            let mut pos = 0;
            let head = read_head(&out, &mut pos).unwrap();
            prop_assert_eq!((head.major, head.arg, pos), (major::UINT, arg, out.len()));
            prop_assert!(head.is_minimal());
            for cut in 0..out.len() {
                prop_assert_eq!(read_head(&out[..cut], &mut 0), Err(HeadError::Truncated));
            }
        }
    }

    #[test]
    fn long_forms_and_reserved_values_are_told_apart() {
        let mut pos = 0;
        let head = read_head(&[0x19, 0x00, 0x05], &mut pos).unwrap();
        assert_eq!((head.arg, head.is_minimal(), pos), (5, false, 3));
        assert_eq!(read_head(&[0x5f], &mut 0), Err(HeadError::Indefinite));
        assert_eq!(read_head(&[0x1c], &mut 0), Err(HeadError::Reserved));
    }
}
