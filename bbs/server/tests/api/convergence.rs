//! Convergence (`POST /v1/converge`) end to end: a real BBS, a fake auctioneer that records what
//! it is asked to place, cells whose presences really expire, and — for states the API cannot
//! produce on purpose (an orphan, a completed task the BBS forgot to call back) — records
//! written straight into the store through `diego_bbs::keys`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_model::requests::*;
use diego_model::{
    Action, ActualLrp, ActualLrpState, ErrorType, LrpStartRequest, Presence, RestartPolicy, Task,
    TaskDefinition, TaskStartRequest, TaskState,
};
use diego_store::{Store, StoreExt};

use crate::*;

/// A stand-in auctioneer: records every `POST /v1/lrps` and `/v1/tasks` body.
#[allow(missing_debug_implementations)]
pub struct FakeAuctioneer {
    pub url: String,
    pub lrps: Arc<Mutex<Vec<Vec<LrpStartRequest>>>>,
    pub tasks: Arc<Mutex<Vec<Vec<TaskStartRequest>>>>,
}

impl FakeAuctioneer {
    fn lrp_posts(&self) -> Vec<Vec<LrpStartRequest>> {
        self.lrps.lock().unwrap().clone()
    }

    fn task_posts(&self) -> Vec<Vec<TaskStartRequest>> {
        self.tasks.lock().unwrap().clone()
    }

    /// Waits until `n` LRP posts arrived, then forgets them all.
    async fn drain_lrps(&self, n: usize) {
        eventually(10, "the auctioneer receives the expected posts", || async {
            self.lrps.lock().unwrap().len() >= n
        })
        .await;
        self.lrps.lock().unwrap().clear();
    }

    async fn drain_tasks(&self, n: usize) {
        eventually(
            10,
            "the auctioneer receives the expected task posts",
            || async { self.tasks.lock().unwrap().len() >= n },
        )
        .await;
        self.tasks.lock().unwrap().clear();
    }
}

