//! The in-container side: what the `diego-garden-init` binary does.
//!
//! `diego-garden-init init <json>` (the *shim*): joins the container's cgroups,
//! unshares mount, uts, ipc, net and pid namespaces and forks. The child is pid 1 of the new pid
//! namespace: it mounts the overlay rootfs, bind mounts, /proc, a minimal /dev (null, zero, full,
//! random, urandom, tty, pts, shm), read-only /sys and a /tmp tmpfs, pivot_roots into the rootfs,
//! sets the hostname, reports `ready` on stdout and then only reaps orphans. The shim prints
//! the host pid of that child (`pid N`) and waits for it, so the server's child (the shim) exits
//! exactly when the container's pid 1 does. Meanwhile it starts processes on the server's
//! request ([`crate::exec_server`]). Mounts live only in the container's mount namespace,
//! so nothing is left in the host's mount table when the container dies.
//!
//! `diego-garden-init exec <json>` (run a process): opens `/proc/<init>/ns/*`, joins the cgroups,
//! setns into ipc, uts, net, pid and mnt (this also puts it at the container's root), forks (the
//! child is in the pid namespace), and the child drops to the user, changes directory and execs.
//! Fd 3 is a close-on-exec pipe to the server: the helper writes `pid N` (the host pid of the
//! child); the child writes `error: ...` only if it could not exec. The helper exits with the
//! child's status (`128 + signal` when killed).
//!
//! Both run single-threaded, so forking and allocating afterwards is sound.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, chdir, execve, fork, pivot_root, sethostname};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxDeviceType, LinuxNamespaceType, LinuxSeccomp, PosixRlimit, Spec,
};
use serde::{Deserialize, Serialize};

use crate::init_error::InitError;
use crate::security::{self, IdMap, Lockdown};
use crate::types::BindMount;

/// What the shim and pid 1 need to set up a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    /// Container handle (also the hostname).
    pub handle: String,
    /// overlayfs lower dirs, top first.
    pub lower_dirs: Vec<PathBuf>,
    /// overlayfs upper dir.
    pub upper_dir: PathBuf,
    /// overlayfs work dir.
    pub work_dir: PathBuf,
    /// Where the overlay is mounted (inside the container's mount namespace only).
    pub rootfs: PathBuf,
    /// Bind mounts.
    pub bind_mounts: Vec<BindMount>,
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// Written to the container's /etc/resolv.conf (networked containers get the host's).
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// What the container gets ([`crate::spec::runtime_spec`]): the namespaces unshared,
    /// the user namespace's mapping, devices, sysctls, masked and read-only paths, and pid
    /// 1's seccomp profile are read from it.
    pub runtime: Spec,
    /// The container's own file system for its writable layer (a disk limit): `upper_dir`
    /// and `work_dir` are then inside it.
    #[serde(default)]
    pub disk: Option<DiskMount>,
    /// The shim's stdin is a socket on which the server asks it to start processes
    /// ([`crate::exec_server`]).
    #[serde(default)]
    pub exec_channel: bool,
}

impl InitConfig {
    /// The user namespace's mapping of an unprivileged container; `None` keeps host root
    /// (privileged). Lower layers and bind mounts are then mounted idmapped, so their files
    /// show their owners inside; the upper dir holds host ids (its root is owned by root
    /// inside).
    pub fn id_map(&self) -> Option<IdMap> {
        crate::spec::id_map(&self.runtime)
    }
}

/// A disk image pid 1 mounts (in the container's mount namespace only) to hold the overlay's
/// upper and work dirs; see [`crate::disk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMount {
    /// The ext4 image.
    pub image: PathBuf,
    /// Where it is mounted.
    pub target: PathBuf,
}

/// What the exec helper needs to start a process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    /// Host pid of the container's pid 1.
    pub init_pid: i32,
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Full environment.
    pub env: Vec<String>,
    /// Working directory.
    pub dir: String,
    /// User name or `uid[:gid]`.
    pub user: Option<String>,
    /// Run on a pseudo-terminal (stdout and stderr both come from it).
    #[serde(default)]
    pub tty: bool,
    /// Stdin is a terminal the server made (an interactive process): it becomes the
    /// process's controlling terminal.
    #[serde(default)]
    pub controlling_tty: bool,
    /// The container's namespaces (from its runtime spec), joined in a fixed order; the
    /// user namespace last, by the child.
    pub namespaces: Vec<LinuxNamespaceType>,
    /// rlimits of the process (set before it leaves the host's user namespace).
    pub rlimits: Vec<PosixRlimit>,
    /// The capability sets of the runtime spec's process.
    pub capabilities: LinuxCapabilities,
    /// The seccomp profile installed just before `execve`.
    pub seccomp: LinuxSeccomp,
}

/// Fd number of the sync pipe given to the exec helper.
pub const SYNC_FD: i32 = 3;

type R<T> = std::result::Result<T, InitError>;

/// An error of a step of the set-up, as [`InitError`].
trait Cause {
    fn at(self, step: String) -> InitError;
}

impl Cause for nix::errno::Errno {
    fn at(self, step: String) -> InitError {
        InitError::sys(step)(self)
    }
}

impl Cause for std::io::Error {
    fn at(self, step: String) -> InitError {
        InitError::io(step)(self)
    }
}

impl Cause for std::ffi::NulError {
    fn at(self, step: String) -> InitError {
        InitError::refused(step, self.to_string())
    }
}

impl Cause for std::num::TryFromIntError {
    fn at(self, step: String) -> InitError {
        InitError::refused(step, self.to_string())
    }
}

/// Names the step of a fallible call.
trait Step<T> {
    fn step(self, step: impl std::fmt::Display) -> R<T>;
}

impl<T, E: Cause> Step<T> for std::result::Result<T, E> {
    fn step(self, step: impl std::fmt::Display) -> R<T> {
        self.map_err(|e| e.at(step.to_string()))
    }
}

