//! Bin-packing: the fullest cell that fits wins, so fewer cells stay busy (cells can be drained
//! and scaled down). Same filters and same-process anti-affinity as Diego's classic policy.

use diego_auction_scoring::wire::{self, DecodeError};
use diego_auction_scoring::{Batch, Outcome, Strategy, place};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Binpack;

impl Policy for Binpack {
    fn info() -> PolicyInfo {
        PolicyInfo::new(
            "binpack",
            env!("CARGO_PKG_VERSION"),
            "fullest cell first; keeps Diego's filters and locality",
        )
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        place(batch, Strategy::Binpack)
    }

    /// Scores straight from the wire bytes: same answers as `place`, without the decoded copy.
    fn place_bytes(batch: &[u8]) -> Result<Vec<Outcome>, DecodeError> {
        wire::place(batch, Strategy::Binpack)
    }
}

export_policy!(Binpack);
