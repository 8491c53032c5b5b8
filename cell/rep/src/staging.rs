//! A staging task: the task's lifecycle plug-in stages the app, and the task completes with
//! Diego's staging result JSON.
//!
//! Beyond Diego (whose staging task runs the lifecycle's `builder` binary with a RunAction):
//! the task names a Wasm lifecycle component ([`LifecycleStaging`]). The rep fetches and loads
//! it (`crate::lifecycles`), then
//! - with a `docker_image`: resolves the image natively and lets the guest record it
//!   ([`diego_lifecycle_runner::stage_docker`]; no container, the cell's registry settings);
//! - else: creates the task's container as for any task and runs the guest's plans in it
//!   ([`diego_lifecycle_runner::stage`]).
//!
//! Everything the plans print, and the guest's own log lines, go out live as `STG` lines on the
//! task's `log_guid` (instance `0`), closed by "Staging complete" or "Staging failed: REASON".
//! Staging is bounded by `timeout_ms` (default [`DEFAULT_STAGING_TIMEOUT`]) and stops when the
//! task is cancelled (dropping the run kills its processes). The caller destroys the container.

use std::sync::Arc;
use std::time::Duration;

use diego_host::capabilities::ContainerRef;
use diego_host::lifecycle::LifecycleError;
use diego_host::lifecycle::types as guest;
use diego_lifecycle_runner::{GardenCaps, RunnerError, Staged};
use diego_logs::LogStream;
use diego_model::staging::{BuildpackMetadata, LifecycleMetadata};
use diego_model::{LifecycleStaging, StagingResult, TaskDefinition};
use diego_rep_client::ContainerState;
use tokio_util::sync::CancellationToken;

use crate::rep::Inner;
use crate::task::{Outcome, create_container, stop_reason};

/// Staging gives up after this long unless the task says otherwise (Diego's default).
pub const DEFAULT_STAGING_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The log source of staging output.
pub const STAGING_LOG_SOURCE: &str = "STG";
/// The instance staging lines carry.
const STAGING_INSTANCE: &str = "0";

/// Stages the task `guid` and says how it ended (see the module doc).
pub(crate) async fn run(
    inner: &Arc<Inner>,
    guid: &str,
    def: &TaskDefinition,
    staging: &LifecycleStaging,
    stop: &CancellationToken,
) -> Outcome {
    let timeout = staging_timeout(staging);
    let log_guid = def.log_guid.clone();
    let emit = {
        let logs = inner.logs.clone();
        move |stream: LogStream, message: &str| {
            logs.emit(
                &log_guid,
                STAGING_LOG_SOURCE,
                STAGING_INSTANCE,
                stream,
                message,
            );
        }
    };
    let staged = tokio::select! {
        staged = tokio::time::timeout(timeout, stage(inner, guid, def, staging, stop)) => staged,
        () = stop.cancelled() => return Outcome::Stopped(stop_reason(inner, guid)),
    };
    if stop.is_cancelled() {
        return Outcome::Stopped(stop_reason(inner, guid));
    }
    let result = match staged {
        Ok(Ok(result)) => result,
        Ok(Err(Failure::Stopped)) => return Outcome::Stopped(stop_reason(inner, guid)),
        Ok(Err(Failure::Reason(reason))) => {
            emit(LogStream::Stderr, &format!("Staging failed: {reason}"));
            return Outcome::failed(reason);
        }
        Err(_) => {
            let reason = format!("staging timed out after {}s", timeout.as_secs());
            emit(LogStream::Stderr, &format!("Staging failed: {reason}"));
            return Outcome::failed(reason);
        }
    };
    match serde_json::to_string(&result) {
        Ok(json) => {
            emit(LogStream::Stdout, "Staging complete");
            Outcome::succeeded(json)
        }
        Err(e) => {
            let reason = format!("encoding the staging result failed: {e}");
            emit(LogStream::Stderr, &format!("Staging failed: {reason}"));
            Outcome::failed(reason)
        }
    }
}

/// Why staging did not give a result.
enum Failure {
    /// The task was cancelled meanwhile.
    Stopped,
    /// The failure reason to complete the task with.
    Reason(String),
}

