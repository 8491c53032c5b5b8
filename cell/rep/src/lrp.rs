//! One LRP instance on this cell, from reservation to its container's end: claim → container →
//! `setup` → `action` with start-up checks → RUNNING → liveness until it crashes or is stopped.
//!
//! Diego's `CELL` lines go to the app's log on the way (creating and created the container,
//! became healthy, the exit status or crash reason, stopping, destroying and destroyed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use diego_executor::{LogTags, RunContext, StepError};
use diego_garden::{ContainerSpec, Limits, NetIn, NetworkSpec};
use diego_model::actual_lrp::PreferredAddress;
use diego_model::desired_lrp::EnvironmentVariable;
use diego_model::requests::{
    ClaimActualLrpRequest, CrashActualLrpRequest, EvacuateActualLrpRequest,
    EvacuateCrashedActualLrpRequest, RemoveActualLrpRequest, StartActualLrpRequest,
};
use diego_model::{ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, DesiredLrp, PortMapping};
use diego_rep_client::ContainerState;
use tokio_util::sync::CancellationToken;

use crate::checks::{Checker, Target};
use crate::rep::{Inner, StopReason};
use crate::{PROPERTY_INDEX, PROPERTY_KIND, PROPERTY_OWNER, PROPERTY_PROCESS_GUID};

/// The log source of an LRP whose DesiredLRP names none (Cloud Controller's for web).
const DEFAULT_LOG_SOURCE: &str = "APP/PROC/WEB";

/// How a run ended.
#[derive(Debug)]
enum Outcome {
    /// The claim failed: nothing was made, nothing to report.
    NotClaimed,
    /// The instance crashed (or never came up) for this reason.
    Crashed(String),
    /// The app's process exited with this status: a crash for this reason.
    Exited { status: i32, reason: String },
    /// The run was asked to stop.
    Stopped(StopReason),
    /// The BBS would not take the instance as started: it is no longer ours.
    Refused,
}

pub(crate) async fn run(inner: Arc<Inner>, guid: String, key: ActualLrpKey) {
    let Some(stop) = inner.with_slot(&guid, |s| s.stop.clone()) else {
        return;
    };
    let instance = ActualLrpInstanceKey::new(guid.clone(), inner.config.cell_id.clone());
    let outcome = tokio::select! {
        outcome = lifecycle(&inner, &guid, &key, &instance, &stop) => outcome,
        // the rep stopped without evacuating: abandon (the next start's sync cleans up)
        () = inner.done.cancelled() => return,
    };
    tracing::info!(instance_guid = %guid, process_guid = %key.process_guid, index = key.index, ?outcome, "instance finished");
    finish(&inner, &guid, &key, &instance, outcome).await;
    inner.remove_slot(&guid);
}

fn stop_reason(inner: &Inner, guid: &str) -> StopReason {
    inner
        .with_slot(guid, |s| s.stop_reason)
        .flatten()
        .unwrap_or(StopReason::Orphaned)
}

fn set_state(inner: &Inner, guid: &str, state: ContainerState) {
    inner.with_slot(guid, |s| s.state = state);
}

