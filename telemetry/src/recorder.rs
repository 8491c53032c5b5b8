//! The process-wide Prometheus recorder and the hooks that refresh gauges at scrape time.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::names::{self, Kind};

/// The content type of `/metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `RequestLatency` buckets, seconds: a store write takes milliseconds, a large listing or a
/// policy upload seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often latency samples are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

type Hook = Box<dyn Fn() -> bool + Send + Sync>;
static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Installs the process's recorder once (later calls answer the same handle). Call it before
/// anything counts: what is counted before is lost. Serving `/metrics` ([`crate::instrument`])
/// installs it too.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder
            .set_buckets_for_metric(Matcher::Full(names::REQUEST_LATENCY.into()), LATENCY_BUCKETS)
        {
            Ok(b) => b,
            // Only an empty bucket list is refused; ours is not.
            Err(e) => {
                tracing::warn!(error = %e, "latency buckets refused; RequestLatency becomes a summary");
                PrometheusBuilder::new()
            }
        };
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                // Another recorder was installed first (not by diego): /metrics stays empty.
                tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        // Latency samples wait in the recorder until a scrape drains them; drain them anyway
        // in case nobody scrapes, so they cannot pile up.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread; scrapes drain the samples");
        }
        for (name, kind, help) in names::CATALOGUE {
            match kind {
                Kind::Counter => metrics::describe_counter!(*name, *help),
                Kind::Gauge => metrics::describe_gauge!(*name, *help),
                Kind::Histogram => metrics::describe_histogram!(*name, *help),
            }
        }
        handle
    })
}

/// Runs `refresh` on `owner` before every scrape, while `owner` lives (it is held weakly, so
/// the hook goes with it). For values cheaper to read when asked than to track: a cell's free
/// capacity, the active policy. `refresh` must not call `on_scrape` or [`render`].
pub fn on_scrape<T: Send + Sync + 'static>(
    owner: &Arc<T>,
    refresh: impl Fn(&T) + Send + Sync + 'static,
) {
    install();
    let owner = Arc::downgrade(owner);
    hooks().push(Box::new(move || match owner.upgrade() {
        Some(owner) => {
            refresh(&owner);
            true
        }
        None => false,
    }));
}

fn hooks() -> std::sync::MutexGuard<'static, Vec<Hook>> {
    HOOKS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every metric of this process, in the Prometheus text format, after the scrape hooks ran.
pub fn render() -> String {
    let handle = install();
    hooks().retain(|refresh| refresh());
    // Descriptions are published by the upkeep; running it here keeps `# HELP` lines current
    // (histograms are drained by `render` itself).
    handle.run_upkeep();
    handle.render()
}
