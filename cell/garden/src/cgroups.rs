//! cgroup v1 and v2 behind one trait, written directly against cgroupfs.
//!
//! Why not cgroups-rs: on this kind of host (a v1 hierarchy plus a cgroup2 mount with a few
//! controllers) its auto-detection picks the hybrid layout in ways we cannot steer per
//! controller, and we need only four files per controller; the few lines below keep the
//! layout explicit and testable against a fake directory.
//!
//! Layout: v1 `<mount of controller>/<parent>/<handle>` for memory, cpu, cpuacct and pids;
//! v2 `<cgroup2 root>/<parent>/<handle>`. The container's init joins by writing its pid into
//! every `cgroup.procs` returned by [`CgroupManager::procs_files`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::types::Limits;

/// Counters read from a container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (0 when unlimited).
    pub memory_limit_bytes: u64,
    /// CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Tasks in the cgroup.
    pub pids: u64,
    /// How often the OOM killer acted.
    pub oom_kills: u64,
    /// How often a fork failed at the pids limit.
    pub pids_limit_hits: u64,
}

/// One cgroup backend (v1 or v2).
pub trait CgroupManager: Send + Sync + Debug {
    /// Creates the container's cgroup(s) and applies the limits.
    fn create(&self, handle: &str, limits: &Limits) -> Result<()>;
    /// The `cgroup.procs` files a process writes its pid into to join the container.
    fn procs_files(&self, handle: &str) -> Vec<PathBuf>;
    /// Reads usage counters.
    fn stats(&self, handle: &str) -> Result<CgroupStats>;
    /// Removes the container's cgroup(s); a missing cgroup is not an error.
    fn remove(&self, handle: &str) -> Result<()>;
    /// Handles that have a cgroup under our parent.
    fn list(&self) -> Vec<String>;
    /// "v1" or "v2".
    fn version(&self) -> &'static str;
}

/// Which cgroup layout to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 when a v1 memory hierarchy is mounted (hybrid hosts), else v2.
    #[default]
    Auto,
    /// Force v1.
    V1,
    /// Force v2.
    V2,
}

/// Picks the manager for this host from `/proc/self/mountinfo`.
pub fn detect(mode: CgroupMode, parent: &str) -> Result<Box<dyn CgroupManager>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    let mounts = parse_mountinfo(&mountinfo);
    let v1: BTreeMap<String, PathBuf> = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup")
        .flat_map(|m| {
            m.super_opts
                .split(',')
                .map(|o| (o.to_string(), m.mount_point.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let v2 = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point.clone())
        .min_by_key(|p| p.as_os_str().len());
    let use_v1 = match mode {
        CgroupMode::V1 => true,
        CgroupMode::V2 => false,
        CgroupMode::Auto => v1.contains_key("memory"),
    };
    if use_v1 {
        let mut controllers = BTreeMap::new();
        for c in ["memory", "cpu", "cpuacct", "pids"] {
            let mount = v1.get(c).ok_or_else(|| {
                Error::InvalidRequest(format!("cgroup v1 controller {c} is not mounted"))
            })?;
            controllers.insert(c.to_string(), mount.clone());
        }
        Ok(Box::new(V1 {
            controllers,
            parent: parent.to_string(),
        }))
    } else {
        let root = v2.ok_or_else(|| {
            Error::InvalidRequest("no cgroup v1 memory hierarchy and no cgroup2 mount".into())
        })?;
        Ok(Box::new(V2::new(root, parent)))
    }
}

#[derive(Debug)]
struct MountEntry {
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn parse_mountinfo(s: &str) -> Vec<MountEntry> {
    s.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let _source = r.next();
            let super_opts = r.next().unwrap_or("").to_string();
            Some(MountEntry {
                mount_point: PathBuf::from(mount_point),
                fstype,
                super_opts,
            })
        })
        .collect()
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value)
        .map_err(|e| Error::io(format!("write {value:?} to {}", path.display()), e))
}

