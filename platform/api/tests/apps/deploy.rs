//! Deployments (first, rolling, failed), scaling and the bulk pass.

use std::time::Duration;

use diego_apps_api::{AppView, DeploymentState, ScaleRequest};
use diego_model::requests::DesiredLrpsRequest;

use crate::{
    Platform, actuals, crash_instance, events_with, eventually, finish_staging, pushed,
    run_instance, run_unclaimed,
};

/// Pushes `name`, completes its staging and runs its first version's `instances` instances.
pub async fn running(p: &Platform, name: &str, instances: u32) -> anyhow::Result<AppView> {
    let app = pushed(p, name).await?;
    p.client
        .scale(
            name,
            &ScaleRequest {
                instances: Some(instances),
                ..Default::default()
            },
        )
        .await?;
    finish_staging(p, &app).await?;
    let pg = format!("{}-1", app.guid);
    eventually("v1 desired", Duration::from_secs(15), || async {
        p.bbs().desired_lrp(&pg).await.ok()
    })
    .await?;
    for i in 0..instances as i32 {
        run_instance(p.bbs(), &pg, i).await?;
    }
    eventually("v1 deployed", Duration::from_secs(10), || async {
        let v = p.client.app(name).await.ok()?;
        (v.deployment.as_ref()?.state == DeploymentState::Deployed).then_some(v)
    })
    .await
}

pub async fn desired_guids(p: &Platform) -> Vec<String> {
    let mut guids: Vec<String> = p
        .bbs()
        .desired_lrps(&DesiredLrpsRequest::default())
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.process_guid)
        .collect();
    guids.sort();
    guids
}

