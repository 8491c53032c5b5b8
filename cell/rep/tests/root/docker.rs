//! Docker apps: a busybox image pushed to a real registry (the testkit's) is staged by a
//! staging task with the docker lifecycle (no container; the image config read natively), and
//! a DesiredLRP whose rootfs is the image (`docker://host:port/app:v1`, as
//! `diego_lifecycle_runner::docker_rootfs` names it) runs on the image's layers and answers
//! on its host port.

use std::net::SocketAddr;

use diego_model::{Action, DesiredLrp, LifecycleStaging, StagingResult, TaskDefinition};
use diego_testkit::root::root_or_skip;
use diego_testkit::{ImageSpec, Registry, push_test_image, registry_tools};
use sha2::{Digest, Sha256};

use crate::harness::{TestCell, component};
use crate::{http_get, run_lrp, running, tcp_check};

/// busybox httpd serving /www on 8080.
fn app_image() -> ImageSpec {
    ImageSpec {
        env: vec!["GREETING=hi".into()],
        user: None,
        ..ImageSpec::httpd("hello from a docker app\n")
    }
}

#[tokio::test]
async fn a_docker_image_stages_by_task_and_runs_as_an_lrp_on_its_layers() {
    if !root_or_skip("rep root docker") {
        return;
    }
    // as root, missing registry tools fail the test
    registry_tools().unwrap();
    let (registry, _pushed) = tokio::task::spawn_blocking(|| {
        let registry = Registry::start().unwrap();
        let pushed = push_test_image(&registry, "app", "v1", &app_image()).unwrap();
        (registry, pushed)
    })
    .await
    .unwrap();
    let image = format!("{}/app:v1", registry.host());

    let cell = TestCell::start(203).await;
    let bytes = component(diego_plugin_artifacts::LIFECYCLE_DOCKER);
    let sha = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let url = cell.blobs.put("lifecycles/docker.wasm", bytes).await;
    let task = TaskDefinition {
        rootfs: "preloaded:busybox".into(),
        log_guid: "docker-app".into(),
        memory_mb: 64,
        lifecycle_staging: Some(LifecycleStaging {
            lifecycle_url: url,
            lifecycle_sha256: sha,
            stack: "cflinuxfs4".into(),
            docker_image: image.clone(),
            timeout_ms: 30_000,
            ..LifecycleStaging::default()
        }),
        ..TaskDefinition::default()
    };
    cell.run_task("stage-docker", task).await;
    let staged = cell.completed("stage-docker", 20).await;
    assert!(
        !staged.failed,
        "{}\n{}",
        staged.failure_reason,
        registry.log()
    );
    let result: StagingResult = serde_json::from_str(&staged.result).unwrap();
    assert_eq!(result.lifecycle_type, "docker");
    assert_eq!(result.lifecycle_metadata.docker_image, image);
    assert_eq!(
        result.process_types.get("web").map(String::as_str),
        Some("/bin/httpd -f -p 8080 -h /www")
    );
    cell.logs
        .wait_for("docker-app", "[STG/0] Staging complete", 5)
        .await;

    // the image as an LRP's rootfs
    let rootfs = diego_lifecycle_runner::docker_rootfs(&image);
    assert!(rootfs.starts_with("docker://127.0.0.1:"), "{rootfs}");
    let lrp = DesiredLrp {
        process_guid: "docker-web".into(),
        log_guid: "docker-app".into(),
        domain: "tests".into(),
        rootfs,
        instances: 1,
        action: Some(Action::run(
            "/bin/httpd",
            &["-f", "-p", "8080", "-h", "/www"],
        )),
        memory_mb: 64,
        ports: vec![8080],
        start_timeout_ms: 20_000,
        check_definition: Some(tcp_check(8080)),
        log_source: "APP/PROC/WEB".into(),
        ..DesiredLrp::default()
    };
    run_lrp(&cell, &lrp).await;
    let running = running(&cell, "docker-web", 20).await;
    let port = u16::try_from(running.ports[0].host_port).unwrap();
    let body = http_get(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    assert!(body.contains("hello from a docker app"), "{body}");
    cell.logs
        .wait_for("docker-app", "[CELL/0] Container became healthy", 5)
        .await;
    cell.shutdown().await;
}
