//! The Docker lifecycle (`lifecycles/docker`, the Wasm guest) end to end: a busybox image built
//! and pushed to a real registry (Debian's `docker-registry` on loopback, by the testkit) is
//! staged (the cell inspects it natively, the guest records entrypoint, cmd, env, user, workdir
//! and ports), launched twice in containers whose rootfs is the image's layers (pulled once,
//! shared), passes its health checks and answers on its mapped port. The guest-only tests at
//! the end need neither root nor a registry.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use diego_garden::image::ImageError;
use diego_garden::{Backend, ProcessSpec};
use diego_lifecycle_runner::{
    EXECUTION_METADATA_OPTION, GardenCaps, IMAGE_CONFIG_OPTION, Instance, RunnerError,
};
use diego_testkit::{ImageSpec, Registry, push_test_image, registry_tools};
use serde_json::{Value, json};

use super::{check_request, env};
use crate::common::*;
use diego_host::lifecycle::types as t;
use diego_host::lifecycle::{LifecycleError, LifecyclePlugin, StagingStep};

const TEST: u8 = 5;

/// True when root and the registry tools are there; panics under CI=true otherwise.
fn tools_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    match registry_tools() {
        Ok(()) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {e} (CI=true makes a missing prerequisite fatal)")
        }
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            false
        }
    }
}

fn docker_lifecycle() -> (LifecyclePlugin, tempfile::TempDir) {
    lifecycle(diego_plugin_artifacts::LIFECYCLE_DOCKER)
}

/// busybox httpd serving /www on 8080, as vcap, in /www.
fn app_image() -> ImageSpec {
    ImageSpec {
        env: vec!["GREETING=hi from the image".into(), "PORT=9999".into()],
        ..ImageSpec::httpd("hello from a docker app\n")
    }
}

fn staging_request(image: &str) -> t::StagingRequest {
    t::StagingRequest {
        staging_guid: "docker-1".to_owned(),
        stack: "cflinuxfs4".to_owned(),
        lifecycle_bundle_url: None,
        app_bits_url: String::new(),
        droplet_upload_url: String::new(),
        build_artifacts_cache_download_url: None,
        build_artifacts_cache_upload_url: None,
        buildpacks: vec![],
        docker_image: Some(image.to_owned()),
        docker_credentials: None,
        env: vec![],
        memory_mb: 256,
        disk_mb: 1024,
        timeout_ms: 60_000,
        options: vec![],
    }
}

fn launch_request(image: &str, metadata: &str, start: &str, ports: Vec<u16>) -> t::LaunchRequest {
    t::LaunchRequest {
        process_guid: "docker-app-web".to_owned(),
        process_type: "web".to_owned(),
        stack: None,
        lifecycle_bundle_url: None,
        start_command: start.to_owned(),
        droplet_url: None,
        droplet_checksum: None,
        docker_image: Some(image.to_owned()),
        docker_credentials: None,
        execution_metadata: metadata.to_owned(),
        env: env(&[("USER_VAR", "hello"), ("VCAP_APPLICATION", "{}")]),
        ports,
        memory_mb: 256,
        disk_mb: 1024,
        options: vec![],
    }
}

/// `GET path` on the host's loopback `port` until it answers 200 (busybox httpd says HTTP/1.1).
fn http_get(port: u16, path: &str) -> String {
    let mut response = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .unwrap();
            response.clear();
            let _ = s.read_to_string(&mut response);
            if response.split_whitespace().nth(1) == Some("200") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    response
}

