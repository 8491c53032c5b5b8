//! The rep end to end without root: a real BBS on an embedded store, the rep's real HTTP API,
//! and a scripted in-memory Garden backend.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test
#![allow(missing_debug_implementations)]

mod backend;
mod evacuation;
mod lrps;
mod tasks;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backend::TestBackend;
use diego_bbs_client::BbsClient;
use diego_model::requests::ActualLrpsRequest;
use diego_model::{Action, ActualLrp, DesiredLrp, PlacementConstraint, Presence, Resource};
use diego_rep::{Config, Rep};
use diego_rep_client::{Lrp, RepClient, Work};

pub use diego_testkit::TestBbs;

/// A BBS in this process over a fresh embedded store.
pub async fn start_bbs() -> TestBbs {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    TestBbs::start().await.unwrap()
}

/// A rep over a [`TestBackend`].
pub struct Cell {
    pub rep: Rep,
    pub backend: Arc<TestBackend>,
    pub client: RepClient,
    pub dir: tempfile::TempDir,
}

pub fn cell_config(cell_id: &str, dir: &std::path::Path) -> Config {
    Config {
        cell_id: cell_id.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        memory_mb: 1024,
        disk_mb: 2048,
        max_containers: 3,
        preloaded_rootfses: BTreeMap::from([("cflinuxfs4".into(), dir.join("rootfs"))]),
        placement_tags: vec!["blue".into()],
        presence_ttl: Duration::from_secs(3),
        liveness_interval: Duration::from_millis(200),
        startup_check_interval: Duration::from_millis(50),
        evacuation_poll_interval: Duration::from_millis(100),
        graceful_shutdown_interval: Duration::from_secs(1),
        ..Config::default()
    }
}

pub async fn start_cell(bbs: &TestBbs, cell_id: &str, tweak: impl FnOnce(&mut Config)) -> Cell {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cell_config(cell_id, dir.path());
    tweak(&mut config);
    let backend = Arc::new(TestBackend::default());
    let rep = Rep::start(config, bbs.client.clone(), backend.clone())
        .await
        .unwrap();
    let client = RepClient::new(rep.url(), Duration::from_secs(10));
    Cell {
        rep,
        backend,
        client,
        dir,
    }
}

/// A desired LRP on the preloaded stack whose action serves until stopped.
pub fn desired(process_guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "tests".into(),
        rootfs: "preloaded:cflinuxfs4".into(),
        instances,
        action: Some(Action::run("serve", &[])),
        memory_mb: 256,
        disk_mb: 256,
        ports: vec![8080],
        log_source: "APP/PROC/WEB".into(),
        ..DesiredLrp::default()
    }
}

/// The auction's offer of instance `index` of `lrp`.
pub fn offer(lrp: &DesiredLrp, index: i32) -> Lrp {
    Lrp {
        instance_guid: String::new(),
        key: diego_model::ActualLrpKey::new(lrp.process_guid.clone(), index, lrp.domain.clone()),
        placement_constraint: PlacementConstraint {
            root_fs: lrp.rootfs.clone(),
            ..PlacementConstraint::default()
        },
        resource: Resource {
            memory_mb: lrp.memory_mb,
            disk_mb: lrp.disk_mb,
            max_pids: 0,
        },
        ..Lrp::default()
    }
}

pub fn lrp_work(cell: &str, lrps: Vec<Lrp>) -> Work {
    Work {
        lrps,
        tasks: Vec::new(),
        cell_id: cell.into(),
    }
}

pub async fn ordinary(bbs: &BbsClient, process_guid: &str, index: i32) -> Option<ActualLrp> {
    rows(bbs, process_guid, index)
        .await
        .into_iter()
        .find(|a| a.presence == Presence::Ordinary)
}

pub async fn rows(bbs: &BbsClient, process_guid: &str, index: i32) -> Vec<ActualLrp> {
    bbs.actual_lrps(&ActualLrpsRequest {
        process_guid: process_guid.into(),
        index: Some(index),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Polls `check` until it gives a value, failing after `secs` seconds with `what`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Desires `lrp`, offers index 0 to `cell`, and waits until it runs there.
pub async fn run_instance(bbs: &TestBbs, cell: &Cell, lrp: &DesiredLrp) -> ActualLrp {
    bbs.client.desire_lrp(lrp).await.unwrap();
    let refused = cell
        .client
        .perform(&lrp_work(cell.rep.cell_id(), vec![offer(lrp, 0)]))
        .await
        .unwrap();
    assert!(refused.is_empty(), "refused: {refused:?}");
    let cell_id = cell.rep.cell_id().to_string();
    eventually("the instance to run", 10, || async {
        ordinary(&bbs.client, &lrp.process_guid, 0)
            .await
            .filter(|a| a.state == diego_model::ActualLrpState::Running && a.cell_id == cell_id)
    })
    .await
}
