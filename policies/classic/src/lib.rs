//! Diego's classic auction scoring, the platform's default policy. The same code
//! (`diego-auction-scoring`) is the host's native fallback, so both answer identically.

use diego_auction_scoring::wire::{self, DecodeError};
use diego_auction_scoring::{Batch, Outcome, Strategy, place_classic};
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

    /// Scores straight from the wire bytes: same answers as `place`, without the decoded copy.
    fn place_bytes(batch: &[u8]) -> Result<Vec<Outcome>, DecodeError> {
        wire::place(batch, Strategy::Classic)
    }
}

export_policy!(Classic);
