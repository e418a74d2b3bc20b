//! # peerlite-cli — the `peerlite` command
//!
//! The `peerlite` binary (serve a database, sync with a peer, edit documents and blobs,
//! manage TLS identities, run a demo or a benchmark) is built from this crate, so that
//! the runtime libraries it uses (`peerlite-smol`) build none of its dependencies
//! (clap, indicatif, ctrlc, mimalloc, tempfile).
//!
//! Its library half is the benchmark harness behind `peerlite bench` ([`bench`](mod@bench))
//! and the admin interface of a served database ([`admin`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