fn join_cgroups(files: &[PathBuf]) -> R<()> {
    let pid = std::process::id().to_string();
    for f in files {
        fs::write(f, &pid).step(format!("join cgroup {}", f.display()))?;
    }
    Ok(())
}

pub(crate) fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 1,
    }
}

fn wait_for(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return exit_code(s),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

fn null_stdio() {
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process; `null`
        // stays valid for the duration of the calls.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Entry point of `diego-garden-init init <config json>`; returns the process exit code.
pub fn shim_main(config_json: &str) -> i32 {
    match shim(config_json) {
        Ok(code) => code,
        Err(e) => {
            println!("error: {e}");
            1
        }
    }
}

/// Makes a user namespace with `map` and returns a descriptor of it and the pid of its
/// holder: a child cloned straight into a new user namespace (`CLONE_NEWUSER` on clone, so
/// it exists before the child ever runs); we write its maps, open `/proc/CHILD/ns/user` and
/// SIGKILL it. Nothing here waits for the child to be scheduled (on a busy host each such
/// wait costs a time slice: ~7 ms measured when the child had to unshare and answer, then be
/// reaped); the shim reaps it later ([`wait_reaping`]). Done before the pid namespace is
/// unshared, so the child is not the container's pid 1.
fn make_userns(map: &IdMap) -> R<(OwnedFd, Pid)> {
    // SAFETY: a raw clone without CLONE_VM and a null stack behaves as fork: the child runs on
    // a copy of our memory. This process is single-threaded (see module docs) and the child
    // makes raw syscalls only (pause, _exit) until it is killed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::SIGCHLD,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc < 0 {
        return Err(InitError::last_os("clone into a new user namespace"));
    }
    if rc == 0 {
        loop {
            // SAFETY: pause has no preconditions; the parent kills us
            unsafe { libc::pause() };
        }
    }
    let child = Pid::from_raw(i32::try_from(rc).step("clone pid")?);
    let result = (|| {
        for f in ["uid_map", "gid_map"] {
            let p = format!("/proc/{child}/{f}");
            fs::write(&p, map.proc_map()).step(format!("write {p}"))?;
        }
        let p = format!("/proc/{child}/ns/user");
        Ok(OwnedFd::from(fs::File::open(&p).step(format!("open {p}"))?))
    })();
    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    match result {
        Ok(fd) => Ok((fd, child)),
        Err(e) => {
            let _ = waitpid(child, None);
            Err(e)
        }
    }
}

/// Waits for `pid` like [`wait_for`], reaping any other child on the way (the user namespace
/// holder).
pub(crate) fn wait_reaping(pid: Pid) -> i32 {
    loop {
        match waitpid(None, None) {
            Ok(s @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) if p == pid => {
                return exit_code(s);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

/// Joins the user namespace `userns` as root inside (pid 1 and exec'd processes).
fn join_userns(userns: &OwnedFd) -> R<()> {
    setns(userns.as_fd(), CloneFlags::CLONE_NEWUSER).step("setns user")?;
    let root_g = Gid::from_raw(0);
    let root_u = Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g).step("setresgid 0 in user namespace")?;
    nix::unistd::setresuid(root_u, root_u, root_u).step("setresuid 0 in user namespace")
}

/// The runtime spec's seccomp profile compiled: required, a container never runs without it.
fn seccomp_of(spec: &Spec) -> R<seccompiler::BpfProgram> {
    let profile = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .ok_or_else(|| InitError::refused("seccomp", "the runtime spec has no seccomp profile"))?;
    security::seccomp_filter(profile)
}

/// The clone flags of the namespaces pid 1 gets by `unshare` (the user namespace is made
/// before, by [`make_userns`]).
fn unshare_flags(kinds: &[LinuxNamespaceType]) -> R<CloneFlags> {
    let mut flags = CloneFlags::empty();
    for kind in kinds {
        flags |= match kind {
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            LinuxNamespaceType::User => continue,
            LinuxNamespaceType::Time => {
                return Err(InitError::refused(
                    "unshare namespaces",
                    "a time namespace is not supported",
                ));
            }
        };
    }
    if !flags.contains(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID) {
        // pid 1 mounts the rootfs and reaps: both need their own namespace
        return Err(InitError::refused(
            "unshare namespaces",
            "the runtime spec must give the container its own mount and pid namespaces",
        ));
    }
    Ok(flags)
}

/// pid 1 keeps nothing once the container is set up: it only reaps. Not dumpable, root of
/// the user namespace (unprivileged) or host root without any capability (privileged),
/// `no_new_privs` and the runtime spec's seccomp filter.
fn pid1_lockdown(config: &InitConfig, userns: Option<&OwnedFd>) -> R<()> {
    let filter = seccomp_of(&config.runtime)?;
    security::set_not_dumpable()?;
    nix::unistd::setgroups(&[]).step("setgroups")?;
    if let Some(ns) = userns {
        join_userns(ns)?;
    }
    security::limit_bounding_set(0)?;
    security::set_capabilities(0, 0)?;
    // changing ids resets the flag: set it again
    security::set_not_dumpable()?;
    security::apply_filter(&filter)
}

fn shim(config_json: &str) -> R<i32> {
    let config: InitConfig =
        serde_json::from_str(config_json).map_err(|source| InitError::Config {
            what: "init config",
            source,
        })?;
    let kinds = crate::spec::namespace_kinds(&config.runtime);
    let flags = unshare_flags(&kinds)?;
    let id_map = config.id_map();
    if kinds.contains(&LinuxNamespaceType::User) != id_map.is_some() {
        return Err(InitError::refused(
            "user namespace",
            "the runtime spec needs a user namespace and a mapping of root, or neither",
        ));
    }
    join_cgroups(&config.cgroup_procs)?;
    let (userns, holder) = id_map.as_ref().map(make_userns).transpose()?.unzip();
    let reap_holder = || {
        if let Some(h) = holder {
            let _ = waitpid(h, None);
        }
    };
    if let Err(e) = unshare(flags) {
        reap_holder();
        return Err(InitError::sys("unshare namespaces")(e));
    }
    // the new mount namespace, opened while /proc is still the host's: the exec channel's
    // children join it to stand at the container's root
    let mnt_ns = if config.exec_channel {
        fs::File::open("/proc/self/ns/mnt").ok().map(OwnedFd::from)
    } else {
        None
    };
    std::io::stdout().flush().step("flush stdout")?;
    // SAFETY: this process is single-threaded (the init binary never starts threads), so the
    // child may allocate and run arbitrary code after fork.
    let forked = unsafe { fork() };
    if forked.is_err() {
        reap_holder();
    }
    match forked.step("fork container init")? {
        ForkResult::Child => {
            drop(mnt_ns);
            let setup = pid1_setup(&config, userns.as_ref())
                .and_then(|()| pid1_lockdown(&config, userns.as_ref()));
            drop(userns);
            let code = match setup {
                Ok(()) => {
                    println!("ready");
                    let _ = std::io::stdout().flush();
                    null_stdio();
                    reap_forever()
                }
                Err(e) => {
                    println!("error: {e}");
                    1
                }
            };
            let _ = std::io::stdout().flush();
            Ok(code)
        }
        ForkResult::Parent { child } => {
            println!("pid {child}");
            let _ = std::io::stdout().flush();
            // the exec channel (stdin) moves off fd 0; without a mount namespace descriptor
            // or when this process cannot be made non-dumpable (its children are visible in
            // the container before they exec) it is closed, so the server falls back to the
            // exec helper
            let channel = match mnt_ns {
                Some(mnt) if security::set_not_dumpable().is_ok() => {
                    // SAFETY: fcntl with F_DUPFD_CLOEXEC only duplicates fd 0 (the channel,
                    // set up by the server) to a new descriptor, which we then own.
                    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
                    // SAFETY: see above; a negative result is not wrapped.
                    (fd >= 0).then(|| (unsafe { OwnedFd::from_raw_fd(fd) }, mnt))
                }
                _ => None,
            };
            null_stdio();
            match channel {
                Some((channel, mnt)) => {
                    let ns = crate::exec_server::Namespaces { mnt, user: userns };
                    Ok(crate::exec_server::serve(
                        channel,
                        child,
                        &config.runtime,
                        ns,
                    ))
                }
                None => {
                    drop(userns);
                    Ok(wait_reaping(child))
                }
            }
        }
    }
}

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> R<()> {
    mount(src, target, fstype, flags, data).step(format!(
        "mount {} on {}",
        fstype.or(src).unwrap_or("?"),
        target.display()
    ))
}

fn mkdir_p(p: &Path) -> R<()> {
    fs::create_dir_all(p).step(format!("mkdir {}", p.display()))
}

/// Fails if any existing component of `rel` under `root` is a symlink (or `rel` has `..`).
fn refuse_symlinks(root: &Path, rel: &Path) -> R<()> {
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        match comp {
            std::path::Component::Normal(n) => cur.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => continue,
            _ => {
                return Err(InitError::refused(
                    format!("bind mount destination {}", rel.display()),
                    "it has `..`",
                ));
            }
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(InitError::refused(
                    format!("bind mount destination {}", rel.display()),
                    format!("{} is a symlink in the rootfs", cur.display()),
                ));
            }
            Ok(_) => {}
            Err(_) => return Ok(()), // the rest is created by us
        }
    }
    Ok(())
}

fn in_root(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// One step of pid 1's setup. [`setup_plan`] lists them in order and [`apply`] carries one
/// out, so the plan (what is mounted where, with which flags, in which order) is unit-tested
/// without root, while the integration suite checks the real thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOp {
    /// `mount --make-rprivate /`: nothing we mount propagates to the host.
    MakePrivate,
    /// Attach the disk image to a self-detaching loop device, mount it, and make the
    /// overlay's upper (mode 0755, owned by `owner`, the container's root) and work dirs in it.
    AttachDisk {
        /// The image and its mount point.
        disk: DiskMount,
        /// Upper dir (inside the mount).
        upper: PathBuf,
        /// Work dir (inside the mount).
        work: PathBuf,
        /// Host id of root inside (unprivileged containers).
        owner: Option<u32>,
    },
    /// Refuse if an existing component of the path (relative to the rootfs) is a symlink.
    RefuseSymlinks {
        /// The rootfs.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
    },
    /// `mkdir -p`.
    Mkdir(PathBuf),
    /// Create an empty file (and its parents) unless it exists.
    Touch(PathBuf),
    /// mount(2).
    Mount {
        /// Source (`None` for remounts).
        source: Option<String>,
        /// Mount point.
        target: PathBuf,
        /// File system type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Options.
        data: Option<String>,
    },
    /// A device node (of the runtime spec's `linux.devices`).
    Mknod {
        /// Node path.
        path: PathBuf,
        /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
        kind: SFlag,
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
        /// Permission bits.
        mode: u32,
    },
    /// A symlink `link -> target`.
    Symlink {
        /// Link target.
        target: String,
        /// The link.
        link: PathBuf,
    },
    /// pivot_root into the directory, detach the old root, chdir /.
    PivotRoot(PathBuf),
    /// sethostname(2).
    SetHostname(String),
    /// An idmapped bind mount (the user namespace's mapping): a detached clone of `source`
    /// (`open_tree`), marked idmapped (`mount_setattr`) and attached at `target`
    /// (`move_mount`). When `fallback` and the file system cannot be idmapped, a plain bind.
    IdmapBind {
        /// Host path.
        source: PathBuf,
        /// Mount point.
        target: PathBuf,
        /// Clone submounts too (`AT_RECURSIVE`).
        recursive: bool,
        /// Fall back to a plain (recursive) bind mount.
        fallback: bool,
    },
    /// Write a sysctl of the container's namespaces (best effort: absent ones are skipped).
    Sysctl {
        /// Path of the file under the container's /proc/sys.
        path: PathBuf,
        /// Value.
        value: String,
    },
    /// Hide a path: an empty read-only tmpfs over a directory, `null` bound over a file.
    Mask {
        /// The path (skipped if absent).
        path: PathBuf,
        /// The container's /dev/null.
        null: PathBuf,
    },
    /// Make a path read-only (a bind mount of itself, remounted read-only; skipped if absent).
    ReadOnly(PathBuf),
    /// Write `/etc/<name>` (after pivot_root; a symlink there is replaced, not followed).
    WriteEtc {
        /// File name under /etc.
        name: String,
        /// Contents.
        contents: String,
    },
}

fn mount_op(
    source: &str,
    target: PathBuf,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> SetupOp {
    SetupOp::Mount {
        source: Some(source.to_string()),
        target,
        fstype: Some(fstype.to_string()),
        flags,
        data: data.map(str::to_string),
    }
}

/// pid 1's setup steps for `c`; `is_dir` tells whether a bind mount source is a directory.
pub fn setup_plan(c: &InitConfig, is_dir: impl Fn(&Path) -> bool) -> Vec<SetupOp> {
    let root = &c.rootfs;
    let mut ops = vec![SetupOp::MakePrivate];
    if let Some(disk) = &c.disk {
        ops.push(SetupOp::AttachDisk {
            disk: disk.clone(),
            upper: c.upper_dir.clone(),
            work: c.work_dir.clone(),
            owner: c.id_map().map(|m| m.host_base),
        });
    }
    let id_map = c.id_map();
    let linux = c.runtime.linux().as_ref();
    let lower_dirs = match id_map {
        None => c.lower_dirs.clone(),
        Some(_) => {
            // each layer idmapped on a mount point of its own next to the rootfs
            let staging = c.rootfs.with_file_name("lower");
            let mut dirs = Vec::new();
            for (i, l) in c.lower_dirs.iter().enumerate() {
                let target = staging.join(i.to_string());
                ops.push(SetupOp::Mkdir(target.clone()));
                ops.push(SetupOp::IdmapBind {
                    source: l.clone(),
                    target: target.clone(),
                    recursive: false,
                    fallback: false,
                });
                dirs.push(target);
            }
            dirs
        }
    };
    let lower = lower_dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        c.upper_dir.display(),
        c.work_dir.display()
    );
    ops.push(mount_op(
        "overlay",
        root.clone(),
        "overlay",
        MsFlags::empty(),
        Some(&opts),
    ));

    for b in &c.bind_mounts {
        // the image is static while we set up (no process of the container runs yet), so
        // refusing symlinks on the way is enough to keep mkdir and mount inside the rootfs
        ops.push(SetupOp::RefuseSymlinks {
            root: root.clone(),
            path: b.dst_path.clone(),
        });
        let target = in_root(root, &b.dst_path);
        if is_dir(&b.src_path) {
            ops.push(SetupOp::Mkdir(target.clone()));
        } else {
            ops.push(SetupOp::Touch(target.clone()));
        }
        if id_map.is_some() {
            ops.push(SetupOp::IdmapBind {
                source: b.src_path.clone(),
                target: target.clone(),
                recursive: true,
                fallback: true,
            });
        } else {
            ops.push(SetupOp::Mount {
                source: Some(b.src_path.display().to_string()),
                target: target.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None,
            });
        }
        if !b.read_write {
            ops.push(SetupOp::Mount {
                source: None,
                target,
                fstype: None,
                flags: MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_REC,
                data: None,
            });
        }
    }

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let dev = root.join("dev");
    ops.push(SetupOp::Mkdir(root.join("proc")));
    ops.push(mount_op(
        "proc",
        root.join("proc"),
        "proc",
        nosuid_nodev_noexec,
        None,
    ));
    ops.push(SetupOp::Mkdir(dev.clone()));
    ops.push(mount_op(
        "tmpfs",
        dev.clone(),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    ));
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            // `a` (all) names a cgroup rule, not a node
            LinuxDeviceType::A => continue,
        };
        ops.push(SetupOp::Mknod {
            path: in_root(root, d.path()),
            kind,
            major: u64::try_from(d.major()).unwrap_or_default(),
            minor: u64::try_from(d.minor()).unwrap_or_default(),
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        });
    }
    ops.push(SetupOp::Mkdir(dev.join("pts")));
    ops.push(mount_op(
        "devpts",
        dev.join("pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ));
    ops.push(SetupOp::Mkdir(dev.join("shm")));
    ops.push(mount_op(
        "shm",
        dev.join("shm"),
        "tmpfs",
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    ));
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(SetupOp::Symlink {
            target: target.to_string(),
            link: dev.join(link),
        });
    }
    ops.push(SetupOp::Mkdir(root.join("sys")));
    ops.push(mount_op(
        "sysfs",
        root.join("sys"),
        "sysfs",
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    ));
    // the network namespace's sysctls, then runc's masked and read-only paths
    let mut sysctls: Vec<(&String, &String)> = linux
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flatten()
        .collect();
    sysctls.sort();
    for (name, value) in sysctls {
        ops.push(SetupOp::Sysctl {
            path: root.join("proc/sys").join(name.replace('.', "/")),
            value: value.clone(),
        });
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        ops.push(SetupOp::Mask {
            path: in_root(root, Path::new(p)),
            null: dev.join("null"),
        });
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        ops.push(SetupOp::ReadOnly(in_root(root, Path::new(p))));
    }
    ops.push(SetupOp::Mkdir(root.join("tmp")));
    ops.push(mount_op(
        "tmpfs",
        root.join("tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    ));
    ops.push(SetupOp::PivotRoot(root.clone()));
    ops.push(SetupOp::SetHostname(c.handle.clone()));
    // after pivot_root: a link in the image (say /etc/hosts -> /root/.bashrc) now resolves
    // inside the container, never on the host
    ops.push(SetupOp::WriteEtc {
        name: "hostname".into(),
        contents: format!("{}\n", c.handle),
    });
    ops.push(SetupOp::WriteEtc {
        name: "hosts".into(),
        contents: format!("127.0.0.1 localhost\n127.0.0.1 {}\n", c.handle),
    });
    if let Some(resolv) = &c.resolv_conf {
        ops.push(SetupOp::WriteEtc {
            name: "resolv.conf".into(),
            contents: resolv.clone(),
        });
    }
    ops
}

fn idmap_bind(userns: Option<&OwnedFd>, source: &Path, target: &Path, recursive: bool) -> R<()> {
    let userns = userns.ok_or_else(|| {
        InitError::refused(
            format!("idmap {}", source.display()),
            "no user namespace to map to",
        )
    })?;
    let src = CString::new(source.as_os_str().as_bytes()).step("path")?;
    let dst = CString::new(target.as_os_str().as_bytes()).step("path")?;
    let empty = c"";
    let rec = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree reads a NUL-terminated path that lives across the call.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | rec as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(InitError::last_os(format!(
            "open_tree {}",
            source.display()
        )));
    }
    // SAFETY: open_tree returned a new descriptor that we now own.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `attr` (its size is passed) and an empty path, both live.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | rec,
            &attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(InitError::last_os(format!("idmap {}", source.display())));
    }
    // SAFETY: move_mount reads an empty path and a NUL-terminated target, both live.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(InitError::last_os(format!(
            "attach idmapped {} at {}",
            source.display(),
            target.display()
        )));
    }
    Ok(())
}

