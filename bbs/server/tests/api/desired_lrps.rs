use diego_model::requests::*;
use diego_model::{ActualLrpState, DesiredLrpUpdate, ErrorType, ModificationTag};

use crate::*;

#[tokio::test]
async fn desire_creates_unclaimed_instances_and_lists_by_domain() {
    let bbs = start_bbs().await;
    bbs.client.desire_lrp(&lrp("web", 3)).await.unwrap();
    let mut other = lrp("worker", 1);
    other.domain = "other".into();
    bbs.client.desire_lrp(&other).await.unwrap();

    let actuals = bbs
        .client
        .actual_lrps(&ActualLrpsRequest {
            process_guid: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut indices: Vec<i32> = actuals.iter().map(|a| a.index).collect();
    indices.sort();
    assert_eq!(indices, vec![0, 1, 2]);
    assert!(
        actuals
            .iter()
            .all(|a| a.state == ActualLrpState::Unclaimed && !a.modification_tag.epoch.is_empty())
    );

    let in_tests = bbs
        .client
        .desired_lrps(&DesiredLrpsRequest {
            domain: "tests".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        in_tests
            .iter()
            .map(|d| d.process_guid.as_str())
            .collect::<Vec<_>>(),
        vec!["web"]
    );
    let by_guid = bbs
        .client
        .desired_lrps(&DesiredLrpsRequest {
            process_guids: vec!["worker".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_guid.len(), 1);
    let infos = bbs
        .client
        .scheduling_infos(&DesiredLrpsRequest::default())
        .await
        .unwrap();
    assert_eq!(infos.len(), 2);
    assert!(
        infos
            .iter()
            .any(|i| i.process_guid == "web" && i.instances == 3 && i.memory_mb == 128)
    );

    let fetched = bbs.client.desired_lrp("web").await.unwrap();
    assert_eq!(fetched.instances, 3);
    assert_eq!(fetched.modification_tag.index, 0);
}

#[tokio::test]
async fn desiring_twice_is_resource_exists_and_changes_nothing() {
    let bbs = start_bbs().await;
    bbs.client.desire_lrp(&lrp("web", 1)).await.unwrap();
    let err = bbs.client.desire_lrp(&lrp("web", 5)).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ResourceExists));
    assert_eq!(bbs.client.desired_lrp("web").await.unwrap().instances, 1);
}

#[tokio::test]
async fn scaling_up_and_down_creates_and_retires_instances() {
    let bbs = start_bbs().await;
    bbs.client.desire_lrp(&lrp("web", 2)).await.unwrap();
    let update = |n| UpdateDesiredLrpRequest {
        process_guid: "web".into(),
        update: DesiredLrpUpdate {
            instances: Some(n),
            ..Default::default()
        },
        expected_modification_tag: None,
    };
    bbs.client.update_desired_lrp(&update(4)).await.unwrap();
    let count = |bbs: &diego_bbs_client::BbsClient| {
        let bbs = bbs.clone();
        async move {
            bbs.actual_lrps(&ActualLrpsRequest {
                process_guid: "web".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
        }
    };
    assert_eq!(count(&bbs.client).await, 4);
    let desired = bbs.client.desired_lrp("web").await.unwrap();
    assert_eq!((desired.instances, desired.modification_tag.index), (4, 1));

    // Scale down: unclaimed extras go at once.
    bbs.client.update_desired_lrp(&update(1)).await.unwrap();
    assert_eq!(count(&bbs.client).await, 1);
}

#[tokio::test]
async fn updates_with_a_stale_tag_are_conflicts_and_racing_updates_are_all_kept() {
    let bbs = start_bbs().await;
    bbs.client.desire_lrp(&lrp("web", 0)).await.unwrap();
    let tag = bbs
        .client
        .desired_lrp("web")
        .await
        .unwrap()
        .modification_tag;
    let annotate = |text: &str, expected: Option<ModificationTag>| UpdateDesiredLrpRequest {
        process_guid: "web".into(),
        update: DesiredLrpUpdate {
            annotation: Some(text.into()),
            ..Default::default()
        },
        expected_modification_tag: expected,
    };
    bbs.client
        .update_desired_lrp(&annotate("first", Some(tag.clone())))
        .await
        .unwrap();
    let err = bbs
        .client
        .update_desired_lrp(&annotate("second", Some(tag)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ResourceConflict), "{err}");
    assert_eq!(
        bbs.client.desired_lrp("web").await.unwrap().annotation,
        "first"
    );

    // 20 writers racing without tags: every update lands, one after the other.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = bbs.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .update_desired_lrp(&annotate(&format!("w{i}"), None))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        bbs.client
            .desired_lrp("web")
            .await
            .unwrap()
            .modification_tag
            .index,
        21
    );
}

#[tokio::test]
async fn removing_retires_instances_through_their_rep() {
    let bbs = start_bbs().await;
    let rep = fake_rep().await;
    register_cell(&bbs.client, "cell-1", &rep.url, 30).await;
    bbs.client.desire_lrp(&lrp("web", 2)).await.unwrap();
    let on = instance("i-0", "cell-1");
    claim(&bbs.client, "web", 0, &on).await.unwrap();
    start(&bbs.client, "web", 0, &on).await.unwrap();

    bbs.client.remove_desired_lrp("web").await.unwrap();
    assert_eq!(
        bbs.client.desired_lrp("web").await.unwrap_err().kind(),
        Some(ErrorType::ResourceNotFound)
    );
    // The unclaimed instance is gone; the running one is left to its rep, which was told to stop it.
    let left = bbs
        .client
        .actual_lrps(&ActualLrpsRequest {
            process_guid: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].instance_guid, "i-0");
    assert_eq!(
        rep.calls.lock().unwrap().as_slice(),
        ["POST /v1/lrps/web/instances/i-0/stop"]
    );
    assert_eq!(
        bbs.client
            .remove_desired_lrp("web")
            .await
            .unwrap_err()
            .kind(),
        Some(ErrorType::ResourceNotFound)
    );
}
