//! Loops forever on any batch with work: the host's epoch deadline must cut it off.

use diego_auction_scoring::{Batch, Outcome};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Looper;

impl Policy for Looper {
    fn info() -> PolicyInfo {
        PolicyInfo::new("looper", "0.0.0", "test guest: never returns")
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        if batch.works.is_empty() {
            return Vec::new();
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export_policy!(Looper);
