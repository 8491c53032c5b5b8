//! One task on this cell: start (BBS) → container → action → result file → complete. A
//! staging task (`lifecycle_staging`, no action) is staged by `crate::staging` instead of the
//! action and result file.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use diego_executor::{LogTags, RunContext};
use diego_garden::{ContainerSpec, NetworkSpec};
use diego_model::TaskDefinition;
use diego_model::requests::CompleteTaskRequest;
use diego_model::task::MAX_RESULT_BYTES;
use diego_rep_client::ContainerState;
use tokio_util::sync::CancellationToken;

use crate::lrp::{destroy, limits};
use crate::rep::{Inner, StopReason};
use crate::{PROPERTY_KIND, PROPERTY_OWNER};

/// Diego's task completion reasons (rep `generator/internal/task_processor.go`).
pub(crate) const REASON_MISSING_CONTAINER: &str = "task container does not exist";
const REASON_FAILED_TO_RUN: &str = "failed to run container";
const REASON_FAILED_TO_FETCH_RESULT: &str = "failed to fetch result";

#[derive(Debug)]
pub(crate) enum Outcome {
    /// The BBS would not start it here: nothing to do.
    NotStarted,
    Completed {
        failed: bool,
        failure_reason: String,
        result: String,
    },
    Stopped(StopReason),
}

impl Outcome {
    pub(crate) fn succeeded(result: String) -> Outcome {
        Outcome::Completed {
            failed: false,
            failure_reason: String::new(),
            result,
        }
    }

    pub(crate) fn failed(reason: impl Into<String>) -> Outcome {
        Outcome::Completed {
            failed: true,
            failure_reason: reason.into(),
            result: String::new(),
        }
    }
}

pub(crate) async fn run(inner: Arc<Inner>, guid: String) {
    let Some(stop) = inner.with_slot(&guid, |s| s.stop.clone()) else {
        return;
    };
    let outcome = tokio::select! {
        outcome = lifecycle(&inner, &guid, &stop) => outcome,
        () = inner.done.cancelled() => return,
    };
    tracing::info!(task_guid = %guid, ?outcome, "task finished");
    if let Outcome::Stopped(reason) = &outcome {
        tracing::debug!(task_guid = %guid, ?reason, "task stopped; nothing to report");
    }
    if !matches!(outcome, Outcome::NotStarted) {
        destroy(&inner, &guid).await;
    }
    if let Outcome::Completed {
        failed,
        failure_reason,
        result,
    } = outcome
    {
        inner.with_slot(&guid, |s| {
            s.failed = failed;
            s.state = ContainerState::Completed;
        });
        let request = CompleteTaskRequest {
            task_guid: guid.clone(),
            cell_id: inner.config.cell_id.clone(),
            failed,
            failure_reason,
            result,
        };
        if let Err(e) = inner.bbs.complete_task(&request).await {
            tracing::warn!(task_guid = %guid, error = %e, "completing the task failed");
        }
    }
    inner.remove_slot(&guid);
}

pub(crate) fn stop_reason(inner: &Inner, guid: &str) -> StopReason {
    inner
        .with_slot(guid, |s| s.stop_reason)
        .flatten()
        .unwrap_or(StopReason::Orphaned)
}

