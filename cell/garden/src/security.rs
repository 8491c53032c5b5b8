//! What a container's processes are denied: the user namespace's id mapping, capabilities,
//! `no_new_privs`, the default seccomp filter, rlimits, the runtime's open descriptors, and
//! the masked and read-only parts of `/proc` and `/sys`.
//!
//! Everything here runs in `diego-garden-init` (single-threaded) between fork and exec. The
//! functions are plain syscalls; what they apply is data ([`DEFAULT_CAPS`], [`MASKED_PATHS`],
//! [`READONLY_PATHS`], [`denied_syscalls`]) so the policy is reviewable and unit-tested.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How ids inside a user namespace map to the host: inside `0..size` is host
/// `host_base..host_base + size`, for uids and gids alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// Host id of root inside.
    pub host_base: u32,
    /// Number of ids mapped.
    pub size: u32,
}

impl Default for IdMap {
    /// 65,536 ids from host id 1,879,048,192 (0x7000_0000): far above any login or system
    /// account and below the 32-bit limit; one range for every unprivileged container, as
    /// Garden maps every container's root to one host id.
    fn default() -> Self {
        IdMap {
            host_base: 0x7000_0000,
            size: 65_536,
        }
    }
}

impl IdMap {
    /// `/proc/PID/uid_map` (and `gid_map`) contents.
    pub fn proc_map(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.size)
    }

    /// The host id of `inside`, `None` if it is not mapped.
    pub fn to_host(&self, inside: u32) -> Option<u32> {
        (inside < self.size).then(|| self.host_base + inside)
    }
}

/// Garden's capabilities for unprivileged containers (the same as Docker's default set): the
/// bounding set of every process, and the permitted and effective sets of root's processes.
pub const DEFAULT_CAPS: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// Bit mask of [`DEFAULT_CAPS`].
pub fn default_cap_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0, |m, (c, _)| m | (1u64 << c))
}

/// Paths under `/proc` and `/sys` hidden from the container, as runc masks them: a directory
/// gets an empty read-only tmpfs, a file `/dev/null`.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only, as runc does.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Sysctls of the container's own network namespace, written before `/proc/sys` is made
/// read-only: root inside may bind ports below 1024 and every group may ping (ICMP sockets),
/// as Docker sets them, so neither needs a capability over the namespace.
pub const NET_SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/ip_unprivileged_port_start", "0"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
];

/// Open-file limit of a container's processes when its spec sets none (Cloud Foundry's
/// default for apps).
pub const DEFAULT_NOFILE: u64 = 16_384;
/// Process limit (`RLIMIT_NPROC`, per user inside the container) when the spec sets none.
pub const DEFAULT_NPROC: u64 = 16_384;

/// An rlimit to set: resource name (`nofile`, `nproc`), soft and hard value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `nofile` or `nproc`.
    pub resource: RlimitResource,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The resources a container spec limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RlimitResource {
    /// `RLIMIT_NOFILE`.
    Nofile,
    /// `RLIMIT_NPROC`.
    Nproc,
}

type R<T> = std::result::Result<T, String>;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Sets each rlimit (before the process leaves the host's user namespace, where raising a
/// hard limit needs `CAP_SYS_RESOURCE`).
pub fn set_rlimits(limits: &[Rlimit]) -> R<()> {
    for l in limits {
        let res = match l.resource {
            RlimitResource::Nofile => libc::RLIMIT_NOFILE,
            RlimitResource::Nproc => libc::RLIMIT_NPROC,
        };
        let r = libc::rlimit {
            rlim_cur: l.soft.min(l.hard),
            rlim_max: l.hard,
        };
        // SAFETY: setrlimit reads the struct, which lives across the call.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            return Err(format!("setrlimit {:?}: {}", l.resource, errno()));
        }
    }
    Ok(())
}

/// Marks the process not dumpable: no other process of the container (same uid, no
/// `CAP_SYS_PTRACE`) may ptrace it or open its `/proc/PID/exe`, `mem` or `fd` — the runtime
/// binary stays out of reach until `execve` replaces it (CVE-2019-5736).
pub fn set_not_dumpable() -> R<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!("prctl PR_SET_DUMPABLE: {}", errno()));
    }
    Ok(())
}

/// Marks every descriptor from 3 up close-on-exec: nothing of the runtime is inherited by the
/// container's program (CVE-2024-21626). Descriptors stay usable until `execve`.
pub fn cloexec_from(first: u32) -> R<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // kernels before 5.11: walk the descriptors
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("list /proc/self/fd: {e}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|&fd| fd >= first as i32) {
        // SAFETY: setting FD_CLOEXEC on a descriptor number has no memory effects.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Cuts the bounding set to `bounding` and clears the ambient set. Needs `CAP_SETPCAP`, so it
/// comes before the process changes user.
pub fn limit_bounding_set(bounding: u64) -> R<()> {
    for cap in 0..=last_cap().min(63) {
        if bounding & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 && errno().raw_os_error() != Some(libc::EINVAL) {
            return Err(format!(
                "drop capability {cap} from the bounding set: {}",
                errno()
            ));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(format!("clear the ambient capabilities: {}", errno()));
    }
    Ok(())
}

/// Sets the permitted and effective sets to `caps` and the inheritable set to nothing.
pub fn set_capabilities(caps: u64) -> R<()> {
    let mut hdr = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = (caps & 0xffff_ffff) as u32;
    let hi = (caps >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, all live across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(format!("capset: {}", errno()));
    }
    Ok(())
}

/// Sets `no_new_privs`: execve never grants privileges again (setuid and file capabilities
/// are ignored).
pub fn set_no_new_privs() -> R<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("prctl PR_SET_NO_NEW_PRIVS: {}", errno()));
    }
    Ok(())
}