async fn lifecycle(
    inner: &Arc<Inner>,
    guid: &str,
    key: &ActualLrpKey,
    instance: &ActualLrpInstanceKey,
    stop: &CancellationToken,
) -> Outcome {
    let claim = ClaimActualLrpRequest {
        process_guid: key.process_guid.clone(),
        index: key.index,
        actual_lrp_instance_key: instance.clone(),
    };
    if let Err(e) = inner.bbs.claim_actual_lrp(&claim).await {
        tracing::warn!(instance_guid = %guid, error = %e, "claim failed; dropping the reservation");
        return Outcome::NotClaimed;
    }
    inner.with_slot(guid, |s| s.claimed = true);
    if inner.is_evacuating() {
        let request = EvacuateActualLrpRequest {
            actual_lrp_key: key.clone(),
            actual_lrp_instance_key: instance.clone(),
        };
        if let Err(e) = inner.bbs.evacuate_claimed(&request).await {
            tracing::warn!(instance_guid = %guid, error = %e, "evacuate_claimed failed");
        }
        return Outcome::Stopped(StopReason::Evacuated);
    }
    if stop.is_cancelled() {
        return Outcome::Stopped(stop_reason(inner, guid));
    }
    let desired = tokio::select! {
        d = inner.bbs.desired_lrp(&key.process_guid) => match d {
            Ok(d) => d,
            Err(e) => return Outcome::Crashed(format!("failed to fetch the desired LRP: {e}")),
        },
        () = stop.cancelled() => return Outcome::Stopped(stop_reason(inner, guid)),
    };
    set_state(inner, guid, ContainerState::Initializing);
    let index = key.index.to_string();
    let cell_log = |message: &str| inner.logs.cell(&desired.log_guid, &index, message);
    inner.with_slot(guid, |s| s.log_guid = desired.log_guid.clone());
    let cell_id = &inner.config.cell_id;
    cell_log(&format!(
        "Cell {cell_id} creating container for instance {guid}"
    ));
    let made = tokio::select! {
        made = make_container(inner, guid, key, &desired) => made,
        // the container may exist by now: the caller destroys it whatever happened
        () = stop.cancelled() => return Outcome::Stopped(stop_reason(inner, guid)),
    };
    let made = match made {
        Ok(made) => made,
        Err(reason) => return Outcome::Crashed(reason),
    };
    cell_log(&format!(
        "Cell {cell_id} successfully created container for instance {guid}"
    ));
    let session = crate::ssh::SessionContext::of(&desired, &made.env);
    inner.with_slot(guid, |s| s.session = Some(Arc::new(session)));
    let source = if desired.log_source.is_empty() {
        DEFAULT_LOG_SOURCE.to_string()
    } else {
        desired.log_source.clone()
    };
    let tags = LogTags {
        log_guid: desired.log_guid.clone(),
        source_type: source.clone(),
        instance: key.index.to_string(),
    };
    let context = |cancel: CancellationToken| RunContext {
        tags: tags.clone(),
        env: made.env.clone(),
        cancel,
    };

    if let Some(setup) = &desired.setup {
        let result = inner
            .executor
            .run(guid, setup, context(stop.child_token()))
            .await;
        if stop.is_cancelled() {
            return Outcome::Stopped(stop_reason(inner, guid));
        }
        if let Err(e) = result {
            return Outcome::Crashed(format!("{source}: {e}"));
        }
    }
    let Some(action) = &desired.action else {
        return Outcome::Crashed("the desired LRP has no action".into());
    };

    set_state(inner, guid, ContainerState::Created);
    let action_cancel = stop.child_token();
    let action_run = inner
        .executor
        .run(guid, action, context(action_cancel.clone()));
    tokio::pin!(action_run);
    let exited = |result: Result<(), StepError>| {
        if stop.is_cancelled() {
            return Outcome::Stopped(stop_reason(inner, guid));
        }
        match result {
            Ok(()) => Outcome::Exited {
                status: 0,
                reason: format!("{source}: Exited with status 0"),
            },
            Err(e @ StepError::Exited { status, .. }) => Outcome::Exited {
                status,
                reason: format!("{source}: {e}"),
            },
            Err(e) => Outcome::Crashed(format!("{source}: {e}")),
        }
    };

    let checker = Checker::of(&desired);
    let http = reqwest::Client::new();
    let target = Target {
        executor: &inner.executor,
        handle: guid,
        ip: made.container_ip.clone(),
        env: &made.env,
        http: &http,
        cancel: &action_cancel,
    };
    let start_timeout = if desired.start_timeout_ms > 0 {
        u64::try_from(desired.start_timeout_ms)
            .ok()
            .map(Duration::from_millis)
    } else if desired.deprecated_start_timeout_s > 0 {
        Some(Duration::from_secs(u64::from(
            desired.deprecated_start_timeout_s,
        )))
    } else {
        None
    };
    // As Diego's executor: start-up checks run at the unhealthy monitoring interval whatever
    // the checks' own `interval_ms`, which paces liveness checks once the instance runs.
    let healthy = tokio::select! {
        result = &mut action_run => return exited(result),
        healthy = checker.await_healthy(&target, inner.config.startup_check_interval, start_timeout) => healthy,
    };
    // Health check failures as Diego's healthcheck reports them: `[HEALTH/<index>]` on stderr.
    let health_log = |message: &str| {
        let source = desired
            .check_definition
            .as_ref()
            .map(|c| c.log_source.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("HEALTH");
        inner.logs.emit(
            &desired.log_guid,
            source,
            &index,
            diego_logs::LogStream::Stderr,
            message,
        );
    };
    if let Err(reason) = healthy {
        health_log(&reason);
        action_cancel.cancel();
        let _ = (&mut action_run).await;
        return Outcome::Crashed(reason);
    }
    cell_log("Container became healthy");

    if stop.is_cancelled() {
        action_cancel.cancel();
        let _ = (&mut action_run).await;
        return Outcome::Stopped(stop_reason(inner, guid));
    }
    let start = StartActualLrpRequest {
        actual_lrp_key: key.clone(),
        actual_lrp_instance_key: instance.clone(),
        actual_lrp_net_info: made.net_info.clone(),
        metric_tags: BTreeMap::new(),
        routable: Some(true),
        availability_zone: inner.config.zone.clone(),
        ..StartActualLrpRequest::default()
    };
    if let Err(e) = inner.bbs.start_actual_lrp(&start).await {
        tracing::warn!(instance_guid = %guid, error = %e, "start refused; dropping the instance");
        action_cancel.cancel();
        let _ = (&mut action_run).await;
        return Outcome::Refused;
    }
    inner.with_slot(guid, |s| {
        s.state = ContainerState::Running;
        s.net_info = Some(made.net_info.clone());
    });
    tracing::info!(instance_guid = %guid, process_guid = %key.process_guid, index = key.index, "instance running");

    let liveness = checker.interval(inner.config.liveness_interval);
    loop {
        tokio::select! {
            result = &mut action_run => return exited(result),
            () = tokio::time::sleep(liveness), if !checker.is_none() => {
                if let Err(failure) = checker.check_once(&target).await {
                    if stop.is_cancelled() {
                        continue; // the action is being stopped; its exit says why
                    }
                    health_log(&failure);
                    action_cancel.cancel();
                    let _ = (&mut action_run).await;
                    return Outcome::Crashed(format!("Instance became unhealthy: {failure}"));
                }
            }
        }
    }
}

/// What making a container gave: its address, net info and the instance's environment.
struct Made {
    container_ip: Option<String>,
    net_info: ActualLrpNetInfo,
    env: Vec<EnvironmentVariable>,
}

async fn make_container(
    inner: &Inner,
    guid: &str,
    key: &ActualLrpKey,
    desired: &DesiredLrp,
) -> Result<Made, String> {
    let rootfs = inner
        .rootfs_spec(&desired.rootfs)
        .ok_or_else(|| format!("this cell does not provide rootfs {}", desired.rootfs))?;
    let properties = BTreeMap::from([
        (PROPERTY_OWNER.to_string(), inner.config.cell_id.clone()),
        (PROPERTY_KIND.to_string(), "lrp".to_string()),
        (PROPERTY_PROCESS_GUID.to_string(), key.process_guid.clone()),
        (PROPERTY_INDEX.to_string(), key.index.to_string()),
    ]);
    let spec = ContainerSpec {
        handle: Some(guid.to_string()),
        rootfs,
        env: Vec::new(),
        limits: limits(
            desired.memory_mb,
            desired.disk_mb,
            desired.max_pids,
            desired.cpu_weight,
        ),
        bind_mounts: Vec::new(),
        properties,
        network: Some(NetworkSpec::default()),
        privileged: desired.privileged,
    };
    inner
        .backend
        .create(spec)
        .await
        .map_err(|e| format!("failed to create container: {e}"))?;
    let mut ports = Vec::new();
    for &port in &desired.ports {
        let container_port =
            u16::try_from(port).map_err(|_| format!("invalid container port {port}"))?;
        let mapping = inner
            .backend
            .net_in(
                guid,
                NetIn {
                    host_port: 0,
                    container_port,
                },
            )
            .await
            .map_err(|e| format!("failed to map port {port}: {e}"))?;
        ports.push(PortMapping {
            container_port: port,
            host_port: u32::from(mapping.host_port),
            ..PortMapping::default()
        });
    }
    let info = inner
        .backend
        .info(guid)
        .await
        .map_err(|e| format!("failed to inspect container: {e}"))?;
    let host_ip = inner.config.host_ip().to_string();
    let net_info = ActualLrpNetInfo {
        address: host_ip.clone(),
        ports,
        instance_address: info.container_ip.clone().unwrap_or_default(),
        preferred_address: PreferredAddress::Host,
    };
    let env = instance_env(guid, key.index, &host_ip, &net_info, &desired.env);
    Ok(Made {
        container_ip: info.container_ip,
        net_info,
        env,
    })
}

pub(crate) fn limits(memory_mb: i32, disk_mb: i32, max_pids: i32, cpu_weight: u32) -> Limits {
    Limits {
        memory_bytes: u64::try_from(memory_mb)
            .ok()
            .filter(|&mb| mb > 0)
            .map(|mb| mb << 20),
        // Diego's cpu_weight 1..=100 scales Garden's shares; 0 leaves the default
        cpu_shares: (cpu_weight > 0).then(|| u64::from(cpu_weight) * 1024 / 100),
        pids: u64::try_from(max_pids).ok().filter(|&p| p > 0),
        // Diego's disk_mb: 0 is unlimited
        disk_mb: u64::try_from(disk_mb).ok().filter(|&mb| mb > 0),
        // Garden's defaults for open files and processes.
        ..Limits::default()
    }
}

/// Diego's instance environment (rep `lrp_convert` and executor `run_step`), then the desired
/// environment for every name it does not set.
fn instance_env(
    guid: &str,
    index: i32,
    host_ip: &str,
    net: &ActualLrpNetInfo,
    desired: &[EnvironmentVariable],
) -> Vec<EnvironmentVariable> {
    let mut env = vec![
        EnvironmentVariable::new("INSTANCE_GUID", guid),
        EnvironmentVariable::new("INSTANCE_INDEX", index.to_string()),
        EnvironmentVariable::new("CF_INSTANCE_GUID", guid),
        EnvironmentVariable::new("CF_INSTANCE_INDEX", index.to_string()),
        EnvironmentVariable::new("CF_INSTANCE_IP", host_ip),
        EnvironmentVariable::new("CF_INSTANCE_INTERNAL_IP", net.instance_address.clone()),
    ];
    match net.ports.first() {
        Some(first) => {
            env.push(EnvironmentVariable::new(
                "CF_INSTANCE_PORT",
                first.host_port.to_string(),
            ));
            env.push(EnvironmentVariable::new(
                "CF_INSTANCE_ADDR",
                format!("{host_ip}:{}", first.host_port),
            ));
            let ports: Vec<serde_json::Value> = net
                .ports
                .iter()
                .map(|p| serde_json::json!({"external": p.host_port, "internal": p.container_port}))
                .collect();
            env.push(EnvironmentVariable::new(
                "CF_INSTANCE_PORTS",
                serde_json::Value::Array(ports).to_string(),
            ));
            env.push(EnvironmentVariable::new(
                "PORT",
                first.container_port.to_string(),
            ));
        }
        None => {
            env.push(EnvironmentVariable::new("CF_INSTANCE_PORT", ""));
            env.push(EnvironmentVariable::new("CF_INSTANCE_ADDR", ""));
            env.push(EnvironmentVariable::new("CF_INSTANCE_PORTS", "[]"));
        }
    }
    for var in desired {
        if !env.iter().any(|e| e.name == var.name) {
            env.push(var.clone());
        }
    }
    env
}

/// Destroys `handle`; a container already gone is fine. Whether it is gone.
pub(crate) async fn destroy(inner: &Inner, handle: &str) -> bool {
    match inner.backend.destroy(handle).await {
        Ok(()) => {
            tracing::debug!(handle, "container destroyed");
            true
        }
        Err(diego_garden::Error::ContainerNotFound(_)) => true,
        Err(e) => {
            tracing::warn!(handle, error = %e, "destroying the container failed");
            false
        }
    }
}

async fn finish(
    inner: &Inner,
    guid: &str,
    key: &ActualLrpKey,
    instance: &ActualLrpInstanceKey,
    outcome: Outcome,
) {
    if matches!(outcome, Outcome::NotClaimed) {
        return;
    }
    let (was_running, log_guid) = inner
        .with_slot(guid, |s| (s.net_info.is_some(), s.log_guid.clone()))
        .unwrap_or_default();
    let index = key.index.to_string();
    let cell_log = |message: &str| inner.logs.cell(&log_guid, &index, message);
    let cell_id = &inner.config.cell_id;
    match &outcome {
        Outcome::Crashed(reason) => cell_log(reason),
        Outcome::Exited { status, .. } => cell_log(&format!("Exit status {status}")),
        Outcome::Stopped(_) => cell_log(&format!("Cell {cell_id} stopping instance {guid}")),
        Outcome::NotClaimed | Outcome::Refused => {}
    }
    cell_log(&format!(
        "Cell {cell_id} destroying container for instance {guid}"
    ));
    if destroy(inner, guid).await {
        cell_log(&format!(
            "Cell {cell_id} successfully destroyed container for instance {guid}"
        ));
    }
    let result = match outcome {
        Outcome::NotClaimed | Outcome::Refused => Ok(()),
        Outcome::Stopped(StopReason::Evacuated | StopReason::Orphaned | StopReason::Cancel) => {
            Ok(())
        }
        Outcome::Crashed(reason) | Outcome::Exited { reason, .. } => {
            crash(inner, key, instance, reason).await
        }
        Outcome::Stopped(StopReason::Vanished) if was_running => {
            crash(inner, key, instance, "container was lost".into()).await
        }
        Outcome::Stopped(StopReason::Stop | StopReason::Vanished) => {
            let request = RemoveActualLrpRequest {
                process_guid: key.process_guid.clone(),
                index: key.index,
                actual_lrp_instance_key: Some(instance.clone()),
            };
            inner.bbs.remove_actual_lrp(&request).await
        }
    };
    if let Err(e) = result {
        tracing::warn!(instance_guid = %guid, error = %e, "reporting the instance's end failed");
    }
}

/// Reports a crash: through evacuation while evacuating (the ORDINARY row may be a
/// replacement's by now), else Diego's `crash`.
async fn crash(
    inner: &Inner,
    key: &ActualLrpKey,
    instance: &ActualLrpInstanceKey,
    reason: String,
) -> Result<(), diego_bbs_client::ClientError> {
    tracing::info!(process_guid = %key.process_guid, index = key.index, %reason, "instance crashed");
    if inner.is_evacuating() {
        let request = EvacuateCrashedActualLrpRequest {
            actual_lrp_key: key.clone(),
            actual_lrp_instance_key: instance.clone(),
            error_message: reason,
        };
        return inner.bbs.evacuate_crashed(&request).await.map(drop);
    }
    let request = CrashActualLrpRequest {
        actual_lrp_key: key.clone(),
        actual_lrp_instance_key: instance.clone(),
        error_message: reason,
    };
    inner.bbs.crash_actual_lrp(&request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_env_is_diegos() {
        let net = ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 40001,
                ..PortMapping::default()
            }],
            instance_address: "10.254.1.2".into(),
            ..ActualLrpNetInfo::default()
        };
        let desired = [
            EnvironmentVariable::new("PORT", "1"),
            EnvironmentVariable::new("APP", "x"),
        ];
        let env = instance_env("g1", 3, "127.0.0.1", &net, &desired);
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .map(|e| e.value.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("CF_INSTANCE_INDEX"), "3");
        assert_eq!(get("CF_INSTANCE_ADDR"), "127.0.0.1:40001");
        assert_eq!(
            get("CF_INSTANCE_PORTS"),
            r#"[{"external":40001,"internal":8080}]"#
        );
        assert_eq!(get("PORT"), "8080");
        assert_eq!(get("APP"), "x");
        assert_eq!(env.iter().filter(|e| e.name == "PORT").count(), 1);
    }
}
