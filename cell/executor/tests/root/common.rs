//! Root harness: a NativeBackend per test (own depot, cgroup parent and network names, none
//! shared with diego-garden's own tests), a busybox container, process listings.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use diego_garden::cgroups::CgroupMode;
use diego_garden::native::{Config, NativeBackend};
use diego_garden::net::NetConfig;
use diego_garden::{Backend, ContainerSpec, ProcessSpec};

/// True when the test may run; panics under CI=true without root.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: these tests need root (CI=true makes a missing prerequisite fatal)");
    }
    eprintln!("skipping {test}: needs root");
    false
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The busybox rootfs made (once, cached) by diego-garden's script.
pub fn busybox_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let script = workspace_root().join("cell/garden/scripts/make-busybox-rootfs.sh");
            let out = std::process::Command::new("bash")
                .arg(script)
                .output()
                .expect("run make-busybox-rootfs.sh");
            assert!(
                out.status.success(),
                "make-busybox-rootfs.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .trim()
                .to_string();
            PathBuf::from(path)
        })
        .clone()
}

/// diego-garden's `diego-garden-init` helper: a dependency's binaries are not built for
/// this crate's tests, so build it (a no-op when fresh) into this target directory.
pub fn init_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/root-<hash> → target/<profile>/diego-garden-init
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.current_dir(workspace_root())
            .args(["build", "-p", "diego-garden", "--bin", "diego-garden-init"])
            .arg("--target-dir")
            .arg(&target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build for diego-garden-init");
        assert!(
            out.status.success(),
            "building diego-garden-init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("diego-garden-init");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

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
