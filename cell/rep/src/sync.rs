//! Reconciliation of this cell's containers with the BBS (Diego's harmonizer: a bulker on a
//! timer plus an event consumer that wakes it early).
//!
//! - a container of this cell that no run owns is destroyed (a previous run's, or a leak);
//! - a run whose container vanished is stopped: its ActualLRP crashed (or removed if it was
//!   only claimed);
//! - a run the BBS no longer gives this cell (ActualLRP or Task gone or moved) is stopped;
//! - an ActualLRP CLAIMED or RUNNING here with no run is removed or crashed, an EVACUATING one
//!   removed, a Task RUNNING here with no run failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use diego_bbs_client::EventStream;
use diego_model::requests::{
    ActualLrpsRequest, CompleteTaskRequest, CrashActualLrpRequest, EvacuateActualLrpRequest,
    RemoveActualLrpRequest, TasksRequest,
};
use diego_model::{ActualLrpInstanceKey, ActualLrpKey, ActualLrpState, Event, Presence, TaskState};
use diego_rep_client::ContainerState;

use crate::PROPERTY_OWNER;
use crate::rep::{Inner, Kind, StopReason};
use crate::task::REASON_MISSING_CONTAINER;

/// How long an event's wake-up waits for more events, so a burst makes one sync.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(200);

pub(crate) async fn sync_loop(inner: Arc<Inner>) {
    loop {
        if let Err(e) = sync_once(&inner).await {
            tracing::warn!(error = %e, "sync failed");
        }
        tokio::select! {
            () = inner.done.cancelled() => return,
            () = tokio::time::sleep(inner.config.sync_interval) => {}
            () = inner.wake_sync.notified() => tokio::time::sleep(EVENT_DEBOUNCE).await,
        }
    }
}

