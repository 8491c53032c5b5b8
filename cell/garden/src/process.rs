//! Server side of a running process: spawning the exec helper, buffering its output so a
//! late `attach` still sees everything, fanning events out to attached streams.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backend::ProcessStream;
use crate::container::{ExecConfig, SYNC_FD};
use crate::error::{Error, Result};
use crate::exec_server::ExecRequest;
use crate::types::ProcessEvent;

/// Output kept per process for late attachers (older output is dropped beyond this).
const HISTORY_LIMIT: usize = 4 << 20;

#[derive(Debug, Default)]
struct Inner {
    history: Vec<ProcessEvent>,
    history_bytes: usize,
    subscribers: Vec<mpsc::UnboundedSender<ProcessEvent>>,
    exit: Option<i32>,
}

/// A process started through this server.
#[derive(Debug)]
pub struct ProcessState {
    /// Host pid of the process (inside the container it has another).
    pub host_pid: i32,
    /// When it was started.
    pub started: std::time::Instant,
    inner: Mutex<Inner>,
}

impl ProcessState {
    fn push(&self, ev: ProcessEvent) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let ProcessEvent::Exit(code) = ev {
            inner.exit = Some(code);
        }
        let size = match &ev {
            ProcessEvent::Stdout(b) | ProcessEvent::Stderr(b) => b.len(),
            ProcessEvent::Exit(_) => 0,
        };
        inner.history_bytes += size;
        inner.history.push(ev.clone());
        while inner.history_bytes > HISTORY_LIMIT && inner.history.len() > 1 {
            let dropped = inner.history.remove(0);
            if let ProcessEvent::Stdout(b) | ProcessEvent::Stderr(b) = dropped {
                inner.history_bytes -= b.len();
            }
        }
        inner.subscribers.retain(|s| s.send(ev.clone()).is_ok());
    }

    /// Exit status, once exited.
    pub fn exit_status(&self) -> Option<i32> {
        self.inner.lock().ok().and_then(|i| i.exit)
    }

    /// Everything so far, then live events until exit.
    pub fn attach(&self) -> ProcessStream {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut inner) = self.inner.lock() {
            for ev in &inner.history {
                let _ = tx.send(ev.clone());
            }
            if inner.exit.is_none() {
                inner.subscribers.push(tx);
            }
        }
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            let ev = rx.recv().await?;
            Some((Ok(ev), rx))
        }))
    }
}

