//! CBOR primitives, written once and used by every hand-written codec in Peerlite: the
//! wire codec of the bulk frames (`wire::codec`), the storage record codec
//! (`peerlite-storage`'s `cbor_io`) and the structural scan that bounds everything a peer
//! sends (the crate-private `scan`). Item heads are read and written here
//! ([`read_head`], [`write_head`]); each codec keeps only its own layout. Not a general CBOR library: it has what those
//! layouts need, with the shortest (canonical) heads that ciborium writes too.
//!
//! ```
//! use peerlite_proto::cbor::{self, Head, major};
//!
//! let mut out = Vec::new();
//! cbor::write_head(&mut out, major::TEXT, 300);
//! assert_eq!(out, [0x79, 0x01, 0x2c]);
//! let mut pos = 0;
//! let head = cbor::read_head(&out, &mut pos)?;
//! assert_eq!((head.major, head.arg, head.is_minimal(), pos), (major::TEXT, 300, true, 3));
//! # Ok::<(), cbor::HeadError>(())
//! ```

mod head;
mod scan;

pub use head::{FALSE, Head, HeadError, NULL, TRUE, major, read_head, write_head};
pub(crate) use scan::{ScanError, ScanLimits, key_order, scan};
