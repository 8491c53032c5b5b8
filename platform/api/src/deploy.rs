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
//!
//! A deployment is recorded (DEPLOYING, `to` the new process guid) in the same write that
//! decides it, before the request that set it in motion is answered; the rolling steps run in
//! the background. Every write of a deployment requires the app to be STARTED still and the
//! record to name the same `to`: a stop or a newer deployment wins, and the stale version is
//! removed. When a deployment ends, the live instance count is set to the app's (a scale
//! during the deployment is not lost) and droplets no version uses are deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use diego_model::desired_lrp::DesiredLrpUpdate;
use diego_model::requests::{ActualLrpsRequest, UpdateDesiredLrpRequest};
use diego_model::{ActualLrpState, ErrorType};
use tokio_util::sync::CancellationToken;

use crate::blobs::droplet_key;
use crate::db::AppWrite;
use crate::error::ApiResult;
use crate::launcher::{desired_lrp, process_guid};
use crate::model::{App, DeploymentRecord, DeploymentState, DesiredState, Launch};
use crate::state::{State, now_ns};

#[derive(Debug)]
struct Slot {
    token: CancellationToken,
    /// The generation of the deployment that owns the slot (`None`: only reservations).
    owner: Option<u64>,
    /// Reservations not yet spawned or dropped.
    pending: usize,
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

    /// Whether a deployment of `app_name` is under way (or about to be recorded).
    pub fn is_active(&self, app_name: &str) -> bool {
        self.slots().contains_key(app_name)
    }

    /// Marks the app's slot as about to record a deployment, so the bulk pass leaves the app
    /// alone from before the record is written until its runner ends. Nothing is cancelled
    /// until [`Reservation::spawn`]; unspawned, the reservation is released on drop.
    pub fn reserve(state: &Arc<State>, app_name: &str) -> Reservation {
        let generation = state
            .deployments
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut slots = state.deployments.slots();
        let slot = slots.entry(app_name.to_owned()).or_insert_with(|| Slot {
            token: CancellationToken::new(),
            owner: None,
            pending: 0,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        });
        slot.pending += 1;
        Reservation {
            state: state.clone(),
            name: app_name.to_owned(),
            generation,
            spawned: false,
        }
    }

    /// A reservation ends (spawned or not); the slot goes once nothing holds it.
    fn unreserve(&self, app_name: &str) {
        let mut slots = self.slots();
        if let Some(slot) = slots.get_mut(app_name) {
            slot.pending = slot.pending.saturating_sub(1);
            if slot.pending == 0 && slot.owner.is_none() {
                slots.remove(app_name);
            }
        }
    }

    /// Makes the deployment `generation` the slot's owner, cancelling the one before;
    /// returns its token and the lock it runs under.
    fn take(
        &self,
        app_name: &str,
        generation: u64,
    ) -> (CancellationToken, Arc<tokio::sync::Mutex<()>>) {
        let mut slots = self.slots();
        let slot = slots.entry(app_name.to_owned()).or_insert_with(|| Slot {
            token: CancellationToken::new(),
            owner: None,
            pending: 0,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        });
        slot.token.cancel();
        slot.token = CancellationToken::new();
        slot.owner = Some(generation);
        (slot.token.clone(), slot.lock.clone())
    }

