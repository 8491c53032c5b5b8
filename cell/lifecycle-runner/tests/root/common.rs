//! Root harness: a NativeBackend per test (own depot, cgroup parent, bridge, subnet
//! 10.251.n.0/24 and host ports, none shared with diego-garden's or diego-executor's tests),
//! the stack rootfs, a blobstore on loopback serving test apps and buildpacks as tgz and
//! keeping uploaded droplets, and a plug-in host with a lifecycle (buildpack, docker) loaded.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use diego_garden::cgroups::CgroupMode;
use diego_garden::native::{Config, NativeBackend};
use diego_garden::net::NetConfig;
use diego_host::lifecycle::LifecyclePlugin;
use diego_host::{Host, HostConfig};

pub use diego_testkit::root::{
    garden_init_bin as init_bin, root_or_skip, stack_rootfs, workspace_root,
};

/// A backend for test `n` (1..=20).
pub async fn backend(n: u8) -> Arc<NativeBackend> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let config = Config {
        depot: PathBuf::from(format!("/tmp/diego-lifecycle-test/{n}")),
        init_bin: init_bin(),
        cgroup_parent: format!("lifecycle-test-{n}"),
        cgroup_mode: CgroupMode::Auto,
        network: NetConfig {
            tag: format!("lct{n}"),
            subnet: Ipv4Addr::new(10, 251, n, 0),
            prefix_len: 24,
            host_ports: (51000 + u16::from(n) * 100, 51000 + u16::from(n) * 100 + 99),
        },
        ..Config::default()
    };
    let b = NativeBackend::new(config).await.expect("open backend");
    // containers adopted from an earlier run that failed half-way
    use diego_garden::Backend as _;
    for h in b.list(&Default::default()).await.unwrap() {
        b.destroy(&h).await.unwrap();
    }
    Arc::new(b)
}

/// The buildpack lifecycle, loaded in a small host (the returned guard owns its cache dir).
pub fn buildpack_lifecycle() -> (LifecyclePlugin, tempfile::TempDir) {
    lifecycle(diego_plugin_artifacts::LIFECYCLE_BUILDPACK)
}

/// The lifecycle component at `path`, loaded in a small host (the guard owns its cache dir).
pub fn lifecycle(path: &str) -> (LifecyclePlugin, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HostConfig::new(dir.path().join("cache"));
    config.max_instances = 4;
    let host = Host::new(config).expect("host starts");
    let plugin = host
        .load_lifecycle_file(path)
        .unwrap_or_else(|e| panic!("lifecycle {path} loads: {e}"));
    (plugin, dir)
}

/// A gzip'd tar of a directory's contents (modes kept: buildpack scripts stay executable).
pub fn tgz(dir: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

#[derive(Clone, Default)]
struct Blobs(Arc<Mutex<HashMap<String, Vec<u8>>>>);

/// A blobstore on 127.0.0.1: `GET /apps/<name>.tgz` and `/buildpacks/<name>.tgz` from the
/// repo's `lifecycles/`, `POST`/`GET /droplets/<guid>`.
pub struct Blobstore {
    pub url: String,
    blobs: Blobs,
}

impl Blobstore {
    pub async fn start() -> Blobstore {
        let blobs = Blobs::default();
        let lifecycles = workspace_root().join("lifecycles");
        {
            let mut map = blobs.0.lock().unwrap();
            for (kind, dir) in [("apps", "test-apps"), ("buildpacks", "buildpacks")] {
                for entry in std::fs::read_dir(lifecycles.join(dir)).unwrap() {
                    let entry = entry.unwrap();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    map.insert(format!("{kind}/{name}.tgz"), tgz(&entry.path()));
                }
            }
        }
        async fn fetch(
            State(b): State<Blobs>,
            UrlPath((kind, name)): UrlPath<(String, String)>,
        ) -> Result<Vec<u8>, StatusCode> {
            b.0.lock()
                .unwrap()
                .get(&format!("{kind}/{name}"))
                .cloned()
                .ok_or(StatusCode::NOT_FOUND)
        }
        async fn store(
            State(b): State<Blobs>,
            UrlPath((kind, name)): UrlPath<(String, String)>,
            body: Bytes,
        ) -> StatusCode {
            b.0.lock()
                .unwrap()
                .insert(format!("{kind}/{name}"), body.to_vec());
            StatusCode::CREATED
        }
        let app = axum::Router::new()
            .route("/{kind}/{name}", get(fetch).post(store))
            .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
            .with_state(blobs.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Blobstore { url, blobs }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.blobs.0.lock().unwrap().get(key).cloned()
    }
}

/// Entry paths of a tgz.
pub fn tgz_entries(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Polls the readiness checks until they pass, failing the test (with the logs) after 5 s.
pub async fn wait_ready(
    caps: &diego_lifecycle_runner::GardenCaps,
    container: &diego_host::capabilities::ContainerRef,
    checks: &diego_host::lifecycle::types::CheckPlan,
    launched: &diego_lifecycle_runner::Launched,
) {
    for _ in 0..50 {
        if diego_lifecycle_runner::ready(caps, container, checks, launched)
            .await
            .unwrap()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not ready after 5 s\n{}", caps.logs().join("\n"));
}
