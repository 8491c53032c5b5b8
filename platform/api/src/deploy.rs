//! Deployments: a droplet (or new settings) onto the BBS, as `cf push --strategy rolling` does.
//!
//! On a STARTED app with a running version, the new version is desired with one instance;
//! once it is RUNNING, the old is lowered by one and the new raised by one, each step waiting
//! for the new instance to run, until the new has all instances; then the old is removed. Old
//! and new share routes, so the router always has a running endpoint. A new version that
//! crashes or is not running in time is removed, the old is restored, and the deployment
//! shows FAILED with the reason. Without a running version (first start, after a stop) the
//! new one is desired with all its instances at once.
//!
//! One deployment per app at a time: a new one cancels the running one (which removes its
//! unfinished version) and waits for it to clean up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use diego_model::desired_lrp::DesiredLrpUpdate;
use diego_model::requests::{ActualLrpsRequest, UpdateDesiredLrpRequest};
use diego_model::{ActualLrpState, ErrorType};
use tokio_util::sync::CancellationToken;

use crate::db::AppWrite;
use crate::error::{ApiError, ApiResult};
use crate::launcher::{desired_lrp, process_guid};
use crate::model::{App, DeploymentRecord, DeploymentState, DesiredState};
use crate::state::{State, now_ns};

#[derive(Debug)]
struct Slot {
    token: CancellationToken,
    generation: u64,
    /// Held by the deployment that runs; the next one waits for it.
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// The deployments under way, by app name.
#[derive(Debug, Default)]
pub struct Deployments {
    slots: Mutex<HashMap<String, Slot>>,
    generations: std::sync::atomic::AtomicU64,
}

impl Deployments {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a deployment of `app_name` is under way.
    pub fn is_active(&self, app_name: &str) -> bool {
        self.slots().contains_key(app_name)
    }

    /// Cancels the app's deployment, if any, and waits until it has cleaned up.
    pub async fn cancel_and_wait(&self, app_name: &str) {
        let lock = {
            let slots = self.slots();
            let Some(slot) = slots.get(app_name) else {
                return;
            };
            slot.token.cancel();
            slot.lock.clone()
        };
        drop(lock.lock().await);
    }
}

/// Starts deploying the app's droplet with its settings (in the background).
pub fn start(state: Arc<State>, app_name: &str) {
    let name = app_name.to_owned();
    let token = CancellationToken::new();
    let generation = state
        .deployments
        .generations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let lock = {
        let mut slots = state.deployments.slots();
        let slot = slots.entry(name.clone()).or_insert_with(|| Slot {
            token: CancellationToken::new(),
            generation,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        });
        slot.token.cancel();
        slot.token = token.clone();
        slot.generation = generation;
        slot.lock.clone()
    };
    tokio::spawn(async move {
        {
            let _running = lock.lock().await;
            if !token.is_cancelled()
                && let Err(e) = run(&state, &name, &token).await
            {
                tracing::warn!(app = %name, error = %e, "deployment failed");
            }
        }
        let mut slots = state.deployments.slots();
        if slots.get(&name).is_some_and(|s| s.generation == generation) {
            slots.remove(&name);
        }
    });
}

/// Why waiting for instances ended early.
enum WaitError {
    Cancelled,
    Failed(String),
}

async fn run(state: &Arc<State>, name: &str, token: &CancellationToken) -> ApiResult<()> {
    let Some(app) = state.db.app(name).await? else {
        return Ok(());
    };
    if app.state != DesiredState::Started || app.droplet.is_none() {
        return Ok(());
    }
    let from = match &app.process_guid {
        Some(pg) => match state.bbs.desired_lrp(pg).await {
            Ok(lrp) => Some((pg.clone(), u32::try_from(lrp.instances).unwrap_or(0))),
            Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let version = app.version + 1;
    let to = process_guid(&app.guid, version);
    let target = app.settings.instances;
    let record = DeploymentRecord {
        state: DeploymentState::Deploying,
        from: from.as_ref().map(|(pg, _)| pg.clone()),
        to: to.clone(),
        error: None,
    };
    let fresh = from.is_none();
    let guid = app.guid.clone();
    let app = state
        .db
        .update_app(name, move |current| {
            let mut app = current.filter(|a| a.guid == guid).ok_or_else(|| {
                ApiError::conflict("app_changed", "the app was deleted during its deployment")
            })?;
            app.version = version;
            app.deployment = Some(record);
            if fresh {
                app.process_guid = Some(process_guid(&app.guid, version));
            }
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app.clone()), app))
        })
        .await?;
    state
        .event(
            &app.guid,
            "deploy",
            format!("Deploying version {version} ({to})"),
        )
        .await;

