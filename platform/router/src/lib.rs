//! The HTTP router: proxies by Host header to running instances, balancing across them.
//!
//! [`Router::proxy`] serves apps' traffic, [`Router::admin`] the registration API route
//! emitters fill the table through ([`RouterClient`] is its client). Proxying uses hyper 1
//! through `hyper-util`'s pooled legacy client (keep-alive connections to instances are
//! reused across requests).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let router = diego_router::Router::new(diego_router::RouterConfig::default());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let proxy = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! let admin = tokio::net::TcpListener::bind("127.0.0.1:8088").await?;
//! tokio::spawn(router.clone().serve_admin(admin, shutdown.clone()));
//! router.serve_proxy(proxy, shutdown).await
//! # }
//! ```

mod access_log;
mod admin;
mod body;
mod client;
mod metrics;
mod proxy;
mod routes;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

pub use access_log::{AccessLog, AccessLogEntry, RequestRecord};
pub use client::{RouterClient, RouterClientError};
pub use metrics::MetricsSnapshot;
pub use proxy::ROUTER_ERROR_HEADER;
pub use routes::{DEFAULT_EMITTER, Endpoint, RouteItem, RoutesRequest, normalize_hostname};

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// This router's index: the `N` of `[RTR/N]` in app logs.
    pub index: u32,
    /// How long a connect to an instance may take before the next one is tried.
    pub connect_timeout: Duration,
    /// How long an instance may take to send its response head (then 504).
    pub response_timeout: Duration,
    /// How long an endpoint that failed is skipped while others exist.
    pub bad_endpoint_for: Duration,
    /// Endpoints tried per request, the first included.
    pub max_attempts: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            index: 0,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            bad_endpoint_for: Duration::from_secs(5),
            max_attempts: 3,
        }
    }
}

/// What the proxy and the admin API share.
pub(crate) struct Shared {
    cfg: RouterConfig,
    table: table::RouteTable,
    counters: metrics::Counters,
    client: Client<HttpConnector, axum::body::Body>,
    access_log: Option<Arc<dyn AccessLog>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cfg", &self.cfg)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// One router: its table, its proxy and its admin API. Clones share everything.
#[derive(Debug, Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

impl Router {
    pub fn new(cfg: RouterConfig) -> Self {
        Self::build(cfg, None)
    }

    /// As [`Router::new`], writing one access-log line per proxied request to `log`.
    pub fn with_access_log(cfg: RouterConfig, log: Arc<dyn AccessLog>) -> Self {
        Self::build(cfg, Some(log))
    }

    fn build(cfg: RouterConfig, access_log: Option<Arc<dyn AccessLog>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let shared = Arc::new(Shared {
            table: table::RouteTable::new(cfg.bad_endpoint_for),
            counters: metrics::Counters::default(),
            client,
            access_log,
            cfg,
        });
        diego_telemetry::on_scrape(&shared, admin::publish);
        Self { shared }
    }

    /// The proxy for the HTTP port. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so `X-Forwarded-For` and access
    /// logs know the client ([`Router::serve_proxy`] does).
    pub fn proxy(&self) -> axum::Router {
        axum::Router::new()
            .fallback(proxy::handle)
            .with_state(self.shared.clone())
    }

    /// The registration API (see the `admin` module for routes and bodies).
    pub fn admin(&self) -> axum::Router {
        admin::router(self.shared.clone())
    }

    /// The counters so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.counters.snapshot()
    }

    /// The merged table: hostname → endpoints.
    pub fn table(&self) -> std::collections::BTreeMap<String, Vec<Endpoint>> {
        self.shared.table.snapshot()
    }

    /// Serves the proxy on `listener` until `shutdown`.
    pub async fn serve_proxy(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = self
            .proxy()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    /// Serves the admin API on `listener` (a `TcpListener`, or a [`diego_tls::Listener`] for
    /// mutual TLS: it is internal, unlike the proxy) until `shutdown`.
    pub async fn serve_admin(
        self,
        listener: impl Into<diego_tls::Listener>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener.into(), self.admin())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}
