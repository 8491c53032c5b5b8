//! Allocates without end on any batch with work: the host's memory cap must stop it.

use diego_auction_scoring::{Batch, Outcome};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct MemBomb;

impl Policy for MemBomb {
    fn info() -> PolicyInfo {
        PolicyInfo::new("membomb", "0.0.0", "test guest: grows memory without end")
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        if batch.works.is_empty() {
            return Vec::new();
        }
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export_policy!(MemBomb);
