//! [`Executor`]: runs an action tree in a container and publishes its log lines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diego_garden::Backend;
use diego_model::Action;
use diego_model::desired_lrp::EnvironmentVariable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::DownloadCache;
use crate::error::StepError;
use crate::logs::{Emitter, LogHub, LogSubscription};
use crate::transformer;

/// Executor settings. Defaults are Diego's (`jobs/rep/spec`) where it has one.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where downloads with a `cache_key` are kept.
    pub cache_dir: PathBuf,
    /// Most bytes the download cache keeps; least recently used entries go first.
    pub max_cache_bytes: u64,
    /// Where downloads without a cache key and uploads are spooled.
    pub temp_dir: PathBuf,
    /// Downloads running at once across all containers (Diego: `max_concurrent_downloads`, 5).
    pub max_concurrent_downloads: usize,
    /// Uploads running at once (Diego: `max_concurrent_uploads`, 5).
    pub max_concurrent_uploads: usize,
    /// How long a cancelled process has between SIGTERM and SIGKILL (Diego: 10 s).
    pub graceful_shutdown_interval: Duration,
    /// How long to wait for a killed process to be reported gone (Diego: 1 s).
    pub exit_timeout: Duration,
    /// Lines buffered per log subscriber before it is told it dropped some.
    pub log_buffer_lines: usize,
    /// Connect timeout for downloads and uploads.
    pub http_connect_timeout: Duration,
    /// The cell's identity, presented to the platform's blob store when it serves mutual TLS
    /// (its CA is trusted besides the system's roots); `None`: plain HTTP and public roots.
    pub tls: Option<diego_tls::Tls>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_dir: PathBuf::from("/var/lib/diego/executor/cache"),
            max_cache_bytes: 10 << 30,
            temp_dir: std::env::temp_dir(),
            max_concurrent_downloads: 5,
            max_concurrent_uploads: 5,
            graceful_shutdown_interval: Duration::from_secs(10),
            exit_timeout: Duration::from_secs(1),
            log_buffer_lines: 4096,
            http_connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The tags log lines of one run carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTags {
    /// The LRP's or Task's log guid.
    pub log_guid: String,
    /// The default source (`APP/PROC/WEB`, `STG`, `TASK`, ...); an action's `log_source`
    /// overrides it for that action's subtree.
    pub source_type: String,
    /// The instance: an LRP index, or a guid.
    pub instance: String,
}

/// What one [`Executor::run`] needs besides the action.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// Log tags.
    pub tags: LogTags,
    /// Environment given to every Run action (before the action's own `env`, which wins).
    pub env: Vec<EnvironmentVariable>,
    /// Cancelling it stops the whole tree: processes get SIGTERM, then SIGKILL after the
    /// graceful shutdown interval; transfers are abandoned. The run then fails "cancelled".
    pub cancel: CancellationToken,
}

/// Runs action trees in containers.
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    pub config: Config,
    pub hub: LogHub,
    pub http: reqwest::Client,
    pub downloads: Semaphore,
    pub uploads: Semaphore,
    pub cache: DownloadCache,
}

/// What a step sees while it runs.
pub(crate) struct Cx<'a> {
    pub shared: &'a Shared,
    pub handle: &'a str,
    pub env: &'a [EnvironmentVariable],
}

impl Cx<'_> {
    pub fn backend(&self) -> &dyn Backend {
        &*self.shared.backend
    }
}

/// Errors opening an [`Executor`].
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The cache or temp directory could not be created.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(String),
}

impl Executor {
    /// An executor over `backend` (creates the cache directory).
    pub fn new(backend: Arc<dyn Backend>, config: Config) -> Result<Self, ExecutorError> {
        for dir in [&config.cache_dir, &config.temp_dir] {
            std::fs::create_dir_all(dir).map_err(|source| ExecutorError::Io {
                context: format!("create {}", dir.display()),
                source,
            })?;
        }
        let http = diego_tls::download_client_builder(config.tls.as_ref())
            .connect_timeout(config.http_connect_timeout)
            .build()
            .map_err(|e| ExecutorError::Http(e.to_string()))?;
        let shared = Shared {
            backend,
            hub: LogHub::new(config.log_buffer_lines),
            http,
            downloads: Semaphore::new(config.max_concurrent_downloads.max(1)),
            uploads: Semaphore::new(config.max_concurrent_uploads.max(1)),
            cache: DownloadCache::new(config.cache_dir.clone(), config.max_cache_bytes),
            config,
        };
        Ok(Executor {
            shared: Arc::new(shared),
        })
    }

    /// Subscribes to every log line of every run from now on.
    pub fn subscribe(&self) -> LogSubscription {
        self.shared.hub.subscribe()
    }

    /// The backend this executor runs against.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.backend
    }

    /// Validates `action` and runs it in container `handle` until it succeeds, fails or
    /// `ctx.cancel` is cancelled. The error's `Display` is the failure reason to report.
    pub async fn run(
        &self,
        handle: &str,
        action: &Action,
        ctx: RunContext,
    ) -> Result<(), StepError> {
        let emitter = Emitter {
            hub: self.shared.hub.clone(),
            log_guid: ctx.tags.log_guid,
            source_type: ctx.tags.source_type,
            instance: ctx.tags.instance,
        };
        let step = transformer::build(action, &emitter)?;
        let cx = Cx {
            shared: &self.shared,
            handle,
            env: &ctx.env,
        };
        let result = step.perform(&cx, &ctx.cancel).await;
        tracing::debug!(handle, ?result, "action finished");
        result
    }
}
