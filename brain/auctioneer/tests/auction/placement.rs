use std::collections::HashSet;

use crate::*;

#[tokio::test]
async fn lrps_are_placed_with_one_work_per_cell_and_duplicates_dropped() {
    let bbs = start_bbs().await;
    let reps = [
        start_rep(&bbs.client, "cell-a", "z1", 4096).await,
        start_rep(&bbs.client, "cell-b", "z1", 4096).await,
        start_rep(&bbs.client, "cell-c", "z2", 4096).await,
    ];
    let brain = start_brain(&bbs, true).await;
    let start = desire(&bbs.client, &desired("web", 6, 128, "preloaded:cflinuxfs4")).await;
    // The same instances twice in one request body: placed once.
    brain.start_lrps(&[start.clone(), start]).await;

    let placed = eventually(10, "6 instances placed", || async {
        let keys: Vec<(String, i32)> = reps.iter().flat_map(|r| r.lrp_keys()).collect();
        (keys.len() >= 6).then_some(keys)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let placed_after: Vec<(String, i32)> = reps.iter().flat_map(|r| r.lrp_keys()).collect();
    assert_eq!(
        placed_after.len(),
        6,
        "each instance once: {placed_after:?}"
    );
    let distinct: HashSet<_> = placed.iter().cloned().collect();
    assert_eq!(distinct.len(), 6);
    let mut per_cell = Vec::new();
    for rep in &reps {
        let works = rep.works();
        assert_eq!(works.len(), 1, "{}: one Work per auction", rep.cell_id);
        assert_eq!(works[0].cell_id, rep.cell_id);
        assert!(works[0].lrps.iter().all(|l| !l.instance_guid.is_empty()));
        per_cell.push(works[0].lrps.len());
    }
    // Classic balances zones first (z1: a and b, z2: c), then cells within a zone.
    assert_eq!(per_cell[2], 3, "half the instances in z2: {per_cell:?}");
    assert_eq!(per_cell[0] + per_cell[1], 3, "{per_cell:?}");
    assert!(per_cell[0] >= 1 && per_cell[1] >= 1, "{per_cell:?}");
}

#[tokio::test]
async fn work_a_cell_refuses_is_retried_then_failed() {
    let bbs = start_bbs().await;
    let rep = start_rep(&bbs.client, "cell-a", "z1", 4096).await;
    rep.inner.lock().unwrap().mode = Mode::RefuseAll;
    let brain = start_brain(&bbs, true).await;
    let start = desire(
        &bbs.client,
        &desired("stubborn", 1, 128, "preloaded:cflinuxfs4"),
    )
    .await;
    brain.start_lrps(&[start]).await;

    let error = eventually(10, "the placement error", || async {
        let a = actual(&bbs.client, "stubborn", 0).await;
        (!a.placement_error.is_empty()).then_some(a.placement_error)
    })
    .await;
    assert!(error.contains("refused"), "{error}");
    assert_eq!(rep.works().len(), 3, "3 attempts, one Work each");
}

#[tokio::test]
async fn placement_failures_are_recorded_with_diegos_messages() {
    let bbs = start_bbs().await;
    let _reps = [
        start_rep(&bbs.client, "cell-a", "z1", 1024).await,
        start_rep(&bbs.client, "cell-b", "z1", 1024).await,
    ];
    let brain = start_brain(&bbs, true).await;
    let odd_stack = desire(&bbs.client, &desired("odd", 1, 128, "preloaded:nostack")).await;
    let too_big = desire(
        &bbs.client,
        &desired("huge", 1, 8192, "preloaded:cflinuxfs4"),
    )
    .await;
    let docker = desire(
        &bbs.client,
        &desired("img", 1, 128, "docker:///library/nginx"),
    )
    .await;
    brain.start_lrps(&[odd_stack, too_big, docker]).await;

    let odd = eventually(10, "the rootfs error", || async {
        let a = actual(&bbs.client, "odd", 0).await;
        (!a.placement_error.is_empty()).then_some(a.placement_error)
    })
    .await;
    assert_eq!(odd, "found no compatible cell for required rootfs");
    let huge = eventually(10, "the resources error", || async {
        let a = actual(&bbs.client, "huge", 0).await;
        (!a.placement_error.is_empty()).then_some(a.placement_error)
    })
    .await;
    assert_eq!(huge, "insufficient resources: memory");
    // A docker rootfs fits any cell with the docker provider.
    assert!(
        actual(&bbs.client, "img", 0)
            .await
            .placement_error
            .is_empty()
    );
}

#[tokio::test]
async fn a_task_is_placed_and_an_unplaceable_one_rejected() {
    let bbs = start_bbs().await;
    let rep = start_rep(&bbs.client, "cell-a", "z1", 1024).await;
    let brain = start_brain(&bbs, true).await;
    for (guid, memory) in [("t-small", 64), ("t-huge", 4096)] {
        let request = task_request(guid, memory);
        bbs.client.desire_task(&request).await.unwrap();
    }
    let small = bbs.client.task("t-small").await.unwrap();
    let huge = bbs.client.task("t-huge").await.unwrap();
    let body = serde_json::to_value([
        diego_model::TaskStartRequest::new(&small),
        diego_model::TaskStartRequest::new(&huge),
    ])
    .unwrap();
    let (status, answer) = brain.post("/v1/tasks", &body).await;
    assert_eq!(status, 202, "{answer}");

    eventually(10, "the task on the cell", || async {
        (rep.task_guids() == ["t-small"]).then_some(())
    })
    .await;
    let rejected = eventually(10, "the rejection", || async {
        let t = bbs.client.task("t-huge").await.unwrap();
        (t.rejection_count > 0).then_some(t)
    })
    .await;
    assert_eq!(rejected.rejection_reason, "insufficient resources: memory");
}

#[tokio::test]
async fn a_standby_brain_refuses_work_and_bad_input_is_a_400() {
    let bbs = start_bbs().await;
    let standby = start_brain(&bbs, false).await;
    let start = serde_json::json!([{"process_guid": "p", "domain": "d", "indices": [0]}]);
    let (status, body) = standby.post("/v1/lrps", &start).await;
    assert_eq!(status, 503);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not the active brain"), "{message}");
    standby
        .auctioneer
        .stand_by(Some("http://192.0.2.1:9016".into()));
    let (_, body) = standby.post("/v1/tasks", &serde_json::json!([])).await;
    assert_eq!(
        body["error"]["message"],
        "not the active brain; the active one is http://192.0.2.1:9016"
    );

    let active = start_brain(&bbs, true).await;
    let r = active
        .http
        .post(format!("{}/v1/lrps", active.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, body) = active
        .post(
            "/v1/lrps",
            &serde_json::json!([{"process_guid": "p", "domain": "d", "indices": [-1]}]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(active.auctioneer.queued(), 0);
}

#[tokio::test]
async fn the_requests_ids_go_with_the_work_and_placements_are_counted() {
    let bbs = start_bbs().await;
    let rep = start_rep(&bbs.client, "cell-a", "z1", 4096).await;
    // Active, but no runner: both requests wait for the one auction below.
    let brain = start_brain(&bbs, false).await;
    brain.auctioneer.activate().await;
    for (guid, id) in [("web", "desire-web"), ("worker", "desire-worker")] {
        let start = desire(&bbs.client, &desired(guid, 1, 128, "preloaded:cflinuxfs4")).await;
        let r = brain
            .http
            .post(format!("{}/v1/lrps", brain.url))
            .header(diego_telemetry::REQUEST_ID_HEADER, id)
            .json(&[start])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.headers()[diego_telemetry::REQUEST_ID_HEADER], id);
    }
    let started = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("AuctioneerLRPAuctionsStarted "))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let metrics = || async {
        brain
            .http
            .get(format!("{}/metrics", brain.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = started(&metrics().await);

    let report = brain.auctioneer.auction_once().await;
    assert_eq!(report.lrps_placed, 2, "{report:?}");
    // One Work for the cell, carrying both requests' ids.
    let ids = rep.inner.lock().unwrap().request_ids.clone();
    assert_eq!(ids, [Some("desire-web,desire-worker".to_owned())]);
    // Other tests in this process count too: at least these two.
    let after = metrics().await;
    assert!(started(&after) - before >= 2.0, "{after}");
    assert!(
        after.contains("# TYPE AuctioneerLRPAuctionsStarted counter"),
        "{after}"
    );
}
