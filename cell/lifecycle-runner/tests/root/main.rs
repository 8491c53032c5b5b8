//! Root-only end-to-end tests: the buildpack lifecycle (the Wasm guest built from
//! `lifecycles/buildpack`) stages real apps with real buildpacks (`lifecycles/buildpacks`) in
//! containers on the stack rootfs, and the droplets run in fresh containers, reached from the
//! host on their mapped port. `docker.rs`: the Docker lifecycle against a real registry (and
//! its guest alone, which needs no root).
//!
//! Run as root: `cargo test -p diego-lifecycle-runner --test root`. Without root (or without
//! the stack rootfs) they fail under `CI=true` and are skipped (with a message) otherwise.

#![allow(clippy::unwrap_used)]

mod common;
mod docker;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use diego_garden::native::NativeBackend;
use diego_garden::{Backend, ContainerSpec, NetIn, NetworkSpec};
use diego_host::capabilities::ContainerRef;
use diego_host::lifecycle::LifecyclePlugin;
use diego_host::lifecycle::types as t;
use diego_lifecycle_runner::{GardenCaps, Instance, RunnerError, Staged};

fn env(pairs: &[(&str, &str)]) -> Vec<t::EnvVar> {
    pairs
        .iter()
        .map(|(n, v)| t::EnvVar {
            name: (*n).to_owned(),
            value: (*v).to_owned(),
        })
        .collect()
}

fn buildpack(store: &Blobstore, name: &str, skip_detect: bool) -> t::Buildpack {
    t::Buildpack {
        name: name.to_owned(),
        key: format!("{name}_buildpack"),
        url: format!("{}/buildpacks/{name}.tgz", store.url),
        skip_detect,
    }
}

fn staging_request(
    store: &Blobstore,
    app: &str,
    guid: &str,
    buildpacks: Vec<t::Buildpack>,
) -> t::StagingRequest {
    t::StagingRequest {
        staging_guid: guid.to_owned(),
        stack: "bookworm".to_owned(),
        lifecycle_bundle_url: None,
        app_bits_url: format!("{}/apps/{app}.tgz", store.url),
        droplet_upload_url: format!("{}/droplets/{guid}", store.url),
        build_artifacts_cache_download_url: None,
        build_artifacts_cache_upload_url: None,
        buildpacks,
        docker_image: None,
        docker_credentials: None,
        env: env(&[("STAGING_VAR", "x")]),
        memory_mb: 512,
        disk_mb: 1024,
        timeout_ms: 300_000,
        options: vec![],
    }
}

/// Stages in a fresh container on the stack, destroyed afterwards.
async fn stage_in_container(
    b: &Arc<NativeBackend>,
    plugin: &LifecyclePlugin,
    request: &t::StagingRequest,
) -> (Result<Staged, RunnerError>, Vec<String>) {
    let rootfs = stack_rootfs("stage").unwrap();
    let handle = b.create(ContainerSpec::from_dir(rootfs)).await.unwrap();
    let caps = GardenCaps::new(b.clone());
    let result =
        diego_lifecycle_runner::stage(plugin, &caps, &ContainerRef(handle.clone()), request).await;
    b.destroy(&handle).await.unwrap();
    (result, caps.logs())
}

fn http_get(port: u16, path: &str) -> String {
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .unwrap();
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.starts_with("HTTP/1.0 200") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    body
}

/// Launches the droplet of `guid` in a fresh container with 8080 mapped; returns the
/// container, the launched process, the caps and the mapped host port.
async fn launch_droplet(
    b: &Arc<NativeBackend>,
    plugin: &LifecyclePlugin,
    store: &Blobstore,
    guid: &str,
    start_command: &str,
    app_env: Vec<t::EnvVar>,
) -> (
    ContainerRef,
    diego_lifecycle_runner::Launched,
    GardenCaps,
    u16,
) {
    let rootfs = stack_rootfs("launch").unwrap();
    let handle = b
        .create(ContainerSpec {
            network: Some(NetworkSpec {
                net_in: vec![NetIn {
                    host_port: 0,
                    container_port: 8080,
                }],
            }),
            ..ContainerSpec::from_dir(rootfs)
        })
        .await
        .unwrap();
    let container = ContainerRef(handle.clone());
    let caps = GardenCaps::new(b.clone());
    let request = t::LaunchRequest {
        process_guid: format!("{guid}-web"),
        process_type: "web".to_owned(),
        stack: Some("bookworm".to_owned()),
        lifecycle_bundle_url: None,
        start_command: start_command.to_owned(),
        droplet_url: Some(format!("{}/droplets/{guid}", store.url)),
        droplet_checksum: None,
        docker_image: None,
        docker_credentials: None,
        execution_metadata: String::new(),
        env: app_env,
        ports: vec![8080],
        memory_mb: 256,
        disk_mb: 1024,
        options: vec![],
    };
    let instance = Instance {
        index: 3,
        guid: "instance-guid-3".to_owned(),
    };
    let launched = diego_lifecycle_runner::launch(plugin, &caps, &container, &request, &instance)
        .await
        .unwrap_or_else(|e| panic!("launch: {e}\n{}", caps.logs().join("\n")));
    let port = b.info(&handle).await.unwrap().mapped_ports[0].host_port;
    (container, launched, caps, port)
}

