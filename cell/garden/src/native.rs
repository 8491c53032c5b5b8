//! The native backend: containers on this host.
//!
//! Depot layout (`Config::depot`):
//! ```text
//! containers/<handle>/record.json   spec, init pid + start time, ip, ports, properties
//! containers/<handle>/upper, work   overlayfs writable layer
//! containers/<handle>/disk.img      with a disk limit: its ext4 image, holding upper and
//!                                   work (mounted on disk/ inside the container only)
//! containers/<handle>/rootfs        overlay mount point (mounted only inside the container)
//! layers/<sha256>/                  unpacked OCI layers shared by all containers
//! trash/                            destroyed containers' dirs being deleted in the background
//! ```
//! On start, [`NativeBackend::new`] reads every record: a container whose init still runs is
//! adopted, anything else is cleaned up (cgroups, iptables rules, veth, directory).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::backend::{Backend, ByteStream, ProcessStream};
use crate::cgroups::{self, CgroupManager, CgroupMode};
use crate::container::{ExecConfig, InitConfig};
use crate::error::{Error, Result};
use crate::net::{self, NetConfig};
use crate::process::{self, ProcessState};
use crate::security::IdMap;
use crate::types::{
    ContainerInfo, ContainerMetrics, ContainerSpec, NetIn, PortMapping, ProcessSpec, TtySpec,
};
use crate::{rootfs, tarstream};

/// Configuration of a native backend.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory (default `/var/lib/diego/garden`).
    pub depot: PathBuf,
    /// The `diego-garden-init` binary.
    pub init_bin: PathBuf,
    /// cgroup directory under each hierarchy (default `garden`).
    pub cgroup_parent: String,
    /// cgroup layout.
    pub cgroup_mode: CgroupMode,
    /// Networking.
    pub network: NetConfig,
    /// Registries of `docker://` rootfses.
    pub registry: crate::image::RegistryConfig,
}

impl Default for Config {
    fn default() -> Self {
        let init_bin = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("diego-garden-init")))
            .unwrap_or_else(|| PathBuf::from("diego-garden-init"));
        Config {
            depot: PathBuf::from("/var/lib/diego/garden"),
            init_bin,
            cgroup_parent: "garden".into(),
            cgroup_mode: CgroupMode::Auto,
            network: NetConfig::default(),
            registry: crate::image::RegistryConfig::default(),
        }
    }
}

/// What the depot keeps per container.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    handle: String,
    spec: ContainerSpec,
    init_pid: i32,
    init_start: u64,
    ip: Option<Ipv4Addr>,
    ports: Vec<PortMapping>,
    properties: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Container {
    dir: PathBuf,
    /// What the container got, built once from its spec ([`crate::spec::runtime_spec`]).
    runtime: oci_spec::runtime::Spec,
    record: Mutex<Record>,
    shim: tokio::sync::Mutex<Option<Child>>,
    /// The shim's exec channel ([`crate::exec_server`]); `None` for an adopted container,
    /// whose processes the exec helper starts.
    exec_channel: Option<std::os::fd::OwnedFd>,
    processes: Mutex<HashMap<String, Arc<ProcessState>>>,
}

/// Containers on this host.
#[derive(Debug)]
pub struct NativeBackend {
    cfg: Config,
    cgroups: Box<dyn CgroupManager>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    creating: Mutex<HashSet<String>>,
    net_lock: tokio::sync::Mutex<()>,
    host_net: tokio::sync::OnceCell<()>,
    puller: crate::image::Puller,
    /// The address and host port handed out last: the next ones are searched from there, so a
    /// just-freed address or port is reused last (see [`next_free`]).
    last_handed_out: Mutex<(Option<Ipv4Addr>, Option<u16>)>,
}

/// The first of `candidates` after `last` (wrapping around) that is `free`.
///
/// Addresses and host ports are handed out round robin, as CNI's host-local IPAM does: a
/// container made just after another was destroyed must not get its address, or the host's
/// neighbour cache still sends to the old container's MAC for up to half a minute, and its
/// port, or old connections still tracked to that port reach the wrong place.
fn next_free<T: Copy + PartialEq>(
    candidates: impl Iterator<Item = T>,
    last: Option<T>,
    free: impl Fn(&T) -> bool,
) -> Option<T> {
    let all: Vec<T> = candidates.collect();
    let start = last
        .and_then(|l| all.iter().position(|c| *c == l))
        .map_or(0, |i| i + 1);
    all[start..]
        .iter()
        .chain(&all[..start])
        .copied()
        .find(|c| free(c))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

fn validate_handle(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !h.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "handle {h:?} must be 1-64 letters, digits, '-' or '_'"
        )))
    }
}

