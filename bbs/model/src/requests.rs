//! The bodies of the BBS API's requests and responses (JSON forms of Diego's `*_requests.proto`).
//!
//! Every request refuses unknown fields and has a `validate()` the BBS runs before any I/O.
//! Successful responses carry their payload; failures are an [`ErrorResponse`] with a 4xx or 5xx.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actual_lrp::ActualLrpInternalRoute;
use crate::desired_lrp::DesiredLrpSchedulingInfo;
use crate::task::TaskDefinition;
use crate::validate::Problems;
use crate::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, BbsError, CellPresence,
    DesiredLrp, DesiredLrpUpdate, Task, Timestamp,
};

/// The body of every failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    pub error: BbsError,
}

/// An empty success body, `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmptyResponse {}

/// A request with no fields, `{}` (or an empty body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PingResponse {
    pub available: bool,
}

// ---- domains ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpsertDomainRequest {
    pub domain: String,
    /// Seconds the domain stays fresh; 0 keeps it fresh until upserted again with a TTL.
    pub ttl: u32,
}

impl UpsertDomainRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.name("domain", &self.domain);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainsResponse {
    pub domains: Vec<String>,
}

// ---- desired LRPs ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DesiredLrpsRequest {
    /// Only this domain, if set.
    pub domain: String,
    /// Only these process guids, if any.
    pub process_guids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredLrpsResponse {
    pub desired_lrps: Vec<DesiredLrp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DesiredLrpByProcessGuidRequest {
    pub process_guid: String,
}

impl DesiredLrpByProcessGuidRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("process_guid", &self.process_guid);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredLrpResponse {
    pub desired_lrp: DesiredLrp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredLrpSchedulingInfosResponse {
    pub desired_lrp_scheduling_infos: Vec<DesiredLrpSchedulingInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredLrpSchedulingInfoResponse {
    pub desired_lrp_scheduling_info: DesiredLrpSchedulingInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DesireLrpRequest {
    pub desired_lrp: DesiredLrp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateDesiredLrpRequest {
    pub process_guid: String,
    pub update: DesiredLrpUpdate,
    /// Not in Diego: apply the update only if the record still has this tag; otherwise
    /// ResourceConflict. Lets a client do optimistic read-modify-write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_modification_tag: Option<crate::ModificationTag>,
}

impl UpdateDesiredLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("process_guid", &self.process_guid);
        p.into_request_result()?;
        self.update.validate()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RemoveDesiredLrpRequest {
    pub process_guid: String,
}

impl RemoveDesiredLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("process_guid", &self.process_guid);
        p.into_request_result()
    }
}

// ---- actual LRPs ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ActualLrpsRequest {
    pub domain: String,
    pub cell_id: String,
    pub process_guid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<i32>,
}

impl ActualLrpsRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        if !self.process_guid.is_empty() {
            p.guid("process_guid", &self.process_guid);
        }
        if self.index.is_some() {
            p.check(!self.process_guid.is_empty(), || {
                "index needs a process_guid".into()
            });
        }
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActualLrpsResponse {
    pub actual_lrps: Vec<ActualLrp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ActualLrpsByProcessGuidsRequest {
    pub process_guids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimActualLrpRequest {
    pub process_guid: String,
    pub index: i32,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
}

impl ClaimActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("process_guid", &self.process_guid);
        p.check(self.index >= 0, || {
            format!("index must be >= 0, got {}", self.index)
        });
        self.actual_lrp_instance_key.validate_into(&mut p);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StartActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
    pub actual_lrp_net_info: ActualLrpNetInfo,
    pub actual_lrp_internal_routes: Vec<ActualLrpInternalRoute>,
    pub metric_tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routable: Option<bool>,
    pub availability_zone: String,
}

impl StartActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        self.actual_lrp_key.validate_into(&mut p);
        self.actual_lrp_instance_key.validate_into(&mut p);
        p.check(!self.actual_lrp_net_info.address.is_empty(), || {
            "actual_lrp_net_info.address is required".into()
        });
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CrashActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
    pub error_message: String,
}

impl CrashActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        key_and_instance(&self.actual_lrp_key, &self.actual_lrp_instance_key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FailActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub error_message: String,
}

impl FailActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        self.actual_lrp_key.validate_into(&mut p);
        p.check(!self.error_message.is_empty(), || {
            "error_message is required".into()
        });
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetireActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
}

impl RetireActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        self.actual_lrp_key.validate_into(&mut p);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RemoveActualLrpRequest {
    pub process_guid: String,
    pub index: i32,
    /// If set, the instance must still be this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_lrp_instance_key: Option<ActualLrpInstanceKey>,
}

impl RemoveActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("process_guid", &self.process_guid);
        p.check(self.index >= 0, || {
            format!("index must be >= 0, got {}", self.index)
        });
        p.into_request_result()
    }
}

