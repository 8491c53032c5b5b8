//! Presence, state, work, and LRP instances from claim to crash or stop.

use std::collections::BTreeMap;

use diego_garden::Backend;
use diego_model::{ActualLrpState, Check, CheckDefinition, TcpCheck};
use diego_rep_client::{ContainerState, Resources, Task, Work};

use crate::*;

#[tokio::test]
async fn presence_and_state_show_the_cells_capacity() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-p", |_| {}).await;

    let cells = bbs.client.cells().await.unwrap();
    let presence = cells.iter().find(|c| c.cell_id == "cell-p").unwrap();
    assert_eq!(presence.rep_url, cell.rep.url());
    assert_eq!(
        (
            presence.capacity.memory_mb,
            presence.capacity.disk_mb,
            presence.capacity.containers
        ),
        (1024, 2048, 3)
    );
    let providers: Vec<(&str, Vec<String>)> = presence
        .rootfs_providers
        .iter()
        .map(|p| (p.name.as_str(), p.properties.clone()))
        .collect();
    assert_eq!(
        providers,
        vec![
            ("preloaded", vec!["cflinuxfs4".to_string()]),
            ("docker", vec![])
        ]
    );
    assert_eq!(presence.placement_tags, vec!["blue".to_string()]);

    cell.client.ping().await.unwrap();
    let state = cell.client.state().await.unwrap();
    let total = Resources {
        memory_mb: 1024,
        disk_mb: 2048,
        containers: 3,
    };
    assert_eq!(state.total_resources, total);
    assert_eq!(state.available_resources, total);
    assert_eq!(state.cell_id, "cell-p");
    assert!(!state.evacuating);

    // a clean stop releases the presence
    cell.rep.stop().await;
    let cells = bbs.client.cells().await.unwrap();
    assert!(cells.iter().all(|c| c.cell_id != "cell-p"), "{cells:?}");
}

#[tokio::test]
async fn work_is_reserved_when_it_fits_and_refused_otherwise() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-w", |_| {}).await;
    let lrp = desired("pg-work", 2);
    bbs.client.desire_lrp(&lrp).await.unwrap();

    let mut too_big = offer(&lrp, 1);
    too_big.resource.memory_mb = 900;
    let mut unknown_stack = offer(&lrp, 1);
    unknown_stack.placement_constraint.root_fs = "preloaded:windows".into();
    let big_task = Task {
        task_guid: "t-big".into(),
        domain: "tests".into(),
        placement_constraint: unknown_stack.placement_constraint.clone(),
        resource: lrp_resource(100, 5000),
        ..Task::default()
    };
    let work = Work {
        lrps: vec![offer(&lrp, 0), too_big.clone(), unknown_stack.clone()],
        tasks: vec![big_task.clone()],
        cell_id: "cell-w".into(),
    };
    let refused = cell.client.perform(&work).await.unwrap();
    assert_eq!(refused.lrps.len(), 2, "{refused:?}");
    assert_eq!(refused.lrps[0].resource.memory_mb, 900);
    assert_eq!(
        refused.lrps[1].placement_constraint.root_fs,
        "preloaded:windows"
    );
    assert_eq!(refused.tasks, vec![big_task]);

    // reserved at once: a second auction sees it
    let state = cell.client.state().await.unwrap();
    assert_eq!(
        state.available_resources,
        Resources {
            memory_mb: 1024 - 256,
            disk_mb: 2048 - 256,
            containers: 2
        }
    );
    assert_eq!(state.lrps.len(), 1);
    assert_eq!(state.lrps[0].key.process_guid, "pg-work");

    // work for another cell is refused whole
    let elsewhere = lrp_work("cell-other", vec![offer(&lrp, 1)]);
    let refused = cell.client.perform(&elsewhere).await.unwrap();
    assert_eq!(refused.lrps.len(), 1);

    // the same instance offered twice is taken once
    let refused = cell
        .client
        .perform(&lrp_work("cell-w", vec![offer(&lrp, 0)]))
        .await
        .unwrap();
    assert_eq!(refused.lrps.len(), 1);

    // bad JSON is a typed 400
    let response = reqwest::Client::new()
        .post(format!("{}/work", cell.rep.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "InvalidRequest");
}

