//! Staging: the Task that turns an app's bits (or docker image) into a droplet with a
//! lifecycle, and what happens when it completes.
//!
//! Completion arrives three ways — the BBS's completion callback, the task event stream, and
//! a poll of unfinished stagings — and is applied once: only while the app's staging record
//! still names the task and is not finished.

use std::sync::Arc;

use diego_model::requests::DesireTaskRequest;
use diego_model::staging::StagingBuildpack;
use diego_model::{EnvironmentVariable, LifecycleStaging, StagingResult, Task, TaskDefinition};

use crate::STAGING_DOMAIN;
use crate::blobs::{build_cache_key, droplet_key};
use crate::db::AppWrite;
use crate::error::{ApiError, ApiResult};
use crate::model::{
    App, Buildpack, DesiredState, DropletRecord, LifecycleKind, StagingInputs, StagingRecord,
    StagingState,
};
use crate::state::{State, now_ns};

/// Memory and disk a staging container gets at least (buildpacks need room to compile).
const MIN_STAGING_MEMORY_MB: u32 = 1024;
const MIN_STAGING_DISK_MB: u32 = 4096;
/// A staging task missing from the BBS this long after it was recorded has vanished.
const VANISHED_GRACE_NS: i64 = 10_000_000_000;

/// The buildpacks offered to staging: the named ones in the given order, or all in position
/// order. An unknown name is a 422.
pub fn resolve_buildpacks<'a>(
    named: &[String],
    all: &'a [Buildpack],
) -> ApiResult<Vec<&'a Buildpack>> {
    if named.is_empty() {
        return Ok(all.iter().collect());
    }
    named
        .iter()
        .map(|name| {
            all.iter().find(|b| &b.name == name).ok_or_else(|| {
                ApiError::unprocessable("unknown_buildpack", format!("unknown buildpack {name}"))
            })
        })
        .collect()
}

/// What staging the app now would start from; a droplet staged from the same inputs is
/// current. Errors if the app cannot be staged (no bits, no image).
pub fn inputs(state: &State, app: &App, buildpacks: &[Buildpack]) -> ApiResult<StagingInputs> {
    let kind = app.settings.lifecycle;
    let mut inputs = StagingInputs {
        lifecycle: kind,
        lifecycle_sha256: state.lifecycles.sha256(kind).to_owned(),
        stack: app.settings.stack.clone(),
        ..StagingInputs::default()
    };
    match kind {
        LifecycleKind::Docker => {
            let image = app
                .settings
                .docker_image
                .clone()
                .filter(|i| !i.trim().is_empty())
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "no_docker_image",
                        format!(
                            "app {:?} uses the docker lifecycle but has no docker_image",
                            app.name
                        ),
                    )
                })?;
            inputs.docker_image = Some(image);
        }
        LifecycleKind::Buildpack => {
            let bits = app.bits.as_ref().ok_or_else(|| {
                ApiError::unprocessable(
                    "no_bits",
                    format!(
                        "app {:?} has no bits: upload the app directory first",
                        app.name
                    ),
                )
            })?;
            inputs.bits_sha256 = Some(bits.sha256.clone());
            inputs.buildpacks_named = !app.settings.buildpacks.is_empty();
            inputs.buildpacks = resolve_buildpacks(&app.settings.buildpacks, buildpacks)?
                .into_iter()
                .map(|b| format!("{}:{}", b.name, b.sha256))
                .collect();
        }
    }
    Ok(inputs)
}

/// Whether the app must be staged before it can run: no droplet, or one staged from other
/// inputs.
pub fn needs_staging(app: &App, inputs: &StagingInputs) -> bool {
    app.droplet
        .as_ref()
        .is_none_or(|d| &d.staged_from != inputs)
}

/// Whether a staging of exactly these inputs is already under way.
pub fn staging_under_way(app: &App, inputs: &StagingInputs) -> bool {
    app.staging
        .as_ref()
        .is_some_and(|s| !s.state.is_done() && &s.inputs == inputs)
}

/// The staging task's guid for the app's `n`th droplet.
fn task_guid(app_guid: &str, n: u64) -> String {
    format!("staging-{app_guid}-{n}")
}

