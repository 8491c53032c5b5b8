//! Calls the BBS makes to other components over HTTP: auction requests to the auctioneer,
//! stop/cancel requests to reps, and task completion callbacks. All are best effort with
//! retries; the converger repairs whatever they miss.
//!
//! The auctioneer is either configured (`Config::auctioneer_url`) or found through its lock:
//! the active brain holds the lock `auctioneer` with its base URL as the value. The URL read is
//! cached, and read again once when a post cannot connect (the brain may have failed over).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diego_model::{
    ActualLrpKey, CellPresence, DesiredLrp, LrpStartRequest, Task, TaskStartRequest,
};
use diego_store::Store;
use diego_store::lock::{self, LockError};
use diego_telemetry::PropagateRequestId as _;
use serde::Serialize;

use crate::keys;

/// The most start requests sent in one post to the auctioneer: the convergence pass after an
/// outage can have tens of thousands; a few bodies of bounded size beat one huge one.
pub const AUCTION_BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct External {
    http: reqwest::Client,
    /// A configured auctioneer; `None`: found through its lock.
    auctioneer_url: Option<String>,
    store: Arc<dyn Store>,
    /// The auctioneer URL last read from its lock.
    found_auctioneer: Arc<Mutex<Option<String>>>,
}

/// How many times the BBS tries to reach a rep to stop an instance (Diego's
/// `RetireActualLRPRetryAttempts`).
pub const REP_ATTEMPTS: usize = 5;

/// Why one post to the auctioneer failed.
enum PostError {
    /// Nobody answered at that address, or it said it is not serving (503): the brain may
    /// have moved.
    Unreachable(String),
    /// It answered, but not with success (or the transport failed after connecting).
    Refused(String),
}