#[tokio::test]
async fn scale_updates_instances_in_place() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = running(&p, "scaled", 1).await?;
    let pg = app.process_guid.clone().unwrap();
    let view = p
        .client
        .scale(
            "scaled",
            &ScaleRequest {
                instances: Some(3),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(view.settings.instances, 3);
    assert_eq!(p.bbs().desired_lrp(&pg).await?.instances, 3);
    assert_eq!(actuals(p.bbs(), &pg).await.len(), 3);
    assert_eq!(view.version, 1, "instances need no new version");
    events_with(
        &p,
        "scaled",
        &[&|e| e.kind == "scale" && e.message.contains("3 instances")],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_rolling_update_keeps_a_running_instance_throughout() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = running(&p, "rolling", 2).await?;
    let v1 = format!("{}-1", app.guid);
    let v2 = format!("{}-2", app.guid);
    let v1_routes = p.bbs().desired_lrp(&v1).await?.routes;
    // New settings need new containers: they wait for the next start, which rolls out
    // version 2 (and says so in its answer).
    let updated = p
        .client
        .set_env(
            "rolling",
            &[("COLOR".to_owned(), Some("blue".to_owned()))].into(),
        )
        .await?;
    assert_eq!(updated.version, 1, "set-env does not redeploy");
    assert_eq!(
        updated.deployment.as_ref().unwrap().state,
        DeploymentState::Deployed
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(desired_guids(&p).await, vec![v1.clone()], "nothing new yet");
    let started = p.client.start("rolling").await?;
    let deployment = started.deployment.as_ref().unwrap();
    assert_eq!(deployment.state, DeploymentState::Deploying);
    assert_eq!(deployment.to, v2, "the answer names the new version");
    assert_eq!(deployment.from.as_deref(), Some(v1.as_str()));
    assert_eq!(started.process_guid.as_deref(), Some(v1.as_str()));
    let max_v2_desired = std::sync::atomic::AtomicUsize::new(0);
    let done = eventually("v2 deployed", Duration::from_secs(20), || {
        let p = &p;
        let (v1, v2) = (v1.clone(), v2.clone());
        let max = &max_v2_desired;
        async move {
            let running = |a: &[diego_model::ActualLrp]| {
                a.iter()
                    .filter(|x| x.state == diego_model::ActualLrpState::Running)
                    .count()
            };
            let old = actuals(p.bbs(), &v1).await;
            let new = actuals(p.bbs(), &v2).await;
            assert!(
                running(&old) + running(&new) >= 1,
                "no running instance: {old:?} {new:?}"
            );
            max.fetch_max(new.len(), std::sync::atomic::Ordering::Relaxed);
            // The rep: start whatever v2 instance was just desired.
            run_unclaimed(p.bbs(), &v2).await.ok()?;
            let v = p.client.app("rolling").await.ok()?;
            (v.deployment.as_ref()?.state == DeploymentState::Deployed
                && v.process_guid.as_deref() == Some(v2.as_str()))
            .then_some(v)
        }
    })
    .await?;
    assert_eq!(max_v2_desired.into_inner(), 2);
    assert_eq!(done.version, 2);
    // DEPLOYED is written first (the new version serves), the old one is removed right after
    eventually("the old version removed", Duration::from_secs(10), || {
        let (p, v2) = (&p, v2.clone());
        async move { (desired_guids(p).await == vec![v2]).then_some(()) }
    })
    .await?;
    let lrp = p.bbs().desired_lrp(&v2).await?;
    assert_eq!(lrp.instances, 2);
    assert!(serde_json::to_string(&lrp.action)?.contains("COLOR"));
    assert_eq!(lrp.routes, v1_routes, "old and new share routes");
    events_with(
        &p,
        "rolling",
        &[&|e| e.kind == "deployed" && e.message.contains(&v2)],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_crashing_new_version_is_removed_and_the_old_keeps_serving() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = running(&p, "flaky", 2).await?;
    let v1 = format!("{}-1", app.guid);
    let v2 = format!("{}-2", app.guid);
    p.client
        .scale(
            "flaky",
            &ScaleRequest {
                memory_mb: Some(512),
                ..Default::default()
            },
        )
        .await?;
    eventually("v2 desired", Duration::from_secs(10), || async {
        p.bbs().desired_lrp(&v2).await.ok()
    })
    .await?;
    crash_instance(p.bbs(), &v2, 0, "Exited with status 1").await?;
    let failed = eventually("FAILED", Duration::from_secs(10), || async {
        let v = p.client.app("flaky").await.ok()?;
        (v.deployment.as_ref()?.state == DeploymentState::Failed).then_some(v)
    })
    .await?;
    let error = failed.deployment.unwrap().error.unwrap();
    assert!(
        error.contains("crashed") && error.contains("Exited with status 1"),
        "{error}"
    );
    assert_eq!(failed.process_guid.as_deref(), Some(v1.as_str()));
    // FAILED is written first, the failed version is removed right after
    eventually("v2 removed", Duration::from_secs(10), || {
        let (p, v1) = (&p, v1.clone());
        async move { (desired_guids(p).await == vec![v1]).then_some(()) }
    })
    .await?;
    assert_eq!(p.bbs().desired_lrp(&v1).await?.instances, 2);
    let running = actuals(p.bbs(), &v1).await;
    assert!(
        running
            .iter()
            .all(|a| a.state == diego_model::ActualLrpState::Running),
        "{running:?}"
    );
    events_with(
        &p,
        "flaky",
        &[&|e| e.kind == "deploy_failed", &|e| {
            e.kind == "crash" && e.exit_description.as_deref() == Some("Exited with status 1")
        }],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_bulk_pass_desires_what_vanished_and_removes_orphans() -> anyhow::Result<()> {
    // No background loops: only the passes this test runs repair anything.
    let p = Platform::start(false).await?;
    let app = running(&p, "synced", 1).await?;
    let pg = app.process_guid.clone().unwrap();
    let lrp = p.bbs().desired_lrp(&pg).await?;

    p.bbs().remove_desired_lrp(&pg).await?;
    let mut orphan = lrp.clone();
    orphan.process_guid = "not-an-app-7".into();
    p.bbs().desire_lrp(&orphan).await?;
    let mut ghost = lrp.clone();
    ghost.process_guid = format!("{}-9", app.guid);
    p.bbs().desire_lrp(&ghost).await?;

    let report = eventually(
        "a pass that re-desires",
        Duration::from_secs(15),
        || async {
            let r = p.api.sync_once().await.ok()?;
            (!r.desired.is_empty()).then_some(r)
        },
    )
    .await?;
    assert_eq!(report.desired, vec![pg.clone()]);
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![ghost.process_guid.clone(), "not-an-app-7".to_owned()]
    );
    assert_eq!(desired_guids(&p).await, vec![pg.clone()]);
    let again = p.bbs().desired_lrp(&pg).await?;
    assert_eq!(again.routes, lrp.routes);
    assert_eq!(again.action, lrp.action);
    assert!(p.bbs().domains().await?.contains(&"apps".to_owned()));
    // A second pass has nothing to do.
    assert_eq!(p.api.sync_once().await?, Default::default());
    Ok(())
}