/// Spawns `init_bin exec` for `config` and waits until the process has exec'd.
pub async fn spawn(
    init_bin: &Path,
    handle: &str,
    config: &ExecConfig,
    stdin: Option<String>,
) -> Result<Arc<ProcessState>> {
    let program = config.argv.first().cloned().unwrap_or_default();
    let json = serde_json::to_string(config).map_err(|e| Error::InvalidRequest(e.to_string()))?;
    let (sync_r, sync_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("create sync pipe", e))?;
    let w = sync_w.as_raw_fd();
    let mut cmd = tokio::process::Command::new(init_bin);
    cmd.arg("exec")
        .arg(json)
        // not in the server's process group: a terminal's Ctrl-C is the server's to handle
        .process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls dup2 and fcntl,
    // which are async-signal-safe; `w` is an fd number copied into the closure.
    unsafe {
        cmd.pre_exec(move || {
            if w == SYNC_FD {
                if libc::fcntl(w, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(w, SYNC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("spawn {} exec", init_bin.display()), e))?;
    drop(sync_w);
    let mut report = String::new();
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(sync_r)
        .map_err(|e| Error::io("watch sync pipe", e))?;
    reader
        .read_to_string(&mut report)
        .await
        .map_err(|e| Error::io("read sync pipe", e))?;

    let (host_pid, error) = parse_report(&report);
    let fail = |message: String| Error::ProcessStart {
        handle: handle.to_string(),
        program: program.clone(),
        message,
    };
    if let Some(e) = error {
        let _ = child.wait().await;
        return Err(fail(e));
    }
    let Some(host_pid) = host_pid else {
        let status = child.wait().await;
        return Err(fail(format!(
            "exec helper exited without reporting a pid ({status:?})"
        )));
    };

    let stdin_pipe = child.stdin.take();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let exit = async move {
        match child.wait().await {
            Ok(s) => s.code().unwrap_or(1),
            Err(_) => 1,
        }
    };
    Ok(follow(
        host_pid,
        stdin_pipe.zip(stdin),
        stdout,
        stderr,
        exit,
    ))
}

/// The state of a started process: its input written, its output pumped, its exit code
/// (from `exit`) pushed last.
fn follow(
    host_pid: i32,
    stdin: Option<(impl tokio::io::AsyncWrite + Unpin + Send + 'static, String)>,
    stdout: Option<impl AsyncRead + Unpin + Send + 'static>,
    stderr: Option<impl AsyncRead + Unpin + Send + 'static>,
    exit: impl std::future::Future<Output = i32> + Send + 'static,
) -> Arc<ProcessState> {
    let state = Arc::new(ProcessState {
        host_pid,
        started: std::time::Instant::now(),
        inner: Mutex::new(Inner::default()),
    });
    if let Some((mut pipe, data)) = stdin {
        tokio::spawn(async move {
            let _ = pipe.write_all(data.as_bytes()).await;
        });
    }
    let out = stdout.map(|p| pump(p, state.clone(), true));
    let err = stderr.map(|p| pump(p, state.clone(), false));
    let st = state.clone();
    tokio::spawn(async move {
        let code = exit.await;
        // a daemonised grandchild may hold the pipes open; do not wait for it forever
        for task in [out, err].into_iter().flatten() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
        st.push(ProcessEvent::Exit(code));
    });
    state
}

/// The `pid N` or `error: ...` report of a sync pipe (read to its end).
fn parse_report(report: &str) -> (Option<i32>, Option<String>) {
    let mut host_pid = None;
    let mut error = None;
    for line in report.lines() {
        if let Some(p) = line.strip_prefix("pid ") {
            host_pid = p.trim().parse::<i32>().ok();
        } else if let Some(e) = line.strip_prefix("error: ") {
            error = Some(e.to_string());
        }
    }
    (host_pid, error)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("create pipe", e))
}

/// Starts `request` through the container's shim ([`crate::exec_server`]) and waits until the
/// process has exec'd. `Ok(None)`: the request was not sent (the channel is closed or full,
/// or the request too large), so the exec helper can start the process instead.
pub async fn spawn_in_shim(
    channel: &OwnedFd,
    handle: &str,
    request: &ExecRequest,
    stdin: Option<String>,
) -> Result<Option<Arc<ProcessState>>> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let program = request.argv.first().cloned().unwrap_or_default();
    let json = serde_json::to_vec(request).map_err(|e| Error::InvalidRequest(e.to_string()))?;
    let (in_r, in_w) = match &stdin {
        Some(_) => {
            let (r, w) = pipe()?;
            (r, Some(w))
        }
        None => {
            let null =
                std::fs::File::open("/dev/null").map_err(|e| Error::io("open /dev/null", e))?;
            (OwnedFd::from(null), None)
        }
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let fds = [
        in_r.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
        sync_w.as_raw_fd(),
        status_w.as_raw_fd(),
    ];
    let iov = [std::io::IoSlice::new(&json)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    // never blocks: a full channel means a stuck shim, and the helper is the way out
    if let Err(e) = sendmsg::<()>(
        channel.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        tracing::debug!(handle, error = %e, "exec channel unavailable; starting the exec helper");
        return Ok(None);
    }
    // the shim has its copies now
    drop((in_r, out_w, err_w, sync_w, status_w));
    let fail = |message: String| Error::ProcessStart {
        handle: handle.to_string(),
        program: program.clone(),
        message,
    };
    let mut report = String::new();
    tokio::net::unix::pipe::Receiver::from_owned_fd(sync_r)
        .map_err(|e| Error::io("watch sync pipe", e))?
        .read_to_string(&mut report)
        .await
        .map_err(|e| Error::io("read sync pipe", e))?;
    let (host_pid, error) = parse_report(&report);
    if let Some(e) = error {
        return Err(fail(e));
    }
    let Some(host_pid) = host_pid else {
        return Err(fail("the container's shim exited".into()));
    };
    let receiver = |fd: OwnedFd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok();
    let stdin = match (in_w, stdin) {
        (Some(w), Some(data)) => tokio::net::unix::pipe::Sender::from_owned_fd(w)
            .ok()
            .map(|w| (w, data)),
        _ => None,
    };
    let mut status = receiver(status_r);
    let exit = async move {
        let mut text = String::new();
        if let Some(s) = status.as_mut() {
            let _ = s.read_to_string(&mut text).await;
        }
        // no status: the shim died with the container, and the process with them
        text.trim()
            .strip_prefix("exit ")
            .and_then(|c| c.parse().ok())
            .unwrap_or(128 + libc::SIGKILL)
    };
    Ok(Some(follow(
        host_pid,
        stdin,
        receiver(out_r),
        receiver(err_r),
        exit,
    )))
}

fn pump(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    state: Arc<ProcessState>,
    stdout: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let b = Bytes::copy_from_slice(&buf[..n]);
                    state.push(if stdout {
                        ProcessEvent::Stdout(b)
                    } else {
                        ProcessEvent::Stderr(b)
                    });
                }
            }
        }
    })
}
