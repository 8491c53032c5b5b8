//! Worked example (docs/plugins.md): a "strict anti-affinity" auction policy.
//!
//! Rule: never put two instances of the same process on one cell; among the cells left, take
//! the one with the most free memory. Tasks go to the cell with the most free memory. Diego's
//! hard filters (rootfs, volume drivers, placement tags) are reused from the scoring crate.
//!
//! The loop shows the one duty every policy has: account for your own earlier placements
//! (here `free` and `taken`), because the host re-checks the whole batch and treats an
//! overcommitted cell as a fault.

use std::collections::HashSet;

use diego_plugin_sdk::scoring::{
    Batch, Outcome, PlacementError, Shortfall, WorkKind, matches_placement_tags, matches_rootfs,
    matches_volume_drivers,
};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct StrictAntiAffinity;

impl Policy for StrictAntiAffinity {
    fn info() -> PolicyInfo {
        PolicyInfo::new(
            "strict-anti-affinity",
            env!("CARGO_PKG_VERSION"),
            "at most one instance of a process per cell; most free memory first",
        )
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        // Remaining (memory, disk, containers) per cell, updated as we place.
        let mut free: Vec<(u64, u64, u32)> = batch
            .cells
            .iter()
            .map(|c| {
                (
                    c.available.memory_mb,
                    c.available.disk_mb,
                    c.available.containers,
                )
            })
            .collect();
        // (process, cell) pairs already taken, from the cells' state and from this batch.
        let mut taken: HashSet<(u32, u32)> = batch
            .process_instances
            .iter()
            .map(|p| (p.process_guid, p.cell))
            .collect();

        batch
            .works
            .iter()
            .map(|work| {
                let process = match work.kind {
                    WorkKind::Lrp { process_guid, .. } => Some(process_guid),
                    WorkKind::Task { .. } => None,
                };
                let best = batch
                    .cells
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.evacuating)
                    .filter(|(_, c)| matches_rootfs(batch, c, &work.rootfs))
                    .filter(|(_, c)| matches_volume_drivers(batch, c, work.volume_drivers))
                    .filter(|(_, c)| matches_placement_tags(batch, c, work.placement_tags))
                    .filter(|(i, _)| process.is_none_or(|p| !taken.contains(&(p, *i as u32))))
                    .filter(|(i, _)| {
                        let (m, d, n) = free[*i];
                        m >= work.memory_mb && d >= work.disk_mb && n >= 1
                    })
                    .max_by_key(|(i, _)| (free[*i].0, std::cmp::Reverse(*i)));
                match best {
                    Some((i, _)) => {
                        let f = &mut free[i];
                        f.0 -= work.memory_mb;
                        f.1 -= work.disk_mb;
                        f.2 -= 1;
                        if let Some(p) = process {
                            taken.insert((p, i as u32));
                        }
                        Outcome::Placed(i as u32)
                    }
                    None => {
                        Outcome::Failed(PlacementError::InsufficientResources(Shortfall::default()))
                    }
                }
            })
            .collect()
    }
}

export_policy!(StrictAntiAffinity);
