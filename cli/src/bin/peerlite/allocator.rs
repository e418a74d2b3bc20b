//! How the `peerlite` binary's allocator (mimalloc v3) holds memory.
//!
//! mimalloc's defaults favour speed over resident memory: on Linux it asks for
//! transparent huge pages, so a 2 MiB page stays resident while any byte of it is in use,
//! and it gives freed pages back to the system only after a second. A sync frees
//! memtables, frames and batches by the megabyte, so with those defaults a process's
//! resident set stays tens of megabytes above what it has in use. The binary is built
//! with mimalloc's `no_thp` feature, and [`tune`] shortens the delay to 10 ms
//! (`peerlite bench`, 100,000 documents: peak RSS 105 / 81 MB for the replicator /
//! listener with the defaults, 54 / 54 MB with both changes, at the same speed within
//! this machine's noise).
//!
//! A `MIMALLOC_PURGE_DELAY` environment variable set by the user wins.

use std::os::raw::c_long;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h); the Rust
/// bindings name no constant for it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds after which mimalloc returns freed pages to the system.
const PURGE_DELAY_MS: c_long = 10;

/// Returns freed pages to the system after 10 ms instead of mimalloc's 1 s.
pub(crate) fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set(PURGE_DELAY, PURGE_DELAY_MS);
    }
}

#[allow(unsafe_code)]
fn set(option: libmimalloc_sys::mi_option_t, value: c_long) {
    // SAFETY: `mi_option_set` stores a value for an option; any value of the purge delay
    // is valid (negative: never purge) and it may be changed at any time, as mimalloc
    // reads it at every purge.
    unsafe { libmimalloc_sys::mi_option_set(option, value) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_the_option_set() {
        tune();
        // SAFETY: reading an option is always allowed.
        let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay, PURGE_DELAY_MS);
        }
    }
}
