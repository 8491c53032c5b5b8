//! How a container's processes are denied what the runtime spec ([`crate::spec`]) says: the
//! user namespace's id mapping, capabilities, `no_new_privs`, the seccomp profile translated
//! into a BPF filter (seccompiler), rlimits, and the runtime's open descriptors.
//!
//! Everything here runs in `diego-garden-init` (single-threaded) between fork and exec. The
//! functions are plain syscalls; what they apply comes from the spec, so the policy lives in
//! one place ([`crate::spec`]) and is unit-tested there.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::runtime::{
    LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, PosixRlimit,
    PosixRlimitType,
};
use serde::{Deserialize, Serialize};

use crate::init_error::InitError;

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

type R<T> = std::result::Result<T, InitError>;

/// The `RLIMIT_*` resource of a runtime spec rlimit.
fn rlimit_resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Sets each rlimit of the spec's process (before the process leaves the host's user
/// namespace, where raising a hard limit needs `CAP_SYS_RESOURCE`).
pub fn set_rlimits(limits: &[PosixRlimit]) -> R<()> {
    for l in limits {
        let r = libc::rlimit {
            rlim_cur: l.soft().min(l.hard()),
            rlim_max: l.hard(),
        };
        // SAFETY: setrlimit reads the struct, which lives across the call.
        if unsafe { libc::setrlimit(rlimit_resource(l.typ()), &r) } != 0 {
            return Err(InitError::last_os(format!("setrlimit {}", l.typ())));
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
        return Err(InitError::last_os("prctl PR_SET_DUMPABLE"));
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
        .map_err(InitError::io("list /proc/self/fd"))?
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
        if rc != 0 && nix::errno::Errno::last() != nix::errno::Errno::EINVAL {
            return Err(InitError::last_os(format!(
                "drop capability {cap} from the bounding set"
            )));
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
        return Err(InitError::last_os("clear the ambient capabilities"));
    }
    Ok(())
}

/// Sets the effective and permitted sets and empties the inheritable set.
pub fn set_capabilities(effective: u64, permitted: u64) -> R<()> {
    let mut hdr = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |m: u64, hi: bool| (if hi { m >> 32 } else { m & 0xffff_ffff }) as u32;
    let data = [false, true].map(|hi| CapData {
        effective: half(effective, hi),
        permitted: half(permitted, hi),
        inheritable: 0,
    });
    // SAFETY: capset reads a v3 header and two data structs, all live across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(InitError::last_os("capset"));
    }
    Ok(())
}

/// Sets `no_new_privs`: execve never grants privileges again (setuid and file capabilities
/// are ignored).
pub fn set_no_new_privs() -> R<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(InitError::last_os("prctl PR_SET_NO_NEW_PRIVS"));
    }
    Ok(())
}

/// The number of a syscall the profiles may name, on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    let nr = match name {
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "bpf" => libc::SYS_bpf,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_settime" => libc::SYS_clock_settime,
        "clone" => libc::SYS_clone,
        "clone3" => CLONE3,
        "delete_module" => libc::SYS_delete_module,
        "finit_module" => libc::SYS_finit_module,
        "init_module" => libc::SYS_init_module,
        "fanotify_init" => libc::SYS_fanotify_init,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fsopen" => libc::SYS_fsopen,
        "fspick" => libc::SYS_fspick,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "kexec_load" => libc::SYS_kexec_load,
        "keyctl" => libc::SYS_keyctl,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "mknodat" => libc::SYS_mknodat,
        "mount" => libc::SYS_mount,
        "mount_setattr" => libc::SYS_mount_setattr,
        "move_mount" => libc::SYS_move_mount,
        "nfsservctl" => libc::SYS_nfsservctl,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "open_tree" => libc::SYS_open_tree,
        "perf_event_open" => libc::SYS_perf_event_open,
        "pivot_root" => libc::SYS_pivot_root,
        "quotactl" => libc::SYS_quotactl,
        "reboot" => libc::SYS_reboot,
        "request_key" => libc::SYS_request_key,
        "setns" => libc::SYS_setns,
        "settimeofday" => libc::SYS_settimeofday,
        "swapoff" => libc::SYS_swapoff,
        "swapon" => libc::SYS_swapon,
        "syslog" => libc::SYS_syslog,
        "umount2" => libc::SYS_umount2,
        "unshare" => libc::SYS_unshare,
        "userfaultfd" => libc::SYS_userfaultfd,
        "vhangup" => libc::SYS_vhangup,
        other => return legacy_syscall_number(other),
    };
    Some(nr)
}

