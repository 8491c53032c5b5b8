//! The auctioneer end to end: a real BBS on the embedded store, fake reps (axum servers
//! speaking the rep API and recording the work they get), the brain's HTTP API over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test
#![allow(missing_debug_implementations)]

mod placement;
mod policy;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use diego_auctioneer::{Auctioneer, AuctioneerConfig, HttpCells};
use diego_bbs_client::BbsClient;
use diego_model::requests::{ActualLrpsRequest, DesireTaskRequest};
use diego_model::{
    Action, ActualLrp, CellCapacity, CellPresence, DesiredLrp, LrpStartRequest, Provider,
    TaskDefinition,
};
use diego_rep_client::{CellState, ContainerState, Resources, Work};
use tokio_util::sync::CancellationToken;

pub use diego_testkit::TestBbs;

/// A BBS in this process over a fresh embedded store.
pub async fn start_bbs() -> TestBbs {
    TestBbs::start().await.unwrap()
}

/// How a fake rep answers `/work`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    RefuseAll,
}

#[derive(Debug)]
pub struct RepState {
    pub state: CellState,
    pub mode: Mode,
    /// Every `/work` body received.
    pub works: Vec<Work>,
    /// The request id each `/work` carried.
    pub request_ids: Vec<Option<String>>,
}

/// A rep that takes work without containers: it reserves capacity and lists the work in its
/// state as running at once (no starting containers, so later auctions see plain usage).
#[derive(Clone)]
pub struct FakeRep {
    pub cell_id: String,
    pub url: String,
    pub inner: Arc<Mutex<RepState>>,
    _stop: Arc<CancellationGuard>,
}

struct CancellationGuard(CancellationToken);
impl Drop for CancellationGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl FakeRep {
    /// Something already running on the cell: `memory_mb` used by one instance of `process`.
    pub fn preload(&self, process_guid: &str, memory_mb: i32) {
        let mut s = self.inner.lock().unwrap();
        s.state.available_resources.memory_mb -= memory_mb;
        s.state.available_resources.disk_mb -= 256;
        s.state.available_resources.containers -= 1;
        s.state.lrps.push(diego_rep_client::Lrp {
            instance_guid: format!("{process_guid}-0"),
            key: diego_model::ActualLrpKey::new(process_guid, 0, "tests"),
            resource: diego_model::Resource {
                memory_mb,
                disk_mb: 256,
                max_pids: 0,
            },
            state: ContainerState::Running,
            ..Default::default()
        });
    }

    pub fn works(&self) -> Vec<Work> {
        self.inner.lock().unwrap().works.clone()
    }

    pub fn lrp_keys(&self) -> Vec<(String, i32)> {
        self.works()
            .iter()
            .flat_map(|w| w.lrps.iter())
            .map(|l| (l.key.process_guid.clone(), l.key.index))
            .collect()
    }

    pub fn task_guids(&self) -> Vec<String> {
        self.works()
            .iter()
            .flat_map(|w| w.tasks.iter())
            .map(|t| t.task_guid.clone())
            .collect()
    }
}

async fn rep_state(State(s): State<Arc<Mutex<RepState>>>) -> axum::Json<CellState> {
    axum::Json(s.lock().unwrap().state.clone())
}

