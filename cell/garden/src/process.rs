//! Server side of a running process: spawning the exec helper, buffering its output so a
//! late `attach` still sees everything, fanning events out to attached streams, and the open
//! input (and terminal) of an interactive process.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::sync::mpsc;

use crate::backend::ProcessStream;
use crate::container::{ExecConfig, SYNC_FD};
use crate::error::{Error, Result};
use crate::exec_server::ExecRequest;
use crate::types::{ProcessEvent, TtySpec};

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
    /// The open stdin of an interactive process (`None` once closed, or never open).
    input: Arc<tokio::sync::Mutex<Option<Input>>>,
    /// The terminal of an interactive process on one.
    pty: Option<Arc<Pty>>,
}

/// Where the input of an interactive process goes.
enum Input {
    Pipe(Box<dyn AsyncWrite + Send + Unpin>),
    Terminal(Arc<Pty>),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Input::Pipe(_) => "Pipe",
            Input::Terminal(_) => "Terminal",
        })
    }
}

/// Why input could not be given to a process.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Its stdin was never open (not interactive) or has been closed.
    #[error("its stdin is not open")]
    Closed,
    /// It is not on a terminal.
    #[error("it has no terminal")]
    NoTerminal,
    /// Writing failed (the process is gone).
    #[error("{0}")]
    Io(#[from] std::io::Error),
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

    /// Gives `data` to an interactive process's stdin (its terminal, if it has one).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), InputError> {
        let mut input = self.input.lock().await;
        match input.as_mut() {
            None => Err(InputError::Closed),
            Some(Input::Pipe(pipe)) => {
                pipe.write_all(data).await?;
                pipe.flush().await?;
                Ok(())
            }
            Some(Input::Terminal(pty)) => Ok(pty.write_all(data).await?),
        }
    }

    /// Ends an interactive process's stdin: the pipe is closed; on a terminal, the
    /// end-of-file character is typed (the terminal itself stays: it is the output too).
    pub async fn close_stdin(&self) -> Result<(), InputError> {
        match self.input.lock().await.take() {
            None => Err(InputError::Closed),
            Some(Input::Pipe(mut pipe)) => {
                let _ = pipe.shutdown().await;
                Ok(())
            }
            Some(Input::Terminal(pty)) => Ok(pty.write_all(&[pty.eof_char()]).await?),
        }
    }

    /// Resizes an interactive process's terminal.
    pub fn resize(&self, size: TtySpec) -> Result<(), InputError> {
        let pty = self.pty.as_ref().ok_or(InputError::NoTerminal)?;
        Ok(pty.resize(size)?)
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

/// The standard streams a process gets.
#[derive(Debug)]
pub enum Stdio {
    /// Pipes. `stdin` is written, then closed (none: `/dev/null`), unless `interactive` keeps
    /// it open for [`ProcessState::write_stdin`].
    Pipes {
        stdin: Option<String>,
        interactive: bool,
    },
    /// `slave` as stdin, stdout and stderr; `stdin` is typed first. The master, `pty`, is the
    /// process's input and output, and stays open.
    Terminal {
        pty: Pty,
        slave: OwnedFd,
        stdin: Option<String>,
    },
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The server's ends of a started process's streams.
struct Streams {
    input: Option<Input>,
    /// Written to `input` first.
    first: Option<String>,
    /// `input` stays open after `first`.
    interactive: bool,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
    pty: Option<Arc<Pty>>,
}

impl Streams {
    fn terminal(pty: Pty, first: Option<String>) -> Streams {
        let pty = Arc::new(pty);
        Streams {
            input: Some(Input::Terminal(pty.clone())),
            first,
            interactive: true,
            stdout: Some(Box::new(PtyReader(pty.clone()))),
            stderr: None,
            pty: Some(pty),
        }
    }
}

/// Spawns `init_bin exec` for `config` and waits until the process has exec'd.
pub async fn spawn(
    init_bin: &Path,
    handle: &str,
    config: &ExecConfig,
    stdio: Stdio,
) -> Result<Arc<ProcessState>> {
    use std::process::Stdio as Std;
    let program = config.argv.first().cloned().unwrap_or_default();
    let json = serde_json::to_string(config).map_err(|e| Error::InvalidRequest(e.to_string()))?;
    let (sync_r, sync_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("create sync pipe", e))?;
    let w = sync_w.as_raw_fd();
    let mut cmd = tokio::process::Command::new(init_bin);
    cmd.arg("exec")
        .arg(json)
        // not in the server's process group: a terminal's Ctrl-C is the server's to handle
        .process_group(0);
    match &stdio {
        Stdio::Pipes { stdin, interactive } => {
            cmd.stdin(if stdin.is_some() || *interactive {
                Std::piped()
            } else {
                Std::null()
            })
            .stdout(Std::piped())
            .stderr(Std::piped());
        }
        Stdio::Terminal { slave, .. } => {
            let dup = || {
                slave
                    .try_clone()
                    .map(Std::from)
                    .map_err(|e| Error::io("duplicate the terminal", e))
            };
            cmd.stdin(dup()?).stdout(dup()?).stderr(dup()?);
        }
    }
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
    // the helper has its copies (of the terminal too: ours must go for it to hang up)
    drop(cmd);
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

    let streams = match stdio {
        Stdio::Pipes { stdin, interactive } => Streams {
            input: child
                .stdin
                .take()
                .map(|p| Input::Pipe(Box::new(p) as Box<dyn AsyncWrite + Send + Unpin>)),
            first: stdin,
            interactive,
            stdout: child.stdout.take().map(|p| Box::new(p) as Reader),
            stderr: child.stderr.take().map(|p| Box::new(p) as Reader),
            pty: None,
        },
        Stdio::Terminal { pty, slave, stdin } => {
            drop(slave);
            Streams::terminal(pty, stdin)
        }
    };
    let exit = async move {
        match child.wait().await {
            Ok(s) => s.code().unwrap_or(1),
            Err(_) => 1,
        }
    };
    Ok(follow(host_pid, streams, exit))
}

/// The state of a started process: its input written (or kept open), its output pumped, its
/// exit code (from `exit`) pushed last.
fn follow(
    host_pid: i32,
    streams: Streams,
    exit: impl std::future::Future<Output = i32> + Send + 'static,
) -> Arc<ProcessState> {
    let state = Arc::new(ProcessState {
        host_pid,
        started: std::time::Instant::now(),
        inner: Mutex::new(Inner::default()),
        input: Arc::new(tokio::sync::Mutex::new(None)),
        pty: streams.pty,
    });
    if let Some(input) = streams.input {
        // held until `first` is written, so later input comes after it
        if let Ok(mut slot) = state.input.clone().try_lock_owned() {
            let (first, interactive) = (streams.first, streams.interactive);
            tokio::spawn(async move {
                let mut input = input;
                if let Some(data) = first {
                    let _ = match &mut input {
                        Input::Pipe(pipe) => pipe.write_all(data.as_bytes()).await,
                        Input::Terminal(pty) => pty.write_all(data.as_bytes()).await,
                    };
                }
                match (interactive, input) {
                    (true, input) => *slot = Some(input),
                    (false, Input::Pipe(mut pipe)) => {
                        let _ = pipe.shutdown().await;
                    }
                    (false, Input::Terminal(_)) => {}
                }
            });
        }
    }
    let out = streams.stdout.map(|p| pump(p, state.clone(), true));
    let err = streams.stderr.map(|p| pump(p, state.clone(), false));
    let st = state.clone();
    tokio::spawn(async move {
        let code = exit.await;
        // a daemonised grandchild may hold the pipes open; do not wait for it forever
        for task in [out, err].into_iter().flatten() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
        // nothing reads the input any more
        st.input.lock().await.take();
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

/// What [`spawn_in_shim`] did.
#[derive(Debug)]
pub enum Spawned {
    /// The shim started the process.
    Started(Arc<ProcessState>),
    /// The request was not sent (the channel is closed or full, or the request too large), so
    /// the exec helper can start the process with these streams instead.
    NotSent(Stdio),
}

/// The server's ends of the streams handed to the shim.
enum Ends {
    Pipes {
        stdin: Option<String>,
        interactive: bool,
        input: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal {
        pty: Pty,
        slave: OwnedFd,
        stdin: Option<String>,
    },
}

/// Starts `request` through the container's shim ([`crate::exec_server`]) and waits until the
/// process has exec'd.
pub async fn spawn_in_shim(
    channel: &OwnedFd,
    handle: &str,
    request: &ExecRequest,
    stdio: Stdio,
) -> Result<Spawned> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let program = request.argv.first().cloned().unwrap_or_default();
    let json = serde_json::to_vec(request).map_err(|e| Error::InvalidRequest(e.to_string()))?;
    // what the process gets as stdin, stdout and stderr, and what the server keeps
    let (child_fds, ends): ([OwnedFd; 3], Ends) = match stdio {
        Stdio::Pipes { stdin, interactive } => {
            let (in_r, in_w) = if stdin.is_some() || interactive {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                let null =
                    std::fs::File::open("/dev/null").map_err(|e| Error::io("open /dev/null", e))?;
                (OwnedFd::from(null), None)
            };
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let ends = Ends::Pipes {
                stdin,
                interactive,
                input: in_w,
                stdout: out_r,
                stderr: err_r,
            };
            ([in_r, out_w, err_w], ends)
        }
        Stdio::Terminal { pty, slave, stdin } => {
            let dup = || {
                slave
                    .try_clone()
                    .map_err(|e| Error::io("duplicate the terminal", e))
            };
            (
                [dup()?, dup()?, dup()?],
                Ends::Terminal { pty, slave, stdin },
            )
        }
    };
    let (sync_r, sync_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let fds = [
        child_fds[0].as_raw_fd(),
        child_fds[1].as_raw_fd(),
        child_fds[2].as_raw_fd(),
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
        return Ok(Spawned::NotSent(match ends {
            Ends::Pipes {
                stdin, interactive, ..
            } => Stdio::Pipes { stdin, interactive },
            Ends::Terminal { pty, slave, stdin } => Stdio::Terminal { pty, slave, stdin },
        }));
    }
    // the shim has its copies now (of the terminal too: ours must go for it to hang up)
    drop((child_fds, sync_w, status_w));
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
    let receiver = |fd: OwnedFd| {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .ok()
            .map(|r| Box::new(r) as Reader)
    };
    let streams = match ends {
        Ends::Pipes {
            stdin,
            interactive,
            input,
            stdout,
            stderr,
        } => Streams {
            input: input
                .and_then(|w| tokio::net::unix::pipe::Sender::from_owned_fd(w).ok())
                .map(|w| Input::Pipe(Box::new(w))),
            first: stdin,
            interactive,
            stdout: receiver(stdout),
            stderr: receiver(stderr),
            pty: None,
        },
        Ends::Terminal { pty, slave, stdin } => {
            drop(slave);
            Streams::terminal(pty, stdin)
        }
    };
    let mut status = tokio::net::unix::pipe::Receiver::from_owned_fd(status_r).ok();
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
    Ok(Spawned::Started(follow(host_pid, streams, exit)))
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

/// The terminal's end-of-file character (`^D`), typed when an interactive process's input
/// ends.
const EOF_CHAR: u8 = 4;

/// The master side of a terminal made for an interactive process, held by the server: the
/// process's input and output, and where its size is set.
#[derive(Debug)]
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    /// A new terminal of the devpts instance of the container whose pid 1 is `init_pid`, so
    /// the process sees it as its `/dev/pts/N`, sized `size`; and its slave side, owned by
    /// `root_id` (the host id of the container's root), whom the process, before it drops to
    /// its user, gives it to.
    pub fn open(init_pid: i32, size: TtySpec, root_id: u32) -> Result<(Pty, OwnedFd)> {
        use nix::fcntl::{OpenHow, ResolveFlag, openat2};
        let root = nix::fcntl::open(
            format!("/proc/{init_pid}/root").as_str(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            Error::sys(
                format!("open the root of the container of pid {init_pid}"),
                e,
            )
        })?;
        // looked up as inside the container: no link there leads out of its root
        let how = OpenHow::new()
            .flags(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let master = openat2(&root, "dev/pts/ptmx", how)
            .map_err(|e| Error::sys("open the container's /dev/pts/ptmx", e))?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int that lives across the call; it fails (ENOTTY) unless
        // `master` is a terminal multiplexer.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
            return Err(Error::io(
                "unlock a terminal of the container",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: TIOCGPTPEER opens the slave of `master` (no path lookup) and returns a new
        // descriptor, or -1; it takes the open flags by value.
        let raw = unsafe {
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(Error::io(
                "open the slave of a terminal of the container",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a descriptor the kernel just opened for this process alone.
        let slave = unsafe { OwnedFd::from_raw_fd(raw) };
        let root = (
            Some(nix::unistd::Uid::from_raw(root_id)),
            Some(nix::unistd::Gid::from_raw(root_id)),
        );
        nix::unistd::fchown(&slave, root.0, root.1)
            .map_err(|e| Error::sys("give a terminal to the container's root", e))?;
        // SAFETY: an OwnedFd's descriptor is open and the same for as long as it is owned,
        // and the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(master) }
            .map_err(|e| Error::io("watch a terminal", e.into()))?;
        let pty = Pty { fd };
        pty.resize(size)
            .map_err(|e| Error::io("size a terminal", e))?;
        Ok((pty, slave))
    }

    /// Sets the terminal's size; the kernel signals `SIGWINCH` to its foreground process
    /// group.
    pub fn resize(&self, size: TtySpec) -> std::io::Result<()> {
        let ws = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        if unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Types `data` (waits while the terminal's input queue is full).
    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = self
                .fd
                .async_io(Interest::WRITABLE, |fd| {
                    nix::unistd::write(fd.as_fd(), data).map_err(std::io::Error::from)
                })
                .await?;
            data = &data[n..];
        }
        Ok(())
    }

    fn eof_char(&self) -> u8 {
        EOF_CHAR
    }
}

/// A terminal's output; it ends when every slave descriptor is closed (`EIO`).
struct PtyReader(Arc<Pty>);

impl AsyncRead for PtyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = match self.0.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_fd(), unfilled).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // the process and everything it started closed the terminal: the end
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}
