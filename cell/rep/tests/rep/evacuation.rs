//! Drain: the cell evacuates, keeps a running instance until its replacement runs, then stops.

use std::time::Duration;

use diego_model::requests::{ClaimActualLrpRequest, StartActualLrpRequest};
use diego_model::{ActualLrpInstanceKey, ActualLrpNetInfo, ActualLrpState, Presence};

use crate::*;

#[tokio::test]
async fn drain_keeps_the_instance_until_its_replacement_runs() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-e", |_| {}).await;
    let lrp = desired("pg-evac", 2);
    let running = run_instance(&bbs, &cell, &lrp).await;
    let guid = running.instance_guid.clone();

    cell.client.drain().await.unwrap();
    let state = cell.client.state().await.unwrap();
    assert!(state.evacuating);
    // no new work while evacuating
    let refused = cell
        .client
        .perform(&lrp_work("cell-e", vec![offer(&lrp, 1)]))
        .await
        .unwrap();
    assert_eq!(refused.lrps.len(), 1);

    // evacuate_running: an EVACUATING copy holds this instance, the ORDINARY row is unclaimed
    eventually("the evacuating row", 10, || async {
        let rows = rows(&bbs.client, "pg-evac", 0).await;
        let evacuating = rows
            .iter()
            .any(|a| a.presence == Presence::Evacuating && a.instance_guid == guid);
        let unclaimed = rows
            .iter()
            .any(|a| a.presence == Presence::Ordinary && a.state == ActualLrpState::Unclaimed);
        (evacuating && unclaimed).then_some(())
    })
    .await;
    // kept while the replacement is not running
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cell.backend.handles().await, vec![guid.clone()]);

    // the replacement starts on another cell
    let elsewhere = ActualLrpInstanceKey::new("replacement", "cell-other");
    bbs.client
        .claim_actual_lrp(&ClaimActualLrpRequest {
            process_guid: "pg-evac".into(),
            index: 0,
            actual_lrp_instance_key: elsewhere.clone(),
        })
        .await
        .unwrap();
    bbs.client
        .start_actual_lrp(&StartActualLrpRequest {
            actual_lrp_key: running_key(),
            actual_lrp_instance_key: elsewhere,
            actual_lrp_net_info: ActualLrpNetInfo {
                address: "127.0.0.9".into(),
                ..ActualLrpNetInfo::default()
            },
            ..StartActualLrpRequest::default()
        })
        .await
        .unwrap();

    // then the evacuating instance goes, and with nothing left the rep stops
    tokio::time::timeout(Duration::from_secs(10), cell.rep.finished())
        .await
        .expect("the rep to finish evacuating");
    assert!(cell.backend.handles().await.is_empty());
    let rows = rows(&bbs.client, "pg-evac", 0).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].instance_guid, "replacement");
    let cells = bbs.client.cells().await.unwrap();
    assert!(cells.iter().all(|c| c.cell_id != "cell-e"));
}

fn running_key() -> diego_model::ActualLrpKey {
    diego_model::ActualLrpKey::new("pg-evac", 0, "tests")
}

#[tokio::test]
async fn evacuation_gives_up_at_its_timeout() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-f", |c| {
        c.evacuation_timeout = Duration::from_millis(500);
    })
    .await;
    let running = run_instance(&bbs, &cell, &desired("pg-stuck", 1)).await;
    cell.rep.evacuate();
    tokio::time::timeout(Duration::from_secs(10), cell.rep.finished())
        .await
        .expect("the rep to finish at the evacuation timeout");
    assert!(cell.backend.handles().await.is_empty());
    // evacuate_stopped removed the evacuating copy; the ORDINARY row waits for a new cell
    let rows = rows(&bbs.client, "pg-stuck", 0).await;
    assert!(
        rows.iter()
            .all(|a| a.instance_guid != running.instance_guid),
        "{rows:?}"
    );
}