/// Desires the staging Task for `inputs` and records it as PENDING.
pub async fn begin(state: &State, app_name: &str, inputs: StagingInputs) -> ApiResult<()> {
    let Some(app) = state.db.app(app_name).await? else {
        return Err(ApiError::app_not_found(app_name));
    };
    let kind = inputs.lifecycle;
    state.lifecycles.publish(kind, &state.blobs).await?;
    let n = app.droplet_counter + 1;
    let guid = task_guid(&app.guid, n);
    let all = state.db.buildpacks().await?;
    let buildpacks = match kind {
        LifecycleKind::Buildpack => resolve_buildpacks(&app.settings.buildpacks, &all)?
            .into_iter()
            .map(|b| StagingBuildpack {
                name: b.name.clone(),
                key: b.name.clone(),
                url: state.blobs.url(&b.key),
                skip_detect: !app.settings.buildpacks.is_empty(),
            })
            .collect(),
        LifecycleKind::Docker => Vec::new(),
    };
    let is_docker = kind == LifecycleKind::Docker;
    let cache_url = if is_docker {
        String::new()
    } else {
        state.blobs.url(&build_cache_key(&app.guid))
    };
    let staging = LifecycleStaging {
        lifecycle_url: state.blobs.url(&state.lifecycles.key(kind)),
        lifecycle_sha256: state.lifecycles.sha256(kind).to_owned(),
        stack: app.settings.stack.clone(),
        app_bits_url: match (&app.bits, is_docker) {
            (Some(bits), false) => state.blobs.url(&bits.key),
            _ => String::new(),
        },
        droplet_upload_url: if is_docker {
            String::new()
        } else {
            state.blobs.url(&droplet_key(&app.guid, n))
        },
        // the cache is downloaded before (a missing one is no failure) and uploaded after
        build_cache_download_url: cache_url.clone(),
        build_cache_upload_url: cache_url,
        buildpacks,
        docker_image: inputs.docker_image.clone().unwrap_or_default(),
        timeout_ms: state.config.staging_timeout.as_millis() as u64,
        ..LifecycleStaging::default()
    };
    let definition = TaskDefinition {
        rootfs: format!("preloaded:{}", app.settings.stack),
        env: app
            .settings
            .env
            .iter()
            .map(|(k, v)| EnvironmentVariable::new(k, v))
            .collect(),
        memory_mb: app.settings.memory_mb.max(MIN_STAGING_MEMORY_MB) as i32,
        disk_mb: app.settings.disk_mb.max(MIN_STAGING_DISK_MB) as i32,
        log_guid: app.guid.clone(),
        log_source: "STG".to_owned(),
        completion_callback_url: format!(
            "{}/v1/internal/staging/{guid}/completed",
            state.config.api_url
        ),
        annotation: app.guid.clone(),
        lifecycle_staging: Some(staging),
        ..TaskDefinition::default()
    };
    let record = StagingRecord {
        task_guid: guid.clone(),
        state: StagingState::Pending,
        error: None,
        droplet_number: n,
        inputs,
        started_at: now_ns(),
    };
    // Recorded before the task exists, so a completion racing this call finds it.
    state
        .db
        .update_app(app_name, {
            let name = app.name.clone();
            move |current| {
                let mut app = current.ok_or_else(|| ApiError::app_not_found(&name))?;
                app.droplet_counter = n;
                app.staging = Some(record);
                app.updated_at = now_ns();
                Ok((AppWrite::Put(app), ()))
            }
        })
        .await?;
    let request = DesireTaskRequest {
        task_definition: definition,
        task_guid: guid.clone(),
        domain: STAGING_DOMAIN.to_owned(),
    };
    if let Err(e) = state.bbs.desire_task(&request).await {
        let message = format!("cannot desire the staging task: {e}");
        fail(state, &app.guid, &guid, &message).await?;
        return Err(ApiError::upstream("bbs_error", message));
    }
    state
        .event(
            &app.guid,
            "staging",
            format!("Staging app {} (droplet {n})", app.name),
        )
        .await;
    Ok(())
}

/// Applies a completed staging task: on success the droplet is recorded (and deployed if the
/// app is STARTED); on failure the error shows in the app's staging record and events.
pub async fn complete(
    state: &Arc<State>,
    task_guid: &str,
    failed: bool,
    failure_reason: &str,
    result: &str,
) -> ApiResult<()> {
    let Some(app) = app_staging(state, task_guid).await? else {
        return Ok(());
    };
    if failed {
        return fail(state, &app.guid, task_guid, failure_reason).await;
    }
    let staging_result: StagingResult = match serde_json::from_str(result) {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("the staging result is unreadable: {e}");
            return fail(state, &app.guid, task_guid, &reason).await;
        }
    };
    let Some(record) = app.staging.clone() else {
        return Ok(());
    };
    let n = record.droplet_number;
    let (key, sha256) = if record.inputs.lifecycle == LifecycleKind::Docker {
        (String::new(), String::new())
    } else {
        let key = droplet_key(&app.guid, n);
        match state.blobs.sha256(&key).await? {
            Some(sha) => (key, sha),
            None => {
                let reason = format!("staging succeeded but no droplet was uploaded to {key}");
                return fail(state, &app.guid, task_guid, &reason).await;
            }
        }
    };
    let droplet = DropletRecord {
        number: n,
        key,
        sha256,
        staging_result,
        staged_from: record.inputs.clone(),
        created_at: now_ns(),
    };
    let guid = task_guid.to_owned();
    let applied = state
        .db
        .update_app(&app.name, move |current| {
            let Some(mut app) = current else {
                return Ok((AppWrite::Keep, None));
            };
            match &mut app.staging {
                Some(s) if s.task_guid == guid && !s.state.is_done() => {
                    s.state = StagingState::Succeeded;
                    s.error = None;
                }
                _ => return Ok((AppWrite::Keep, None)),
            }
            let old = app.droplet.replace(droplet);
            app.updated_at = now_ns();
            let started = app.state == DesiredState::Started;
            Ok((AppWrite::Put(app), Some((old, started))))
        })
        .await?;
    let Some((old, started)) = applied else {
        return Ok(());
    };
    state
        .event(
            &app.guid,
            "staging_succeeded",
            format!("Staging of droplet {n} succeeded"),
        )
        .await;
    if let Some(old) = old.filter(|o| !o.key.is_empty()) {
        // Running instances may still download the old droplet until they are replaced;
        // a deployment keeps it for them, and the next staging or delete cleans it up.
        tracing::debug!(key = %old.key, "previous droplet superseded");
    }
    if started {
        crate::deploy::start(state.clone(), &app.name);
    }
    Ok(())
}

