//! Run: a process in the container; its output becomes log lines; a nonzero exit fails.

use std::collections::HashMap;
use std::sync::Arc;

use diego_garden::{Backend, ProcessEvent, ProcessSpec};
use diego_model::actions::RunAction;
use diego_model::desired_lrp::EnvironmentVariable;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{StepError, go_duration};
use crate::executor::Cx;
use crate::logs::{Emitter, LogStream};

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// SIGTERM sent; SIGKILL at the deadline.
    Terminating,
    /// SIGKILL sent; give up waiting at the deadline.
    Killed,
}

pub(super) async fn perform(
    action: &RunAction,
    emitter: &Emitter,
    cx: &Cx<'_>,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    if cancel.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    let backend = cx.backend();
    let handle = cx.handle;
    let spec = process_spec(action, cx.env);
    // not raced with cancellation: a process that started must be found and stopped
    let id = backend
        .run(handle, spec)
        .await
        .map_err(|e| StepError::backend(format!("failed to run {}", action.path), e))?;
    // from here on, a step dropped before the process is known to have exited kills it
    let mut guard = KillOnDrop {
        backend: cx.shared.backend.clone(),
        handle: handle.to_string(),
        id: id.clone(),
        armed: true,
    };
    let mut output = backend
        .attach(handle, &id)
        .await
        .map_err(|e| StepError::backend(format!("failed to attach to {}", action.path), e))?;
    tracing::debug!(handle, process = %id, path = %action.path, "process started");

    let config = &cx.shared.config;
    let mut stdout = emitter.line_writer(LogStream::Stdout);
    let mut stderr = emitter.line_writer(LogStream::Stderr);
    let mut phase = Phase::Running;
    let mut deadline = Instant::now();
    let status = loop {
        tokio::select! {
            event = output.next() => match event {
                Some(Ok(ProcessEvent::Stdout(b))) if !action.suppress_log_output => stdout.write(&b),
                Some(Ok(ProcessEvent::Stderr(b))) if !action.suppress_log_output => stderr.write(&b),
                Some(Ok(ProcessEvent::Stdout(_) | ProcessEvent::Stderr(_))) => {}
                Some(Ok(ProcessEvent::Exit(status))) => break status,
                Some(Err(e)) => {
                    return Err(StepError::backend(format!("lost the output of {}", action.path), e));
                }
                None => {
                    return Err(StepError::backend(
                        format!("lost the output of {}", action.path),
                        "stream ended without an exit status",
                    ));
                }
            },
            () = cancel.cancelled(), if phase == Phase::Running => {
                tracing::debug!(handle, process = %id, "cancelled: sending SIGTERM");
                if let Err(e) = backend.signal(handle, &id, SIGTERM).await {
                    tracing::warn!(handle, process = %id, error = %e, "SIGTERM failed");
                }
                phase = Phase::Terminating;
                deadline = Instant::now() + config.graceful_shutdown_interval;
            }
            () = tokio::time::sleep_until(deadline), if phase == Phase::Terminating => {
                tracing::info!(handle, process = %id, "graceful shutdown interval exceeded: sending SIGKILL");
                if let Err(e) = backend.signal(handle, &id, SIGKILL).await {
                    tracing::warn!(handle, process = %id, error = %e, "SIGKILL failed");
                }
                phase = Phase::Killed;
                deadline = Instant::now() + config.exit_timeout;
            }
            () = tokio::time::sleep_until(deadline), if phase == Phase::Killed => {
                tracing::error!(handle, process = %id, "process did not exit after SIGKILL");
                return Err(StepError::Cancelled);
            }
        }
    };
    guard.armed = false;
    stdout.flush();
    stderr.flush();

    let out_of_memory = status != 0
        && phase == Phase::Running
        && backend
            .info(handle)
            .await
            .map(|i| i.oom_killed)
            .unwrap_or(false);
    if !action.suppress_log_output {
        let mut message = format!("Exit status {status}");
        if phase == Phase::Killed {
            message.push_str(&format!(
                " (exceeded {} graceful shutdown interval)",
                go_duration(config.graceful_shutdown_interval)
            ));
        }
        if out_of_memory {
            message.push_str(" (out of memory)");
        }
        emitter.stdout(&message);
    }
    tracing::debug!(handle, process = %id, status, ?phase, "process exited");
    if phase != Phase::Running {
        return Err(StepError::Cancelled);
    }
    if status != 0 {
        return Err(StepError::Exited {
            status,
            out_of_memory,
        });
    }
    Ok(())
}

