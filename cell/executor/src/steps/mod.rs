//! One step per action (Diego's `depot/steps`). A step runs against a container through a
//! [`diego_garden::Backend`] and stops when its [`CancellationToken`] is cancelled; a
//! combinator hands its children the same token or a child of it, so cancelling a step
//! cancels everything below it.

mod download;
mod run;
mod upload;

use std::time::Duration;

use diego_model::actions::{DownloadAction, RunAction, UploadAction};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use crate::error::StepError;
use crate::executor::Cx;
use crate::logs::Emitter;

/// A built step: an action with its log tags resolved.
#[derive(Debug)]
pub(crate) enum Step {
    Run {
        action: RunAction,
        emitter: Emitter,
    },
    Download {
        action: DownloadAction,
        emitter: Emitter,
    },
    Upload {
        action: UploadAction,
        emitter: Emitter,
    },
    Timeout {
        inner: Box<Step>,
        timeout: Duration,
    },
    EmitProgress {
        inner: Box<Step>,
        start: String,
        success: String,
        failure_prefix: String,
        emitter: Emitter,
    },
    Try {
        inner: Box<Step>,
    },
    Parallel(Vec<Step>),
    Serial(Vec<Step>),
    /// Each with the name used when it is the one that exited.
    Codependent(Vec<(String, Step)>),
}

impl Step {
    /// Runs the step to completion, failure or cancellation.
    pub(crate) fn perform<'a>(
        &'a self,
        cx: &'a Cx<'a>,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            match self {
                Step::Run { action, emitter } => run::perform(action, emitter, cx, cancel).await,
                Step::Download { action, emitter } => {
                    download::perform(action, emitter, cx, cancel).await
                }
                Step::Upload { action, emitter } => {
                    upload::perform(action, emitter, cx, cancel).await
                }
                Step::Timeout { inner, timeout } => timeout_step(inner, *timeout, cx, cancel).await,
                Step::EmitProgress {
                    inner,
                    start,
                    success,
                    failure_prefix,
                    emitter,
                } => {
                    if !start.is_empty() {
                        emitter.stdout(start);
                    }
                    let result = inner.perform(cx, cancel).await;
                    match &result {
                        Ok(()) if !success.is_empty() => emitter.stdout(success),
                        Err(StepError::Cancelled) if !failure_prefix.is_empty() => {
                            emitter.stderr(failure_prefix)
                        }
                        Err(e) if !failure_prefix.is_empty() => {
                            emitter.stderr(&format!("{failure_prefix}: {e}"))
                        }
                        _ => {}
                    }
                    result
                }
                Step::Try { inner } => match inner.perform(cx, cancel).await {
                    Ok(()) => Ok(()),
                    // a cancelled Try is cancelled, not a success: the caller asked to stop
                    Err(_) if cancel.is_cancelled() => Err(StepError::Cancelled),
                    Err(e) => {
                        tracing::info!(handle = cx.handle, error = %e, "try step failed; ignored");
                        Ok(())
                    }
                },
                Step::Serial(steps) => {
                    for step in steps {
                        if cancel.is_cancelled() {
                            return Err(StepError::Cancelled);
                        }
                        step.perform(cx, cancel).await?;
                    }
                    Ok(())
                }
                Step::Parallel(steps) => {
                    let results =
                        futures::future::join_all(steps.iter().map(|s| s.perform(cx, cancel)))
                            .await;
                    combine(results.into_iter().filter_map(Result::err).collect())
                }
                Step::Codependent(steps) => codependent(steps, cx, cancel).await,
            }
        })
    }
}

async fn timeout_step(
    inner: &Step,
    timeout: Duration,
    cx: &Cx<'_>,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let child = cancel.child_token();
    let run = inner.perform(cx, &child);
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result,
        () = tokio::time::sleep(timeout) => {
            tracing::info!(handle = cx.handle, ?timeout, "timed out; cancelling the inner step");
            child.cancel();
            let _ = run.await;
            Err(StepError::TimedOut(timeout))
        }
    }
}

/// Runs all; the first to finish (success included) stops the rest. Failures and exits are
/// aggregated; the cancellations this causes are not failures of their own.
async fn codependent(
    steps: &[(String, Step)],
    cx: &Cx<'_>,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let group = cancel.child_token();
    let mut running: FuturesUnordered<_> = steps
        .iter()
        .map(|(name, step)| {
            let group = &group;
            async move { (name, step.perform(cx, group).await) }
        })
        .collect();
    let mut errors = Vec::new();
    while let Some((name, result)) = running.next().await {
        match result {
            Ok(()) => {
                tracing::info!(handle = cx.handle, step = %name, "codependent step exited");
                errors.push(StepError::CodependentExited(name.clone()));
            }
            Err(StepError::Cancelled) => continue,
            Err(e) => errors.push(e),
        }
        group.cancel();
    }
    if errors.is_empty() {
        // everything was cancelled from above
        return Err(StepError::Cancelled);
    }
    combine(errors)
}

/// No errors: success; cancellations only: cancelled; otherwise the real failures.
fn combine(errors: Vec<StepError>) -> Result<(), StepError> {
    if errors.is_empty() {
        return Ok(());
    }
    let mut failures: Vec<StepError> = errors
        .iter()
        .filter(|e| !e.is_cancelled())
        .cloned()
        .collect();
    match failures.len() {
        0 => Err(StepError::Cancelled),
        1 => Err(failures.remove(0)),
        _ => Err(StepError::Aggregate(failures)),
    }
}

/// Bytes as Diego's bytefmt prints them (`12B`, `1.5K`, `3M`, `1.2G`).
pub(crate) fn byte_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (unit, suffix) in UNITS {
        if bytes >= unit {
            let value = bytes as f64 / unit as f64;
            let text = format!("{value:.1}");
            let text = text.trim_end_matches(".0");
            return format!("{text}{suffix}");
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_bytefmt() {
        assert_eq!(byte_size(12), "12B");
        assert_eq!(byte_size(1536), "1.5K");
        assert_eq!(byte_size(3 << 20), "3M");
        assert_eq!(byte_size((1 << 30) + (1 << 28)), "1.2G");
    }

    #[test]
    fn combine_keeps_real_failures() {
        assert_eq!(combine(vec![]), Ok(()));
        assert_eq!(
            combine(vec![StepError::Cancelled]),
            Err(StepError::Cancelled)
        );
        let exited = StepError::Exited {
            status: 2,
            out_of_memory: false,
        };
        assert_eq!(
            combine(vec![StepError::Cancelled, exited.clone()]),
            Err(exited.clone())
        );
        assert_eq!(
            combine(vec![exited.clone(), exited.clone()]),
            Err(StepError::Aggregate(vec![exited.clone(), exited]))
        );
    }
}
