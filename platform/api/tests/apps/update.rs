//! What start, restart, PUT, scale and set-env set in motion, concurrent requests, droplet
//! clean-up, upload and task limits, and the bulk pass's instance correction.

use std::time::Duration;

use diego_apps_api::{
    AppSettings, AppView, ArchiveFormat, DeploymentState, ScaleRequest, StagingState, TaskRequest,
};
use diego_model::requests::CompleteTaskRequest;

use crate::deploy::{desired_guids, running};
use crate::{
    Platform, app_files, buildpack_files, eventually, finish_staging, pushed, run_instance,
    run_unclaimed, tgz_of, zip_of,
};

/// Runs `process_guid`'s instances (as a rep) until the app's deployment to it is DEPLOYED.
async fn deployed(p: &Platform, name: &str, process_guid: &str) -> anyhow::Result<AppView> {
    eventually("DEPLOYED", Duration::from_secs(15), || async {
        run_unclaimed(p.bbs(), process_guid).await.ok()?;
        let v = p.client.app(name).await.ok()?;
        let d = v.deployment.as_ref()?;
        (d.state == DeploymentState::Deployed && d.to == process_guid).then_some(v)
    })
    .await
}

fn deploying_to(view: &AppView) -> Option<&str> {
    view.deployment
        .as_ref()
        .filter(|d| d.state == DeploymentState::Deploying)
        .map(|d| d.to.as_str())
}

