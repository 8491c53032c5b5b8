//! Staging tasks, their completion, the DesiredLRP built from the droplet, and delete.

use std::time::Duration;

use diego_apps_api::{AppSettings, DeploymentState, StagingState};
use diego_model::Action;
use diego_model::requests::{CompleteTaskRequest, DesiredLrpsRequest, TasksRequest};

use crate::{Platform, events_with, eventually, finish_staging, pushed};

#[tokio::test]
async fn start_stages_then_desires_the_droplet() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = pushed(&p, "hello").await?;
    let staging = app.staging.clone().expect("staging under way");
    assert_eq!(staging.state, StagingState::Pending);

    let task = p.bbs().task(&staging.task_guid).await?;
    assert_eq!(task.domain, "staging");
    let def = &task.task_definition;
    assert_eq!(def.rootfs, "preloaded:cflinuxfs4");
    assert_eq!(def.log_guid, app.guid);
    assert_eq!(
        def.completion_callback_url,
        format!(
            "{}/v1/internal/staging/{}/completed",
            p.url, staging.task_guid
        )
    );
    let ls = def.lifecycle_staging.as_ref().expect("lifecycle_staging");
    assert_eq!(
        ls.lifecycle_url,
        format!("{}/v1/blobs/lifecycles/{}.wasm", p.url, ls.lifecycle_sha256)
    );
    assert_eq!(ls.lifecycle_sha256, app.lifecycle.sha256);
    let component = p
        .blobs
        .info(&format!("lifecycles/{}.wasm", ls.lifecycle_sha256))
        .await?;
    assert_eq!(
        component.sha256, ls.lifecycle_sha256,
        "the component is published"
    );
    let bits = app.bits.as_ref().unwrap();
    assert_eq!(ls.app_bits_url, format!("{}/v1/blobs/{}", p.url, bits.key));
    assert_eq!(
        ls.droplet_upload_url,
        format!("{}/v1/blobs/droplets/{}/1.tgz", p.url, app.guid)
    );
    assert_eq!(ls.stack, "cflinuxfs4");
    assert_eq!(ls.buildpacks.len(), 1);
    assert_eq!(ls.buildpacks[0].name, "python");
    assert!(!ls.buildpacks[0].skip_detect, "no named buildpack: detect");
    assert!(
        ls.buildpacks[0]
            .url
            .starts_with(&format!("{}/v1/blobs/buildpacks/python/", p.url))
    );
    assert!(ls.docker_image.is_empty());

    // Starting again while staging the same inputs does not stage twice.
    let again = p.client.start("hello").await?;
    assert_eq!(again.staging.unwrap().task_guid, staging.task_guid);

    finish_staging(&p, &app).await?;
    let pg = format!("{}-1", app.guid);
    let lrp = eventually("the DesiredLRP", Duration::from_secs(15), || async {
        p.bbs().desired_lrp(&pg).await.ok()
    })
    .await?;
    assert_eq!(lrp.domain, "apps");
    assert_eq!(lrp.rootfs, "preloaded:cflinuxfs4");
    assert_eq!(lrp.instances, 1);
    assert_eq!(lrp.ports, vec![8080]);
    assert_eq!(lrp.log_guid, app.guid);
    assert_eq!(lrp.log_source, "APP/PROC/WEB");
    assert_eq!(
        (lrp.memory_mb, lrp.disk_mb, lrp.privileged),
        (256, 1024, false)
    );
    assert_eq!(
        lrp.routes.as_ref().unwrap()["cf-router"],
        serde_json::json!([{"hostnames": ["hello.apps.internal"], "port": 8080}])
    );
    let droplet = p
        .client
        .app("hello")
        .await?
        .droplet
        .expect("droplet recorded");
    let setup = serde_json::to_string(lrp.setup.as_ref().expect("setup"))?;
    assert!(
        setup.contains(&format!("{}/v1/blobs/droplets/{}/1.tgz", p.url, app.guid)),
        "{setup}"
    );
    assert!(
        setup.contains(&droplet.sha256),
        "the download is checksummed: {setup}"
    );
    let Some(Action::Run(run)) = &lrp.action else {
        panic!("a run action: {:?}", lrp.action)
    };
    let env = |n: &str| {
        run.env
            .iter()
            .find(|e| e.name == n)
            .map(|e| e.value.clone())
    };
    assert_eq!(env("PORT").as_deref(), Some("8080"));
    assert_eq!(env("GREETING").as_deref(), Some("hello"));
    assert!(
        run.args.iter().any(|a| a.contains("python server.py")),
        "{:?}",
        run.args
    );
    let checks = lrp.check_definition.as_ref().expect("a port check");
    assert_eq!(checks.checks[0].tcp_check.as_ref().unwrap().port, 8080);

    let view = p.client.app("hello").await?;
    assert_eq!(view.staging.unwrap().state, StagingState::Succeeded);
    assert_eq!(droplet.detected_buildpack, "python");
    assert_eq!(view.process_guid.as_deref(), Some(pg.as_str()));
    assert_eq!(
        view.deployment.as_ref().unwrap().state,
        DeploymentState::Deploying
    );
    assert_eq!(view.instances.len(), 1);
    assert_eq!(view.instances[0].state, "UNCLAIMED");
    assert!(
        !view.lifecycle.version.is_empty(),
        "the lifecycle is loaded and named"
    );
    events_with(&p, "hello", &[&|e| e.kind == "staging_succeeded"]).await?;

    // The instance runs: the first deployment is done.
    crate::run_instance(p.bbs(), &pg, 0).await?;
    eventually("DEPLOYED", Duration::from_secs(10), || async {
        let v = p.client.app("hello").await.ok()?;
        (v.deployment?.state == DeploymentState::Deployed).then_some(())
    })
    .await?;
    let view = p.client.app("hello").await?;
    assert_eq!(view.instances[0].state, "RUNNING");
    assert_eq!(view.instances[0].host_port, 61000);
    assert_eq!(p.client.apps().await?[0].running, 1);

    // A start with nothing changed neither stages nor deploys again.
    let same = p.client.start("hello").await?;
    assert_eq!(same.version, 1);
    assert_eq!(same.staging.unwrap().task_guid, staging.task_guid);
    Ok(())
}

