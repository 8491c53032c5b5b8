//! What a container gets, in the OCI runtime spec's types: namespaces, the user namespace's
//! uid/gid mappings, the capability sets, `no_new_privs`, the seccomp profile, masked and
//! read-only paths, sysctls, rlimits, devices and cgroup resources.
//!
//! [`runtime_spec`] builds it once from a [`ContainerSpec`]; everything that applies it reads
//! it from there: pid 1's set-up ([`crate::container::setup_plan`]: namespaces, devices,
//! sysctls, masked and read-only paths), the exec helper (namespaces joined, rlimits,
//! capabilities, the seccomp filter compiled by [`crate::security::seccomp_filter`]). Its
//! `linux.resources` repeat the spec's [`Limits`], which [`crate::cgroups`] applies. The
//! server keeps one per container and shows it read-only (`GET /containers/{handle}/spec`).
//! The policy itself is the data below, so it is reviewed and unit-tested in one place.

use std::collections::{HashMap, HashSet};

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceType, LinuxIdMappingBuilder,
    LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec, User,
};

use crate::security::IdMap;
use crate::types::{ContainerSpec, Limits};

/// The runtime spec version these specs follow.
pub const OCI_VERSION: &str = "1.2.0";

/// Garden's capabilities for unprivileged containers (the same as Docker's default set): the
/// bounding set of every process, and the permitted and effective sets of root's processes.
pub const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::SysChroot,
    Capability::Mknod,
    Capability::AuditWrite,
    Capability::Setfcap,
];

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
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

/// The character devices of a container's `/dev` (name, major, minor), all mode 0666.
pub const DEVICES: &[(&str, i64, i64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Open-file limit of a container's processes when its spec sets none (Cloud Foundry's
/// default for apps).
pub const DEFAULT_NOFILE: u64 = 16_384;
/// Process limit (`RLIMIT_NPROC`, per user inside the container) when the spec sets none.
pub const DEFAULT_NPROC: u64 = 16_384;

/// Syscalls the default profile refuses with EPERM — those Docker's default profile refuses
/// to a container without `CAP_SYS_ADMIN` and friends: kernel modules, kexec, reboot, bpf,
/// keys, perf, userfaultfd, io_uring, mounts and namespaces, clocks, swap, quotas,
/// accounting, the kernel log, handles (`open_by_handle_at`, the "shocker" escape) and the
/// legacy ones. `clone` is refused only with a namespace flag, `mknod` only for devices.
pub fn denied_syscalls() -> Vec<&'static str> {
    let mut v = vec![
        "acct",
        "add_key",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "delete_module",
        "finit_module",
        "init_module",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "io_uring_enter",
        "io_uring_register",
        "io_uring_setup",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mount",
        "mount_setattr",
        "move_mount",
        "nfsservctl",
        "open_by_handle_at",
        "open_tree",
        "perf_event_open",
        "pivot_root",
        "quotactl",
        "reboot",
        "request_key",
        "setns",
        "settimeofday",
        "swapoff",
        "swapon",
        "syslog",
        "umount2",
        "unshare",
        "userfaultfd",
        "vhangup",
    ];
    if cfg!(target_arch = "x86_64") {
        v.extend(["_sysctl", "ioperm", "iopl", "sysfs", "uselib", "ustat"]);
    }
    v
}

/// Namespace flags of clone(2) a container may not use (`CLONE_NEWTIME` is 0x80).
const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80,
];

/// The seccomp architecture of this host (the profile lists no other: x32 system calls on
/// x86_64 are refused, any foreign architecture kills the process).
pub fn host_seccomp_arch() -> Option<oci_spec::runtime::Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(oci_spec::runtime::Arch::ScmpArchX86_64),
        "aarch64" => Some(oci_spec::runtime::Arch::ScmpArchAarch64),
        _ => None,
    }
}

fn errno_rule(names: &[&str], errno: i32, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| (*n).to_string()).collect())
        .set_action(LinuxSeccompAction::ScmpActErrno)
        .set_errno_ret(u32::try_from(errno).ok())
        .set_args((!args.is_empty()).then_some(args));
    rule
}

/// The message of the `expect`s on oci-spec builders: they fail only on a field without a
/// default, and every one of theirs has one.
const BUILDER_DEFAULTS: &str = "oci-spec builders default every field";

fn masked_eq(index: usize, mask: u64, value: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(mask)
        .value_two(value)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .expect(BUILDER_DEFAULTS)
}

