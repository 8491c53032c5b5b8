//! Tasks: desire, start, cancel, fail, reject, complete, resolving, delete, and completion
//! callbacks.

use std::time::Duration;

use diego_model::requests::*;
use diego_model::{BbsError, ErrorType, Task, TaskState};
use diego_store::{Compare, Op, Txn};

use crate::db::{Versioned, encode, with_retries};
use crate::{Bbs, BbsResult, keys, now};

/// Completion callbacks are tried this many times (Diego's MAX_CB_RETRIES).
const CALLBACK_ATTEMPTS: usize = 3;

impl Bbs {
    pub async fn tasks(&self, req: &TasksRequest) -> BbsResult<Vec<Task>> {
        crate::lrps::decode_all(keys::TASKS, self.tasks_json(req).await?)
    }

    /// Like [`Bbs::tasks`], as the stored JSON of each record.
    pub async fn tasks_json(&self, req: &TasksRequest) -> BbsResult<Vec<Vec<u8>>> {
        #[derive(serde::Deserialize)]
        struct View {
            #[serde(default)]
            domain: String,
            #[serde(default)]
            cell_id: String,
        }
        let records = self.db.list_json(keys::TASKS).await?;
        if req.domain.is_empty() && req.cell_id.is_empty() {
            return Ok(records);
        }
        crate::lrps::filter_json(records, keys::TASKS, |v: &View| {
            (req.domain.is_empty() || v.domain == req.domain)
                && (req.cell_id.is_empty() || v.cell_id == req.cell_id)
        })
    }

    pub async fn task(&self, task_guid: &str) -> BbsResult<Versioned<Task>> {
        self.db
            .read(&keys::task(task_guid))
            .await?
            .ok_or_else(|| BbsError::not_found(format!("task {task_guid:?} not found")))
    }

    pub(crate) async fn replace_task(
        &self,
        before: &Versioned<Task>,
        after: &Task,
    ) -> BbsResult<bool> {
        let key = keys::task(&after.task_guid);
        self.db
            .commit(
                Txn::new()
                    .when(Compare::unchanged(&key, before.revision))
                    .then(Op::put(&key, encode(after)?)),
            )
            .await
    }

    pub async fn desire_task(&self, req: DesireTaskRequest) -> BbsResult<()> {
        req.validate()?;
        let now = now();
        let task = Task {
            task_definition: req.task_definition,
            task_guid: req.task_guid,
            domain: req.domain,
            created_at: now,
            updated_at: now,
            state: TaskState::Pending,
            ..Task::default()
        };
        let key = keys::task(&task.task_guid);
        if !self
            .db
            .commit(
                Txn::new()
                    .when(Compare::absent(&key))
                    .then(Op::put(&key, encode(&task)?)),
            )
            .await?
        {
            return Err(BbsError::exists(format!(
                "task {:?} already exists",
                task.task_guid
            )));
        }
        tracing::info!(task_guid = %task.task_guid, "task desired");
        self.external.request_task_auction(&task);
        Ok(())
    }

    /// The rep starts a task: PENDING → RUNNING on its cell. Starting it again on the same cell
    /// answers `should_start: false`.
    pub async fn start_task(&self, req: &StartTaskRequest) -> BbsResult<StartTaskResponse> {
        req.validate()?;
        with_retries("start task", || async {
            let row = self.task(&req.task_guid).await?;
            let task = &row.record;
            if task.state == TaskState::Running && task.cell_id == req.cell_id {
                return Ok(Some(StartTaskResponse {
                    should_start: false,
                }));
            }
            task.state.validate_transition_to(TaskState::Running)?;
            let mut after = task.clone();
            after.state = TaskState::Running;
            after.cell_id = req.cell_id.clone();
            after.updated_at = now();
            Ok(self
                .replace_task(&row, &after)
                .await?
                .then_some(StartTaskResponse { should_start: true }))
        })
        .await
    }

    /// Moves a PENDING or RUNNING task to COMPLETED as failed, for `cancel` and `fail`.
    async fn fail_pending_or_running(&self, task_guid: &str, reason: &str) -> BbsResult<Task> {
        let after = with_retries("fail task", || async {
            let row = self.task(task_guid).await?;
            let task = &row.record;
            if !matches!(task.state, TaskState::Pending | TaskState::Running) {
                return Err(BbsError::transition(task.state, TaskState::Completed));
            }
            let after = completed(task, true, reason, "");
            Ok(self.replace_task(&row, &after).await?.then_some(after))
        })
        .await?;
        Ok(after)
    }

    pub async fn cancel_task(self: &std::sync::Arc<Self>, task_guid: &str) -> BbsResult<()> {
        let before = self.task(task_guid).await?.record;
        let after = self
            .fail_pending_or_running(task_guid, "task was cancelled")
            .await?;
        if !before.cell_id.is_empty()
            && let Some(cell) = self.cell(&before.cell_id).await?
            && let Err(e) = self.external.cancel_task(&cell, task_guid).await
        {
            tracing::warn!(%task_guid, error = %e, "cannot tell the rep to cancel the task");
        }
        self.after_completion(after);
        Ok(())
    }

    pub async fn fail_task(self: &std::sync::Arc<Self>, req: &FailTaskRequest) -> BbsResult<()> {
        req.validate()?;
        let after = self
            .fail_pending_or_running(&req.task_guid, &req.failure_reason)
            .await?;
        self.after_completion(after);
        Ok(())
    }

