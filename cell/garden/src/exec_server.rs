//! The shim's exec channel: processes started by the container's shim instead of a fresh
//! exec helper.
//!
//! The shim already is where a process must start: in the container's cgroups, in its mount,
//! uts, ipc, net (and cgroup) namespaces, and every child it forks after `unshare` lands in
//! the container's pid namespace. So a process forked by the shim needs no `execve` of the
//! helper, no cgroup join (on cgroup v1 a join may wait for an RCU grace period) and no
//! `setns` but the user and mount namespaces, and the seccomp filter is compiled once per
//! container. The child then locks itself down exactly as the exec helper's child does
//! ([`crate::container`]'s `child_exec`).
//!
//! Protocol: the server holds the other end of a `SOCK_SEQPACKET` socket pair (the shim's
//! stdin at start). One message per process: an [`ExecRequest`] as JSON with five
//! descriptors (`SCM_RIGHTS`): stdin, stdout, stderr, the sync pipe (as the exec helper's
//! fd 3: `pid N` from the shim, `error: ...` from the child if it cannot exec) and the status
//! pipe, on which the shim writes `exit N` once it reaped the process. A channel the server
//! closed (it restarted) is dropped; the shim keeps reaping.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde::{Deserialize, Serialize};

use crate::container::{Entered, ExecConfig, child_exec, exit_code};
use crate::init_error::InitError;

/// Descriptors sent with each request, in this order.
pub const REQUEST_FDS: usize = 5;

/// Largest request accepted (argv and environment).
pub const MAX_REQUEST: usize = 1 << 20;

/// What the server asks the shim to run; the policy (rlimits, capabilities, seccomp) comes
/// from the container's runtime spec, which the shim already has.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Full environment.
    pub env: Vec<String>,
    /// Working directory.
    pub dir: String,
    /// User name or `uid[:gid]`.
    pub user: Option<String>,
    /// Its stdin is a terminal, to become its controlling terminal.
    #[serde(default)]
    pub tty: bool,
}

/// The container's process policy, read from the runtime spec once.
struct Policy {
    base: ExecConfig,
    filter: seccompiler::BpfProgram,
}

fn policy(runtime: &Spec) -> Result<Policy, InitError> {
    let refused = |what: &str| InitError::refused("exec policy", what.to_string());
    let process = runtime
        .process()
        .as_ref()
        .ok_or_else(|| refused("the runtime spec has no process"))?;
    let seccomp: LinuxSeccomp = runtime
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone())
        .ok_or_else(|| refused("the runtime spec has no seccomp profile"))?;
    let capabilities = process
        .capabilities()
        .clone()
        .ok_or_else(|| refused("the runtime spec has no capabilities"))?;
    let filter = crate::security::seccomp_filter(&seccomp)?;
    Ok(Policy {
        base: ExecConfig {
            init_pid: 0,
            cgroup_procs: Vec::new(),
            argv: Vec::new(),
            env: Vec::new(),
            dir: "/".into(),
            user: None,
            tty: false,
            controlling_tty: false,
            namespaces: Vec::new(),
            rlimits: process.rlimits().clone().unwrap_or_default(),
            capabilities,
            seccomp,
        },
        filter,
    })
}

/// Descriptors of the mount and user namespaces the children join.
#[derive(Debug)]
pub struct Namespaces {
    /// The container's mount namespace (joining it puts a child at the container's root).
    pub mnt: OwnedFd,
    /// The container's user namespace (`None`: privileged).
    pub user: Option<OwnedFd>,
}

fn write_line(fd: &OwnedFd, line: &str) {
    let _ = nix::unistd::write(fd, line.as_bytes());
}

/// One received request with its descriptors, or why it was refused.
enum Received {
    Request(Box<ExecRequest>, Vec<OwnedFd>),
    Refused(String, Vec<OwnedFd>),
    Closed,
}

