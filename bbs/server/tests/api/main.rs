//! The BBS API end to end: a real BBS on a real embedded store, over real HTTP, driven by the
//! typed client (and raw HTTP where the point is bad input).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod actual_lrps;
mod bad_input;
mod convergence;
mod desired_lrps;
mod evacuation;
mod events;
mod leases;
mod lifecycles;
mod listings;
mod observability;
mod openapi;
mod policy;
mod tasks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use diego_bbs_client::BbsClient;
use diego_model::requests::*;
use diego_model::{
    Action, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, CellCapacity, CellPresence,
    DesiredLrp, PortMapping,
};
use tokio_util::sync::CancellationToken;

/// A BBS serving on 127.0.0.1 over a fresh embedded store; stopped when dropped.
#[allow(missing_debug_implementations)]
pub struct TestBbs {
    pub client: BbsClient,
    pub url: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestBbs {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_bbs() -> TestBbs {
    start_bbs_with(diego_bbs::Config::default()).await
}

pub async fn start_bbs_with(config: diego_bbs::Config) -> TestBbs {
    let dir = tempfile::tempdir().unwrap();
    let store = diego_store_redb::EmbeddedStore::open(dir.path().join("bbs.redb"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(diego_bbs::serve(listener, store, config, shutdown.clone()));
    TestBbs {
        client: BbsClient::new(&url),
        url,
        shutdown,
        _dir: dir,
    }
}

pub fn lrp(process_guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "tests".into(),
        rootfs: "preloaded:cflinuxfs4".into(),
        instances,
        action: Some(Action::run("/bin/app", &["--port", "8080"])),
        memory_mb: 128,
        disk_mb: 256,
        ports: vec![8080],
        ..DesiredLrp::default()
    }
}

pub fn key(process_guid: &str, index: i32) -> ActualLrpKey {
    ActualLrpKey::new(process_guid, index, "tests")
}

pub fn instance(guid: &str, cell: &str) -> ActualLrpInstanceKey {
    ActualLrpInstanceKey::new(guid, cell)
}

pub fn net(address: &str) -> ActualLrpNetInfo {
    ActualLrpNetInfo {
        address: address.into(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port: 61001,
            ..Default::default()
        }],
        instance_address: "10.255.0.2".into(),
        ..Default::default()
    }
}

pub async fn claim(
    bbs: &BbsClient,
    process_guid: &str,
    index: i32,
    on: &ActualLrpInstanceKey,
) -> Result<(), diego_bbs_client::ClientError> {
    bbs.claim_actual_lrp(&ClaimActualLrpRequest {
        process_guid: process_guid.into(),
        index,
        actual_lrp_instance_key: on.clone(),
    })
    .await
}

pub async fn start(
    bbs: &BbsClient,
    process_guid: &str,
    index: i32,
    on: &ActualLrpInstanceKey,
) -> Result<(), diego_bbs_client::ClientError> {
    bbs.start_actual_lrp(&StartActualLrpRequest {
        actual_lrp_key: key(process_guid, index),
        actual_lrp_instance_key: on.clone(),
        actual_lrp_net_info: net("192.0.2.10"),
        ..Default::default()
    })
    .await
}

pub async fn crash(
    bbs: &BbsClient,
    process_guid: &str,
    index: i32,
    on: &ActualLrpInstanceKey,
    why: &str,
) -> Result<(), diego_bbs_client::ClientError> {
    bbs.crash_actual_lrp(&CrashActualLrpRequest {
        actual_lrp_key: key(process_guid, index),
        actual_lrp_instance_key: on.clone(),
        error_message: why.into(),
    })
    .await
}

pub async fn ordinary(bbs: &BbsClient, process_guid: &str, index: i32) -> diego_model::ActualLrp {
    let all = bbs
        .actual_lrps(&ActualLrpsRequest {
            process_guid: process_guid.into(),
            index: Some(index),
            ..Default::default()
        })
        .await
        .unwrap();
    all.into_iter()
        .find(|a| a.presence == diego_model::Presence::Ordinary)
        .expect("an ordinary row")
}

/// A stand-in for a cell's rep: a real HTTP server that records the calls the BBS makes to it.
#[allow(missing_debug_implementations)]
pub struct FakeRep {
    pub url: String,
    pub calls: Arc<Mutex<Vec<String>>>,
}

pub async fn fake_rep() -> FakeRep {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let recorded = recorded.clone();
        async move {
            recorded
                .lock()
                .unwrap()
                .push(format!("{} {}", request.method(), request.uri().path()));
            axum::http::StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeRep {
        url: format!("http://{addr}"),
        calls,
    }
}

pub async fn register_cell(bbs: &BbsClient, cell_id: &str, rep_url: &str, ttl: i64) {
    let cell = CellPresence {
        cell_id: cell_id.into(),
        rep_address: rep_url.into(),
        rep_url: rep_url.into(),
        zone: "z1".into(),
        capacity: CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 10,
        },
        ..Default::default()
    };
    bbs.register_cell(&cell, ttl).await.unwrap();
}

/// Polls `check` until it holds, failing after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
