//! The wire protocol: one CBOR [`Frame`] per WebSocket binary message.
//!
//! A frame is a request (with a number chosen by its sender), a response to a request
//! (echoing its number) or an error response. Requests are multiplexed: either side may
//! have many outstanding, and responses may come in any order.
//!
//! Conversation, active side first:
//! 1. `Hello { versions, collections, push, pull }` → `Hello { version }`.
//! 2. `GetCheckpoint { id }` → `Checkpoint(..)`; later `SetCheckpoint` → `Ok`.
//! 3. Pull: `SubChanges { collection, since, continuous, doc_ids }` → `Ok`; the passive
//!    side then sends `Changes` batches (an empty batch: caught up), answered with
//!    `Wanted`, and `Revs` with the wanted revisions, answered with `RevStatuses` once
//!    they are stored.
//! 4. Push: `ProposeChanges` → `Wanted`; `Revs` → `RevStatuses` once stored. A small
//!    batch may skip the proposal and send its `Revs` directly.
//! 5. `Ping` → `Pong` keeps an idle connection checked.
//!
//! Decoding is bounded before anything is allocated. The frames that carry a sync
//! (`Changes`, `ProposeChanges`, `Revs`, `Wanted`, `RevStatuses`) are encoded and decoded
//! by hand, in exactly the layout serde gives them, counting items and list lengths as
//! they go; any other input is first scanned (frame size, nesting depth, item count) and
//! then decoded by serde. Either way list lengths are checked by [`Frame::check_limits`].

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::cbor::{self, ScanLimits};
use crate::{Change, CollectionName, DocId, MAX_HISTORY, RevId, Revision, Seq};

mod codec;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol name.
pub const SUBPROTOCOL: &str = "peerlite.v1";

/// Limits on what a peer may send in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrameLimits {
    /// Maximum encoded size of a frame in bytes.
    pub max_frame_bytes: usize,
    /// Maximum number of CBOR items in a frame.
    pub max_items: usize,
    /// Maximum entries in one `Changes` or `ProposeChanges` batch, or documents in `Revs`.
    pub max_batch: usize,
    /// Maximum collections in a `Hello`.
    pub max_collections: usize,
}

impl FrameLimits {
    /// Defaults: 16 MiB frames, 500,000 items, batches of 1,000, 64 collections.
    pub const DEFAULT: FrameLimits = FrameLimits {
        max_frame_bytes: 16 << 20,
        max_items: 500_000,
        max_batch: 1000,
        max_collections: 64,
    };
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Larger than [`FrameLimits::max_frame_bytes`].
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not well-formed, or not a frame of this protocol.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A list longer than allowed.
    #[error("{what} holds {len} entries; at most {max} are allowed")]
    TooManyEntries {
        /// Which list.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Numbers identifying requests; each side numbers its own requests.
pub type RequestNumber = u64;

/// One message on the wire.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Frame {
    /// A request.
    Request(RequestNumber, Request),
    /// The successful answer to the sender's request with that number.
    Response(RequestNumber, Response),
    /// The failed answer to the sender's request with that number.
    Error(RequestNumber, ErrorBody),
}

/// The opening request of a connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    /// Protocol versions the active side speaks.
    pub versions: Vec<u32>,
    /// Collections to replicate.
    pub collections: Vec<CollectionName>,
    /// The active side will push.
    pub push: bool,
    /// The active side will pull.
    pub pull: bool,
    /// The largest frame the active side accepts, so the passive side never sends it a
    /// larger one (absent: [`FrameLimits::DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<u64>,
}

impl Hello {
    /// The largest frame the sender of this `Hello` accepts.
    pub fn frame_limit(&self) -> usize {
        announced_limit(self.max_frame_bytes)
    }
}

/// A peer's announced frame limit, or the default for a peer that announced none.
pub(crate) fn announced_limit(announced: Option<u64>) -> usize {
    announced.map_or(FrameLimits::DEFAULT.max_frame_bytes, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    })
}

/// A wanted document the sender cannot send: even alone, its revisions make a frame
/// larger than the receiver accepts. It is reported, never retried.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Oversized {
    /// The document.
    pub doc_id: DocId,
    /// Its current revision.
    pub rev: RevId,
    /// The size of the frame it would need.
    pub bytes: u64,
}

/// Revisions of one document, as sent in [`Request::Revs`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevBundle {
    /// The document.
    pub doc_id: DocId,
    /// Revisions to insert in order (usually one; a conflict resolution may add the
    /// tombstones that close other branches first).
    pub revisions: Vec<Revision>,
    /// The sender's sequence for this change.
    pub seq: Seq,
}

