//! The apps API (Diego's CC-bridge job): apps, their bits, staging, desired LRPs kept in sync.
//!
//! A platform without a Cloud Controller still needs what the CC-bridge does for Diego: keep
//! app records, stage their bits into droplets with a lifecycle, turn droplets into
//! DesiredLRPs, roll new versions out, and keep the BBS's `apps` domain in step with the
//! records. This crate is that job behind a small JSON API ([`AppsApi::router`]) and its typed
//! client ([`AppsClient`]).
//!
//! - `db`: the records in a redb file (apps, buildpacks, the last events of each app);
//! - `archive`: zip / tgz bodies (an empty app or a buildpack without scripts is refused);
//! - `staging`: the staging Task (`lifecycle_staging`) and its completion (callback, events,
//!   polling: whichever comes first);
//! - `plan` + `launcher`: the lifecycle's launch and check plans as a DesiredLRP;
//! - `deploy`: rolling updates (one new instance at a time; a failing version is removed and
//!   the old one keeps serving);
//! - `sync`: the bulk pass (re-desire what vanished, remove orphans) and the BBS event follower;
//! - `routes`: the HTTP API; `client`: [`AppsClient`].

mod apps;
mod archive;
mod blobs;
mod buildpacks;
mod client;
mod db;
mod deploy;
mod error;
mod launcher;
mod lifecycles;
pub mod model;
mod names;
pub mod plan;
mod routes;
mod staging;
mod state;
mod sync;
mod uploads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use client::{AppsClient, AppsClientError, ArchiveFormat};
pub use error::ApiError;
pub use model::*;
pub use sync::SyncReport;

use tokio_util::sync::CancellationToken;

/// The BBS domain of app LRPs (kept fresh by the bulk pass).
pub const APPS_DOMAIN: &str = "apps";
/// The BBS domain of staging tasks.
pub const STAGING_DOMAIN: &str = "staging";
/// The BBS domain of tasks run on an app's droplet.
pub const TASKS_DOMAIN: &str = "app-tasks";

/// How the API is set up.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Holds `apps.redb` and upload temp files.
    pub data_dir: PathBuf,
    /// Precompiled lifecycle components (owner-only; `<data_dir>/wasm-cache` by default).
    pub wasm_cache_dir: PathBuf,
    pub bbs_url: String,
    /// This API's base URL as the BBS reaches it (staging completion callbacks).
    pub api_url: String,
    /// The blob store's base URL as cells reach it (the API's own URL when served together).
    pub blobstore_url: String,
    /// The log server (`None`: the API's own log lines go nowhere).
    pub logs_url: Option<String>,
    /// Apps get `<name>.<domain>` as their route unless told otherwise.
    pub domain: String,
    /// The port apps' URLs name: the router's (80 is left out of URLs).
    pub router_port: u16,
    /// Bulk pass period (Diego's CC-bridge: 30 s).
    pub sync_interval: Duration,
    /// How often unfinished stagings are polled (in case a callback is lost).
    pub staging_poll_interval: Duration,
    /// How often a deployment looks at its new instances.
    pub deploy_poll_interval: Duration,
    /// An instance must be healthy this soon after it starts (DesiredLRP `start_timeout_ms`).
    pub start_timeout: Duration,
    /// A deployment step gives up when its new instance is not RUNNING this long after it
    /// was desired (placement, download and start included).
    pub deploy_step_timeout: Duration,
    /// Staging gives up after this long.
    pub staging_timeout: Duration,
    /// Largest bits or buildpack upload.
    pub max_upload_bytes: u64,
    /// The identity presented to the BBS, the blob store, the log server and reps serving
    /// mutual TLS (`None`: plain HTTP). Serving with it is the caller's listener's job.
    pub tls: Option<diego_tls::Tls>,
}

impl ApiConfig {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        bbs_url: impl Into<String>,
        api_url: impl Into<String>,
    ) -> Self {
        let api_url = api_url.into().trim_end_matches('/').to_owned();
        let data_dir = data_dir.into();
        ApiConfig {
            wasm_cache_dir: data_dir.join("wasm-cache"),
            data_dir,
            bbs_url: bbs_url.into(),
            blobstore_url: api_url.clone(),
            api_url,
            logs_url: None,
            domain: "apps.internal".to_owned(),
            router_port: 80,
            sync_interval: Duration::from_secs(30),
            staging_poll_interval: Duration::from_secs(5),
            deploy_poll_interval: Duration::from_millis(500),
            start_timeout: Duration::from_secs(60),
            deploy_step_timeout: Duration::from_secs(180),
            staging_timeout: Duration::from_secs(15 * 60),
            max_upload_bytes: 1 << 30,
            tls: None,
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] db::DbError),
}

/// The apps API: cheap to clone.
#[derive(Debug, Clone)]
pub struct AppsApi {
    state: Arc<state::State>,
}

impl AppsApi {
    /// Opens the records in `config.data_dir`. Nothing talks to the BBS or the blob store
    /// until [`AppsApi::run`] or a request does, so the blob store may be served by the same
    /// server as this router.
    pub fn open(config: ApiConfig) -> Result<AppsApi, StartError> {
        for dir in [config.data_dir.clone(), config.data_dir.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let state = state::State::open(config)?;
        Ok(AppsApi {
            state: Arc::new(state),
        })
    }

    /// The HTTP API (see `routes.rs` for the table).
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Background work until `shutdown`: publish the lifecycles, the bulk pass every
    /// `sync_interval` (and at once on start), the staging poll, and the BBS event follower.
    pub async fn run(&self, shutdown: CancellationToken) {
        sync::run(self.state.clone(), shutdown).await
    }

    /// One bulk pass now (what `run` does every `sync_interval`).
    pub async fn sync_once(&self) -> Result<SyncReport, ApiError> {
        sync::bulk_pass(&self.state).await
    }
}
