//! `diego brain`: the auctioneer and the converger of one brain.
//!
//! The brain serves its HTTP API at once (a standby answers start requests with 503 naming the
//! active brain; the policy status is readable everywhere), then contends for the BBS lock
//! `auctioneer` (value: this brain's URL, which is how the BBS finds the active auctioneer).
//! While it holds the lock it renews it every third of its TTL and runs the auction runner and
//! the converger; if a renewal fails it steps down (both stop, queued work is dropped — the
//! next active brain's converger asks again) and contends again. On SIGTERM or Ctrl-C it
//! releases the lock, so a standby takes over without waiting for the TTL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diego_auctioneer::{Auctioneer, AuctioneerConfig, HttpCells};
use diego_bbs_client::BbsClient;
use diego_converger::{Converger, ConvergerConfig};
use diego_model::requests::LockType;
use tokio_util::sync::CancellationToken;

/// The lock whose holder is the active brain (Diego's auctioneer lock).
const LOCK_KEY: &str = "auctioneer";
/// Between attempts to take the lock (Locket retries every 5 s; ours is cheap).
const CONTEND_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct BrainArgs {
    /// Address the brain's API (start requests, policy) listens on.
    #[arg(long, env = "DIEGO_BRAIN_LISTEN", default_value = "127.0.0.1:9016")]
    pub listen: SocketAddr,
    /// The URL other components reach this brain at (default: http://LISTEN, https:// with
    /// mutual TLS).
    #[arg(long, env = "DIEGO_BRAIN_URL")]
    pub advertise_url: Option<String>,
    /// TTL of the auctioneer lock (e.g. 15s); renewed every third of it.
    #[arg(long, default_value = "15s", value_parser = crate::cell::parse_duration)]
    pub lock_ttl: Duration,
    /// Between convergence passes (Diego: 30s).
    #[arg(long, default_value = "30s", value_parser = crate::cell::parse_duration)]
    pub convergence_interval: Duration,
    /// Bound on every call to a cell's rep (Diego's cell_state_timeout).
    #[arg(long, default_value = "10s", value_parser = crate::cell::parse_duration)]
    pub cell_state_timeout: Duration,
    /// Weight of a cell's starting containers in its score.
    #[arg(long, default_value_t = 0.25)]
    pub starting_container_weight: f64,
    /// Weight of a cell's rank in its zone (> 0: fill low-ranked cells first).
    #[arg(long, default_value_t = 0.0)]
    pub bin_pack_first_fit_weight: f64,
    /// Cap on containers starting across all cells at once (0: none).
    #[arg(long, default_value_t = 0)]
    pub starting_container_count_maximum: u32,
    /// Where compiled policy components are cached (default: a directory under the system
    /// temp dir).
    #[arg(long, env = "DIEGO_BRAIN_POLICY_CACHE")]
    pub policy_cache_dir: Option<PathBuf>,
}

pub async fn run(
    bbs_url: &str,
    args: BrainArgs,
    tls: Option<diego_tls::Tls>,
) -> anyhow::Result<()> {
    let shutdown = crate::roles::shutdown_on_signal();
    let bbs = BbsClient::with_tls(bbs_url, tls.as_ref());
    let listener = diego_tls::Listener::bind(args.listen, tls.as_ref())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let url = match &args.advertise_url {
        Some(url) => diego_tls::with_scheme(url, tls.as_ref()),
        None => listener.url().context("no local address")?,
    };

    let cache_dir = args
        .policy_cache_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("diego-brain-policy-cache"));
    let mut config = AuctioneerConfig::new(&url, cache_dir);
    config.cell_state_timeout = args.cell_state_timeout;
    config.settings.starting_container_weight = args.starting_container_weight;
    config.settings.bin_pack_first_fit_weight = args.bin_pack_first_fit_weight;
    config.settings.starting_container_count_maximum = args.starting_container_count_maximum;
    let auctioneer = Auctioneer::new(
        config,
        bbs.clone(),
        Arc::new(HttpCells::with_tls(args.cell_state_timeout, tls.as_ref())),
    )
    .await
    .context("cannot start the auctioneer")?;
    let server = tokio::spawn(auctioneer.clone().serve(listener, shutdown.clone()));
    tracing::info!(%url, bbs = %bbs_url, "brain serving; contending for the auctioneer lock");

    let converger = Arc::new(Converger::new(
        bbs.clone(),
        ConvergerConfig {
            interval: args.convergence_interval,
        },
    ));
    let elector = Elector {
        bbs,
        owner: uuid::Uuid::new_v4().to_string(),
        url,
        ttl: args.lock_ttl.max(Duration::from_secs(1)),
    };
    elector.lead(&auctioneer, &converger, &shutdown).await;

    server
        .await
        .context("the brain's API task failed")?
        .context("the brain's API stopped")
}

/// Contends for the auctioneer lock and runs the brain while holding it.
struct Elector {
    bbs: BbsClient,
    owner: String,
    url: String,
    ttl: Duration,
}

impl Elector {
    fn ttl_seconds(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1)
    }

    async fn lead(
        &self,
        auctioneer: &Arc<Auctioneer>,
        converger: &Arc<Converger>,
        shutdown: &CancellationToken,
    ) {
        loop {
            if let Err(e) = self
                .bbs
                .lock(LOCK_KEY, &self.owner, &self.url, self.ttl_seconds())
                .await
            {
                let holder = match self.bbs.fetch_lock(LOCK_KEY).await {
                    Ok(lock) if !lock.value.is_empty() && lock.owner != self.owner => {
                        Some(lock.value)
                    }
                    _ => None,
                };
                tracing::debug!(error = %e, active = ?holder, "auctioneer lock not taken");
                auctioneer.stand_by(holder);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(CONTEND_INTERVAL) => continue,
                }
            }

            tracing::info!(url = %self.url, "holding the auctioneer lock: this brain is active");
            auctioneer.activate().await;
            let term = shutdown.child_token();
            let runner = tokio::spawn(auctioneer.clone().run(term.clone()));
            let converging = {
                let converger = converger.clone();
                let term = term.clone();
                tokio::spawn(async move { converger.run(term).await })
            };

            let stopping = self.hold(shutdown).await;
            term.cancel();
            let _ = runner.await;
            let _ = converging.await;
            auctioneer.stand_by(None);
            if stopping {
                match self
                    .bbs
                    .release_lock(LOCK_KEY, &self.owner, LockType::Lock)
                    .await
                {
                    Ok(()) => tracing::info!("auctioneer lock released"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot release the auctioneer lock; it expires with its TTL")
                    }
                }
                return;
            }
        }
    }

    /// Renews the lock until a renewal fails (answers false: step down and contend again) or
    /// the brain stops (answers true).
    async fn hold(&self, shutdown: &CancellationToken) -> bool {
        let mut renew = tokio::time::interval(self.ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = renew.tick() => {}
            }
            if let Err(e) = self
                .bbs
                .lock(LOCK_KEY, &self.owner, &self.url, self.ttl_seconds())
                .await
            {
                tracing::warn!(error = %e, "cannot renew the auctioneer lock; stepping down");
                return false;
            }
        }
    }
}
