//! Staging tasks with the buildpack lifecycle (the Wasm component built from
//! `lifecycles/buildpack`): a python app stages with the zipped python buildpack and its
//! droplet lands in the blob store; an app no buildpack detects fails with the guest's words;
//! a component whose bytes do not match its sha256 is refused; a slow staging streams its `STG`
//! lines while it runs and stops when the task is cancelled.

use std::io::Read;

use diego_model::desired_lrp::EnvironmentVariable;
use diego_model::staging::StagingBuildpack;
use diego_model::{LifecycleStaging, StagingResult, TaskDefinition, TaskState};
use diego_testkit::root::root_or_skip;
use sha2::{Digest, Sha256};

use crate::harness::{BlobServer, TestCell, component, zip_dir, zipped_fixture};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The buildpack lifecycle in the blob store: its URL and sha256.
async fn publish_lifecycle(blobs: &BlobServer) -> (String, String) {
    let bytes = component(diego_plugin_artifacts::LIFECYCLE_BUILDPACK);
    let sha = sha256_hex(&bytes);
    (blobs.put("lifecycles/buildpack.wasm", bytes).await, sha)
}

/// A staging task of the app at `app_url` with `buildpacks`, on the stack.
fn staging_task(
    log_guid: &str,
    lifecycle: &(String, String),
    app_url: String,
    droplet_url: String,
    buildpacks: Vec<StagingBuildpack>,
) -> TaskDefinition {
    TaskDefinition {
        rootfs: "preloaded:bookworm".into(),
        log_guid: log_guid.into(),
        memory_mb: 512,
        disk_mb: 1024,
        env: vec![EnvironmentVariable::new("STAGING_VAR", "x")],
        lifecycle_staging: Some(LifecycleStaging {
            lifecycle_url: lifecycle.0.clone(),
            lifecycle_sha256: lifecycle.1.clone(),
            stack: "bookworm".into(),
            app_bits_url: app_url,
            droplet_upload_url: droplet_url,
            buildpacks,
            timeout_ms: 60_000,
            ..LifecycleStaging::default()
        }),
        ..TaskDefinition::default()
    }
}

async fn buildpack(blobs: &BlobServer, name: &str, zip: Vec<u8>) -> StagingBuildpack {
    StagingBuildpack {
        name: name.into(),
        key: format!("{name}_buildpack"),
        url: blobs.put(&format!("buildpacks/{name}.zip"), zip).await,
        skip_detect: false,
    }
}

fn tgz_entries(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Two staging tasks at once on one cell (the component fetched and loaded once): the python
/// app stages (detected by the python buildpack, a `web` process type, the droplet uploaded)
/// and the other fails with "no buildpack detected"; both containers are gone afterwards.
#[tokio::test]
async fn a_python_app_stages_and_an_app_no_buildpack_detects_fails() {
    if !root_or_skip("rep root staging") {
        return;
    }
    let cell = TestCell::start(201).await;
    let blobs = &cell.blobs;
    let lifecycle = publish_lifecycle(blobs).await;
    let python = buildpack(blobs, "python", zipped_fixture("buildpacks", "python")).await;
    let good = staging_task(
        "app-python",
        &lifecycle,
        blobs
            .put(
                "apps/python-env.zip",
                zipped_fixture("test-apps", "python-env"),
            )
            .await,
        blobs.url("droplets/stage-python"),
        vec![python.clone()],
    );
    let bad = staging_task(
        "app-no-match",
        &lifecycle,
        blobs
            .put("apps/no-match.zip", zipped_fixture("test-apps", "no-match"))
            .await,
        blobs.url("droplets/stage-no-match"),
        vec![python],
    );
    cell.run_task("stage-python", good).await;
    cell.run_task("stage-no-match", bad).await;

    let staged = cell.completed("stage-python", 20).await;
    let lines = cell.logs.lines("app-python");
    assert!(
        !staged.failed,
        "{}\n{}",
        staged.failure_reason,
        lines.join("\n")
    );
    let result: StagingResult = serde_json::from_str(&staged.result).unwrap();
    assert_eq!(result.lifecycle_type, "buildpack");
    assert_eq!(result.lifecycle_metadata.buildpack_key, "python_buildpack");
    assert!(
        result
            .lifecycle_metadata
            .detected_buildpack
            .contains("python"),
        "{result:?}"
    );
    assert!(
        result
            .process_types
            .get("web")
            .is_some_and(|c| !c.is_empty()),
        "{result:?}"
    );
    let droplet = blobs
        .get("droplets/stage-python")
        .await
        .expect("the droplet");
    let entries = tgz_entries(&droplet);
    assert!(
        entries.iter().any(|e| e.ends_with("app/app.py")),
        "{entries:?}"
    );

    let failed = cell.completed("stage-no-match", 20).await;
    assert!(failed.failed);
    assert!(
        failed.failure_reason.contains("no buildpack detected"),
        "{}",
        failed.failure_reason
    );
    assert!(blobs.get("droplets/stage-no-match").await.is_none());

    // the staging output, as STG/0 lines of the app, closed by the outcome
    let lines = cell
        .logs
        .wait_for("app-python", "[STG/0] Staging complete", 5)
        .await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[STG/0] ") && l.contains("python")),
        "{}",
        lines.join("\n")
    );
    assert!(lines.iter().all(|l| l.starts_with("[STG/0] ")), "{lines:?}");
    cell.logs
        .wait_for(
            "app-no-match",
            "[STG/0] Staging failed: no buildpack detected",
            5,
        )
        .await;

    cell.container_gone("stage-python").await;
    cell.container_gone("stage-no-match").await;
    cell.shutdown().await;
}

