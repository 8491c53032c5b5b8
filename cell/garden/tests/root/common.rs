//! Test harness: root check, busybox rootfs, one backend per test with its own depot,
//! cgroup parent, bridge, subnet and iptables chains.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use diego_garden::Backend;
use diego_garden::cgroups::CgroupMode;
use diego_garden::native::{Config, NativeBackend};
use diego_garden::net::NetConfig;
use diego_garden::{ContainerSpec, ProcessOutput, ProcessSpec};

/// Taken shared by every container test and exclusively by the leak test, so the leak
/// test's before/after lists are not disturbed by other tests' containers.
pub static HOST: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub use diego_testkit::root::{busybox_rootfs, root_or_skip};

/// Per-test config; `n` (1..=60) picks the names and the subnet 10.254.n.0/24.
pub fn config(n: u8) -> Config {
    let depot = PathBuf::from(format!("/tmp/diego-garden-test/{n}"));
    Config {
        depot,
        init_bin: PathBuf::from(env!("CARGO_BIN_EXE_diego-garden-init")),
        cgroup_parent: format!("garden-test-{n}"),
        cgroup_mode: CgroupMode::Auto,
        network: NetConfig {
            tag: format!("gt{n}"),
            subnet: Ipv4Addr::new(10, 254, n, 0),
            prefix_len: 24,
            host_ports: (40000 + u16::from(n) * 100, 40000 + u16::from(n) * 100 + 99),
        },
        registry: Default::default(),
    }
}

/// A fresh backend for test `n` (any leftovers of an earlier run are cleaned up on open).
pub async fn backend(n: u8) -> NativeBackend {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let b = NativeBackend::new(config(n)).await.expect("open backend");
    // containers adopted from an earlier run that failed half-way
    for h in b.list(&Default::default()).await.unwrap() {
        b.destroy(&h).await.unwrap();
    }
    b
}

/// A busybox container spec.
pub fn busybox() -> ContainerSpec {
    ContainerSpec::from_dir(busybox_rootfs())
}

/// argv as a process spec.
pub fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..ProcessSpec::default()
    }
}

/// Runs a shell script in the container and returns its output.
pub async fn run_sh(b: &dyn Backend, handle: &str, script: &str) -> ProcessOutput {
    b.run_and_wait(handle, sh(script))
        .await
        .expect("run process")
}

/// A `diego-garden-server` process on 127.0.0.1 with test `n`'s config.
#[derive(Debug)]
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
}

impl Server {
    pub fn start(n: u8) -> Server {
        use std::io::BufRead;
        let cfg = config(n);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_diego-garden-server"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--depot")
            .arg(&cfg.depot)
            .arg("--init-bin")
            .arg(&cfg.init_bin)
            .args([
                "--cgroup-parent",
                &cfg.cgroup_parent,
                "--net-tag",
                &cfg.network.tag,
            ])
            .args([
                "--subnet",
                &format!("{}/{}", cfg.network.subnet, cfg.network.prefix_len),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start diego-garden-server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect("server banner")
            .to_string();
        Server { child, url }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
