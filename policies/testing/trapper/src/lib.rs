//! Places like classic, but panics (a trap) on any batch that holds an LRP whose process guid
//! starts with `trap-`. It passes the host's canaries, so it can be activated; the platform
//! tests then desire a `trap-` app to show the fallback in production and how it is reported.

use diego_auction_scoring::{Batch, Outcome, Strategy, WorkKind, place};
use diego_plugin_sdk::{Policy, PolicyInfo, export_policy};

struct Trapper;

impl Policy for Trapper {
    fn info() -> PolicyInfo {
        PolicyInfo::new(
            "trapper",
            "0.0.0",
            "test guest: classic, traps on trap- apps",
        )
    }

    fn place(batch: &Batch) -> Vec<Outcome> {
        let trap = batch.works.iter().any(|w| match w.kind {
            WorkKind::Lrp { process_guid, .. } => batch.str(process_guid).starts_with("trap-"),
            WorkKind::Task { .. } => false,
        });
        if trap {
            panic!(
                "trapper: refusing a trap- app in a batch of {} items",
                batch.works.len()
            );
        }
        place(batch, Strategy::Classic)
    }
}

export_policy!(Trapper);
