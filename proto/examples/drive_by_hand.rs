//! A complete "runtime" for both replication state machines, written from the public API
//! alone: no sockets, no threads, no async. Frames are handed from one machine to the
//! other through queues, and storage operations run against in-memory databases.
//!
//! ```text
//! cargo run -p peerlite-proto --example drive_by_hand
//! ```
//! A real runtime does the same with a WebSocket and a clock.

use std::collections::VecDeque;
use std::time::Instant;

use peerlite_proto::{
    ActiveReplicator, Activity, Body, CollectionName, DocId, Event, Input, Output, PassiveConfig,
    PassivePeer, Principal, ReplicatorConfig,
};
use peerlite_storage::Database;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let phone = Database::in_memory()?;
    let laptop = Database::in_memory()?;
    let notes = CollectionName::default();
    phone.save(
        &notes,
        &DocId::new("groceries")?,
        Body::from_json_str(r#"{"items": ["milk"]}"#)?,
    )?;
    laptop.save(
        &notes,
        &DocId::new("todo")?,
        Body::from_json_str(r#"{"items": ["write"]}"#)?,
    )?;

    #[allow(clippy::disallowed_methods)] // the runtime is where time is read
    let now = Instant::now();
    let mut active = ActiveReplicator::new(ReplicatorConfig::new(phone.uuid().0, "ws://laptop/db"));
    let mut passive: Option<PassivePeer> = None;
    let (mut to_passive, mut to_active) = (VecDeque::new(), VecDeque::new());

    active.start(now);
    loop {
        // Drain every output of the active side.
        while let Some(out) = active.poll_output() {
            match out {
                Output::Connect => {
                    // "Accept" the connection: a passive peer for it, then tell the active side.
                    passive = Some(PassivePeer::new(
                        PassiveConfig::default(),
                        Principal::default(),
                        now,
                    ));
                    active.handle_input(Input::Connected, now)?;
                }
                Output::Send(frame) => to_passive.push_back(frame),
                Output::Storage(id, op) => {
                    active.handle_input(Input::Storage(id, phone.execute(op)), now)?
                }
                Output::Event(Event::Status(s)) => {
                    println!("phone: {:?} {:?}", s.activity, s.progress)
                }
                Output::Event(Event::Documents(docs)) => {
                    for d in docs {
                        println!("phone: {:?} {} {}", d.direction, d.doc_id, d.rev);
                    }
                }
                Output::Close(reason) => println!("phone closes: {}", reason.message),
                _ => {}
            }
        }
        // Drain the passive side.
        if let Some(p) = passive.as_mut() {
            while let Some(out) = p.poll_output() {
                match out {
                    Output::Send(frame) => to_active.push_back(frame),
                    Output::Storage(id, op) => {
                        p.handle_input(Input::Storage(id, laptop.execute(op)), now)?
                    }
                    _ => {}
                }
            }
        }
        // Deliver one frame each way; stop when nothing moves.
        let (a, b) = (to_passive.pop_front(), to_active.pop_front());
        if a.is_none() && b.is_none() {
            break;
        }
        if let (Some(frame), Some(p)) = (a, passive.as_mut()) {
            p.handle_input(Input::Frame(frame), now)?;
        }
        if let Some(frame) = b {
            active.handle_input(Input::Frame(frame), now)?;
        }
    }
    assert_eq!(active.status().activity, Activity::Stopped);
    for db in [&phone, &laptop] {
        assert!(db.get(&notes, &DocId::new("groceries")?)?.is_some());
        assert!(db.get(&notes, &DocId::new("todo")?)?.is_some());
    }
    println!("both databases hold both notes");
    Ok(())
}
