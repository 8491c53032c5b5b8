//! The metric names, Diego's where Diego has one, and what each means ([`CATALOGUE`] is what
//! `/metrics` says in its `# HELP` lines). Durations are in seconds and memory and disk in MiB,
//! as Diego reports capacity.

/// A metric's kind, for its description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

// ---- every role's HTTP API (labels: server, route, status) ----
pub const REQUEST_COUNT: &str = "RequestCount";
pub const REQUEST_LATENCY: &str = "RequestLatency";

// ---- the brain's converger, from each convergence pass the BBS runs for it ----
pub const LRPS_DESIRED: &str = "LRPsDesired";
pub const LRPS_RUNNING: &str = "LRPsRunning";
pub const LRPS_CLAIMED: &str = "LRPsClaimed";
pub const LRPS_UNCLAIMED: &str = "LRPsUnclaimed";
pub const LRPS_MISSING: &str = "LRPsMissing";
pub const LRPS_EXTRA: &str = "LRPsExtra";
pub const CRASHED_ACTUAL_LRPS: &str = "CrashedActualLRPs";
pub const CRASHING_DESIRED_LRPS: &str = "CrashingDesiredLRPs";
pub const SUSPECT_RUNNING_ACTUAL_LRPS: &str = "SuspectRunningActualLRPs";
pub const SUSPECT_CLAIMED_ACTUAL_LRPS: &str = "SuspectClaimedActualLRPs";
pub const CONVERGENCE_LRP_RUNS: &str = "ConvergenceLRPRuns";
pub const CONVERGENCE_LRP_DURATION: &str = "ConvergenceLRPDuration";

// ---- the brain's auctioneer ----
pub const AUCTIONEER_LRP_AUCTIONS_STARTED: &str = "AuctioneerLRPAuctionsStarted";
pub const AUCTIONEER_LRP_AUCTIONS_FAILED: &str = "AuctioneerLRPAuctionsFailed";
pub const AUCTIONEER_TASK_AUCTIONS_STARTED: &str = "AuctioneerTaskAuctionsStarted";
pub const AUCTIONEER_TASK_AUCTIONS_FAILED: &str = "AuctioneerTaskAuctionsFailed";
pub const AUCTIONEER_ACTIVE: &str = "AuctioneerActive";
pub const AUCTIONEER_POLICY_ACTIVE: &str = "AuctioneerPolicyActive";
pub const AUCTIONEER_POLICY_FALLBACKS: &str = "AuctioneerPolicyFallbacks";
pub const AUCTIONEER_POLICY_DEGRADED: &str = "AuctioneerPolicyDegraded";

// ---- the rep (label: cell_id) ----
pub const CAPACITY_TOTAL_MEMORY: &str = "CapacityTotalMemory";
pub const CAPACITY_TOTAL_DISK: &str = "CapacityTotalDisk";
pub const CAPACITY_TOTAL_CONTAINERS: &str = "CapacityTotalContainers";
pub const CAPACITY_REMAINING_MEMORY: &str = "CapacityRemainingMemory";
pub const CAPACITY_REMAINING_DISK: &str = "CapacityRemainingDisk";
pub const CAPACITY_REMAINING_CONTAINERS: &str = "CapacityRemainingContainers";
pub const CONTAINER_COUNT: &str = "ContainerCount";

// ---- the router's proxy (gorouter's counters) ----
pub const ROUTER_TOTAL_REQUESTS: &str = "RouterTotalRequests";
pub const ROUTER_RESPONSES: &str = "RouterResponses";
pub const ROUTER_RETRIES: &str = "RouterRetries";
pub const ROUTER_BAD_ENDPOINTS: &str = "RouterBadEndpoints";
pub const ROUTER_TOTAL_ROUTES: &str = "RouterTotalRoutes";