#[tokio::test]
async fn a_failed_staging_shows_in_the_view_and_events() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = pushed(&p, "broken").await?;
    let guid = app.staging.unwrap().task_guid;
    p.bbs().start_task(&guid, "cell-1").await?;
    p.bbs()
        .complete_task(&CompleteTaskRequest {
            task_guid: guid.clone(),
            cell_id: "cell-1".into(),
            failed: true,
            failure_reason: "no buildpack detected".into(),
            result: String::new(),
        })
        .await?;
    let staging = eventually("FAILED", Duration::from_secs(10), || async {
        let s = p.client.app("broken").await.ok()?.staging?;
        (s.state == StagingState::Failed).then_some(s)
    })
    .await?;
    assert_eq!(staging.error.as_deref(), Some("no buildpack detected"));
    events_with(
        &p,
        "broken",
        &[&|e| e.kind == "staging_failed" && e.message.contains("no buildpack detected")],
    )
    .await?;
    let lrps = p.bbs().desired_lrps(&DesiredLrpsRequest::default()).await?;
    assert!(lrps.is_empty(), "nothing is desired: {lrps:?}");
    Ok(())
}

#[tokio::test]
async fn a_lost_callback_is_made_up_for_by_polling() -> anyhow::Result<()> {
    // No background loops (no event follower, no poller), and the callback URL points at a
    // closed port: only the bulk pass's poll can apply the completion.
    let p = Platform::start_with(false, |c| {
        c.blobstore_url = c.api_url.clone();
        c.api_url = "http://127.0.0.1:9".into();
    })
    .await?;
    let app = pushed(&p, "polled").await?;
    let guid = app.staging.clone().unwrap().task_guid;
    finish_staging(&p, &app).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.client.app("polled").await?.staging.unwrap().state,
        StagingState::Pending
    );
    p.api.sync_once().await?;
    let view = p.client.app("polled").await?;
    assert_eq!(
        view.staging.as_ref().unwrap().state,
        StagingState::Succeeded
    );
    assert_eq!(view.staging.unwrap().task_guid, guid);
    assert!(view.droplet.is_some());
    // The poll removed the completed task (its callback would never have).
    assert!(p.bbs().task(&guid).await.is_err());
    Ok(())
}