    let first = if fresh { target } else { target.min(1) };
    let lrp = match desired_lrp(state, &app, &to, first).await {
        Ok(lrp) => lrp,
        Err(e) => return finish_failed(state, &app, &to, from, e.message).await,
    };
    if token.is_cancelled() {
        return Ok(());
    }
    if let Err(e) = state.bbs.desire_lrp(&lrp).await {
        return finish_failed(state, &app, &to, from, format!("cannot desire {to}: {e}")).await;
    }
    let Some((old, old_instances)) = from else {
        return match wait_running(state, &to, target, token).await {
            Ok(()) => finish_deployed(state, &app, &to, None).await,
            Err(WaitError::Cancelled) => Ok(()),
            // The first version stays desired (Diego keeps restarting it): nothing to go back to.
            Err(WaitError::Failed(reason)) => {
                set_deployment(
                    state,
                    &app,
                    &to,
                    DeploymentState::Failed,
                    Some(reason.clone()),
                )
                .await?;
                state
                    .event(
                        &app.guid,
                        "deploy_failed",
                        format!("Deployment of {to} failed: {reason}"),
                    )
                    .await;
                Ok(())
            }
        };
    };
    match roll(state, &app, &old, old_instances, &to, first, token).await {
        Ok(()) => finish_deployed(state, &app, &to, Some(&old)).await,
        Err(WaitError::Cancelled) => {
            remove_lrp(state, &to).await;
            set_instances(state, &old, old_instances).await;
            Ok(())
        }
        Err(WaitError::Failed(reason)) => {
            set_instances(state, &old, old_instances).await;
            finish_failed(state, &app, &to, Some((old, old_instances)), reason).await
        }
    }
}

/// The rolling steps; `new` runs `first` instances when called.
async fn roll(
    state: &State,
    app: &App,
    old: &str,
    mut old_n: u32,
    new: &str,
    first: u32,
    token: &CancellationToken,
) -> Result<(), WaitError> {
    let mut new_n = first;
    wait_running(state, new, new_n, token).await?;
    loop {
        // The target is read again each step: a scale during the deployment is honoured.
        let target = match state.db.app(&app.name).await {
            Ok(Some(a)) if a.guid == app.guid => a.settings.instances,
            _ => return Err(WaitError::Cancelled),
        };
        if new_n >= target {
            if new_n > target {
                set_instances(state, new, target).await;
            }
            return Ok(());
        }
        old_n = old_n.saturating_sub(1);
        new_n += 1;
        set_instances(state, old, old_n).await;
        set_instances(state, new, new_n).await;
        wait_running(state, new, new_n, token).await?;
    }
}

