use diego_model::requests::*;
use diego_model::{ActualLrpState, Presence};

use crate::*;

fn running_request(on: &diego_model::ActualLrpInstanceKey) -> EvacuateRunningActualLrpRequest {
    EvacuateRunningActualLrpRequest {
        actual_lrp_key: key("web", 0),
        actual_lrp_instance_key: on.clone(),
        actual_lrp_net_info: net("192.0.2.10"),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_running_instance_is_kept_until_its_replacement_runs() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 1)).await.unwrap();
    let old = instance("i-old", "draining");
    claim(c, "web", 0, &old).await.unwrap();
    start(c, "web", 0, &old).await.unwrap();

    assert!(
        c.evacuate_running(&running_request(&old)).await.unwrap(),
        "keep the container while evacuating"
    );
    let rows = c
        .actual_lrps(&ActualLrpsRequest {
            process_guid: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let evacuating = rows
        .iter()
        .find(|r| r.presence == Presence::Evacuating)
        .expect("an evacuating copy");
    assert_eq!(
        (evacuating.state, evacuating.instance_guid.as_str()),
        (ActualLrpState::Running, "i-old")
    );
    assert_eq!(ordinary(c, "web", 0).await.state, ActualLrpState::Unclaimed);
    // Asking again while the replacement is not running keeps it.
    assert!(c.evacuate_running(&running_request(&old)).await.unwrap());

    let new = instance("i-new", "healthy");
    claim(c, "web", 0, &new).await.unwrap();
    start(c, "web", 0, &new).await.unwrap();
    assert!(
        !c.evacuate_running(&running_request(&old)).await.unwrap(),
        "the replacement runs: stop the old one"
    );
    let rows = c
        .actual_lrps(&ActualLrpsRequest {
            process_guid: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].instance_guid, "i-new");
}

#[tokio::test]
async fn claimed_stopped_and_crashed_evacuations() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 1)).await.unwrap();
    let on = instance("i-1", "draining");
    let request = EvacuateActualLrpRequest {
        actual_lrp_key: key("web", 0),
        actual_lrp_instance_key: on.clone(),
    };

    claim(c, "web", 0, &on).await.unwrap();
    assert!(!c.evacuate_claimed(&request).await.unwrap());
    assert_eq!(ordinary(c, "web", 0).await.state, ActualLrpState::Unclaimed);

    claim(c, "web", 0, &on).await.unwrap();
    start(c, "web", 0, &on).await.unwrap();
    assert!(c.evacuate_running(&running_request(&on)).await.unwrap());
    let crashed = EvacuateCrashedActualLrpRequest {
        actual_lrp_key: key("web", 0),
        actual_lrp_instance_key: on.clone(),
        error_message: "oom".into(),
    };
    assert!(!c.evacuate_crashed(&crashed).await.unwrap());
    let rows = c
        .actual_lrps(&ActualLrpsRequest {
            process_guid: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the evacuating copy is gone");

    assert!(!c.evacuate_stopped(&request).await.unwrap());
    assert_eq!(
        c.remove_evacuating(&request).await.unwrap_err().kind(),
        Some(diego_model::ErrorType::ResourceNotFound)
    );
}