/// The app whose unfinished staging is `task_guid`.
async fn app_staging(state: &State, task_guid: &str) -> ApiResult<Option<App>> {
    Ok(state.db.apps().await?.into_iter().find(|a| {
        a.staging
            .as_ref()
            .is_some_and(|s| s.task_guid == task_guid && !s.state.is_done())
    }))
}

/// Marks the staging `task_guid` of app `app_guid` FAILED with `reason`.
pub async fn fail(state: &State, app_guid: &str, task_guid: &str, reason: &str) -> ApiResult<()> {
    let Some(app) = state.db.app_by_guid(app_guid).await? else {
        return Ok(());
    };
    let guid = task_guid.to_owned();
    let error = reason.to_owned();
    let changed = state
        .db
        .update_app(&app.name, move |current| {
            let Some(mut app) = current else {
                return Ok((AppWrite::Keep, false));
            };
            match &mut app.staging {
                Some(s) if s.task_guid == guid && !s.state.is_done() => {
                    s.state = StagingState::Failed;
                    s.error = Some(error);
                }
                _ => return Ok((AppWrite::Keep, false)),
            }
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app), true))
        })
        .await?;
    if changed {
        state
            .event(
                app_guid,
                "staging_failed",
                format!("Staging failed: {reason}"),
            )
            .await;
    }
    Ok(())
}

/// Applies a task the BBS reports COMPLETED (or RESOLVING), if it is an unfinished staging.
pub async fn complete_from_task(state: &Arc<State>, task: &Task) -> ApiResult<()> {
    complete(
        state,
        &task.task_guid,
        task.failed,
        &task.failure_reason,
        &task.result,
    )
    .await
}

/// The BBS's state of an unfinished staging: moves PENDING to RUNNING, applies a completed
/// task (and removes it, in case its callback never arrives), fails a vanished one.
pub async fn poll(state: &Arc<State>, app: &App) -> ApiResult<()> {
    let Some(record) = app.staging.as_ref().filter(|s| !s.state.is_done()) else {
        return Ok(());
    };
    let guid = record.task_guid.clone();
    match state.bbs.task(&guid).await {
        Ok(task) => match task.state {
            diego_model::TaskState::Completed | diego_model::TaskState::Resolving => {
                complete_from_task(state, &task).await?;
                // What the BBS does after a delivered callback; this one may never be.
                if task.state == diego_model::TaskState::Completed {
                    let _ = state.bbs.resolving_task(&guid).await;
                }
                let _ = state.bbs.delete_task(&guid).await;
            }
            diego_model::TaskState::Running if record.state == StagingState::Pending => {
                let guid = guid.clone();
                state
                    .db
                    .update_app(&app.name, move |current| {
                        let Some(mut app) = current else {
                            return Ok((AppWrite::Keep, ()));
                        };
                        match &mut app.staging {
                            Some(s) if s.task_guid == guid && s.state == StagingState::Pending => {
                                s.state = StagingState::Running;
                                Ok((AppWrite::Put(app), ()))
                            }
                            _ => Ok((AppWrite::Keep, ())),
                        }
                    })
                    .await?;
            }
            _ => {}
        },
        // The record is written just before the task is desired: give the desire a moment.
        Err(e)
            if e.kind() == Some(diego_model::ErrorType::ResourceNotFound)
                && now_ns() - record.started_at > VANISHED_GRACE_NS =>
        {
            fail(
                state,
                &app.guid,
                &guid,
                "the staging task vanished from the BBS",
            )
            .await?;
        }
        Err(e) if e.kind() == Some(diego_model::ErrorType::ResourceNotFound) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
