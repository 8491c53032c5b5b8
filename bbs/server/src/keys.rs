//! The store key layout. **Architecture invariant:** this module is the only place in the
//! platform that knows store keys; everyone else goes through the BBS API.
//!
//! ```text
//! /diego/v1/lrp/desired/<process_guid>                     DesiredLRP JSON
//! /diego/v1/lrp/instances/<process_guid>/<index>/<presence> ActualLRP JSON
//! /diego/v1/tasks/<task_guid>                         Task JSON
//! /diego/v1/domains/<domain>                          "" on a lease of the domain's TTL
//! /diego/v1/locks/<key>                               a lock (diego_store::lock encoding)
//! /diego/v1/presences/<cell_id>                       a presence; the value is a CellPresence
//! /diego/v1/auction_policy/record                     the AuctionPolicyRecord, without its component
//! /diego/v1/auction_policy/components/<sha256>/<n>    the component's base64, in numbered chunks
//! /diego/v1/lifecycles/<name>                        a LifecycleRecord (its components are in the blob store)
//! ```
//! Guids and names are validated to contain no `/` before they reach a key. A desired LRP's key
//! sorts before its instances' keys, so a transaction that creates both streams
//! `desired_lrp_created` first (a transaction's changes are watched in key order).

use diego_model::Presence;

pub const ROOT: &str = "/diego/v1/";
pub const DESIRED: &str = "/diego/v1/lrp/desired/";
pub const ACTUAL: &str = "/diego/v1/lrp/instances/";
pub const TASKS: &str = "/diego/v1/tasks/";
pub const DOMAINS: &str = "/diego/v1/domains/";
pub const LOCKS: &str = "/diego/v1/locks/";
pub const PRESENCES: &str = "/diego/v1/presences/";
pub const AUCTION_POLICY: &str = "/diego/v1/auction_policy/record";
pub const AUCTION_POLICY_COMPONENTS: &str = "/diego/v1/auction_policy/components/";
pub const LIFECYCLES: &str = "/diego/v1/lifecycles/";

/// The lock the active auctioneer holds; its value is the auctioneer's base URL.
pub const AUCTIONEER_LOCK: &str = "auctioneer";

pub fn desired(process_guid: &str) -> String {
    format!("{DESIRED}{process_guid}")
}

pub fn actuals_of(process_guid: &str) -> String {
    format!("{ACTUAL}{process_guid}/")
}

/// Ten prefixes that split the instance rows of one LRP by the first digit of the index, so
/// that a large LRP can be read a tenth (or less) at a time: indices are not zero-padded.
pub fn actuals_of_shards(process_guid: &str) -> impl Iterator<Item = String> + use<> {
    let base = actuals_of(process_guid);
    (0..10).map(move |digit| format!("{base}{digit}"))
}

pub fn actual(process_guid: &str, index: i32, presence: Presence) -> String {
    format!("{ACTUAL}{process_guid}/{index}/{}", presence.as_str())
}

pub fn task(task_guid: &str) -> String {
    format!("{TASKS}{task_guid}")
}

pub fn domain(name: &str) -> String {
    format!("{DOMAINS}{name}")
}

pub fn lifecycle(name: &str) -> String {
    format!("{LIFECYCLES}{name}")
}

pub fn lock(key: &str) -> String {
    format!("{LOCKS}{key}")
}

pub fn presence(key: &str) -> String {
    format!("{PRESENCES}{key}")
}

/// The chunks of one auction policy component, by its sha256.
pub fn policy_component(sha256: &str) -> String {
    format!("{AUCTION_POLICY_COMPONENTS}{sha256}/")
}

/// Chunk `n` of a component; the number is zero-padded so that chunks list in order.
pub fn policy_component_chunk(sha256: &str, n: usize) -> String {
    format!("{AUCTION_POLICY_COMPONENTS}{sha256}/{n:06}")
}

/// What a store key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Desired,
    Actual,
    Task,
    Domain,
    Lock,
    Presence,
}

pub fn family(key: &str) -> Option<Family> {
    if key.starts_with(DESIRED) {
        return Some(Family::Desired);
    }
    if key.starts_with(ACTUAL) {
        return Some(Family::Actual);
    }
    let rest = key.strip_prefix(ROOT)?;
    let (head, _) = rest.split_once('/')?;
    Some(match head {
        "tasks" => Family::Task,
        "domains" => Family::Domain,
        "locks" => Family::Lock,
        "presences" => Family::Presence,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_to_families() {
        assert_eq!(family(&desired("a")), Some(Family::Desired));
        assert_eq!(
            family(&actual("a", 3, Presence::Suspect)),
            Some(Family::Actual)
        );
        assert_eq!(
            actual("a", 3, Presence::Evacuating),
            "/diego/v1/lrp/instances/a/3/evacuating"
        );
        assert!(
            desired("zzz") < actual("aaa", 0, Presence::Ordinary),
            "desired records sort first"
        );
        assert!(actual("a", 3, Presence::Ordinary).starts_with(&actuals_of("a")));
        for index in [0, 7, 10, 99_999, i32::MAX] {
            let key = actual("a", index, Presence::Ordinary);
            let shards = actuals_of_shards("a")
                .filter(|s| key.starts_with(s))
                .count();
            assert_eq!(shards, 1, "{key} is in exactly one shard");
        }
        assert!(!actual("ab", 3, Presence::Ordinary).starts_with(&actuals_of("a")));
        assert_eq!(family(&presence("cell-1")), Some(Family::Presence));
        assert_eq!(family("/other"), None);
        assert_eq!(family(AUCTION_POLICY), None, "no events for the policy");
        assert!(policy_component_chunk("ab", 2) < policy_component_chunk("ab", 10));
        assert!(policy_component_chunk("ab", 2).starts_with(&policy_component("ab")));
    }
}