fn check_request(
    kind: t::HealthCheckType,
    readiness: Option<t::HealthCheckType>,
) -> t::CheckRequest {
    t::CheckRequest {
        health_check_type: kind,
        ports: vec![8080],
        http_endpoint: Some("/".to_owned()),
        invocation_timeout_ms: Some(1000),
        interval_ms: None,
        start_timeout_ms: Some(30_000),
        readiness: readiness.map(|k| t::ReadinessRequest {
            health_check_type: k,
            http_endpoint: Some("/".to_owned()),
            invocation_timeout_ms: None,
            interval_ms: None,
        }),
        options: vec![],
    }
}

/// The whole path: detect picks the python buildpack (after the binary one declines),
/// supply/finalize run, release gives the start command, the droplet is uploaded; the droplet
/// runs in a fresh container with the CF environment, passes its port check and answers on
/// the mapped port.
#[tokio::test]
async fn stages_a_python_app_by_detection_and_serves_it_on_its_port() {
    let test = "stages_a_python_app_by_detection_and_serves_it_on_its_port";
    if !root_or_skip(test) || stack_rootfs(test).is_none() {
        return;
    }
    let b = backend(1).await;
    let store = Blobstore::start().await;
    let (plugin, _dir) = buildpack_lifecycle();

    let request = staging_request(
        &store,
        "python-env",
        "py-1",
        vec![
            buildpack(&store, "binary", false),
            buildpack(&store, "python", false),
        ],
    );
    let (staged, logs) = stage_in_container(&b, &plugin, &request).await;
    let staged = staged.unwrap_or_else(|e| panic!("staging: {e}\n{}", logs.join("\n")));
    let result = &staged.result;
    assert_eq!(result.lifecycle_type, "buildpack");
    assert_eq!(
        result.lifecycle_metadata.detected_buildpack.as_deref(),
        Some("python")
    );
    assert_eq!(
        result.lifecycle_metadata.buildpack_key.as_deref(),
        Some("python_buildpack")
    );
    let web: Vec<_> = result
        .process_types
        .iter()
        .map(|p| (p.name.as_str(), p.command.as_str()))
        .collect();
    assert_eq!(web, vec![("web", "python3 app.py")]);
    assert_eq!(staged.plans, 2, "detect plan, then compile plan");
    let joined = logs.join("\n");
    assert!(joined.contains("-----> python: bin/supply"), "{joined}");
    assert!(joined.contains("-----> python: bin/finalize"), "{joined}");
    assert!(joined.contains("Uploaded droplet"), "{joined}");

    let droplet = store.get("droplets/py-1").expect("droplet uploaded");
    let entries = tgz_entries(&droplet);
    for want in [
        "app/app.py",
        "app/.profile.d/python-app.sh",
        "deps/1/profile.d/python.sh",
    ] {
        assert!(
            entries.iter().any(|e| e == want),
            "{want} not in {entries:?}"
        );
    }

    let app_env = env(&[
        (
            "VCAP_APPLICATION",
            r#"{"application_name":"py","instance_index":99,"limits":{"mem":256}}"#,
        ),
        ("VCAP_SERVICES", r#"{"db":[{"name":"pg"}]}"#),
        ("USER_VAR", "hello"),
    ]);
    let (container, launched, caps, port) =
        launch_droplet(&b, &plugin, &store, "py-1", "python3 app.py", app_env).await;

    let checks = plugin
        .healthcheck(&check_request(
            t::HealthCheckType::Port,
            Some(t::HealthCheckType::Http),
        ))
        .unwrap()
        .value;
    assert!(
        matches!(checks.checks.as_slice(), [t::Probe::Tcp(p)] if p.port == 8080),
        "{checks:?}"
    );
    assert!(
        matches!(checks.readiness_checks.as_slice(), [t::Probe::Http(p)] if p.port == 8080 && p.path == "/"),
        "{checks:?}"
    );
    diego_lifecycle_runner::await_healthy(&caps, &container, &checks, &launched)
        .await
        .unwrap_or_else(|e| panic!("healthy: {e}\n{}", caps.logs().join("\n")));
    assert!(
        diego_lifecycle_runner::ready(&caps, &container, &checks, &launched)
            .await
            .unwrap()
    );

    let response = http_get(port, "/");
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no HTTP answer: {response:?}\n{}", caps.logs().join("\n")));
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["PORT"], "8080", "{seen}");
    assert_eq!(seen["HOME"], "/home/vcap/app", "{seen}");
    assert_eq!(seen["TMPDIR"], "/home/vcap/tmp", "{seen}");
    assert_eq!(seen["cwd"], "/home/vcap/app", "{seen}");
    assert_eq!(seen["uid"], 2000, "runs as vcap: {seen}");
    assert_eq!(seen["USER_VAR"], "hello", "{seen}");
    assert_eq!(seen["VCAP_SERVICES"], r#"{"db":[{"name":"pg"}]}"#, "{seen}");
    // .profile.d of the app (finalize) and of the deps (supply) were sourced
    assert_eq!(seen["PYTHON_BUILDPACK_PROFILE"], "sourced", "{seen}");
    assert_eq!(seen["PYTHONUNBUFFERED"], "1", "{seen}");
    let va = &seen["vcap_application"];
    assert_eq!(va["instance_index"], 3, "{seen}");
    assert_eq!(va["instance_id"], "instance-guid-3", "{seen}");
    assert_eq!(va["port"], 8080, "{seen}");
    assert_eq!(va["application_name"], "py", "{seen}");
    assert_eq!(va["limits"]["mem"], 256, "{seen}");
    assert_eq!(launched.exit_status(), None);

    b.destroy(&container.0).await.unwrap();
    b.teardown_host_network().await.unwrap();
}

/// A named buildpack (skip-detect) with the legacy bin/compile, launched with a process
/// health check and an http readiness check.
#[tokio::test]
async fn stages_with_a_named_compile_buildpack_and_runs_the_binary() {
    let test = "stages_with_a_named_compile_buildpack_and_runs_the_binary";
    if !root_or_skip(test) || stack_rootfs(test).is_none() {
        return;
    }
    let b = backend(2).await;
    let store = Blobstore::start().await;
    let (plugin, _dir) = buildpack_lifecycle();

    let request = staging_request(
        &store,
        "binary-sh",
        "bin-1",
        vec![buildpack(&store, "binary", true)],
    );
    let (staged, logs) = stage_in_container(&b, &plugin, &request).await;
    let staged = staged.unwrap_or_else(|e| panic!("staging: {e}\n{}", logs.join("\n")));
    assert_eq!(
        staged
            .result
            .lifecycle_metadata
            .detected_buildpack
            .as_deref(),
        Some("binary")
    );
    assert_eq!(staged.result.process_types[0].command, "./start");
    assert!(logs.join("\n").contains("-----> binary: bin/compile"));

    let (container, launched, caps, port) =
        launch_droplet(&b, &plugin, &store, "bin-1", "./start", vec![]).await;
    let checks = plugin
        .healthcheck(&check_request(
            t::HealthCheckType::Process,
            Some(t::HealthCheckType::Port),
        ))
        .unwrap()
        .value;
    assert!(
        matches!(checks.checks.as_slice(), [t::Probe::ProcessAlive]),
        "{checks:?}"
    );
    diego_lifecycle_runner::await_healthy(&caps, &container, &checks, &launched)
        .await
        .unwrap();
    wait_ready(&caps, &container, &checks, &launched).await;
    let response = http_get(port, "/");
    assert!(
        response.contains("binary app on port 8080 (server.sh)"),
        "{response}\n{}",
        caps.logs().join("\n")
    );
    b.destroy(&container.0).await.unwrap();
    b.teardown_host_network().await.unwrap();
}

#[tokio::test]
async fn an_app_no_buildpack_accepts_fails_with_no_buildpack_detected() {
    let test = "an_app_no_buildpack_accepts_fails_with_no_buildpack_detected";
    if !root_or_skip(test) || stack_rootfs(test).is_none() {
        return;
    }
    let b = backend(3).await;
    let store = Blobstore::start().await;
    let (plugin, _dir) = buildpack_lifecycle();
    let request = staging_request(
        &store,
        "no-match",
        "none-1",
        vec![
            buildpack(&store, "binary", false),
            buildpack(&store, "python", false),
        ],
    );
    let (staged, logs) = stage_in_container(&b, &plugin, &request).await;
    let err = staged.expect_err("nothing detects this app").to_string();
    assert!(
        err.contains("no buildpack detected"),
        "{err}\n{}",
        logs.join("\n")
    );
    assert!(err.contains("[binary, python]"), "{err}");
    assert!(store.get("droplets/none-1").is_none());
    b.teardown_host_network().await.unwrap();
}

#[tokio::test]
async fn a_failing_compile_reports_its_exit_status_and_log() {
    let test = "a_failing_compile_reports_its_exit_status_and_log";
    if !root_or_skip(test) || stack_rootfs(test).is_none() {
        return;
    }
    let b = backend(4).await;
    let store = Blobstore::start().await;
    let (plugin, _dir) = buildpack_lifecycle();
    let request = staging_request(
        &store,
        "binary-missing",
        "fail-1",
        vec![buildpack(&store, "binary", false)],
    );
    let (staged, logs) = stage_in_container(&b, &plugin, &request).await;
    let err = staged.expect_err("compile fails").to_string();
    assert!(
        err.contains("compile (binary) failed with exit status 2"),
        "{err}\n{}",
        logs.join("\n")
    );
    // the log tail: the buildpack's own words
    assert!(
        err.contains("Binaryfile names 'missing-server', which is not in the app"),
        "{err}"
    );
    assert!(store.get("droplets/fail-1").is_none());
    b.teardown_host_network().await.unwrap();
}