#[tokio::test]
async fn delete_leaves_no_record_blob_lrp_or_task() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let app = pushed(&p, "doomed").await?;
    finish_staging(&p, &app).await?;
    let pg = format!("{}-1", app.guid);
    eventually("the DesiredLRP", Duration::from_secs(15), || async {
        p.bbs().desired_lrp(&pg).await.ok()
    })
    .await?;
    // A task on the droplet, and a second staging in flight.
    p.client
        .run_task(
            "doomed",
            &diego_apps_api::TaskRequest {
                command: "echo hi".into(),
                name: Some("once".into()),
            },
        )
        .await?;
    assert_eq!(p.client.tasks("doomed").await?.len(), 1);
    p.client
        .put_app(
            "doomed",
            &AppSettings {
                stack: Some("cflinuxfs3".into()),
                ..Default::default()
            },
        )
        .await?;
    p.client.restart("doomed").await?;

    p.client.delete_app("doomed").await?;
    assert_eq!(
        p.client.app("doomed").await.unwrap_err().status(),
        Some(404)
    );
    assert!(p.client.apps().await?.is_empty());
    assert!(
        p.blobs
            .list(&format!("apps/{}/", app.guid))
            .await?
            .is_empty()
    );
    assert!(
        p.blobs
            .list(&format!("droplets/{}/", app.guid))
            .await?
            .is_empty()
    );
    let lrps = p.bbs().desired_lrps(&DesiredLrpsRequest::default()).await?;
    assert!(lrps.is_empty(), "{lrps:?}");
    let tasks = p.bbs().tasks(&TasksRequest::default()).await?;
    assert!(tasks.is_empty(), "{tasks:?}");
    // Recreated under the same name it is a new app with nothing of the old.
    let again = p.client.put_app("doomed", &AppSettings::default()).await?;
    assert_ne!(again.guid, app.guid);
    assert!(
        p.client
            .events("doomed")
            .await?
            .iter()
            .all(|e| e.kind == "create")
    );
    Ok(())
}

#[tokio::test]
async fn a_docker_app_stages_with_the_docker_lifecycle_and_runs_on_its_image() -> anyhow::Result<()>
{
    let p = Platform::start(true).await?;
    let app = p
        .client
        .put_app(
            "boxed",
            &AppSettings {
                docker_image: Some("registry.test:5000/team/web:1".into()),
                health_check_type: Some(diego_apps_api::HealthCheckType::Process),
                ..Default::default()
            },
        )
        .await?;
    // No bits needed.
    let started = p.client.start("boxed").await?;
    let guid = started.staging.unwrap().task_guid;
    let task = p.bbs().task(&guid).await?;
    let ls = task.task_definition.lifecycle_staging.unwrap();
    assert_eq!(ls.docker_image, "registry.test:5000/team/web:1");
    assert!(ls.app_bits_url.is_empty() && ls.droplet_upload_url.is_empty());
    assert_eq!(ls.lifecycle_sha256, app.lifecycle.sha256);
    assert_ne!(
        app.lifecycle.sha256,
        p.client
            .put_app("plain", &AppSettings::default())
            .await?
            .lifecycle
            .sha256,
        "docker and buildpack lifecycles are different components"
    );

    let result = diego_model::StagingResult {
        lifecycle_type: "docker".into(),
        process_types: [("web".to_owned(), "/bin/web --port 8080".to_owned())].into(),
        execution_metadata:
            r#"{"cmd":["/bin/web","--port","8080"],"ports":[{"Port":8080,"Protocol":"tcp"}]}"#
                .into(),
        lifecycle_metadata: diego_model::staging::LifecycleMetadata {
            docker_image: "registry.test:5000/team/web:1".into(),
            ..Default::default()
        },
    };
    p.bbs().start_task(&guid, "cell-1").await?;
    p.bbs()
        .complete_task(&CompleteTaskRequest {
            task_guid: guid,
            cell_id: "cell-1".into(),
            failed: false,
            failure_reason: String::new(),
            result: serde_json::to_string(&result)?,
        })
        .await?;
    let pg = format!("{}-1", app.guid);
    let lrp = eventually("the DesiredLRP", Duration::from_secs(15), || async {
        p.bbs().desired_lrp(&pg).await.ok()
    })
    .await?;
    assert_eq!(lrp.rootfs, "docker://registry.test:5000/team/web:1");
    assert!(lrp.setup.is_none(), "no droplet to download");
    assert!(
        lrp.check_definition.is_none(),
        "a process check is no check"
    );
    let Some(Action::Run(run)) = &lrp.action else {
        panic!("{:?}", lrp.action)
    };
    assert_eq!(run.path, "/bin/web");
    assert_eq!(run.user, "root", "the image's default user");
    let view = p.client.app("boxed").await?;
    assert_eq!(
        view.droplet.unwrap().docker_image,
        "registry.test:5000/team/web:1"
    );
    Ok(())
}