/// Namespace flags of clone(2)/unshare(2) a container may not use.
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | 0x80) as u64; // CLONE_NEWTIME

/// Syscalls the default filter refuses with EPERM — those Docker's default profile refuses to
/// a container without `CAP_SYS_ADMIN` and friends: kernel modules, kexec, reboot, bpf, keys,
/// perf, userfaultfd, io_uring, mounts and namespaces, clocks, swap, quotas, accounting, the
/// kernel log, handles (`open_by_handle_at`, the "shocker" escape) and the legacy ones.
/// `clone` is refused only with a namespace flag (see [`default_filter`]).
pub fn denied_syscalls() -> Vec<(&'static str, i64)> {
    let mut v: Vec<(&'static str, i64)> = vec![
        ("acct", libc::SYS_acct),
        ("add_key", libc::SYS_add_key),
        ("bpf", libc::SYS_bpf),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("clock_settime", libc::SYS_clock_settime),
        ("delete_module", libc::SYS_delete_module),
        ("finit_module", libc::SYS_finit_module),
        ("init_module", libc::SYS_init_module),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fsopen", libc::SYS_fsopen),
        ("fspick", libc::SYS_fspick),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("kexec_load", libc::SYS_kexec_load),
        ("keyctl", libc::SYS_keyctl),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("mount", libc::SYS_mount),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("move_mount", libc::SYS_move_mount),
        ("nfsservctl", libc::SYS_nfsservctl),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("open_tree", libc::SYS_open_tree),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("pivot_root", libc::SYS_pivot_root),
        ("quotactl", libc::SYS_quotactl),
        ("reboot", libc::SYS_reboot),
        ("request_key", libc::SYS_request_key),
        ("setns", libc::SYS_setns),
        ("settimeofday", libc::SYS_settimeofday),
        ("swapoff", libc::SYS_swapoff),
        ("swapon", libc::SYS_swapon),
        ("syslog", libc::SYS_syslog),
        ("umount2", libc::SYS_umount2),
        ("unshare", libc::SYS_unshare),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("vhangup", libc::SYS_vhangup),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("_sysctl", libc::SYS__sysctl),
        ("ioperm", libc::SYS_ioperm),
        ("iopl", libc::SYS_iopl),
        ("sysfs", libc::SYS_sysfs),
        ("uselib", libc::SYS_uselib),
        ("ustat", libc::SYS_ustat),
    ]);
    v
}