/// Follows the BBS's LRP and task events of this cell and wakes the sync when work may have
/// been taken away from it.
pub(crate) async fn event_loop(inner: Arc<Inner>) {
    let cell = inner.config.cell_id.clone();
    let mut lrps = inner
        .bbs
        .subscribe(EventStream::Lrps, Some(cell.clone()), None);
    let mut tasks = inner
        .bbs
        .subscribe(EventStream::Tasks, Some(cell.clone()), None);
    loop {
        let next = tokio::select! {
            () = inner.done.cancelled() => return,
            e = lrps.next() => e,
            e = tasks.next() => e,
        };
        match next {
            Ok((_, event)) if concerns(&event, &cell) => inner.wake_sync.notify_one(),
            Ok(_) => {}
            Err(e) => {
                // the resume point is gone (or worse): start over from now; the sync covers
                // whatever was missed
                tracing::warn!(error = %e, "event stream failed; resubscribing");
                tokio::select! {
                    () = inner.done.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                lrps = inner
                    .bbs
                    .subscribe(EventStream::Lrps, Some(cell.clone()), None);
                tasks = inner
                    .bbs
                    .subscribe(EventStream::Tasks, Some(cell.clone()), None);
                inner.wake_sync.notify_one();
            }
        }
    }
}

/// Whether `event` may take work away from `cell`.
fn concerns(event: &Event, cell: &str) -> bool {
    match event {
        Event::ActualLrpInstanceRemoved { actual_lrp } => actual_lrp.cell_id == cell,
        Event::ActualLrpInstanceChanged { before, after } => {
            before.cell_id == cell && before.instance_guid != after.instance_guid
        }
        Event::TaskRemoved { task } => task.cell_id == cell,
        Event::TaskChanged { before, after } => {
            before.cell_id == cell && after.state != TaskState::Running
        }
        _ => false,
    }
}

/// A run as the sync saw it before asking the BBS.
struct Seen {
    kind: Kind,
    claimed: bool,
    has_container: bool,
}

/// One reconciliation pass.
pub(crate) async fn sync_once(inner: &Inner) -> Result<(), diego_bbs_client::ClientError> {
    let cell = inner.config.cell_id.clone();
    // runs first: one claimed before this snapshot is in the BBS's answers below
    let seen: HashMap<String, Seen> = inner
        .slots()
        .iter()
        .map(|(guid, s)| {
            let seen = Seen {
                kind: s.kind.clone(),
                claimed: s.claimed,
                has_container: !s.containerless
                    && matches!(s.state, ContainerState::Created | ContainerState::Running),
            };
            (guid.clone(), seen)
        })
        .collect();
    let owner = BTreeMap::from([(PROPERTY_OWNER.to_string(), cell.clone())]);
    let containers: HashSet<String> = match inner.backend.list(&owner).await {
        Ok(handles) => handles.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "listing containers failed; skipping this sync");
            return Ok(());
        }
    };
    let lrps = inner
        .bbs
        .actual_lrps(&ActualLrpsRequest {
            cell_id: cell.clone(),
            ..ActualLrpsRequest::default()
        })
        .await?;
    let tasks = inner
        .bbs
        .tasks(&TasksRequest {
            cell_id: cell.clone(),
            ..TasksRequest::default()
        })
        .await?;
    let is_live = |guid: &str| inner.slots().contains_key(guid);

    for handle in &containers {
        if !is_live(handle) {
            tracing::info!(%handle, "destroying a container no run owns");
            crate::lrp::destroy(inner, handle).await;
        }
    }

    // runs whose container vanished, or that the BBS gave to no one or someone else
    let lrp_guids: HashSet<&str> = lrps
        .iter()
        .filter(|l| l.cell_id == cell)
        .map(|l| l.instance_guid.as_str())
        .collect();
    let running_tasks: HashSet<&str> = tasks
        .iter()
        .filter(|t| t.cell_id == cell && t.state == TaskState::Running)
        .map(|t| t.task_guid.as_str())
        .collect();
    for (guid, s) in &seen {
        if !s.claimed {
            continue;
        }
        if s.has_container && !containers.contains(guid) {
            tracing::info!(%guid, "container vanished");
            inner.request_stop(guid, StopReason::Vanished);
            continue;
        }
        let known = match s.kind {
            Kind::Lrp(_) => lrp_guids.contains(guid.as_str()),
            Kind::Task { .. } => running_tasks.contains(guid.as_str()),
        };
        if !known {
            tracing::info!(%guid, "the BBS no longer has this work here; stopping it");
            inner.request_stop(guid, StopReason::Orphaned);
        }
    }

    // records of this cell without a run
    for lrp in lrps.iter().filter(|l| l.cell_id == cell) {
        if is_live(&lrp.instance_guid) {
            continue;
        }
        let key = ActualLrpKey::new(lrp.process_guid.clone(), lrp.index, lrp.domain.clone());
        let instance = ActualLrpInstanceKey::new(lrp.instance_guid.clone(), cell.clone());
        let result = match (lrp.presence, lrp.state) {
            (Presence::Evacuating, _) => {
                let request = EvacuateActualLrpRequest {
                    actual_lrp_key: key,
                    actual_lrp_instance_key: instance,
                };
                inner.bbs.remove_evacuating(&request).await
            }
            (Presence::Ordinary, ActualLrpState::Claimed) => {
                let request = RemoveActualLrpRequest {
                    process_guid: key.process_guid,
                    index: key.index,
                    actual_lrp_instance_key: Some(instance),
                };
                inner.bbs.remove_actual_lrp(&request).await
            }
            (Presence::Ordinary, ActualLrpState::Running) => {
                let request = CrashActualLrpRequest {
                    actual_lrp_key: key,
                    actual_lrp_instance_key: instance,
                    error_message: "container was lost".into(),
                };
                inner.bbs.crash_actual_lrp(&request).await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(instance_guid = %lrp.instance_guid, error = %e, "cleaning up an instance without a container failed");
        }
    }
    for task in &tasks {
        if task.cell_id != cell || task.state != TaskState::Running || is_live(&task.task_guid) {
            continue;
        }
        tracing::info!(task_guid = %task.task_guid, "failing a task without a container");
        let request = CompleteTaskRequest {
            task_guid: task.task_guid.clone(),
            cell_id: cell.clone(),
            failed: true,
            failure_reason: REASON_MISSING_CONTAINER.into(),
            result: String::new(),
        };
        if let Err(e) = inner.bbs.complete_task(&request).await {
            tracing::warn!(task_guid = %task.task_guid, error = %e, "failing the task failed");
        }
    }
    Ok(())
}