/// The default seccomp profile: allow, but [`denied_syscalls`] fail with EPERM, `clone` with
/// any namespace flag (one rule per flag: a rule's arguments must all match) and
/// `mknod`/`mknodat` of character and block devices fail with EPERM (refused even to root of a
/// privileged container, so no devices cgroup is needed to keep it off the host's disks;
/// fifos and sockets stay allowed), and `clone3` fails with ENOSYS (its flags are behind a
/// pointer a filter cannot read; C libraries then fall back to `clone`, as under Docker's
/// profile).
pub fn seccomp_profile() -> LinuxSeccomp {
    let mut rules = vec![errno_rule(&denied_syscalls(), libc::EPERM, Vec::new())];
    for &flag in CLONE_NS_FLAGS {
        rules.push(errno_rule(
            &["clone"],
            libc::EPERM,
            vec![masked_eq(0, flag, flag)],
        ));
    }
    let mut mknods = vec![("mknodat", 2)];
    if cfg!(target_arch = "x86_64") {
        mknods.push(("mknod", 1));
    }
    for (name, mode_arg) in mknods {
        for kind in [libc::S_IFCHR, libc::S_IFBLK] {
            rules.push(errno_rule(
                &[name],
                libc::EPERM,
                vec![masked_eq(
                    mode_arg,
                    u64::from(libc::S_IFMT),
                    u64::from(kind),
                )],
            ));
        }
    }
    rules.push(errno_rule(&["clone3"], libc::ENOSYS, Vec::new()));
    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures(host_seccomp_arch().map(|a| vec![a]))
        .set_syscalls(Some(rules));
    profile
}

fn cap_set(caps: &[Capability]) -> HashSet<Capability> {
    caps.iter().copied().collect()
}

/// The capability sets of a container's root processes: [`DEFAULT_CAPS`] bounding,
/// permitted and effective, nothing inheritable or ambient. A process run as another user
/// keeps the bounding set and has empty permitted and effective sets.
pub fn default_capabilities() -> LinuxCapabilities {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(cap_set(DEFAULT_CAPS)))
        .set_permitted(Some(cap_set(DEFAULT_CAPS)))
        .set_effective(Some(cap_set(DEFAULT_CAPS)))
        .set_inheritable(Some(HashSet::new()))
        .set_ambient(Some(HashSet::new()));
    caps
}

fn rlimit(typ: PosixRlimitType, value: u64) -> PosixRlimit {
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(value)
        .hard(value)
        .build()
        .expect(BUILDER_DEFAULTS)
}

/// The rlimits of a container's processes: its spec's, or Diego's defaults.
pub fn rlimits(limits: &Limits) -> Vec<PosixRlimit> {
    vec![
        rlimit(
            PosixRlimitType::RlimitNofile,
            limits.nofile.unwrap_or(DEFAULT_NOFILE),
        ),
        rlimit(
            PosixRlimitType::RlimitNproc,
            limits.nproc.unwrap_or(DEFAULT_NPROC),
        ),
    ]
}

/// The namespaces of a container: its own pid, mount, uts, ipc and network namespaces, and
/// a user namespace unless it is privileged. The cgroup namespace is the host's.
pub fn namespaces(privileged: bool) -> Vec<LinuxNamespace> {
    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
    ];
    if !privileged {
        kinds.push(LinuxNamespaceType::User);
    }
    kinds
        .into_iter()
        .map(|typ| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            ns
        })
        .collect()
}

fn devices() -> Vec<LinuxDevice> {
    DEVICES
        .iter()
        .map(|&(name, major, minor)| {
            let mut d = LinuxDevice::default();
            d.set_path(format!("/dev/{name}").into())
                .set_typ(LinuxDeviceType::C)
                .set_major(major)
                .set_minor(minor)
                .set_file_mode(Some(0o666))
                .set_uid(Some(0))
                .set_gid(Some(0));
            d
        })
        .collect()
}

fn resources(limits: &Limits) -> LinuxResources {
    let mut r = LinuxResources::default();
    if let Some(bytes) = limits.memory_bytes.and_then(|b| i64::try_from(b).ok()) {
        let mut m = LinuxMemory::default();
        // no swap above the limit
        m.set_limit(Some(bytes)).set_swap(Some(bytes));
        r.set_memory(Some(m));
    }
    if let Some(shares) = limits.cpu_shares {
        let mut c = LinuxCpu::default();
        c.set_shares(Some(shares));
        r.set_cpu(Some(c));
    }
    if let Some(pids) = limits.pids.and_then(|p| i64::try_from(p).ok()) {
        let mut p = LinuxPids::default();
        p.set_limit(pids);
        r.set_pids(Some(p));
    }
    r
}