fn attach_disk(disk: &DiskMount, upper: &Path, work: &Path, owner: Option<u32>) -> R<()> {
    let (loopdev, dev) = crate::disk::attach(&disk.image).map_err(|e| match e {
        crate::Error::Io { context, source } => InitError::Io {
            step: context,
            source,
        },
        other => InitError::refused(
            format!("attach {}", disk.image.display()),
            other.to_string(),
        ),
    })?;
    // the mount is the loop device's only user once `loopdev` is closed: when the container's
    // mount namespace goes, the device detaches itself (autoclear)
    mnt(
        Some(&dev.display().to_string()),
        &disk.target,
        Some("ext4"),
        MsFlags::empty(),
        // no background zeroing of the lazily made inode tables: it would fill the sparse image
        Some("noinit_itable"),
    )?;
    drop(loopdev);
    for d in [upper, work] {
        nix::unistd::mkdir(d, Mode::from_bits_truncate(0o755))
            .step(format!("mkdir {}", d.display()))?;
    }
    if let Some(id) = owner {
        // the upper dir's root is the container's `/`: owned by root inside
        nix::unistd::chown(upper, Some(Uid::from_raw(id)), Some(Gid::from_raw(id)))
            .step(format!("chown {}", upper.display()))?;
    }
    Ok(())
}

