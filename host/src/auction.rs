//! Auction-policy components: load, describe, place.

use std::sync::Arc;

use diego_auction_scoring as s;

use crate::engine::{Host, HostInner};
use crate::fault::{Fault, LoadError};
use crate::loader::{ComponentInfo, WorldSpec, load_component};
use crate::store::{Limits, StoreState, fault_of, new_store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit/auction",
        world: "auction-policy",
    });
}

use bindings::AuctionPolicyPre;
use bindings::exports::diego::auction::policy as w;

pub(crate) const SPEC: WorldSpec = WorldSpec {
    world: "auction-policy",
    interface: "diego:auction/policy",
    version: "0.2.0",
};

/// A loaded, type-checked auction policy. Each call runs on a fresh instance.
#[derive(Clone)]
pub struct AuctionPolicy {
    host: Arc<HostInner>,
    pre: AuctionPolicyPre<StoreState>,
    info: ComponentInfo,
    limits: Limits,
    described: (String, String),
}

impl std::fmt::Debug for AuctionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuctionPolicy")
            .field("info", &self.info)
            .field("name", &self.described.0)
            .field("version", &self.described.1)
            .finish_non_exhaustive()
    }
}

pub(crate) fn load(host: &Host, bytes: &[u8]) -> Result<AuctionPolicy, LoadError> {
    let (component, info) = load_component(host, bytes, SPEC)?;
    let link_err = |e: wasmtime::Error| LoadError::Link {
        world: SPEC.world,
        message: format!("{e:#}"),
    };
    let instance_pre = host
        .inner
        .policy_linker
        .instantiate_pre(&component)
        .map_err(link_err)?;
    let pre = AuctionPolicyPre::new(instance_pre).map_err(link_err)?;
    let mut policy = AuctionPolicy {
        host: host.inner.clone(),
        pre,
        info,
        limits: Limits::auction(),
        described: (String::new(), String::new()),
    };
    let d = policy.describe().map_err(LoadError::Describe)?;
    policy.described = (d.name, d.version);
    Ok(policy)
}

/// What a policy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDescription {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl AuctionPolicy {
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// The name the policy gave in `describe` at load.
    pub fn name(&self) -> &str {
        &self.described.0
    }

    pub fn version(&self) -> &str {
        &self.described.1
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Per-plug-in limits (deadline, memory, caps).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn describe(&self) -> Result<PolicyDescription, Fault> {
        let mut store = new_store(&self.host, &self.limits);
        let result = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| Fault::Instantiate(format!("{e:#}")))
            .and_then(|inst| {
                inst.diego_auction_policy()
                    .call_describe(&mut store)
                    .map_err(|e| fault_of(&store, &self.limits, &e))
            })?;
        let total = result.name.len() + result.version.len() + result.description.len();
        if total > self.limits.max_output_bytes {
            return Err(Fault::OutputTooLarge(format!(
                "describe returned {total} bytes"
            )));
        }
        Ok(PolicyDescription {
            name: result.name,
            version: result.version,
            description: result.description,
        })
    }

    /// Runs `place` on a fresh instance under the limits. Checks input caps before lowering
    /// and the answer's length and size after lifting; the placements themselves are checked
    /// by the caller (`validate_outcomes`, as the registry does).
    pub fn place(&self, batch: &s::Batch) -> Result<Vec<s::Outcome>, Fault> {
        check_input(batch, &self.limits)?;
        thread_local! {
            // The encode buffer, reused: a fresh one per call is a fresh allocation of up to
            // a few MiB, which glibc maps and faults in anew each time (a 5,000-cell batch
            // encoded in 26 µs that way, 3x slower than into a warm buffer).
            static WIRE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        WIRE.with(|cell| {
            // `take`, not `borrow_mut`: a re-entrant call (none today) would get an empty
            // buffer of its own instead of a panic.
            let mut input = cell.take();
            input.clear();
            s::wire::encode_into(batch, &mut input);
            let result = self.place_encoded(&input, batch.works.len());
            // Keep a buffer of ordinary size for the next batch; drop an outsized one.
            if input.capacity() <= MAX_KEPT_WIRE_BYTES {
                cell.replace(input);
            }
            result
        })
    }

    /// The call itself on an already encoded batch (the benchmark separates the two).
    pub(crate) fn place_encoded(
        &self,
        input: &[u8],
        works: usize,
    ) -> Result<Vec<s::Outcome>, Fault> {
        let mut store = new_store(&self.host, &self.limits);
        let outcomes = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| Fault::Instantiate(format!("{e:#}")))
            .and_then(|inst| {
                inst.diego_auction_policy()
                    .call_place(&mut store, input)
                    .map_err(|e| fault_of(&store, &self.limits, &e))
            })?;
        if outcomes.len() != works {
            return Err(Fault::InvalidOutput(format!(
                "returned {} outcomes for {works} work items",
                outcomes.len()
            )));
        }
        let message_bytes: usize = outcomes
            .iter()
            .map(|o| match o {
                w::Outcome::Failed(w::PlacementError::Other(m)) => m.len(),
                _ => 0,
            })
            .sum();
        if message_bytes > self.limits.max_output_bytes {
            return Err(Fault::OutputTooLarge(format!(
                "{message_bytes} bytes of failure messages"
            )));
        }
        Ok(outcomes.into_iter().map(from_wit).collect())
    }
}