async fn rep_work(
    State(s): State<Arc<Mutex<RepState>>>,
    headers: axum::http::HeaderMap,
    axum::Json(work): axum::Json<Work>,
) -> axum::Json<Work> {
    let mut s = s.lock().unwrap();
    s.works.push(work.clone());
    let id = headers
        .get(diego_telemetry::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.request_ids.push(id);
    if s.mode == Mode::RefuseAll || work.cell_id != s.state.cell_id {
        return axum::Json(work);
    }
    let mut refused = Work::default();
    for mut lrp in work.lrps {
        let fits = s.state.available_resources.memory_mb >= lrp.resource.memory_mb
            && s.state.available_resources.containers >= 1;
        if !fits {
            refused.lrps.push(lrp);
            continue;
        }
        s.state.available_resources.memory_mb -= lrp.resource.memory_mb;
        s.state.available_resources.disk_mb -= lrp.resource.disk_mb;
        s.state.available_resources.containers -= 1;
        lrp.state = ContainerState::Running;
        s.state.lrps.push(lrp);
    }
    for task in work.tasks {
        s.state.available_resources.memory_mb -= task.resource.memory_mb;
        s.state.available_resources.disk_mb -= task.resource.disk_mb;
        s.state.available_resources.containers -= 1;
        s.state.tasks.push(task);
    }
    axum::Json(refused)
}

/// Starts a fake rep and registers its presence in the BBS.
pub async fn start_rep(bbs: &BbsClient, cell_id: &str, zone: &str, memory_mb: i32) -> FakeRep {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let total = Resources {
        memory_mb,
        disk_mb: 100_000,
        containers: 100,
    };
    let providers = vec![
        Provider {
            name: "preloaded".into(),
            properties: vec!["cflinuxfs4".into()],
        },
        Provider {
            name: "docker".into(),
            properties: vec![],
        },
    ];
    let inner = Arc::new(Mutex::new(RepState {
        state: CellState {
            rep_url: url.clone(),
            cell_id: cell_id.into(),
            zone: zone.into(),
            rootfs_providers: providers.clone(),
            available_resources: total,
            total_resources: total,
            ..Default::default()
        },
        mode: Mode::Accept,
        works: Vec::new(),
        request_ids: Vec::new(),
    }));
    let app = axum::Router::new()
        .route("/ping", get(|| async { "ok" }))
        .route("/state", get(rep_state))
        .route("/work", post(rep_work))
        .with_state(inner.clone());
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    let presence = CellPresence {
        cell_id: cell_id.into(),
        rep_address: url.clone(),
        rep_url: url.clone(),
        zone: zone.into(),
        capacity: CellCapacity {
            memory_mb,
            disk_mb: 100_000,
            containers: 100,
        },
        rootfs_providers: providers,
        ..Default::default()
    };
    bbs.register_cell(&presence, 60).await.unwrap();
    FakeRep {
        cell_id: cell_id.into(),
        url,
        inner,
        _stop: Arc::new(CancellationGuard(stop)),
    }
}

/// A brain's auctioneer serving its API on loopback; stopped when dropped.
pub struct TestBrain {
    pub auctioneer: Arc<Auctioneer>,
    pub url: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    _cache: tempfile::TempDir,
}

impl Drop for TestBrain {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An auctioneer on `bbs`, serving; active (and running auctions) if `active`.
pub async fn start_brain(bbs: &TestBbs, active: bool) -> TestBrain {
    let cache = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = AuctioneerConfig::new(&url, cache.path().join("policies"));
    let auctioneer = Auctioneer::new(
        config,
        bbs.client.clone(),
        Arc::new(HttpCells::new(Duration::from_secs(10))),
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(auctioneer.clone().serve(listener, shutdown.clone()));
    if active {
        auctioneer.activate().await;
        tokio::spawn(auctioneer.clone().run(shutdown.clone()));
    }
    TestBrain {
        auctioneer,
        url,
        http: reqwest::Client::new(),
        shutdown,
        _cache: cache,
    }
}

impl TestBrain {
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn start_lrps(&self, requests: &[LrpStartRequest]) {
        let (status, body) = self
            .post("/v1/lrps", &serde_json::to_value(requests).unwrap())
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

pub fn desired(process_guid: &str, instances: i32, memory_mb: i32, rootfs: &str) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "tests".into(),
        rootfs: rootfs.into(),
        instances,
        action: Some(Action::run("/bin/app", &[])),
        memory_mb,
        disk_mb: 256,
        ..DesiredLrp::default()
    }
}

/// Desires the LRP in the BBS (its instances are created UNCLAIMED) and answers the start
/// request the BBS would send.
pub async fn desire(bbs: &BbsClient, lrp: &DesiredLrp) -> LrpStartRequest {
    bbs.desire_lrp(lrp).await.unwrap();
    LrpStartRequest::new(lrp, (0..lrp.instances).collect())
}

pub fn task_request(guid: &str, memory_mb: i32) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "tests".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:cflinuxfs4".into(),
            memory_mb,
            action: Some(Action::run("/bin/echo", &["hi"])),
            ..Default::default()
        },
    }
}

pub async fn actual(bbs: &BbsClient, process_guid: &str, index: i32) -> ActualLrp {
    bbs.actual_lrps(&ActualLrpsRequest {
        process_guid: process_guid.into(),
        index: Some(index),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_iter()
    .next()
    .unwrap_or_else(|| panic!("no actual LRP {process_guid}/{index}"))
}

/// Polls `check` until it answers `Some` (or fails the test after `secs`).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
