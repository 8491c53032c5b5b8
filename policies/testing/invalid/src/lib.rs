//! Places every work item on a cell that does not exist: the host's re-validation must refuse
//! the answer and fall back to the native policy.

use diego_auction_scoring::{Batch, Outcome};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Invalid;

impl Policy for Invalid {
    fn info() -> PolicyInfo {
        PolicyInfo::new("invalid", "0.0.0", "test guest: invalid placements")
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        let nowhere = batch.cells.len() as u32;
        batch
            .works
            .iter()
            .map(|_| Outcome::Placed(nowhere))
            .collect()
    }
}

export_policy!(Invalid);
