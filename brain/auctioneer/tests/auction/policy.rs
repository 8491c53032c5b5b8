use diego_auctioneer::PolicyChoice;
use diego_model::requests::AuctionPolicyRecord;

use crate::*;

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("guest {path} not built: {e}"))
}

fn choice(c: &PolicyChoice) -> serde_json::Value {
    serde_json::to_value(c).unwrap()
}

/// The cell an LRP's instance 0 went to.
async fn cell_of(reps: &[FakeRep], process_guid: &str) -> String {
    eventually(10, "the instance on a cell", || async {
        reps.iter()
            .find(|r| r.lrp_keys().iter().any(|(p, _)| p == process_guid))
            .map(|r| r.cell_id.clone())
    })
    .await
}

#[tokio::test]
async fn the_default_is_the_classic_component_and_binpack_and_spread_place_differently() {
    let bbs = start_bbs().await;
    let reps = [
        start_rep(&bbs.client, "cell-a", "z1", 4096).await,
        start_rep(&bbs.client, "cell-b", "z1", 4096).await,
    ];
    let brain = start_brain(&bbs, true).await;
    let status = brain.get("/v1/policy").await;
    assert_eq!(status["name"], "classic");
    assert_eq!(status["builtin"], true);
    assert_eq!(
        status["placing_with"], "classic",
        "the Wasm component, not native"
    );
    assert_eq!(status["active"], true);
    let list = brain.get("/v1/policy/list").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["classic", "binpack", "spread"]);

    let (code, body) = brain
        .post("/v1/policy/set", &choice(&PolicyChoice::builtin("binpack")))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["name"], "binpack");
    for p in ["a", "b"] {
        let start = desire(&bbs.client, &desired(p, 1, 512, "preloaded:cflinuxfs4")).await;
        brain.start_lrps(&[start]).await;
        cell_of(&reps, p).await;
    }
    // Binpack fills the cell that already has work.
    assert_eq!(cell_of(&reps, "a").await, cell_of(&reps, "b").await);

    let (code, body) = brain
        .post("/v1/policy/set", &choice(&PolicyChoice::builtin("spread")))
        .await;
    assert_eq!(code, 200, "{body}");
    let start = desire(&bbs.client, &desired("c", 1, 512, "preloaded:cflinuxfs4")).await;
    brain.start_lrps(&[start]).await;
    // Spread takes the emptier cell.
    assert_ne!(cell_of(&reps, "c").await, cell_of(&reps, "a").await);
}

#[tokio::test]
async fn faulting_or_garbage_components_are_refused_and_nothing_changes() {
    let bbs = start_bbs().await;
    let brain = start_brain(&bbs, true).await;
    let refusals = [
        (
            choice(&PolicyChoice::component(&wasm(
                diego_plugin_artifacts::TEST_PANICKER,
            ))),
            422,
        ),
        (
            choice(&PolicyChoice::component(&wasm(
                diego_plugin_artifacts::TEST_INVALID,
            ))),
            422,
        ),
        (choice(&PolicyChoice::component(b"not a component")), 422),
        (serde_json::json!({"component": "%%% not base64"}), 400),
        (serde_json::json!({"builtin": "fastest"}), 400),
        (serde_json::json!({}), 400),
    ];
    for (body, expected) in refusals {
        let (code, answer) = brain.post("/v1/policy/set", &body).await;
        assert_eq!(code, expected, "{answer}");
        assert!(
            !answer["error"]["message"].as_str().unwrap().is_empty(),
            "a reason: {answer}"
        );
    }
    let status = brain.get("/v1/policy").await;
    assert_eq!(status["name"], "classic");
    assert_eq!(status["placing_with"], "classic");
    assert_eq!(bbs.client.auction_policy().await.unwrap(), None);
}

