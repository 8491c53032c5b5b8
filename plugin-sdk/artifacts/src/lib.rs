//! Paths of the Wasm guests built from this repo's sources (see `build.rs`): the shipped
//! auction policies, the shipped lifecycles, the SDK's worked examples, and the misbehaving
//! guests of the host's fault tests. A dev-dependency of `diego-host` (tests, benchmark) and
//! `diego-lifecycle-runner` (tests); never shipped.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
