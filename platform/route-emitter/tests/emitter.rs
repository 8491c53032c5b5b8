//! The emitter end to end: a real BBS in this process, a real router, real backends. LRPs are
//! desired, claimed and started through the BBS client as a rep would, and the routes are
//! watched appearing and going on the router and through its proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diego_bbs_client::BbsClient;
use diego_model::requests::*;
use diego_model::{
    Action, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, DesiredLrp, PortMapping,
};
use diego_route_emitter::{EmitterConfig, RouteEmitter};
use diego_router::{Endpoint, Router, RouterConfig};
use diego_testkit::bbs::TestBbs;
use tokio_util::sync::CancellationToken;

const HOST: &str = "app.dev.local";

struct Served {
    router: Router,
    proxy: String,
    admin: String,
    stop: CancellationToken,
}

async fn serve_router(admin_addr: &str) -> Served {
    let router = Router::new(RouterConfig::default());
    let stop = CancellationToken::new();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind(admin_addr).await.unwrap();
    let served = Served {
        router: router.clone(),
        proxy: format!("http://{}", proxy.local_addr().unwrap()),
        admin: format!("http://{}", admin.local_addr().unwrap()),
        stop: stop.clone(),
    };
    tokio::spawn(router.clone().serve_proxy(proxy, stop.clone()));
    tokio::spawn(router.serve_admin(admin, stop));
    served
}

async fn backend(name: &'static str) -> (SocketAddr, CancellationToken) {
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { name }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await
    });
    (addr, stop)
}

fn desired(process_guid: &str, instances: i32) -> DesiredLrp {
    let mut routes = BTreeMap::new();
    routes.insert(
        "cf-router".to_string(),
        serde_json::json!([{ "hostnames": [HOST], "port": 8080 }]),
    );
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "tests".into(),
        rootfs: "preloaded:cflinuxfs4".into(),
        instances,
        action: Some(Action::run("/bin/app", &[])),
        memory_mb: 64,
        disk_mb: 64,
        ports: vec![8080],
        routes: Some(routes),
        log_guid: "app-log".into(),
        ..DesiredLrp::default()
    }
}

fn instance(index: i32) -> ActualLrpInstanceKey {
    ActualLrpInstanceKey::new(format!("instance-{index}"), "cell-1")
}