pub async fn fake_auctioneer() -> FakeAuctioneer {
    let lrps: Arc<Mutex<Vec<Vec<LrpStartRequest>>>> = Arc::default();
    let tasks: Arc<Mutex<Vec<Vec<TaskStartRequest>>>> = Arc::default();
    let (lrp_sink, task_sink) = (lrps.clone(), tasks.clone());
    let app = axum::Router::new()
        .route(
            "/v1/lrps",
            axum::routing::post(move |axum::Json(body): axum::Json<Vec<LrpStartRequest>>| {
                let sink = lrp_sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        )
        .route(
            "/v1/tasks",
            axum::routing::post(move |axum::Json(body): axum::Json<Vec<TaskStartRequest>>| {
                let sink = task_sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeAuctioneer { url, lrps, tasks }
}

/// A BBS whose store the test can also write to directly.
async fn start_bbs_with_store(config: diego_bbs::Config) -> (TestBbs, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = diego_store_redb::EmbeddedStore::open(dir.path().join("bbs.redb"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(diego_bbs::serve(
        listener,
        store.clone(),
        config,
        shutdown.clone(),
    ));
    let bbs = TestBbs {
        client: BbsClient::new(&url),
        url,
        shutdown,
        _dir: dir,
    };
    (bbs, store)
}

fn config_for(auctioneer: &FakeAuctioneer) -> diego_bbs::Config {
    diego_bbs::Config {
        auctioneer_url: Some(auctioneer.url.clone()),
        ..diego_bbs::Config::default()
    }
}

async fn put_json<T: serde::Serialize>(store: &Arc<dyn Store>, key: &str, record: &T) {
    store
        .put(key, serde_json::to_vec(record).unwrap())
        .await
        .unwrap();
}

async fn rows(c: &BbsClient, process_guid: &str) -> Vec<ActualLrp> {
    c.actual_lrps(&ActualLrpsRequest {
        process_guid: process_guid.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn row(rows: &[ActualLrp], index: i32, presence: Presence) -> Option<&ActualLrp> {
    rows.iter()
        .find(|r| r.index == index && r.presence == presence)
}

/// Every (process guid, index) in the posts, sorted.
fn auctioned(posts: &[Vec<LrpStartRequest>]) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = posts
        .iter()
        .flatten()
        .flat_map(|r| r.indices.iter().map(|i| (r.process_guid.clone(), *i)))
        .collect();
    out.sort();
    out
}

async fn cell_gone(c: &BbsClient, cell_id: &str) {
    eventually(15, "the cell's presence expires", || async {
        !c.cells()
            .await
            .unwrap()
            .iter()
            .any(|cell| cell.cell_id == cell_id)
    })
    .await;
}

fn task_request(guid: &str) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "tests".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:cflinuxfs4".into(),
            memory_mb: 64,
            action: Some(Action::run("/bin/echo", &["hi"])),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn missing_instances_are_created_and_auctioned_in_one_batched_post() {
    let auctioneer = fake_auctioneer().await;
    let bbs = start_bbs_with(config_for(&auctioneer)).await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 3)).await.unwrap();
    c.desire_lrp(&lrp("worker", 2)).await.unwrap();
    auctioneer.drain_lrps(2).await;
    for (guid, index) in [("web", 1), ("web", 2), ("worker", 0)] {
        c.remove_actual_lrp(&RemoveActualLrpRequest {
            process_guid: guid.into(),
            index,
            actual_lrp_instance_key: None,
        })
        .await
        .unwrap();
    }

    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_created, 3, "{done:?}");
    assert_eq!(done.lrps_auctioned, 3, "{done:?}");
    // What the pass found, before it repaired (Diego's LRPsDesired, LRPsMissing, ...).
    assert_eq!(
        done.lrps,
        LrpCounts {
            desired: 5,
            unclaimed: 2,
            missing: 3,
            ..LrpCounts::default()
        }
    );
    for (guid, index) in [("web", 1), ("web", 2), ("worker", 0)] {
        assert_eq!(
            ordinary(c, guid, index).await.state,
            ActualLrpState::Unclaimed
        );
    }
    let posts = auctioneer.lrp_posts();
    assert_eq!(posts.len(), 1, "one post for the whole pass: {posts:?}");
    assert_eq!(posts[0].len(), 2, "one start request per process guid");
    let web = posts[0].iter().find(|r| r.process_guid == "web").unwrap();
    assert_eq!(web.indices, [1, 2]);
    assert_eq!(web.resource.memory_mb, 128);
    assert_eq!(web.placement_constraint.root_fs, "preloaded:cflinuxfs4");

    // A converged state needs nothing more.
    let again = c.converge().await.unwrap();
    assert_eq!(again.repairs(), ConvergeResponse::default());
}

#[tokio::test]
async fn stale_unclaimed_instances_are_auctioned_again_without_a_write() {
    let auctioneer = fake_auctioneer().await;
    let mut config = config_for(&auctioneer);
    config.convergence.stale_unclaimed = Duration::from_millis(200);
    let bbs = start_bbs_with(config).await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 2)).await.unwrap();
    auctioneer.drain_lrps(1).await;
    assert_eq!(
        c.converge().await.unwrap().lrps_auctioned,
        0,
        "not stale yet"
    );
    let before = rows(c, "web").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_auctioned, 2, "{done:?}");
    assert_eq!(
        auctioned(&auctioneer.lrp_posts()),
        [("web".to_string(), 0), ("web".to_string(), 1)]
    );
    assert_eq!(rows(c, "web").await, before, "records are left as they are");
}

#[tokio::test]
async fn instances_on_a_lost_cell_become_suspect_or_unclaimed_and_the_cell_coming_back_promotes_them()
 {
    let auctioneer = fake_auctioneer().await;
    let bbs = start_bbs_with(config_for(&auctioneer)).await;
    let c = &bbs.client;
    let rep = fake_rep().await;
    register_cell(c, "cell-1", &rep.url, 2).await;
    c.desire_lrp(&lrp("web", 2)).await.unwrap();
    auctioneer.drain_lrps(1).await;
    let on_cell_1 = instance("i-0", "cell-1");
    claim(c, "web", 0, &on_cell_1).await.unwrap();
    start(c, "web", 0, &on_cell_1).await.unwrap();
    claim(c, "web", 1, &instance("i-1", "cell-1"))
        .await
        .unwrap();
    register_cell(c, "cell-1", &rep.url, 2).await; // renewed
    let done = c.converge().await.unwrap();
    assert_eq!(
        done.repairs(),
        ConvergeResponse::default(),
        "the cell is alive"
    );

    cell_gone(c, "cell-1").await;
    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_suspected, 1, "{done:?}");
    assert_eq!(done.lrps_auctioned, 2, "{done:?}");
    assert_eq!(done.missing_cells, ["cell-1"]);
    let now = rows(c, "web").await;
    let suspect = row(&now, 0, Presence::Suspect).expect("a suspect row");
    assert_eq!(
        (
            suspect.state,
            suspect.cell_id.as_str(),
            suspect.instance_guid.as_str()
        ),
        (ActualLrpState::Running, "cell-1", "i-0")
    );
    let replacement = row(&now, 0, Presence::Ordinary).unwrap();
    assert_eq!(replacement.state, ActualLrpState::Unclaimed);
    assert!(replacement.instance_guid.is_empty());
    let unclaimed = row(&now, 1, Presence::Ordinary).unwrap();
    assert_eq!(unclaimed.state, ActualLrpState::Unclaimed);
    assert!(unclaimed.cell_id.is_empty());
    assert_eq!(
        auctioned(&auctioneer.lrp_posts()),
        [("web".to_string(), 0), ("web".to_string(), 1)]
    );
    assert_eq!(auctioneer.lrp_posts().len(), 1, "one post");

    // A second pass keeps the suspect: its replacement is not running yet.
    let again = c.converge().await.unwrap();
    assert_eq!(again.lrps_suspected, 0);
    assert!(row(&rows(c, "web").await, 0, Presence::Suspect).is_some());

    // The cell comes back: the suspect is the instance again and its replacement goes.
    register_cell(c, "cell-1", &rep.url, 30).await;
    let back = c.converge().await.unwrap();
    assert_eq!(back.lrps_retired, 1, "{back:?}");
    let now = rows(c, "web").await;
    assert!(row(&now, 0, Presence::Suspect).is_none());
    let promoted = row(&now, 0, Presence::Ordinary).unwrap();
    assert_eq!(
        (promoted.state, promoted.instance_guid.as_str()),
        (ActualLrpState::Running, "i-0")
    );
}

#[tokio::test]
async fn a_suspect_whose_replacement_runs_is_removed_and_a_lost_replacement_is_unclaimed() {
    let auctioneer = fake_auctioneer().await;
    let (bbs, store) = start_bbs_with_store(config_for(&auctioneer)).await;
    let c = &bbs.client;
    register_cell(c, "cell-2", "http://127.0.0.1:1", 60).await;
    c.desire_lrp(&lrp("web", 2)).await.unwrap();
    auctioneer.drain_lrps(1).await;
    // Index 0: the replacement runs on cell-2 while a suspect on lost cell-1 is left over.
    let on_cell_2 = instance("i-new", "cell-2");
    claim(c, "web", 0, &on_cell_2).await.unwrap();
    start(c, "web", 0, &on_cell_2).await.unwrap();
    let mut suspect = ordinary(c, "web", 0).await;
    suspect.presence = Presence::Suspect;
    suspect.instance_guid = "i-old".into();
    suspect.cell_id = "cell-1".into();
    put_json(
        &store,
        &diego_bbs::keys::actual("web", 0, Presence::Suspect),
        &suspect,
    )
    .await;
    // Index 1: a suspect on lost cell-1, and its replacement lost too (on lost cell-3).
    let mut lost_suspect = suspect.clone();
    lost_suspect.index = 1;
    put_json(
        &store,
        &diego_bbs::keys::actual("web", 1, Presence::Suspect),
        &lost_suspect,
    )
    .await;
    let mut lost_replacement = suspect.clone();
    lost_replacement.index = 1;
    lost_replacement.presence = Presence::Ordinary;
    lost_replacement.instance_guid = "i-3".into();
    lost_replacement.cell_id = "cell-3".into();
    put_json(
        &store,
        &diego_bbs::keys::actual("web", 1, Presence::Ordinary),
        &lost_replacement,
    )
    .await;

    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_retired, 1, "the suspect of index 0: {done:?}");
    assert_eq!(done.lrps_suspected, 0, "index 1 already has a suspect");
    assert_eq!(done.missing_cells, ["cell-3"]);
    let now = rows(c, "web").await;
    assert!(row(&now, 0, Presence::Suspect).is_none());
    assert_eq!(
        row(&now, 0, Presence::Ordinary).unwrap().state,
        ActualLrpState::Running
    );
    assert!(
        row(&now, 1, Presence::Suspect).is_some(),
        "kept: nothing runs"
    );
    assert_eq!(
        row(&now, 1, Presence::Ordinary).unwrap().state,
        ActualLrpState::Unclaimed
    );
    assert_eq!(auctioned(&auctioneer.lrp_posts()), [("web".to_string(), 1)]);
}

#[tokio::test]
async fn evacuating_copies_on_lost_cells_are_removed() {
    let auctioneer = fake_auctioneer().await;
    let bbs = start_bbs_with(config_for(&auctioneer)).await;
    let c = &bbs.client;
    register_cell(c, "cell-1", "http://127.0.0.1:1", 1).await;
    c.desire_lrp(&lrp("web", 1)).await.unwrap();
    let on_cell_1 = instance("i-0", "cell-1");
    claim(c, "web", 0, &on_cell_1).await.unwrap();
    start(c, "web", 0, &on_cell_1).await.unwrap();
    let keep = c
        .evacuate_running(&EvacuateRunningActualLrpRequest {
            actual_lrp_key: key("web", 0),
            actual_lrp_instance_key: on_cell_1.clone(),
            actual_lrp_net_info: net("192.0.2.10"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(keep);
    assert!(row(&rows(c, "web").await, 0, Presence::Evacuating).is_some());

    cell_gone(c, "cell-1").await;
    let done = c.converge().await.unwrap();
    assert_eq!(done.missing_cells, ["cell-1"]);
    let now = rows(c, "web").await;
    assert!(row(&now, 0, Presence::Evacuating).is_none(), "{now:?}");
    assert_eq!(
        row(&now, 0, Presence::Ordinary).unwrap().state,
        ActualLrpState::Unclaimed
    );
}

#[tokio::test]
async fn extra_and_orphaned_instances_are_retired_only_while_their_domain_is_fresh() {
    let auctioneer = fake_auctioneer().await;
    let (bbs, store) = start_bbs_with_store(config_for(&auctioneer)).await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 1)).await.unwrap();
    // Index 5 is extra; "gone" has no desired LRP (an instance and a suspect).
    let extra = ActualLrp::unclaimed(&key("web", 5), "e1", 1);
    put_json(
        &store,
        &diego_bbs::keys::actual("web", 5, Presence::Ordinary),
        &extra,
    )
    .await;
    let orphan = ActualLrp::unclaimed(&key("gone", 0), "e2", 1);
    put_json(
        &store,
        &diego_bbs::keys::actual("gone", 0, Presence::Ordinary),
        &orphan,
    )
    .await;
    let mut orphan_suspect = orphan.clone();
    orphan_suspect.presence = Presence::Suspect;
    orphan_suspect.state = ActualLrpState::Running;
    orphan_suspect.instance_guid = "i".into();
    orphan_suspect.cell_id = "cell-x".into();
    orphan_suspect.address = "192.0.2.1".into();
    put_json(
        &store,
        &diego_bbs::keys::actual("gone", 0, Presence::Suspect),
        &orphan_suspect,
    )
    .await;

    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_retired, 0, "domain not fresh: {done:?}");
    assert_eq!(done.lrps.desired, 1, "{done:?}");
    assert_eq!(done.lrps.extra, 2, "index 5 and the orphan: {done:?}");
    assert_eq!(done.lrps.suspect_running, 1, "{done:?}");
    assert!(row(&rows(c, "web").await, 5, Presence::Ordinary).is_some());
    assert_eq!(rows(c, "gone").await.len(), 2);

    c.upsert_domain("tests", 0).await.unwrap();
    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_retired, 3, "{done:?}");
    let web = rows(c, "web").await;
    assert_eq!(web.len(), 1, "{web:?}");
    assert!(row(&web, 0, Presence::Ordinary).is_some());
    assert!(rows(c, "gone").await.is_empty());
}

