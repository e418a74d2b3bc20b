//! Serving blob bytes to the receiver: only blobs that a `Revs` message this side sent,
//! and that the receiver has not answered yet, refers to — so a peer reads no blob it was
//! not sent a revision of.

use bytes::Bytes;

use crate::conn::Conn;
use crate::{BlobDigest, Code, ErrorBody, RequestNumber, Response, StorageOp};

/// Largest chunk served; a receiver asking for more is refused.
const MAX_SERVED: u32 = 1 << 20;

/// Answers request `n` for `max` bytes of blob `digest` from `offset`: `offered` says
/// whether a message in flight refers to it. Reads it with `read` as the operation's kind.
pub(crate) fn serve_blob<S, O>(
    conn: &mut Conn<S, O>,
    n: RequestNumber,
    offered: bool,
    (digest, offset, max): (BlobDigest, u64, u32),
    read: O,
) {
    if !offered {
        let message = format!(
            "blob {digest} is not referred to by a revision sent on this connection and not yet answered"
        );
        return conn.respond_error(n, ErrorBody::with_code(Code::NotFound, message));
    }
    if max == 0 || max > MAX_SERVED {
        let message = format!("blob chunks are 1 to {MAX_SERVED} bytes, not {max}");
        return conn.respond_error(n, ErrorBody::with_code(Code::BadRequest, message));
    }
    conn.storage(
        StorageOp::ReadBlob {
            digest,
            offset,
            max,
        },
        read,
    );
}

/// Answers request `n` with the bytes read, or says the blob is not here.
pub(crate) fn blob_read<S, O>(conn: &mut Conn<S, O>, n: RequestNumber, bytes: Option<Bytes>) {
    match bytes {
        Some(bytes) => conn.respond(n, Response::BlobChunk(bytes)),
        None => conn.respond_error(
            n,
            ErrorBody::with_code(Code::NotFound, "the sender does not hold this blob"),
        ),
    }
}
