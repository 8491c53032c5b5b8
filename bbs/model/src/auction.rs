//! What the BBS (and the converger) send the auctioneer: Diego's `auctioneer.LRPStartRequest`
//! and `auctioneer.TaskStartRequest`, and the placement constraint and resources they carry —
//! the same shapes the rep reports in its cell state.

use serde::{Deserialize, Serialize};

use crate::{DesiredLrp, Task};

/// What a unit of work needs of a cell's capacity (Diego's `rep.Resource`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Resource {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub max_pids: i32,
}

/// Where a unit of work may run (Diego's `rep.PlacementConstraint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConstraint {
    pub placement_tags: Vec<String>,
    pub volume_drivers: Vec<String>,
    /// The rootfs URL: `preloaded:STACK`, `docker:///image`, …
    pub root_fs: String,
}

/// Place these instances of one desired LRP (`POST /v1/lrps` on the auctioneer takes a list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LrpStartRequest {
    pub process_guid: String,
    pub domain: String,
    pub indices: Vec<i32>,
    pub resource: Resource,
    pub placement_constraint: PlacementConstraint,
}

/// Place this task (`POST /v1/tasks` on the auctioneer takes a list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TaskStartRequest {
    pub task_guid: String,
    pub domain: String,
    pub resource: Resource,
    pub placement_constraint: PlacementConstraint,
}

impl LrpStartRequest {
    pub fn new(lrp: &DesiredLrp, indices: Vec<i32>) -> Self {
        Self {
            process_guid: lrp.process_guid.clone(),
            domain: lrp.domain.clone(),
            indices,
            resource: Resource {
                memory_mb: lrp.memory_mb,
                disk_mb: lrp.disk_mb,
                max_pids: lrp.max_pids,
            },
            placement_constraint: PlacementConstraint {
                placement_tags: lrp.placement_tags.clone(),
                volume_drivers: lrp.volume_mounts.iter().map(|m| m.driver.clone()).collect(),
                root_fs: lrp.rootfs.clone(),
            },
        }
    }
}

impl TaskStartRequest {
    pub fn new(task: &Task) -> Self {
        let d = &task.task_definition;
        Self {
            task_guid: task.task_guid.clone(),
            domain: task.domain.clone(),
            resource: Resource {
                memory_mb: d.memory_mb,
                disk_mb: d.disk_mb,
                max_pids: d.max_pids,
            },
            placement_constraint: PlacementConstraint {
                placement_tags: d.placement_tags.clone(),
                volume_drivers: d.volume_mounts.iter().map(|m| m.driver.clone()).collect(),
                root_fs: d.rootfs.clone(),
            },
        }
    }
}