async fn stage(
    inner: &Arc<Inner>,
    guid: &str,
    def: &TaskDefinition,
    staging: &LifecycleStaging,
    stop: &CancellationToken,
) -> Result<StagingResult, Failure> {
    let plugin = inner
        .lifecycles
        .plugin(&staging.lifecycle_url, &staging.lifecycle_sha256)
        .await
        .map_err(|e| Failure::Reason(e.to_string()))?;
    let request = staging_request(guid, def, staging);
    let log_guid = def.log_guid.clone();
    let logs = inner.logs.clone();
    let sink: diego_lifecycle_runner::LogSink = Arc::new(move |_source: &str, message: &str| {
        logs.emit(
            &log_guid,
            STAGING_LOG_SOURCE,
            STAGING_INSTANCE,
            LogStream::Stdout,
            message,
        );
    });
    let caps = GardenCaps::new(inner.backend.clone())
        .with_http(inner.lifecycles.http().clone())
        .with_log_sink(sink);
    let staged = if request.docker_image.is_some() {
        // no container: the task runs from here on, in the rep
        inner.with_slot(guid, |s| {
            s.state = ContainerState::Running;
            s.containerless = true;
        });
        let registry = inner.config.native_config().registry;
        let staged = diego_lifecycle_runner::stage_docker(&plugin, &registry, &request).await;
        if let Ok(staged) = &staged {
            // docker staging runs no plan: the guest's lines come back all at once
            caps.forward_guest_logs(&staged.guest_logs);
        }
        staged
    } else {
        create_container(inner, guid, def, stop)
            .await
            .map_err(|outcome| match outcome {
                Outcome::Completed { failure_reason, .. } => Failure::Reason(failure_reason),
                _ => Failure::Stopped,
            })?;
        diego_lifecycle_runner::stage(&plugin, &caps, &ContainerRef(guid.to_string()), &request)
            .await
    };
    match staged {
        Ok(Staged { result, plans, .. }) => {
            tracing::info!(task_guid = %guid, plans, "staged");
            Ok(staging_result(result))
        }
        Err(e) => {
            tracing::info!(task_guid = %guid, error = %e, "staging failed");
            Err(Failure::Reason(failure_reason(&e)))
        }
    }
}

fn staging_timeout(staging: &LifecycleStaging) -> Duration {
    if staging.timeout_ms == 0 {
        DEFAULT_STAGING_TIMEOUT
    } else {
        Duration::from_millis(staging.timeout_ms)
    }
}

