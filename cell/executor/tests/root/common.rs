//! Root harness: a NativeBackend per test (own depot, cgroup parent and network names, none
//! shared with diego-garden's own tests), a busybox container, process listings.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use diego_garden::cgroups::CgroupMode;
use diego_garden::native::{Config, NativeBackend};
use diego_garden::net::NetConfig;
use diego_garden::{Backend, ContainerSpec, ProcessSpec};

pub use diego_testkit::root::{busybox_rootfs, garden_init_bin as init_bin, root_or_skip};

/// A backend for test `n` (1..=50): depot, cgroup parent and network names of its own.
pub async fn backend(n: u8) -> Arc<NativeBackend> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let config = Config {
        depot: PathBuf::from(format!("/tmp/diego-executor-test/{n}")),
        init_bin: init_bin(),
        cgroup_parent: format!("executor-test-{n}"),
        cgroup_mode: CgroupMode::Auto,
        network: NetConfig {
            tag: format!("ext{n}"),
            subnet: Ipv4Addr::new(10, 253, n, 0),
            prefix_len: 24,
            host_ports: (45000 + u16::from(n) * 100, 45000 + u16::from(n) * 100 + 99),
        },
        registry: Default::default(),
    };
    Arc::new(NativeBackend::new(config).await.expect("open backend"))
}

/// A busybox container; destroyed by [`Container::destroy`].
pub struct Container {
    pub backend: Arc<NativeBackend>,
    pub handle: String,
}

impl Container {
    pub async fn new(n: u8) -> Container {
        let backend = backend(n).await;
        let handle = backend
            .create(ContainerSpec::from_dir(busybox_rootfs()))
            .await
            .expect("create container");
        Container { backend, handle }
    }

    /// Runs `argv` (not through the executor) and returns its stdout.
    pub async fn output(&self, argv: &[&str]) -> String {
        let out = self
            .backend
            .run_and_wait(
                &self.handle,
                ProcessSpec {
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                    ..ProcessSpec::default()
                },
            )
            .await
            .expect("run process");
        assert_eq!(out.exit_status, 0, "{argv:?}: {}", out.stderr_str());
        out.stdout_str()
    }

    /// `ps` lines other than the header, pid 1 and `ps` itself.
    pub async fn processes(&self) -> Vec<String> {
        self.output(&["ps"])
            .await
            .lines()
            .skip(1)
            .filter(|l| {
                let pid = l.split_whitespace().next().unwrap_or("");
                pid != "1" && !l.trim_end().ends_with(" ps")
            })
            .map(String::from)
            .collect()
    }

    pub async fn destroy(self) {
        self.backend
            .destroy(&self.handle)
            .await
            .expect("destroy container");
    }
}