/// The main process's environment, uid and cwd, read from /proc in the container by its own
/// user (vcap): root in an unprivileged container has no CAP_SYS_PTRACE, so another user's
/// `/proc/PID/environ` is closed to it, as in Docker.
async fn main_process_view(b: &dyn Backend, handle: &str) -> String {
    let script = "p=$(pidof httpd) || exit 1; tr '\\0' '\\n' < /proc/$p/environ; \
                  echo uid=$(stat -c %u /proc/$p); echo cwd=$(readlink /proc/$p/cwd); \
                  echo args=$(tr '\\0' ' ' < /proc/$p/cmdline)";
    let out = b
        .run_and_wait(
            handle,
            ProcessSpec {
                argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
                user: Some("vcap".into()),
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0, "{}", out.stderr_str());
    out.stdout_str().to_string()
}

/// Stage → launch → healthy → reachable, twice from the same layers; a missing image fails
/// staging with a clear error.
#[tokio::test]
async fn a_registry_image_is_staged_and_launched_on_its_own_layers() {
    let test = "a_registry_image_is_staged_and_launched_on_its_own_layers";
    if !tools_or_skip(test) {
        return;
    }
    let (registry, app) = tokio::task::spawn_blocking(|| {
        let registry = Registry::start().unwrap();
        let app = push_test_image(&registry, "app", "v1", &app_image()).unwrap();
        (registry, app)
    })
    .await
    .unwrap();
    // as Cloud Controller names it: no scheme
    let image = format!("{}/app:v1", registry.host());
    let (plugin, _dir) = docker_lifecycle();

    // staging: the image config read natively, turned into the result by the guest
    let staged = diego_lifecycle_runner::stage_docker(
        &plugin,
        &Default::default(),
        &staging_request(&image),
    )
    .await
    .unwrap_or_else(|e| panic!("staging: {e}\n{}", registry.log()));
    let result = &staged.result;
    assert_eq!(staged.plans, 0, "no staging container");
    assert_eq!(result.lifecycle_type, "docker");
    assert_eq!(
        result.lifecycle_metadata.docker_image.as_deref(),
        Some(image.as_str())
    );
    let web: Vec<_> = result
        .process_types
        .iter()
        .map(|p| (p.name.as_str(), p.command.as_str()))
        .collect();
    assert_eq!(web, vec![("web", "/bin/httpd -f -p 8080 -h /www")]);
    let metadata: Value = serde_json::from_str(&result.execution_metadata).unwrap();
    assert_eq!(
        metadata,
        json!({
            "entrypoint": ["/bin/httpd"],
            "cmd": ["-f", "-p", "8080", "-h", "/www"],
            "workdir": "/www",
            "user": "vcap",
            "ports": [{"Port": 8080, "Protocol": "tcp"}],
            "env": ["GREETING=hi from the image", "PORT=9999"],
        })
    );
    for layer in &app.layers {
        assert_eq!(registry.blob_gets(layer), 0, "staging downloads no layer");
    }

    // a missing image: a clear error, the guest never called
    let missing = format!("{}/nope:v1", registry.host());
    let err = diego_lifecycle_runner::stage_docker(
        &plugin,
        &Default::default(),
        &staging_request(&missing),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RunnerError::Image(ImageError::NotFound { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("not found"), "{msg}");
    assert!(msg.contains("nope"), "{msg}");

    // launch: two instances, the image's layers pulled once and shared
    let _ = std::fs::remove_dir_all(format!("/tmp/diego-lifecycle-test/{TEST}/layers"));
    let b = backend(TEST).await;
    let caps = GardenCaps::new(b.clone());
    let request = launch_request(
        &image,
        &result.execution_metadata,
        &result.process_types[0].command,
        vec![8080],
    );
    let mut checks_request =
        check_request(t::HealthCheckType::Port, Some(t::HealthCheckType::Http));
    checks_request.ports = vec![];
    checks_request.options = vec![(
        EXECUTION_METADATA_OPTION.to_owned(),
        result.execution_metadata.clone(),
    )];
    let checks = plugin.healthcheck(&checks_request).unwrap().value;
    assert!(
        matches!(checks.checks.as_slice(), [t::Probe::Tcp(p)] if p.port == 8080),
        "the exposed port: {checks:?}"
    );
    assert!(
        matches!(checks.readiness_checks.as_slice(), [t::Probe::Http(p)] if p.port == 8080 && p.path == "/"),
        "{checks:?}"
    );
    let mut containers = Vec::new();
    for index in 0..2u32 {
        let instance = Instance {
            index,
            guid: format!("docker-instance-{index}"),
        };
        let (container, launched) =
            diego_lifecycle_runner::launch_docker(&plugin, &caps, &request, &instance)
                .await
                .unwrap_or_else(|e| panic!("launch {index}: {e}\n{}", caps.logs().join("\n")));
        diego_lifecycle_runner::await_healthy(&caps, &container, &checks, &launched)
            .await
            .unwrap_or_else(|e| panic!("healthy {index}: {e}\n{}", caps.logs().join("\n")));
        wait_ready(&caps, &container, &checks, &launched).await;
        let port = b.info(&container.0).await.unwrap().mapped_ports[0].host_port;
        let response = http_get(port, "/");
        assert!(
            response.starts_with("HTTP/1.1 200") && response.contains("hello from a docker app"),
            "{response}\n{}",
            caps.logs().join("\n")
        );
        // the main process: the image's command, env (the app's PORT wins), user and workdir
        let view = main_process_view(b.as_ref(), &container.0).await;
        for want in [
            "GREETING=hi from the image",
            "PORT=8080",
            "USER_VAR=hello",
            &format!("INSTANCE_INDEX={index}"),
            "uid=2000",
            "cwd=/www",
            "args=/bin/httpd -f -p 8080 -h /www",
        ] {
            assert!(
                view.lines().any(|l| l.trim_end() == want),
                "{want} not in:\n{view}"
            );
        }
        assert_eq!(launched.exit_status(), None);
        containers.push(container);
    }
    for layer in &app.layers {
        assert_eq!(
            registry.blob_gets(layer),
            1,
            "layer {layer} downloaded once"
        );
    }
    assert_eq!(
        b.puller().counts(),
        (2, 2),
        "2 layers downloaded for the first instance, both cached for the second"
    );
    for c in &containers {
        b.destroy(&c.0).await.unwrap();
    }
    b.teardown_host_network().await.unwrap();
    drop(registry);
}

// ---- the guest alone (no root, no registry) ----

fn image_config() -> Value {
    json!({
        "reference": "docker://registry.example:5000/team/app:v2",
        "manifest_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "entrypoint": ["/app/run"],
        "cmd": ["--port", "7000"],
        "env": ["PATH=/usr/bin:/bin", "MODE=image", "PORT=1"],
        "user": "app",
        "working_dir": "/app",
        "exposed_ports": [{"port": 7000, "protocol": "tcp"}, {"port": 53, "protocol": "udp"}],
        "layers": [],
    })
}

fn stage_with(
    plugin: &LifecyclePlugin,
    config: Option<Value>,
) -> Result<StagingStep, LifecycleError> {
    let mut request = staging_request("registry.example:5000/team/app:v2");
    if let Some(c) = config {
        request.options = vec![(IMAGE_CONFIG_OPTION.to_owned(), c.to_string())];
    }
    plugin.stage(&request).map(|c| c.value)
}

#[test]
fn the_docker_guest_turns_an_image_config_into_a_staging_result() {
    let (plugin, _dir) = docker_lifecycle();
    let Ok(StagingStep::Done(result)) = stage_with(&plugin, Some(image_config())) else {
        panic!("expected done");
    };
    assert_eq!(result.lifecycle_type, "docker");
    assert_eq!(result.process_types[0].name, "web");
    assert_eq!(result.process_types[0].command, "/app/run --port 7000");
    let metadata: Value = serde_json::from_str(&result.execution_metadata).unwrap();
    assert_eq!(metadata["user"], "app");
    assert_eq!(metadata["workdir"], "/app");
    assert_eq!(
        metadata["ports"],
        json!([{"Port": 7000, "Protocol": "tcp"}, {"Port": 53, "Protocol": "udp"}])
    );

    let mut no_command = image_config();
    no_command["entrypoint"] = json!([]);
    no_command["cmd"] = json!([]);
    let err = stage_with(&plugin, Some(no_command))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no command"), "{err}");
    assert!(err.contains("registry.example:5000/team/app:v2"), "{err}");

    let err = stage_with(&plugin, None).unwrap_err().to_string();
    assert!(err.contains(IMAGE_CONFIG_OPTION), "{err}");
}

#[test]
fn the_docker_guest_launches_the_image_command_with_overrides() {
    let (plugin, _dir) = docker_lifecycle();
    let Ok(StagingStep::Done(staged)) = stage_with(&plugin, Some(image_config())) else {
        panic!("expected done");
    };
    let md = &staged.execution_metadata;
    let image = "registry.example:5000/team/app:v2";

    // the staged command: entrypoint + cmd; ports from the image when the request has none
    let plan = plugin
        .launch(&launch_request(image, md, "/app/run --port 7000", vec![]))
        .unwrap()
        .value;
    assert!(plan.setup.is_none());
    assert_eq!(plan.main.path, "/app/run");
    assert_eq!(plan.main.args, ["--port", "7000"]);
    assert_eq!(plan.main.user, "app");
    assert_eq!(plan.main.dir.as_deref(), Some("/app"));
    assert_eq!(plan.ports, [7000]);
    let envs: Vec<(&str, &str)> = plan
        .env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        envs,
        [
            ("PATH", "/usr/bin:/bin"),
            ("MODE", "image"),
            ("USER_VAR", "hello"),
            ("VCAP_APPLICATION", "{}"),
            ("PORT", "7000"),
        ]
    );

    // an override replaces the cmd, the entrypoint stays (docker run IMAGE ARGS...)
    let plan = plugin
        .launch(&launch_request(
            image,
            md,
            "--port 8080 --name 'a b'",
            vec![8080],
        ))
        .unwrap()
        .value;
    assert_eq!(plan.main.path, "/app/run");
    assert_eq!(plan.main.args, ["--port", "8080", "--name", "a b"]);
    assert_eq!(plan.ports, [8080]);
    assert!(
        plan.env
            .iter()
            .any(|e| e.name == "PORT" && e.value == "8080")
    );

    // no entrypoint: the override runs under /bin/sh -c; no user: Docker's root, which the
    // host's default plan caps refuse
    let mut cfg = image_config();
    cfg["entrypoint"] = json!([]);
    cfg["user"] = Value::Null;
    let Ok(StagingStep::Done(staged)) = stage_with(&plugin, Some(cfg)) else {
        panic!("expected done");
    };
    let mut md: Value = serde_json::from_str(&staged.execution_metadata).unwrap();
    assert!(md.get("user").is_none(), "{md}");
    md["user"] = json!("vcap");
    let plan = plugin
        .launch(&launch_request(
            image,
            &md.to_string(),
            "echo hi && sleep 1",
            vec![8080],
        ))
        .unwrap()
        .value;
    assert_eq!(plan.main.path, "/bin/sh");
    assert_eq!(plan.main.args, ["-c", "echo hi && sleep 1"]);
    let err = plugin
        .launch(&launch_request(
            image,
            &staged.execution_metadata,
            "",
            vec![8080],
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("forbidden user \"root\""), "{err}");

    let err = plugin
        .launch(&launch_request(image, "", "x", vec![8080]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("execution metadata"), "{err}");
}

#[test]
fn the_docker_guest_plans_port_http_and_process_checks() {
    let (plugin, _dir) = docker_lifecycle();
    let check = |kind, ports: Vec<u16>, options: Vec<(String, String)>| {
        let mut r = check_request(kind, Some(t::HealthCheckType::Process));
        r.ports = ports;
        r.options = options;
        plugin.healthcheck(&r).map(|c| c.value)
    };
    let plan = check(t::HealthCheckType::Port, vec![9000], vec![]).unwrap();
    assert!(
        matches!(plan.checks.as_slice(), [t::Probe::Tcp(p)] if p.port == 9000),
        "{plan:?}"
    );
    assert!(matches!(
        plan.readiness_checks.as_slice(),
        [t::Probe::ProcessAlive]
    ));
    let md = r#"{"ports":[{"Port":53,"Protocol":"udp"},{"Port":7000,"Protocol":"tcp"}]}"#;
    let plan = check(
        t::HealthCheckType::Http,
        vec![],
        vec![(EXECUTION_METADATA_OPTION.to_owned(), md.to_owned())],
    )
    .unwrap();
    assert!(
        matches!(plan.checks.as_slice(), [t::Probe::Http(p)] if p.port == 7000 && p.path == "/"),
        "the first exposed tcp port: {plan:?}"
    );
    let plan = check(t::HealthCheckType::Process, vec![], vec![]).unwrap();
    assert!(matches!(plan.checks.as_slice(), [t::Probe::ProcessAlive]));
    let err = check(t::HealthCheckType::Port, vec![], vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a port"), "{err}");
}
