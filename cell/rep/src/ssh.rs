//! SSH sessions in this cell's instances (the protocol: [`diego_rep_client::ssh`]).
//!
//! Diego puts an sshd in every instance; here the rep runs the session's shell or command as
//! an interactive Garden process in the instance's container (stdin kept open, a terminal it
//! resizes), as the instance's user, in its directory, with its environment, and bridges the
//! process to the proxy's upgraded connection. Only the ssh proxy, holding the cells' shared
//! secret, may open one.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use diego_garden::{Backend, ProcessEvent, ProcessSpec, ProcessStream, TtySpec};
use diego_model::actions::{Action, RunAction};
use diego_model::desired_lrp::EnvironmentVariable;
use diego_model::requests::ErrorResponse;
use diego_model::{BbsError, DesiredLrp};
use diego_rep_client::ContainerState;
use diego_rep_client::ssh::{Frame, FrameCodec, SessionRequest, UPGRADE_PROTOCOL};
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};

use crate::rep::{Inner, Kind};

/// Largest session request body.
const MAX_REQUEST: usize = 64 * 1024;

/// How long a process whose client went away has after `SIGHUP`, before `SIGKILL`.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Picks the instance's shell: bash where the rootfs has it (the stack), else `sh` (images).
const SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash \"$@\"; fi; exec /bin/sh \"$@\"";

/// How a session runs in an instance: as the user, in the directory and with the environment
/// of the instance's own process (its action's first `run`, with the instance's variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionContext {
    pub user: Option<String>,
    pub dir: Option<String>,
    /// `NAME=VALUE`s.
    pub env: Vec<String>,
}

impl SessionContext {
    pub(crate) fn of(desired: &DesiredLrp, instance_env: &[EnvironmentVariable]) -> Self {
        let run = desired.action.as_ref().and_then(first_run);
        let own = run.map(|r| r.env.as_slice()).unwrap_or_default();
        let mut env: Vec<String> = Vec::new();
        for v in instance_env.iter().chain(own) {
            let prefix = format!("{}=", v.name);
            env.retain(|e| !e.starts_with(&prefix));
            env.push(format!("{}={}", v.name, v.value));
        }
        SessionContext {
            user: run.map(|r| r.user.clone()).filter(|u| !u.is_empty()),
            dir: run.map(|r| r.dir.clone()).filter(|d| !d.is_empty()),
            env,
        }
    }
}

fn first_run(action: &Action) -> Option<&RunAction> {
    match action {
        Action::Run(run) => Some(run),
        other => other.children().into_iter().find_map(first_run),
    }
}

/// The process of a session: the shell, interactive or with `-c command`.
pub(crate) fn process_spec(context: &SessionContext, request: &SessionRequest) -> ProcessSpec {
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        SHELL.into(),
        "sh".into(),
    ];
    if let Some(command) = &request.command {
        argv.extend(["-c".to_string(), command.clone()]);
    }
    let mut env = context.env.clone();
    let mut set = |entry: String| {
        if let Some((name, _)) = entry.split_once('=')
            && !name.is_empty()
        {
            let prefix = format!("{name}=");
            env.retain(|e| !e.starts_with(&prefix));
            env.push(entry);
        }
    };
    if let Some(terminal) = &request.terminal {
        let term = Some(terminal.term.as_str()).filter(|t| !t.is_empty());
        set(format!("TERM={}", term.unwrap_or("xterm")));
    }
    for entry in &request.env {
        set(entry.clone());
    }
    ProcessSpec {
        argv,
        env,
        dir: context.dir.clone(),
        user: context.user.clone(),
        stdin: None,
        tty: request.terminal.as_ref().map(|t| size(t.cols, t.rows)),
        interactive: true,
    }
}

/// A terminal size; a client that sent none (0) gets 80x24.
fn size(cols: u16, rows: u16) -> TtySpec {
    let default = TtySpec::default();
    TtySpec {
        cols: if cols == 0 { default.cols } else { cols },
        rows: if rows == 0 { default.rows } else { rows },
    }
}

fn refuse(status: StatusCode, error: BbsError) -> Response {
    (status, Json(ErrorResponse { error })).into_response()
}