/// The guest's request: the staging instructions plus the task's env, limits and registry
/// credentials.
fn staging_request(
    guid: &str,
    def: &TaskDefinition,
    staging: &LifecycleStaging,
) -> guest::StagingRequest {
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
    let docker_credentials = (!def.image_username.is_empty() || !def.image_password.is_empty())
        .then(|| guest::RegistryCredentials {
            user: def.image_username.clone(),
            password: def.image_password.clone(),
        });
    guest::StagingRequest {
        staging_guid: guid.to_string(),
        stack: staging.stack.clone(),
        lifecycle_bundle_url: None,
        app_bits_url: staging.app_bits_url.clone(),
        droplet_upload_url: staging.droplet_upload_url.clone(),
        build_artifacts_cache_download_url: some(&staging.build_cache_download_url),
        build_artifacts_cache_upload_url: some(&staging.build_cache_upload_url),
        buildpacks: staging
            .buildpacks
            .iter()
            .map(|b| guest::Buildpack {
                name: b.name.clone(),
                key: b.key.clone(),
                url: b.url.clone(),
                skip_detect: b.skip_detect,
            })
            .collect(),
        docker_image: some(&staging.docker_image),
        docker_credentials,
        env: def
            .env
            .iter()
            .map(|e| guest::EnvVar {
                name: e.name.clone(),
                value: e.value.clone(),
            })
            .collect(),
        memory_mb: u64::try_from(def.memory_mb).unwrap_or(0),
        disk_mb: u64::try_from(def.disk_mb).unwrap_or(0),
        timeout_ms: u64::try_from(staging_timeout(staging).as_millis()).unwrap_or(u64::MAX),
        options: staging
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The guest's result as Diego's staging result JSON (sidecars have no place in it yet).
fn staging_result(r: guest::StagingResult) -> StagingResult {
    let m = r.lifecycle_metadata;
    StagingResult {
        lifecycle_type: r.lifecycle_type,
        lifecycle_metadata: LifecycleMetadata {
            buildpack_key: m.buildpack_key.unwrap_or_default(),
            detected_buildpack: m.detected_buildpack.unwrap_or_default(),
            buildpacks: m
                .buildpacks
                .into_iter()
                .map(|b| BuildpackMetadata {
                    key: b.key,
                    name: b.name,
                    version: b.version,
                })
                .collect(),
            docker_image: m.docker_image.unwrap_or_default(),
        },
        process_types: r
            .process_types
            .into_iter()
            .map(|p| (p.name, p.command))
            .collect(),
        execution_metadata: r.execution_metadata,
    }
}

/// The task's failure reason: the guest's own words when it failed ("no buildpack detected"),
/// else the runner's whole message.
fn failure_reason(e: &RunnerError) -> String {
    match e {
        // the host words a guest's `failed(m)` as "failed: m"; the reason is the guest's `m`
        RunnerError::Lifecycle(LifecycleError::Plugin { error, .. }) => {
            error.strip_prefix("failed: ").unwrap_or(error).to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use diego_model::desired_lrp::EnvironmentVariable;
    use diego_model::staging::StagingBuildpack;

    use super::*;

    #[test]
    fn the_request_carries_the_task_env_limits_and_credentials() {
        let def = TaskDefinition {
            env: vec![EnvironmentVariable::new("A", "1")],
            memory_mb: 512,
            disk_mb: -1,
            image_username: "u".into(),
            image_password: "p".into(),
            ..TaskDefinition::default()
        };
        let staging = LifecycleStaging {
            app_bits_url: "http://b/app.zip".into(),
            buildpacks: vec![StagingBuildpack {
                name: "python".into(),
                key: "python_buildpack".into(),
                url: "http://b/python.zip".into(),
                skip_detect: true,
            }],
            build_cache_download_url: " ".into(),
            options: BTreeMap::from([("k".into(), "v".into())]),
            ..LifecycleStaging::default()
        };
        let r = staging_request("t1", &def, &staging);
        assert_eq!(r.staging_guid, "t1");
        assert_eq!((r.memory_mb, r.disk_mb), (512, 0));
        assert_eq!(r.timeout_ms, 15 * 60 * 1000);
        assert_eq!(r.env[0].name, "A");
        assert!(r.buildpacks[0].skip_detect);
        assert_eq!(r.build_artifacts_cache_download_url, None);
        assert_eq!(r.docker_image, None);
        assert_eq!(r.docker_credentials.map(|c| c.user), Some("u".into()));
        assert_eq!(r.options, vec![("k".to_string(), "v".to_string())]);
    }

    #[test]
    fn the_guest_result_becomes_diegos_json() {
        let r = guest::StagingResult {
            lifecycle_type: "buildpack".into(),
            lifecycle_metadata: guest::LifecycleMetadata {
                buildpack_key: Some("python_buildpack".into()),
                detected_buildpack: Some("python".into()),
                buildpacks: vec![guest::BuildpackInfo {
                    key: "python_buildpack".into(),
                    name: "python".into(),
                    version: "1.0".into(),
                }],
                docker_image: None,
            },
            process_types: vec![guest::ProcessType {
                name: "web".into(),
                command: "python app.py".into(),
            }],
            sidecars: vec![],
            execution_metadata: "{}".into(),
        };
        let json = serde_json::to_value(staging_result(r)).unwrap_or_default();
        assert_eq!(json["process_types"]["web"], "python app.py");
        assert_eq!(json["lifecycle_metadata"]["detected_buildpack"], "python");
        assert_eq!(
            json["lifecycle_metadata"]["buildpacks"][0]["version"],
            "1.0"
        );
        assert!(json["lifecycle_metadata"].get("docker_image").is_none());
    }
}
