//! The drive loop, written once for both sides: feed a state machine what happened, drain
//! its outputs, run its storage operations, keep its timer. What differs between the
//! listener and the replicator (dialling, control messages, events, when to stop) is a
//! [`Side`]; what differs between executors is the [`Runtime`].

use std::collections::VecDeque;
use std::time::Instant;

use async_channel::Receiver;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use peerlite_proto::record::StepKind;
use peerlite_proto::{
    CloseCode, CloseReason, Disconnect, Input, Machine, OpId, Output, StorageReply,
};

use crate::Transport;
use crate::change_feed::ChangeFeed;
use crate::executor::Runtime;
use crate::record::Recorder;
use crate::stats::Counters;
use crate::storage_worker::Storage;
use crate::transport::Ws;
use crate::wake::{ReaderMsg, Wake};

/// Frames read ahead of the state machine. The protocol's windows keep a well-behaved
/// peer far below this (a few change batches and 2 MiB of revisions unanswered); the
/// bound stops a peer that ignores them from growing this side's memory without limit:
/// it waits in flow control instead.
pub(crate) const READ_AHEAD: usize = 128;

/// What wakes a drive loop besides frames, local changes and its timer.
pub(crate) enum Msg<C> {
    /// A storage operation's reply.
    Storage(OpId, StorageReply),
    /// A side's own message.
    Control(C),
}

/// The sending half of a connection.
enum FrameSender {
    WebSocket(async_tungstenite::WebSocketSender<Box<dyn crate::transport::Io>>),
    Custom(std::pin::Pin<Box<dyn futures_sink::Sink<bytes::Bytes, Error = std::io::Error> + Send>>),
}

/// The connection a machine talks over, when there is one.
pub(crate) struct Link {
    sender: Option<FrameSender>,
    /// Its frames, read ahead by its reader task.
    frames: Option<Receiver<ReaderMsg>>,
}

impl Link {
    /// No connection yet.
    pub(crate) fn none() -> Link {
        Link {
            sender: None,
            frames: None,
        }
    }

    /// Takes `ws` as the connection, its reader on a task of its own; `peer` names the
    /// other side in messages ("the listener").
    pub(crate) fn connect<R: Runtime>(&mut self, rt: &R, ws: Ws, peer: &'static str) {
        let (sender, receiver) = ws.split();
        let (frames_tx, frames_rx) = async_channel::bounded(READ_AHEAD);
        crate::wake::spawn_reader(rt, receiver, frames_tx, peer);
        self.sender = Some(FrameSender::WebSocket(sender));
        self.frames = Some(frames_rx);
    }

    /// Takes `transport` as the connection, its frames (of at most `max_frame_bytes`)
    /// read on a task of their own.
    pub(crate) fn connect_custom<R: Runtime>(
        &mut self,
        rt: &R,
        transport: Transport,
        max_frame_bytes: usize,
    ) {
        let Transport { sink, stream } = transport;
        let (frames_tx, frames_rx) = async_channel::bounded(READ_AHEAD);
        crate::wake::spawn_stream_reader(rt, stream, frames_tx, max_frame_bytes);
        self.sender = Some(FrameSender::Custom(sink));
        self.frames = Some(frames_rx);
    }

    /// Sends `frame`; false if the connection is lost (or there is none).
    async fn send(&mut self, frame: bytes::Bytes) -> bool {
        match self.sender.as_mut() {
            Some(FrameSender::WebSocket(s)) => s.send(Message::Binary(frame)).await.is_ok(),
            Some(FrameSender::Custom(sink)) => crate::custom::send(sink, frame).await.is_ok(),
            None => false,
        }
    }

    /// Closes the connection (with a close frame on a WebSocket); true if there was one.
    async fn close(&mut self, reason: CloseReason) -> bool {
        match self.sender.take() {
            Some(FrameSender::WebSocket(mut s)) => {
                let frame = CloseFrame {
                    code: reason.code.as_u16().into(),
                    reason: reason.message.into(),
                };
                let _ = s.close(Some(frame)).await;
                true
            }
            Some(FrameSender::Custom(mut sink)) => {
                crate::custom::close(&mut sink).await;
                true
            }
            None => false,
        }
    }
}

/// What one side adds to the loop.
pub(crate) trait Side<R: Runtime> {
    /// The state machine.
    type Machine: Machine;
    /// The side's own messages.
    type Control;
    /// Names this side in messages ("this listener").
    const ME: &'static str;
    /// Names the other side in messages ("the replicator").
    const PEER: &'static str;