fn receive(channel: &OwnedFd, buf: &mut [u8]) -> Received {
    let mut cmsg = nix::cmsg_space!([RawFd; REQUEST_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = match recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(m) => m,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {
            return Received::Refused("interrupted".into(), Vec::new());
        }
        Err(_) => return Received::Closed,
    };
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in this process for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    let (len, truncated) = (
        msg.bytes,
        msg.flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
    );
    if len == 0 && fds.is_empty() {
        return Received::Closed;
    }
    if truncated || fds.len() != REQUEST_FDS {
        return Received::Refused("malformed exec request".into(), fds);
    }
    match serde_json::from_slice::<ExecRequest>(&buf[..len]) {
        Ok(req) if !req.argv.is_empty() => Received::Request(Box::new(req), fds),
        Ok(_) => Received::Refused("empty argv".into(), fds),
        Err(e) => Received::Refused(format!("exec request: {e}"), fds),
    }
}

/// Forks the process of `req`; returns its pid (in the shim's, the host's, pid namespace).
fn start(
    req: ExecRequest,
    fds: [OwnedFd; REQUEST_FDS],
    policy: &Policy,
    ns: &Namespaces,
    sync: &OwnedFd,
) -> Result<Pid, InitError> {
    let [stdin, stdout, stderr, _, _] = fds;
    // SAFETY: the shim is single-threaded (see `crate::container`), so the child may allocate
    // and run arbitrary code after fork.
    match unsafe { fork() }.map_err(InitError::sys("fork process"))? {
        ForkResult::Child => {
            let e = child(req, [stdin, stdout, stderr], policy, ns);
            write_line(sync, &format!("error: {e}\n"));
            // SAFETY: _exit skips atexit handlers and stdio flushing inherited from the shim.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// The child: standard streams, the container's root, rlimits; then as the exec helper's
/// child. Returns only on failure.
fn child(req: ExecRequest, stdio: [OwnedFd; 3], policy: &Policy, ns: &Namespaces) -> InitError {
    let r = (|| -> Result<Entered, InitError> {
        // the shim waits on these signals; the process must not inherit the mask
        SigSet::empty()
            .thread_set_mask()
            .map_err(InitError::sys("reset the signal mask"))?;
        for (fd, target) in stdio.iter().zip(0..) {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded child;
            // `fd` stays open across the call.
            if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
                return Err(InitError::last_os("dup2 stdio"));
            }
        }
        drop(stdio);
        // root and working directory become the container's root (as setns does for the exec
        // helper): the shim's own may still point into the host's tree
        nix::sched::setns(ns.mnt.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(InitError::sys("setns mnt"))?;
        crate::security::set_rlimits(&policy.base.rlimits)?;
        let userns = match &ns.user {
            Some(fd) => Some(
                fd.try_clone()
                    .map_err(InitError::io("dup user namespace"))?,
            ),
            None => None,
        };
        Ok(Entered {
            spec: ExecConfig {
                argv: req.argv,
                env: req.env,
                dir: req.dir,
                user: req.user,
                controlling_tty: req.tty,
                ..policy.base.clone()
            },
            userns,
            filter: policy.filter.clone(),
        })
    })();
    match r {
        Ok(entered) => child_exec(&entered),
        Err(e) => e,
    }
}

/// Serves exec requests on `channel` and reaps children until `pid1` exits; returns pid 1's
/// exit code. Every process still running then dies with the pid namespace: they are reaped
/// and reported before the shim exits.
pub fn serve(channel: OwnedFd, pid1: Pid, runtime: &Spec, ns: Namespaces) -> i32 {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    // a status or sync pipe whose reader is gone (the server restarted) must fail the
    // write, not kill the shim; children start with an empty mask
    let mut blocked = mask;
    blocked.add(Signal::SIGPIPE);
    let sigfd = blocked.thread_block().ok().and_then(|()| {
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok()
    });
    let Some(sigfd) = sigfd else {
        return crate::container::wait_reaping(pid1);
    };
    let policy = policy(runtime);
    let mut channel = Some(channel);
    let mut running: HashMap<Pid, OwnedFd> = HashMap::new();
    let mut buf = vec![0u8; MAX_REQUEST];
    let report = |status_fd: OwnedFd, status: WaitStatus| {
        write_line(&status_fd, &format!("exit {}\n", exit_code(status)));
    };
    loop {
        let (sig_ready, chan_ready) = {
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            if let Some(c) = &channel {
                fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return crate::container::wait_reaping(pid1),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if sig_ready {
            while let Ok(Some(_)) = sigfd.read_signal() {}
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(s @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) => {
                        if p == pid1 {
                            // the pid namespace is gone: its processes are being killed
                            drop(channel.take());
                            loop {
                                match waitpid(None, None) {
                                    Ok(
                                        s @ (WaitStatus::Exited(p, _)
                                        | WaitStatus::Signaled(p, _, _)),
                                    ) => {
                                        if let Some(fd) = running.remove(&p) {
                                            report(fd, s);
                                        }
                                    }
                                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                                    Err(_) => break,
                                }
                            }
                            return exit_code(s);
                        }
                        if let Some(fd) = running.remove(&p) {
                            report(fd, s);
                        }
                    }
                    Ok(_) => {}
                }
            }
        }
        if chan_ready && let Some(c) = &channel {
            match receive(c, &mut buf) {
                Received::Closed => channel = None,
                Received::Refused(why, fds) => {
                    if let Some(sync) = fds.get(3) {
                        write_line(sync, &format!("error: {why}\n"));
                    }
                }
                Received::Request(req, fds) => {
                    let Ok(fds) = <[OwnedFd; REQUEST_FDS]>::try_from(fds) else {
                        continue;
                    };
                    let sync = match fds[3].try_clone() {
                        Ok(s) => s,
                        Err(_) => continue,
                    };
                    let status = match fds[4].try_clone() {
                        Ok(s) => s,
                        Err(_) => continue,
                    };
                    let started = match &policy {
                        Ok(p) => start(*req, fds, p, &ns, &sync),
                        Err(e) => Err(InitError::refused("exec", e.to_string())),
                    };
                    match started {
                        Ok(pid) => {
                            write_line(&sync, &format!("pid {pid}\n"));
                            running.insert(pid, status);
                        }
                        Err(e) => write_line(&sync, &format!("error: {e}\n")),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{
        AddressFamily, ControlMessage, SockFlag, SockType, sendmsg, socketpair,
    };

    fn channel() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    fn send(to: &OwnedFd, body: &[u8], nfds: usize) {
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..nfds)
            .map(|_| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap())
            .collect();
        let fds: Vec<RawFd> = pipes.iter().map(|(r, _)| r.as_raw_fd()).collect();
        let iov = [std::io::IoSlice::new(body)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let cmsg: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(to.as_raw_fd(), &iov, cmsg, MsgFlags::empty(), None).unwrap();
    }

    #[test]
    fn requests_come_with_their_descriptors_or_are_refused() {
        let (server, shim) = channel();
        let mut buf = vec![0u8; 4096];
        let req = br#"{"argv":["true"],"env":["A=1"],"dir":"/","user":null}"#;
        send(&server, req, REQUEST_FDS);
        match receive(&shim, &mut buf) {
            Received::Request(r, fds) => {
                assert_eq!(r.argv, ["true"]);
                assert_eq!(fds.len(), REQUEST_FDS);
            }
            _ => panic!("a well-formed request was not accepted"),
        }
        send(&server, req, 2);
        assert!(matches!(receive(&shim, &mut buf), Received::Refused(..)));
        send(
            &server,
            br#"{"argv":[],"env":[],"dir":"/","user":null}"#,
            REQUEST_FDS,
        );
        assert!(matches!(receive(&shim, &mut buf), Received::Refused(w, _) if w == "empty argv"));
        send(&server, b"not json", REQUEST_FDS);
        assert!(matches!(receive(&shim, &mut buf), Received::Refused(..)));
        drop(server);
        assert!(matches!(receive(&shim, &mut buf), Received::Closed));
    }

    #[test]
    fn the_policy_comes_from_the_runtime_spec() {
        let spec = crate::spec::runtime_spec(&crate::types::ContainerSpec::from_dir("/r"), "h");
        let p = policy(&spec).unwrap();
        assert!(!p.filter.is_empty());
        assert!(p.base.capabilities.bounding().is_some());
        let mut bare = spec.clone();
        bare.set_linux(None);
        assert!(policy(&bare).is_err(), "no seccomp profile, no processes");
    }
}