impl External {
    pub fn new(
        auctioneer_url: Option<String>,
        timeout: Duration,
        tls: Option<&diego_tls::Tls>,
        store: Arc<dyn Store>,
    ) -> Self {
        let http = diego_tls::client_builder(tls).timeout(timeout).build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot configure an HTTP client; using the default one");
            reqwest::Client::new()
        });
        Self {
            http,
            auctioneer_url: auctioneer_url.filter(|u| !u.trim().is_empty()),
            store,
            found_auctioneer: Arc::new(Mutex::new(None)),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Asks the auctioneer to place these instances (Diego's `LRPStartRequest`), in the
    /// background.
    pub fn request_lrp_auctions(&self, lrp: &DesiredLrp, indices: Vec<i32>) {
        if indices.is_empty() {
            return;
        }
        let requests = vec![LrpStartRequest::new(lrp, indices)];
        let this = self.clone();
        // The request that asked for it is the placement's id all the way to the rep.
        tokio::spawn(diego_telemetry::propagate(async move {
            this.post_lrp_auctions(requests).await
        }));
    }

    /// Asks the auctioneer to place a task (Diego's `TaskStartRequest`), in the background.
    pub fn request_task_auction(&self, task: &Task) {
        let requests = vec![TaskStartRequest::new(task)];
        let this = self.clone();
        tokio::spawn(diego_telemetry::propagate(async move {
            this.post_task_auctions(requests).await
        }));
    }

    /// Posts start requests to the auctioneer, [`AUCTION_BATCH`] per post, and waits for the
    /// answers. Failures are logged: the converger asks again later.
    pub async fn post_lrp_auctions(&self, requests: Vec<LrpStartRequest>) {
        for batch in requests.chunks(AUCTION_BATCH) {
            self.post_to_auctioneer("/v1/lrps", batch).await;
        }
    }

    /// Like [`External::post_lrp_auctions`], for tasks.
    pub async fn post_task_auctions(&self, requests: Vec<TaskStartRequest>) {
        for batch in requests.chunks(AUCTION_BATCH) {
            self.post_to_auctioneer("/v1/tasks", batch).await;
        }
    }

    async fn post_to_auctioneer<T: Serialize>(&self, path: &'static str, body: &[T]) {
        if body.is_empty() {
            return;
        }
        let Some(base) = self.auctioneer().await else {
            tracing::debug!(
                path,
                count = body.len(),
                "no auctioneer configured or holding its lock; the work waits for the converger"
            );
            return;
        };
        let outcome = match self.post(&base, path, body).await {
            Err(PostError::Unreachable(why)) if self.auctioneer_url.is_none() => {
                // The brain may have failed over: read its lock again, once.
                self.forget_auctioneer(&base);
                match self.auctioneer().await {
                    Some(moved) if moved != base => {
                        tracing::info!(from = %base, to = %moved, "the auctioneer moved");
                        self.post(&moved, path, body).await
                    }
                    _ => Err(PostError::Unreachable(why)),
                }
            }
            other => other,
        };
        match outcome {
            Ok(()) => tracing::debug!(path, count = body.len(), "auction requested"),
            Err(PostError::Unreachable(why) | PostError::Refused(why)) => {
                tracing::warn!(path, count = body.len(), error = %why, "auction request failed; the converger will ask again")
            }
        }
    }

    async fn post<T: Serialize>(
        &self,
        base: &str,
        path: &str,
        body: &[T],
    ) -> Result<(), PostError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        match self
            .http
            .post(&url)
            .propagate_request_id()
            .json(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Ok(()),
            // A brain that lost its lock may still answer, refusing work: look again too.
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => Err(
                PostError::Unreachable(format!("{url} answered {}", r.status())),
            ),
            Ok(r) => Err(PostError::Refused(format!("{url} answered {}", r.status()))),
            Err(e) if e.is_connect() => Err(PostError::Unreachable(format!("{url}: {e}"))),
            Err(e) => Err(PostError::Refused(format!("{url}: {e}"))),
        }
    }

    /// The auctioneer's base URL: configured, cached, or read from its lock.
    async fn auctioneer(&self) -> Option<String> {
        if let Some(url) = &self.auctioneer_url {
            return Some(url.clone());
        }
        if let Some(url) = self.cached_auctioneer() {
            return Some(url);
        }
        let found = match lock::fetch(self.store.as_ref(), &keys::lock(keys::AUCTIONEER_LOCK)).await
        {
            Ok(held) => {
                let url = String::from_utf8_lossy(&held.value).trim().to_string();
                if url.is_empty() {
                    tracing::debug!(owner = %held.owner, "the auctioneer lock carries no URL");
                    None
                } else {
                    Some(url)
                }
            }
            Err(LockError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the auctioneer lock");
                None
            }
        };
        if let Ok(mut cached) = self.found_auctioneer.lock() {
            cached.clone_from(&found);
        }
        found
    }

    fn cached_auctioneer(&self) -> Option<String> {
        self.found_auctioneer
            .lock()
            .ok()
            .and_then(|cached| cached.clone())
    }

    fn forget_auctioneer(&self, url: &str) {
        if let Ok(mut cached) = self.found_auctioneer.lock()
            && cached.as_deref() == Some(url)
        {
            *cached = None;
        }
    }

    /// Asks the rep on `cell` to stop an instance, retrying a few times.
    pub async fn stop_lrp_instance(
        &self,
        cell: &CellPresence,
        key: &ActualLrpKey,
        instance_guid: &str,
    ) -> Result<(), String> {
        let url = format!(
            "{}/v1/lrps/{}/instances/{}/stop",
            cell.rep_url.trim_end_matches('/'),
            key.process_guid,
            instance_guid
        );
        self.post_with_retries(&url).await
    }

    /// Asks the rep on `cell` to cancel a task (best effort, as Diego does).
    pub async fn cancel_task(&self, cell: &CellPresence, task_guid: &str) -> Result<(), String> {
        let url = format!(
            "{}/v1/tasks/{task_guid}/cancel",
            cell.rep_url.trim_end_matches('/')
        );
        self.post_with_retries(&url).await
    }

    async fn post_with_retries(&self, url: &str) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..REP_ATTEMPTS {
            match self.http.post(url).propagate_request_id().send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("{url} answered {}", r.status()),
                Err(e) => last = format!("{url}: {e}"),
            }
            tracing::debug!(attempt, error = %last, "rep call failed");
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
        }
        Err(last)
    }
}
