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
use crate::lifecycles::{Resolved, component_key};
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

/// What staging the app now would start from, with the buildpacks resolved (an unknown
/// named buildpack is a 422). Errors if the app cannot be staged (no bits, no image).
/// `lifecycle` is the version of the app's lifecycle staging uses.
pub fn inputs(
    app: &App,
    lifecycle: &Resolved,
    buildpacks: &[Buildpack],
) -> ApiResult<StagingInputs> {
    let kind = app.settings.lifecycle.clone();
    let mut inputs = StagingInputs {
        lifecycle: kind.clone(),
        lifecycle_sha256: lifecycle.sha256.clone(),
        lifecycle_version: lifecycle.version.clone(),
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
        LifecycleKind::Buildpack | LifecycleKind::Added(_) => {
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
            if !kind.is_builtin() {
                // an added lifecycle gets the bits, never the buildpacks
                return Ok(inputs);
            }
            inputs.buildpacks_named = !app.settings.buildpacks.is_empty();
            inputs.buildpacks = resolve_buildpacks(&app.settings.buildpacks, buildpacks)?
                .into_iter()
                .map(|b| format!("{}:{}", b.name, b.sha256))
                .collect();
        }
    }
    Ok(inputs)
}

/// Whether a droplet staged from `staged` is what `app` asks for: the same lifecycle,
/// stack, bits, docker image and named buildpacks (by name). A buildpack added, updated or
/// deleted since, or a new version of the lifecycle, does not make a droplet stale (as in
/// Cloud Foundry: restage to pick them up).
pub fn staged_as_asked(staged: &StagingInputs, app: &App) -> bool {
    let s = &app.settings;
    if staged.lifecycle != s.lifecycle || staged.stack != s.stack {
        return false;
    }
    match &s.lifecycle {
        LifecycleKind::Docker => {
            staged.docker_image.as_deref() == s.docker_image.as_deref().map(str::trim)
        }
        LifecycleKind::Added(_) => {
            staged.bits_sha256.as_deref() == app.bits.as_ref().map(|b| b.sha256.as_str())
        }
        LifecycleKind::Buildpack => {
            let names = staged
                .buildpacks
                .iter()
                .map(|b| b.rsplit_once(':').map_or(b.as_str(), |(name, _)| name));
            staged.bits_sha256.as_deref() == app.bits.as_ref().map(|b| b.sha256.as_str())
                && staged.buildpacks_named != s.buildpacks.is_empty()
                && (!staged.buildpacks_named || names.eq(s.buildpacks.iter().map(String::as_str)))
        }
    }
}

/// Whether the app must be staged before it can run: no droplet, or one staged from other
/// sources than the app asks for now.
pub fn needs_staging(app: &App) -> bool {
    app.droplet
        .as_ref()
        .is_none_or(|d| !staged_as_asked(&d.staged_from, app))
}

/// Whether an unfinished staging of what the app asks for now is under way.
pub fn staging_under_way(app: &App) -> bool {
    app.staging
        .as_ref()
        .is_some_and(|s| !s.state.is_done() && staged_as_asked(&s.inputs, app))
}

/// The staging task's guid for the app's `n`th droplet.
fn task_guid(app_guid: &str, n: u64) -> String {
    format!("staging-{app_guid}-{n}")
}

/// What [`begin`] did.
#[derive(Debug)]
pub enum Begun {
    /// A staging was recorded (PENDING) and its task desired.
    Staging(App),
    /// A staging of the same sources was already under way: nothing new.
    UnderWay(App),
    /// The droplet is current after all (a staging finished meanwhile): nothing to stage.
    Current,
}

/// What a staging task is built from, taken in the write that records the staging.
struct Snapshot {
    app: App,
    buildpacks: Vec<Buildpack>,
    /// The unfinished staging this one replaces.
    replaced: Option<String>,
}

