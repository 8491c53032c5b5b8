//! Cells and domains.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BbsError;
use crate::validate::Problems;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CellCapacity {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub containers: i32,
}

/// A rootfs provider: `preloaded` with its stack names as properties, or `docker`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    pub properties: Vec<String>,
}

/// A cell's presence: what the rep registers, on a lease, while it is alive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CellPresence {
    pub cell_id: String,
    pub rep_address: String,
    pub zone: String,
    pub capacity: CellCapacity,
    #[serde(rename = "rootfs_provider_list")]
    pub rootfs_providers: Vec<Provider>,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    pub rep_url: String,
    pub annotations: BTreeMap<String, String>,
}

impl CellPresence {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.name("cell_id", &self.cell_id);
        p.check(!self.rep_address.is_empty(), || {
            "rep_address is required".into()
        });
        p.check(self.capacity.memory_mb > 0, || {
            "capacity.memory_mb must be > 0".into()
        });
        p.check(self.capacity.disk_mb >= 0, || {
            "capacity.disk_mb must be >= 0".into()
        });
        p.check(self.capacity.containers > 0, || {
            "capacity.containers must be > 0".into()
        });
        p.into_record_result("cell presence")
    }
}
