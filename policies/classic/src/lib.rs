//! Diego's classic auction scoring, the platform's default policy. The same code
//! (`diego-auction-scoring`) is the host's native fallback, so both answer identically.

use diego_auction_scoring::{Batch, Outcome, place_classic};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Classic;

impl Policy for Classic {
    fn info() -> PolicyInfo {
        PolicyInfo::new(
            "classic",
            env!("CARGO_PKG_VERSION"),
            "Diego's balanced scoring with zone balancing and locality",
        )
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        place_classic(batch)
    }
}

export_policy!(Classic);