/// Carries out one [`SetupOp`]; `userns` is the container's user namespace, if it has one.
fn apply(op: &SetupOp, userns: Option<&OwnedFd>) -> R<()> {
    match op {
        SetupOp::MakePrivate => mnt(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        ),
        SetupOp::AttachDisk {
            disk,
            upper,
            work,
            owner,
        } => attach_disk(disk, upper, work, *owner),
        SetupOp::RefuseSymlinks { root, path } => refuse_symlinks(root, path),
        SetupOp::Mkdir(p) => mkdir_p(p),
        SetupOp::Touch(p) => {
            if let Some(parent) = p.parent() {
                mkdir_p(parent)?;
            }
            if !p.exists() {
                fs::write(p, b"").step(format!("create {}", p.display()))?;
            }
            Ok(())
        }
        SetupOp::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => mnt(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        SetupOp::Mknod {
            path,
            kind,
            major,
            minor,
            mode,
        } => mknod(
            path,
            *kind,
            Mode::from_bits_truncate(*mode),
            makedev(*major, *minor),
        )
        .step(format!("mknod {}", path.display())),
        SetupOp::Symlink { target, link } => {
            std::os::unix::fs::symlink(target, link).step(format!("symlink {}", link.display()))
        }
        SetupOp::PivotRoot(root) => {
            chdir(root).step(format!("chdir {}", root.display()))?;
            pivot_root(".", ".").step("pivot_root")?;
            umount2(".", MntFlags::MNT_DETACH).step("detach old root")?;
            chdir("/").step("chdir /")
        }
        SetupOp::SetHostname(name) => sethostname(name).step("sethostname"),
        SetupOp::IdmapBind {
            source,
            target,
            recursive,
            fallback,
        } => match idmap_bind(userns, source, target, *recursive) {
            Ok(()) => Ok(()),
            Err(e) if *fallback => {
                tracing::debug!(error = %e, "idmapped bind mount refused; plain bind");
                mnt(
                    Some(&source.display().to_string()),
                    target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
            }
            Err(e) => Err(e),
        },
        SetupOp::Sysctl { path, value } => {
            if path.exists() {
                fs::write(path, value).step(format!("write {}", path.display()))?;
            }
            Ok(())
        }
        SetupOp::Mask { path, null } => match fs::symlink_metadata(path) {
            Err(_) => Ok(()),
            Ok(m) if m.is_dir() => mnt(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=555"),
            ),
            Ok(_) => mnt(
                Some(&null.display().to_string()),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            ),
        },
        SetupOp::ReadOnly(path) => {
            if fs::symlink_metadata(path).is_err() {
                return Ok(());
            }
            let p = path.display().to_string();
            mnt(
                Some(&p),
                path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            mnt(
                None,
                path,
                None,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None,
            )
        }
        SetupOp::WriteEtc { name, contents } => {
            let etc = Path::new("/etc");
            if etc.is_dir() {
                let p = etc.join(name);
                if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                    let _ = fs::remove_file(&p);
                }
                let _ = fs::write(&p, contents);
            }
            Ok(())
        }
    }
}

fn pid1_setup(c: &InitConfig, userns: Option<&OwnedFd>) -> R<()> {
    // device nodes and mount points get exactly the modes asked for
    let old_umask = nix::sys::stat::umask(Mode::empty());
    for op in setup_plan(c, Path::is_dir) {
        apply(&op, userns)?;
    }
    nix::sys::stat::umask(old_umask);
    Ok(())
}

/// Pid 1's loop: reap every child, exit on SIGTERM.
fn reap_forever() -> i32 {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if set.thread_block().is_err() {
        return 1;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if s == WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return 0,
            Err(_) => continue,
        }
    }
}

/// Entry point of `diego-garden-init exec <json>`; returns the process exit code.
pub fn exec_main(spec_json: &str) -> i32 {
    // SAFETY: fd 3 was set up by the server (dup2 in pre_exec) for this process alone; if it
    // is not open, writes to it fail harmlessly.
    let sync = unsafe { OwnedFd::from_raw_fd(SYNC_FD) };
    // the exec'd program must not inherit the sync pipe
    let _ = nix::fcntl::fcntl(
        &sync,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // nothing in the container may ptrace this process or open its /proc/PID/exe before it
    // execs (CVE-2019-5736); fork keeps the flag
    let entered = match security::set_not_dumpable().and_then(|()| enter(spec_json)) {
        Ok(entered) => entered,
        Err(e) => {
            let _ = nix::unistd::write(&sync, format!("error: {e}\n").as_bytes());
            return 127;
        }
    };
    if entered.spec.tty {
        return match exec_with_tty(&entered, sync) {
            Ok(code) => code,
            Err((e, sync)) => {
                let _ = nix::unistd::write(&sync, format!("error: {e}\n").as_bytes());
                127
            }
        };
    }
    // SAFETY: single-threaded process (see module docs).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let e = child_exec(&entered);
            let _ = nix::unistd::write(&sync, format!("error: {e}\n").as_bytes());
            // SAFETY: _exit skips atexit handlers and stdio flushing inherited from the parent.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::unistd::write(&sync, format!("pid {child}\n").as_bytes());
            drop(sync);
            wait_for(child)
        }
        Err(e) => {
            let _ = nix::unistd::write(&sync, format!("error: fork: {e}\n").as_bytes());
            127
        }
    }
}