/// A refused [`Backend::write_stdin`], [`Backend::close_stdin`] or [`Backend::resize`].
fn input_error(handle: &str, id: &str, what: &str, e: process::InputError) -> Error {
    match e {
        process::InputError::Io(source) => {
            Error::io(format!("{what} process {id} in container {handle}"), source)
        }
        e => Error::InvalidRequest(format!(
            "cannot {what} process {id} in container {handle}: {e}"
        )),
    }
}

/// Exited processes kept per container for late `attach` calls (health checks run often).
const KEEP_EXITED: usize = 128;

fn prune_exited(processes: &mut HashMap<String, Arc<ProcessState>>) {
    let mut exited: Vec<(std::time::Instant, String)> = processes
        .iter()
        .filter(|(_, p)| p.exit_status().is_some())
        .map(|(id, p)| (p.started, id.clone()))
        .collect();
    if exited.len() <= KEEP_EXITED {
        return;
    }
    exited.sort();
    for (_, id) in &exited[..exited.len() - KEEP_EXITED] {
        processes.remove(id);
    }
}

const CHUNK: usize = 64 * 1024;

/// A disk-limited container's file system image, in its directory (see [`crate::disk`]).
const DISK_IMAGE: &str = "disk.img";

/// Sends what is written to it as chunks over a channel (from a blocking thread).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader went away"))
    }
}

/// An unnamed read-write file in `dir` (O_TMPFILE), or a created-and-unlinked one.
fn spool_file(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmpfile {
        Ok(f) => Ok(f),
        Err(_) => {
            let path = dir.join(format!(".spool-{}", uuid::Uuid::new_v4().simple()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
            let _ = std::fs::remove_file(&path);
            Ok(f)
        }
    }
}

fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing directory failed");
    }
}

fn dir_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

impl NativeBackend {
    /// Opens the depot, adopting live containers and cleaning up dead ones.
    pub async fn new(cfg: Config) -> Result<Self> {
        let cgroups = cgroups::detect(cfg.cgroup_mode, &cfg.cgroup_parent)?;
        for d in ["containers", "layers", "trash"] {
            let p = cfg.depot.join(d);
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
        }
        let puller = crate::image::Puller::new(cfg.registry.clone());
        let backend = NativeBackend {
            puller,
            cfg,
            cgroups,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            net_lock: tokio::sync::Mutex::new(()),
            host_net: tokio::sync::OnceCell::new(),
            last_handed_out: Mutex::new((None, None)),
        };
        if let Ok(rd) = std::fs::read_dir(backend.cfg.depot.join("trash")) {
            for e in rd.flatten() {
                remove_tree(&e.path());
            }
        }
        backend.recover().await?;
        Ok(backend)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The image puller of `docker://` rootfses (its counts say what was downloaded).
    pub fn puller(&self) -> &crate::image::Puller {
        &self.puller
    }

    /// "v1" or "v2".
    pub fn cgroup_version(&self) -> &'static str {
        self.cgroups.version()
    }

    async fn recover(&self) -> Result<()> {
        let root = self.cfg.depot.join("containers");
        let entries = std::fs::read_dir(&root)
            .map_err(|e| Error::io(format!("list {}", root.display()), e))?;
        let mut known = HashSet::new();
        for entry in entries.flatten() {
            let Ok(handle) = entry.file_name().into_string() else {
                continue;
            };
            known.insert(handle.clone());
            let dir = entry.path();
            let record: Option<Record> = std::fs::read(dir.join("record.json"))
                .ok()
                .and_then(|raw| serde_json::from_slice(&raw).ok());
            match record {
                Some(r) if alive(r.init_pid, r.init_start) => {
                    tracing::info!(handle = %handle, pid = r.init_pid, "adopting container");
                    if r.ip.is_some() {
                        self.ensure_host_net().await?;
                    }
                    let c = Arc::new(Container {
                        dir,
                        runtime: crate::spec::runtime_spec(&r.spec, &handle),
                        record: Mutex::new(r),
                        shim: tokio::sync::Mutex::new(None),
                        exec_channel: None,
                        processes: Mutex::new(HashMap::new()),
                    });
                    lock(&self.containers).insert(handle, c);
                }
                r => {
                    tracing::info!(handle = %handle, "cleaning up dead container");
                    let networked = r.as_ref().is_none_or(|r| r.ip.is_some());
                    self.cleanup(&handle, &dir, networked).await;
                }
            }
        }
        for orphan in self.cgroups.list() {
            if !known.contains(&orphan) {
                tracing::info!(handle = %orphan, "removing orphaned cgroup");
                let _ = self.cgroups.remove(&orphan);
            }
        }
        Ok(())
    }