#[cfg(target_arch = "x86_64")]
fn legacy_syscall_number(name: &str) -> Option<i64> {
    Some(match name {
        "_sysctl" => libc::SYS__sysctl,
        "ioperm" => libc::SYS_ioperm,
        "iopl" => libc::SYS_iopl,
        "mknod" => libc::SYS_mknod,
        "sysfs" => libc::SYS_sysfs,
        "uselib" => libc::SYS_uselib,
        "ustat" => libc::SYS_ustat,
        _ => return None,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn legacy_syscall_number(_name: &str) -> Option<i64> {
    None
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

fn seccomp_condition(arg: &oci_spec::runtime::LinuxSeccompArg) -> R<seccompiler::SeccompCondition> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition};
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        // libseccomp's SCMP_CMP_MASKED_EQ(mask, datum): `value` is the mask
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or_default(),
        ),
    };
    let index = u8::try_from(arg.index())
        .map_err(|_| InitError::Seccomp(format!("argument index {}", arg.index())))?;
    // all 64 bits compared, as libseccomp does
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| InitError::Seccomp(format!("rule condition: {e}")))
}

/// Translates a runtime spec seccomp profile into a BPF program. Supported: default action
/// `SCMP_ACT_ALLOW`, this host's architecture only (x32 calls on x86_64 fail with EPERM, any
/// foreign architecture kills the process: seccompiler's architecture check), and
/// `SCMP_ACT_ERRNO` rules. Rules with the errno of the first rule go to seccompiler (a
/// syscall listed without arguments matches always, with arguments when any of its rules
/// matches); rules with another errno must have no arguments and are checked first. Anything
/// else is refused, so a profile is never applied loosely.
pub fn seccomp_filter(profile: &LinuxSeccomp) -> R<seccompiler::BpfProgram> {
    use seccompiler::{SeccompAction, SeccompFilter, SeccompRule};
    let unsupported = |m: String| InitError::Seccomp(m);
    let arch = ARCH.ok_or_else(|| unsupported("unsupported architecture".into()))?;
    if profile.default_action() != LinuxSeccompAction::ScmpActAllow {
        return Err(unsupported(format!(
            "default action {} (only SCMP_ACT_ALLOW)",
            profile.default_action()
        )));
    }
    let host = crate::spec::host_seccomp_arch();
    if let Some(archs) = profile.architectures()
        && archs.iter().any(|a| Some(*a) != host)
    {
        return Err(unsupported(format!(
            "architectures {archs:?} (only this host's, {host:?})"
        )));
    }
    let mut main_errno = None;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut unconditional = BTreeSet::new();
    let mut other_errno: Vec<(i64, u32)> = Vec::new();
    for rule in profile.syscalls().iter().flatten() {
        if rule.action() != LinuxSeccompAction::ScmpActErrno {
            return Err(unsupported(format!(
                "action {} (only SCMP_ACT_ERRNO)",
                rule.action()
            )));
        }
        // the runtime spec's default errno is EPERM
        let errno = rule.errno_ret().unwrap_or(libc::EPERM as u32);
        let main = *main_errno.get_or_insert(errno);
        let conditions = rule
            .args()
            .iter()
            .flatten()
            .map(seccomp_condition)
            .collect::<R<Vec<_>>>()?;
        for name in rule.names() {
            let nr = syscall_number(name)
                .ok_or_else(|| unsupported(format!("unknown syscall {name}")))?;
            if errno != main {
                if !conditions.is_empty() {
                    return Err(unsupported(format!(
                        "{name}: arguments on a rule with errno {errno}"
                    )));
                }
                other_errno.push((nr, errno));
            } else if conditions.is_empty() {
                unconditional.insert(nr);
            } else {
                let rule = SeccompRule::new(conditions.clone())
                    .map_err(|e| unsupported(format!("{name}: {e}")))?;
                rules.entry(nr).or_default().push(rule);
            }
        }
    }
    // an empty rule list matches every call of the syscall
    for nr in unconditional {
        rules.insert(nr, Vec::new());
    }
    let main_errno = main_errno.unwrap_or(libc::EPERM as u32);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(main_errno),
        arch,
    )
    .map_err(|e| unsupported(format!("filter: {e}")))?;
    let compiled: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| unsupported(format!("compile: {e}")))?;
    // prefix: seccomp_data.nr at offset 0, arch at 4; x32 calls, then the other errnos
    let skip = u8::try_from(3 + 2 * other_errno.len())
        .map_err(|_| unsupported("too many rules with their own errno".into()))?;
    let mut prog = Vec::with_capacity(compiled.len() + 4 + 2 * other_errno.len());
    prog.push(stmt(BPF_LD_W_ABS, 4));
    prog.push(jump(BPF_JMP_JEQ_K, audit_arch(arch), 0, skip));
    prog.push(stmt(BPF_LD_W_ABS, 0));
    if matches!(arch, seccompiler::TargetArch::x86_64) {
        prog.push(jump(BPF_JMP_JSET_K, 0x4000_0000, 0, 1));
    } else {
        prog.push(jump(BPF_JMP_JEQ_K, u32::MAX, 0, 1)); // never true: keeps offsets alike
    }
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    for (nr, errno) in other_errno {
        let nr = u32::try_from(nr).map_err(|_| unsupported(format!("syscall {nr}")))?;
        prog.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
        prog.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | (errno & 0xffff)));
    }
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
    seccompiler::apply_filter(prog)
        .map_err(|e| InitError::Seccomp(format!("install the filter: {e}")))
}

