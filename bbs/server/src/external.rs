//! Calls the BBS makes to other components over HTTP: auction requests to the auctioneer,
//! stop/cancel requests to reps, and task completion callbacks. All are best effort with
//! retries; the converger repairs whatever they miss.

use std::time::Duration;

use diego_model::{ActualLrpKey, CellPresence, DesiredLrp, Task};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct External {
    http: reqwest::Client,
    auctioneer_url: Option<String>,
}

/// How many times the BBS tries to reach a rep to stop an instance (Diego's
/// `RetireActualLRPRetryAttempts`).
pub const REP_ATTEMPTS: usize = 5;

impl External {
    pub fn new(auctioneer_url: Option<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot configure an HTTP client; using the default one");
            reqwest::Client::new()
        });
        Self {
            http,
            auctioneer_url,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Asks the auctioneer to place these instances (Diego's `LRPStartRequest`).
    pub fn request_lrp_auctions(&self, lrp: &DesiredLrp, indices: Vec<i32>) {
        if indices.is_empty() {
            return;
        }
        let body = json!([{
            "process_guid": lrp.process_guid,
            "domain": lrp.domain,
            "indices": indices,
            "resource": {"memory_mb": lrp.memory_mb, "disk_mb": lrp.disk_mb, "max_pids": lrp.max_pids},
            "placement_constraint": {
                "placement_tags": lrp.placement_tags,
                "volume_drivers": lrp.volume_mounts.iter().map(|m| &m.driver).collect::<Vec<_>>(),
                "root_fs": lrp.rootfs,
            },
        }]);
        self.post_to_auctioneer("/v1/lrps", body);
    }

    /// Asks the auctioneer to place a task (Diego's `TaskStartRequest`).
    pub fn request_task_auction(&self, task: &Task) {
        let d = &task.task_definition;
        let body = json!([{
            "task_guid": task.task_guid,
            "domain": task.domain,
            "resource": {"memory_mb": d.memory_mb, "disk_mb": d.disk_mb, "max_pids": d.max_pids},
            "placement_constraint": {
                "placement_tags": d.placement_tags,
                "volume_drivers": d.volume_mounts.iter().map(|m| &m.driver).collect::<Vec<_>>(),
                "root_fs": d.rootfs,
            },
        }]);
        self.post_to_auctioneer("/v1/tasks", body);
    }

    fn post_to_auctioneer(&self, path: &'static str, body: serde_json::Value) {
        let Some(base) = &self.auctioneer_url else {
            tracing::debug!(
                path,
                "no auctioneer configured; the work waits for the converger"
            );
            return;
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let http = self.http.clone();
        tokio::spawn(async move {
            match http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(%url, status = %r.status(), "auctioneer refused the request")
                }
                Err(e) => tracing::warn!(%url, error = %e, "cannot reach the auctioneer"),
            }
        });
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
            match self.http.post(url).send().await {
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