/// What a container made from `spec` with handle `handle` gets (see the module docs).
/// `root.path` is relative to the container's directory in the depot, as in a bundle.
pub fn runtime_spec(spec: &ContainerSpec, handle: &str) -> Spec {
    let mut process = Process::default();
    process
        .set_terminal(Some(false))
        .set_user(User::default())
        .set_args(None)
        .set_env(Some(spec.env.clone()))
        .set_cwd("/".into())
        .set_capabilities(Some(default_capabilities()))
        .set_rlimits(Some(rlimits(&spec.limits)))
        .set_no_new_privileges(Some(true));

    let id_mappings = (!spec.privileged).then(|| {
        let map = IdMap::default();
        vec![
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(map.host_base)
                .size(map.size)
                .build()
                .expect(BUILDER_DEFAULTS),
        ]
    });
    let mut linux = oci_spec::runtime::Linux::default();
    linux
        .set_namespaces(Some(namespaces(spec.privileged)))
        .set_uid_mappings(id_mappings.clone())
        .set_gid_mappings(id_mappings)
        .set_devices(Some(devices()))
        .set_sysctl(Some(
            NET_SYSCTLS
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect::<HashMap<_, _>>(),
        ))
        .set_masked_paths(Some(MASKED_PATHS.iter().map(|p| p.to_string()).collect()))
        .set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()))
        .set_seccomp(Some(seccomp_profile()))
        .set_resources(Some(resources(&spec.limits)))
        .set_cgroups_path(None)
        .set_rootfs_propagation(Some("rprivate".into()));

    let mut root = Root::default();
    root.set_path("rootfs".into()).set_readonly(Some(false));

    let mut out = Spec::default();
    out.set_version(OCI_VERSION.into())
        .set_root(Some(root))
        .set_mounts(None)
        .set_process(Some(process))
        .set_hostname(Some(handle.to_string()))
        .set_domainname(None)
        .set_annotations(None)
        .set_hooks(None)
        .set_linux(Some(linux));
    out
}

/// The user namespace's mapping of `spec`, `None` when it has no user namespace (privileged:
/// root inside is host root). Only a single range mapping root, as [`runtime_spec`] makes, is
/// understood.
pub fn id_map(spec: &Spec) -> Option<IdMap> {
    let linux = spec.linux().as_ref()?;
    let has_userns = linux
        .namespaces()
        .as_ref()?
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    let m = linux.uid_mappings().as_ref()?.first()?;
    (has_userns && m.container_id() == 0).then(|| IdMap {
        host_base: m.host_id(),
        size: m.size(),
    })
}

/// The namespace kinds of `spec` (empty without a `linux` section).
pub fn namespace_kinds(spec: &Spec) -> Vec<LinuxNamespaceType> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| ns.iter().map(LinuxNamespace::typ).collect())
        .unwrap_or_default()
}