/// Whether the request carries the cells' SSH secret.
fn authorized(secret: &str, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // digests compared, so the time taken says nothing about the secret
    Sha256::digest(given.as_bytes()) == Sha256::digest(secret.as_bytes())
}

/// `POST /v1/lrps/{process_guid}/instances/{instance_guid}/ssh`.
pub(crate) async fn session(
    State(inner): State<Arc<Inner>>,
    Path((process_guid, instance_guid)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(secret) = inner.config.ssh_secret.as_deref() else {
        return refuse(
            StatusCode::FORBIDDEN,
            BbsError::invalid_request("SSH is not configured on this cell (no SSH secret)"),
        );
    };
    let (mut parts, body) = request.into_parts();
    if !authorized(secret, &parts.headers) {
        tracing::warn!(%process_guid, %instance_guid, "SSH session refused: wrong secret");
        return refuse(
            StatusCode::FORBIDDEN,
            BbsError::invalid_request("SSH sessions need the cells' SSH secret"),
        );
    }
    let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            BbsError::invalid_request(format!(
                "an SSH session needs an HTTP/1.1 connection upgraded to {UPGRADE_PROTOCOL}"
            )),
        );
    };
    let request: SessionRequest = match axum::body::to_bytes(body, MAX_REQUEST)
        .await
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                BbsError::invalid_request(format!("bad SSH session request: {e}")),
            );
        }
    };
    let found = inner.with_slot(&instance_guid, |slot| match &slot.kind {
        Kind::Lrp(key) if key.process_guid == process_guid => {
            Some((slot.state, slot.session.clone()))
        }
        _ => None,
    });
    let context = match found.flatten() {
        None => {
            return refuse(
                StatusCode::NOT_FOUND,
                BbsError::not_found(format!(
                    "no instance {instance_guid} of {process_guid} on this cell"
                )),
            );
        }
        Some((ContainerState::Running, Some(context))) => context,
        Some((state, _)) => {
            return refuse(
                StatusCode::CONFLICT,
                BbsError::conflict(format!(
                    "instance {instance_guid} of {process_guid} is not running (its container is {state:?})"
                )),
            );
        }
    };
    let spec = process_spec(&context, &request);
    let backend = inner.backend.clone();
    let started = async {
        let id = backend.run(&instance_guid, spec).await?;
        let output = backend.attach(&instance_guid, &id).await?;
        Ok::<_, diego_garden::Error>((id, output))
    };
    let (id, output) = match started.await {
        Ok(started) => started,
        Err(e) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                BbsError::invalid_request(format!(
                    "cannot start the SSH session in instance {instance_guid}: {e}"
                )),
            );
        }
    };
    tracing::info!(
        %process_guid,
        %instance_guid,
        process = %id,
        terminal = request.terminal.is_some(),
        command = request.command.is_some(),
        "SSH session started"
    );
    tokio::spawn(bridge(backend, instance_guid, id, upgrade, output));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Carries the session's frames to the process and its output and exit back, until it exits;