/// Stages the app, unless a staging of the same sources is under way: the droplet number,
/// the PENDING record and what the task is built from (bits, settings, buildpacks) are all
/// decided in one write, so concurrent starts never share a task or a droplet. A replaced
/// unfinished staging's task is cancelled.
///
/// `restage`: stage even if the droplet is what the app asks for (to pick up a new version of
/// its lifecycle or buildpacks), unless a staging is under way.
pub async fn begin(state: &State, app_name: &str, restage: bool) -> ApiResult<Begun> {
    let Some(app) = state.db.app(app_name).await? else {
        return Err(ApiError::app_not_found(app_name));
    };
    let lifecycle = state
        .lifecycles
        .resolve(&app.settings.lifecycle, &state.bbs, &state.blobs)
        .await?;
    state
        .lifecycles
        .publish(&app.settings.lifecycle, &state.blobs)
        .await?;
    let all = state.db.buildpacks().await?;
    let resolved_for = app.settings.lifecycle.clone();
    let guid = app.guid.clone();
    let name = app.name.clone();
    let decided = state
        .db
        .update_app(app_name, move |current| {
            let mut app = current
                .filter(|a| a.guid == guid)
                .ok_or_else(|| ApiError::app_not_found(&name))?;
            if staging_under_way(&app) {
                return Ok((AppWrite::Keep, Err(Begun::UnderWay(app))));
            }
            if !restage && !needs_staging(&app) {
                return Ok((AppWrite::Keep, Err(Begun::Current)));
            }
            let kind = app.settings.lifecycle.clone();
            if kind != resolved_for {
                // changed since it was resolved: the caller's start sees the change next time
                return Err(ApiError::conflict(
                    "lifecycle_changed",
                    format!("app {name:?} changed its lifecycle meanwhile: start it again"),
                ));
            }
            let inputs = inputs(&app, &lifecycle, &all)?;
            let buildpacks: Vec<Buildpack> = match kind {
                LifecycleKind::Buildpack => resolve_buildpacks(&app.settings.buildpacks, &all)?
                    .into_iter()
                    .cloned()
                    .collect(),
                LifecycleKind::Docker | LifecycleKind::Added(_) => Vec::new(),
            };
            let replaced = app
                .staging
                .as_ref()
                .filter(|s| !s.state.is_done())
                .map(|s| s.task_guid.clone());
            let n = app.droplet_counter + 1;
            app.droplet_counter = n;
            app.staging = Some(StagingRecord {
                task_guid: task_guid(&app.guid, n),
                state: StagingState::Pending,
                error: None,
                droplet_number: n,
                inputs,
                started_at: now_ns(),
            });
            app.updated_at = now_ns();
            let snapshot = Snapshot {
                app: app.clone(),
                buildpacks,
                replaced,
            };
            Ok((AppWrite::Put(app), Ok(snapshot)))
        })
        .await?;
    let snapshot = match decided {
        Ok(snapshot) => snapshot,
        Err(begun) => return Ok(begun),
    };
    let app = &snapshot.app;
    let Some(record) = app.staging.clone() else {
        return Err(ApiError::internal("a recorded staging has no record"));
    };
    if let Some(old) = &snapshot.replaced {
        // Its completion no longer matches the record, so it is ignored; this frees its cell.
        if let Err(e) = state.bbs.cancel_task(old).await {
            tracing::debug!(task_guid = %old, error = %e, "cannot cancel a replaced staging");
        }
    }
    let guid = record.task_guid.clone();
    let request = DesireTaskRequest {
        task_definition: definition(state, app, &snapshot.buildpacks, &record),
        task_guid: guid.clone(),
        domain: STAGING_DOMAIN.to_owned(),
    };
    if let Err(e) = state.bbs.desire_task(&request).await {
        // The record is this call's own (its droplet number was allocated above), so failing
        // it cannot touch another start's staging.
        let message = format!("cannot desire the staging task: {e}");
        fail(state, &app.guid, &guid, &message).await?;
        let mut error = ApiError::from(e);
        error.message = message;
        return Err(error);
    }
    let n = record.droplet_number;
    state
        .event(
            &app.guid,
            "staging",
            format!("Staging app {} (droplet {n})", app.name),
        )
        .await;
    Ok(Begun::Staging(app.clone()))
}

/// The staging Task of `record` for `app` as it was when the staging was recorded.
fn definition(
    state: &State,
    app: &App,
    buildpacks: &[Buildpack],
    record: &StagingRecord,
) -> TaskDefinition {
    let kind = &record.inputs.lifecycle;
    let n = record.droplet_number;
    let is_docker = kind.is_docker();
    let named = record.inputs.buildpacks_named;
    let cache_url = if is_docker {
        String::new()
    } else {
        state.blobs.url(&build_cache_key(&app.guid))
    };
    let staging = LifecycleStaging {
        lifecycle_url: state
            .blobs
            .url(&component_key(&record.inputs.lifecycle_sha256)),
        lifecycle_sha256: record.inputs.lifecycle_sha256.clone(),
        stack: record.inputs.stack.clone(),
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
        buildpacks: buildpacks
            .iter()
            .map(|b| StagingBuildpack {
                name: b.name.clone(),
                key: b.name.clone(),
                url: state.blobs.url(&b.key),
                skip_detect: named,
            })
            .collect(),
        docker_image: record.inputs.docker_image.clone().unwrap_or_default(),
        timeout_ms: state.config.staging_timeout.as_millis() as u64,
        ..LifecycleStaging::default()
    };
    TaskDefinition {
        rootfs: format!("preloaded:{}", record.inputs.stack),
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
            "{}/v1/internal/staging/{}/completed",
            state.config.api_url, record.task_guid
        ),
        annotation: app.guid.clone(),
        lifecycle_staging: Some(staging),
        ..TaskDefinition::default()
    }
}
/// Applies a completed staging task: on success the droplet is recorded and, if the app is
/// STARTED, its deployment is recorded in the same write (so no reader sees the new droplet
/// with the old deployment as the latest) and then run; on failure the error shows in the
/// app's staging record and events.
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
    let (key, sha256) = if record.inputs.lifecycle.is_docker() {
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
    // Taken before the write that may record a deployment (see `Deployments::reserve`).
    let reservation = crate::deploy::Deployments::reserve(state, &app.name);
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
            app.droplet = Some(droplet);
            app.updated_at = now_ns();
            let deploy_to = if app.state == DesiredState::Started {
                crate::deploy::record(&mut app)
            } else {
                None
            };
            Ok((AppWrite::Put(app), Some(deploy_to)))
        })
        .await?;
    let Some(deploy_to) = applied else {
        return Ok(());
    };
    state
        .event(
            &app.guid,
            "staging_succeeded",
            format!("Staging of droplet {n} succeeded"),
        )
        .await;
    match deploy_to {
        Some(to) => reservation.spawn(to),
        // Stopped: no version runs the new droplet; the previous one is unused now.
        None => crate::deploy::prune_droplets(state, &app.name).await,
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
                return Ok((AppWrite::Keep, None));
            };
            let number = match &mut app.staging {
                Some(s) if s.task_guid == guid && !s.state.is_done() => {
                    s.state = StagingState::Failed;
                    s.error = Some(error);
                    s.droplet_number
                }
                _ => return Ok((AppWrite::Keep, None)),
            };
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app), Some(number)))
        })
        .await?;
    if let Some(number) = changed {
        // Whatever the failed staging uploaded is no droplet anyone runs.
        let key = droplet_key(app_guid, number);
        if let Err(e) = state.blobs.delete(&key).await {
            tracing::warn!(%key, error = %e, "cannot delete a failed staging's droplet");
        }
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
