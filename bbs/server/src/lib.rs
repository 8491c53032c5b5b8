//! The BBS: the one source of truth of the platform.
//!
//! It keeps DesiredLRPs, ActualLRPs, Tasks, Domains, Cells and locks in a [`Store`], enforces
//! Diego's state machines on every change, serves them over an RPC-style HTTP API in the style
//! of Diego's routes, and streams every change as server-sent events derived from the store's
//! own watch — so any BBS process over the same store serves the same events, and a client can
//! resume after a reconnect from the last event id it saw.
//!
//! Layers: `api` decodes and validates → the `Bbs` methods (in `lrps`, `evacuation`, `tasks`,
//! `presence`) apply the state machines → `db` writes with compare-and-swap → `diego_store`.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use diego_model::{BbsError, RestartPolicy, Timestamp};
use diego_store::Store;
use tokio_util::sync::CancellationToken;

mod api;
mod bulk;
mod convergence;
mod db;
mod evacuation;
mod events;
mod external;
pub mod keys;
mod lifecycles;
mod lrps;
mod policy;
mod presence;
mod tasks;

pub use api::{openapi, router};
pub use convergence::ConvergenceConfig;
pub use events::EventId;
pub use policy::{MAX_POLICY_BODY_BYTES, validate_policy};

/// The default of [`Config::max_instances_per_lrp`].
pub const DEFAULT_MAX_INSTANCES_PER_LRP: i32 = 100_000;
/// The default of [`Config::max_records_per_request`].
pub const DEFAULT_MAX_RECORDS_PER_REQUEST: usize = 10_000;

/// How the BBS behaves. `Default` gives Diego's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the API listens.
    pub listen: std::net::SocketAddr,
    /// The auctioneer to ask for placements (`POST /v1/lrps`, `/v1/tasks`). Without one, the
    /// BBS finds the active auctioneer through the lock `auctioneer` (its value is the brain's
    /// base URL); with no lock held either, the work waits for the converger.
    pub auctioneer_url: Option<String>,
    /// The largest request body accepted (the auction policy routes accept
    /// [`MAX_POLICY_BODY_BYTES`]: components are large).
    pub max_body_bytes: usize,
    /// A PENDING task is failed after it was rejected this many times.
    pub max_task_retries: i32,
    pub restart_policy: RestartPolicy,
    /// Timeout of calls to reps, the auctioneer and completion callbacks.
    pub http_timeout: Duration,
    /// When convergence acts on stale records.
    pub convergence: ConvergenceConfig,
    /// The most instances one DesiredLRP may ask for; a desire or scale above it is refused
    /// (400) with a message naming the limit. Bounds the work and the memory of one request.
    pub max_instances_per_lrp: i32,
    /// The most records one request may name (e.g. the `process_guids` of a listing filter).
    pub max_records_per_request: usize,
    /// Events buffered for one subscriber that is not reading. When the buffer stays full for
    /// [`Config::subscriber_stall_timeout`] the subscriber is cut off: its stream ends with a
    /// `cut_off` event naming the id to resume after, so a stalled client costs bounded memory.
    pub subscriber_buffer: usize,
    pub subscriber_stall_timeout: Duration,
    /// The most event subscribers served at once; more are refused with 503.
    pub max_subscribers: usize,
    /// Full listings built and sent at once; more wait their turn. A listing of 100,000
    /// instances holds ~60 MB until its last byte is sent, so this bounds the memory any mix
    /// of listing requests can take.
    pub max_concurrent_listings: usize,
    /// After a shutdown signal, how long requests in flight may take to finish before the
    /// server stops anyway. Writes are acknowledged only once durable, so cutting a request
    /// short loses nothing acknowledged; what it left half done the converger finishes.
    pub shutdown_grace: Duration,
    /// Mutual TLS: the API asks every client for a certificate signed by this identity's CA,
    /// and calls to the auctioneer, reps and callbacks present it. `None`: plain HTTP.
    pub tls: Option<diego_tls::Tls>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8889)),
            auctioneer_url: None,
            max_body_bytes: 1024 * 1024,
            max_task_retries: 3,
            restart_policy: RestartPolicy::default(),
            http_timeout: Duration::from_secs(10),
            convergence: ConvergenceConfig::default(),
            max_instances_per_lrp: DEFAULT_MAX_INSTANCES_PER_LRP,
            max_records_per_request: DEFAULT_MAX_RECORDS_PER_REQUEST,
            subscriber_buffer: 4096,
            subscriber_stall_timeout: Duration::from_secs(10),
            max_subscribers: 1024,
            max_concurrent_listings: 4,
            shutdown_grace: Duration::from_secs(3),
            tls: None,
        }
    }
}

/// Errors that stop the BBS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// The BBS's state: the store and what it calls out to. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Bbs {
    db: db::Db,
    config: Config,
    external: external::External,
    /// Background work (completion callbacks, rep calls) stops with this.
    shutdown: CancellationToken,
    /// Event subscribers being served, against [`Config::max_subscribers`].
    subscribers: Arc<tokio::sync::Semaphore>,
    /// Listings being built or sent, against [`Config::max_concurrent_listings`].
    listings: Arc<tokio::sync::Semaphore>,
}

impl Bbs {
    pub fn new(store: Arc<dyn Store>, config: Config) -> Arc<Self> {
        Self::with_shutdown(store, config, CancellationToken::new())
    }

    pub fn with_shutdown(
        store: Arc<dyn Store>,
        config: Config,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let external = external::External::new(
            config.auctioneer_url.clone(),
            config.http_timeout,
            config.tls.as_ref(),
            store.clone(),
        );
        let subscribers = Arc::new(tokio::sync::Semaphore::new(config.max_subscribers.max(1)));
        let listings = Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_listings.max(1),
        ));
        Arc::new(Self {
            db: db::Db::new(store),
            config,
            external,
            shutdown,
            subscribers,
            listings,
        })
    }

    /// A turn to build and send a full listing; held until its body is sent or dropped.
    pub(crate) async fn listing_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed; `None` would only mean "no bound".
        self.listings.clone().acquire_owned().await.ok()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.db.store()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Serves the BBS API on `config.listen` until `shutdown` is cancelled, then finishes in-flight
/// requests.
pub async fn run(
    store: Arc<dyn Store>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    serve(listener, store, config, shutdown).await
}

/// Like [`run`], on a listener the caller bound (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let listener = diego_tls::Listener::new(listener, config.tls.as_ref());
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let grace = config.shutdown_grace;
    let tls = listener.is_tls();
    let bbs = Bbs::with_shutdown(store, config, shutdown.child_token());
    tracing::info!(%addr, mutual_tls = tls, "bbs listening");
    let server = axum::serve(listener, router(bbs))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    // Graceful shutdown waits for every request in flight; a long one (a large desire or
    // removal) must not hold the process past the grace period. Large requests also stop by
    // themselves between batches once `shutdown` is cancelled (see `bulk`).
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map_err(Error::Serve),
        () = deadline => {
            tracing::warn!(?grace, "requests still in flight after the grace period; stopping anyway (their acknowledged writes are durable)");
            Ok(())
        }
    }
}

/// Now, in ns since the epoch.
pub(crate) fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) type BbsResult<T> = Result<T, BbsError>;
