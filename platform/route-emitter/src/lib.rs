//! The route emitter: the routing table from the BBS's LRPs, sent to the routers.
//!
//! On start and every `sync_interval` it lists every DesiredLRP's scheduling info and every
//! ActualLRP, builds the whole [`RoutingTable`] and puts it on each router; between syncs it
//! follows the LRP events and sends each change at once (an instance that stops running is
//! unregistered, a new running one registered). The event subscription resumes by itself
//! after a broken connection without missing an event; if it cannot, the emitter subscribes
//! again and re-lists.

mod link;
mod state;
mod table;

use std::sync::Arc;
use std::time::Duration;

use diego_bbs_client::{BbsClient, EventStream};
use diego_router::RouterClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use state::EmitterState;
pub use table::{
    CfRoute, DesiredRoutes, ProcessRoutes, RouteDiff, RoutingTable, endpoint_for, process_routes,
};

use link::{Link, Update};

#[derive(Debug, Clone)]
pub struct EmitterConfig {
    /// How often the whole table is re-listed and sent (Diego's route emitter: 20 s here).
    pub sync_interval: Duration,
    /// The key of `DesiredLrp.routes` this emitter reads.
    pub router_key: String,
    /// Names this emitter's routes on the routers: a restarted emitter with the same id
    /// replaces what it registered before.
    pub emitter_id: String,
    /// The longest a call to a router may take.
    pub router_timeout: Duration,
    /// After a failed call, how long before the whole table is sent to that router again.
    pub retry_after: Duration,
    /// The identity presented to routers' admin APIs serving mutual TLS (`None`: plain HTTP).
    pub tls: Option<diego_tls::Tls>,
}

impl Default for EmitterConfig {
    fn default() -> Self {
        Self {
            sync_interval: Duration::from_secs(20),
            router_key: "cf-router".into(),
            emitter_id: "route-emitter".into(),
            router_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    #[error("invalid emitter configuration: {0}")]
    Config(String),
}

#[derive(Debug)]
pub struct RouteEmitter {
    bbs: BbsClient,
    routers: Vec<String>,
    cfg: EmitterConfig,
}

impl RouteEmitter {
    /// An emitter reading from `bbs` and feeding the routers whose admin APIs are at `routers`.
    pub fn new(bbs: BbsClient, routers: Vec<String>, cfg: EmitterConfig) -> Self {
        Self { bbs, routers, cfg }
    }

    /// Runs until `shutdown`. A BBS or router that is unreachable is retried, never fatal.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EmitterError> {
        if self.cfg.sync_interval.is_zero() {
            return Err(EmitterError::Config(
                "sync_interval must be above zero".into(),
            ));
        }
        let links_shutdown = shutdown.child_token();
        let _stop_links = links_shutdown.clone().drop_guard();
        let (repair_tx, mut repair_rx) = mpsc::unbounded_channel();
        let links: Vec<Link> = self
            .routers
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let client = RouterClient::with_tls(
                    url,
                    &self.cfg.emitter_id,
                    self.cfg.router_timeout,
                    self.cfg.tls.as_ref(),
                );
                Link::spawn(
                    i,
                    client,
                    repair_tx.clone(),
                    self.cfg.retry_after,
                    links_shutdown.clone(),
                )
            })
            .collect();
        let send_all = |update: Update| links.iter().for_each(|l| l.send(update.clone()));
        let full = |state: &EmitterState| Update::Full(Arc::new(state.table().items()));

        loop {
            // Subscribe before listing, so no change between the listing and the stream is lost.
            let mut events = self.bbs.subscribe(EventStream::Lrps, None, None);
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                c = events.connect() => c,
            };
            if let Err(e) = connected {
                tracing::warn!(error = %e, "cannot follow the BBS's LRP events; retrying");
                if pause(&shutdown, self.cfg.retry_after).await {
                    return Ok(());
                }
                continue;
            }
            let mut state = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                s = self.sync() => match s {
                    Ok(state) => state,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list LRPs; retrying");
                        if pause(&shutdown, self.cfg.retry_after).await {
                            return Ok(());
                        }
                        continue;
                    }
                },
            };
            send_all(full(&state));
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + self.cfg.sync_interval,
                self.cfg.sync_interval,
            );
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = ticker.tick() => {
                        let Some(synced) = cancellable(&shutdown, self.sync()).await else {
                            return Ok(());
                        };
                        match synced {
                            Ok(fresh) => {
                                state = fresh;
                                send_all(full(&state));
                            }
                            Err(e) => tracing::warn!(error = %e, "periodic sync failed; keeping the table"),
                        }
                    }
                    Some(router) = repair_rx.recv() => {
                        if let Some(link) = links.get(router) {
                            link.send(full(&state));
                        }
                    }
                    event = events.next() => match event {
                        Ok((_, event)) => {
                            let diff = state.apply(event);
                            if !diff.is_empty() {
                                tracing::debug!(register = diff.register.len(), unregister = diff.unregister.len(), "routes changed");
                                send_all(Update::Diff(Arc::new(diff)));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the LRP event stream ended; resyncing");
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn sync(&self) -> Result<EmitterState, diego_bbs_client::ClientError> {
        let desired = self.bbs.scheduling_infos(&Default::default()).await?;
        let actual = self.bbs.actual_lrps(&Default::default()).await?;
        Ok(EmitterState::from_lists(
            desired,
            actual,
            &self.cfg.router_key,
        ))
    }
}

/// `work`'s result, or `None` if shut down first.
async fn cancellable<T>(shutdown: &CancellationToken, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        done = work => Some(done),
    }
}

/// Sleeps `for_`; true if shut down meanwhile.
async fn pause(shutdown: &CancellationToken, for_: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(for_) => false,
    }
}