/// An exec request inside the container's namespaces, ready to fork.
pub(crate) struct Entered {
    pub(crate) spec: ExecConfig,
    /// The container's user namespace, joined by the child after fork.
    pub(crate) userns: Option<OwnedFd>,
    /// The seccomp program, compiled before fork so a failure is reported.
    pub(crate) filter: seccompiler::BpfProgram,
}

/// Joins the container's cgroups and namespaces (all but the user namespace, which the child
/// joins last) and sets the rlimits.
fn enter(spec_json: &str) -> R<Entered> {
    let spec: ExecConfig = serde_json::from_str(spec_json).map_err(|source| InitError::Config {
        what: "exec spec",
        source,
    })?;
    if spec.argv.is_empty() {
        return Err(InitError::refused("exec", "empty argv"));
    }
    // the mount namespace last: entering it also moves us to the container's root
    let kinds = [
        (LinuxNamespaceType::Ipc, "ipc", CloneFlags::CLONE_NEWIPC),
        (LinuxNamespaceType::Uts, "uts", CloneFlags::CLONE_NEWUTS),
        (LinuxNamespaceType::Network, "net", CloneFlags::CLONE_NEWNET),
        (
            LinuxNamespaceType::Cgroup,
            "cgroup",
            CloneFlags::CLONE_NEWCGROUP,
        ),
        (LinuxNamespaceType::Pid, "pid", CloneFlags::CLONE_NEWPID),
        (LinuxNamespaceType::Mount, "mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut fds = Vec::new();
    for (_, name, flag) in kinds
        .into_iter()
        .filter(|(kind, _, _)| spec.namespaces.contains(kind))
    {
        let p = format!("/proc/{}/ns/{name}", spec.init_pid);
        let f = fs::File::open(&p).step(format!("open {p}"))?;
        fds.push((f, flag, name));
    }
    // a container made before user namespaces (adopted after an upgrade) shares ours
    let same_userns = || {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        ino(&format!("/proc/{}/ns/user", spec.init_pid)) == ino("/proc/self/ns/user")
    };
    let userns = if spec.namespaces.contains(&LinuxNamespaceType::User) && !same_userns() {
        let p = format!("/proc/{}/ns/user", spec.init_pid);
        Some(OwnedFd::from(fs::File::open(&p).step(format!("open {p}"))?))
    } else {
        None
    };
    join_cgroups(&spec.cgroup_procs)?;
    for (f, flag, name) in &fds {
        setns(f.as_fd(), *flag).step(format!("setns {name}"))?;
    }
    drop(fds);
    security::set_rlimits(&spec.rlimits)?;
    let filter = security::seccomp_filter(&spec.seccomp)?;
    Ok(Entered {
        spec,
        userns,
        filter,
    })
}

/// Resolves `user` against the container's /etc/passwd (we are already inside its mount ns).
fn resolve_user(user: Option<&str>) -> R<(Uid, Gid, Option<String>)> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((Uid::from_raw(0), Gid::from_raw(0), Some("/root".into())));
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && (f[0] == u || f[2] == u)).then(|| {
            (
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_string(),
            )
        })
    });
    let (uid, pgid, home) = match (entry, u.parse::<u32>()) {
        (Some((Some(uid), gid, home)), _) => (uid, gid, Some(home)),
        (_, Ok(uid)) => (uid, Some(uid), None),
        _ => return Err(InitError::refused(format!("user {u}"), "unknown user")),
    };
    let gid = match g {
        Some(g) => g
            .parse::<u32>()
            .map_err(|_| InitError::refused(format!("group {g}"), "bad group"))?,
        None => pgid.unwrap_or(uid),
    };
    Ok((Uid::from_raw(uid), Gid::from_raw(gid), home))
}