    /// The auctioneer or a rep could not run a PENDING task: count it, and fail the task after
    /// `max_task_retries` rejections.
    pub async fn reject_task(
        self: &std::sync::Arc<Self>,
        req: &RejectTaskRequest,
    ) -> BbsResult<()> {
        req.validate()?;
        let max = self.config.max_task_retries;
        let after = with_retries("reject task", || async {
            let row = self.task(&req.task_guid).await?;
            let task = &row.record;
            if task.state != TaskState::Pending {
                return Err(BbsError::transition(task.state, TaskState::Pending));
            }
            let mut after = task.clone();
            after.rejection_count += 1;
            after.rejection_reason = req.rejection_reason.clone();
            after.updated_at = now();
            if after.rejection_count >= max {
                after = completed(&after, true, &req.rejection_reason, "");
            }
            Ok(self.replace_task(&row, &after).await?.then_some(after))
        })
        .await?;
        if after.state == TaskState::Completed {
            self.after_completion(after);
        }
        Ok(())
    }

    pub async fn complete_task(
        self: &std::sync::Arc<Self>,
        req: &CompleteTaskRequest,
    ) -> BbsResult<()> {
        req.validate()?;
        let after = with_retries("complete task", || async {
            let row = self.task(&req.task_guid).await?;
            let task = &row.record;
            if task.state == TaskState::Running && task.cell_id != req.cell_id {
                return Err(BbsError::new(
                    ErrorType::RunningOnDifferentCell,
                    format!(
                        "task {:?} runs on {:?}, not {:?}",
                        task.task_guid, task.cell_id, req.cell_id
                    ),
                ));
            }
            task.state.validate_transition_to(TaskState::Completed)?;
            let after = completed(task, req.failed, &req.failure_reason, &req.result);
            Ok(self.replace_task(&row, &after).await?.then_some(after))
        })
        .await?;
        self.after_completion(after);
        Ok(())
    }

    pub async fn resolving_task(&self, task_guid: &str) -> BbsResult<Task> {
        with_retries("resolving task", || async {
            let row = self.task(task_guid).await?;
            row.record
                .state
                .validate_transition_to(TaskState::Resolving)?;
            let mut after = row.record.clone();
            after.state = TaskState::Resolving;
            after.updated_at = now();
            Ok(self.replace_task(&row, &after).await?.then_some(after))
        })
        .await
    }

    pub async fn delete_task(&self, task_guid: &str) -> BbsResult<()> {
        with_retries("delete task", || async {
            let row = self.task(task_guid).await?;
            if row.record.state != TaskState::Resolving {
                return Err(BbsError::new(
                    ErrorType::InvalidStateTransition,
                    format!(
                        "task {task_guid:?} is {:?}; only a Resolving task can be deleted",
                        row.record.state
                    ),
                ));
            }
            let key = keys::task(task_guid);
            Ok(self
                .db
                .commit(
                    Txn::new()
                        .when(Compare::unchanged(&key, row.revision))
                        .then(Op::delete(&key)),
                )
                .await?
                .then_some(()))
        })
        .await
    }

    /// A task just completed: if it has a callback URL, resolve it in the background.
    pub(crate) fn after_completion(self: &std::sync::Arc<Self>, task: Task) {
        if task.task_definition.completion_callback_url.is_empty() {
            return;
        }
        let bbs = self.clone();
        tokio::spawn(async move {
            let guid = task.task_guid.clone();
            tokio::select! {
                _ = bbs.shutdown.cancelled() => {}
                result = bbs.resolve_with_callback(task) => if let Err(e) = result {
                    tracing::warn!(task_guid = %guid, error = %e, "completion callback failed; the converger will retry");
                }
            }
        });
    }

    /// Diego's callback worker: RESOLVING, POST the result, delete unless the callback answered
    /// 503/504 every time.
    async fn resolve_with_callback(&self, task: Task) -> BbsResult<()> {
        let task = self.resolving_task(&task.task_guid).await?;
        let url = &task.task_definition.completion_callback_url;
        let body = task.callback_response();
        for attempt in 0..CALLBACK_ATTEMPTS {
            match self.external.http().post(url).json(&body).send().await {
                Ok(r) if matches!(r.status().as_u16(), 503 | 504) => {
                    tracing::info!(task_guid = %task.task_guid, status = %r.status(), attempt, "callback busy");
                }
                Ok(_) => return self.delete_task(&task.task_guid).await,
                Err(e) if e.is_timeout() || e.is_connect() => {
                    tracing::info!(task_guid = %task.task_guid, error = %e, attempt, "callback unreachable");
                }
                Err(e) => {
                    return Err(BbsError::new(
                        ErrorType::UnknownError,
                        format!("callback to {url} failed: {e}"),
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(BbsError::new(
            ErrorType::UnknownError,
            format!("callback to {url} did not succeed in {CALLBACK_ATTEMPTS} attempts"),
        ))
    }
}

pub(crate) fn completed(task: &Task, failed: bool, reason: &str, result: &str) -> Task {
    let now = now();
    let mut after = task.clone();
    after.state = TaskState::Completed;
    after.failed = failed;
    after.failure_reason = if failed {
        reason.to_string()
    } else {
        String::new()
    };
    after.result = result.to_string();
    after.updated_at = now;
    after.first_completed_at = now;
    after
}