/// The kernel's number of a capability.
pub fn cap_number(cap: Capability) -> u32 {
    match cap {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// The bit mask of a capability set (`None`: empty).
pub fn cap_mask(caps: Option<&HashSet<Capability>>) -> u64 {
    caps.into_iter()
        .flatten()
        .fold(0, |m, c| m | (1u64 << cap_number(*c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(set: &Option<HashSet<Capability>>) -> Vec<String> {
        let mut v: Vec<String> = set
            .iter()
            .flatten()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    }

    /// Docker's default capability set (moby `oci/caps/defaults.go`).
    const DOCKER_DEFAULT_CAPS: &[&str] = &[
        "CAP_AUDIT_WRITE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_MKNOD",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_CHROOT",
    ];

    fn check_common(s: &Spec, handle: &str) {
        assert_eq!(s.version(), OCI_VERSION);
        assert_eq!(s.hostname().as_deref(), Some(handle));
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        for set in [caps.bounding(), caps.permitted(), caps.effective()] {
            assert_eq!(names(set), DOCKER_DEFAULT_CAPS);
        }
        assert!(names(caps.inheritable()).is_empty());
        assert!(names(caps.ambient()).is_empty());
        let linux = s.linux().as_ref().unwrap();
        // runc's masked paths (the runtime spec's defaults) are all masked, and more
        let masked = linux.masked_paths().as_ref().unwrap();
        for p in oci_spec::runtime::get_default_maskedpaths() {
            assert!(masked.contains(&p), "{p} not masked");
        }
        assert_eq!(masked.len(), MASKED_PATHS.len());
        assert_eq!(
            linux.readonly_paths().as_ref().unwrap(),
            &oci_spec::runtime::get_default_readonly_paths()
        );
        let devices: Vec<(String, i64, i64)> = linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| (d.path().display().to_string(), d.major(), d.minor()))
            .collect();
        assert_eq!(devices[0], ("/dev/null".to_string(), 1, 3));
        assert_eq!(devices.len(), 6);
        let seccomp = linux.seccomp().as_ref().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        let denied: Vec<&String> = seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.args().is_none() && r.errno_ret() == Some(libc::EPERM as u32))
            .flat_map(|r| r.names())
            .collect();
        for s in [
            "init_module",
            "kexec_load",
            "reboot",
            "bpf",
            "mount",
            "unshare",
        ] {
            assert!(denied.iter().any(|d| *d == s), "{s} not denied");
        }
        let kinds = namespace_kinds(s);
        for k in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ] {
            assert!(kinds.contains(&k), "{k:?}");
        }
    }

    #[test]
    fn unprivileged_spec_has_a_user_namespace_and_the_default_policy() {
        let mut cs = ContainerSpec::from_dir("/rootfs");
        cs.limits.nofile = Some(100);
        cs.limits.memory_bytes = Some(64 << 20);
        let s = runtime_spec(&cs, "h1");
        check_common(&s, "h1");
        assert!(namespace_kinds(&s).contains(&LinuxNamespaceType::User));
        assert_eq!(id_map(&s), Some(IdMap::default()));
        let linux = s.linux().as_ref().unwrap();
        let uid = linux.uid_mappings().as_ref().unwrap();
        assert_eq!(
            (uid[0].container_id(), uid[0].host_id(), uid[0].size()),
            (0, 0x7000_0000, 65_536)
        );
        assert_eq!(linux.gid_mappings(), linux.uid_mappings());
        let rl = s.process().as_ref().unwrap().rlimits().as_ref().unwrap();
        assert_eq!(rl[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((rl[0].soft(), rl[0].hard()), (100, 100));
        assert_eq!(rl[1].hard(), DEFAULT_NPROC);
        let mem = linux.resources().as_ref().unwrap().memory().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        // the wire form is the runtime spec's
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["ociVersion"], OCI_VERSION);
        assert_eq!(json["linux"]["uidMappings"][0]["hostID"], 0x7000_0000);
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn privileged_spec_keeps_host_root_but_not_the_rest() {
        let mut cs = ContainerSpec::from_dir("/rootfs");
        cs.privileged = true;
        let s = runtime_spec(&cs, "p1");
        check_common(&s, "p1");
        assert!(!namespace_kinds(&s).contains(&LinuxNamespaceType::User));
        assert_eq!(id_map(&s), None);
        assert!(s.linux().as_ref().unwrap().uid_mappings().is_none());
        let rl = s.process().as_ref().unwrap().rlimits().as_ref().unwrap();
        assert_eq!(rl[0].hard(), DEFAULT_NOFILE);
    }

    #[test]
    fn cap_numbers_are_the_kernels() {
        let m = cap_mask(Some(&cap_set(DEFAULT_CAPS)));
        assert_eq!(m.count_ones(), 14);
        // CAP_SYS_ADMIN 21, CAP_SYS_MODULE 16, CAP_SYS_PTRACE 19, CAP_SYS_RAWIO 17,
        // CAP_DAC_READ_SEARCH 2, CAP_SYS_RESOURCE 24, CAP_NET_ADMIN 12, CAP_SYSLOG 34
        for cap in [21, 16, 19, 17, 2, 24, 12, 34] {
            assert_eq!(m & (1 << cap), 0, "cap {cap}");
        }
        assert_eq!(cap_number(Capability::Chown), 0);
        assert_eq!(cap_number(Capability::Setfcap), 31);
        assert_eq!(cap_number(Capability::CheckpointRestore), 40);
        assert_eq!(cap_mask(None), 0);
    }
}