fn read_u64(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn read_keyed(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

/// rmdir with retries: a cgroup stays busy for a moment after its last task exits.
fn rmdir_retry(path: &Path) -> Result<()> {
    for attempt in 0..2000 {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 1999 => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(Error::io(format!("remove cgroup {}", path.display()), e)),
        }
    }
    Ok(())
}

fn list_dir(path: &Path) -> Vec<String> {
    fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// cgroup v1: one directory per controller hierarchy.
#[derive(Debug)]
pub struct V1 {
    controllers: BTreeMap<String, PathBuf>,
    parent: String,
}

impl V1 {
    fn dir(&self, controller: &str, handle: &str) -> PathBuf {
        self.controllers
            .get(controller)
            .map(|m| m.join(&self.parent).join(handle))
            .unwrap_or_default()
    }

    /// Distinct hierarchies (cpu and cpuacct may share one mount).
    fn hierarchies(&self) -> Vec<&PathBuf> {
        let mut v: Vec<&PathBuf> = self.controllers.values().collect();
        v.sort();
        v.dedup();
        v
    }
}

impl CgroupManager for V1 {
    fn create(&self, handle: &str, limits: &Limits) -> Result<()> {
        for mount in self.hierarchies() {
            let dir = mount.join(&self.parent).join(handle);
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create cgroup {}", dir.display()), e))?;
        }
        let mem = self.dir("memory", handle);
        if let Some(bytes) = limits.memory_bytes {
            write(&mem.join("memory.limit_in_bytes"), &bytes.to_string())?;
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
        }
        if let Some(shares) = limits.cpu_shares {
            write(
                &self.dir("cpu", handle).join("cpu.shares"),
                &shares.max(2).to_string(),
            )?;
        }
        if let Some(pids) = limits.pids {
            write(
                &self.dir("pids", handle).join("pids.max"),
                &pids.to_string(),
            )?;
        }
        Ok(())
    }

    fn procs_files(&self, handle: &str) -> Vec<PathBuf> {
        self.hierarchies()
            .into_iter()
            .map(|m| m.join(&self.parent).join(handle).join("cgroup.procs"))
            .collect()
    }

    fn stats(&self, handle: &str) -> Result<CgroupStats> {
        let mem = self.dir("memory", handle);
        if !mem.exists() {
            return Err(Error::ContainerNotFound(handle.to_string()));
        }
        let limit = read_u64(&mem.join("memory.limit_in_bytes"));
        let usage = read_u64(&mem.join("memory.usage_in_bytes"));
        let cache = read_keyed(&mem.join("memory.stat"), "total_inactive_file");
        Ok(CgroupStats {
            memory_bytes: usage.saturating_sub(cache),
            // v1 reports "unlimited" as a huge page-rounded number
            memory_limit_bytes: if limit >= (1 << 62) { 0 } else { limit },
            cpu_usage_ns: read_u64(&self.dir("cpuacct", handle).join("cpuacct.usage")),
            pids: read_u64(&self.dir("pids", handle).join("pids.current")),
            oom_kills: read_keyed(&mem.join("memory.oom_control"), "oom_kill"),
            pids_limit_hits: read_keyed(&self.dir("pids", handle).join("pids.events"), "max"),
        })
    }

    fn remove(&self, handle: &str) -> Result<()> {
        let mut first_err = None;
        for mount in self.hierarchies() {
            if let Err(e) = rmdir_retry(&mount.join(&self.parent).join(handle)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn list(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .hierarchies()
            .into_iter()
            .flat_map(|m| list_dir(&m.join(&self.parent)))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn version(&self) -> &'static str {
        "v1"
    }
}

/// cgroup v2: one unified tree.
#[derive(Debug)]
pub struct V2 {
    root: PathBuf,
    parent: String,
}

impl V2 {
    /// A manager rooted at a cgroup2 mount (or, in unit tests, any directory).
    pub fn new(root: PathBuf, parent: &str) -> Self {
        V2 {
            root,
            parent: parent.to_string(),
        }
    }

    fn dir(&self, handle: &str) -> PathBuf {
        self.root.join(&self.parent).join(handle)
    }

    fn enable_controllers(&self, dir: &Path) -> Result<()> {
        let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = ["memory", "cpu", "pids"]
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
    }
}

/// cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc converts it.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl CgroupManager for V2 {
    fn create(&self, handle: &str, limits: &Limits) -> Result<()> {
        let parent = self.root.join(&self.parent);
        self.enable_controllers(&self.root)?;
        fs::create_dir_all(&parent)
            .map_err(|e| Error::io(format!("create cgroup {}", parent.display()), e))?;
        self.enable_controllers(&parent)?;
        let dir = self.dir(handle);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create cgroup {}", dir.display()), e))?;
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(shares) = limits.cpu_shares {
            write(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if let Some(pids) = limits.pids {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn procs_files(&self, handle: &str) -> Vec<PathBuf> {
        vec![self.dir(handle).join("cgroup.procs")]
    }

    fn stats(&self, handle: &str) -> Result<CgroupStats> {
        let dir = self.dir(handle);
        if !dir.exists() {
            return Err(Error::ContainerNotFound(handle.to_string()));
        }
        let max = fs::read_to_string(dir.join("memory.max")).unwrap_or_default();
        Ok(CgroupStats {
            memory_bytes: read_u64(&dir.join("memory.current"))
                .saturating_sub(read_keyed(&dir.join("memory.stat"), "inactive_file")),
            memory_limit_bytes: max.trim().parse().unwrap_or(0),
            cpu_usage_ns: read_keyed(&dir.join("cpu.stat"), "usage_usec").saturating_mul(1000),
            pids: read_u64(&dir.join("pids.current")),
            oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill"),
            pids_limit_hits: read_keyed(&dir.join("pids.events"), "max"),
        })
    }

    fn remove(&self, handle: &str) -> Result<()> {
        rmdir_retry(&self.dir(handle))
    }

    fn list(&self) -> Vec<String> {
        list_dir(&self.root.join(&self.parent))
    }

    fn version(&self) -> &'static str {
        "v2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_mountinfo() {
        let s = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                 31 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(s);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[0].super_opts, "rw,memory");
        assert_eq!(m[1].fstype, "cgroup2");
    }

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn v2_writes_limits_into_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids io").unwrap();
        let m = V2::new(root.path().to_path_buf(), "garden");
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_shares: Some(1024),
            pids: Some(50),
            ..Limits::default()
        };
        m.create("h1", &limits).unwrap();
        let dir = root.path().join("garden/h1");
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            "67108864"
        );
        assert_eq!(fs::read_to_string(dir.join("cpu.weight")).unwrap(), "39");
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "50");
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        assert_eq!(m.procs_files("h1"), vec![dir.join("cgroup.procs")]);
        assert_eq!(m.list(), vec!["h1".to_string()]);
        fs::write(dir.join("memory.events"), "low 0\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(m.stats("h1").unwrap().oom_kills, 1);
    }
}
