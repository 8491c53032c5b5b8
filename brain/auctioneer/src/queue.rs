//! The batch of start requests waiting for the next auction (Diego's `auctionrunner.Batch`):
//! de-duplicated as it fills, drained whole by the runner, which it wakes.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use diego_model::{ActualLrpKey, LrpStartRequest, PlacementConstraint, Resource, TaskStartRequest};
use tokio::sync::Notify;

/// One LRP instance to place.
#[derive(Debug, Clone)]
pub(crate) struct LrpAuction {
    pub key: ActualLrpKey,
    pub resource: Resource,
    pub constraint: PlacementConstraint,
    /// Auctions this instance went through and was refused by the winning cell.
    pub attempts: u32,
    pub queued_at: Instant,
    /// The request that asked for it (its id goes with it to the cell).
    pub request_id: Option<String>,
}

/// One task to place.
#[derive(Debug, Clone)]
pub(crate) struct TaskAuction {
    pub task_guid: String,
    pub domain: String,
    pub resource: Resource,
    pub constraint: PlacementConstraint,
    pub attempts: u32,
    pub queued_at: Instant,
    pub request_id: Option<String>,
}

#[derive(Debug, Default)]
struct Pending {
    lrps: Vec<LrpAuction>,
    lrp_keys: HashSet<(String, i32)>,
    tasks: Vec<TaskAuction>,
    task_keys: HashSet<String>,
}

/// Start requests waiting for an auction.
#[derive(Debug, Default)]
pub(crate) struct WorkQueue {
    pending: Mutex<Pending>,
    /// Diego's `HasWork` channel of capacity 1: one stored permit however many pushes.
    has_work: Notify,
}

/// Why a start request was refused (answered 400).
pub(crate) fn validate_lrp(r: &LrpStartRequest) -> Result<(), String> {
    if r.process_guid.is_empty() {
        return Err("process_guid is required".into());
    }
    if let Some(i) = r.indices.iter().find(|i| **i < 0) {
        return Err(format!("{}: index {i} is negative", r.process_guid));
    }
    validate_resource(&r.resource).map_err(|e| format!("{}: {e}", r.process_guid))
}

pub(crate) fn validate_task(r: &TaskStartRequest) -> Result<(), String> {
    if r.task_guid.is_empty() {
        return Err("task_guid is required".into());
    }
    validate_resource(&r.resource).map_err(|e| format!("{}: {e}", r.task_guid))
}

fn validate_resource(r: &Resource) -> Result<(), String> {
    if r.memory_mb < 0 || r.disk_mb < 0 || r.max_pids < 0 {
        return Err("resources must not be negative".into());
    }
    Ok(())
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues every index of every request (asked for by request `request_id`); an instance
    /// already queued is kept once.
    pub fn push_lrp_requests(
        &self,
        requests: Vec<LrpStartRequest>,
        request_id: Option<String>,
    ) -> usize {
        let now = Instant::now();
        let auctions = requests.into_iter().flat_map(|r| {
            let resource = r.resource;
            let constraint = r.placement_constraint;
            let (process_guid, domain) = (r.process_guid, r.domain);
            let request_id = request_id.clone();
            r.indices.into_iter().map(move |index| LrpAuction {
                key: ActualLrpKey::new(process_guid.clone(), index, domain.clone()),
                resource: resource.clone(),
                constraint: constraint.clone(),
                attempts: 0,
                queued_at: now,
                request_id: request_id.clone(),
            })
        });
        self.push_lrps(auctions)
    }

    pub fn push_task_requests(
        &self,
        requests: Vec<TaskStartRequest>,
        request_id: Option<String>,
    ) -> usize {
        let now = Instant::now();
        self.push_tasks(requests.into_iter().map(|r| TaskAuction {
            task_guid: r.task_guid,
            domain: r.domain,
            resource: r.resource,
            constraint: r.placement_constraint,
            attempts: 0,
            queued_at: now,
            request_id: request_id.clone(),
        }))
    }

    /// Queues LRP auctions (new or re-queued); answers how many were new to the queue.
    pub fn push_lrps(&self, auctions: impl IntoIterator<Item = LrpAuction>) -> usize {
        let mut added = 0;
        {
            let mut p = self.lock();
            for a in auctions {
                if p.lrp_keys.insert((a.key.process_guid.clone(), a.key.index)) {
                    p.lrps.push(a);
                    added += 1;
                }
            }
        }
        if added > 0 {
            self.has_work.notify_one();
        }
        added
    }

    pub fn push_tasks(&self, auctions: impl IntoIterator<Item = TaskAuction>) -> usize {
        let mut added = 0;
        {
            let mut p = self.lock();
            for a in auctions {
                if p.task_keys.insert(a.task_guid.clone()) {
                    p.tasks.push(a);
                    added += 1;
                }
            }
        }
        if added > 0 {
            self.has_work.notify_one();
        }
        added
    }

    /// Everything queued, de-duplicated, in arrival order; the queue is left empty.
    pub fn drain(&self) -> (Vec<LrpAuction>, Vec<TaskAuction>) {
        let mut p = self.lock();
        let taken = std::mem::take(&mut *p);
        (taken.lrps, taken.tasks)
    }

    pub fn len(&self) -> usize {
        let p = self.lock();
        p.lrps.len() + p.tasks.len()
    }

    /// Drops everything queued (a brain stepping down: the active one's converger repairs).
    pub fn clear(&self) -> usize {
        let (lrps, tasks) = self.drain();
        lrps.len() + tasks.len()
    }

    /// Waits until something was pushed since the last wait.
    pub async fn wait(&self) {
        self.has_work.notified().await;
    }
}