#[tokio::test]
async fn crashed_instances_are_restarted_once_their_backoff_elapsed() {
    let auctioneer = fake_auctioneer().await;
    let mut config = config_for(&auctioneer);
    // The first crash past the immediate restarts waits backoff_min = 300 ms.
    config.restart_policy = RestartPolicy {
        immediate_restarts: 1,
        backoff_min: Duration::from_millis(300),
        max_backoff: Duration::from_secs(10),
        max_restart_attempts: 200,
    };
    let bbs = start_bbs_with(config).await;
    let c = &bbs.client;
    register_cell(c, "cell-1", "http://127.0.0.1:1", 60).await;
    c.desire_lrp(&lrp("web", 1)).await.unwrap();
    auctioneer.drain_lrps(1).await;
    let on = instance("i-0", "cell-1");
    claim(c, "web", 0, &on).await.unwrap();
    start(c, "web", 0, &on).await.unwrap();
    crash(c, "web", 0, &on, "exit 1").await.unwrap();
    assert_eq!(ordinary(c, "web", 0).await.state, ActualLrpState::Crashed);
    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_auctioned, 0, "still backing off: {done:?}");
    assert_eq!(done.lrps.crashed, 1, "{done:?}");
    assert_eq!(done.lrps.crashing_desired, 1, "{done:?}");
    assert_eq!(done.lrps.running, 0, "{done:?}");
    assert_eq!(ordinary(c, "web", 0).await.state, ActualLrpState::Crashed);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_auctioned, 1, "{done:?}");
    let restarted = ordinary(c, "web", 0).await;
    assert_eq!(restarted.state, ActualLrpState::Unclaimed);
    assert_eq!(restarted.crash_count, 1, "the count is kept");
    assert_eq!(auctioned(&auctioneer.lrp_posts()), [("web".to_string(), 0)]);
}

