//! What a peer can do wrong: one variant per protocol violation, as rustls's
//! `PeerMisbehaved`. A violation closes that one connection; it is carried in
//! [`ReplicationError::Protocol`](crate::ReplicationError::Protocol) on the active side and
//! in the [`CloseReason`](crate::CloseReason) both sides report.

use crate::{BlobDigest, CollectionName, DocId, FrameError, RequestNumber, RevId, RevisionError};

/// A protocol violation by the remote peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// A frame that does not decode (or breaks the frame limits).
    #[error("undecodable frame: {0}")]
    UndecodableFrame(FrameError),
    /// A response to a request this side did not send (or already answered).
    #[error("response to unknown request {0}")]
    ResponseToUnknownRequest(RequestNumber),
    /// An error response to a request this side did not send.
    #[error("error for unknown request {0}")]
    ErrorForUnknownRequest(RequestNumber),
    /// A response of the wrong kind for its request.
    #[error("unexpected response {response} to {request}")]
    UnexpectedResponse {
        /// The request it answers.
        request: &'static str,
        /// The kind of response.
        response: &'static str,
    },
    /// The first request was not `Hello`.
    #[error("expected Hello first, got {0}")]
    ExpectedHello(&'static str),
    /// `Hello` after the handshake.
    #[error("Hello sent twice")]
    HelloTwice,
    /// A request before the handshake finished.
    #[error("{0} before the handshake finished")]
    RequestBeforeHandshake(&'static str),
    /// A request this side never accepts from a peer in that role.
    #[error("a {role} peer may not send {request}")]
    RequestNotAllowed {
        /// The sender's role: "passive" or "active".
        role: &'static str,
        /// The request.
        request: &'static str,
    },
    /// More requests awaiting answers than allowed.
    #[error("more than {0} requests awaiting answers")]
    TooManyPendingRequests(usize),
    /// An answer whose length does not match what it answers.
    #[error("{response} has {got} entries for {expected} {of}")]
    AnswerLength {
        /// The response ("Wanted", "RevStatuses").
        response: &'static str,
        /// Entries received.
        got: usize,
        /// Entries expected.
        expected: usize,
        /// What they answer ("changes", "documents").
        of: &'static str,
    },
    /// `Changes` or `Revs` for a collection this side is not pulling.
    #[error("{request} for {collection}, which is not being pulled")]
    NotPulling {
        /// The request.
        request: &'static str,
        /// The collection.
        collection: CollectionName,
    },
    /// A document bundle without any revision.
    #[error("document {0} carries no revision")]
    EmptyBundle(DocId),
    /// A revision whose ID does not match its content, or whose history is broken.
    #[error("invalid revision {rev} of document {doc_id}: {error}")]
    InvalidRevision {
        /// The document.
        doc_id: DocId,
        /// The revision.
        rev: RevId,
        /// What is wrong with it.
        error: RevisionError,
    },
    /// `Revs` from the active side that leaves wanted documents out, which only the side
    /// serving a changes feed may do.
    #[error("Revs from the active peer with unavailable or oversized documents")]
    ActiveLeftDocumentsOut,
    /// A blob chunk of another length than asked for.
    #[error("blob {digest}: asked for {asked} bytes, got {got}")]
    BlobChunkLength {
        /// The blob.
        digest: BlobDigest,
        /// Bytes asked for.
        asked: u32,
        /// Bytes received.
        got: usize,
    },
    /// Blob bytes that do not match the blob's digest: nothing of them was kept.
    #[error("the bytes sent for blob {0} do not match its digest")]
    BlobMismatch(BlobDigest),
}

impl PeerMisbehaved {
    /// Checks that an answer (`Wanted`, `RevStatuses`) has one entry per thing it answers.
    pub(crate) fn check_answer_length(
        response: &'static str,
        got: usize,
        expected: usize,
        of: &'static str,
    ) -> Result<(), PeerMisbehaved> {
        match got == expected {
            true => Ok(()),
            false => Err(PeerMisbehaved::AnswerLength {
                response,
                got,
                expected,
                of,
            }),
        }
    }
}
