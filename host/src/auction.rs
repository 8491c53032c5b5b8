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
    version: "0.1.0",
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
        let input = to_wit(batch);
        self.place_wit(&input, batch.works.len())
    }

    /// The call itself on an already converted batch (the benchmark separates the two).
    pub(crate) fn place_wit(
        &self,
        input: &w::Batch,
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

fn resources(r: &s::Resources) -> w::Resources {
    w::Resources {
        memory_mb: r.memory_mb,
        disk_mb: r.disk_mb,
        containers: r.containers,
    }
}

/// The batch in the WIT's shape, ready to be lowered.
pub(crate) fn to_wit(b: &s::Batch) -> w::Batch {
    w::Batch {
        strings: b.strings.clone(),
        settings: w::Settings {
            starting_container_weight: b.settings.starting_container_weight,
            bin_pack_first_fit_weight: b.settings.bin_pack_first_fit_weight,
            starting_container_count_maximum: b.settings.starting_container_count_maximum,
        },
        id_sets: b.id_sets.clone(),
        rootfs_provider_sets: b
            .rootfs_provider_sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|p| w::RootfsProvider {
                        scheme: p.scheme,
                        stacks: p.stacks.clone(),
                    })
                    .collect()
            })
            .collect(),
        cells: b
            .cells
            .iter()
            .map(|c| w::Cell {
                zone: c.zone,
                index: c.index,
                total: resources(&c.total),
                available: resources(&c.available),
                starting_containers: c.starting_containers,
                proxy_memory_mb: c.proxy_memory_mb,
                rootfs_providers: c.rootfs_providers,
                volume_drivers: c.volume_drivers,
                placement_tags: c.placement_tags,
                optional_placement_tags: c.optional_placement_tags,
                evacuating: c.evacuating,
                tasks: c.tasks,
            })
            .collect(),
        process_instances: b
            .process_instances
            .iter()
            .map(|p| w::ProcessInstances {
                cell: p.cell,
                process_guid: p.process_guid,
                count: p.count,
            })
            .collect(),
        works: b
            .works
            .iter()
            .map(|x| w::Work {
                kind: match x.kind {
                    s::WorkKind::Lrp {
                        process_guid,
                        index,
                        domain,
                    } => w::WorkKind::Lrp(w::Lrp {
                        process_guid,
                        index,
                        domain,
                    }),
                    s::WorkKind::Task { task_guid, domain } => {
                        w::WorkKind::Task(w::Task { task_guid, domain })
                    }
                },
                memory_mb: x.memory_mb,
                disk_mb: x.disk_mb,
                max_pids: x.max_pids,
                rootfs: w::Rootfs {
                    scheme: x.rootfs.scheme,
                    name: x.rootfs.name,
                },
                volume_drivers: x.volume_drivers,
                placement_tags: x.placement_tags,
            })
            .collect(),
    }
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

    /// A batch already in WIT form.
    pub struct Lowerable(pub(crate) w::Batch, pub(crate) usize);

    impl std::fmt::Debug for Lowerable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Lowerable")
                .field("works", &self.1)
                .finish_non_exhaustive()
        }
    }

    pub fn convert(batch: &s::Batch) -> Lowerable {
        Lowerable(to_wit(batch), batch.works.len())
    }

    pub fn place_converted(p: &AuctionPolicy, input: &Lowerable) -> Result<Vec<s::Outcome>, Fault> {
        p.place_wit(&input.0, input.1)
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