/// Waits until `n` instances of `process_guid` are RUNNING; a crash or the step timeout fails.
async fn wait_running(
    state: &State,
    process_guid: &str,
    n: u32,
    token: &CancellationToken,
) -> Result<(), WaitError> {
    let deadline = Instant::now() + state.config.deploy_step_timeout;
    let filter = ActualLrpsRequest {
        process_guid: process_guid.to_owned(),
        ..ActualLrpsRequest::default()
    };
    loop {
        match state.bbs.actual_lrps(&filter).await {
            Ok(actuals) => {
                if let Some(crashed) = actuals
                    .iter()
                    .find(|a| a.state == ActualLrpState::Crashed || a.crash_count > 0)
                {
                    return Err(WaitError::Failed(format!(
                        "instance {} of {process_guid} crashed: {}",
                        crashed.index,
                        if crashed.crash_reason.is_empty() {
                            "no reason given"
                        } else {
                            &crashed.crash_reason
                        }
                    )));
                }
                let running = actuals
                    .iter()
                    .filter(|a| a.state == ActualLrpState::Running)
                    .count();
                if running >= n as usize {
                    return Ok(());
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list instances; retrying"),
        }
        if Instant::now() >= deadline {
            return Err(WaitError::Failed(format!(
                "{process_guid} did not have {n} running instances within {}s",
                state.config.deploy_step_timeout.as_secs()
            )));
        }
        tokio::select! {
            _ = token.cancelled() => return Err(WaitError::Cancelled),
            _ = tokio::time::sleep(state.config.deploy_poll_interval) => {}
        }
    }
}

/// The new version serves: it becomes the app's process guid, then the old is removed.
async fn finish_deployed(state: &State, app: &App, to: &str, old: Option<&str>) -> ApiResult<()> {
    let to_owned = to.to_owned();
    let guid = app.guid.clone();
    state
        .db
        .update_app(&app.name, move |current| {
            let Some(mut app) = current.filter(|a| a.guid == guid) else {
                return Ok((AppWrite::Keep, ()));
            };
            app.process_guid = Some(to_owned.clone());
            app.deployment = Some(DeploymentRecord {
                state: DeploymentState::Deployed,
                from: app.deployment.as_ref().and_then(|d| d.from.clone()),
                to: to_owned,
                error: None,
            });
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app), ()))
        })
        .await?;
    if let Some(old) = old {
        remove_lrp(state, old).await;
    }
    state
        .event(&app.guid, "deployed", format!("Version {to} is running"))
        .await;
    Ok(())
}

/// The new version failed: it is removed; the old (if any) keeps serving.
async fn finish_failed(
    state: &State,
    app: &App,
    to: &str,
    from: Option<(String, u32)>,
    reason: String,
) -> ApiResult<()> {
    if from.is_some() {
        remove_lrp(state, to).await;
    }
    set_deployment(
        state,
        app,
        to,
        DeploymentState::Failed,
        Some(reason.clone()),
    )
    .await?;
    state
        .event(
            &app.guid,
            "deploy_failed",
            format!("Deployment of {to} failed: {reason}"),
        )
        .await;
    Ok(())
}

async fn set_deployment(
    state: &State,
    app: &App,
    to: &str,
    deployment_state: DeploymentState,
    error: Option<String>,
) -> ApiResult<()> {
    let to = to.to_owned();
    let guid = app.guid.clone();
    state
        .db
        .update_app(&app.name, move |current| {
            let Some(mut app) = current.filter(|a| a.guid == guid) else {
                return Ok((AppWrite::Keep, ()));
            };
            match &mut app.deployment {
                Some(d) if d.to == to => {
                    d.state = deployment_state;
                    d.error = error;
                }
                _ => return Ok((AppWrite::Keep, ())),
            }
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app), ()))
        })
        .await
}

/// Sets a DesiredLRP's instances (best effort: the bulk pass repairs what this misses).
pub async fn set_instances(state: &State, process_guid: &str, instances: u32) {
    let request = UpdateDesiredLrpRequest {
        process_guid: process_guid.to_owned(),
        update: DesiredLrpUpdate {
            instances: Some(i32::try_from(instances).unwrap_or(i32::MAX)),
            ..DesiredLrpUpdate::default()
        },
        expected_modification_tag: None,
    };
    if let Err(e) = state.bbs.update_desired_lrp(&request).await {
        tracing::warn!(process_guid, instances, error = %e, "cannot set instances");
    }
}

/// Removes a DesiredLRP; one that is already gone is fine.
pub async fn remove_lrp(state: &State, process_guid: &str) {
    match state.bbs.remove_desired_lrp(process_guid).await {
        Ok(()) => {}
        Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => {}
        Err(e) => tracing::warn!(process_guid, error = %e, "cannot remove a desired LRP"),
    }
}
