//! The rep over the real NativeBackend (needs root): an LRP in a busybox container passes its
//! TCP check, runs, answers on its host port, and crashes when its process is killed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use diego_bbs_client::BbsClient;
use diego_garden::native::NativeBackend;
use diego_garden::{Backend, ProcessSpec};
use diego_model::requests::ActualLrpsRequest;
use diego_model::{
    Action, ActualLrp, ActualLrpKey, ActualLrpState, Check, CheckDefinition, DesiredLrp,
    PlacementConstraint, Presence, Resource, TcpCheck,
};
use diego_rep::{Config, GardenSettings, Rep};
use diego_rep_client::{Lrp, RepClient, Work};
use diego_testkit::root::{busybox_rootfs, garden_init_bin, root_or_skip};
use tokio_util::sync::CancellationToken;

async fn ordinary(bbs: &BbsClient, process_guid: &str) -> Option<ActualLrp> {
    bbs.actual_lrps(&ActualLrpsRequest {
        process_guid: process_guid.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_iter()
    .find(|a| a.presence == Presence::Ordinary)
}

async fn eventually<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test]
async fn an_lrp_runs_in_a_real_container_answers_on_its_host_port_and_crashes_when_killed() {
    if !root_or_skip("rep root") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();

    // the BBS
    let bbs_dir = tempfile::tempdir().unwrap();
    let store = diego_store_redb::EmbeddedStore::open(bbs_dir.path().join("bbs.redb"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bbs_url = format!("http://{}", listener.local_addr().unwrap());
    let stop_bbs = CancellationToken::new();
    tokio::spawn(diego_bbs::serve(
        listener,
        store,
        diego_bbs::Config::default(),
        stop_bbs.clone(),
    ));
    let bbs = BbsClient::new(&bbs_url);

    // the cell: 127.0.0.200 gives it its own bridge, subnet and host ports
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        cell_id: "root-cell".into(),
        listen: "127.0.0.200:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        preloaded_rootfses: BTreeMap::from([("busybox".into(), busybox_rootfs())]),
        bbs_url: bbs_url.clone(),
        liveness_interval: Duration::from_millis(500),
        startup_check_interval: Duration::from_millis(100),
        graceful_shutdown_interval: Duration::from_secs(2),
        garden: GardenSettings {
            init_bin: Some(garden_init_bin()),
            ..GardenSettings::default()
        },
        ..Config::default()
    };
    let backend = Arc::new(NativeBackend::new(config.native_config()).await.unwrap());
    let rep = Rep::start(config, bbs.clone(), backend.clone())
        .await
        .unwrap();
    let client = RepClient::new(rep.url(), Duration::from_secs(10));

    let lrp = DesiredLrp {
        process_guid: "root-web".into(),
        domain: "tests".into(),
        rootfs: "preloaded:busybox".into(),
        instances: 1,
        action: Some(Action::run(
            "sh",
            &[
                "-c",
                "mkdir -p /www && echo hi-from-$CF_INSTANCE_INDEX > /www/index.html && exec httpd -f -p $PORT -h /www",
            ],
        )),
        memory_mb: 64,
        disk_mb: 64,
        ports: vec![8080],
        start_timeout_ms: 20_000,
        check_definition: Some(CheckDefinition {
            checks: vec![Check {
                tcp_check: Some(TcpCheck {
                    port: 8080,
                    ..TcpCheck::default()
                }),
                http_check: None,
            }],
            ..CheckDefinition::default()
        }),
        log_source: "APP/PROC/WEB".into(),
        ..DesiredLrp::default()
    };
    bbs.desire_lrp(&lrp).await.unwrap();
    let offer = Lrp {
        key: ActualLrpKey::new("root-web", 0, "tests"),
        placement_constraint: PlacementConstraint {
            root_fs: lrp.rootfs.clone(),
            ..PlacementConstraint::default()
        },
        resource: Resource {
            memory_mb: 64,
            disk_mb: 64,
            max_pids: 0,
        },
        ..Lrp::default()
    };
    let refused = client
        .perform(&Work {
            lrps: vec![offer],
            tasks: Vec::new(),
            cell_id: "root-cell".into(),
        })
        .await
        .unwrap();
    assert!(refused.is_empty());

    let running = eventually("RUNNING", 30, || async {
        ordinary(&bbs, "root-web")
            .await
            .filter(|a| a.state == ActualLrpState::Running)
    })
    .await;
    assert_eq!(running.address, "127.0.0.200");
    assert!(running.instance_address.starts_with("10.254.200."));
    let host_port = u16::try_from(running.ports[0].host_port).unwrap();
    assert!((52800..52864).contains(&host_port), "{host_port}");
    let body = http_get(SocketAddr::from(([127, 0, 0, 1], host_port))).unwrap();
    assert!(body.contains("hi-from-0"), "{body}");

    // kill the app: the instance crashes and its container goes
    let guid = running.instance_guid.clone();
    let out = backend
        .run_and_wait(
            &guid,
            ProcessSpec {
                argv: vec!["sh".into(), "-c".into(), "kill -9 $(pidof httpd)".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0, "{}", out.stderr_str());
    let crashed = eventually("the crash", 20, || async {
        ordinary(&bbs, "root-web")
            .await
            .filter(|a| a.crash_count == 1)
    })
    .await;
    assert_eq!(crashed.crash_reason, "APP/PROC/WEB: Exited with status 137");
    eventually("the container to go", 20, || async {
        (!backend.lookup(&guid).await.unwrap()).then_some(())
    })
    .await;

    rep.stop().await;
    stop_bbs.cancel();
}
