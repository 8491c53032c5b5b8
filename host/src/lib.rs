//! diego's WebAssembly plug-in host: the only crate that imports wasmtime.
//!
//! Plug-ins are components built against the WIT in `plugin-sdk/wit/`:
//! `diego:auction@0.2.0` (world `auction-policy`; the batch crosses as one byte list, see
//! [`scoring::wire`]) and `diego:lifecycle@0.1.0` (world
//! `lifecycle`). The host
//!
//! - loads a component ([`Host::load_policy`], [`Host::load_lifecycle`]): size cap, sha256,
//!   refusal of unknown WIT versions, compile once and cache the precompiled `.cwasm` in a
//!   host-owned directory keyed by (sha256, engine compatibility hash), type-check against the
//!   world with `instantiate_pre`;
//! - calls it on a **fresh instance per call** (from the `InstancePre`, on a pooling engine),
//!   under per-call [`Limits`]: epoch deadline, memory cap with trap on grow failure, input and
//!   output caps, stderr captured to a bounded pipe so a panic message can be reported;
//! - classifies failures as [`Fault`]s (deadline, memory, panic with message, stack overflow,
//!   ...); the instance is dropped and the platform goes on;
//! - keeps authority: every placement is re-checked ([`diego_auction_scoring::validate_outcomes`]),
//!   every lifecycle plan is validated ([`lifecycle::validate_plan`]) before anything runs;
//! - swaps auction policies at run time ([`PolicyRegistry`]): load, canary, atomic swap; a
//!   fault falls back to the native classic policy for that batch, and a circuit breaker
//!   reverts to native and marks the custom policy degraded.
//!
//! Guests get no ambient authority: WASI is linked only because Rust's std imports it, with an
//! empty context (no files, env, args, sockets; stdout discarded; random seeded). The
//! container capabilities a lifecycle's plans need are declared in [`capabilities`] as traits
//! the cell implements; this crate imports no cell crate.

mod auction;
pub mod capabilities;
mod engine;
mod fault;
pub mod lifecycle;
mod loader;
mod registry;
mod store;

pub use auction::AuctionPolicy;
pub use auction::PolicyDescription;
#[doc(hidden)]
pub use auction::bench;
pub use engine::{Host, HostConfig, HostError};
pub use fault::{Fault, LoadError};
pub use loader::ComponentInfo;
pub use registry::{
    ActivePolicy, DecidedBy, Degraded, InstallError, OnFault, Placement, PolicyRegistry,
    RegistryConfig, RegistryStatus, synthetic_batch,
};
pub use store::{Limits, LogLine};

/// The pure-Rust batch model and the native classic policy (the fallback and the baseline).
pub use diego_auction_scoring as scoring;

/// The WIT versions this host implements, per world (`package@version`).
pub const AUCTION_WIT: &str = "diego:auction@0.2.0";
pub const LIFECYCLE_WIT: &str = "diego:lifecycle@0.1.0";