#[tokio::test]
async fn pending_tasks_are_kicked_and_expire() {
    let auctioneer = fake_auctioneer().await;
    let mut config = config_for(&auctioneer);
    config.convergence.kick_task = Duration::from_millis(100);
    config.convergence.expire_pending_task = Duration::from_millis(700);
    let bbs = start_bbs_with(config).await;
    let c = &bbs.client;
    c.desire_task(&task_request("t1")).await.unwrap();
    auctioneer.drain_tasks(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = c.converge().await.unwrap();
    assert_eq!((done.tasks_kicked, done.tasks_pruned), (1, 0), "{done:?}");
    let posts = auctioneer.task_posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0][0].task_guid, "t1");
    assert_eq!(c.task("t1").await.unwrap().state, TaskState::Pending);

    tokio::time::sleep(Duration::from_millis(700)).await;
    let done = c.converge().await.unwrap();
    assert_eq!((done.tasks_kicked, done.tasks_pruned), (0, 1), "{done:?}");
    let t = c.task("t1").await.unwrap();
    assert_eq!(
        (t.state, t.failed, t.failure_reason.as_str()),
        (TaskState::Completed, true, "not started within time limit")
    );
    assert!(t.first_completed_at > 0);
}

#[tokio::test]
async fn running_tasks_on_a_lost_cell_fail() {
    let auctioneer = fake_auctioneer().await;
    let bbs = start_bbs_with(config_for(&auctioneer)).await;
    let c = &bbs.client;
    register_cell(c, "cell-1", "http://127.0.0.1:1", 1).await;
    register_cell(c, "cell-2", "http://127.0.0.1:1", 60).await;
    c.desire_task(&task_request("lost")).await.unwrap();
    c.desire_task(&task_request("alive")).await.unwrap();
    c.start_task("lost", "cell-1").await.unwrap();
    c.start_task("alive", "cell-2").await.unwrap();
    cell_gone(c, "cell-1").await;
    let done = c.converge().await.unwrap();
    assert_eq!(done.tasks_pruned, 1, "{done:?}");
    assert_eq!(done.missing_cells, ["cell-1"]);
    let t = c.task("lost").await.unwrap();
    assert_eq!(
        (t.state, t.failed, t.failure_reason.as_str()),
        (
            TaskState::Completed,
            true,
            "cell disappeared before completion"
        )
    );
    assert_eq!(c.task("alive").await.unwrap().state, TaskState::Running);
}

