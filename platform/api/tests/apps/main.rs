//! The apps API against a real BBS, blob store and log server over HTTP on 127.0.0.1 (no
//! cells: the tests act as the rep through the BBS client).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod crud;
mod deploy;
mod lifecycles;
mod staging;
mod update;

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diego_apps_api::{ApiConfig, AppView, AppsApi, AppsClient, ArchiveFormat};
use diego_bbs_client::BbsClient;
use diego_blobstore::{BlobClient, BlobStore};
use diego_logs::{LogLimits, LogServer};
use diego_model::requests::{
    ActualLrpsRequest, ClaimActualLrpRequest, CompleteTaskRequest, CrashActualLrpRequest,
    StartActualLrpRequest,
};
use diego_model::{ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, PortMapping};
use diego_testkit::bbs::TestBbs;
use tokio_util::sync::CancellationToken;

/// A BBS, and one server with the apps API, the blob store and the log server merged, as the
/// `diego api` role serves them.
#[allow(missing_debug_implementations)]
pub struct Platform {
    pub bbs: TestBbs,
    pub api: AppsApi,
    pub client: AppsClient,
    pub blobs: BlobClient,
    pub url: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Compiled lifecycle components are shared by the tests (the host keys them by digest).
fn wasm_cache() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("diego-apps-api-tests-{}", current_uid()))
}

/// The user id (owner of `/proc/self`), so two users on one
/// machine do not share (and fight over the permissions of) one cache.
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

impl Platform {
    /// With the background loops (bulk pass, event follower, staging poll) running or not.
    pub async fn start(background: bool) -> Result<Platform> {
        Self::start_with(background, |_| {}).await
    }

    /// As [`Platform::start`], with the API's config adjusted by `tweak`.
    pub async fn start_with(
        background: bool,
        tweak: impl FnOnce(&mut ApiConfig),
    ) -> Result<Platform> {
        let bbs = TestBbs::start().await?;
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let store = BlobStore::open(dir.path().join("blobs"))?;
        let logs = LogServer::new(LogLimits::default());
        let mut config = ApiConfig::new(dir.path().join("api"), &bbs.url, &url);
        config.wasm_cache_dir = wasm_cache();
        config.logs_url = Some(url.clone());
        config.sync_interval = Duration::from_secs(3600);
        config.staging_poll_interval = Duration::from_millis(300);
        config.deploy_poll_interval = Duration::from_millis(50);
        config.deploy_step_timeout = Duration::from_secs(10);
        tweak(&mut config);
        let api = AppsApi::open(config)?;
        let router = api.router().merge(store.router()).merge(logs.router());
        let shutdown = CancellationToken::new();
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            });
        }
        if background {
            let api = api.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { api.run(shutdown).await });
        }
        Ok(Platform {
            client: AppsClient::new(&url),
            blobs: BlobClient::new(&url),
            api,
            bbs,
            url,
            shutdown,
            _dir: dir,
        })
    }

    pub fn bbs(&self) -> &BbsClient {
        &self.bbs.client
    }
}