/// Kills the process if the step is dropped (or fails) before it has seen the exit: a
/// future dropped without cancelling its token must not leave a process behind.
struct KillOnDrop {
    backend: Arc<dyn Backend>,
    handle: String,
    id: String,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (backend, handle, id) = (
            self.backend.clone(),
            std::mem::take(&mut self.handle),
            std::mem::take(&mut self.id),
        );
        tracing::info!(handle = %handle, process = %id, "run step abandoned: killing its process");
        runtime.spawn(async move {
            if let Err(e) = backend.signal(&handle, &id, SIGKILL).await {
                tracing::warn!(handle = %handle, process = %id, error = %e, "SIGKILL failed");
            }
        });
    }
}

/// The Garden process for a Run action: the run context's env, then the action's (a later
/// value of the same name wins); `nofile` through `ulimit -n` in the container's `sh`, as
/// Garden's process spec has no rlimits yet.
fn process_spec(action: &RunAction, base_env: &[EnvironmentVariable]) -> ProcessSpec {
    let mut argv = Vec::with_capacity(action.args.len() + 4);
    if let Some(nofile) = action.resource_limits.as_ref().and_then(|l| l.nofile) {
        argv.extend([
            "sh".to_string(),
            "-c".into(),
            format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
        ]);
    }
    argv.push(action.path.clone());
    argv.extend(action.args.iter().cloned());
    if !action.volume_mounted_files.is_empty() {
        tracing::warn!(
            count = action.volume_mounted_files.len(),
            "volume_mounted_files are not supported yet; ignored"
        );
    }
    ProcessSpec {
        argv,
        env: merge_env(base_env, &action.env),
        dir: (!action.dir.is_empty()).then(|| action.dir.clone()),
        user: (!action.user.is_empty()).then(|| action.user.clone()),
        stdin: None,
        ..ProcessSpec::default()
    }
}

fn merge_env(base: &[EnvironmentVariable], own: &[EnvironmentVariable]) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut values: HashMap<&str, &str> = HashMap::new();
    for v in base.iter().chain(own) {
        if values.insert(&v.name, &v.value).is_none() {
            order.push(&v.name);
        }
    }
    order
        .into_iter()
        .map(|name| format!("{name}={}", values[name]))
        .collect()
}

#[cfg(test)]
mod tests {
    use diego_model::actions::ResourceLimits;

    use super::*;

    #[test]
    fn env_merges_with_the_action_winning_and_nofile_wraps() {
        let action = RunAction {
            path: "/bin/app".into(),
            args: vec!["a b".into()],
            env: vec![
                EnvironmentVariable::new("B", "own"),
                EnvironmentVariable::new("C", "3"),
            ],
            resource_limits: Some(ResourceLimits {
                nofile: Some(1024),
                nproc: None,
            }),
            dir: "/app".into(),
            ..RunAction::default()
        };
        let base = [
            EnvironmentVariable::new("A", "1"),
            EnvironmentVariable::new("B", "base"),
        ];
        let spec = process_spec(&action, &base);
        assert_eq!(spec.env, vec!["A=1", "B=own", "C=3"]);
        assert_eq!(
            spec.argv,
            vec![
                "sh",
                "-c",
                "ulimit -n 1024 && exec \"$0\" \"$@\"",
                "/bin/app",
                "a b"
            ]
        );
        assert_eq!(spec.dir.as_deref(), Some("/app"));
        assert_eq!(spec.user, None);
    }
}