    /// The deployment `generation` ended.
    fn release(&self, app_name: &str, generation: u64) {
        let mut slots = self.slots();
        if let Some(slot) = slots.get_mut(app_name)
            && slot.owner == Some(generation)
        {
            slot.owner = None;
            if slot.pending == 0 {
                slots.remove(app_name);
            }
        }
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

/// An app's deployment slot, taken before the deployment is recorded (so the bulk pass never
/// sees a recorded deployment without its runner).
#[derive(Debug)]
pub struct Reservation {
    state: Arc<State>,
    name: String,
    generation: u64,
    spawned: bool,
}

impl Reservation {
    /// Runs the recorded deployment to `to` in the background.
    pub fn spawn(mut self, to: String) {
        let state = self.state.clone();
        let name = self.name.clone();
        let generation = self.generation;
        let (token, lock) = state.deployments.take(&name, generation);
        self.spawned = true;
        state.deployments.unreserve(&name);
        tokio::spawn(async move {
            {
                let _running = lock.lock().await;
                if !token.is_cancelled()
                    && let Err(e) = run(&state, &name, &to, &token).await
                {
                    tracing::warn!(app = %name, error = %e, "deployment failed");
                }
            }
            state.deployments.release(&name, generation);
            reconcile_instances(&state, &name).await;
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.spawned {
            self.state.deployments.unreserve(&self.name);
        }
    }
}

/// Records a deployment of the app's droplet with its settings on `app` (a new version,
/// DEPLOYING); a fresh start (nothing runs) makes the new version the app's at once. Returns
/// the new process guid, or `None` if there is no droplet.
pub fn record(app: &mut App) -> Option<String> {
    let launch = Launch::of(app)?;
    app.version += 1;
    let to = process_guid(&app.guid, app.version);
    let from = app.process_guid.clone();
    if from.is_none() {
        app.process_guid = Some(to.clone());
        app.process_launch = Some(launch.clone());
    }
    app.deployment = Some(DeploymentRecord {
        state: DeploymentState::Deploying,
        from,
        to: to.clone(),
        error: None,
        launch: Some(launch),
    });
    app.updated_at = now_ns();
    Some(to)
}

/// Deploys the app's droplet with its settings: recorded before this returns (the answer is
/// the app with its DEPLOYING record), rolled out in the background. `None`: the app is not
/// STARTED or has no droplet, so nothing was set in motion.
pub async fn start(state: &Arc<State>, app_name: &str) -> ApiResult<Option<App>> {
    let reservation = Deployments::reserve(state, app_name);
    let recorded = state
        .db
        .update_app(app_name, |current| {
            let Some(mut app) = current.filter(|a| a.state == DesiredState::Started) else {
                return Ok((AppWrite::Keep, None));
            };
            Ok(match record(&mut app) {
                Some(to) => (AppWrite::Put(app.clone()), Some((app, to))),
                None => (AppWrite::Keep, None),
            })
        })
        .await?;
    let Some((app, to)) = recorded else {
        return Ok(None);
    };
    reservation.spawn(to);
    Ok(Some(app))
}

/// Why waiting for instances ended early.
enum WaitError {
    Cancelled,
    Failed(String),
}

/// Whether the app is STARTED and its deployment record still names `to`.
fn still_ours(app: &App, to: &str) -> bool {
    app.state == DesiredState::Started
        && app
            .deployment
            .as_ref()
            .is_some_and(|d| d.to == to && d.state == DeploymentState::Deploying)
}

/// Reads the app; `None` (and `to` removed, if the app was stopped or deleted) when the
/// deployment to `to` is no longer wanted.
async fn reread(state: &State, name: &str, guid: &str, to: &str) -> ApiResult<Option<App>> {
    match state.db.app(name).await? {
        Some(app) if app.guid == guid && still_ours(&app, to) => Ok(Some(app)),
        Some(app) if app.guid == guid && app.state == DesiredState::Started => Ok(None),
        _ => {
            remove_lrp(state, to).await;
            Ok(None)
        }
    }
}

async fn run(state: &Arc<State>, name: &str, to: &str, token: &CancellationToken) -> ApiResult<()> {
    let Some(app) = state.db.app(name).await? else {
        return Ok(());
    };
    if !still_ours(&app, to) {
        return Ok(());
    }
    let Some(deployment) = app.deployment.clone() else {
        return Ok(());
    };
    let Some(launch) = deployment.launch.clone().or_else(|| Launch::of(&app)) else {
        return Ok(());
    };
    let from = match &deployment.from {
        Some(pg) => match state.bbs.desired_lrp(pg).await {
            Ok(lrp) => Some((pg.clone(), u32::try_from(lrp.instances).unwrap_or(0))),
            Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let fresh = from.is_none();
    let guid = app.guid.clone();
    let app = if fresh && deployment.from.is_some() {
        // The recorded version is gone from the BBS: nothing to roll from, start afresh.
        let to_owned = to.to_owned();
        let launch = launch.clone();
        let updated = state
            .db
            .update_app(name, move |current| {
                let Some(mut app) = current.filter(|a| a.guid == guid && still_ours(a, &to_owned))
                else {
                    return Ok((AppWrite::Keep, None));
                };
                app.process_guid = Some(to_owned.clone());
                app.process_launch = Some(launch);
                if let Some(d) = &mut app.deployment {
                    d.from = None;
                }
                app.updated_at = now_ns();
                Ok((AppWrite::Put(app.clone()), Some(app)))
            })
            .await?;
        match updated {
            Some(app) => app,
            None => return Ok(()),
        }
    } else {
        app
    };
    state
        .event(
            &app.guid,
            "deploy",
            format!("Deploying version {} ({to})", app.version),
        )
        .await;

    let target = app.settings.instances;
    let first = if fresh { target } else { target.min(1) };
    let lrp = match desired_lrp(state, &launch.applied_to(&app), to, first).await {
        Ok(lrp) => lrp,
        Err(e) => return finish_failed(state, &app, to, from, e.message).await,
    };
    if token.is_cancelled() || reread(state, name, &app.guid, to).await?.is_none() {
        return Ok(());
    }
    if let Err(e) = state.bbs.desire_lrp(&lrp).await {
        return finish_failed(state, &app, to, from, format!("cannot desire {to}: {e}")).await;
    }
    // A stop may have listed the app's LRPs just before this one was desired.
    if reread(state, name, &app.guid, to).await?.is_none() {
        return Ok(());
    }
    let Some((old, old_instances)) = from else {
        return match wait_running(state, to, target, token).await {
            Ok(()) => finish_deployed(state, &app, to, None, launch).await,
            Err(WaitError::Cancelled) => Ok(()),
            // The first version stays desired (Diego keeps restarting it): nothing to go back to.
            Err(WaitError::Failed(reason)) => {
                set_deployment(
                    state,
                    &app,
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
        };
    };
    match roll(state, &app, &old, old_instances, to, first, token).await {
        Ok(()) => finish_deployed(state, &app, to, Some(&old), launch).await,
        Err(WaitError::Cancelled) => {
            remove_lrp(state, to).await;
            set_instances(state, &old, old_instances).await;
            Ok(())
        }
        Err(WaitError::Failed(reason)) => {
            set_instances(state, &old, old_instances).await;
            finish_failed(state, &app, to, Some((old, old_instances)), reason).await
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
            Ok(Some(a)) if a.guid == app.guid && still_ours(&a, new) => a.settings.instances,
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

/// The new version serves: it becomes the app's process guid, then the old is removed and
/// droplets no version uses are deleted. A stop that came first wins: the new one is removed.
async fn finish_deployed(
    state: &State,
    app: &App,
    to: &str,
    old: Option<&str>,
    launch: Launch,
) -> ApiResult<()> {
    let to_owned = to.to_owned();
    let guid = app.guid.clone();
    let outcome = state
        .db
        .update_app(&app.name, move |current| {
            let Some(mut app) = current.filter(|a| a.guid == guid) else {
                return Ok((AppWrite::Keep, Finish::Stopped));
            };
            if app.state != DesiredState::Started {
                return Ok((AppWrite::Keep, Finish::Stopped));
            }
            if !still_ours(&app, &to_owned) {
                return Ok((AppWrite::Keep, Finish::Superseded));
            }
            app.process_guid = Some(to_owned.clone());
            app.process_launch = Some(launch.clone());
            app.deployment = Some(DeploymentRecord {
                state: DeploymentState::Deployed,
                from: app.deployment.as_ref().and_then(|d| d.from.clone()),
                to: to_owned,
                error: None,
                launch: Some(launch),
            });
            app.updated_at = now_ns();
            Ok((AppWrite::Put(app), Finish::Done))
        })
        .await?;
    match outcome {
        Finish::Done => {}
        Finish::Stopped => {
            remove_lrp(state, to).await;
            return Ok(());
        }
        Finish::Superseded => return Ok(()),
    }
    if let Some(old) = old {
        remove_lrp(state, old).await;
    }
    state
        .event(&app.guid, "deployed", format!("Version {to} is running"))
        .await;
    prune_droplets(state, &app.name).await;
    Ok(())
}

/// How a deployment's last write went.
enum Finish {
    Done,
    /// The app was stopped or deleted meanwhile.
    Stopped,
    /// A newer deployment took over.
    Superseded,
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

/// Deletes the app's droplets that nothing uses: not the current one, not what its version or
/// a deployment under way runs, not what an unfinished staging uploads. Best effort.
pub async fn prune_droplets(state: &State, app_name: &str) {
    let app = match state.db.app(app_name).await {
        Ok(Some(app)) => app,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(app = app_name, error = %e, "cannot read the app to prune droplets");
            return;
        }
    };
    let mut keep: Vec<String> = Vec::new();
    keep.extend(app.droplet.iter().map(|d| d.key.clone()));
    keep.extend(app.process_launch.iter().map(|l| l.droplet.key.clone()));
    if let Some(d) = app
        .deployment
        .as_ref()
        .filter(|d| d.state == DeploymentState::Deploying)
    {
        keep.extend(d.launch.iter().map(|l| l.droplet.key.clone()));
    }
    if let Some(s) = app.staging.as_ref().filter(|s| !s.state.is_done()) {
        keep.push(droplet_key(&app.guid, s.droplet_number));
    }
    let prefix = format!("droplets/{}/", app.guid);
    let keys = match state.blobs.list(&prefix).await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(app = app_name, error = %e, "cannot list droplets");
            return;
        }
    };
    for key in keys.into_iter().filter(|k| !keep.contains(k)) {
        match state.blobs.delete(&key).await {
            Ok(()) => tracing::debug!(%key, "deleted an unused droplet"),
            Err(e) => tracing::warn!(%key, error = %e, "cannot delete an unused droplet"),
        }
    }
}

/// After a deployment: the live version runs as many instances as the app asks for now (a
/// scale during the deployment may have been applied to a version that no longer serves).
async fn reconcile_instances(state: &State, app_name: &str) {
    let Ok(Some(app)) = state.db.app(app_name).await else {
        return;
    };
    if app.state != DesiredState::Started || state.deployments.is_active(app_name) {
        return;
    }
    let Some(pg) = &app.process_guid else {
        return;
    };
    if let Ok(lrp) = state.bbs.desired_lrp(pg).await
        && u32::try_from(lrp.instances).ok() != Some(app.settings.instances)
    {
        set_instances(state, pg, app.settings.instances).await;
    }
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
