//! A hand-written encoder and decoder for the frames that carry the bulk of a sync:
//! `Changes`, `ProposeChanges`, `Revs`, `Wanted` and `RevStatuses`.
//!
//! They produce and accept exactly the CBOR layout that serde + ciborium give the
//! [`Frame`] types (maps keyed by field name, enums externally tagged), so peers built
//! either way understand each other; tests compare the bytes with ciborium's. What they
//! save is serde's per-field dispatch and intermediate copies: a body is taken as a
//! slice of the frame's buffer when the frame arrives as [`Bytes`].
//!
//! The decoder is a fast path, not a second judge: it returns `None` for any shape it
//! does not recognise (other frame kinds, fields in another order, unknown fields, values
//! that fail validation, more items than [`FrameLimits::max_items`]). The caller then
//! scans the input with [`crate::cbor::scan`] and decodes it with serde, which accepts or
//! refuses with its own message, so the set of accepted frames and the values they
//! decode to are exactly what that slower path alone would give. It needs no scan of its
//! own: it reads only definite-length items of the types it expects, checks every text
//! is UTF-8, counts items as the scan does, nests no deeper than the scan allows, and
//! leaves each body to [`Body::from_cbor`].

use bytes::Bytes;

use super::{Frame, FrameLimits, Request, Response, RevBundle, RevStatus};
use crate::cbor::{self, major};
use crate::{Body, Change, CollectionName, DIGEST_LEN, DocId, RevId, Revision, Seq};

/// Encodes `frame` if it is one of the bulk kinds; `None` for the others.
pub(super) fn encode(frame: &Frame) -> Option<Vec<u8>> {
    let w = match frame {
        Frame::Request(n, request) => match request {
            Request::Changes {
                collection,
                changes,
            } => Writer::frame("Request", *n, "Changes", changes_size_hint(changes))
                .changes(collection, changes),
            Request::ProposeChanges {
                collection,
                changes,
            } => Writer::frame("Request", *n, "ProposeChanges", changes_size_hint(changes))
                .changes(collection, changes),
            Request::Revs {
                collection,
                docs,
                unavailable,
                oversized,
            } if oversized.is_empty() => Writer::frame("Request", *n, "Revs", revs_size_hint(docs))
                .revs(collection, docs, unavailable),
            _ => return None,
        },
        Frame::Response(n, response) => match response {
            Response::Wanted(wanted) => {
                let mut w = Writer::frame("Response", *n, "Wanted", 64 + 40 * wanted.len());
                w.array(wanted.len());
                for entry in wanted {
                    match entry {
                        None => w.null(),
                        Some(leaves) => w.rev_ids(leaves),
                    }
                }
                w
            }
            Response::RevStatuses(statuses) => {
                let mut w = Writer::frame("Response", *n, "RevStatuses", 64 + 8 * statuses.len());
                w.array(statuses.len());
                for status in statuses {
                    w.rev_status(status);
                }
                w
            }
            _ => return None,
        },
        Frame::Error(..) => return None,
    };
    Some(w.out)
}

/// A guess at the encoded size of a `Revs` request, so the buffer is allocated once.
fn revs_size_hint(docs: &[RevBundle]) -> usize {
    docs.iter()
        .flat_map(|d| d.revisions.iter())
        .map(|r| r.body.len() + 80 + 24 * r.history.len())
        .sum::<usize>()
        .saturating_add(256)
}

/// A guess at the encoded size of a `Changes` or `ProposeChanges` request.
fn changes_size_hint(changes: &[Change]) -> usize {
    64 + changes.len() * 80
}