#[tokio::test]
async fn start_and_restart_answer_what_they_set_in_motion_and_put_waits_for_them()
-> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = running(&p, "answer", 1).await?;
    let v = |n: u64| format!("{}-{n}", app.guid);

    // New settings on a running app: recorded, not deployed.
    let put = p
        .client
        .put_app(
            "answer",
            &AppSettings {
                memory_mb: Some(512),
                command: Some("./serve".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(put.version, 1);
    assert_eq!(deploying_to(&put), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(desired_guids(&p).await, vec![v(1)]);
    assert_eq!(p.bbs().desired_lrp(&v(1)).await?.memory_mb, 256);

    // start deploys them, and its answer says so.
    let started = p.client.start("answer").await?;
    assert_eq!(deploying_to(&started), Some(v(2).as_str()), "{started:?}");
    assert_eq!(started.version, 2);
    deployed(&p, "answer", &v(2)).await?;
    assert_eq!(p.bbs().desired_lrp(&v(2)).await?.memory_mb, 512);

    // Nothing changed: the answer is the app as it is.
    let same = p.client.start("answer").await?;
    assert_eq!(same.version, 2);
    assert_eq!(same.deployment.unwrap().state, DeploymentState::Deployed);

    // A restart always deploys.
    let restarted = p.client.restart("answer").await?;
    assert_eq!(deploying_to(&restarted), Some(v(3).as_str()));
    deployed(&p, "answer", &v(3)).await?;

    // New bits: the answer has the new PENDING staging.
    let before = restarted.staging.unwrap().task_guid;
    p.client
        .upload_bits(
            "answer",
            tgz_of(&[("server.py", "print('v2')\n")]),
            ArchiveFormat::TarGz,
        )
        .await?;
    let staged = p.client.start("answer").await?;
    let staging = staged.staging.clone().unwrap();
    assert_eq!(staging.state, StagingState::Pending);
    assert_ne!(staging.task_guid, before);
    p.bbs().task(&staging.task_guid).await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_starts_share_one_staging_and_a_replaced_one_is_cancelled() -> anyhow::Result<()>
{
    let p = Platform::start(true).await?;
    let first = pushed(&p, "racy").await?;
    let old_task = first.staging.unwrap().task_guid;
    p.client
        .upload_bits(
            "racy",
            tgz_of(&[("server.py", "print('new')\n")]),
            ArchiveFormat::TarGz,
        )
        .await?;
    let (a, b) = tokio::join!(p.client.start("racy"), p.client.start("racy"));
    let (a, b) = (a?.staging.unwrap(), b?.staging.unwrap());
    assert_eq!(a.task_guid, b.task_guid, "one staging for the same bits");
    assert_ne!(a.task_guid, old_task);
    let view = p.client.app("racy").await?;
    let staging = view.staging.unwrap();
    assert_eq!(staging.task_guid, a.task_guid);
    assert!(!staging.state.is_done(), "{staging:?}");
    p.bbs().task(&a.task_guid).await?;
    // The replaced staging's task was cancelled (and is then cleaned up).
    eventually(
        "the old task cancelled",
        Duration::from_secs(10),
        || async {
            match p.bbs().task(&old_task).await {
                Ok(t) => t.failed.then_some(()),
                Err(_) => Some(()),
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_scale_during_a_deployment_is_applied_when_it_ends() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = pushed(&p, "growing").await?;
    finish_staging(&p, &app).await?;
    let v1 = format!("{}-1", app.guid);
    eventually("v1 desired", Duration::from_secs(15), || async {
        p.bbs().desired_lrp(&v1).await.ok()
    })
    .await?;
    let scaled = p
        .client
        .scale(
            "growing",
            &ScaleRequest {
                instances: Some(3),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(deploying_to(&scaled), Some(v1.as_str()));
    run_instance(p.bbs(), &v1, 0).await?;
    eventually("3 instances desired", Duration::from_secs(10), || async {
        let lrp = p.bbs().desired_lrp(&v1).await.ok()?;
        (lrp.instances == 3).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_bulk_pass_corrects_the_instance_count() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    let app = running(&p, "counted", 1).await?;
    let pg = app.process_guid.clone().unwrap();
    // Let the deployment's own clean-up finish first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.bbs()
        .update_desired_lrp(&diego_model::requests::UpdateDesiredLrpRequest {
            process_guid: pg.clone(),
            update: diego_model::desired_lrp::DesiredLrpUpdate {
                instances: Some(4),
                ..Default::default()
            },
            expected_modification_tag: None,
        })
        .await?;
    let report = p.api.sync_once().await?;
    assert_eq!(report.scaled, vec![pg.clone()]);
    assert_eq!(p.bbs().desired_lrp(&pg).await?.instances, 1);
    assert_eq!(p.api.sync_once().await?, Default::default());
    Ok(())
}

#[tokio::test]
async fn concurrent_set_env_calls_lose_nothing() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    p.client.put_app("envy", &AppSettings::default()).await?;
    let calls = (0..16).map(|i| {
        let client = p.client.clone();
        async move {
            client
                .set_env("envy", &[(format!("K{i}"), Some(i.to_string()))].into())
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        r?;
    }
    let env = p.client.app("envy").await?.settings.env;
    assert_eq!(env.len(), 16, "{env:?}");
    Ok(())
}

#[tokio::test]
async fn droplets_no_version_uses_are_deleted() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = running(&p, "pruned", 1).await?;
    let prefix = format!("droplets/{}/", app.guid);
    let keys = |p: &Platform| {
        let prefix = prefix.clone();
        let blobs = p.blobs.clone();
        async move {
            let mut k: Vec<String> = blobs
                .list(&prefix)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|b| b.key)
                .collect();
            k.sort();
            k
        }
    };
    p.client
        .upload_bits(
            "pruned",
            tgz_of(&[("server.py", "print('2')\n")]),
            ArchiveFormat::TarGz,
        )
        .await?;
    let restaged = p.client.start("pruned").await?;
    finish_staging(&p, &restaged).await?;
    let v2 = format!("{}-2", app.guid);
    deployed(&p, "pruned", &v2).await?;
    let only_2 = vec![format!("{prefix}2.tgz")];
    eventually("droplet 1 deleted", Duration::from_secs(10), || async {
        (keys(&p).await == only_2).then_some(())
    })
    .await?;

    // A failed staging's upload is deleted too.
    p.client
        .upload_bits(
            "pruned",
            tgz_of(&[("server.py", "print('3')\n")]),
            ArchiveFormat::TarGz,
        )
        .await?;
    let staging = p.client.start("pruned").await?.staging.unwrap();
    p.blobs
        .put_bytes(&format!("{prefix}3.tgz"), b"half a droplet".to_vec())
        .await?;
    p.bbs().start_task(&staging.task_guid, "cell-1").await?;
    p.bbs()
        .complete_task(&CompleteTaskRequest {
            task_guid: staging.task_guid.clone(),
            cell_id: "cell-1".into(),
            failed: true,
            failure_reason: "compile failed".into(),
            result: String::new(),
        })
        .await?;
    eventually("droplet 3 deleted", Duration::from_secs(10), || async {
        (keys(&p).await == only_2).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn restart_restages_only_when_the_sources_changed() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    p.client
        .put_buildpack("python", None, buildpack_files(), ArchiveFormat::Zip)
        .await?;
    p.client
        .put_app(
            "named",
            &AppSettings {
                buildpacks: Some(vec!["python".into()]),
                ..Default::default()
            },
        )
        .await?;
    p.client
        .upload_bits("named", app_files(), ArchiveFormat::TarGz)
        .await?;
    let app = p.client.start("named").await?;
    let task = app.staging.clone().unwrap().task_guid;
    finish_staging(&p, &app).await?;
    let v = |n: u64| format!("{}-{n}", app.guid);
    eventually("v1 desired", Duration::from_secs(15), || async {
        p.bbs().desired_lrp(&v(1)).await.ok()
    })
    .await?;
    deployed(&p, "named", &v(1)).await?;

    // An unrelated buildpack is added: a restart runs the same droplet.
    p.client
        .put_buildpack("ruby", Some(1), buildpack_files(), ArchiveFormat::Zip)
        .await?;
    let restarted = p.client.restart("named").await?;
    assert_eq!(restarted.staging.as_ref().unwrap().task_guid, task);
    assert_eq!(deploying_to(&restarted), Some(v(2).as_str()));
    deployed(&p, "named", &v(2)).await?;

    // The named buildpack is deleted: a restart still runs the droplet it staged.
    p.client.delete_buildpack("python").await?;
    let restarted = p.client.restart("named").await?;
    assert_eq!(restarted.staging.as_ref().unwrap().task_guid, task);
    assert_eq!(deploying_to(&restarted), Some(v(3).as_str()));
    deployed(&p, "named", &v(3)).await?;
    Ok(())
}

#[tokio::test]
async fn a_stop_racing_a_deployment_leaves_nothing_desired() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = running(&p, "halted", 1).await?;
    let v2 = format!("{}-2", app.guid);
    let (restarted, stopped) = tokio::join!(p.client.restart("halted"), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.client.stop("halted").await
    });
    restarted?;
    let stopped = stopped?;
    assert_eq!(stopped.process_guid, None);
    eventually("nothing desired", Duration::from_secs(10), || async {
        desired_guids(&p).await.is_empty().then_some(())
    })
    .await?;
    assert!(p.bbs().desired_lrp(&v2).await.is_err());
    let view = p.client.app("halted").await?;
    assert_eq!(view.state, diego_apps_api::DesiredState::Stopped);
    Ok(())
}

#[tokio::test]
async fn over_limit_archives_and_task_commands_are_refused_with_the_cap() -> anyhow::Result<()> {
    let p = Platform::start_with(false, |c| c.max_upload_bytes = 256 * 1024).await?;
    p.client.put_app("capped", &AppSettings::default()).await?;
    // A small zip that unpacks past the upload cap.
    let zeros = "\0".repeat(1 << 20);
    let bomb = zip_of(&[("zeros", zeros.as_str())]);
    assert!(bomb.len() < 256 * 1024);
    let e = p
        .client
        .upload_bits("capped", bomb, ArchiveFormat::Zip)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    assert!(e.to_string().contains("262144"), "{e}");

    let e = p
        .client
        .run_task(
            "capped",
            &TaskRequest {
                command: "x".repeat(20 * 1024),
                name: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert_eq!(e.code(), Some("command_too_long"));
    Ok(())
}
