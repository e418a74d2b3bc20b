//! Bookkeeping shared by both state machines: the output queue, numbering of our
//! requests, storage operations in flight, and requests the peer is waiting on.

use std::collections::{BTreeMap, VecDeque};

use crate::{ErrorBody, Event, Frame, OpId, Output, Request, RequestNumber, Response, StorageOp};

pub(crate) struct Conn<R, O> {
    pub(crate) outputs: VecDeque<Output>,
    next_request: RequestNumber,
    /// Our requests awaiting a response, with what each was for.
    pub(crate) requests: BTreeMap<RequestNumber, R>,
    next_op: u64,
    /// Storage operations awaiting a reply, with what each was for.
    pub(crate) ops: BTreeMap<OpId, O>,
    /// Requests from the peer not yet answered.
    pub(crate) inbound_pending: usize,
}

impl<R, O> Default for Conn<R, O> {
    fn default() -> Self {
        Conn {
            outputs: VecDeque::new(),
            next_request: 1,
            requests: BTreeMap::new(),
            next_op: 1,
            ops: BTreeMap::new(),
            inbound_pending: 0,
        }
    }
}

impl<R, O> Conn<R, O> {
    pub(crate) fn request(&mut self, request: Request, kind: R) -> RequestNumber {
        let n = self.next_request;
        self.next_request += 1;
        self.requests.insert(n, kind);
        self.outputs
            .push_back(Output::Send(Frame::Request(n, request).encode()));
        n
    }

    pub(crate) fn respond(&mut self, n: RequestNumber, response: Response) {
        self.inbound_pending = self.inbound_pending.saturating_sub(1);
        self.outputs
            .push_back(Output::Send(Frame::Response(n, response).encode()));
    }

    pub(crate) fn respond_error(&mut self, n: RequestNumber, error: ErrorBody) {
        self.inbound_pending = self.inbound_pending.saturating_sub(1);
        self.outputs
            .push_back(Output::Send(Frame::Error(n, error).encode()));
    }

    pub(crate) fn storage(&mut self, op: StorageOp, kind: O) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(id, kind);
        self.outputs.push_back(Output::Storage(id, op));
        id
    }

    pub(crate) fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Forgets the requests of a connection that is gone. Storage operations stay: their
    /// replies still arrive and must be matched.
    pub(crate) fn new_connection(&mut self) {
        self.requests.clear();
        self.inbound_pending = 0;
        self.next_request = 1;
    }
}