/// a client that goes away first takes the process with it.
async fn bridge(
    backend: Arc<dyn Backend>,
    handle: String,
    id: String,
    upgrade: hyper::upgrade::OnUpgrade,
    mut output: ProcessStream,
) {
    let io = match upgrade.await {
        Ok(io) => hyper_util::rt::TokioIo::new(io),
        Err(e) => {
            tracing::warn!(handle, process = %id, error = %e, "SSH session connection not upgraded");
            hang_up(&*backend, &handle, &id).await;
            return;
        }
    };
    let (mut sink, mut frames) = tokio_util::codec::Framed::new(io, FrameCodec::default()).split();
    let input = async {
        while let Some(frame) = frames.next().await {
            let done = match frame {
                Ok(Frame::Stdin(data)) => backend.write_stdin(&handle, &id, data).await,
                Ok(Frame::StdinEof) => backend.close_stdin(&handle, &id).await,
                Ok(Frame::Resize { cols, rows }) => {
                    backend.resize(&handle, &id, size(cols, rows)).await
                }
                Ok(Frame::Signal(n)) => backend.signal(&handle, &id, n).await,
                Ok(other) => {
                    tracing::debug!(handle, ?other, "unexpected SSH session frame ignored");
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(handle, error = %e, "SSH session connection broke");
                    break;
                }
            };
            // input for a process that is exiting: its exit status is on its way
            if let Err(e) = done {
                tracing::debug!(handle, process = %id, error = %e, "SSH session input not taken");
            }
        }
    };
    let output = async {
        while let Some(event) = output.next().await {
            let (frame, last) = match event {
                Ok(ProcessEvent::Stdout(b)) => (Frame::Stdout(b), false),
                Ok(ProcessEvent::Stderr(b)) => (Frame::Stderr(b), false),
                Ok(ProcessEvent::Exit(code)) => (Frame::Exit(code), true),
                Err(e) => {
                    tracing::warn!(handle, process = %id, error = %e, "SSH session output failed");
                    return false;
                }
            };
            if sink.send(frame).await.is_err() {
                return false;
            }
            if last {
                let _ = sink.close().await;
                return true;
            }
        }
        false
    };
    let exited = tokio::select! {
        exited = output => exited,
        () = input => false,
    };
    if exited {
        tracing::info!(handle, process = %id, "SSH session ended");
    } else {
        tracing::info!(handle, process = %id, "SSH session client went away; hanging up");
        hang_up(&*backend, &handle, &id).await;
    }
}

/// What a terminal's hang-up does: `SIGHUP`, then `SIGKILL` if it is still there.
async fn hang_up(backend: &dyn Backend, handle: &str, id: &str) {
    let _ = backend.signal(handle, id, libc::SIGHUP).await;
    tokio::time::sleep(HANGUP_GRACE).await;
    let _ = backend.signal(handle, id, libc::SIGKILL).await;
}

#[cfg(test)]
mod tests {
    use diego_model::actions::CodependentAction;
    use diego_rep_client::ssh::Terminal;

    use super::*;

    #[test]
    fn sessions_run_as_the_instance_runs() {
        let desired = DesiredLrp {
            action: Some(Action::Codependent(CodependentAction {
                actions: vec![Action::Run(RunAction {
                    path: "/app/start".into(),
                    user: "vcap".into(),
                    dir: "/home/vcap/app".into(),
                    env: vec![EnvironmentVariable::new("PORT", "9000")],
                    ..RunAction::default()
                })],
                log_source: String::new(),
            })),
            ..DesiredLrp::default()
        };
        let instance = [
            EnvironmentVariable::new("PORT", "8080"),
            EnvironmentVariable::new("CF_INSTANCE_INDEX", "0"),
        ];
        let context = SessionContext::of(&desired, &instance);
        assert_eq!(context.user.as_deref(), Some("vcap"));
        assert_eq!(context.dir.as_deref(), Some("/home/vcap/app"));
        assert_eq!(context.env, ["CF_INSTANCE_INDEX=0", "PORT=9000"]);

        let exec = process_spec(
            &context,
            &SessionRequest {
                command: Some("echo hi; exit 3".into()),
                terminal: None,
                env: vec!["LANG=C.UTF-8".into(), "bad".into()],
            },
        );
        assert_eq!(&exec.argv[4..], ["-c", "echo hi; exit 3"]);
        assert!(exec.interactive && exec.tty.is_none());
        assert_eq!(exec.env.last().map(String::as_str), Some("LANG=C.UTF-8"));
        assert_eq!(exec.user.as_deref(), Some("vcap"));

        let shell = process_spec(
            &context,
            &SessionRequest {
                command: None,
                terminal: Some(Terminal {
                    term: "xterm-256color".into(),
                    cols: 0,
                    rows: 50,
                }),
                env: Vec::new(),
            },
        );
        assert_eq!(
            shell.argv.len(),
            4,
            "an interactive shell: {:?}",
            shell.argv
        );
        assert_eq!(shell.tty, Some(TtySpec { cols: 80, rows: 50 }));
        assert!(shell.env.contains(&"TERM=xterm-256color".to_string()));
    }

    #[test]
    fn only_the_secret_opens_sessions() {
        let mut headers = HeaderMap::new();
        assert!(!authorized("s3cret", &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authorized("s3cret", &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized("s3cret", &headers));
    }
}