    /// Best-effort removal of everything a container may have left.
    async fn cleanup(&self, handle: &str, dir: &Path, networked: bool) {
        if networked && let Err(e) = net::teardown_container(&self.cfg.network, handle).await {
            tracing::warn!(handle, error = %e, "network cleanup failed");
        }
        if let Err(e) = self.cgroups.remove(handle) {
            tracing::warn!(handle, error = %e, "cgroup cleanup failed");
        }
        let image = dir.join(DISK_IMAGE);
        if image.exists() {
            // the loop device detaches itself once the container's mount namespace is gone;
            // wait for that, so no device outlives the container
            let forced = crate::disk::wait_detached(&image, Duration::from_secs(5)).await;
            if !forced.is_empty() {
                tracing::warn!(handle, devices = ?forced, "loop devices detached by force");
            }
        }
        // one rename on the destroy path; the writable layer is deleted in the background
        let trash = self
            .cfg
            .depot
            .join("trash")
            .join(format!("{handle}.{}", uuid::Uuid::new_v4().simple()));
        match std::fs::rename(dir, &trash) {
            Ok(()) => {
                tokio::task::spawn_blocking(move || remove_tree(&trash));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(handle, error = %e, "moving container dir to trash failed");
                remove_tree(dir);
            }
        }
    }

