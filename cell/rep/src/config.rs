//! [`Config`]: everything `diego cell` takes, with Diego's defaults, and the per-cell Garden
//! and executor settings derived from it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A cell's settings. Durations default to Diego's (`jobs/rep/spec`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The cell's id: its presence key and the owner of its ActualLRPs and Tasks.
    pub cell_id: String,
    /// Where the rep's API listens (port 0 picks a free one; the presence carries the real one).
    pub listen: SocketAddr,
    /// The host address put in ActualLRP net info and `CF_INSTANCE_IP`, where host ports are
    /// reached. Default: the listen IP (127.0.0.1 when listening on every address).
    pub host_address: Option<IpAddr>,
    pub zone: String,
    /// Where the Garden depot and the executor's caches live.
    pub data_dir: PathBuf,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub max_containers: i32,
    /// `preloaded:NAME` rootfses this cell serves: NAME → directory. `docker` is always offered.
    pub preloaded_rootfses: BTreeMap<String, PathBuf>,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    /// TTL of the cell presence; renewed every third of it (Diego: 15 s).
    pub presence_ttl: Duration,
    /// Full reconciliation of containers with the BBS (Diego's `polling_interval`, 30 s).
    pub sync_interval: Duration,
    /// Liveness checks of a running instance (Diego's healthy monitoring interval, 30 s).
    pub liveness_interval: Duration,
    /// Start-up checks of an instance not yet running (Diego's executor
    /// `unhealthy_monitoring_interval_in_seconds`, 0.5 s); a check's own `interval_ms` wins.
    pub startup_check_interval: Duration,
    /// How long evacuation waits for replacements and tasks (Diego: 600 s).
    pub evacuation_timeout: Duration,
    /// How often an evacuating cell asks the BBS whether it may drop an instance.
    pub evacuation_poll_interval: Duration,
    /// The BBS, e.g. `http://127.0.0.1:8889`.
    pub bbs_url: String,
    /// Rank for bin-pack-first-fit auctions.
    pub cell_index: i32,
    /// Garden settings; unset fields are derived per cell (see [`GardenSettings`]).
    pub garden: GardenSettings,
    /// How long a stopped process has between SIGTERM and SIGKILL (Diego: 10 s).
    pub graceful_shutdown_interval: Duration,
    /// The log server every log line is shipped to (`diego_logs`' `POST /v1/logs`), e.g.
    /// `http://127.0.0.1:8083`; none keeps them on the cell (traced only).
    pub logs_url: Option<String>,
    /// The secret the ssh proxy presents to open SSH sessions in this cell's instances;
    /// none: SSH sessions are refused.
    pub ssh_secret: Option<String>,
    /// Mutual TLS: the rep's API asks callers for a certificate signed by this identity's CA,
    /// and the cell presents it to the BBS, the log server and the blob store. `None`: plain.
    pub tls: Option<diego_tls::Tls>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cell_id: "cell-1".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 1800)),
            host_address: None,
            zone: "z1".into(),
            data_dir: PathBuf::from("/var/lib/diego/cell"),
            memory_mb: 4096,
            disk_mb: 16384,
            max_containers: 250,
            preloaded_rootfses: BTreeMap::new(),
            placement_tags: Vec::new(),
            optional_placement_tags: Vec::new(),
            presence_ttl: Duration::from_secs(15),
            sync_interval: Duration::from_secs(30),
            liveness_interval: Duration::from_secs(30),
            startup_check_interval: Duration::from_millis(500),
            evacuation_timeout: Duration::from_secs(600),
            evacuation_poll_interval: Duration::from_secs(1),
            bbs_url: "http://127.0.0.1:8889".into(),
            cell_index: 0,
            garden: GardenSettings::default(),
            graceful_shutdown_interval: Duration::from_secs(10),
            logs_url: None,
            ssh_secret: None,
            tls: None,
        }
    }
}

