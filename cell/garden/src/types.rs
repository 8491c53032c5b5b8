//! Wire and on-disk types of the Garden API: container and process specs, info, metrics.
//!
//! These are the HTTP API's JSON shapes and also what the depot stores per container, so a
//! restarted server can find its containers again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a container's read-only base comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootfsSpec {
    /// A directory used as the single read-only lower layer.
    Dir(PathBuf),
    /// An OCI image layout directory (`index.json`, `blobs/sha256/..`); its layers are unpacked
    /// once into the depot's layer cache and stacked as overlayfs lower dirs.
    Oci {
        /// The OCI image layout directory.
        layout: PathBuf,
        /// `org.opencontainers.image.ref.name` to pick from the index; the first manifest if absent.
        #[serde(default)]
        reference: Option<String>,
    },
    /// An image in a registry, `docker://HOST[:PORT]/NAME[:TAG]` or `docker:///NAME` (the
    /// default registry): pulled by the backend into its layer cache (see [`crate::image`]).
    Image(String),
}

/// Resource limits applied through cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (swap is not allowed above it); the OOM killer acts at the limit.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU shares (cgroup v1 `cpu.shares`; converted to `cpu.weight` on v2).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes/threads.
    #[serde(default)]
    pub pids: Option<u64>,
    /// Open files per process (`RLIMIT_NOFILE`, soft and hard); 16,384 when unset.
    #[serde(default)]
    pub nofile: Option<u64>,
    /// Processes per user inside the container (`RLIMIT_NPROC`); 16,384 when unset.
    #[serde(default)]
    pub nproc: Option<u64>,
    /// What the container may write, MiB (Diego's `disk_mb`; unset or 0: unlimited). Its
    /// writable layer is then a file system of that size of its own (a sparse ext4 image on a
    /// loop device), so a write past it fails with ENOSPC inside.
    #[serde(default)]
    pub disk_mb: Option<u64>,
}

impl Limits {
    /// The disk limit, if there is one (0 means unlimited, as in Diego).
    pub fn disk_limit_mb(&self) -> Option<u64> {
        self.disk_mb.filter(|&mb| mb > 0)
    }
}

/// A bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path.
    pub src_path: PathBuf,
    /// Absolute path inside the container.
    pub dst_path: PathBuf,
    /// Read-only unless `read_write` is set.
    #[serde(default)]
    pub read_write: bool,
}

/// Network settings of a container; without them it gets only a loopback interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Net-in mappings created with the container.
    #[serde(default)]
    pub net_in: Vec<NetIn>,
}

/// A host port forwarded to a container port (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetIn {
    /// Host port; 0 picks a free one from the configured range.
    #[serde(default)]
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique handle; generated when absent. Letters, digits, `-` and `_`, at most 64 bytes.
    #[serde(default)]
    pub handle: Option<String>,
    /// The read-only base.
    pub rootfs: RootfsSpec,
    /// `KEY=VALUE` entries given to every process.
    #[serde(default)]
    pub env: Vec<String>,
    /// cgroup limits.
    #[serde(default)]
    pub limits: Limits,
    /// Bind mounts.
    #[serde(default)]
    pub bind_mounts: Vec<BindMount>,
    /// Metadata.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Networking; `None` means loopback only.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    /// Root inside is the host's root (Diego's `privileged: true`). By default (false) the
    /// container has its own user namespace: root inside is an unprivileged host id. Either
    /// way processes get only the default capabilities, `no_new_privs` and the seccomp filter.
    #[serde(default)]
    pub privileged: bool,
}

impl ContainerSpec {
    /// A spec with only a rootfs directory set.
    pub fn from_dir(rootfs: impl Into<PathBuf>) -> Self {
        ContainerSpec {
            handle: None,
            rootfs: RootfsSpec::Dir(rootfs.into()),
            env: Vec::new(),
            limits: Limits::default(),
            bind_mounts: Vec::new(),
            properties: BTreeMap::new(),
            network: None,
            privileged: false,
        }
    }
}