/// A request.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Opens the conversation; answered with [`Response::Hello`].
    Hello(Hello),
    /// Reads the checkpoint stored on the passive side; answered with
    /// [`Response::Checkpoint`].
    GetCheckpoint {
        /// Checkpoint ID.
        id: String,
    },
    /// Stores a checkpoint on the passive side; answered with [`Response::Ok`] once durable.
    SetCheckpoint {
        /// Checkpoint ID.
        id: String,
        /// The checkpoint.
        checkpoint: Checkpoint,
    },
    /// Subscribes to a collection's changes feed; answered with [`Response::Ok`].
    SubChanges {
        /// The collection.
        collection: CollectionName,
        /// Send changes after this sequence.
        since: Seq,
        /// Keep sending new changes after catching up.
        continuous: bool,
        /// Only these documents, if given.
        doc_ids: Option<Vec<DocId>>,
    },
    /// A batch of the changes feed (passive to active); empty once caught up. Answered
    /// with [`Response::Wanted`].
    Changes {
        /// The collection.
        collection: CollectionName,
        /// The changes, in sequence order.
        changes: Vec<Change>,
    },
    /// Documents the active side wants to push (current revision and closed branches);
    /// answered with [`Response::Wanted`].
    ProposeChanges {
        /// The collection.
        collection: CollectionName,
        /// One entry per document, with the pusher's sequence.
        changes: Vec<Change>,
    },
    /// Revisions with bodies; answered with [`Response::RevStatuses`] once stored.
    Revs {
        /// The collection.
        collection: CollectionName,
        /// One bundle per document.
        docs: Vec<RevBundle>,
        /// Wanted documents that cannot be sent (their revision was superseded; the newer
        /// one will come in a later `Changes` batch).
        unavailable: Vec<DocId>,
        /// Wanted documents too large for the receiver's frame limit (passive side only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        oversized: Vec<Oversized>,
    },
    /// Liveness check; answered with [`Response::Pong`].
    Ping,
    /// Bytes of a blob that a `Revs` request this side has not answered yet refers to;
    /// answered with [`Response::BlobChunk`], exactly `min(max, length - offset)` bytes.
    GetBlob {
        /// The blob.
        digest: crate::BlobDigest,
        /// Where to start.
        offset: u64,
        /// How many bytes.
        max: u32,
    },
}

impl Request {
    /// The request's name, as in messages: `Hello`, `Revs`, ….
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello(_) => "Hello",
            Request::GetCheckpoint { .. } => "GetCheckpoint",
            Request::SetCheckpoint { .. } => "SetCheckpoint",
            Request::SubChanges { .. } => "SubChanges",
            Request::Changes { .. } => "Changes",
            Request::ProposeChanges { .. } => "ProposeChanges",
            Request::Revs { .. } => "Revs",
            Request::Ping => "Ping",
            Request::GetBlob { .. } => "GetBlob",
        }
    }
}

/// A successful response.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// The version chosen.
    Hello {
        /// The protocol version both sides will speak.
        version: u32,
        /// The largest frame the passive side accepts, so the active side never sends it
        /// a larger one (absent: [`FrameLimits::DEFAULT`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_frame_bytes: Option<u64>,
    },
    /// The stored checkpoint, if any.
    Checkpoint(Option<Checkpoint>),
    /// Done.
    Ok,
    /// One entry per proposed or announced change: `None` when it is not wanted, or the
    /// receiver's leaf revisions of that document (empty if it has none), so the sender
    /// includes history back to one of them and the chain connects.
    Wanted(Vec<Option<Vec<RevId>>>),
    /// One status per document of a `Revs` request.
    RevStatuses(Vec<RevStatus>),
    /// Answer to `Ping`.
    Pong,
    /// Bytes of a blob, for [`Request::GetBlob`].
    BlobChunk(Bytes),
}

impl Response {
    /// The response's name, as in messages: `Wanted`, `RevStatuses`, ….
    pub fn name(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "Hello",
            Response::Checkpoint(_) => "Checkpoint",
            Response::Ok => "Ok",
            Response::Wanted(_) => "Wanted",
            Response::RevStatuses(_) => "RevStatuses",
            Response::Pong => "Pong",
            Response::BlobChunk(_) => "BlobChunk",
        }
    }
}

/// What became of one pushed document.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RevStatus {
    /// Stored.
    Ok,
    /// Not stored: the receiver already had this revision.
    AlreadyHad,
    /// Refused: it conflicts with the receiver's current revision.
    Conflict {
        /// The receiver's current revision.
        current: Option<RevId>,
    },
    /// Refused by the receiver's validation or authorization.
    Rejected {
        /// HTTP-like status: 403 forbidden.
        code: u16,
        /// Why.
        reason: String,
    },
}

