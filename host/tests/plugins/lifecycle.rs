//! The lifecycle host API against the SDK's worked example.

use diego_host::lifecycle::types as t;
use diego_host::lifecycle::{LifecycleError, PlanCaps, StagingStep};
use diego_plugin_artifacts as artifacts;

use crate::{host, wasm};

fn request() -> t::StagingRequest {
    t::StagingRequest {
        staging_guid: "staging-1".into(),
        stack: "cflinuxfs4".into(),
        lifecycle_bundle_url: None,
        app_bits_url: "https://blobstore.internal/app.zip".into(),
        droplet_upload_url: "https://blobstore.internal/droplet".into(),
        build_artifacts_cache_download_url: None,
        build_artifacts_cache_upload_url: None,
        buildpacks: vec![],
        docker_image: None,
        docker_credentials: None,
        env: vec![],
        memory_mb: 1024,
        disk_mb: 4096,
        timeout_ms: 900_000,
        options: vec![],
    }
}

fn exited(node: u32, status: i32) -> t::Observation {
    t::Observation {
        statuses: vec![t::NodeStatus {
            node,
            outcome: t::NodeOutcome::Exited(status),
            stdout: Some(b"ok\n".to_vec()),
        }],
        files: vec![],
    }
}

#[test]
fn stage_resume_launch_and_healthcheck_through_the_example() {
    let (host, _dir) = host();
    let plugin = host
        .load_lifecycle(&wasm(artifacts::EXAMPLE_CUSTOM_LIFECYCLE))
        .expect("loads");
    let info = plugin.describe();
    assert_eq!(
        (info.name.as_str(), info.lifecycle_type.as_str()),
        ("static-site", "static")
    );
    assert!(
        info.kinds
            .contains(t::LifecycleKinds::BUILDER | t::LifecycleKinds::HEALTHCHECK)
    );

    let first = plugin.stage(&request()).expect("stage");
    assert_eq!(first.logs.len(), 1);
    assert_eq!(first.logs[0].message, "static-site: staging");
    let StagingStep::Continue(c) = first.value else {
        panic!("expected a plan")
    };
    assert_eq!(c.plan.nodes.len(), 3);
    assert!(
        matches!(&c.plan.nodes[c.plan.root as usize], t::Action::Serial(children) if children.len() == 2)
    );

    // The check node failed: staging fails with the guest's reason.
    let err = plugin
        .resume_staging(&c.state, &exited(1, 1))
        .expect_err("no index.html");
    assert!(
        matches!(
            &err,
            LifecycleError::Plugin {
                call: "resume-staging",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no index.html"), "{err}");

    let second = plugin
        .resume_staging(&c.state, &exited(1, 0))
        .expect("resume");
    let StagingStep::Continue(upload) = second.value else {
        panic!("expected the upload plan")
    };
    let done = plugin
        .resume_staging(&upload.state, &exited(1, 0))
        .expect("resume");
    let StagingStep::Done(result) = done.value else {
        panic!("expected done")
    };
    assert_eq!(result.process_types[0].name, "web");

    let launch = plugin
        .launch(&t::LaunchRequest {
            process_guid: "p".into(),
            process_type: "web".into(),
            stack: Some("cflinuxfs4".into()),
            lifecycle_bundle_url: None,
            start_command: result.process_types[0].command.clone(),
            droplet_url: Some("https://blobstore.internal/droplet".into()),
            droplet_checksum: None,
            docker_image: None,
            docker_credentials: None,
            execution_metadata: String::new(),
            env: vec![],
            ports: vec![8080],
            memory_mb: 256,
            disk_mb: 1024,
            options: vec![],
        })
        .expect("launch");
    assert!(launch.value.setup.is_some());
    assert_eq!(launch.value.main.user, "vcap");

    let check = plugin
        .healthcheck(&t::CheckRequest {
            health_check_type: t::HealthCheckType::Port,
            ports: vec![8080],
            http_endpoint: None,
            invocation_timeout_ms: None,
            interval_ms: None,
            start_timeout_ms: None,
            readiness: None,
            options: vec![],
        })
        .expect("healthcheck");
    assert!(matches!(
        check.value.checks.as_slice(),
        [t::Probe::Tcp(t::TcpProbe { port: 8080, .. })]
    ));
}

#[test]
fn a_plan_outside_the_caps_is_rejected_naming_the_node() {
    let (host, _dir) = host();
    let plugin = host
        .load_lifecycle(&wasm(artifacts::EXAMPLE_CUSTOM_LIFECYCLE))
        .expect("loads")
        .with_plan_caps(PlanCaps {
            allowed_url_prefixes: vec!["https://blobstore.internal/".into()],
            ..PlanCaps::default()
        });
    let mut bad = request();
    bad.app_bits_url = "https://elsewhere.example/app.zip".into();
    let err = plugin.stage(&bad).expect_err("URL not allowed");
    match &err {
        LifecycleError::Plan { error, .. } => assert_eq!(error.node, Some(0), "{err}"),
        other => panic!("expected a plan error, got {other:?}"),
    }
    assert!(err.to_string().contains("node 0"), "{err}");
}

#[test]
fn lifecycle_faults_are_reported_for_the_user() {
    let (host, _dir) = host();
    let limits = diego_host::Limits {
        deadline: std::time::Duration::from_millis(50),
        ..diego_host::Limits::lifecycle()
    };
    let plugin = host
        .load_lifecycle(&wasm(artifacts::TEST_LIFECYCLE_FAULTY))
        .expect("loads")
        .with_limits(limits);

    let err = plugin.stage(&request()).expect_err("loops");
    assert_eq!(
        err.to_string(),
        "lifecycle 'faulty' exceeded its 50ms deadline in stage"
    );

    let launch = t::LaunchRequest {
        process_guid: "p".into(),
        process_type: "web".into(),
        stack: None,
        lifecycle_bundle_url: None,
        start_command: "app".into(),
        droplet_url: None,
        droplet_checksum: None,
        docker_image: None,
        docker_credentials: None,
        execution_metadata: String::new(),
        env: vec![],
        ports: vec![8080],
        memory_mb: 256,
        disk_mb: 1024,
        options: vec![],
    };
    match plugin.launch(&launch) {
        Err(LifecycleError::Plan { error, .. }) => {
            assert_eq!(error.node, Some(1), "{error}");
            assert!(error.reason.contains("cycle"), "{error}");
        }
        other => panic!("expected a plan error, got {other:?}"),
    }

    let check = t::CheckRequest {
        health_check_type: t::HealthCheckType::Port,
        ports: vec![8080, 9090],
        http_endpoint: None,
        invocation_timeout_ms: None,
        interval_ms: None,
        start_timeout_ms: None,
        readiness: None,
        options: vec![],
    };
    let err = plugin.healthcheck(&check).expect_err("panics");
    assert_eq!(
        err.to_string(),
        "lifecycle 'faulty' panicked: healthcheck bug: 2 ports in healthcheck"
    );
}
