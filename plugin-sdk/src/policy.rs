//! Auction policies on plain Rust data.

use diego_auction_scoring as s;

/// What `describe` reports: shown by the host in logs and in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl PolicyInfo {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PolicyInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
        }
    }
}

/// An auction policy. Both functions are pure: the host gives a fresh instance per batch, so
/// nothing survives between calls, and it re-checks every placement you return.
pub trait Policy {
    fn info() -> PolicyInfo;

    /// One outcome per `batch.works` item, in that order. Account for the capacity your own
    /// earlier placements use (see `diego_auction_scoring::place` for the reference loop).
    fn place(batch: &s::Batch) -> Vec<s::Outcome>;
}

#[doc(hidden)]
pub mod glue {
    use super::{Policy, s};
    use crate::auction as w;

    pub fn describe<P: Policy>() -> w::PolicyInfo {
        let i = P::info();
        w::PolicyInfo {
            name: i.name,
            version: i.version,
            description: i.description,
        }
    }

    pub fn place<P: Policy>(batch: w::Batch) -> Vec<w::Outcome> {
        let batch = from_wit(batch);
        P::place(&batch).into_iter().map(to_wit).collect()
    }

    fn resources(r: w::Resources) -> s::Resources {
        s::Resources {
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
            containers: r.containers,
        }
    }

    /// Moves the lifted WIT batch into the scoring model (lists are moved, not copied).
    pub fn from_wit(b: w::Batch) -> s::Batch {
        s::Batch {
            strings: b.strings,
            settings: s::Settings {
                starting_container_weight: b.settings.starting_container_weight,
                bin_pack_first_fit_weight: b.settings.bin_pack_first_fit_weight,
                starting_container_count_maximum: b.settings.starting_container_count_maximum,
            },
            id_sets: b.id_sets,
            rootfs_provider_sets: b
                .rootfs_provider_sets
                .into_iter()
                .map(|set| {
                    set.into_iter()
                        .map(|p| s::RootfsProvider {
                            scheme: p.scheme,
                            stacks: p.stacks,
                        })
                        .collect()
                })
                .collect(),
            cells: b
                .cells
                .into_iter()
                .map(|c| s::Cell {
                    zone: c.zone,
                    index: c.index,
                    total: resources(c.total),
                    available: resources(c.available),
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
                .into_iter()
                .map(|p| s::ProcessInstances {
                    cell: p.cell,
                    process_guid: p.process_guid,
                    count: p.count,
                })
                .collect(),
            works: b
                .works
                .into_iter()
                .map(|w| s::Work {
                    kind: match w.kind {
                        w::WorkKind::Lrp(l) => s::WorkKind::Lrp {
                            process_guid: l.process_guid,
                            index: l.index,
                            domain: l.domain,
                        },
                        w::WorkKind::Task(t) => s::WorkKind::Task {
                            task_guid: t.task_guid,
                            domain: t.domain,
                        },
                    },
                    memory_mb: w.memory_mb,
                    disk_mb: w.disk_mb,
                    max_pids: w.max_pids,
                    rootfs: s::Rootfs {
                        scheme: w.rootfs.scheme,
                        name: w.rootfs.name,
                    },
                    volume_drivers: w.volume_drivers,
                    placement_tags: w.placement_tags,
                })
                .collect(),
        }
    }

    pub fn to_wit(o: s::Outcome) -> w::Outcome {
        match o {
            s::Outcome::Placed(c) => w::Outcome::Placed(c),
            s::Outcome::Failed(e) => w::Outcome::Failed(match e {
                s::PlacementError::NoCells => w::PlacementError::NoCells,
                s::PlacementError::RootfsMismatch => w::PlacementError::RootfsMismatch,
                s::PlacementError::VolumeDriverMismatch => w::PlacementError::VolumeDriverMismatch,
                s::PlacementError::PlacementTagMismatch => w::PlacementError::PlacementTagMismatch,
                s::PlacementError::InsufficientResources(sf) => {
                    let mut f = w::ResourceShortfall::empty();
                    f.set(w::ResourceShortfall::DISK, sf.disk);
                    f.set(w::ResourceShortfall::MEMORY, sf.memory);
                    f.set(w::ResourceShortfall::CONTAINERS, sf.containers);
                    w::PlacementError::InsufficientResources(f)
                }
                s::PlacementError::InflightStartLimit => w::PlacementError::InflightStartLimit,
                s::PlacementError::Other(m) => w::PlacementError::Other(m),
            }),
        }
    }
}