async fn lifecycle(inner: &Arc<Inner>, guid: &str, stop: &CancellationToken) -> Outcome {
    match inner.bbs.start_task(guid, &inner.config.cell_id).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(task_guid = %guid, "the BBS says the task is already started here");
            return Outcome::NotStarted;
        }
        Err(e) => {
            tracing::warn!(task_guid = %guid, error = %e, "start_task failed; dropping the reservation");
            return Outcome::NotStarted;
        }
    }
    inner.with_slot(guid, |s| s.claimed = true);
    let task = tokio::select! {
        t = inner.bbs.task(guid) => match t {
            Ok(t) => t,
            Err(e) => return Outcome::failed(format!("{REASON_FAILED_TO_RUN}: {e}")),
        },
        () = stop.cancelled() => return Outcome::Stopped(stop_reason(inner, guid)),
    };
    let def = &task.task_definition;
    if let Some(staging) = &def.lifecycle_staging {
        return crate::staging::run(inner, guid, def, staging, stop).await;
    }
    let Some(action) = &def.action else {
        return Outcome::failed(REASON_FAILED_TO_RUN);
    };
    if let Err(outcome) = create_container(inner, guid, def, stop).await {
        return outcome;
    }
    let source = if def.log_source.is_empty() {
        "TASK".to_string()
    } else {
        def.log_source.clone()
    };
    let ctx = RunContext {
        tags: LogTags {
            log_guid: def.log_guid.clone(),
            source_type: source,
            instance: String::new(),
        },
        env: def.env.clone(),
        cancel: stop.child_token(),
    };
    let result = inner.executor.run(guid, action, ctx).await;
    if stop.is_cancelled() {
        return Outcome::Stopped(stop_reason(inner, guid));
    }
    if let Err(e) = result {
        return Outcome::failed(e.to_string());
    }
    if def.result_file.is_empty() {
        return Outcome::succeeded(String::new());
    }
    match read_result(inner, guid, &def.result_file).await {
        Ok(result) => Outcome::succeeded(result),
        Err(why) => {
            tracing::warn!(task_guid = %guid, %why, "reading the result file failed");
            Outcome::failed(REASON_FAILED_TO_FETCH_RESULT)
        }
    }
}

/// Creates the task's container (rootfs, limits, privileged, owner properties); the slot is
/// `Running` once it exists. The outcome to report if it cannot be made.
pub(crate) async fn create_container(
    inner: &Inner,
    guid: &str,
    def: &TaskDefinition,
    stop: &CancellationToken,
) -> Result<(), Outcome> {
    let Some(rootfs) = inner.rootfs_spec(&def.rootfs) else {
        return Err(Outcome::failed(format!(
            "{REASON_FAILED_TO_RUN}: this cell does not provide rootfs {}",
            def.rootfs
        )));
    };
    inner.with_slot(guid, |s| s.state = ContainerState::Initializing);
    let spec = ContainerSpec {
        handle: Some(guid.to_string()),
        rootfs,
        env: Vec::new(),
        limits: limits(def.memory_mb, def.disk_mb, def.max_pids, def.cpu_weight),
        bind_mounts: Vec::new(),
        properties: BTreeMap::from([
            (PROPERTY_OWNER.to_string(), inner.config.cell_id.clone()),
            (PROPERTY_KIND.to_string(), "task".to_string()),
        ]),
        network: Some(NetworkSpec::default()),
        privileged: def.privileged,
    };
    let created = tokio::select! {
        c = inner.backend.create(spec) => c,
        () = stop.cancelled() => return Err(Outcome::Stopped(stop_reason(inner, guid))),
    };
    if let Err(e) = created {
        return Err(Outcome::failed(format!("{REASON_FAILED_TO_RUN}: {e}")));
    }
    inner.with_slot(guid, |s| s.state = ContainerState::Running);
    Ok(())
}

/// The result file's contents (streamed out as tar), at most Diego's MAX_RESULT_BYTES.
async fn read_result(inner: &Inner, guid: &str, path: &str) -> Result<String, String> {
    let tar_bytes = inner
        .backend
        .stream_out_bytes(guid, path)
        .await
        .map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(tar_bytes.as_ref());
    let entries = archive.entries().map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.header().size().map_err(|e| e.to_string())?;
        if size > MAX_RESULT_BYTES as u64 {
            return Err(format!(
                "result file size exceeds allowed limit (got {size} bytes, limit {MAX_RESULT_BYTES} bytes)"
            ));
        }
        let mut contents = Vec::new();
        entry
            .take(MAX_RESULT_BYTES as u64)
            .read_to_end(&mut contents)
            .map_err(|e| e.to_string())?;
        return String::from_utf8(contents).map_err(|_| "result file is not UTF-8".to_string());
    }
    Err(format!("{path} is not a file"))
}