/// The status codes of error responses and per-document statuses (HTTP's, for
/// familiarity). On the wire a code is its number ([`Code::as_u16`]), so a peer may send
/// one this build does not name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 400: malformed or invalid.
    BadRequest,
    /// 403: not allowed (a read-only listener, or its validator refused).
    Forbidden,
    /// 404: no such collection here (or not for this user).
    NotFound,
    /// 409: in conflict with the receiver's state.
    Conflict,
    /// 410: what was asked for is gone: the changes feed after the requested sequence
    /// no longer holds every deletion (tombstones older than the retention were forgotten).
    Gone,
    /// 500: the receiver failed.
    Internal,
    /// 503: the receiver failed for now; a retry may work.
    Unavailable,
    /// 505: no protocol version in common.
    UnsupportedVersion,
}

impl Code {
    /// Every code this build names.
    pub const ALL: [Code; 8] = [
        Code::BadRequest,
        Code::Forbidden,
        Code::NotFound,
        Code::Conflict,
        Code::Gone,
        Code::Internal,
        Code::Unavailable,
        Code::UnsupportedVersion,
    ];

    /// The number on the wire.
    pub const fn as_u16(self) -> u16 {
        match self {
            Code::BadRequest => 400,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::Conflict => 409,
            Code::Gone => 410,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::UnsupportedVersion => 505,
        }
    }

    /// The code with this number, if this build names it.
    pub fn from_u16(code: u16) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_u16() == code)
    }
}

impl From<Code> for u16 {
    fn from(code: Code) -> u16 {
        code.as_u16()
    }
}

impl RevStatus {
    /// A refusal with `code` and why.
    pub fn rejected(code: Code, reason: impl Into<String>) -> RevStatus {
        RevStatus::Rejected {
            code: code.as_u16(),
            reason: reason.into(),
        }
    }
}

/// The body of an error response.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("peer answered {code}: {message}")]
pub struct ErrorBody {
    /// HTTP-like status: 400 bad request, 403 forbidden, 404 not found, 409 conflict,
    /// 500 internal error, 503 unavailable, 505 unsupported version.
    pub code: u16,
    /// A human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body from a code number.
    pub fn new(code: u16, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
        }
    }

    /// Builds an error body from a [`Code`].
    pub fn with_code(code: Code, message: impl Into<String>) -> ErrorBody {
        ErrorBody::new(code.as_u16(), message)
    }

    /// Its code, if this build names it.
    pub fn kind(&self) -> Option<Code> {
        Code::from_u16(self.code)
    }
}

/// A replication checkpoint: how far each collection has been pushed (local sequence)
/// and pulled (remote sequence).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Per collection, keyed by `scope.name`.
    pub collections: BTreeMap<CollectionName, CollectionCheckpoint>,
}

/// One collection's progress in a [`Checkpoint`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CollectionCheckpoint {
    /// Every local change up to this sequence has been pushed.
    pub push: Seq,
    /// Every remote change up to this sequence has been pulled.
    pub pull: Seq,
}

impl Checkpoint {
    /// Reconciles the local and remote copies: where they disagree, the earlier position
    /// wins, so no change is ever skipped; a collection missing from either starts over.
    pub fn reconcile(local: Option<&Checkpoint>, remote: Option<&Checkpoint>) -> Checkpoint {
        let (Some(local), Some(remote)) = (local, remote) else {
            return Checkpoint::default();
        };
        let collections = local
            .collections
            .iter()
            .filter_map(|(name, l)| {
                remote.collections.get(name).map(|r| {
                    (
                        name.clone(),
                        CollectionCheckpoint {
                            push: l.push.min(r.push),
                            pull: l.pull.min(r.pull),
                        },
                    )
                })
            })
            .collect();
        Checkpoint { collections }
    }

    /// The progress of one collection (zero when absent).
    pub fn get(&self, collection: &CollectionName) -> CollectionCheckpoint {
        self.collections
            .get(collection)
            .copied()
            .unwrap_or_default()
    }

    /// Encodes the checkpoint as CBOR.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        Bytes::from(out)
    }

    /// Decodes a checkpoint; `None` for unreadable bytes (which means "start over").
    pub fn from_bytes(bytes: &[u8]) -> Option<Checkpoint> {
        ciborium::de::from_reader_with_recursion_limit(bytes, 16).ok()
    }
}

impl Frame {
    /// Encodes the frame for one WebSocket binary message.
    pub fn encode(&self) -> Bytes {
        if let Some(out) = codec::encode(self) {
            return Bytes::from(out);
        }
        let mut out = Vec::with_capacity(256);
        // Writing into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        Bytes::from(out)
    }

    /// Decodes one frame, bounding size, nesting, items and list lengths.
    ///
    /// ```
    /// use peerlite_proto::{Frame, FrameLimits, Request};
    /// let bytes = Frame::Request(7, Request::Ping).encode();
    /// let frame = Frame::decode(&bytes, &FrameLimits::DEFAULT)?;
    /// assert_eq!(frame, Frame::Request(7, Request::Ping));
    /// assert!(Frame::decode(&bytes[1..], &FrameLimits::DEFAULT).is_err());
    /// # Ok::<(), peerlite_proto::FrameError>(())
    /// ```
    pub fn decode(bytes: &[u8], limits: &FrameLimits) -> Result<Frame, FrameError> {
        Self::decode_inner(bytes, None, limits)
    }