#[tokio::test]
async fn resolving_tasks_are_demoted_and_completed_tasks_expire() {
    let auctioneer = fake_auctioneer().await;
    let mut config = config_for(&auctioneer);
    config.convergence.kick_task = Duration::from_millis(100);
    config.convergence.expire_completed_task = Duration::from_millis(600);
    let bbs = start_bbs_with(config).await;
    let c = &bbs.client;
    for guid in ["stuck", "done"] {
        c.desire_task(&task_request(guid)).await.unwrap();
        c.start_task(guid, "cell-1").await.unwrap();
        c.complete_task(&CompleteTaskRequest {
            task_guid: guid.into(),
            cell_id: "cell-1".into(),
            result: "42".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.resolving_task("stuck").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = c.converge().await.unwrap();
    assert_eq!(done.tasks_pruned, 0, "{done:?}");
    assert_eq!(c.task("stuck").await.unwrap().state, TaskState::Completed);
    assert_eq!(c.task("done").await.unwrap().state, TaskState::Completed);

    tokio::time::sleep(Duration::from_millis(600)).await;
    let done = c.converge().await.unwrap();
    assert_eq!(done.tasks_pruned, 2, "{done:?}");
    for guid in ["stuck", "done"] {
        let err = c.task(guid).await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorType::ResourceNotFound));
    }
}

/// A callback endpoint that answers 503 to its first `busy` calls, then 200.
async fn callback_server(busy: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = calls.clone();
    let app = axum::Router::new().route(
        "/done",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                let mut calls = sink.lock().unwrap();
                calls.push(body["task_guid"].as_str().unwrap_or_default().to_string());
                if calls.len() <= busy {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

#[tokio::test]
async fn a_callback_that_stayed_busy_is_retried_by_convergence() {
    let auctioneer = fake_auctioneer().await;
    let mut config = config_for(&auctioneer);
    config.convergence.kick_task = Duration::from_millis(100);
    let bbs = start_bbs_with(config).await;
    let c = &bbs.client;
    let (url, calls) = callback_server(3).await;
    let mut request = task_request("t1");
    request.task_definition.completion_callback_url = url;
    c.desire_task(&request).await.unwrap();
    c.start_task("t1", "cell-1").await.unwrap();
    c.complete_task(&CompleteTaskRequest {
        task_guid: "t1".into(),
        cell_id: "cell-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    eventually(
        10,
        "the callback worker gives up after 3 busy answers",
        || async { calls.lock().unwrap().len() == 3 },
    )
    .await;
    eventually(5, "the task is left RESOLVING", || async {
        c.task("t1").await.unwrap().state == TaskState::Resolving
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let done = c.converge().await.unwrap();
    assert_eq!(done.callbacks_retried, 1, "{done:?}");
    eventually(10, "the retried callback resolves the task", || async {
        c.task("t1").await.is_err()
    })
    .await;
    assert_eq!(calls.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_completed_task_whose_callback_never_ran_gets_it() {
    let auctioneer = fake_auctioneer().await;
    let mut config = config_for(&auctioneer);
    config.convergence.kick_task = Duration::from_millis(100);
    let (bbs, store) = start_bbs_with_store(config).await;
    let c = &bbs.client;
    let (url, calls) = callback_server(0).await;
    // As a BBS that crashed between completing the task and calling back would leave it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let now = i64::try_from(now).unwrap();
    let mut task = Task {
        task_definition: task_request("t1").task_definition,
        task_guid: "t1".into(),
        domain: "tests".into(),
        created_at: now - 2_000_000_000,
        updated_at: now - 1_000_000_000,
        first_completed_at: now - 1_000_000_000,
        state: TaskState::Completed,
        ..Task::default()
    };
    task.task_definition.completion_callback_url = url;
    put_json(&store, &diego_bbs::keys::task("t1"), &task).await;

    let done = c.converge().await.unwrap();
    assert_eq!(done.callbacks_retried, 1, "{done:?}");
    eventually(10, "the callback resolves the task", || async {
        c.task("t1").await.is_err()
    })
    .await;
    assert_eq!(*calls.lock().unwrap(), ["t1"]);
}

#[tokio::test]
async fn the_auctioneer_is_found_through_its_lock_and_followed_when_it_moves() {
    let bbs = start_bbs().await; // no auctioneer_url
    let c = &bbs.client;
    // No lock: the request is dropped (the converger repairs), nothing fails.
    c.desire_lrp(&lrp("before", 1)).await.unwrap();

    // The lock names a brain that is gone.
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    c.lock("auctioneer", "brain-1", &dead, 1).await.unwrap();
    c.desire_lrp(&lrp("lost", 1)).await.unwrap();

    // The brain failed over: the new one holds the lock with its URL.
    let auctioneer = fake_auctioneer().await;
    eventually(10, "brain-1's lock lapses", || async {
        c.lock("auctioneer", "brain-2", &auctioneer.url, 15)
            .await
            .is_ok()
    })
    .await;
    c.desire_lrp(&lrp("web", 2)).await.unwrap();
    eventually(10, "the new brain gets the auction", || async {
        !auctioneer.lrp_posts().is_empty()
    })
    .await;
    assert_eq!(
        auctioned(&auctioneer.lrp_posts()),
        [("web".to_string(), 0), ("web".to_string(), 1)]
    );

    // Convergence finds it the same way: the dropped requests are placed now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    auctioneer.lrps.lock().unwrap().clear();
    c.remove_actual_lrp(&RemoveActualLrpRequest {
        process_guid: "before".into(),
        index: 0,
        actual_lrp_instance_key: None,
    })
    .await
    .unwrap();
    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_created, 1, "{done:?}");
    assert_eq!(
        auctioned(&auctioneer.lrp_posts()),
        [("before".to_string(), 0)]
    );
}

#[tokio::test]
async fn converge_refuses_unknown_fields_and_accepts_an_empty_body() {
    let bbs = start_bbs().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/converge", bbs.url);
    let bad = http.post(&url).body(r#"{"x":1}"#).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let empty = http.post(&url).send().await.unwrap();
    assert_eq!(empty.status(), 200);
    let body: ConvergeResponse = empty.json().await.unwrap();
    assert_eq!(body.repairs(), ConvergeResponse::default());
}

/// Many instances at once: when every instance of several large LRPs has gone stale, one pass
/// auctions them all, each LRP as one start request of all its indices, in a single post.
/// (How long passes take at 100,000 instances is a benchmark's question, not a test's.)
#[tokio::test]
async fn a_pass_over_thousands_of_stale_instances_auctions_them_in_one_post() {
    let auctioneer = fake_auctioneer().await;
    let mut config = config_for(&auctioneer);
    config.convergence.stale_unclaimed = Duration::from_secs(2);
    let bbs = start_bbs_with(config).await;
    let c = &bbs.client;
    for i in 0..5 {
        c.desire_lrp(&lrp(&format!("app-{i}"), 1000)).await.unwrap();
    }
    let done = c.converge().await.unwrap();
    assert_eq!(
        done.repairs(),
        ConvergeResponse::default(),
        "nothing is stale yet"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    auctioneer.lrps.lock().unwrap().clear();
    let done = c.converge().await.unwrap();
    assert_eq!(done.lrps_auctioned, 5_000);
    assert_eq!(
        auctioneer.lrp_posts().len(),
        1,
        "5 start requests of 1,000 indices, in one post"
    );
}