#[cfg(target_arch = "x86_64")]
const ARCH: Option<seccompiler::TargetArch> = Some(seccompiler::TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<seccompiler::TargetArch> = Some(seccompiler::TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<seccompiler::TargetArch> = None;

fn stmt(code: u16, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

// classic BPF opcodes (linux/filter.h)
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// The default seccomp program: any foreign architecture kills the process (seccompiler's
/// architecture check), x32 system calls (bit 30 on x86_64) and the [`denied_syscalls`]
/// fail with EPERM, `clone` with a namespace flag fails with EPERM, and `clone3` with ENOSYS
/// (its flags are behind a pointer a filter cannot read; C libraries then fall back to
/// `clone`, as under Docker's profile). Everything else is allowed.
pub fn default_filter() -> R<seccompiler::BpfProgram> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let arch = ARCH.ok_or("seccomp: unsupported architecture")?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied_syscalls()
        .into_iter()
        .map(|(_, nr)| (nr, Vec::new()))
        .collect();
    // refused when any namespace flag is set: one rule per flag, any rule matching refuses
    let mut clone_rules = Vec::new();
    for bit in 0..64 {
        let flag = 1u64 << bit;
        if CLONE_NS_FLAGS & flag == 0 {
            continue;
        }
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(|e| format!("seccomp rule: {e}"))?;
        clone_rules.push(SeccompRule::new(vec![cond]).map_err(|e| format!("seccomp rule: {e}"))?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // device nodes: refused even to root of a privileged container (no devices cgroup is
    // needed to keep it off the host's disks); fifos and sockets stay allowed
    let device_rules = |arg: u8| -> R<Vec<SeccompRule>> {
        [libc::S_IFCHR, libc::S_IFBLK]
            .into_iter()
            .map(|kind| {
                let cond = SeccompCondition::new(
                    arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(u64::from(libc::S_IFMT)),
                    u64::from(kind),
                )
                .map_err(|e| format!("seccomp rule: {e}"))?;
                SeccompRule::new(vec![cond]).map_err(|e| format!("seccomp rule: {e}"))
            })
            .collect()
    };
    rules.insert(libc::SYS_mknodat, device_rules(2)?);
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_mknod, device_rules(1)?);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let compiled: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compile seccomp filter: {e}"))?;
    // prefix: seccomp_data.nr at offset 0, arch at 4; x32 calls and clone3 first
    let mut prog = Vec::with_capacity(compiled.len() + 8);
    prog.push(stmt(BPF_LD_W_ABS, 4));
    prog.push(jump(BPF_JMP_JEQ_K, audit_arch(arch), 0, 5));
    prog.push(stmt(BPF_LD_W_ABS, 0));
    if matches!(arch, seccompiler::TargetArch::x86_64) {
        prog.push(jump(BPF_JMP_JSET_K, 0x4000_0000, 0, 1));
    } else {
        prog.push(jump(BPF_JMP_JEQ_K, u32::MAX, 0, 1)); // never true: keeps offsets alike
    }
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    prog.push(jump(BPF_JMP_JEQ_K, CLONE3 as u32, 0, 1));
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    prog.extend(compiled);
    Ok(prog)
}

const CLONE3: i64 = 435; // the same number on x86_64 and aarch64

fn audit_arch(arch: seccompiler::TargetArch) -> u32 {
    match arch {
        seccompiler::TargetArch::x86_64 => 0xc000_003e,
        seccompiler::TargetArch::aarch64 => 0xc000_00b7,
        seccompiler::TargetArch::riscv64 => 0xc000_00f3,
    }
}

/// Installs `prog` on the calling thread (sets `no_new_privs` too).
pub fn apply_filter(prog: &seccompiler::BpfProgram) -> R<()> {
    seccompiler::apply_filter(prog).map_err(|e| format!("install seccomp filter: {e}"))
}

/// Everything a process gives up just before `execve`, in order: bounding and ambient sets,
/// then (after the caller switched user) permitted/effective/inheritable, `no_new_privs`, the
/// seccomp filter, and close-on-exec on every runtime descriptor from 3 up.
#[derive(Debug, Clone, Copy)]
pub struct Lockdown {
    /// Permitted and effective capabilities after the user switch.
    pub caps: u64,
}

impl Lockdown {
    /// The capabilities for a process running as `uid` (inside): root keeps the default set,
    /// anyone else none (the bounding set is the default set for both).
    pub fn for_uid(uid: u32) -> Lockdown {
        Lockdown {
            caps: if uid == 0 { default_cap_mask() } else { 0 },
        }
    }

    /// Before the user switch: cut the bounding set, clear ambient, keep permitted across
    /// setuid so root's set can be set exactly afterwards.
    pub fn before_setuid(&self) -> R<()> {
        limit_bounding_set(default_cap_mask())?;
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            return Err(format!("prctl PR_SET_KEEPCAPS: {}", errno()));
        }
        Ok(())
    }

    /// After the user switch, immediately before `execve`.
    pub fn before_exec(&self, filter: &seccompiler::BpfProgram) -> R<()> {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
        set_capabilities(self.caps)?;
        set_no_new_privs()?;
        apply_filter(filter)?;
        cloexec_from(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_are_dockers_and_lack_the_dangerous_ones() {
        let m = default_cap_mask();
        assert_eq!(m.count_ones(), 14);
        // CAP_SYS_ADMIN 21, CAP_SYS_MODULE 16, CAP_SYS_PTRACE 19, CAP_SYS_RAWIO 17,
        // CAP_DAC_READ_SEARCH 2, CAP_SYS_RESOURCE 24, CAP_NET_ADMIN 12, CAP_SYSLOG 34
        for cap in [21, 16, 19, 17, 2, 24, 12, 34] {
            assert_eq!(m & (1 << cap), 0, "cap {cap}");
        }
        assert_eq!(Lockdown::for_uid(1000).caps, 0);
        assert_eq!(Lockdown::for_uid(0).caps, m);
    }

    #[test]
    fn filter_compiles_and_denies_the_dangerous_syscalls() {
        let names: Vec<&str> = denied_syscalls().iter().map(|(n, _)| *n).collect();
        for s in [
            "init_module",
            "finit_module",
            "kexec_load",
            "reboot",
            "bpf",
            "keyctl",
            "perf_event_open",
            "userfaultfd",
            "mount",
            "unshare",
            "setns",
            "open_by_handle_at",
        ] {
            assert!(names.contains(&s), "{s}");
        }
        let prog = default_filter().unwrap();
        assert!(prog.len() > 50 && prog.len() < 4096, "{}", prog.len());
    }

    #[test]
    fn id_map_shifts_and_bounds() {
        let m = IdMap {
            host_base: 100_000,
            size: 65_536,
        };
        assert_eq!(m.proc_map(), "0 100000 65536\n");
        assert_eq!(m.to_host(0), Some(100_000));
        assert_eq!(m.to_host(65_535), Some(165_535));
        assert_eq!(m.to_host(65_536), None);
    }
}
