//! The host's check of a policy's answer. A policy (Wasm or not) is advice: the host keeps
//! authority over capacity and constraints, so every placement is re-checked here against the
//! batch, independently of how the policy reached it.

use crate::{
    Batch, Outcome, PlacementError, matches_placement_tags, matches_rootfs, matches_volume_drivers,
};

/// Longest `PlacementError::Other` message a policy may return.
pub const MAX_OTHER_MESSAGE: usize = 256;

/// Why a policy's answer was refused. `work` is the index into `batch.works`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidPlacement {
    WrongLength {
        expected: usize,
        got: usize,
    },
    NoSuchCell {
        work: usize,
        cell: u32,
    },
    Evacuating {
        work: usize,
        cell: u32,
    },
    Rootfs {
        work: usize,
        cell: u32,
    },
    VolumeDrivers {
        work: usize,
        cell: u32,
    },
    PlacementTags {
        work: usize,
        cell: u32,
    },
    /// The placements on this cell need more than it has.
    Overcommitted {
        cell: u32,
        resource: &'static str,
    },
    /// More starts than `starting_container_count_maximum` allows.
    InflightLimit {
        placed: u64,
        allowed: u64,
    },
    MessageTooLong {
        work: usize,
    },
}

impl std::fmt::Display for InvalidPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidPlacement::WrongLength { expected, got } => {
                write!(f, "returned {got} outcomes for {expected} work items")
            }
            InvalidPlacement::NoSuchCell { work, cell } => {
                write!(
                    f,
                    "work {work} placed on cell {cell}, which is not in the batch"
                )
            }
            InvalidPlacement::Evacuating { work, cell } => {
                write!(f, "work {work} placed on evacuating cell {cell}")
            }
            InvalidPlacement::Rootfs { work, cell } => {
                write!(
                    f,
                    "work {work} placed on cell {cell}, which lacks its rootfs"
                )
            }
            InvalidPlacement::VolumeDrivers { work, cell } => {
                write!(
                    f,
                    "work {work} placed on cell {cell}, which lacks its volume drivers"
                )
            }
            InvalidPlacement::PlacementTags { work, cell } => {
                write!(
                    f,
                    "work {work} placed on cell {cell}, whose placement tags do not match"
                )
            }
            InvalidPlacement::Overcommitted { cell, resource } => {
                write!(
                    f,
                    "cell {cell} overcommitted: not enough {resource} for its placements"
                )
            }
            InvalidPlacement::InflightLimit { placed, allowed } => {
                write!(
                    f,
                    "{placed} starts placed, the in-flight limit allows {allowed}"
                )
            }
            InvalidPlacement::MessageTooLong { work } => {
                write!(
                    f,
                    "work {work}: failure message over {MAX_OTHER_MESSAGE} bytes"
                )
            }
        }
    }
}

impl std::error::Error for InvalidPlacement {}

/// Checks `outcomes` against `batch`: one per work item; every placement on an existing,
/// non-evacuating cell that matches its rootfs, volume drivers and placement tags; the sum of
/// the placements on each cell within its available memory, disk and containers; the in-flight
/// start limit respected.
pub fn validate_outcomes(batch: &Batch, outcomes: &[Outcome]) -> Result<(), InvalidPlacement> {
    if outcomes.len() != batch.works.len() {
        return Err(InvalidPlacement::WrongLength {
            expected: batch.works.len(),
            got: outcomes.len(),
        });
    }
    // Per cell: memory, disk, containers used by this batch's placements.
    let mut used = vec![(0u64, 0u64, 0u64); batch.cells.len()];
    let mut placed = 0u64;
    for (w, (work, outcome)) in batch.works.iter().zip(outcomes).enumerate() {
        let cell = match outcome {
            Outcome::Placed(c) => *c,
            Outcome::Failed(PlacementError::Other(m)) if m.len() > MAX_OTHER_MESSAGE => {
                return Err(InvalidPlacement::MessageTooLong { work: w });
            }
            Outcome::Failed(_) => continue,
        };
        let Some(spec) = batch.cells.get(cell as usize) else {
            return Err(InvalidPlacement::NoSuchCell { work: w, cell });
        };
        if spec.evacuating {
            return Err(InvalidPlacement::Evacuating { work: w, cell });
        }
        if !matches_rootfs(batch, spec, &work.rootfs) {
            return Err(InvalidPlacement::Rootfs { work: w, cell });
        }
        if !matches_volume_drivers(batch, spec, work.volume_drivers) {
            return Err(InvalidPlacement::VolumeDrivers { work: w, cell });
        }
        if !matches_placement_tags(batch, spec, work.placement_tags) {
            return Err(InvalidPlacement::PlacementTags { work: w, cell });
        }
        let u = &mut used[cell as usize];
        u.0 = u.0.saturating_add(work.memory_mb);
        u.1 = u.1.saturating_add(work.disk_mb);
        u.2 += 1;
        placed += 1;
    }
    for (c, (spec, u)) in batch.cells.iter().zip(&used).enumerate() {
        let cell = c as u32;
        if u.0 > spec.available.memory_mb {
            return Err(InvalidPlacement::Overcommitted {
                cell,
                resource: "memory",
            });
        }
        if u.1 > spec.available.disk_mb {
            return Err(InvalidPlacement::Overcommitted {
                cell,
                resource: "disk",
            });
        }
        if u.2 > u64::from(spec.available.containers) {
            return Err(InvalidPlacement::Overcommitted {
                cell,
                resource: "containers",
            });
        }
    }
    let max = u64::from(batch.settings.starting_container_count_maximum);
    if max > 0 && placed > 0 {
        let starting: u64 = batch
            .cells
            .iter()
            .filter(|c| !c.evacuating)
            .map(|c| u64::from(c.starting_containers))
            .sum();
        let allowed = max.saturating_sub(starting);
        if placed > allowed {
            return Err(InvalidPlacement::InflightLimit { placed, allowed });
        }
    }
    Ok(())
}