    /// Waits until the background deletions of destroyed containers' directories are done.
    pub async fn wait_for_trash(&self, timeout: Duration) -> bool {
        let trash = self.cfg.depot.join("trash");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let empty = std::fs::read_dir(&trash)
                .map(|mut rd| rd.next().is_none())
                .unwrap_or(true);
            if empty {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ensure_host_net(&self) -> Result<()> {
        self.host_net
            .get_or_try_init(|| net::setup_host(&self.cfg.network))
            .await
            .map(drop)
    }

    /// Removes the bridge and iptables chains of this backend (tests, uninstall).
    pub async fn teardown_host_network(&self) -> Result<()> {
        net::teardown_host(&self.cfg.network).await
    }

    fn get(&self, handle: &str) -> Result<Arc<Container>> {
        lock(&self.containers)
            .get(handle)
            .cloned()
            .ok_or_else(|| Error::ContainerNotFound(handle.to_string()))
    }

    fn process(&self, handle: &str, process_id: &str) -> Result<Arc<ProcessState>> {
        lock(&self.get(handle)?.processes)
            .get(process_id)
            .cloned()
            .ok_or_else(|| Error::ProcessNotFound {
                handle: handle.to_string(),
                id: process_id.to_string(),
            })
    }

    fn persist(c: &Container) -> Result<()> {
        let rec = lock(&c.record).clone();
        let path = c.dir.join("record.json");
        let tmp = c.dir.join("record.json.tmp");
        let raw = serde_json::to_vec_pretty(&rec).map_err(|e| Error::Record {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, raw).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    async fn start_init(
        &self,
        handle: &str,
        dir: &Path,
        spec: &ContainerSpec,
        runtime: &oci_spec::runtime::Spec,
    ) -> Result<(Child, i32, std::os::fd::OwnedFd)> {
        let cache = self.cfg.depot.join("layers");
        let lower_dirs = match &spec.rootfs {
            // a directory needs only a stat; OCI layers may need unpacking
            crate::types::RootfsSpec::Dir(_) => rootfs::lower_dirs(&spec.rootfs, &cache)?,
            rootfs_spec @ crate::types::RootfsSpec::Oci { .. } => {
                let rootfs_spec = rootfs_spec.clone();
                tokio::task::spawn_blocking(move || rootfs::lower_dirs(&rootfs_spec, &cache))
                    .await
                    .map_err(|e| Error::Transport(format!("rootfs task: {e}")))??
            }
            crate::types::RootfsSpec::Image(reference) => {
                self.puller.pull(reference, &cache).await?.lower_dirs
            }
        };
        // with a disk limit the writable layer lives on the container's own file system,
        // mounted by pid 1 at `disk/`
        let disk = match spec.limits.disk_limit_mb() {
            Some(mb) => {
                let image = dir.join(DISK_IMAGE);
                crate::disk::make_image(&image, mb).await?;
                Some(crate::container::DiskMount {
                    image,
                    target: dir.join("disk"),
                })
            }
            None => None,
        };
        let layer = disk
            .as_ref()
            .map_or_else(|| dir.to_path_buf(), |d| d.target.clone());
        let init = InitConfig {
            handle: handle.to_string(),
            lower_dirs,
            upper_dir: layer.join("upper"),
            work_dir: layer.join("work"),
            rootfs: dir.join("rootfs"),
            bind_mounts: spec.bind_mounts.clone(),
            cgroup_procs: self.cgroups.procs_files(handle),
            resolv_conf: spec
                .network
                .as_ref()
                .and_then(|_| std::fs::read_to_string("/etc/resolv.conf").ok()),
            runtime: runtime.clone(),
            disk,
            exec_channel: true,
        };
        let host_dirs: &[&PathBuf] = match &init.disk {
            // upper and work are made by pid 1 once the image is mounted
            Some(d) => &[&d.target, &init.rootfs],
            None => &[&init.upper_dir, &init.work_dir, &init.rootfs],
        };
        for d in host_dirs {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        if let Some(m) = init.id_map()
            && init.disk.is_none()
        {
            // the writable layer holds host ids; its root is the container's `/`, owned by
            // root inside
            std::os::unix::fs::chown(&init.upper_dir, Some(m.host_base), Some(m.host_base))
                .map_err(|e| Error::io(format!("chown {}", init.upper_dir.display()), e))?;
        }
        let init_json =
            serde_json::to_string(&init).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let (channel, shim_end) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys("create exec channel", e))?;
        let mut child = tokio::process::Command::new(&self.cfg.init_bin)
            .arg("init")
            .arg(init_json)
            // Its own process group: a Ctrl-C at the terminal that runs the server (e.g.
            // `diego dev`) must not kill every container's shim before the server stops them.
            .process_group(0)
            .stdin(Stdio::from(shim_end))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(format!("spawn {}", self.cfg.init_bin.display()), e))?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Init {
            handle: handle.to_string(),
            message: "no stdout from init".into(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let mut pid = None;
        let mut ready = false;
        let read = async {
            while let Some(line) = lines
                .next_line()
                .await
                .map_err(|e| Error::io("read init output", e))?
            {
                if let Some(p) = line.strip_prefix("pid ") {
                    pid = p.trim().parse::<i32>().ok();
                } else if line == "ready" {
                    ready = true;
                } else if let Some(msg) = line.strip_prefix("error: ") {
                    return Err(Error::Init {
                        handle: handle.to_string(),
                        message: msg.to_string(),
                    });
                }
                if ready && pid.is_some() {
                    break;
                }
            }
            Ok(())
        };
        let outcome = tokio::time::timeout(Duration::from_secs(30), read).await;
        let fail = match outcome {
            Ok(Ok(())) if ready => None,
            Ok(Ok(())) => Some(Error::Init {
                handle: handle.to_string(),
                message: "init exited before it was ready".into(),
            }),
            Ok(Err(e)) => Some(e),
            Err(_) => Some(Error::Init {
                handle: handle.to_string(),
                message: "init not ready after 30s".into(),
            }),
        };
        if let Some(e) = fail {
            let _ = child.start_kill();
            if let Some(p) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            return Err(e);
        }
        let pid = pid.unwrap_or_default();
        Ok((child, pid, channel))
    }

    async fn create_inner(&self, handle: &str, dir: &Path, spec: ContainerSpec) -> Result<()> {
        self.cgroups.create(handle, &spec.limits)?;
        let runtime = crate::spec::runtime_spec(&spec, handle);
        let (shim, pid, channel) = self.start_init(handle, dir, &spec, &runtime).await?;
        let init_start = start_time(pid).unwrap_or_default();
        let container = Arc::new(Container {
            dir: dir.to_path_buf(),
            runtime,
            record: Mutex::new(Record {
                handle: handle.to_string(),
                properties: spec.properties.clone(),
                spec: spec.clone(),
                init_pid: pid,
                init_start,
                ip: None,
                ports: Vec::new(),
            }),
            shim: tokio::sync::Mutex::new(Some(shim)),
            exec_channel: Some(channel),
            processes: Mutex::new(HashMap::new()),
        });
        lock(&self.containers).insert(handle.to_string(), container.clone());
        Self::persist(&container)?;
        if let Some(network) = &spec.network {
            self.ensure_host_net().await?;
            let ip = {
                let _guard = self.net_lock.lock().await;
                let used: HashSet<Ipv4Addr> = lock(&self.containers)
                    .values()
                    .filter_map(|c| lock(&c.record).ip)
                    .collect();
                let mut last = lock(&self.last_handed_out);
                let ip = next_free(self.cfg.network.container_addresses(), last.0, |a| {
                    !used.contains(a)
                })
                .ok_or_else(|| Error::InvalidRequest("container subnet is full".into()))?;
                last.0 = Some(ip);
                drop(last);
                lock(&container.record).ip = Some(ip);
                Self::persist(&container)?;
                ip
            };
            net::setup_container(&self.cfg.network, handle, pid, ip).await?;
            for m in &network.net_in {
                self.net_in(handle, *m).await?;
            }
        }
        Ok(())
    }

    async fn pick_host_port(&self) -> Result<u16> {
        let used: HashSet<u16> = lock(&self.containers)
            .values()
            .flat_map(|c| {
                lock(&c.record)
                    .ports
                    .iter()
                    .map(|p| p.host_port)
                    .collect::<Vec<_>>()
            })
            .collect();
        let (lo, hi) = self.cfg.network.host_ports;
        let mut last = lock(&self.last_handed_out);
        let port = next_free(lo..=hi, last.1, |p| {
            !used.contains(p) && std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok()
        })
        .ok_or_else(|| Error::InvalidRequest(format!("no free host port in {lo}-{hi}")))?;
        last.1 = Some(port);
        Ok(port)
    }
}

#[async_trait::async_trait]
impl Backend for NativeBackend {
    async fn create(&self, spec: ContainerSpec) -> Result<String> {
        let handle = spec
            .handle
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        validate_handle(&handle)?;
        for b in &spec.bind_mounts {
            if !b.dst_path.is_absolute()
                || b.dst_path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(Error::InvalidRequest(format!(
                    "bind mount destination {} must be absolute without `..`",
                    b.dst_path.display()
                )));
            }
        }
        let dir = self.cfg.depot.join("containers").join(&handle);
        {
            let map = lock(&self.containers);
            let mut creating = lock(&self.creating);
            if map.contains_key(&handle) || creating.contains(&handle) || dir.exists() {
                return Err(Error::HandleExists(handle));
            }
            creating.insert(handle.clone());
        }
        let result = match std::fs::create_dir_all(&dir) {
            Ok(()) => self.create_inner(&handle, &dir, spec).await,
            Err(e) => Err(Error::io(format!("create {}", dir.display()), e)),
        };
        lock(&self.creating).remove(&handle);
        match result {
            Ok(()) => {
                tracing::debug!(handle = %handle, "created container");
                Ok(handle)
            }
            Err(e) => {
                tracing::warn!(handle = %handle, error = %e, "create failed; cleaning up");
                if lock(&self.containers).contains_key(&handle) {
                    let _ = self.destroy(&handle).await;
                } else {
                    self.cleanup(&handle, &dir, false).await;
                }
                Err(e)
            }
        }
    }

    async fn destroy(&self, handle: &str) -> Result<()> {
        let c = lock(&self.containers)
            .remove(handle)
            .ok_or_else(|| Error::ContainerNotFound(handle.to_string()))?;
        let (pid, start, networked) = {
            let r = lock(&c.record);
            (
                r.init_pid,
                r.init_start,
                r.ip.is_some() || r.spec.network.is_some(),
            )
        };
        if alive(pid, start) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut shim) = c.shim.lock().await.take() {
            let _ = shim.wait().await;
        } else {
            for _ in 0..2000 {
                if !alive(pid, start) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.cleanup(handle, &c.dir, networked).await;
        tracing::debug!(handle, "destroyed container");
        Ok(())
    }

    async fn list(&self, filter: &BTreeMap<String, String>) -> Result<Vec<String>> {
        let mut handles: Vec<String> = lock(&self.containers)
            .iter()
            .filter(|(_, c)| {
                let r = lock(&c.record);
                filter.iter().all(|(k, v)| r.properties.get(k) == Some(v))
            })
            .map(|(h, _)| h.clone())
            .collect();
        handles.sort();
        Ok(handles)
    }

    async fn run(&self, handle: &str, spec: ProcessSpec) -> Result<String> {
        let c = self.get(handle)?;
        if spec.argv.is_empty() {
            return Err(Error::InvalidRequest("process argv is empty".into()));
        }
        let (init_pid, init_start, mut env) = {
            let r = lock(&c.record);
            (r.init_pid, r.init_start, r.spec.env.clone())
        };
        if !alive(init_pid, init_start) {
            return Err(Error::ProcessStart {
                handle: handle.to_string(),
                program: spec.argv[0].clone(),
                message: "container init is not running".into(),
            });
        }
        let (rlimits, capabilities, seccomp) =
            exec_policy(&c.runtime).map_err(|message| Error::ProcessStart {
                handle: handle.to_string(),
                program: spec.argv[0].clone(),
                message,
            })?;
        for e in &spec.env {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        // An interactive process's terminal is made here, on the container's devpts, and its
        // master kept (input, output, resizes); another process's terminal is the helper's.
        let (stdio, helper_tty) = match (spec.tty, spec.interactive) {
            (Some(size), true) => {
                let root = id_map_of(&c).map_or(0, |m| m.host_base);
                let (pty, slave) = process::Pty::open(init_pid, size, root)?;
                let stdin = spec.stdin.clone();
                (process::Stdio::Terminal { pty, slave, stdin }, false)
            }
            (tty, interactive) => {
                let stdin = spec.stdin.clone();
                (process::Stdio::Pipes { stdin, interactive }, tty.is_some())
            }
        };
        let exec = ExecConfig {
            init_pid,
            cgroup_procs: self.cgroups.procs_files(handle),
            argv: spec.argv.clone(),
            env,
            dir: spec.dir.clone().unwrap_or_else(|| "/".into()),
            user: spec.user.clone(),
            tty: helper_tty,
            controlling_tty: matches!(stdio, process::Stdio::Terminal { .. }),
            namespaces: crate::spec::namespace_kinds(&c.runtime),
            rlimits,
            capabilities,
            seccomp,
        };
        // the helper's terminal needs its pump; anything else the shim starts when it can
        let stdio = match (&c.exec_channel, helper_tty) {
            (Some(channel), false) => {
                let request = crate::exec_server::ExecRequest {
                    argv: exec.argv.clone(),
                    env: exec.env.clone(),
                    dir: exec.dir.clone(),
                    user: exec.user.clone(),
                    tty: exec.controlling_tty,
                };
                match process::spawn_in_shim(channel, handle, &request, stdio).await? {
                    process::Spawned::Started(state) => Ok(state),
                    process::Spawned::NotSent(stdio) => Err(stdio),
                }
            }
            _ => Err(stdio),
        };
        let state = match stdio {
            Ok(state) => state,
            Err(stdio) => process::spawn(&self.cfg.init_bin, handle, &exec, stdio).await?,
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut processes = lock(&c.processes);
        prune_exited(&mut processes);
        processes.insert(id.clone(), state);
        Ok(id)
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream> {
        let p = self.process(handle, process_id)?;
        Ok(p.attach())
    }

    async fn signal(&self, handle: &str, process_id: &str, signal: i32) -> Result<()> {
        let p = self.process(handle, process_id)?;
        if p.exit_status().is_some() {
            return Ok(());
        }
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| Error::InvalidRequest(format!("bad signal {signal}")))?;
        // The process leads its own session (it calls setsid before exec), so signalling the
        // group reaches what it started too: `sh -c 'sleep 100; true'` must not leave the sleep
        // behind. A process that already left the group still gets the signal directly.
        let pid = nix::unistd::Pid::from_raw(p.host_pid);
        if nix::sys::signal::killpg(pid, sig).is_ok() {
            return Ok(());
        }
        nix::sys::signal::kill(pid, sig).map_err(|e| {
            Error::sys(
                format!("signal process {process_id} in container {handle}"),
                e,
            )
        })
    }

    async fn write_stdin(&self, handle: &str, process_id: &str, data: Bytes) -> Result<()> {
        let p = self.process(handle, process_id)?;
        p.write_stdin(&data)
            .await
            .map_err(|e| input_error(handle, process_id, "write to", e))
    }

    async fn close_stdin(&self, handle: &str, process_id: &str) -> Result<()> {
        let p = self.process(handle, process_id)?;
        p.close_stdin()
            .await
            .map_err(|e| input_error(handle, process_id, "close", e))
    }

    async fn resize(&self, handle: &str, process_id: &str, size: TtySpec) -> Result<()> {
        let p = self.process(handle, process_id)?;
        p.resize(size)
            .map_err(|e| input_error(handle, process_id, "resize the terminal of", e))
    }

    async fn stream_in(&self, handle: &str, path: &str, mut tar: ByteStream) -> Result<()> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let c = self.get(handle)?;
        let (pid, ids) = (lock(&c.record).init_pid, id_map_of(&c));
        // spool to an unnamed file next to the container: the archive is checked as a whole
        // before anything is written, without holding it in memory
        let spool = spool_file(&c.dir)?;
        let mut file = tokio::fs::File::from_std(spool);
        while let Some(chunk) = tar.next().await {
            file.write_all(&chunk?)
                .await
                .map_err(|e| Error::io(format!("spool tar for container {handle}"), e))?;
        }
        file.flush()
            .await
            .map_err(|e| Error::io(format!("spool tar for container {handle}"), e))?;
        let file = file.into_std().await;
        let handle = handle.to_string();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            tarstream::stream_in_mapped(
                Path::new(&format!("/proc/{pid}/root")),
                &handle,
                &path,
                std::io::BufReader::with_capacity(256 * 1024, file),
                ids,
            )
        })
        .await
        .map_err(|e| Error::Transport(format!("stream_in task: {e}")))?
    }

    async fn stream_out(&self, handle: &str, path: &str) -> Result<ByteStream> {
        let c = self.get(handle)?;
        let (pid, ids) = (lock(&c.record).init_pid, id_map_of(&c));
        let (h, p) = (handle.to_string(), path.to_string());
        let source = tokio::task::spawn_blocking(move || {
            tarstream::resolve_out_mapped(Path::new(&format!("/proc/{pid}/root")), &h, &p, ids)
        })
        .await
        .map_err(|e| Error::Transport(format!("stream_out task: {e}")))??;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(8);
        tokio::task::spawn_blocking(move || {
            let mut writer = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result = tarstream::write_out(&source, &mut writer).and_then(|()| {
                std::io::Write::flush(&mut writer).map_err(|e| Error::io("flush tar stream", e))
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        })))
    }

    async fn properties(&self, handle: &str) -> Result<BTreeMap<String, String>> {
        Ok(lock(&self.get(handle)?.record).properties.clone())
    }

    async fn property(&self, handle: &str, name: &str) -> Result<String> {
        lock(&self.get(handle)?.record)
            .properties
            .get(name)
            .cloned()
            .ok_or_else(|| Error::PropertyNotFound {
                handle: handle.to_string(),
                name: name.to_string(),
            })
    }

    async fn set_property(&self, handle: &str, name: &str, value: &str) -> Result<()> {
        let c = self.get(handle)?;
        lock(&c.record)
            .properties
            .insert(name.to_string(), value.to_string());
        Self::persist(&c)
    }

    async fn remove_property(&self, handle: &str, name: &str) -> Result<()> {
        let c = self.get(handle)?;
        if lock(&c.record).properties.remove(name).is_none() {
            return Err(Error::PropertyNotFound {
                handle: handle.to_string(),
                name: name.to_string(),
            });
        }
        Self::persist(&c)
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo> {
        let c = self.get(handle)?;
        let r = lock(&c.record).clone();
        let mut process_ids: Vec<String> = lock(&c.processes).keys().cloned().collect();
        process_ids.sort();
        let oom_killed = self
            .cgroups
            .stats(handle)
            .map(|s| s.oom_kills > 0)
            .unwrap_or(false);
        Ok(ContainerInfo {
            handle: r.handle,
            state: if alive(r.init_pid, r.init_start) {
                "active"
            } else {
                "stopped"
            }
            .into(),
            init_pid: r.init_pid,
            container_ip: r.ip.map(|i| i.to_string()),
            host_ip: r.ip.map(|_| self.cfg.network.gateway().to_string()),
            mapped_ports: r.ports,
            properties: r.properties,
            process_ids,
            oom_killed,
        })
    }

    async fn metrics(&self, handle: &str) -> Result<ContainerMetrics> {
        let c = self.get(handle)?;
        let s = self.cgroups.stats(handle)?;
        let (pid, disk_mb) = {
            let r = lock(&c.record);
            (r.init_pid, r.spec.limits.disk_limit_mb())
        };
        let disk = match disk_mb {
            // the overlay reports its upper file system: the container's own image
            Some(_) => crate::disk::used_bytes(Path::new(&format!("/proc/{pid}/root")))?,
            None => {
                let upper = c.dir.join("upper");
                tokio::task::spawn_blocking(move || dir_size(&upper))
                    .await
                    .unwrap_or(0)
            }
        };
        Ok(ContainerMetrics {
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            cpu_usage_ns: s.cpu_usage_ns,
            disk_bytes: disk,
            disk_limit_bytes: disk_mb.map_or(0, |mb| mb << 20),
            pids: s.pids,
        })
    }

    async fn runtime_spec(&self, handle: &str) -> Result<oci_spec::runtime::Spec> {
        Ok(self.get(handle)?.runtime.clone())
    }

    async fn net_in(&self, handle: &str, req: NetIn) -> Result<PortMapping> {
        let c = self.get(handle)?;
        let Some(ip) = lock(&c.record).ip else {
            return Err(Error::InvalidRequest(format!(
                "container {handle} has no network"
            )));
        };
        if req.container_port == 0 {
            return Err(Error::InvalidRequest("container_port must not be 0".into()));
        }
        let _guard = self.net_lock.lock().await;
        let taken = lock(&self.containers).values().any(|other| {
            lock(&other.record)
                .ports
                .iter()
                .any(|p| p.host_port == req.host_port)
        });
        if req.host_port != 0 && taken {
            return Err(Error::InvalidRequest(format!(
                "host port {} is already mapped",
                req.host_port
            )));
        }
        let host_port = if req.host_port == 0 {
            self.pick_host_port().await?
        } else {
            req.host_port
        };
        net::add_net_in(&self.cfg.network, handle, ip, host_port, req.container_port).await?;
        let mapping = PortMapping {
            host_port,
            container_port: req.container_port,
        };
        lock(&c.record).ports.push(mapping);
        Self::persist(&c)?;
        Ok(mapping)
    }
}

/// The id mapping of a container (`None`: privileged, host root): every unprivileged
/// container maps root to the same host id, as Garden does.
fn id_map_of(c: &Container) -> Option<IdMap> {
    crate::spec::id_map(&c.runtime)
}

/// What the exec helper applies to a process, from the container's runtime spec: rlimits,
/// capabilities and the seccomp profile (required: no process runs without it).
fn exec_policy(
    runtime: &oci_spec::runtime::Spec,
) -> std::result::Result<
    (
        Vec<oci_spec::runtime::PosixRlimit>,
        oci_spec::runtime::LinuxCapabilities,
        oci_spec::runtime::LinuxSeccomp,
    ),
    String,
> {
    let process = runtime
        .process()
        .as_ref()
        .ok_or("the runtime spec has no process")?;
    let seccomp = runtime
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone())
        .ok_or("the runtime spec has no seccomp profile")?;
    let capabilities = process
        .capabilities()
        .clone()
        .ok_or("the runtime spec has no capabilities")?;
    Ok((
        process.rlimits().clone().unwrap_or_default(),
        capabilities,
        seccomp,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports_are_handed_out_round_robin() {
        let free = |x: &u16| *x != 3;
        assert_eq!(next_free(1..=5u16, None, free), Some(1));
        // 1 was handed out and freed again: 2 comes next, not 1
        assert_eq!(next_free(1..=5u16, Some(1), |_| true), Some(2));
        assert_eq!(next_free(1..=5u16, Some(2), free), Some(4));
        assert_eq!(next_free(1..=5u16, Some(5), free), Some(1), "wraps around");
        assert_eq!(
            next_free(1..=5u16, Some(9), free),
            Some(1),
            "an unknown last"
        );
        assert_eq!(next_free(1..=5u16, Some(2), |_| false), None);
    }

    #[test]
    fn exec_policy_comes_from_the_runtime_spec() {
        let mut cs = ContainerSpec::from_dir("/rootfs");
        cs.limits.nofile = Some(100);
        let runtime = crate::spec::runtime_spec(&cs, "h");
        let (rlimits, caps, seccomp) = exec_policy(&runtime).unwrap();
        assert_eq!((rlimits[0].soft(), rlimits[0].hard()), (100, 100));
        assert_eq!(caps.bounding().as_ref().map(|b| b.len()), Some(14));
        assert!(seccomp.syscalls().is_some());
        let mut bare = runtime.clone();
        bare.set_linux(None);
        assert!(exec_policy(&bare).unwrap_err().contains("seccomp"));
    }

    #[test]
    fn handles_are_validated() {
        assert!(validate_handle("app-1_x").is_ok());
        for bad in ["", "../x", "a/b", "-x", "a b", &"x".repeat(65)] {
            assert!(validate_handle(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_start_time_is_readable() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let t = start_time(pid).unwrap();
        assert!(alive(pid, t));
        assert!(!alive(pid, t + 1));
    }
}
