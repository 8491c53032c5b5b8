//! Root-only integration tests: real containers on this host.
//!
//! Run as root: `cargo test -p diego-garden --test root -- --test-threads=2`.
//! Without root the tests fail under `CI=true` and are skipped (with a message) otherwise.

// helpers outside #[test] functions unwrap too: this whole binary is test code
#![allow(clippy::unwrap_used)]

mod common;

mod adopt;
mod api;
mod escape;
mod interactive;
mod isolation;
mod leaks;
mod limits;
mod network;
mod oci;
mod registry;
mod stack;
mod tar;