fn find_program(prog: &str, env: &[String]) -> R<CString> {
    if prog.contains('/') {
        return CString::new(prog).step("argv[0]");
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(prog);
        if let Ok(md) = fs::metadata(&cand)
            && md.is_file()
            && md.permissions().mode() & 0o111 != 0
        {
            return CString::new(cand.as_os_str().as_bytes()).step("program path");
        }
    }
    Err(InitError::refused(
        format!("executable {prog}"),
        format!("not found in PATH {path}"),
    ))
}

/// Drops to the user and execs; returns only if that failed.
pub(crate) fn child_exec(entered: &Entered) -> InitError {
    let spec = &entered.spec;
    let r: R<std::convert::Infallible> = (|| {
        if let Some(ns) = &entered.userns {
            join_userns(ns)?;
        }
        let (uid, gid, home) = resolve_user(spec.user.as_deref())?;
        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if let Some(home) = home
            && !env.iter().any(|e| e.starts_with("HOME="))
        {
            env.push(format!("HOME={home}"));
        }
        let prog = find_program(&spec.argv[0], &env)?;
        let argv = spec
            .argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .step("argv")?;
        let envp = env
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .step("env")?;
        let _ = nix::unistd::setsid();
        if spec.controlling_tty {
            // SAFETY: TIOCSCTTY on this process's own stdin; the argument is passed by value.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(InitError::last_os("make stdin the controlling terminal"));
            }
            // the terminal is the user's, as a login's is (the server gave it to our root)
            nix::unistd::fchown(std::io::stdin(), Some(uid), Some(gid))
                .step("give the terminal to the user")?;
        }
        let lockdown = Lockdown::for_uid(Some(&spec.capabilities), uid.as_raw());
        lockdown.before_setuid()?;
        nix::unistd::setgroups(&[gid]).step("setgroups")?;
        nix::unistd::setgid(gid).step("setgid")?;
        nix::unistd::setuid(uid).step("setuid")?;
        chdir(OsStr::new(&spec.dir)).step(format!("chdir {}", spec.dir))?;
        lockdown.before_exec(&entered.filter)?;
        execve(&prog, &argv, &envp).step(format!("exec {}", spec.argv[0]))
    })();
    match r {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Runs the process on a new pty of the container's devpts; the helper copies its stdin to the
/// pty and the pty to its stdout until the process exits.
fn exec_with_tty(
    entered: &Entered,
    sync: OwnedFd,
) -> std::result::Result<i32, (InitError, OwnedFd)> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let setup = || -> R<(nix::pty::PtyMaster, OwnedFd)> {
        let master = posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
            .step("open /dev/ptmx")?;
        grantpt(&master).step("grantpt")?;
        unlockpt(&master).step("unlockpt")?;
        let name = ptsname_r(&master).step("ptsname")?;
        let slave: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .step(format!("open {name}"))?
            .into();
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        Ok((master, slave))
    };
    let (master, slave) = match setup() {
        Ok(x) => x,
        Err(e) => return Err((e, sync)),
    };
    // SAFETY: single-threaded process (see module docs).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(master);
            let fd = slave.as_raw_fd();
            // SAFETY: plain syscalls on fds this process owns; the slave becomes the
            // controlling terminal of the new session and the standard streams.
            unsafe {
                libc::setsid();
                libc::ioctl(fd, libc::TIOCSCTTY, 0);
                libc::dup2(fd, 0);
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
            }
            drop(slave);
            let e = child_exec(entered);
            let _ = nix::unistd::write(&sync, format!("error: {e}\n").as_bytes());
            // SAFETY: see exec_main.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::unistd::write(&sync, format!("pid {child}\n").as_bytes());
            drop(sync);
            Ok(pump_tty(master, slave, child))
        }
        Err(e) => Err((InitError::sys("fork")(e), sync)),
    }
}

