use diego_bbs_client::EventStream;
use diego_model::{ActualLrpState, Event};

use crate::*;

async fn next(sub: &mut diego_bbs_client::Subscription) -> (String, Event) {
    tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .expect("an event within 10 s")
        .unwrap()
}

#[tokio::test]
async fn lrp_events_tell_the_whole_story_in_order() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    let mut sub = c.subscribe(EventStream::Lrps, None, None);
    sub.connect().await.unwrap();

    c.desire_lrp(&lrp("web", 1)).await.unwrap();
    let on = instance("i-1", "cell-1");
    claim(c, "web", 0, &on).await.unwrap();
    start(c, "web", 0, &on).await.unwrap();
    crash(c, "web", 0, &on, "exit 1").await.unwrap();
    c.remove_desired_lrp("web").await.unwrap();

    let mut names = Vec::new();
    let mut ids = Vec::new();
    loop {
        let (id, event) = next(&mut sub).await;
        ids.push(id);
        if let Event::ActualLrpCrashed {
            crash_count,
            instance_guid,
            cell_id,
            crash_reason,
            ..
        } = &event
        {
            assert_eq!(
                (
                    *crash_count,
                    instance_guid.as_str(),
                    cell_id.as_str(),
                    crash_reason.as_str()
                ),
                (1, "i-1", "cell-1", "exit 1")
            );
        }
        if let Event::ActualLrpInstanceChanged { after, .. } = &event {
            assert_ne!(
                after.state,
                ActualLrpState::Crashed,
                "the first crash restarts at once"
            );
        }
        let last = matches!(event, Event::ActualLrpInstanceRemoved { .. });
        names.push(event.name());
        if last {
            break;
        }
    }
    assert_eq!(
        names,
        [
            "desired_lrp_created",
            "actual_lrp_instance_created",
            "actual_lrp_instance_changed",
            "actual_lrp_instance_changed",
            "actual_lrp_instance_changed",
            "actual_lrp_crashed",
            "desired_lrp_removed",
            "actual_lrp_instance_removed",
        ]
    );
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (r, p) = id.split_once('-').unwrap();
        (r.parse::<i64>().unwrap(), p.parse::<u32>().unwrap())
    });
    assert_eq!(ids, sorted, "ids increase");
}

#[tokio::test]
async fn a_subscriber_resumes_after_a_reconnect_without_missing_or_repeating() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    let mut sub = c.subscribe(EventStream::Tasks, None, None);
    sub.connect().await.unwrap();
    let desire = |guid: String| {
        let c = c.clone();
        async move {
            let request = diego_model::requests::DesireTaskRequest {
                task_guid: guid,
                domain: "tests".into(),
                task_definition: diego_model::TaskDefinition {
                    rootfs: "preloaded:x".into(),
                    action: Some(diego_model::Action::run("/bin/true", &[])),
                    ..Default::default()
                },
            };
            c.desire_task(&request).await.unwrap();
        }
    };
    desire("t0".into()).await;
    let (first_id, _) = next(&mut sub).await;
    drop(sub); // the client goes away...
    for i in 1..=5 {
        desire(format!("t{i}")).await; // ...while these happen
    }
    let mut resumed = c.subscribe(EventStream::Tasks, None, Some(first_id));
    let mut guids = Vec::new();
    for _ in 1..=5 {
        match next(&mut resumed).await.1 {
            Event::TaskCreated { task } => guids.push(task.task_guid),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(guids, ["t1", "t2", "t3", "t4", "t5"]);
    desire("t6".into()).await;
    match next(&mut resumed).await.1 {
        Event::TaskCreated { task } => assert_eq!(task.task_guid, "t6", "then live events follow"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_cell_filter_passes_only_that_cells_instances() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_lrp(&lrp("web", 2)).await.unwrap();
    let mut sub = c.subscribe(EventStream::Lrps, Some("cell-b".into()), None);
    sub.connect().await.unwrap();
    claim(c, "web", 0, &instance("i-a", "cell-a"))
        .await
        .unwrap();
    claim(c, "web", 1, &instance("i-b", "cell-b"))
        .await
        .unwrap();
    match next(&mut sub).await.1 {
        Event::ActualLrpInstanceChanged { after, .. } => assert_eq!(after.cell_id, "cell-b"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_resume_point_the_store_no_longer_keeps_is_410_gone() {
    let dir = tempfile::tempdir().unwrap();
    let options = diego_store_redb::EmbeddedStoreOptions {
        change_log_retention: 5,
        ..Default::default()
    };
    let store = diego_store_redb::EmbeddedStore::open_with(dir.path().join("bbs.redb"), options)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(diego_bbs::serve(
        listener,
        store,
        diego_bbs::Config::default(),
        shutdown.clone(),
    ));
    let client = diego_bbs_client::BbsClient::new(&url);
    for i in 0..20 {
        client.upsert_domain(&format!("d{i}"), 0).await.unwrap();
    }
    let response = reqwest::Client::new()
        .get(format!("{url}/v1/events"))
        .header("Last-Event-ID", "1-0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 410);
    let body: diego_model::requests::ErrorResponse = response.json().await.unwrap();
    assert!(
        body.error.message.contains("re-list"),
        "{}",
        body.error.message
    );
    let mut sub = client.subscribe(EventStream::All, None, Some("1-0".into()));
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        Some(diego_model::ErrorType::ResourceNotFound),
        "the subscription gives up with a clear error: {err}"
    );
    shutdown.cancel();
}