/// Writes CBOR items into a growing buffer, always with the shortest heads (as ciborium
/// does).
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// A writer holding the envelope of a frame, `{side: [n, {variant: `, with room for
    /// `capacity` bytes; the variant's content comes next.
    fn frame(side: &str, n: u64, variant: &str, capacity: usize) -> Writer {
        let mut w = Writer {
            out: Vec::with_capacity(capacity),
        };
        w.map(1);
        w.text(side);
        w.array(2);
        w.uint(n);
        w.map(1);
        w.text(variant);
        w
    }

    fn head(&mut self, major: u8, arg: u64) {
        cbor::write_head(&mut self.out, major, arg);
    }

    fn uint(&mut self, v: u64) {
        self.head(major::UINT, v);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.head(major::BYTES, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    fn text(&mut self, s: &str) {
        self.head(major::TEXT, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn array(&mut self, len: usize) {
        self.head(major::ARRAY, len as u64);
    }

    fn map(&mut self, len: usize) {
        self.head(major::MAP, len as u64);
    }

    fn bool(&mut self, v: bool) {
        self.out.push(if v { cbor::TRUE } else { cbor::FALSE });
    }

    fn null(&mut self) {
        self.out.push(cbor::NULL);
    }

    fn rev_id(&mut self, rev: &RevId) {
        self.array(2);
        self.uint(rev.generation());
        self.bytes(rev.digest());
    }

    fn rev_ids(&mut self, revs: &[RevId]) {
        self.array(revs.len());
        for r in revs {
            self.rev_id(r);
        }
    }

    fn changes(mut self, collection: &CollectionName, changes: &[Change]) -> Writer {
        self.map(2);
        self.text("collection");
        self.text(collection.as_str());
        self.text("changes");
        self.array(changes.len());
        for c in changes {
            self.map(if c.other_leaves.is_empty() { 4 } else { 5 });
            self.text("seq");
            self.uint(c.seq.0);
            self.text("doc_id");
            self.text(c.doc_id.as_str());
            self.text("rev");
            self.rev_id(&c.rev);
            self.text("deleted");
            self.bool(c.deleted);
            if !c.other_leaves.is_empty() {
                self.text("other_leaves");
                self.rev_ids(&c.other_leaves);
            }
        }
        self
    }

    fn revs(
        mut self,
        collection: &CollectionName,
        docs: &[RevBundle],
        unavailable: &[DocId],
    ) -> Writer {
        self.map(3);
        self.text("collection");
        self.text(collection.as_str());
        self.text("docs");
        self.array(docs.len());
        for d in docs {
            self.map(3);
            self.text("doc_id");
            self.text(d.doc_id.as_str());
            self.text("revisions");
            self.array(d.revisions.len());
            for r in &d.revisions {
                self.revision(r);
            }
            self.text("seq");
            self.uint(d.seq.0);
        }
        self.text("unavailable");
        self.array(unavailable.len());
        for id in unavailable {
            self.text(id.as_str());
        }
        self
    }

    fn revision(&mut self, r: &Revision) {
        self.map(if r.deleted_ancestors.is_empty() { 4 } else { 5 });
        self.text("rev");
        self.rev_id(&r.rev);
        self.text("deleted");
        self.bool(r.deleted);
        self.text("body");
        self.bytes(r.body.as_bytes());
        self.text("history");
        self.rev_ids(&r.history);
        if !r.deleted_ancestors.is_empty() {
            self.text("deleted_ancestors");
            self.rev_ids(&r.deleted_ancestors);
        }
    }

    fn rev_status(&mut self, status: &RevStatus) {
        match status {
            RevStatus::Ok => self.text("Ok"),
            RevStatus::AlreadyHad => self.text("AlreadyHad"),
            RevStatus::Conflict { current } => {
                self.map(1);
                self.text("Conflict");
                self.map(1);
                self.text("current");
                match current {
                    None => self.null(),
                    Some(r) => self.rev_id(r),
                }
            }
            RevStatus::Rejected { code, reason } => {
                self.map(1);
                self.text("Rejected");
                self.map(2);
                self.text("code");
                self.uint(u64::from(*code));
                self.text("reason");
                self.text(reason);
            }
        }
    }
}

/// Decodes `input` if it is one of the bulk kinds in the layout [`encode`] writes.
/// `shared`, when given, is the same bytes as `input`; bodies are then slices of it
/// instead of copies. `None`: let serde decide.
pub(super) fn decode(input: &[u8], shared: Option<&Bytes>, limits: &FrameLimits) -> Option<Frame> {
    let mut r = Reader {
        buf: input,
        pos: 0,
        shared,
        max_batch: limits.max_batch,
        items: 0,
        max_items: limits.max_items,
    };
    let frame = r.frame()?;
    (r.pos == input.len()).then_some(frame)
}

/// Reads the items of a frame. Every method returns `None` on anything unexpected or
/// over a limit, and never panics or allocates more than the input could fill.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    shared: Option<&'a Bytes>,
    max_batch: usize,
    /// Items read so far, counted as [`crate::cbor::scan`] counts them.
    items: usize,
    max_items: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// The next head if its major type is `major`: its argument.
    fn head(&mut self, major: u8) -> Option<u64> {
        if self.peek()? >> 5 != major {
            return None;
        }
        self.count()?;
        cbor::read_head(self.buf, &mut self.pos).ok().map(|h| h.arg)
    }

    /// Counts one more item.
    fn count(&mut self) -> Option<()> {
        self.items += 1;
        (self.items <= self.max_items).then_some(())
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn uint(&mut self) -> Option<u64> {
        self.head(major::UINT)
    }

    fn text(&mut self) -> Option<&'a str> {
        let len = self.head(major::TEXT)?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn key(&mut self, expected: &str) -> Option<()> {
        (self.text()? == expected).then_some(())
    }

    fn map(&mut self) -> Option<u64> {
        self.head(major::MAP)
    }

    /// An array of at most `max` elements: its length.
    fn array(&mut self, max: usize) -> Option<usize> {
        let len = usize::try_from(self.head(major::ARRAY)?).ok()?;
        (len <= max).then_some(len)
    }

    fn bool(&mut self) -> Option<bool> {
        let value = match self.peek()? {
            cbor::FALSE => false,
            cbor::TRUE => true,
            _ => return None,
        };
        self.count()?;
        self.pos += 1;
        Some(value)
    }

    /// Whether the next item is null (then read); `None` over the item limit.
    fn null(&mut self) -> Option<bool> {
        if self.peek() != Some(cbor::NULL) {
            return Some(false);
        }
        self.count()?;
        self.pos += 1;
        Some(true)
    }

    fn rev_id(&mut self) -> Option<RevId> {
        if self.array(2)? != 2 {
            return None;
        }
        let generation = self.uint()?;
        let len = self.head(major::BYTES)?;
        let digest: [u8; DIGEST_LEN] = self.take(len)?.try_into().ok()?;
        RevId::from_parts(generation, digest).ok()
    }

    fn rev_ids(&mut self, max: usize) -> Option<Vec<RevId>> {
        let len = self.array(max)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(self.rev_id()?);
        }
        Some(out)
    }

    fn doc_id(&mut self) -> Option<DocId> {
        DocId::new(self.text()?).ok()
    }

    fn collection(&mut self) -> Option<CollectionName> {
        CollectionName::parse(self.text()?).ok()
    }

    fn body(&mut self) -> Option<Body> {
        let len = self.head(major::BYTES)?;
        let start = self.pos;
        let slice = self.take(len)?;
        let bytes = match self.shared {
            Some(shared) => shared.slice(start..self.pos),
            None => Bytes::copy_from_slice(slice),
        };
        Body::from_cbor(bytes).ok()
    }

    /// The whole frame: `{"Request": [n, {kind: …}]}` or `{"Response": [n, {kind: …}]}`.
    fn frame(&mut self) -> Option<Frame> {
        if self.map()? != 1 {
            return None;
        }
        let side = self.text()?;
        if self.array(2)? != 2 {
            return None;
        }
        let n = self.uint()?;
        if self.map()? != 1 {
            return None;
        }
        Some(match (side, self.text()?) {
            ("Request", "Changes") => {
                let (collection, changes) = self.changes()?;
                Frame::Request(
                    n,
                    Request::Changes {
                        collection,
                        changes,
                    },
                )
            }
            ("Request", "ProposeChanges") => {
                let (collection, changes) = self.changes()?;
                Frame::Request(
                    n,
                    Request::ProposeChanges {
                        collection,
                        changes,
                    },
                )
            }
            ("Request", "Revs") => Frame::Request(n, self.revs()?),
            ("Response", "Wanted") => {
                let len = self.array(self.max_batch)?;
                let mut wanted = Vec::with_capacity(len);
                for _ in 0..len {
                    wanted.push(if self.null()? {
                        None
                    } else {
                        Some(self.rev_ids(64)?)
                    });
                }
                Frame::Response(n, Response::Wanted(wanted))
            }
            ("Response", "RevStatuses") => {
                let len = self.array(self.max_batch)?;
                let mut statuses = Vec::with_capacity(len);
                for _ in 0..len {
                    statuses.push(self.rev_status()?);
                }
                Frame::Response(n, Response::RevStatuses(statuses))
            }
            _ => return None,
        })
    }

    fn changes(&mut self) -> Option<(CollectionName, Vec<Change>)> {
        if self.map()? != 2 {
            return None;
        }
        self.key("collection")?;
        let collection = self.collection()?;
        self.key("changes")?;
        let len = self.array(self.max_batch)?;
        let mut changes = Vec::with_capacity(len);
        for _ in 0..len {
            let fields = self.map()?;
            if !(4..=5).contains(&fields) {
                return None;
            }
            self.key("seq")?;
            let seq = Seq(self.uint()?);
            self.key("doc_id")?;
            let doc_id = self.doc_id()?;
            self.key("rev")?;
            let rev = self.rev_id()?;
            self.key("deleted")?;
            let deleted = self.bool()?;
            let other_leaves = if fields == 5 {
                self.key("other_leaves")?;
                self.rev_ids(64)?
            } else {
                Vec::new()
            };
            changes.push(Change {
                seq,
                doc_id,
                rev,
                deleted,
                other_leaves,
            });
        }
        Some((collection, changes))
    }

    fn revs(&mut self) -> Option<Request> {
        if self.map()? != 3 {
            return None;
        }
        self.key("collection")?;
        let collection = self.collection()?;
        self.key("docs")?;
        let len = self.array(self.max_batch)?;
        let mut docs = Vec::with_capacity(len);
        for _ in 0..len {
            if self.map()? != 3 {
                return None;
            }
            self.key("doc_id")?;
            let doc_id = self.doc_id()?;
            self.key("revisions")?;
            let count = self.array(crate::MAX_BUNDLE)?;
            let mut revisions = Vec::with_capacity(count);
            for _ in 0..count {
                revisions.push(self.revision()?);
            }
            self.key("seq")?;
            let seq = Seq(self.uint()?);
            docs.push(RevBundle {
                doc_id,
                revisions,
                seq,
            });
        }
        self.key("unavailable")?;
        let len = self.array(self.max_batch)?;
        let mut unavailable = Vec::with_capacity(len);
        for _ in 0..len {
            unavailable.push(self.doc_id()?);
        }
        Some(Request::Revs {
            collection,
            docs,
            unavailable,
            oversized: Vec::new(),
        })
    }

    fn revision(&mut self) -> Option<Revision> {
        let fields = self.map()?;
        if !(4..=5).contains(&fields) {
            return None;
        }
        self.key("rev")?;
        let rev = self.rev_id()?;
        self.key("deleted")?;
        let deleted = self.bool()?;
        self.key("body")?;
        let body = self.body()?;
        self.key("history")?;
        let history = self.rev_ids(crate::MAX_HISTORY)?;
        let deleted_ancestors = if fields == 5 {
            self.key("deleted_ancestors")?;
            self.rev_ids(crate::MAX_HISTORY)?
        } else {
            Vec::new()
        };
        Some(Revision {
            rev,
            deleted,
            body,
            history,
            deleted_ancestors,
        })
    }

    fn rev_status(&mut self) -> Option<RevStatus> {
        if self.peek()? >> 5 == major::TEXT {
            return match self.text()? {
                "Ok" => Some(RevStatus::Ok),
                "AlreadyHad" => Some(RevStatus::AlreadyHad),
                _ => None,
            };
        }
        if self.map()? != 1 {
            return None;
        }
        match self.text()? {
            "Conflict" => {
                if self.map()? != 1 {
                    return None;
                }
                self.key("current")?;
                let current = if self.null()? {
                    None
                } else {
                    Some(self.rev_id()?)
                };
                Some(RevStatus::Conflict { current })
            }
            "Rejected" => {
                if self.map()? != 2 {
                    return None;
                }
                self.key("code")?;
                let code = u16::try_from(self.uint()?).ok()?;
                self.key("reason")?;
                let reason = self.text()?.to_owned();
                Some(RevStatus::Rejected { code, reason })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