/// A zip of `files` (path, contents; every file executable).
pub fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    for (name, body) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A gzipped tar of `files`.
pub fn tgz_of(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        // Written raw: `tar` refuses `..` in paths, and the tests need such an archive.
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        tar.append(&header, body.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

pub fn app_files() -> Vec<u8> {
    tgz_of(&[("server.py", "print('hi')\n"), ("requirements.txt", "")])
}

pub fn buildpack_files() -> Vec<u8> {
    zip_of(&[
        ("bin/detect", "#!/bin/sh\necho python\n"),
        ("bin/compile", "#!/bin/sh\n"),
        ("bin/release", "#!/bin/sh\n"),
    ])
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The app's events, once every predicate in `wanted` matches one (an event is written right
/// after the change it tells of, so a test that saw the change may not see it yet).
pub async fn events_with(
    p: &Platform,
    app: &str,
    wanted: &[&dyn Fn(&diego_apps_api::AppEvent) -> bool],
) -> Result<Vec<diego_apps_api::AppEvent>> {
    let found = eventually("the events", Duration::from_secs(10), || async {
        let events = p.client.events(app).await.ok()?;
        wanted
            .iter()
            .all(|want| events.iter().any(want))
            .then_some(events)
    })
    .await;
    match found {
        Ok(events) => Ok(events),
        Err(e) => Err(e.context(format!("{:?}", p.client.events(app).await))),
    }
}

/// Creates `name` with bits and a buildpack, and starts it: staging is under way.
pub async fn pushed(p: &Platform, name: &str) -> Result<AppView> {
    if p.client.buildpacks().await?.is_empty() {
        p.client
            .put_buildpack("python", None, buildpack_files(), ArchiveFormat::Zip)
            .await?;
    }
    let settings = diego_apps_api::AppSettings {
        env: Some([("GREETING".to_owned(), "hello".to_owned())].into()),
        ..Default::default()
    };
    p.client.put_app(name, &settings).await?;
    p.client
        .upload_bits(name, app_files(), ArchiveFormat::TarGz)
        .await?;
    Ok(p.client.start(name).await?)
}

/// Does what a rep does after staging: uploads the droplet and completes the task.
pub async fn finish_staging(p: &Platform, app: &AppView) -> Result<()> {
    let staging = app.staging.as_ref().context("a staging record")?;
    let task = p.bbs().task(&staging.task_guid).await?;
    let ls = task
        .task_definition
        .lifecycle_staging
        .as_ref()
        .context("lifecycle_staging")?;
    let key = ls
        .droplet_upload_url
        .split_once("/v1/blobs/")
        .context("a blob URL")?
        .1
        .to_owned();
    p.blobs.put_bytes(&key, b"droplet bytes".to_vec()).await?;
    p.bbs().start_task(&staging.task_guid, "cell-1").await?;
    let result = diego_model::StagingResult {
        lifecycle_type: "buildpack".into(),
        process_types: [("web".to_owned(), "python server.py".to_owned())].into(),
        execution_metadata: String::new(),
        lifecycle_metadata: diego_model::staging::LifecycleMetadata {
            detected_buildpack: "python".into(),
            buildpack_key: "python".into(),
            ..Default::default()
        },
    };
    p.bbs()
        .complete_task(&CompleteTaskRequest {
            task_guid: staging.task_guid.clone(),
            cell_id: "cell-1".into(),
            failed: false,
            failure_reason: String::new(),
            result: serde_json::to_string(&result)?,
        })
        .await?;
    Ok(())
}

pub async fn actuals(bbs: &BbsClient, process_guid: &str) -> Vec<ActualLrp> {
    bbs.actual_lrps(&ActualLrpsRequest {
        process_guid: process_guid.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_default()
}

fn instance_key(process_guid: &str, index: i32) -> ActualLrpInstanceKey {
    ActualLrpInstanceKey::new(format!("{process_guid}-i{index}"), "cell-1")
}

/// Claims and starts instance `index` as a rep would.
pub async fn run_instance(bbs: &BbsClient, process_guid: &str, index: i32) -> Result<()> {
    let on = instance_key(process_guid, index);
    bbs.claim_actual_lrp(&ClaimActualLrpRequest {
        process_guid: process_guid.into(),
        index,
        actual_lrp_instance_key: on.clone(),
    })
    .await?;
    bbs.start_actual_lrp(&StartActualLrpRequest {
        actual_lrp_key: ActualLrpKey::new(process_guid, index, "apps"),
        actual_lrp_instance_key: on,
        actual_lrp_net_info: ActualLrpNetInfo {
            address: "192.0.2.10".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 61000 + index as u32,
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Claims and crashes instance `index` as a rep whose app exits would.
pub async fn crash_instance(
    bbs: &BbsClient,
    process_guid: &str,
    index: i32,
    why: &str,
) -> Result<()> {
    let on = instance_key(process_guid, index);
    bbs.claim_actual_lrp(&ClaimActualLrpRequest {
        process_guid: process_guid.into(),
        index,
        actual_lrp_instance_key: on.clone(),
    })
    .await?;
    bbs.crash_actual_lrp(&CrashActualLrpRequest {
        actual_lrp_key: ActualLrpKey::new(process_guid, index, "apps"),
        actual_lrp_instance_key: on,
        error_message: why.into(),
    })
    .await?;
    Ok(())
}

/// Starts every UNCLAIMED instance of `process_guid`.
pub async fn run_unclaimed(bbs: &BbsClient, process_guid: &str) -> Result<()> {
    for a in actuals(bbs, process_guid).await {
        if a.state == diego_model::ActualLrpState::Unclaimed {
            run_instance(bbs, process_guid, a.index).await?;
        }
    }
    Ok(())
}