/// The body of evacuate_claimed, evacuate_stopped and remove_evacuating.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EvacuateActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
}

impl EvacuateActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        key_and_instance(&self.actual_lrp_key, &self.actual_lrp_instance_key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EvacuateCrashedActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
    pub error_message: String,
}

impl EvacuateCrashedActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        key_and_instance(&self.actual_lrp_key, &self.actual_lrp_instance_key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EvacuateRunningActualLrpRequest {
    pub actual_lrp_key: ActualLrpKey,
    pub actual_lrp_instance_key: ActualLrpInstanceKey,
    pub actual_lrp_net_info: ActualLrpNetInfo,
    pub actual_lrp_internal_routes: Vec<ActualLrpInternalRoute>,
    pub metric_tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routable: Option<bool>,
    pub availability_zone: String,
}

impl EvacuateRunningActualLrpRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        key_and_instance(&self.actual_lrp_key, &self.actual_lrp_instance_key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvacuationResponse {
    /// Whether the rep should keep the container running for now.
    pub keep_container: bool,
}

fn key_and_instance(key: &ActualLrpKey, instance: &ActualLrpInstanceKey) -> Result<(), BbsError> {
    let mut p = Problems::new();
    key.validate_into(&mut p);
    instance.validate_into(&mut p);
    p.into_request_result()
}

// ---- tasks ----

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DesireTaskRequest {
    pub task_definition: TaskDefinition,
    pub task_guid: String,
    pub domain: String,
}

impl DesireTaskRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("task_guid", &self.task_guid);
        p.name("domain", &self.domain);
        self.task_definition.validate_into(&mut p);
        p.into_result_as_record()
    }
}

