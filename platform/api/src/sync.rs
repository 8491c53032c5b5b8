//! Keeping the BBS in step with the records (the CC-bridge's bulk pass) and following the
//! BBS's events.
//!
//! The bulk pass, every `sync_interval` and on start: the `apps` domain is kept fresh; a
//! STARTED app whose current process guid has no DesiredLRP gets it desired again (as that
//! version was launched), or its instance count set when it differs from the app's; a
//! DesiredLRP in the domain that no app claims is removed; unfinished stagings are polled.
//! Apps with a deployment under way are left to it.
//!
//! The event follower turns `actual_lrp_crashed` into app events, applies completed staging
//! tasks, and wakes the bulk pass when a claimed DesiredLRP is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use diego_bbs_client::EventStream;
use diego_model::requests::DesiredLrpsRequest;
use diego_model::{Event, TaskState};
use tokio_util::sync::CancellationToken;

use crate::deploy::{remove_lrp, set_instances};
use crate::error::ApiResult;
use crate::launcher::{app_guid_of, desired_lrp};
use crate::model::{App, DeploymentState, DesiredState, LifecycleKind};
use crate::state::State;
use crate::{APPS_DOMAIN, STAGING_DOMAIN, staging};

/// What one bulk pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Process guids desired again.
    pub desired: Vec<String>,
    /// Orphaned process guids removed.
    pub removed: Vec<String>,
    /// Process guids whose instance count was set to the app's.
    pub scaled: Vec<String>,
}

pub async fn bulk_pass(state: &Arc<State>) -> ApiResult<SyncReport> {
    let ttl = (state.config.sync_interval.as_secs() * 3).clamp(60, u64::from(u32::MAX)) as u32;
    state.bbs.upsert_domain(APPS_DOMAIN, ttl).await?;
    let apps = state.db.apps().await?;
    let lrps: BTreeMap<String, i32> = state
        .bbs
        .desired_lrps(&DesiredLrpsRequest {
            domain: APPS_DOMAIN.to_owned(),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|l| (l.process_guid, l.instances))
        .collect();
    let mut report = SyncReport::default();
    let mut claimed = BTreeSet::new();
    for app in &apps {
        claimed.extend(app.claimed_process_guids());
        if let Err(e) = staging::poll(state, app).await {
            tracing::warn!(app = %app.name, error = %e, "cannot poll staging");
        }
        if app.state != DesiredState::Started || state.deployments.is_active(&app.name) {
            continue;
        }
        let Some(pg) = &app.process_guid else {
            continue;
        };
        match lrps.get(pg) {
            Some(&n) if u32::try_from(n).ok() == Some(app.settings.instances) => {}
            Some(_) => {
                // Re-read: a scale or a deployment since the listing knows better.
                if let Some(app) = still_serving(state, &app.name, pg).await? {
                    tracing::info!(app = %app.name, process_guid = %pg, instances = app.settings.instances, "correcting the instance count");
                    set_instances(state, pg, app.settings.instances).await;
                    report.scaled.push(pg.clone());
                }
            }
            None => {
                if let Some(app) = still_serving(state, &app.name, pg).await? {
                    desire_missing(state, &app, pg, &mut report).await;
                }
            }
        }
    }
    // Claims are read again: an app created or deployed since the listing is not an orphan.
    let fresh: BTreeSet<String> = state
        .db
        .apps()
        .await?
        .iter()
        .flat_map(|a| a.claimed_process_guids())
        .collect();
    for pg in lrps
        .keys()
        .filter(|pg| !claimed.contains(*pg) && !fresh.contains(*pg))
    {
        let deploying = app_guid_of(pg).is_some_and(|guid| {
            apps.iter()
                .any(|a| a.guid == guid && state.deployments.is_active(&a.name))
        });
        if deploying {
            continue;
        }
        tracing::info!(process_guid = %pg, "removing an orphaned desired LRP");
        remove_lrp(state, pg).await;
        report.removed.push(pg.clone());
    }
    Ok(report)
}

/// The app `name` as it is now, if it is still STARTED, served by `process_guid`, with no
/// deployment under way: only then may the bulk pass act on its version.
async fn still_serving(state: &State, name: &str, process_guid: &str) -> ApiResult<Option<App>> {
    Ok(state.db.app(name).await?.filter(|app| {
        app.state == DesiredState::Started
            && app.process_guid.as_deref() == Some(process_guid)
            && !state.deployments.is_active(name)
            && app
                .deployment
                .as_ref()
                .is_none_or(|d| d.state != DeploymentState::Deploying || d.to == process_guid)
    }))
}

/// Desires the app's missing version again, as it was launched.
async fn desire_missing(state: &State, app: &App, pg: &str, report: &mut SyncReport) {
    let launched = match &app.process_launch {
        Some(launch) => launch.applied_to(app),
        None => app.clone(),
    };
    match desired_lrp(state, &launched, pg, app.settings.instances).await {
        Ok(lrp) => match state.bbs.desire_lrp(&lrp).await {
            Ok(()) => {
                tracing::info!(app = %app.name, process_guid = %pg, "desired LRP was missing; desired again");
                state
                    .event(
                        &app.guid,
                        "resync",
                        format!("{pg} was missing from the BBS; desired it again"),
                    )
                    .await;
                report.desired.push(pg.to_owned());
            }
            Err(e) => {
                tracing::warn!(process_guid = %pg, error = %e, "cannot desire a missing LRP")
            }
        },
        Err(e) => tracing::warn!(process_guid = %pg, error = %e, "cannot build a missing LRP"),
    }
}

/// The background loops until `shutdown`.
pub async fn run(state: Arc<State>, shutdown: CancellationToken) {
    let publisher = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { publish_lifecycles(&state, &shutdown).await })
    };
    let follower = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { follow_events(&state, &shutdown).await })
    };
    let poller = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { poll_stagings(&state, &shutdown).await })
    };
    loop {
        if let Err(e) = bulk_pass(&state).await {
            tracing::warn!(error = %e, "bulk pass failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(state.config.sync_interval) => {}
            _ = state.sync_now.notified() => {}
        }
    }
    for task in [publisher, follower, poller] {
        task.abort();
    }
}