/// A process to run in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program and arguments; the program is looked up in the process's `PATH`.
    pub argv: Vec<String>,
    /// Extra `KEY=VALUE` entries, on top of the container's env.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (default `/`).
    #[serde(default)]
    pub dir: Option<String>,
    /// User name or `uid[:gid]` (default root).
    #[serde(default)]
    pub user: Option<String>,
    /// Bytes written to the process's stdin, which is then closed (unless `interactive`).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Run on a pseudo-terminal of this size; stderr is then merged into stdout. (`true` in
    /// older requests: 80x24.)
    #[serde(default, deserialize_with = "tty_or_bool")]
    pub tty: Option<TtySpec>,
    /// Keep stdin open for [`crate::Backend::write_stdin`] until
    /// [`crate::Backend::close_stdin`], and on a terminal let [`crate::Backend::resize`]
    /// change its size (`stdin`, if given, is written first).
    #[serde(default)]
    pub interactive: bool,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySpec {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Default for TtySpec {
    fn default() -> Self {
        TtySpec { cols: 80, rows: 24 }
    }
}

/// `tty` as a size, or as the boolean older requests sent (`true`: the default size).
fn tty_or_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TtySpec>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tty {
        Flag(bool),
        Size(TtySpec),
    }
    Ok(match Option::<Tty>::deserialize(d)? {
        None | Some(Tty::Flag(false)) => None,
        Some(Tty::Flag(true)) => Some(TtySpec::default()),
        Some(Tty::Size(size)) => Some(size),
    })
}

/// One frame of a process's output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// Bytes written to stdout.
    Stdout(bytes::Bytes),
    /// Bytes written to stderr.
    Stderr(bytes::Bytes),
    /// The process exited; `128 + n` when killed by signal `n`.
    Exit(i32),
}

/// A port mapping as created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// What `info` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Handle.
    pub handle: String,
    /// `active` while the init process lives, `stopped` otherwise.
    pub state: String,
    /// Host pid of the container's init (pid 1 inside).
    pub init_pid: i32,
    /// Container IP, if networked.
    pub container_ip: Option<String>,
    /// Host side (bridge) IP, if networked.
    pub host_ip: Option<String>,
    /// Port mappings.
    pub mapped_ports: Vec<PortMapping>,
    /// Properties.
    pub properties: BTreeMap<String, String>,
    /// Ids of processes started through this server.
    pub process_ids: Vec<String>,
    /// Whether the OOM killer has acted in the container.
    pub oom_killed: bool,
}

/// What `metrics` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (0 when unlimited).
    pub memory_limit_bytes: u64,
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Bytes written in the container's writable layer.
    pub disk_bytes: u64,
    /// Disk limit, bytes (0 when unlimited).
    #[serde(default)]
    pub disk_limit_bytes: u64,
    /// Processes/threads in the container.
    pub pids: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_is_a_size_or_the_old_boolean() {
        let spec =
            |json: serde_json::Value| -> ProcessSpec { serde_json::from_value(json).unwrap() };
        assert_eq!(spec(serde_json::json!({"argv": ["sh"]})).tty, None);
        assert_eq!(
            spec(serde_json::json!({"argv": ["sh"], "tty": false})).tty,
            None
        );
        assert_eq!(
            spec(serde_json::json!({"argv": ["sh"], "tty": true})).tty,
            Some(TtySpec { cols: 80, rows: 24 })
        );
        let sized = spec(serde_json::json!({"argv": ["sh"], "tty": {"cols": 120, "rows": 40}}));
        assert_eq!(
            sized.tty,
            Some(TtySpec {
                cols: 120,
                rows: 40
            })
        );
        assert!(!sized.interactive);
        let back: ProcessSpec =
            serde_json::from_str(&serde_json::to_string(&sized).unwrap()).unwrap();
        assert_eq!(back, sized);
    }
}
