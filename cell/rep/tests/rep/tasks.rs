//! Tasks: started, run, their result read and completed; failures and cancels.

use diego_model::requests::DesireTaskRequest;
use diego_model::{Action, PlacementConstraint, Resource, TaskDefinition, TaskState};
use diego_rep_client::{Task, Work};

use crate::*;

async fn desire(bbs: &TestBbs, guid: &str, action: Action, result_file: &str) -> Task {
    let definition = TaskDefinition {
        rootfs: "preloaded:cflinuxfs4".into(),
        action: Some(action),
        memory_mb: 128,
        disk_mb: 128,
        result_file: result_file.into(),
        ..TaskDefinition::default()
    };
    bbs.client
        .desire_task(&DesireTaskRequest {
            task_definition: definition,
            task_guid: guid.into(),
            domain: "tests".into(),
        })
        .await
        .unwrap();
    Task {
        task_guid: guid.into(),
        domain: "tests".into(),
        placement_constraint: PlacementConstraint {
            root_fs: "preloaded:cflinuxfs4".into(),
            ..PlacementConstraint::default()
        },
        resource: Resource {
            memory_mb: 128,
            disk_mb: 128,
            max_pids: 0,
        },
        ..Task::default()
    }
}

async fn completed(bbs: &TestBbs, guid: &str) -> diego_model::Task {
    eventually("the task to complete", 10, || async {
        bbs.client
            .task(guid)
            .await
            .ok()
            .filter(|t| t.state == TaskState::Completed)
    })
    .await
}

#[tokio::test]
async fn tasks_complete_with_their_result_or_their_failure() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-k", |_| {}).await;
    let ok = desire(
        &bbs,
        "t-ok",
        Action::run("write", &["/tmp/result", "forty-two"]),
        "/tmp/result",
    )
    .await;
    let bad = desire(&bbs, "t-bad", Action::run("exit", &["3"]), "").await;
    let refused = cell
        .client
        .perform(&Work {
            lrps: Vec::new(),
            tasks: vec![ok, bad],
            cell_id: "cell-k".into(),
        })
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");

    let ok = completed(&bbs, "t-ok").await;
    assert!(!ok.failed, "{}", ok.failure_reason);
    assert_eq!(ok.result, "forty-two");
    assert_eq!(ok.cell_id, "cell-k");
    let bad = completed(&bbs, "t-bad").await;
    assert!(bad.failed);
    assert_eq!(bad.failure_reason, "Exited with status 3");

    eventually("the containers to go", 5, || async {
        cell.backend.handles().await.is_empty().then_some(())
    })
    .await;
    eventually("the slots to be freed", 5, || async {
        cell.client
            .state()
            .await
            .unwrap()
            .tasks
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_task_is_stopped_and_its_container_destroyed() {
    let bbs = start_bbs().await;
    let cell = start_cell(&bbs, "cell-q", |_| {}).await;
    let task = desire(&bbs, "t-long", Action::run("serve", &[]), "").await;
    cell.client
        .perform(&Work {
            lrps: Vec::new(),
            tasks: vec![task],
            cell_id: "cell-q".into(),
        })
        .await
        .unwrap();
    eventually("the task to run", 10, || async {
        let running = bbs
            .client
            .task("t-long")
            .await
            .ok()
            .is_some_and(|t| t.state == TaskState::Running);
        (running && cell.backend.handles().await == vec!["t-long".to_string()]).then_some(())
    })
    .await;

    // the BBS cancels it and calls this rep's cancel (found through the cell presence)
    bbs.client.cancel_task("t-long").await.unwrap();
    eventually("the container to go", 10, || async {
        cell.backend.handles().await.is_empty().then_some(())
    })
    .await;
    let task = bbs.client.task("t-long").await.unwrap();
    assert!(task.failed);
    assert_eq!(task.failure_reason, "task was cancelled");
}