/// Publishes both lifecycles to the blob store (retrying until it answers) and loads them.
async fn publish_lifecycles(state: &State, shutdown: &CancellationToken) {
    for kind in [LifecycleKind::Buildpack, LifecycleKind::Docker] {
        let mut delay = Duration::from_millis(200);
        loop {
            match state.lifecycles.publish(&kind, &state.blobs).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::info!(lifecycle = kind.as_str(), error = %e, "cannot publish the lifecycle yet")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        if let Err(e) = state.lifecycles.plugin(&kind, "", &state.blobs).await {
            tracing::warn!(lifecycle = kind.as_str(), error = %e, "cannot load the lifecycle");
        }
    }
}

/// Polls unfinished stagings (their callback may be lost).
async fn poll_stagings(state: &Arc<State>, shutdown: &CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(state.config.staging_poll_interval) => {}
        }
        let apps = match state.db.apps().await {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list apps");
                continue;
            }
        };
        for app in apps
            .iter()
            .filter(|a| a.staging.as_ref().is_some_and(|s| !s.state.is_done()))
        {
            if let Err(e) = staging::poll(state, app).await {
                tracing::debug!(app = %app.name, error = %e, "cannot poll staging");
            }
        }
    }
}

async fn follow_events(state: &Arc<State>, shutdown: &CancellationToken) {
    let mut subscription = state.bbs.subscribe(EventStream::All, None, None);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = subscription.next() => next,
        };
        match next {
            Ok((_, event)) => {
                if let Err(e) = on_event(state, event).await {
                    tracing::warn!(error = %e, "cannot apply a BBS event");
                }
            }
            Err(e) => {
                // The resume point is gone: start over from now (the bulk pass covers the gap).
                tracing::warn!(error = %e, "event stream failed; subscribing again");
                subscription = state.bbs.subscribe(EventStream::All, None, None);
                state.sync_now.notify_one();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn on_event(state: &Arc<State>, event: Event) -> ApiResult<()> {
    match event {
        Event::ActualLrpCrashed {
            process_guid,
            index,
            crash_count,
            crash_reason,
            ..
        } => {
            let Some(guid) = app_guid_of(&process_guid) else {
                return Ok(());
            };
            if state.db.app_by_guid(guid).await?.is_none() {
                return Ok(());
            }
            state
                .event_with(
                    guid,
                    "crash",
                    format!("Instance {index} of {process_guid} crashed ({crash_count} crashes): {crash_reason}"),
                    Some(index),
                    Some(crash_reason),
                )
                .await;
        }
        Event::TaskChanged { after, .. }
            if after.domain == STAGING_DOMAIN
                && matches!(after.state, TaskState::Completed | TaskState::Resolving) =>
        {
            staging::complete_from_task(state, &after).await?;
        }
        Event::DesiredLrpRemoved { desired_lrp } if desired_lrp.domain == APPS_DOMAIN => {
            let Some(guid) = app_guid_of(&desired_lrp.process_guid) else {
                return Ok(());
            };
            if let Some(app) = state.db.app_by_guid(guid).await?
                && app.state == DesiredState::Started
                && app.process_guid.as_deref() == Some(desired_lrp.process_guid.as_str())
            {
                state.sync_now.notify_one();
            }
        }
        _ => {}
    }
    Ok(())
}
