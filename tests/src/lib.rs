//! # peerlite-sim — a deterministic simulator for Peerlite replication
//!
//! Runs any number of peers — each a Peerlite database on the in-memory backend — with
//! the real replication state machines of `peerlite-proto`, over a simulated network, on
//! a virtual clock. One seed drives every random choice, so a failing run replays exactly.
//!
//! The faults are those of the transport Peerlite really uses (a WebSocket is reliable and
//! ordered while it lives): latency and jitter, whole-connection drops, partitions and
//! heals, reconnect storms, slow and out-of-order storage replies, and peer crashes that
//! lose every write not yet durable.
//!
//! Storage behaves as Peerlite's runtime uses it: a write is readable, and replication
//! hears of it, as soon as it commits, while its sync takes [`SimConfig::sync_delay`];
//! only when the sync ends is it durable, acknowledged and answered. A crash meanwhile
//! loses it on that peer even though a peer may already have stored it.
//!
//! ```
//! use std::time::Duration;
//! use peerlite_proto::PassiveConfig;
//! use peerlite_sim::{SimConfig, World};
//!
//! let mut world = World::new(42, SimConfig::default());
//! let (hub, a, b) = (world.add_peer("hub"), world.add_peer("a"), world.add_peer("b"));
//! world.listen(hub, PassiveConfig::default());
//! let la = world.replicate(a, hub, |c| c.continuous = true);
//! let lb = world.replicate(b, hub, |c| c.continuous = true);
//! world.start(la);
//! world.start(lb);
//! world.save(a, "doc", r#"{"v": "from a"}"#)?;
//! world.run_until_quiet(Duration::from_secs(60))?;
//! assert_eq!(world.db(b).get(&Default::default(), &"doc".parse()?)?.map(|d| d.body.to_json()["v"].clone()),
//!            Some("from a".into()));
//! world.check_converged(&[hub, a, b])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod fuzzing;
pub mod recording;
mod rng;
mod world;

pub use recording::{ReplayError, Replayed, replay, replay_file};
pub use rng::Rng;
pub use world::{Holding, LinkId, PeerId, SimConfig, SimError, Stats, World};