impl Problems {
    fn into_result_as_record(self) -> Result<(), BbsError> {
        self.into_record_result("task")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StartTaskRequest {
    pub task_guid: String,
    pub cell_id: String,
}

impl StartTaskRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("task_guid", &self.task_guid);
        p.name("cell_id", &self.cell_id);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StartTaskResponse {
    pub should_start: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TaskGuidRequest {
    pub task_guid: String,
}

impl TaskGuidRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("task_guid", &self.task_guid);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FailTaskRequest {
    pub task_guid: String,
    pub failure_reason: String,
}

impl FailTaskRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("task_guid", &self.task_guid);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RejectTaskRequest {
    pub task_guid: String,
    pub rejection_reason: String,
}

impl RejectTaskRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("task_guid", &self.task_guid);
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompleteTaskRequest {
    pub task_guid: String,
    pub cell_id: String,
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
}

impl CompleteTaskRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        p.guid("task_guid", &self.task_guid);
        p.name("cell_id", &self.cell_id);
        p.check(self.result.len() <= crate::task::MAX_RESULT_BYTES, || {
            format!(
                "result is {} bytes, more than {}",
                self.result.len(),
                crate::task::MAX_RESULT_BYTES
            )
        });
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TasksRequest {
    pub domain: String,
    pub cell_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TasksResponse {
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskResponse {
    pub task: Task,
}

// ---- cells, locks, events, store ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CellsResponse {
    pub cells: Vec<CellPresence>,
}

/// Locket's resource types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockType {
    #[default]
    Lock,
    /// A presence; a cell's presence carries its [`CellPresence`] JSON as the value.
    Presence,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LockResource {
    pub key: String,
    pub owner: String,
    pub value: String,
    #[serde(rename = "type")]
    pub lock_type: LockType,
}

impl LockResource {
    pub fn validate_into(&self, p: &mut Problems) {
        p.name("resource.key", &self.key);
        p.name("resource.owner", &self.owner);
    }
}

/// Takes or renews a lock or presence (Locket's `Lock`): the same owner renews, another owner
/// gets LockCollision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LockRequest {
    pub resource: LockResource,
    pub ttl_in_seconds: i64,
}

/// The most a lock may be held without renewal.
pub const MAX_LOCK_TTL_SECONDS: i64 = 3600;

impl LockRequest {
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        self.resource.validate_into(&mut p);
        p.check(
            (1..=MAX_LOCK_TTL_SECONDS).contains(&self.ttl_in_seconds),
            || {
                format!(
                    "ttl_in_seconds must be 1 to {MAX_LOCK_TTL_SECONDS}, got {}",
                    self.ttl_in_seconds
                )
            },
        );
        p.into_request_result()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReleaseLockRequest {
    pub resource: LockResource,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FetchLockRequest {
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FetchLockResponse {
    pub resource: LockResource,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FetchAllLocksRequest {
    /// Only this type, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "type")]
    pub lock_type: Option<LockType>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FetchAllLocksResponse {
    pub resources: Vec<LockResource>,
}

/// Filters an event stream subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EventsRequest {
    /// Only events concerning this cell (and desired LRP events), if set.
    pub cell_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreMember {
    pub name: String,
    pub endpoint: String,
    pub healthy: bool,
    pub leader: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/store/health`: the store's members, and whether it runs degraded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreHealthResponse {
    pub backend: String,
    pub degraded: bool,
    pub members: Vec<StoreMember>,
}

/// What one convergence pass did (`POST /v1/converge`): counts for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ConvergeResponse {
    /// Instances (missing, stale unclaimed, crashed past their backoff, on lost cells) sent to
    /// the auctioneer.
    pub lrps_auctioned: u32,
    /// Missing instances created (UNCLAIMED) for desired LRPs.
    pub lrps_created: u32,
    /// Extra or orphaned instances retired.
    pub lrps_retired: u32,
    /// RUNNING instances of lost cells kept as SUSPECT while a replacement is placed.
    pub lrps_suspected: u32,
    /// Cells whose presence vanished while they still held instances or tasks.
    pub missing_cells: Vec<String>,
    /// Pending tasks sent to the auctioneer again.
    pub tasks_kicked: u32,
    /// Tasks completed as failed (expired pending, lost cell) or deleted (expired completed).
    pub tasks_pruned: u32,
    /// Completion callbacks retried.
    pub callbacks_retried: u32,
    /// What the pass found, before repairing (Diego's convergence metrics).
    pub lrps: LrpCounts,
}

impl ConvergeResponse {
    /// The repairs alone, the counts set aside: `ConvergeResponse::default()` when the pass
    /// changed nothing.
    pub fn repairs(&self) -> ConvergeResponse {
        ConvergeResponse {
            lrps: LrpCounts::default(),
            ..self.clone()
        }
    }
}

/// The LRPs a convergence pass found, as Diego's BBS reports them after each pass (`LRPsDesired`,
/// `LRPsRunning`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LrpCounts {
    /// Instances desired, summed over every desired LRP.
    pub desired: u32,
    /// Ordinary actual LRPs by state.
    pub running: u32,
    pub claimed: u32,
    pub unclaimed: u32,
    pub crashed: u32,
    /// Desired instances without an actual LRP.
    pub missing: u32,
    /// Actual LRPs at an index beyond their desired instances, or of no desired LRP.
    pub extra: u32,
    /// Desired LRPs with at least one crashed instance.
    pub crashing_desired: u32,
    /// Suspect actual LRPs (on a lost cell, kept while a replacement is placed) by state.
    pub suspect_running: u32,
    pub suspect_claimed: u32,
}

/// The auction policy an operator chose, kept in the BBS so a restarted or failed-over brain
/// places with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuctionPolicyRecord {
    /// A built-in policy's name (`classic`, `binpack`, `spread`) or the component's own name.
    pub name: String,
    /// True for a built-in policy: `component` is empty and `name` says which.
    pub builtin: bool,
    /// The sha256 of the component (hex); empty for a built-in.
    pub sha256: String,
    /// The Wasm component, base64; empty for a built-in.
    pub component: String,
    /// When it was set (ns since the epoch).
    pub set_at: Timestamp,
    /// Who set it (free text, e.g. the brain's URL).
    pub set_by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct AuctionPolicyResponse {
    /// None until an operator sets a policy (brains then use the default, classic).
    pub policy: Option<AuctionPolicyRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SetAuctionPolicyRequest {
    pub policy: AuctionPolicyRecord,
}

// ---- lifecycles (beyond Diego: see `crate::lifecycle`) ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LifecyclesResponse {
    pub lifecycles: Vec<crate::LifecycleRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleByNameRequest {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct LifecycleResponse {
    pub lifecycle: crate::LifecycleRecord,
}

/// Adds a version to a lifecycle (creating it), making it the current one. Adding a version
/// already recorded with the same sha256 makes it current again; the same version string with
/// other bytes is a conflict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AddLifecycleVersionRequest {
    pub name: String,
    pub version: crate::LifecycleVersion,
}
