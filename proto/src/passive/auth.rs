//! Authorisation and validation: the handshake (versions, collections, push rights),
//! what the connection's principal may do, and pushed revisions — checked, passed by the
//! listener's validator, stored without conflicts and answered per document.

use super::*;

/// The most bytes of a validator's reason sent back: a `RevStatuses` answer for a whole
/// `Revs` message stays small whatever the validator returns.
pub(super) const MAX_REASON_BYTES: usize = 1024;

/// `reason`, cut at [`MAX_REASON_BYTES`] on a character boundary.
pub(super) fn bounded_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

impl PassivePeer {
    pub(super) fn push_allowed(&self) -> bool {
        !(self.config.read_only || self.principal.read_only)
    }

    pub(super) fn collection_allowed(&self, c: &CollectionName) -> bool {
        self.config.collections.contains(c)
            && self
                .principal
                .collections
                .as_ref()
                .is_none_or(|set| set.contains(c))
    }

    pub(super) fn handle_hello(&mut self, n: RequestNumber, hello: Hello) {
        if !hello.versions.contains(&PROTOCOL_VERSION) {
            self.conn.respond_error(
                n,
                ErrorBody::with_code(
                    Code::UnsupportedVersion,
                    format!(
                        "unsupported protocol versions {:?}; this peer speaks {PROTOCOL_VERSION}",
                        hello.versions
                    ),
                ),
            );
            return self.close(CloseCode::Normal, "unsupported protocol version");
        }
        if let Some(c) = hello
            .collections
            .iter()
            .find(|c| !self.collection_allowed(c))
        {
            let e = not_served(c);
            let message = e.message.clone();
            self.conn.respond_error(n, e);
            return self.close(CloseCode::Normal, message);
        }
        if hello.push && !self.push_allowed() {
            self.conn.respond_error(
                n,
                ErrorBody::with_code(
                    Code::Forbidden,
                    "this listener is read-only for you: pushing is not allowed",
                ),
            );
            return self.close(CloseCode::Normal, "push refused: read-only");
        }
        self.fetches.set_peer_limit(hello.frame_limit());
        self.hello = Some(hello);
        self.phase = Phase::Open;
        self.conn.respond(
            n,
            Response::Hello {
                version: PROTOCOL_VERSION,
                max_frame_bytes: Some(self.config.frame_limits.max_frame_bytes as u64),
            },
        );
    }

    pub(super) fn negotiated(&self, c: &CollectionName) -> bool {
        self.hello
            .as_ref()
            .is_some_and(|h| h.collections.contains(c))
    }

    pub(super) fn push_refusal(&self, collection: &CollectionName) -> Option<ErrorBody> {
        if !self.push_allowed() {
            return Some(ErrorBody::with_code(
                Code::Forbidden,
                "read-only: pushing is not allowed",
            ));
        }
        if !self.negotiated(collection) {
            return Some(not_served(collection));
        }
        None
    }

    pub(super) fn handle_pushed_revs(
        &mut self,
        n: RequestNumber,
        collection: CollectionName,
        docs: Vec<RevBundle>,
        leaves_out: bool,
    ) {
        if let Some(e) = self.push_refusal(&collection) {
            return self.conn.respond_error(n, e);
        }
        if leaves_out {
            // Only the side serving a changes feed may leave wanted documents out.
            return self.protocol_error(PeerMisbehaved::ActiveLeftDocumentsOut);
        }
        if let Err(v) = crate::receiver::check_bundles(&docs, self.trust_revision_ids) {
            return self.protocol_error(v);
        }
        let mut incoming = Incoming::new(collection.clone(), Direction::Push, &docs);
        let mut inserts = Vec::with_capacity(docs.len());
        let mut indices = Vec::with_capacity(docs.len());
        for (index, bundle) in docs.into_iter().enumerate() {
            let verdict = self.config.validator.as_ref().and_then(|v| {
                bundle.revisions.iter().find_map(|r| {
                    v.validate(&ValidationContext {
                        collection: &collection,
                        doc_id: &bundle.doc_id,
                        revision: r,
                        principal: &self.principal,
                    })
                    .err()
                    .map(bounded_reason)
                })
            });
            match verdict {
                Some(reason) => {
                    let status = RevStatus::rejected(Code::Forbidden, reason);
                    incoming.settle(index, status, true);
                }
                None => {
                    let insert = crate::receiver::insert(bundle.doc_id, bundle.revisions);
                    incoming.hold_if_blobs(index, &insert);
                    inserts.push(insert);
                    indices.push(index);
                }
            }
        }
        if !inserts.is_empty() {
            // Only a peer that also pulls could be offered these revisions back.
            if self.hello.as_ref().is_some_and(|h| h.pull) {
                let pushed = self.pushed.entry(collection.clone()).or_default();
                crate::receiver::record_sent(pushed, &inserts);
            }
            incoming.wait();
            self.conn.storage(
                StorageOp::InsertRevisions {
                    collection,
                    inserts,
                },
                Op::Insert {
                    request: n,
                    indices,
                },
            );
        }
        self.incoming.insert(n, incoming);
        self.answer_if_settled(n);
    }

    /// Documents `indices` of pushed request `n` were stored (or not): those missing blobs
    /// wait for them to be fetched.
    pub(super) fn inserted(
        &mut self,
        n: RequestNumber,
        indices: &[usize],
        outcomes: Vec<InsertOutcome>,
    ) {
        let Some(incoming) = self.incoming.get_mut(&n) else {
            return;
        };
        incoming.done();
        // Documents the store already had changed nothing here: not reported.
        for (index, outcome) in incoming.stored(indices, outcomes, false, false) {
            if let InsertOutcome::MissingBlobs(blobs) = outcome {
                incoming.await_blobs(n, index, blobs, &mut self.fetches);
            }
        }
        self.drive_fetches();
        self.answer_if_settled(n);
    }

    /// Runs the blob fetches' next steps, and answers the requests they settled.
    pub(super) fn drive_fetches(&mut self) {
        let touched = crate::receiver::drive_fetches(
            &mut self.fetches,
            &mut self.incoming,
            &mut self.conn,
            &PassiveFetch,
        );
        for n in touched {
            self.answer_if_settled(n);
        }
    }

    /// Answers pushed request `n` once every document in it is settled.
    pub(super) fn answer_if_settled(&mut self, n: RequestNumber) {
        if self.incoming.get(&n).is_none_or(|i| !i.is_settled()) {
            return;
        }
        let Some(incoming) = self.incoming.remove(&n) else {
            return;
        };
        let (answer, events) = incoming.answer();
        self.conn.respond(n, answer);
        if !events.is_empty() {
            self.conn.event(Event::Documents(events));
        }
    }
}