    /// The state machine.
    fn machine(&mut self) -> &mut Self::Machine;
    /// Where the loop counts frames, bytes and storage operations.
    fn counters(&self) -> &Counters;
    /// An output the loop does not act on itself: connecting, events.
    fn output(&mut self, output: Output);
    /// One of the side's own messages.
    fn control(&mut self, msg: Self::Control, link: &mut Link, now: Instant);
    /// Called after the outputs are drained: false ends the loop.
    fn keep_going(&mut self) -> bool;
    /// Where the machine's inputs are recorded, if they are.
    fn recorder(&mut self) -> Option<&mut Recorder> {
        None
    }
}

/// Gives the machine an input, recording it first if the side records.
pub(crate) fn feed<R: Runtime, S: Side<R> + ?Sized>(side: &mut S, input: Input, now: Instant) {
    if let Some(r) = side.recorder() {
        r.input(now, &input);
    }
    // A machine's error means the loop misrouted an input: a bug here, not the peer's
    // fault, and nothing the machine can act on.
    let _ = side.machine().handle_input(input, now);
}

/// Drives `side`'s machine until the side says to stop or every sender of `rx` is gone.
pub(crate) async fn drive<R: Runtime, S: Side<R>>(
    rt: &R,
    side: &mut S,
    link: &mut Link,
    rx: &Receiver<Msg<S::Control>>,
    changes: &ChangeFeed,
    storage: &Storage,
) {
    // When each storage operation still unanswered was handed over: the worker answers
    // in order.
    let mut storage_since = VecDeque::new();
    loop {
        while let Some(output) = side.machine().poll_output() {
            if let Some(r) = side.recorder() {
                r.output(&output);
            }
            match output {
                Output::Send(frame) => {
                    let len = frame.len();
                    if link.send(frame).await {
                        side.counters().sent(len);
                    } else if link.sender.take().is_some() {
                        let lost = Disconnect::transient("connection lost while sending");
                        feed(side, Input::Disconnected(lost), Instant::now());
                    }
                }
                Output::Storage(id, op) => {
                    let submitted = Instant::now();
                    match storage.submit(id, op) {
                        Some(reply) => {
                            let now = Instant::now();
                            side.counters().storage(now - submitted);
                            feed(side, Input::Storage(id, reply), now);
                        }
                        None => storage_since.push_back(submitted),
                    }
                }
                Output::Close(reason) => {
                    link.close(reason).await;
                }
                other => side.output(other),
            }
        }
        if !side.keep_going() {
            return;
        }
        // What was recorded reaches the file before any wait, so a process killed while
        // it waits loses none of it.
        if let Some(r) = side.recorder() {
            r.flush();
        }
        let deadline = side.machine().poll_timeout();
        let frames = link.frames.clone();
        let wake = crate::wake::next(rt, rx, frames.as_ref(), changes, deadline).await;
        let now = Instant::now();
        let input = match wake {
            Wake::Msg(None) => return,
            Wake::Msg(Some(Msg::Storage(id, reply))) => {
                if let Some(submitted) = storage_since.pop_front() {
                    side.counters().storage(now - submitted);
                }
                Input::Storage(id, reply)
            }
            Wake::Msg(Some(Msg::Control(msg))) => {
                side.control(msg, link, now);
                continue;
            }
            Wake::Tick => {
                if let Some(r) = side.recorder() {
                    r.step(now, StepKind::Timeout);
                }
                side.machine().handle_timeout(now);
                continue;
            }
            Wake::Changes(changed) => {
                for (c, seq) in changed {
                    feed(side, Input::LocalChange(c, seq), now);
                }
                continue;
            }
            Wake::Reader(None) => {
                link.frames = None;
                continue;
            }
            // Frames still read ahead after this side closed are not the machine's.
            Wake::Reader(Some(ReaderMsg::Frame(bytes))) if link.sender.is_some() => {
                side.counters().received(bytes.len());
                Input::Frame(bytes)
            }
            Wake::Reader(Some(ReaderMsg::Frame(_))) => continue,
            Wake::Reader(Some(ReaderMsg::Closed(why))) => {
                link.frames = None;
                if link.sender.take().is_none() {
                    continue;
                }
                Input::Disconnected(why)
            }
            Wake::Reader(Some(ReaderMsg::TooBig { size, max })) => {
                link.frames = None;
                let message = format!(
                    "{} sent a message of {size} bytes, over {}'s limit of {max}",
                    S::PEER,
                    S::ME
                );
                let reason = CloseReason::new(CloseCode::MessageTooBig, message.clone());
                if !link.close(reason).await {
                    continue;
                }
                Input::Disconnected(Disconnect::permanent(message))
            }
        };
        feed(side, input, now);
    }
}
