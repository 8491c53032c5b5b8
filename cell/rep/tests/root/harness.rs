//! The root tests' cell: a real BBS, a log server (`diego_logs`), a blob store
//! (`diego_blobstore`) and a rep over the native
//! Garden backend on its own 127.0.0.x address (so its bridge, subnet and host ports are its
//! own), with the busybox and stack rootfses preloaded.
//!
//! A missing prerequisite (the stack rootfs, the lifecycle component, the registry tools)
//! fails a test run as root; only a non-root run skips.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diego_blobstore::{BlobClient, BlobError, BlobStore};
use diego_garden::Backend;
use diego_garden::native::NativeBackend;
use diego_logs::{LogEnvelope, LogLimits, LogServer};
use diego_model::requests::DesireTaskRequest;
use diego_model::{PlacementConstraint, Resource, TaskDefinition, TaskState};
use diego_rep::{Config, GardenSettings, Rep};
use diego_rep_client::{RepClient, Work};
use diego_testkit::TestBbs;
use diego_testkit::root::{busybox_rootfs, garden_init_bin, workspace_root};

/// Polls `check` every 100 ms until it gives a value, failing the test after `secs`.
pub async fn eventually<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The stack rootfs (bash, python3, a vcap user); a root run without it fails.
pub fn stack_rootfs() -> PathBuf {
    let cache = std::env::var("DIEGO_ROOTFS_CACHE")
        .map_or_else(|_| PathBuf::from("/var/cache/diego/rootfs"), PathBuf::from);
    let dir = cache.join("stack-bookworm");
    assert!(
        dir.join(".diego-rootfs-ok").exists(),
        "the stack rootfs is not built: run cell/garden/scripts/make-stack-rootfs.sh"
    );
    dir
}

/// A log server on 127.0.0.1.
#[allow(missing_debug_implementations)]
pub struct TestLogServer {
    pub server: LogServer,
    pub url: String,
}

impl TestLogServer {
    pub async fn start() -> TestLogServer {
        let server = LogServer::new(LogLimits::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = server.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        TestLogServer { server, url }
    }

    pub fn recent(&self, log_guid: &str) -> Vec<LogEnvelope> {
        self.server.recent(log_guid)
    }

    /// `[SOURCE/INSTANCE] message` lines of `log_guid` in timestamp order (lines reach the
    /// server in batches from several producers, so arrival order is not line order).
    pub fn lines(&self, log_guid: &str) -> Vec<String> {
        let mut recent = self.recent(log_guid);
        recent.sort_by_key(|e| e.timestamp);
        recent
            .iter()
            .map(|e| format!("{} {}", e.tag(), e.message))
            .collect()
    }

    /// Waits until a line of `log_guid` contains `needle`; the lines so far. Fails with the
    /// lines it saw.
    pub async fn wait_for(&self, log_guid: &str, needle: &str, secs: u64) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let lines = self.lines(log_guid);
            if lines.iter().any(|l| l.contains(needle)) {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line of {log_guid} with {needle:?} after {secs} s in\n{}",
                lines.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A blob store (`diego_blobstore`) on 127.0.0.1, over a temporary directory.
#[allow(missing_debug_implementations)]
pub struct BlobServer {
    pub client: BlobClient,
    _dir: tempfile::TempDir,
}

impl BlobServer {
    pub async fn start() -> BlobServer {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = store.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        BlobServer {
            client: BlobClient::new(&url),
            _dir: dir,
        }
    }

    pub fn url(&self, key: &str) -> String {
        self.client.url(key)
    }

    /// Stores `bytes` as `key`; its URL.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> String {
        self.client.put_bytes(key, bytes).await.unwrap();
        self.url(key)
    }

    /// The blob `key`, if there is one.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.client.get_bytes(key).await {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(BlobError::NotFound { .. }) => None,
            Err(e) => panic!("blob {key}: {e}"),
        }
    }
}

/// A zip of a directory's contents, unix modes kept (buildpack scripts stay executable).
pub fn zip_dir(dir: &Path) -> Vec<u8> {
    fn add(
        zip: &mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>,
        root: &Path,
        dir: &Path,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
            if entry.file_type()?.is_dir() {
                zip.add_directory(format!("{name}/"), options)?;
                add(zip, root, &path)?;
            } else {
                zip.start_file(name, options)?;
                zip.write_all(&std::fs::read(&path)?)?;
            }
        }
        Ok(())
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    add(&mut zip, dir, dir).unwrap();
    zip.finish().unwrap().into_inner()
}

