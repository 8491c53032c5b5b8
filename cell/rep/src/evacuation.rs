//! Evacuation (Diego's `evacuation` package): the cell reports `evacuating`, refuses work,
//! hands each instance over to a replacement and drops it once the replacement runs; tasks
//! run on. When nothing is left, or at the evacuation timeout, the rep stops.

use std::sync::Arc;

use diego_model::requests::{
    CompleteTaskRequest, EvacuateActualLrpRequest, EvacuateRunningActualLrpRequest,
};
use diego_model::{ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo};
use tokio::time::Instant;

use crate::rep::{Inner, Kind, StopReason};

/// Waits for an evacuation request (or the end), evacuates, then ends the rep.
pub(crate) async fn controller(inner: Arc<Inner>) {
    tokio::select! {
        () = inner.done.cancelled() => return,
        () = inner.evacuate.cancelled() => {}
    }
    inner.set_evacuating();
    tracing::info!(cell_id = %inner.config.cell_id, "evacuating");
    evacuate(&inner).await;
    inner.done.cancel();
}

/// A run as evacuation sees it.
struct Entry {
    guid: String,
    kind: Kind,
    claimed: bool,
    net_info: Option<ActualLrpNetInfo>,
    evacuated: bool,
}

fn entries(inner: &Inner) -> Vec<Entry> {
    inner
        .slots()
        .iter()
        .filter(|(_, s)| s.stop_reason.is_none())
        .map(|(guid, s)| Entry {
            guid: guid.clone(),
            kind: s.kind.clone(),
            claimed: s.claimed,
            net_info: s.net_info.clone(),
            evacuated: s.evacuated,
        })
        .collect()
}

async fn evacuate(inner: &Inner) {
    let deadline = Instant::now() + inner.config.evacuation_timeout;
    loop {
        if inner.slots().is_empty() {
            tracing::info!(cell_id = %inner.config.cell_id, "evacuation complete");
            return;
        }
        for entry in entries(inner) {
            let Kind::Lrp(key) = &entry.kind else {
                continue; // tasks run on until the timeout
            };
            let instance =
                ActualLrpInstanceKey::new(entry.guid.clone(), inner.config.cell_id.clone());
            if let Some(net_info) = &entry.net_info {
                let request = EvacuateRunningActualLrpRequest {
                    actual_lrp_key: key.clone(),
                    actual_lrp_instance_key: instance,
                    actual_lrp_net_info: net_info.clone(),
                    routable: Some(true),
                    availability_zone: inner.config.zone.clone(),
                    ..EvacuateRunningActualLrpRequest::default()
                };
                match inner.bbs.evacuate_running(&request).await {
                    Ok(true) => {
                        inner.with_slot(&entry.guid, |s| s.evacuated = true);
                    }
                    Ok(false) => {
                        tracing::info!(instance_guid = %entry.guid, "replacement running; dropping the instance");
                        inner.request_stop(&entry.guid, StopReason::Evacuated);
                    }
                    // a transport error may pass; a refusal means the instance is not ours
                    Err(e) if e.kind().is_none() => {
                        tracing::warn!(instance_guid = %entry.guid, error = %e, "evacuate_running failed");
                    }
                    Err(e) => {
                        tracing::warn!(instance_guid = %entry.guid, error = %e, "evacuate_running refused; dropping the instance");
                        inner.request_stop(&entry.guid, StopReason::Evacuated);
                    }
                }
            } else if entry.claimed {
                let request = EvacuateActualLrpRequest {
                    actual_lrp_key: key.clone(),
                    actual_lrp_instance_key: instance,
                };
                match inner.bbs.evacuate_claimed(&request).await {
                    Err(e) if e.kind().is_none() => {
                        tracing::warn!(instance_guid = %entry.guid, error = %e, "evacuate_claimed failed");
                    }
                    _ => {
                        inner.request_stop(&entry.guid, StopReason::Evacuated);
                    }
                }
            }
            // a reservation not yet claimed evacuates itself once its claim lands
        }
        if Instant::now() >= deadline {
            timed_out(inner).await;
            return;
        }
        tokio::select! {
            () = inner.done.cancelled() => return,
            () = tokio::time::sleep(inner.config.evacuation_poll_interval) => {}
            () = inner.slot_gone.notified() => {}
        }
    }
}

/// The evacuation timeout passed: give up what is left (Diego's evacuation cleanup).
async fn timed_out(inner: &Inner) {
    let cell = &inner.config.cell_id;
    for entry in entries(inner) {
        tracing::warn!(
            "Cell {cell} reached evacuation timeout for instance {}",
            entry.guid
        );
        match &entry.kind {
            Kind::Lrp(key) if entry.claimed => {
                let request = EvacuateActualLrpRequest {
                    actual_lrp_key: ActualLrpKey::clone(key),
                    actual_lrp_instance_key: ActualLrpInstanceKey::new(
                        entry.guid.clone(),
                        cell.clone(),
                    ),
                };
                let result = if entry.evacuated || entry.net_info.is_some() {
                    inner.bbs.evacuate_stopped(&request).await.map(drop)
                } else {
                    inner.bbs.evacuate_claimed(&request).await.map(drop)
                };
                if let Err(e) = result {
                    tracing::warn!(instance_guid = %entry.guid, error = %e, "evacuation clean-up failed");
                }
            }
            Kind::Task { .. } if entry.claimed => {
                let request = CompleteTaskRequest {
                    task_guid: entry.guid.clone(),
                    cell_id: cell.clone(),
                    failed: true,
                    failure_reason: format!("Cell {cell} reached evacuation timeout"),
                    result: String::new(),
                };
                if let Err(e) = inner.bbs.complete_task(&request).await {
                    tracing::warn!(task_guid = %entry.guid, error = %e, "failing the task failed");
                }
            }
            _ => {}
        }
        inner.request_stop(&entry.guid, StopReason::Evacuated);
    }
    // let the stopped runs destroy their containers (SIGTERM, then SIGKILL)
    let grace = inner.config.graceful_shutdown_interval + std::time::Duration::from_secs(5);
    let until = Instant::now() + grace;
    while !inner.slots().is_empty() && Instant::now() < until {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            () = inner.slot_gone.notified() => {}
        }
    }
}
