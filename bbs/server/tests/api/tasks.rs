use std::sync::{Arc, Mutex};

use diego_model::requests::*;
use diego_model::task::TaskCallbackResponse;
use diego_model::{Action, ErrorType, TaskDefinition, TaskState};

use crate::*;

fn task(guid: &str) -> DesireTaskRequest {
    DesireTaskRequest {
        task_guid: guid.into(),
        domain: "tests".into(),
        task_definition: TaskDefinition {
            rootfs: "preloaded:cflinuxfs4".into(),
            memory_mb: 64,
            action: Some(Action::run("/bin/echo", &["hi"])),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn a_task_runs_through_its_states() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_task(&task("t1")).await.unwrap();
    assert_eq!(
        c.desire_task(&task("t1")).await.unwrap_err().kind(),
        Some(ErrorType::ResourceExists)
    );
    assert_eq!(c.task("t1").await.unwrap().state, TaskState::Pending);

    assert!(c.start_task("t1", "cell-1").await.unwrap());
    assert!(
        !c.start_task("t1", "cell-1").await.unwrap(),
        "starting again on the same cell: don't start twice"
    );
    assert_eq!(
        c.start_task("t1", "cell-2").await.unwrap_err().kind(),
        Some(ErrorType::InvalidStateTransition)
    );
    assert_eq!(
        c.tasks(&TasksRequest {
            cell_id: "cell-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );

    let complete = |cell: &str| CompleteTaskRequest {
        task_guid: "t1".into(),
        cell_id: cell.into(),
        result: "42".into(),
        ..Default::default()
    };
    assert_eq!(
        c.complete_task(&complete("cell-2"))
            .await
            .unwrap_err()
            .kind(),
        Some(ErrorType::RunningOnDifferentCell)
    );
    c.complete_task(&complete("cell-1")).await.unwrap();
    let done = c.task("t1").await.unwrap();
    assert_eq!(
        (done.state, done.failed, done.result.as_str()),
        (TaskState::Completed, false, "42")
    );
    assert!(done.first_completed_at > 0);

    assert_eq!(
        c.delete_task("t1").await.unwrap_err().kind(),
        Some(ErrorType::InvalidStateTransition)
    );
    c.resolving_task("t1").await.unwrap();
    c.delete_task("t1").await.unwrap();
    assert_eq!(
        c.task("t1").await.unwrap_err().kind(),
        Some(ErrorType::ResourceNotFound)
    );
}

#[tokio::test]
async fn rejections_fail_a_task_after_max_retries_and_cancel_fails_it() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.desire_task(&task("t1")).await.unwrap();
    for n in 1..=2 {
        c.reject_task("t1", "insufficient resources").await.unwrap();
        let t = c.task("t1").await.unwrap();
        assert_eq!((t.state, t.rejection_count), (TaskState::Pending, n));
    }
    c.reject_task("t1", "insufficient resources").await.unwrap();
    let failed = c.task("t1").await.unwrap();
    assert_eq!(
        (failed.state, failed.failed, failed.failure_reason.as_str()),
        (TaskState::Completed, true, "insufficient resources")
    );

    c.desire_task(&task("t2")).await.unwrap();
    c.start_task("t2", "cell-1").await.unwrap();
    c.cancel_task("t2").await.unwrap();
    let cancelled = c.task("t2").await.unwrap();
    assert_eq!(
        (cancelled.state, cancelled.failure_reason.as_str()),
        (TaskState::Completed, "task was cancelled")
    );
    assert_eq!(
        c.cancel_task("t2").await.unwrap_err().kind(),
        Some(ErrorType::InvalidStateTransition)
    );
}

#[tokio::test]
async fn the_completion_callback_gets_the_result_and_the_task_is_deleted() {
    let received: Arc<Mutex<Vec<TaskCallbackResponse>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/done",
        axum::routing::post(move |axum::Json(body): axum::Json<TaskCallbackResponse>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let bbs = start_bbs().await;
    let c = &bbs.client;
    let mut request = task("t1");
    request.task_definition.completion_callback_url = callback;
    request.task_definition.annotation = "note".into();
    c.desire_task(&request).await.unwrap();
    c.start_task("t1", "cell-1").await.unwrap();
    c.complete_task(&CompleteTaskRequest {
        task_guid: "t1".into(),
        cell_id: "cell-1".into(),
        failed: true,
        failure_reason: "exit 3".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    eventually(10, "the task is deleted after its callback", || async {
        c.task("t1").await.is_err()
    })
    .await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].task_guid.as_str(),
            got[0].failed,
            got[0].failure_reason.as_str(),
            got[0].annotation.as_str()
        ),
        ("t1", true, "exit 3", "note")
    );
}