/// Claims and starts instance `index` as a rep would, its port 8080 mapped to `backend`.
async fn run_instance(bbs: &BbsClient, pg: &str, index: i32, backend: SocketAddr) {
    bbs.claim_actual_lrp(&ClaimActualLrpRequest {
        process_guid: pg.into(),
        index,
        actual_lrp_instance_key: instance(index),
    })
    .await
    .unwrap();
    bbs.start_actual_lrp(&StartActualLrpRequest {
        actual_lrp_key: ActualLrpKey::new(pg, index, "tests"),
        actual_lrp_instance_key: instance(index),
        actual_lrp_net_info: ActualLrpNetInfo {
            address: backend.ip().to_string(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: u32::from(backend.port()),
                ..Default::default()
            }],
            instance_address: "10.255.0.2".into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Polls the router's table until `check` holds for `HOST`'s endpoints (`None`: unknown).
async fn wait_for(
    router: &Router,
    what: &str,
    check: impl Fn(Option<&Vec<Endpoint>>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check(router.table().get(HOST)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "timed out waiting for {what}: {:?}",
            router.table()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ports(endpoints: Option<&Vec<Endpoint>>) -> Vec<u16> {
    endpoints
        .map(|e| e.iter().map(|e| e.port).collect())
        .unwrap_or_default()
}

async fn get(http: &reqwest::Client, proxy: &str) -> (u16, String) {
    let response = http.get(proxy).header("host", HOST).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn routes_follow_the_lrps() {
    let bbs = TestBbs::start().await.unwrap();
    let served = serve_router("127.0.0.1:0").await;
    let (a, _a) = backend("a").await;
    let (b, _b) = backend("b").await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let cfg = EmitterConfig {
        // Long enough that every prompt change below comes from events, not a sync.
        sync_interval: Duration::from_secs(60),
        ..EmitterConfig::default()
    };
    let emitter = RouteEmitter::new(bbs.client.clone(), vec![served.admin.clone()], cfg);
    let running = tokio::spawn(emitter.run(shutdown.clone()));
    let http = reqwest::Client::new();

    bbs.client.desire_lrp(&desired("web", 2)).await.unwrap();
    wait_for(&served.router, "the hostname", |e| {
        e.is_some_and(|e| e.is_empty())
    })
    .await;
    let (status, body) = get(&http, &served.proxy).await;
    assert_eq!(
        (status, body.trim()),
        (503, "no instance of app.dev.local is running")
    );

    run_instance(&bbs.client, "web", 0, a).await;
    run_instance(&bbs.client, "web", 1, b).await;
    wait_for(&served.router, "two endpoints", |e| ports(e).len() == 2).await;
    let endpoint = &served.router.table()[HOST][0];
    assert_eq!(
        (endpoint.process_guid.as_str(), endpoint.log_guid.as_str()),
        ("web", "app-log")
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(&http, &served.proxy).await;
        assert_eq!(status, 200);
        seen.push(body);
    }
    seen.sort();
    assert_eq!(seen, vec!["a", "a", "b", "b"]);

    // A crash unregisters the instance at once.
    bbs.client
        .crash_actual_lrp(&CrashActualLrpRequest {
            actual_lrp_key: ActualLrpKey::new("web", 0, "tests"),
            actual_lrp_instance_key: instance(0),
            error_message: "boom".into(),
        })
        .await
        .unwrap();
    let took = wait_for(&served.router, "the crashed one gone", |e| {
        ports(e) == vec![b.port()]
    })
    .await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    for _ in 0..3 {
        assert_eq!(get(&http, &served.proxy).await, (200, "b".to_string()));
    }

    // So does a removal.
    bbs.client
        .remove_actual_lrp(&RemoveActualLrpRequest {
            process_guid: "web".into(),
            index: 1,
            actual_lrp_instance_key: None,
        })
        .await
        .unwrap();
    wait_for(&served.router, "no endpoint", |e| {
        e.is_some_and(|e| e.is_empty())
    })
    .await;

    // Convergence puts the removed instance back and it starts again; then the DesiredLRP
    // goes and takes the hostname with it.
    bbs.client.converge().await.unwrap();
    run_instance(&bbs.client, "web", 1, a).await;
    wait_for(&served.router, "the new one", |e| {
        ports(e) == vec![a.port()]
    })
    .await;
    bbs.client.remove_desired_lrp("web").await.unwrap();
    wait_for(&served.router, "the hostname gone", |e| e.is_none()).await;
    let (status, body) = get(&http, &served.proxy).await;
    assert_eq!((status, body.trim()), (404, "unknown route: app.dev.local"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the emitter stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_sync_repairs_a_router_that_restarted_empty_and_a_down_router_stalls_nothing() {
    let bbs = TestBbs::start().await.unwrap();
    let served = serve_router("127.0.0.1:0").await;
    // A second router that is not there: the first must be fed all the same.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (a, _a) = backend("a").await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let cfg = EmitterConfig {
        sync_interval: Duration::from_millis(700),
        ..EmitterConfig::default()
    };
    let emitter = RouteEmitter::new(bbs.client.clone(), vec![gone, served.admin.clone()], cfg);
    tokio::spawn(emitter.run(shutdown.clone()));

    bbs.client.desire_lrp(&desired("web", 1)).await.unwrap();
    run_instance(&bbs.client, "web", 0, a).await;
    wait_for(&served.router, "the endpoint", |e| {
        ports(e) == vec![a.port()]
    })
    .await;

    // The router restarts on the same address with an empty table.
    served.stop.cancel();
    let admin_addr = served.admin.trim_start_matches("http://").to_string();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let restarted = serve_router(&admin_addr).await;
    assert!(restarted.router.table().is_empty());
    let took = wait_for(&restarted.router, "the table again", |e| {
        ports(e) == vec![a.port()]
    })
    .await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let http = reqwest::Client::new();
    assert_eq!(get(&http, &restarted.proxy).await, (200, "a".to_string()));
}
