use diego_model::requests::*;
use diego_model::{ActualLrpState, ErrorType};

use crate::*;

#[tokio::test]
async fn claim_start_crash_follow_diegos_state_machine() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 1)).await.unwrap();
    let mine = instance("i-1", "cell-1");
    let theirs = instance("i-2", "cell-2");

    claim(c, "web", 0, &mine).await.unwrap();
    claim(c, "web", 0, &mine).await.unwrap(); // idempotent for the holder
    let err = claim(c, "web", 0, &theirs).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ActualLrpCannotBeClaimed));

    start(c, "web", 0, &mine).await.unwrap();
    let running = ordinary(c, "web", 0).await;
    assert_eq!(
        (
            running.state,
            running.cell_id.as_str(),
            running.address.as_str()
        ),
        (ActualLrpState::Running, "cell-1", "192.0.2.10")
    );
    assert_eq!(running.routable, Some(true));
    let err = start(c, "web", 0, &theirs).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ActualLrpCannotBeStarted));

    // Crashes 1 and 2 restart at once: the row goes back to UNCLAIMED for a new auction.
    let err = crash(c, "web", 0, &theirs, "not mine").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ActualLrpCannotBeCrashed));
    crash(c, "web", 0, &mine, "exit status 1").await.unwrap();
    let after_first = ordinary(c, "web", 0).await;
    assert_eq!(
        (after_first.state, after_first.crash_count),
        (ActualLrpState::Unclaimed, 1)
    );
    assert_eq!(after_first.crash_reason, "exit status 1");
    assert!(after_first.instance_guid.is_empty() && after_first.address.is_empty());
    assert!(
        running
            .modification_tag
            .succeeded_by(&after_first.modification_tag)
    );

    for expected in [2, 3] {
        claim(c, "web", 0, &mine).await.unwrap();
        start(c, "web", 0, &mine).await.unwrap();
        crash(c, "web", 0, &mine, "boom").await.unwrap();
        assert_eq!(ordinary(c, "web", 0).await.crash_count, expected);
    }
    // The third crash waits out the backoff: CRASHED until the converger restarts it.
    let crashed = ordinary(c, "web", 0).await;
    assert_eq!(crashed.state, ActualLrpState::Crashed);
    let err = claim(c, "web", 0, &mine).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Some(ErrorType::ActualLrpCannotBeClaimed),
        "a crashed row is not claimable by a cell"
    );
}

#[tokio::test]
async fn fail_records_a_placement_error_only_while_unclaimed() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 2)).await.unwrap();
    c.fail_actual_lrp(&FailActualLrpRequest {
        actual_lrp_key: key("web", 0),
        error_message: "insufficient resources: memory".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        ordinary(c, "web", 0).await.placement_error,
        "insufficient resources: memory"
    );
    // Claiming clears it.
    claim(c, "web", 0, &instance("i", "cell")).await.unwrap();
    assert!(ordinary(c, "web", 0).await.placement_error.is_empty());
    let err = c
        .fail_actual_lrp(&FailActualLrpRequest {
            actual_lrp_key: key("web", 0),
            error_message: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ActualLrpCannotBeFailed));
}

#[tokio::test]
async fn start_creates_a_missing_row_and_remove_checks_the_instance() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    let mine = instance("i-1", "cell-1");
    start(c, "adopted", 0, &mine).await.unwrap();
    assert_eq!(
        ordinary(c, "adopted", 0).await.state,
        ActualLrpState::Running
    );

    let remove = |on: Option<diego_model::ActualLrpInstanceKey>| RemoveActualLrpRequest {
        process_guid: "adopted".into(),
        index: 0,
        actual_lrp_instance_key: on,
    };
    let err = c
        .remove_actual_lrp(&remove(Some(instance("other", "cell-9"))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ActualLrpCannotBeRemoved));
    c.remove_actual_lrp(&remove(Some(mine))).await.unwrap();
    assert_eq!(
        c.remove_actual_lrp(&remove(None)).await.unwrap_err().kind(),
        Some(ErrorType::ResourceNotFound)
    );
}

#[tokio::test]
async fn racing_claims_have_exactly_one_winner() {
    let bbs = start_bbs().await;
    bbs.client.desire_lrp(&lrp("web", 1)).await.unwrap();
    let mut tasks = Vec::new();
    for cell in 0..8 {
        let client = bbs.client.clone();
        tasks.push(tokio::spawn(async move {
            claim(
                &client,
                "web",
                0,
                &instance(&format!("i-{cell}"), &format!("cell-{cell}")),
            )
            .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => winners += 1,
            Err(e) => assert_eq!(e.kind(), Some(ErrorType::ActualLrpCannotBeClaimed), "{e}"),
        }
    }
    assert_eq!(winners, 1);
    let claimed = ordinary(&bbs.client, "web", 0).await;
    assert_eq!(claimed.state, ActualLrpState::Claimed);
    assert_eq!(
        claimed.modification_tag.index, 1,
        "one write, no lost or doubled update"
    );
}

#[tokio::test]
async fn retire_removes_unclaimed_and_stops_running_through_the_rep() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    let rep = fake_rep().await;
    register_cell(c, "cell-1", &rep.url, 30).await;
    c.desire_lrp(&lrp("web", 3)).await.unwrap();
    c.retire_actual_lrp(&key("web", 0)).await.unwrap();
    let on = instance("i-1", "cell-1");
    claim(c, "web", 1, &on).await.unwrap();
    start(c, "web", 1, &on).await.unwrap();
    c.retire_actual_lrp(&key("web", 1)).await.unwrap();
    assert_eq!(
        rep.calls.lock().unwrap().as_slice(),
        ["POST /v1/lrps/web/instances/i-1/stop"]
    );
    // An instance on a cell that is gone is removed at once.
    claim(c, "web", 2, &instance("i-2", "gone-cell"))
        .await
        .unwrap();
    c.retire_actual_lrp(&key("web", 2)).await.unwrap();
    let left: Vec<i32> = c
        .actual_lrps(&ActualLrpsRequest {
            process_guid: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|a| a.index)
        .collect();
    assert_eq!(
        left,
        vec![1],
        "only the instance its rep is stopping remains"
    );
}

#[tokio::test]
async fn actual_lrps_filter_by_cell_and_domain() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 3)).await.unwrap();
    claim(c, "web", 1, &instance("i-1", "cell-a"))
        .await
        .unwrap();
    claim(c, "web", 2, &instance("i-2", "cell-b"))
        .await
        .unwrap();
    let on_a = c
        .actual_lrps(&ActualLrpsRequest {
            cell_id: "cell-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(on_a.iter().map(|a| a.index).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        c.actual_lrps(&ActualLrpsRequest {
            domain: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        0
    );
    assert_eq!(
        c.actual_lrps(&ActualLrpsRequest {
            domain: "tests".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        3
    );
}