fn pump_tty(master: nix::pty::PtyMaster, slave: OwnedFd, child: Pid) -> i32 {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    let mut master = master;
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    // keeping our copy of the slave open means the master never hangs up before the child has
    // opened its side; the child's exit is polled instead
    let mut slave = Some(slave);
    let mut code = None;
    loop {
        if code.is_none() {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    code = Some(exit_code(s));
                    slave = None;
                    let _ = nix::fcntl::fcntl(
                        &master,
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    );
                }
                Ok(_) => {}
                Err(_) => code = Some(1),
            }
        }
        let stdin = std::io::stdin();
        let stdin_fd = stdin.as_fd();
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open && code.is_none() {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        let timeout = if code.is_some() { 0u16 } else { 20u16 };
        match poll(&mut fds, PollTimeout::from(timeout)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
        let master_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stdin_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        drop(fds);
        if master_ready || code.is_some() {
            match master.read(&mut buf) {
                Ok(0) => {
                    if code.is_some() {
                        break;
                    }
                }
                Ok(n) => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) if code.is_none() => {}
                Err(_) => break, // EIO or EAGAIN once the child is gone: drained
            }
        }
        if stdin_ready {
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // end of input: the terminal's EOF character
                    let _ = master.write_all(&[4]);
                }
                Ok(n) => {
                    let _ = master.write_all(&buf[..n]);
                }
            }
        }
    }
    drop(slave);
    code.unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(privileged: bool) -> Spec {
        let mut cs = crate::types::ContainerSpec::from_dir("/layers/base");
        cs.privileged = privileged;
        crate::spec::runtime_spec(&cs, "h1")
    }

    fn config() -> InitConfig {
        InitConfig {
            handle: "h1".into(),
            lower_dirs: vec!["/layers/top".into(), "/layers/base".into()],
            upper_dir: "/depot/h1/upper".into(),
            work_dir: "/depot/h1/work".into(),
            rootfs: "/depot/h1/rootfs".into(),
            bind_mounts: vec![
                BindMount {
                    src_path: "/srv/ro".into(),
                    dst_path: "/etc/app".into(),
                    read_write: false,
                },
                BindMount {
                    src_path: "/srv/rw.sock".into(),
                    dst_path: "/run/x.sock".into(),
                    read_write: true,
                },
            ],
            cgroup_procs: vec![],
            resolv_conf: Some("nameserver 10.0.0.2\n".into()),
            runtime: runtime(true),
            disk: None,
            exec_channel: false,
        }
    }

    fn mounts(plan: &[SetupOp]) -> Vec<(PathBuf, Option<String>, MsFlags)> {
        plan.iter()
            .filter_map(|op| match op {
                SetupOp::Mount {
                    target,
                    fstype,
                    flags,
                    ..
                } => Some((target.clone(), fstype.clone(), *flags)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plan_mounts_everything_inside_the_rootfs_then_pivots() {
        let c = config();
        let plan = setup_plan(&c, |p| p == Path::new("/srv/ro"));
        assert_eq!(plan[0], SetupOp::MakePrivate);
        assert_eq!(
            plan[1],
            SetupOp::Mount {
                source: Some("overlay".into()),
                target: "/depot/h1/rootfs".into(),
                fstype: Some("overlay".into()),
                flags: MsFlags::empty(),
                data: Some("lowerdir=/layers/top:/layers/base,upperdir=/depot/h1/upper,workdir=/depot/h1/work".into()),
            }
        );
        let pivot = plan
            .iter()
            .position(|op| matches!(op, SetupOp::PivotRoot(_)))
            .unwrap();
        for (target, _, _) in mounts(&plan[..pivot]) {
            assert!(
                target.starts_with("/depot/h1/rootfs"),
                "{}",
                target.display()
            );
        }
        // nothing is written into /etc before pivot_root
        assert!(
            plan[..pivot]
                .iter()
                .all(|op| !matches!(op, SetupOp::WriteEtc { .. }))
        );
        let etc: Vec<&str> = plan[pivot..]
            .iter()
            .filter_map(|op| match op {
                SetupOp::WriteEtc { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(etc, ["hostname", "hosts", "resolv.conf"]);
        assert!(plan.contains(&SetupOp::SetHostname("h1".into())));
    }

    #[test]
    fn plan_flags_sys_read_only_and_binds_as_asked() {
        let plan = setup_plan(&config(), |p| p == Path::new("/srv/ro"));
        let m = mounts(&plan);
        let find = |t: &str| {
            m.iter()
                .filter(|(p, _, _)| p == Path::new(t))
                .collect::<Vec<_>>()
        };
        let sys = find("/depot/h1/rootfs/sys");
        assert!(sys[0].2.contains(
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        ));
        assert_eq!(sys[0].1.as_deref(), Some("sysfs"));
        let ro = find("/depot/h1/rootfs/etc/app");
        assert_eq!(ro.len(), 2, "bind then read-only remount");
        assert!(ro[1].2.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY));
        let rw = find("/depot/h1/rootfs/run/x.sock");
        assert_eq!(rw.len(), 1);
        assert!(!rw[0].2.contains(MsFlags::MS_RDONLY));
        assert!(
            plan.contains(&SetupOp::Touch("/depot/h1/rootfs/run/x.sock".into())),
            "file binds get a file"
        );
        assert!(plan.contains(&SetupOp::RefuseSymlinks {
            root: "/depot/h1/rootfs".into(),
            path: "/etc/app".into()
        }));
        for fs in ["proc", "devpts", "tmpfs"] {
            assert!(m.iter().any(|(_, t, _)| t.as_deref() == Some(fs)), "{fs}");
        }
        let devices: Vec<_> = plan
            .iter()
            .filter_map(|op| match op {
                SetupOp::Mknod {
                    path, major, minor, ..
                } => Some((
                    path.file_name().unwrap().to_str().unwrap().to_string(),
                    *major,
                    *minor,
                )),
                _ => None,
            })
            .collect();
        let names: Vec<&str> = devices.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(names, ["null", "zero", "full", "random", "urandom", "tty"]);
        assert!(devices.contains(&("null".into(), 1, 3)));
    }

    #[test]
    fn plan_mounts_the_disk_before_the_overlay() {
        let mut c = config();
        c.disk = Some(DiskMount {
            image: "/depot/h1/disk.img".into(),
            target: "/depot/h1/disk".into(),
        });
        c.upper_dir = "/depot/h1/disk/upper".into();
        c.work_dir = "/depot/h1/disk/work".into();
        c.runtime = runtime(false);
        let plan = setup_plan(&c, |_| false);
        assert_eq!(plan[0], SetupOp::MakePrivate);
        assert_eq!(
            plan[1],
            SetupOp::AttachDisk {
                disk: c.disk.clone().unwrap(),
                upper: "/depot/h1/disk/upper".into(),
                work: "/depot/h1/disk/work".into(),
                owner: Some(IdMap::default().host_base),
            }
        );
        let overlay = plan
            .iter()
            .position(|op| matches!(op, SetupOp::Mount { fstype: Some(t), .. } if t == "overlay"))
            .unwrap();
        assert!(overlay > 1);
        // without a limit, no disk step
        assert!(
            !setup_plan(&config(), |_| false)
                .iter()
                .any(|op| matches!(op, SetupOp::AttachDisk { .. }))
        );
    }

    #[test]
    fn refuse_symlinks_catches_links_in_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("etc/app")).unwrap();
        assert!(refuse_symlinks(dir.path(), Path::new("/etc/app/conf")).is_err());
        assert!(refuse_symlinks(dir.path(), Path::new("/etc/other/conf")).is_ok());
        assert!(refuse_symlinks(dir.path(), Path::new("/etc/../x")).is_err());
    }
}