/// Garden settings of one cell. Several cells share a machine in tests and `diego dev`, so
/// every host object must differ between them; each unset field is derived:
/// - `depot`: `DATA_DIR/garden`;
/// - `cgroup_parent`: `diego-CELL_ID`;
/// - `net_tag`, `subnet`, `host_ports`: from the cell's *slot*, the last octet of a
///   127.0.0.x listen address (`dg{slot}`, `10.254.{slot}.0/24`, 64 ports from
///   `40000 + 64 * slot`). A cell listening elsewhere (one per machine) gets Garden's
///   defaults (`garden`, `10.254.0.0/22`, 61000–61999).
#[derive(Debug, Clone, Default)]
pub struct GardenSettings {
    pub depot: Option<PathBuf>,
    pub cgroup_parent: Option<String>,
    /// Prefix of the bridge and iptables chains; at most 10 bytes.
    pub net_tag: Option<String>,
    /// A /24 for this cell's containers.
    pub subnet: Option<Ipv4Addr>,
    pub host_ports: Option<(u16, u16)>,
    /// The `diego-garden-init` binary (default: next to the current executable).
    pub init_bin: Option<PathBuf>,
    /// Registries of `docker://` rootfses and docker staging (default registry, insecure
    /// registries, credentials; loopback registries are always spoken to over HTTP).
    pub registry: diego_garden::image::RegistryConfig,
}

impl Config {
    /// The address ActualLRPs are reached at (their net info `address`).
    pub fn host_ip(&self) -> IpAddr {
        self.host_address.unwrap_or(match self.listen.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        })
    }

    /// The 127.0.0.x slot of a loopback cell, if it is one.
    fn loopback_slot(&self) -> Option<u8> {
        match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => Some(ip.octets()[3]),
            _ => None,
        }
    }

    /// The NativeBackend settings of this cell.
    pub fn native_config(&self) -> diego_garden::native::Config {
        let mut native = diego_garden::native::Config {
            depot: self
                .garden
                .depot
                .clone()
                .unwrap_or_else(|| self.data_dir.join("garden")),
            cgroup_parent: self
                .garden
                .cgroup_parent
                .clone()
                .unwrap_or_else(|| format!("diego-{}", sanitize(&self.cell_id))),
            registry: self.garden.registry.clone(),
            ..diego_garden::native::Config::default()
        };
        if let Some(bin) = &self.garden.init_bin {
            native.init_bin = bin.clone();
        }
        if let Some(slot) = self.loopback_slot() {
            native.network.tag = format!("dg{slot}");
            native.network.subnet = Ipv4Addr::new(10, 254, slot, 0);
            native.network.prefix_len = 24;
            let first = 40000 + 64 * u16::from(slot);
            native.network.host_ports = (first, first + 63);
        }
        if let Some(tag) = &self.garden.net_tag {
            native.network.tag = tag.clone();
        }
        if let Some(subnet) = self.garden.subnet {
            native.network.subnet = subnet;
            native.network.prefix_len = 24;
        }
        if let Some(ports) = self.garden.host_ports {
            native.network.host_ports = ports;
        }
        native
    }

    /// The executor's settings of this cell.
    pub fn executor_config(&self) -> diego_executor::Config {
        diego_executor::Config {
            cache_dir: self.data_dir.join("executor/cache"),
            temp_dir: self.data_dir.join("executor/tmp"),
            graceful_shutdown_interval: self.graceful_shutdown_interval,
            tls: self.tls.clone(),
            ..diego_executor::Config::default()
        }
    }
}

/// A cell id as a cgroup directory name: anything but letters, digits, `-` and `_` becomes `_`.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_cells_get_distinct_host_objects() {
        let a = Config {
            cell_id: "cell-a".into(),
            listen: "127.0.0.2:0".parse().unwrap_or(Config::default().listen),
            data_dir: "/tmp/a".into(),
            ..Config::default()
        };
        let b = Config {
            cell_id: "cell/b".into(),
            listen: "127.0.0.3:0".parse().unwrap_or(Config::default().listen),
            data_dir: "/tmp/b".into(),
            ..Config::default()
        };
        let (na, nb) = (a.native_config(), b.native_config());
        assert_ne!(na.depot, nb.depot);
        assert_eq!(nb.cgroup_parent, "diego-cell_b");
        assert_ne!(na.network.bridge(), nb.network.bridge());
        assert_ne!(na.network.subnet, nb.network.subnet);
        assert!(na.network.host_ports.1 < nb.network.host_ports.0);
        assert_eq!(a.host_ip().to_string(), "127.0.0.2");
        let max = Config {
            listen: "127.0.0.255:0".parse().unwrap_or(Config::default().listen),
            ..Config::default()
        };
        assert!(max.native_config().network.tag.len() <= 10);
    }
}