/// Everything a process gives up just before `execve`, in order: bounding and ambient sets,
/// then (after the caller switched user) permitted/effective/inheritable, `no_new_privs`, the
/// seccomp filter, and close-on-exec on every runtime descriptor from 3 up.
#[derive(Debug, Clone, Copy)]
pub struct Lockdown {
    /// The bounding set.
    pub bounding: u64,
    /// Permitted capabilities after the user switch.
    pub permitted: u64,
    /// Effective capabilities after the user switch.
    pub effective: u64,
}

impl Lockdown {
    /// The capabilities of the runtime spec's process for a process running as `uid`
    /// (inside): root gets the spec's sets, anyone else only its bounding set. The
    /// inheritable and ambient sets are always empty.
    pub fn for_uid(caps: Option<&LinuxCapabilities>, uid: u32) -> Lockdown {
        let mask = |set: fn(&LinuxCapabilities) -> &Option<_>| {
            caps.map_or(0, |c| crate::spec::cap_mask(set(c).as_ref()))
        };
        let bounding = mask(LinuxCapabilities::bounding);
        if uid == 0 {
            Lockdown {
                bounding,
                permitted: mask(LinuxCapabilities::permitted),
                effective: mask(LinuxCapabilities::effective),
            }
        } else {
            Lockdown {
                bounding,
                permitted: 0,
                effective: 0,
            }
        }
    }

    /// Before the user switch: cut the bounding set, clear ambient, keep permitted across
    /// setuid so root's set can be set exactly afterwards.
    pub fn before_setuid(&self) -> R<()> {
        limit_bounding_set(self.bounding)?;
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            return Err(InitError::last_os("prctl PR_SET_KEEPCAPS"));
        }
        Ok(())
    }

    /// After the user switch, immediately before `execve`.
    pub fn before_exec(&self, filter: &seccompiler::BpfProgram) -> R<()> {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
        set_capabilities(self.effective, self.permitted)?;
        set_no_new_privs()?;
        apply_filter(filter)?;
        cloexec_from(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_follows_the_spec_capabilities() {
        let caps = crate::spec::default_capabilities();
        let m = crate::spec::cap_mask(caps.bounding().as_ref());
        assert_eq!(m.count_ones(), 14);
        let root = Lockdown::for_uid(Some(&caps), 0);
        assert_eq!((root.bounding, root.permitted, root.effective), (m, m, m));
        let user = Lockdown::for_uid(Some(&caps), 1000);
        assert_eq!((user.bounding, user.permitted, user.effective), (m, 0, 0));
        let none = Lockdown::for_uid(None, 0);
        assert_eq!((none.bounding, none.permitted), (0, 0));
    }

    #[test]
    fn default_profile_translates() {
        let profile = crate::spec::seccomp_profile();
        for name in profile.syscalls().iter().flatten().flat_map(|r| r.names()) {
            assert!(syscall_number(name).is_some(), "{name}");
        }
        let prog = seccomp_filter(&profile).unwrap();
        assert!(prog.len() > 50 && prog.len() < 4096, "{}", prog.len());
        // clone3 is refused with ENOSYS in the prefix, before seccompiler's program
        let clone3 = prog
            .iter()
            .position(|i| i.code == BPF_JMP_JEQ_K && i.k == CLONE3 as u32)
            .unwrap();
        assert_eq!(prog[clone3 + 1].k, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        assert!(clone3 < 8);
    }

    #[test]
    fn profiles_it_cannot_apply_exactly_are_refused() {
        let mut p = crate::spec::seccomp_profile();
        p.set_default_action(LinuxSeccompAction::ScmpActErrno);
        assert!(matches!(seccomp_filter(&p), Err(InitError::Seccomp(_))));
        let mut p = crate::spec::seccomp_profile();
        let mut rule = oci_spec::runtime::LinuxSyscall::default();
        rule.set_names(vec!["no_such_call".into()])
            .set_action(LinuxSeccompAction::ScmpActErrno);
        p.set_syscalls(Some(vec![rule]));
        let err = seccomp_filter(&p).unwrap_err();
        assert!(err.to_string().contains("no_such_call"), "{err}");
        let mut p = crate::spec::seccomp_profile();
        p.set_architectures(Some(vec![oci_spec::runtime::Arch::ScmpArchX32]));
        assert!(seccomp_filter(&p).is_err());
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
