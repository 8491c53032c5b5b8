//! Panics with a recognisable message on any batch with work: the host must report it.

use diego_auction_scoring::{Batch, Outcome};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Panicker;

impl Policy for Panicker {
    fn info() -> PolicyInfo {
        PolicyInfo::new("panicker", "0.0.0", "test guest: panics")
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        if batch.works.is_empty() {
            return Vec::new();
        }
        panic!("policy bug: no score for {} cells", batch.cells.len());
    }
}

export_policy!(Panicker);
