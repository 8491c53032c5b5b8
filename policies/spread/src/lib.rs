//! Spread: the cell with the fewest containers wins (memory and disk only filter), with
//! Diego's zone balancing and locality. Good for many small, latency-sensitive instances.

use diego_auction_scoring::wire::{self, DecodeError};
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

    /// Scores straight from the wire bytes: same answers as `place`, without the decoded copy.
    fn place_bytes(batch: &[u8]) -> Result<Vec<Outcome>, DecodeError> {
        wire::place(batch, Strategy::Spread)
    }
}

export_policy!(Spread);