    /// Like [`Frame::decode`], for a frame held in [`Bytes`]: the document bodies of a
    /// `Revs` frame are then slices of `bytes` rather than copies.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use peerlite_proto::{Frame, FrameLimits, Response};
    /// let bytes: Bytes = Frame::Response(3, Response::Wanted(vec![None])).encode();
    /// let frame = Frame::decode_bytes(&bytes, &FrameLimits::DEFAULT)?;
    /// assert_eq!(frame, Frame::Response(3, Response::Wanted(vec![None])));
    /// # Ok::<(), peerlite_proto::FrameError>(())
    /// ```
    pub fn decode_bytes(bytes: &Bytes, limits: &FrameLimits) -> Result<Frame, FrameError> {
        Self::decode_inner(bytes, Some(bytes), limits)
    }

    fn decode_inner(
        bytes: &[u8],
        shared: Option<&Bytes>,
        limits: &FrameLimits,
    ) -> Result<Frame, FrameError> {
        if bytes.len() > limits.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size: bytes.len(),
                max: limits.max_frame_bytes,
            });
        }
        if let Some(frame) = codec::decode(bytes, shared, limits) {
            frame.check_limits(limits)?;
            return Ok(frame);
        }
        Self::decode_with_serde(bytes, limits)
    }

    /// The general decoder: a bounded scan of the raw bytes, then serde.
    fn decode_with_serde(bytes: &[u8], limits: &FrameLimits) -> Result<Frame, FrameError> {
        cbor::scan(
            bytes,
            ScanLimits {
                max_depth: 16,
                max_items: limits.max_items,
                allow_bytes: true,
            },
        )
        .map_err(|e| FrameError::Malformed(format!("{e:?}")))?;
        let frame: Frame = ciborium::de::from_reader_with_recursion_limit(bytes, 32)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        frame.check_limits(limits)?;
        Ok(frame)
    }

    /// Checks list lengths against the limits.
    pub fn check_limits(&self, limits: &FrameLimits) -> Result<(), FrameError> {
        let check = |what: &'static str, len: usize, max: usize| {
            if len > max {
                Err(FrameError::TooManyEntries { what, len, max })
            } else {
                Ok(())
            }
        };
        match self {
            Frame::Request(_, req) => match req {
                Request::Hello(h) => {
                    check(
                        "Hello.collections",
                        h.collections.len(),
                        limits.max_collections,
                    )?;
                    check("Hello.versions", h.versions.len(), 16)
                }
                Request::SubChanges { doc_ids, .. } => check(
                    "SubChanges.doc_ids",
                    doc_ids.as_ref().map_or(0, Vec::len),
                    limits.max_batch * 100,
                ),
                Request::Changes { changes, .. } | Request::ProposeChanges { changes, .. } => {
                    check("Changes", changes.len(), limits.max_batch)?;
                    for c in changes {
                        check("Change.other_leaves", c.other_leaves.len(), 64)?;
                    }
                    Ok(())
                }
                Request::Revs {
                    docs,
                    unavailable,
                    oversized,
                    ..
                } => {
                    check("Revs.docs", docs.len(), limits.max_batch)?;
                    check("Revs.unavailable", unavailable.len(), limits.max_batch)?;
                    check("Revs.oversized", oversized.len(), limits.max_batch)?;
                    for d in docs {
                        check("RevBundle.revisions", d.revisions.len(), crate::MAX_BUNDLE)?;
                        for r in &d.revisions {
                            check("Revision.history", r.history.len(), MAX_HISTORY)?;
                        }
                    }
                    Ok(())
                }
                Request::SetCheckpoint { checkpoint, .. } => check(
                    "Checkpoint.collections",
                    checkpoint.collections.len(),
                    limits.max_collections,
                ),
                Request::GetCheckpoint { .. } | Request::Ping | Request::GetBlob { .. } => Ok(()),
            },
            Frame::Response(_, resp) => match resp {
                Response::Wanted(w) => {
                    check("Wanted", w.len(), limits.max_batch)?;
                    for known in w.iter().flatten() {
                        check("Wanted.known", known.len(), 64)?;
                    }
                    Ok(())
                }
                Response::RevStatuses(s) => check("RevStatuses", s.len(), limits.max_batch),
                Response::Checkpoint(Some(cp)) => check(
                    "Checkpoint.collections",
                    cp.collections.len(),
                    limits.max_collections,
                ),
                _ => Ok(()),
            },
            Frame::Error(..) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
