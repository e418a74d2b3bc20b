//! The admin interface of a served database: HTTP/JSON on a Unix domain socket inside
//! the database directory (`admin.sock`, mode 0600, owner only), and optionally on a
//! TCP address with Basic authentication.
//!
//! `peerlite serve` starts an [`AdminServer`]; the `peerlite` document, blob and
//! identity commands find its socket and go through it while the server holds the
//! database (which is locked to one process), with the same output and exit codes as
//! when they open it themselves. Anything that speaks HTTP over a Unix socket can use it
//! too:
//!
//! ```text
//! curl --unix-socket laptop.db/admin.sock http://peerlite/status
//! curl --unix-socket laptop.db/admin.sock -X PUT -d '{"n": 1}' http://peerlite/c/_default._default/docs/x
//! ```
//!
//! The endpoints are listed in `docs/ADMIN.md`. What the commands do is written once, in
//! [`ops`], and run by the server or by the command itself.

pub mod api;
mod client;
pub mod metrics;
pub mod ops;
mod server;

use std::path::{Path, PathBuf};

pub use client::{Client, segment};
pub use server::{AdminError, AdminOptions, AdminServer, Served, split_id};

/// The admin socket's file name inside the database directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// Where the admin socket of the database at `db` is.
pub fn socket_path(db: &Path) -> PathBuf {
    db.join(SOCKET_NAME)
}
