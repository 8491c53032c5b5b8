//! Spread: the cell with the fewest containers wins (memory and disk only filter), with
//! Diego's zone balancing and locality. Good for many small, latency-sensitive instances.

use diego_auction_scoring::{Batch, Outcome, Strategy, place};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Spread;

impl Policy for Spread {
    fn info() -> PolicyInfo {
        PolicyInfo::new(
            "spread",
            env!("CARGO_PKG_VERSION"),
            "fewest containers first, zone balanced",
        )
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        place(batch, Strategy::Spread)
    }
}

export_policy!(Spread);
