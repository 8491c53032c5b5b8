//! Recurses without end on any batch with work: the host's wasm stack cap must stop it
//! (`StackOverflow`), not the machine's stack.

use diego_auction_scoring::{Batch, Outcome};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Recurser;

/// Not a tail call (the result is used after the call), and `black_box` keeps the optimiser
/// from turning it into a loop.
fn depth(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    1 + std::hint::black_box(depth(std::hint::black_box(n - 1)))
}

impl Policy for Recurser {
    fn info() -> PolicyInfo {
        PolicyInfo::new("recurser", "0.0.0", "test guest: unbounded recursion")
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        if batch.works.is_empty() {
            return Vec::new();
        }
        let d = depth(u64::MAX);
        vec![Outcome::Placed(d as u32); batch.works.len()]
    }
}

export_policy!(Recurser);