/// A component whose bytes are not what its sha256 says fails the task clearly (nothing is
/// loaded); a staging whose buildpack blocks streams its STG lines while it runs, and is
/// stopped (its container destroyed) when the task is cancelled, or when its timeout passes.
#[tokio::test]
async fn a_wrong_sha256_is_refused_and_a_cancelled_staging_stops_after_streaming_its_output() {
    if !root_or_skip("rep root staging cancel") {
        return;
    }
    let cell = TestCell::start(202).await;
    let blobs = &cell.blobs;
    let lifecycle = publish_lifecycle(blobs).await;
    let app = blobs
        .put(
            "apps/python-env.zip",
            zipped_fixture("test-apps", "python-env"),
        )
        .await;

    let wrong = (lifecycle.0.clone(), sha256_hex(b"something else"));
    let python = buildpack(blobs, "python", zipped_fixture("buildpacks", "python")).await;
    let task = staging_task(
        "app-wrong-sha",
        &wrong,
        app.clone(),
        blobs.url("droplets/wrong-sha"),
        vec![python],
    );
    cell.run_task("stage-wrong-sha", task).await;
    let refused = cell.completed("stage-wrong-sha", 10).await;
    assert!(refused.failed);
    let reason = &refused.failure_reason;
    assert!(reason.contains("does not match its sha256"), "{reason}");
    assert!(
        reason.contains(&wrong.1) && reason.contains(&lifecycle.1),
        "{reason}"
    );
    cell.logs
        .wait_for("app-wrong-sha", "[STG/0] Staging failed: ", 5)
        .await;

    // a buildpack that says it is compiling, then blocks
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, script) in [
        ("detect", "#!/bin/sh\necho slow\n"),
        (
            "compile",
            "#!/bin/sh\necho \"-----> compiling very slowly\"\nexec sleep 600\n",
        ),
        ("release", "#!/bin/sh\necho '---'\n"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let slow = buildpack(blobs, "slow", zip_dir(dir.path())).await;
    let task = staging_task(
        "app-slow",
        &lifecycle,
        app.clone(),
        blobs.url("droplets/slow"),
        vec![slow.clone()],
    );
    cell.run_task("stage-slow", task).await;
    // the same, bounded by a short timeout
    let mut task = staging_task(
        "app-slow-timeout",
        &lifecycle,
        app,
        blobs.url("droplets/slow-timeout"),
        vec![slow],
    );
    if let Some(staging) = task.lifecycle_staging.as_mut() {
        staging.timeout_ms = 4_000;
    }
    cell.run_task("stage-slow-timeout", task).await;
    let lines = cell
        .logs
        .wait_for("app-slow", "compiling very slowly", 20)
        .await;
    let task = cell.bbs.client.task("stage-slow").await.unwrap();
    assert_eq!(task.state, TaskState::Running, "streamed while running");
    assert!(
        !lines.iter().any(|l| l.contains("Staging complete")),
        "{lines:?}"
    );

    cell.bbs.client.cancel_task("stage-slow").await.unwrap();
    cell.container_gone("stage-slow").await;
    let cancelled = cell.completed("stage-slow", 5).await;
    assert!(cancelled.failed);
    assert!(blobs.get("droplets/slow").await.is_none());

    let timed_out = cell.completed("stage-slow-timeout", 10).await;
    assert!(timed_out.failed);
    assert_eq!(timed_out.failure_reason, "staging timed out after 4s");
    cell.logs
        .wait_for(
            "app-slow-timeout",
            "[STG/0] Staging failed: staging timed out after 4s",
            5,
        )
        .await;
    cell.container_gone("stage-slow-timeout").await;
    cell.shutdown().await;
}

#[test]
fn zipped_fixtures_keep_their_modes() {
    let zip = zipped_fixture("buildpacks", "python");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut detect = archive.by_name("bin/detect").unwrap();
    assert_eq!(detect.unix_mode().map(|m| m & 0o111), Some(0o111));
    let mut script = String::new();
    detect.read_to_string(&mut script).unwrap();
    assert!(script.starts_with("#!"));
}