/// `lifecycles/<kind>/<name>` zipped.
pub fn zipped_fixture(kind: &str, name: &str) -> Vec<u8> {
    let dir = workspace_root().join("lifecycles").join(kind).join(name);
    assert!(dir.is_dir(), "{} is missing", dir.display());
    zip_dir(&dir)
}

/// A lifecycle component built by `diego-plugin-artifacts`; a root run without it fails.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("the lifecycle component {path}: {e}"))
}

/// A cell on 127.0.0.`slot` with its BBS, log server and blob server.
#[allow(missing_debug_implementations)]
pub struct TestCell {
    pub bbs: TestBbs,
    pub rep: Rep,
    pub backend: Arc<NativeBackend>,
    pub client: RepClient,
    pub logs: TestLogServer,
    pub blobs: BlobServer,
    pub cell_id: String,
    _data: tempfile::TempDir,
}

impl TestCell {
    pub async fn start(slot: u8) -> TestCell {
        init_tracing();
        let bbs = TestBbs::start().await.unwrap();
        let logs = TestLogServer::start().await;
        let blobs = BlobServer::start().await;
        let data = tempfile::tempdir().unwrap();
        let cell_id = format!("root-cell-{slot}");
        let config = Config {
            cell_id: cell_id.clone(),
            listen: SocketAddr::from(([127, 0, 0, slot], 0)),
            data_dir: data.path().to_path_buf(),
            preloaded_rootfses: BTreeMap::from([
                ("busybox".into(), busybox_rootfs()),
                ("bookworm".into(), stack_rootfs()),
            ]),
            bbs_url: bbs.url.clone(),
            liveness_interval: Duration::from_millis(500),
            startup_check_interval: Duration::from_millis(100),
            graceful_shutdown_interval: Duration::from_secs(2),
            garden: GardenSettings {
                init_bin: Some(garden_init_bin()),
                ..GardenSettings::default()
            },
            logs_url: Some(logs.url.clone()),
            ..Config::default()
        };
        let backend = Arc::new(NativeBackend::new(config.native_config()).await.unwrap());
        let rep = Rep::start(config, bbs.client.clone(), backend.clone())
            .await
            .unwrap();
        let client = RepClient::new(rep.url(), Duration::from_secs(10));
        TestCell {
            bbs,
            rep,
            backend,
            client,
            logs,
            blobs,
            cell_id,
            _data: data,
        }
    }

    /// Desires the task and offers it to this cell.
    pub async fn run_task(&self, guid: &str, definition: TaskDefinition) {
        let placement = PlacementConstraint {
            root_fs: definition.rootfs.clone(),
            ..PlacementConstraint::default()
        };
        let resource = Resource {
            memory_mb: definition.memory_mb,
            disk_mb: definition.disk_mb,
            max_pids: 0,
        };
        self.bbs
            .client
            .desire_task(&DesireTaskRequest {
                task_definition: definition,
                task_guid: guid.into(),
                domain: "tests".into(),
            })
            .await
            .unwrap();
        let refused = self
            .client
            .perform(&Work {
                lrps: Vec::new(),
                tasks: vec![diego_rep_client::Task {
                    task_guid: guid.into(),
                    domain: "tests".into(),
                    placement_constraint: placement,
                    resource,
                    ..diego_rep_client::Task::default()
                }],
                cell_id: self.cell_id.clone(),
            })
            .await
            .unwrap();
        assert!(refused.is_empty(), "{refused:?}");
    }

    /// The task once COMPLETED.
    pub async fn completed(&self, guid: &str, secs: u64) -> diego_model::Task {
        eventually("the task to complete", secs, || async {
            self.bbs
                .client
                .task(guid)
                .await
                .ok()
                .filter(|t| t.state == TaskState::Completed)
        })
        .await
    }

    /// Waits until the container `handle` is gone.
    pub async fn container_gone(&self, handle: &str) {
        eventually("the container to go", 10, || async {
            (!self.backend.lookup(handle).await.unwrap()).then_some(())
        })
        .await;
    }

    /// Stops the rep and destroys what it left.
    pub async fn shutdown(self) {
        self.rep.stop().await;
        for handle in self.backend.list(&Default::default()).await.unwrap() {
            let _ = self.backend.destroy(&handle).await;
        }
    }
}