/// Every metric: name, kind, help text.
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    (
        REQUEST_COUNT,
        Kind::Counter,
        "HTTP requests answered, by server, route template and status",
    ),
    (
        REQUEST_LATENCY,
        Kind::Histogram,
        "Seconds from a request's arrival to its response head, by server and route template",
    ),
    (
        LRPS_DESIRED,
        Kind::Gauge,
        "Instances desired by all desired LRPs (last convergence pass)",
    ),
    (
        LRPS_RUNNING,
        Kind::Gauge,
        "Ordinary actual LRPs RUNNING (last convergence pass)",
    ),
    (
        LRPS_CLAIMED,
        Kind::Gauge,
        "Ordinary actual LRPs CLAIMED (last convergence pass)",
    ),
    (
        LRPS_UNCLAIMED,
        Kind::Gauge,
        "Ordinary actual LRPs UNCLAIMED (last convergence pass)",
    ),
    (
        LRPS_MISSING,
        Kind::Gauge,
        "Desired instances with no actual LRP (last convergence pass)",
    ),
    (
        LRPS_EXTRA,
        Kind::Gauge,
        "Actual LRPs beyond their desired instance count or with no desired LRP (last convergence pass)",
    ),
    (
        CRASHED_ACTUAL_LRPS,
        Kind::Gauge,
        "Ordinary actual LRPs CRASHED (last convergence pass)",
    ),
    (
        CRASHING_DESIRED_LRPS,
        Kind::Gauge,
        "Desired LRPs with at least one CRASHED instance (last convergence pass)",
    ),
    (
        SUSPECT_RUNNING_ACTUAL_LRPS,
        Kind::Gauge,
        "Suspect actual LRPs RUNNING on a lost cell (last convergence pass)",
    ),
    (
        SUSPECT_CLAIMED_ACTUAL_LRPS,
        Kind::Gauge,
        "Suspect actual LRPs CLAIMED on a lost cell (last convergence pass)",
    ),
    (
        CONVERGENCE_LRP_RUNS,
        Kind::Counter,
        "Convergence passes completed by the BBS for this brain",
    ),
    (
        CONVERGENCE_LRP_DURATION,
        Kind::Gauge,
        "Seconds the last convergence pass took (LRPs and tasks, as this brain waited for it)",
    ),
    (
        AUCTIONEER_LRP_AUCTIONS_STARTED,
        Kind::Counter,
        "LRP instances the auctioneer placed on a cell that took them",
    ),
    (
        AUCTIONEER_LRP_AUCTIONS_FAILED,
        Kind::Counter,
        "LRP instances the auctioneer could not place (placement error, or refused too often)",
    ),
    (
        AUCTIONEER_TASK_AUCTIONS_STARTED,
        Kind::Counter,
        "Tasks the auctioneer placed on a cell that took them",
    ),
    (
        AUCTIONEER_TASK_AUCTIONS_FAILED,
        Kind::Counter,
        "Tasks the auctioneer could not place",
    ),
    (
        AUCTIONEER_ACTIVE,
        Kind::Gauge,
        "1 while this brain holds the auctioneer lock and places work, else 0",
    ),
    (
        AUCTIONEER_POLICY_ACTIVE,
        Kind::Gauge,
        "1 for the auction policy chosen now (name, sha256, and what places batches: the policy or its native fallback), 0 for one chosen before",
    ),
    (
        AUCTIONEER_POLICY_FALLBACKS,
        Kind::Counter,
        "Batches the native classic policy placed because the chosen policy faulted",
    ),
    (
        AUCTIONEER_POLICY_DEGRADED,
        Kind::Gauge,
        "1 while repeated faults have switched the chosen policy off, else 0",
    ),
    (
        CAPACITY_TOTAL_MEMORY,
        Kind::Gauge,
        "The cell's memory for containers, MiB",
    ),
    (
        CAPACITY_TOTAL_DISK,
        Kind::Gauge,
        "The cell's disk for containers, MiB",
    ),
    (
        CAPACITY_TOTAL_CONTAINERS,
        Kind::Gauge,
        "The most containers the cell runs",
    ),
    (
        CAPACITY_REMAINING_MEMORY,
        Kind::Gauge,
        "Memory not reserved by any container, MiB",
    ),
    (
        CAPACITY_REMAINING_DISK,
        Kind::Gauge,
        "Disk not reserved by any container, MiB",
    ),
    (
        CAPACITY_REMAINING_CONTAINERS,
        Kind::Gauge,
        "Containers the cell can still take",
    ),
    (
        CONTAINER_COUNT,
        Kind::Gauge,
        "Containers on the cell (reserved, starting or running)",
    ),
    (
        ROUTER_TOTAL_REQUESTS,
        Kind::Counter,
        "Requests the router's proxy received",
    ),
    (
        ROUTER_RESPONSES,
        Kind::Counter,
        "Responses the router's proxy sent, by status class",
    ),
    (
        ROUTER_RETRIES,
        Kind::Counter,
        "Tries of another endpoint after one failed",
    ),
    (
        ROUTER_BAD_ENDPOINTS,
        Kind::Counter,
        "Times an endpoint was marked bad",
    ),
    (
        ROUTER_TOTAL_ROUTES,
        Kind::Gauge,
        "Hostnames in the routing table",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_prometheus_names_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for (name, _, help) in CATALOGUE {
            assert!(seen.insert(*name), "{name} twice");
            assert!(!help.is_empty(), "{name} has no help");
            let mut chars = name.chars();
            let first = chars.next().unwrap_or('0');
            assert!(
                first.is_ascii_alphabetic() || first == '_',
                "{name} starts badly"
            );
            assert!(
                chars.all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name} has a character Prometheus refuses"
            );
        }
    }
}