fn lrp_resource(memory_mb: i32, disk_mb: i32) -> diego_model::Resource {
    diego_model::Resource {
        memory_mb,
        disk_mb,
        max_pids: 0,
    }
}

#[tokio::test]
async fn an_instance_runs_with_net_info_then_crashes_when_its_process_exits() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-r", |_| {}).await;
    let mut lrp = desired("pg-run", 1);
    lrp.env = vec![diego_model::EnvironmentVariable::new("GREETING", "hi")];
    let running = run_instance(&bbs, &cell, &lrp).await;

    assert_eq!(running.address, "127.0.0.1");
    assert_eq!(running.instance_address, "127.0.0.1");
    assert_eq!(running.ports.len(), 1);
    assert_eq!(running.ports[0].container_port, 8080);
    assert_eq!(running.ports[0].host_port, 61000);
    let guid = running.instance_guid.clone();
    assert_eq!(cell.backend.handles().await, vec![guid.clone()]);
    let props = cell.backend.properties(&guid).await.unwrap();
    assert_eq!(props["diego.cell_id"], "cell-r");
    assert_eq!(props["diego.process_guid"], "pg-run");

    let env = cell.backend.envs.lock().unwrap()[&guid].clone();
    for want in [
        "PORT=8080",
        "CF_INSTANCE_INDEX=0",
        "CF_INSTANCE_ADDR=127.0.0.1:61000",
        "GREETING=hi",
    ] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    assert!(env.contains(&format!("INSTANCE_GUID={guid}")));

    let state = cell.client.state().await.unwrap();
    assert_eq!(state.lrps[0].state, ContainerState::Running);
    assert_eq!(state.starting_container_count, 0);

    cell.backend.exit(&guid, 7);
    let crashed = eventually("the crash", 10, || async {
        ordinary(&bbs.client, "pg-run", 0)
            .await
            .filter(|a| a.crash_count == 1)
    })
    .await;
    assert_eq!(crashed.crash_reason, "APP/PROC/WEB: Exited with status 7");
    // the first crashes restart at once: back to UNCLAIMED for the auctioneer
    assert_eq!(crashed.state, ActualLrpState::Unclaimed);
    eventually("the container to go", 5, || async {
        cell.backend.handles().await.is_empty().then_some(())
    })
    .await;
    eventually("the slot to be freed", 5, || async {
        let state = cell.client.state().await.unwrap();
        (state.lrps.is_empty() && state.available_resources.memory_mb == 1024).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tcp_check_gates_running_and_its_failure_crashes_the_instance() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-c", |_| {}).await;
    // the "app": a listener the check reaches on the (test backend's) container address
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut lrp = desired("pg-check", 1);
    lrp.ports = vec![u32::from(port)];
    lrp.start_timeout_ms = 10_000;
    lrp.check_definition = Some(CheckDefinition {
        checks: vec![Check {
            tcp_check: Some(TcpCheck {
                port: u32::from(port),
                connect_timeout_ms: 500,
                interval_ms: 0,
            }),
            http_check: None,
        }],
        ..CheckDefinition::default()
    });
    let running = run_instance(&bbs, &cell, &lrp).await;
    assert_eq!(running.ports[0].container_port, u32::from(port));

    drop(listener);
    let crashed = eventually("the unhealthy crash", 10, || async {
        ordinary(&bbs.client, "pg-check", 0)
            .await
            .filter(|a| a.crash_count == 1)
    })
    .await;
    assert_eq!(
        crashed.crash_reason,
        format!(
            "Instance became unhealthy: Failed to make TCP connection to port {port}: connection refused"
        )
    );
    eventually("the container to go", 5, || async {
        cell.backend.handles().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_instance_that_never_passes_its_check_crashes_at_the_start_timeout() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-t", |_| {}).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut lrp = desired("pg-never", 1);
    lrp.start_timeout_ms = 300;
    lrp.check_definition = Some(CheckDefinition {
        checks: vec![Check {
            tcp_check: Some(TcpCheck {
                port: u32::from(port),
                ..TcpCheck::default()
            }),
            http_check: None,
        }],
        ..CheckDefinition::default()
    });
    bbs.client.desire_lrp(&lrp).await.unwrap();
    cell.client
        .perform(&lrp_work("cell-t", vec![offer(&lrp, 0)]))
        .await
        .unwrap();
    let crashed = eventually("the start timeout", 10, || async {
        ordinary(&bbs.client, "pg-never", 0)
            .await
            .filter(|a| a.crash_count == 1)
    })
    .await;
    assert_eq!(
        crashed.crash_reason,
        format!(
            "Instance never healthy after 300ms: Failed to make TCP connection to port {port}: connection refused"
        )
    );
}

#[tokio::test]
async fn stop_removes_the_instance_and_its_container() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-s", |_| {}).await;
    let lrp = desired("pg-stop", 1);
    let running = run_instance(&bbs, &cell, &lrp).await;

    // an unknown instance is a typed 404
    let err = cell
        .client
        .stop_lrp_instance("pg-stop", "nope")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    cell.client
        .stop_lrp_instance("pg-stop", &running.instance_guid)
        .await
        .unwrap();
    eventually("the instance to be removed", 10, || async {
        ordinary(&bbs.client, "pg-stop", 0)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(cell.backend.handles().await.is_empty());
    // the process was stopped with SIGTERM, not left behind
    assert!(cell.client.state().await.unwrap().lrps.is_empty());
}

#[tokio::test]
async fn sync_destroys_unknown_containers_and_crashes_instances_whose_container_vanished() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-y", |_| {}).await;

    // a container of this cell no run owns (a leak), and one of another cell (not ours)
    let ours = BTreeMap::from([("diego.cell_id".to_string(), "cell-y".to_string())]);
    let theirs = BTreeMap::from([("diego.cell_id".to_string(), "cell-z".to_string())]);
    for (handle, properties) in [("leaked", ours), ("foreign", theirs)] {
        cell.backend
            .create(diego_garden::ContainerSpec {
                handle: Some(handle.into()),
                properties,
                ..diego_garden::ContainerSpec::from_dir("/")
            })
            .await
            .unwrap();
    }
    let running = run_instance(&bbs, &cell, &desired("pg-sync", 1)).await;
    cell.rep.sync().await.unwrap();
    let mut handles = cell.backend.handles().await;
    handles.sort();
    let mut want = vec!["foreign".to_string(), running.instance_guid.clone()];
    want.sort();
    assert_eq!(handles, want);

    // the container goes behind the rep's back: the next sync crashes the instance
    cell.backend.vanish(&running.instance_guid).await;
    cell.rep.sync().await.unwrap();
    let crashed = eventually("the crash", 10, || async {
        ordinary(&bbs.client, "pg-sync", 0)
            .await
            .filter(|a| a.crash_count == 1)
    })
    .await;
    assert_eq!(crashed.crash_reason, "container was lost");
}

#[tokio::test]
async fn a_restarted_rep_leaks_no_containers() {
    let bbs = start_bbs().await;
    let first = start_cell(&bbs, "cell-x", |_| {}).await;
    let running = run_instance(&bbs, &first, &desired("pg-restart", 1)).await;
    first.rep.stop().await;
    // the container is left behind, the instance still RUNNING on the cell
    assert_eq!(
        first.backend.handles().await,
        vec![running.instance_guid.clone()]
    );

    // a new rep for the same cell over the same containers
    let config = cell_config("cell-x", first.dir.path());
    let rep = Rep::start(config, bbs.client.clone(), first.backend.clone())
        .await
        .unwrap();
    eventually("the leftover container to be destroyed", 10, || async {
        first.backend.handles().await.is_empty().then_some(())
    })
    .await;
    let crashed = eventually("the crash", 10, || async {
        ordinary(&bbs.client, "pg-restart", 0)
            .await
            .filter(|a| a.crash_count == 1)
    })
    .await;
    assert_eq!(crashed.crash_reason, "container was lost");
    rep.stop().await;
}