/// Largest encode buffer a thread keeps between calls (a 20,000-cell batch is ~1.7 MiB).
const MAX_KEPT_WIRE_BYTES: usize = 4 << 20;

fn check_input(batch: &s::Batch, limits: &Limits) -> Result<(), Fault> {
    if batch.cells.len() > limits.max_cells {
        return Err(Fault::InputTooLarge(format!(
            "{} cells (cap {})",
            batch.cells.len(),
            limits.max_cells
        )));
    }
    if batch.works.len() > limits.max_works {
        return Err(Fault::InputTooLarge(format!(
            "{} work items (cap {})",
            batch.works.len(),
            limits.max_works
        )));
    }
    let string_bytes: usize = batch.strings.iter().map(String::len).sum();
    if string_bytes > limits.max_string_bytes {
        return Err(Fault::InputTooLarge(format!(
            "{string_bytes} bytes of strings (cap {})",
            limits.max_string_bytes
        )));
    }
    Ok(())
}

fn from_wit(o: w::Outcome) -> s::Outcome {
    match o {
        w::Outcome::Placed(c) => s::Outcome::Placed(c),
        w::Outcome::Failed(e) => s::Outcome::Failed(match e {
            w::PlacementError::NoCells => s::PlacementError::NoCells,
            w::PlacementError::RootfsMismatch => s::PlacementError::RootfsMismatch,
            w::PlacementError::VolumeDriverMismatch => s::PlacementError::VolumeDriverMismatch,
            w::PlacementError::PlacementTagMismatch => s::PlacementError::PlacementTagMismatch,
            w::PlacementError::InsufficientResources(f) => {
                s::PlacementError::InsufficientResources(s::Shortfall {
                    disk: f.contains(w::ResourceShortfall::DISK),
                    memory: f.contains(w::ResourceShortfall::MEMORY),
                    containers: f.contains(w::ResourceShortfall::CONTAINERS),
                })
            }
            w::PlacementError::InflightStartLimit => s::PlacementError::InflightStartLimit,
            w::PlacementError::Other(m) => s::PlacementError::Other(m),
        }),
    }
}

/// Benchmark hooks: the conversion and the call, timed separately.
#[doc(hidden)]
pub mod bench {
    use super::*;

    /// A batch already in wire form.
    pub struct Lowerable(pub(crate) Vec<u8>, pub(crate) usize);

    impl std::fmt::Debug for Lowerable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Lowerable")
                .field("works", &self.1)
                .finish_non_exhaustive()
        }
    }

    pub fn convert(batch: &s::Batch) -> Lowerable {
        Lowerable(s::wire::encode(batch), batch.works.len())
    }

    pub fn place_converted(p: &AuctionPolicy, input: &Lowerable) -> Result<Vec<s::Outcome>, Fault> {
        p.place_encoded(&input.0, input.1)
    }

    /// Times `calls` calls of `place` on ONE instance (no instantiation, heap already grown):
    /// with an empty batch, the bare cost of crossing the boundary (lower, call, lift).
    pub fn warm_place(
        p: &AuctionPolicy,
        input: &Lowerable,
        calls: usize,
    ) -> Result<Vec<std::time::Duration>, Fault> {
        let mut store = new_store(&p.host, &p.limits);
        // The bench calls many times on one instance: give it a generous deadline.
        store.set_epoch_deadline(u64::MAX / 2);
        let inst = p
            .pre
            .instantiate(&mut store)
            .map_err(|e| Fault::Instantiate(format!("{e:#}")))?;
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = std::time::Instant::now();
            inst.diego_auction_policy()
                .call_place(&mut store, &input.0)
                .map_err(|e| fault_of(&store, &p.limits, &e))?;
            times.push(t.elapsed());
        }
        Ok(times)
    }

    /// Instantiate only (a fresh store and instance, then drop).
    pub fn instantiate(p: &AuctionPolicy) -> Result<(), Fault> {
        let mut store = new_store(&p.host, &p.limits);
        p.pre
            .instantiate(&mut store)
            .map(|_| ())
            .map_err(|e| Fault::Instantiate(format!("{e:#}")))
    }
}