#[tokio::test]
async fn a_policy_set_is_recorded_in_the_bbs_and_a_fresh_brain_uses_it() {
    let bbs = start_bbs().await;
    let first = start_brain(&bbs, true).await;
    let custom = wasm(diego_plugin_artifacts::EXAMPLE_CUSTOM_POLICY);
    let (code, body) = first
        .post("/v1/policy/set", &choice(&PolicyChoice::component(&custom)))
        .await;
    assert_eq!(code, 200, "{body}");
    let name = body["name"].as_str().unwrap().to_owned();
    let sha = body["sha256"].as_str().unwrap().to_owned();
    assert_eq!(body["builtin"], false);

    let record = bbs.client.auction_policy().await.unwrap().unwrap();
    assert_eq!(
        (record.name.as_str(), record.builtin),
        (name.as_str(), false)
    );
    assert_eq!(record.sha256, sha);
    assert_eq!(record.set_by, first.url);

    // A brain that becomes active later (a restart, a fail-over) places with it.
    let second = start_brain(&bbs, true).await;
    let status = second.get("/v1/policy").await;
    assert_eq!(status["name"], name.as_str());
    assert_eq!(status["sha256"], sha.as_str());
    assert_eq!(status["note"], serde_json::Value::Null);

    // A built-in is recorded by name.
    let (code, _) = second
        .post("/v1/policy/set", &choice(&PolicyChoice::builtin("spread")))
        .await;
    assert_eq!(code, 200);
    let record = bbs.client.auction_policy().await.unwrap().unwrap();
    assert!(record.builtin && record.name == "spread" && record.component.is_empty());

    // A record this brain cannot load: classic, and the status says why.
    bbs.client
        .set_auction_policy(&AuctionPolicyRecord {
            name: "fastest".into(),
            builtin: true,
            set_at: 1,
            set_by: "a newer brain".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let third = start_brain(&bbs, true).await;
    let status = third.get("/v1/policy").await;
    assert_eq!(status["name"], "classic");
    let note = status["note"].as_str().unwrap();
    assert!(
        note.contains("fastest") && note.contains("cannot be loaded"),
        "{note}"
    );
}

#[tokio::test]
async fn try_places_pending_work_under_both_policies_and_changes_nothing() {
    let bbs = start_bbs().await;
    let reps = [
        start_rep(&bbs.client, "cell-a", "z1", 4096).await,
        start_rep(&bbs.client, "cell-b", "z1", 4096).await,
    ];
    // cell-a is half full already: classic prefers the emptier cell, binpack the fuller one.
    reps[0].preload("resident", 2048);
    let brain = start_brain(&bbs, true).await;
    // Pending work the auctioneer has not been asked about: two single-instance LRPs and a task.
    for p in ["x", "y"] {
        bbs.client
            .desire_lrp(&desired(p, 1, 512, "preloaded:cflinuxfs4"))
            .await
            .unwrap();
    }
    bbs.client
        .desire_task(&task_request("t", 64))
        .await
        .unwrap();

    let (code, report) = brain
        .post("/v1/policy/try", &choice(&PolicyChoice::builtin("binpack")))
        .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["active_policy"], "classic");
    assert_eq!(report["candidate_policy"], "binpack");
    assert_eq!(report["cells"], 2);
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{report}");
    assert_eq!(report["placed_by_active"], 3);
    assert_eq!(report["placed_by_candidate"], 3);
    let cell = |p: &str, under: &str| {
        items
            .iter()
            .find(|i| i["process_guid"] == p)
            .map(|i| i[under]["cell_id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    // Classic puts the first LRP on the emptier cell, binpack on the fuller one.
    assert_eq!(cell("x", "active"), "cell-b", "{report}");
    assert_eq!(cell("x", "candidate"), "cell-a", "{report}");
    assert!(report["differing"].as_u64().unwrap() >= 1);
    let x = items.iter().find(|i| i["process_guid"] == "x").unwrap();
    assert_eq!(x["differs"], true);

    // Nothing changed: no work sent, no record touched, same policy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(reps.iter().all(|r| r.works().is_empty()));
    assert!(actual(&bbs.client, "x", 0).await.placement_error.is_empty());
    assert_eq!(brain.get("/v1/policy").await["name"], "classic");
    assert_eq!(bbs.client.auction_policy().await.unwrap(), None);

    // A faulting candidate is reported, not tried.
    let (code, body) = brain
        .post(
            "/v1/policy/try",
            &choice(&PolicyChoice::component(&wasm(
                diego_plugin_artifacts::TEST_PANICKER,
            ))),
        )
        .await;
    assert_eq!(code, 422, "{body}");
}
