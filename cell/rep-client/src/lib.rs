//! The rep's HTTP API as the auctioneer and the BBS see it: Diego's `rep.CellState`, `rep.Work`
//! and the calls to stop an instance or cancel a task, with a typed client.
//!
//! Routes (all JSON):
//! - `GET  /ping` — 200 while the rep serves.
//! - `GET  /state` — [`CellState`]: capacity, what is left, the work on the cell.
//! - `POST /work` — [`Work`] to run; answers the [`Work`] the cell refused (Diego's `Perform`).
//!   Accepted work is reserved before the answer, so a second auction sees it in `/state`.
//! - `POST /v1/lrps/{process_guid}/instances/{instance_guid}/stop`
//! - `POST /v1/tasks/{task_guid}/cancel`
//! - `POST /v1/drain` — start evacuating (as SIGTERM does); answers at once.
//! - `GET  /v1/lrps/{process_guid}/instances/{instance_guid}/metrics` — [`InstanceMetrics`]:
//!   what the instance's container uses of its limits (Diego sends these to Loggregator as
//!   container metrics; here the apps API asks the cell).
//!
//! - `POST /v1/lrps/{process_guid}/instances/{instance_guid}/ssh` — an SSH session in the
//!   instance, on an upgraded connection (see [`ssh`]).
//!
//! Errors are answered as `{"error": {"type", "message"}}` (the BBS's [`diego_model::BbsError`]).

pub mod ssh;

use std::time::Duration;

use diego_model::requests::ErrorResponse;
use diego_model::{ActualLrpKey, PlacementConstraint, Provider, Resource};
use diego_telemetry::PropagateRequestId as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A cell's capacity in the auction's units (Diego's `rep.Resources`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub containers: i32,
}

/// Where an instance is in the rep's hands (Diego's executor container states).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerState {
    /// Capacity set aside; no container yet.
    #[default]
    Reserved,
    /// The container is being made (and set up).
    Initializing,
    /// The process runs; start-up checks have not passed yet.
    Created,
    /// Up and passing its checks.
    Running,
    /// Exited or being torn down.
    Completed,
}

/// An LRP instance on a cell, or one offered to it (Diego's `rep.LRP`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lrp {
    pub instance_guid: String,
    #[serde(flatten)]
    pub key: ActualLrpKey,
    pub placement_constraint: PlacementConstraint,
    pub resource: Resource,
    /// Only in [`CellState`]; ignored in [`Work`].
    pub state: ContainerState,
}

/// A task on a cell, or one offered to it (Diego's `rep.Task`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Task {
    pub task_guid: String,
    pub domain: String,
    pub placement_constraint: PlacementConstraint,
    pub resource: Resource,
    /// Only in [`CellState`].
    pub state: ContainerState,
    pub failed: bool,
}

/// What a cell has and runs, for an auction (Diego's `rep.CellState`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CellState {
    pub rep_url: String,
    pub cell_id: String,
    /// The cell's rank for bin-pack-first-fit (Diego's `CellIndex`).
    pub cell_index: i32,
    pub zone: String,
    pub rootfs_providers: Vec<Provider>,
    pub available_resources: Resources,
    pub total_resources: Resources,
    pub lrps: Vec<Lrp>,
    pub tasks: Vec<Task>,
    /// Instances reserved or starting, not yet running.
    pub starting_container_count: i32,
    pub evacuating: bool,
    pub volume_drivers: Vec<String>,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    pub proxy_memory_allocation_mb: i32,
}

/// Work for one cell (Diego's `rep.Work`). As a `/work` answer: the part the cell refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Work {
    pub lrps: Vec<Lrp>,
    pub tasks: Vec<Task>,
    /// The cell this work is meant for; a rep refuses work addressed to another cell.
    pub cell_id: String,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.lrps.is_empty() && self.tasks.is_empty()
    }
}

/// What went wrong calling a rep.
#[derive(Debug, thiserror::Error)]
pub enum RepClientError {
    /// The rep could not be reached, or the connection broke. For `perform`, whether the work
    /// was taken is unknown.
    #[error("cannot reach the rep at {url}: {message}")]
    Transport { url: String, message: String },
    /// The rep answered with an error status.
    #[error("the rep at {url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    /// The rep answered something this client cannot read.
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
}

/// What an instance's container uses now, of its limits (0: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceMetrics {
    /// CPU in use since the previous sample (or since the container started), percent of one
    /// core, as cf shows it.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_bytes: u64,
    pub disk_limit_bytes: u64,
}

pub type Result<T> = std::result::Result<T, RepClientError>;

/// A client for one rep.
#[derive(Debug, Clone)]
pub struct RepClient {
    http: reqwest::Client,
    base: String,
}

impl RepClient {
    /// A client for the rep at `base_url` (its presence's `rep_url`). `timeout` bounds every
    /// call (Diego's `cell_state_timeout` is 10 s).
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self::with_tls(base_url, timeout, None)
    }

    /// As [`RepClient::new`], presenting `tls`'s identity to a rep serving mutual TLS.
    pub fn with_tls(base_url: &str, timeout: Duration, tls: Option<&diego_tls::Tls>) -> Self {
        let http = diego_tls::client_builder(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self::with_http(http, base_url)
    }

    /// A client sharing `http`'s connection pool (the auctioneer keeps one for all cells).
    pub fn with_http(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn ping(&self) -> Result<()> {
        let url = format!("{}/ping", self.base);
        let r = self.http.get(&url).propagate_request_id().send().await;
        expect_ok(&url, r).await.map(drop)
    }

    pub async fn state(&self) -> Result<CellState> {
        let url = format!("{}/state", self.base);
        let r = self.http.get(&url).propagate_request_id().send().await;
        decode(&url, expect_ok(&url, r).await?).await
    }

    /// Offers `work`; answers the part the cell refused.
    pub async fn perform(&self, work: &Work) -> Result<Work> {
        let url = format!("{}/work", self.base);
        let r = self
            .http
            .post(&url)
            .propagate_request_id()
            .json(work)
            .send()
            .await;
        decode(&url, expect_ok(&url, r).await?).await
    }

    pub async fn stop_lrp_instance(&self, process_guid: &str, instance_guid: &str) -> Result<()> {
        let url = format!(
            "{}/v1/lrps/{process_guid}/instances/{instance_guid}/stop",
            self.base
        );
        let r = self.http.post(&url).propagate_request_id().send().await;
        expect_ok(&url, r).await.map(drop)
    }

    pub async fn cancel_task(&self, task_guid: &str) -> Result<()> {
        let url = format!("{}/v1/tasks/{task_guid}/cancel", self.base);
        let r = self.http.post(&url).propagate_request_id().send().await;
        expect_ok(&url, r).await.map(drop)
    }

    /// What an instance's container uses now.
    pub async fn instance_metrics(
        &self,
        process_guid: &str,
        instance_guid: &str,
    ) -> Result<InstanceMetrics> {
        let url = format!(
            "{}/v1/lrps/{process_guid}/instances/{instance_guid}/metrics",
            self.base
        );
        let r = self.http.get(&url).propagate_request_id().send().await;
        decode(&url, expect_ok(&url, r).await?).await
    }

    /// Opens an SSH session in an instance (see [`ssh`]); `secret` is the cells' SSH secret.
    /// Give this client no overall timeout (see [`RepClient::with_http`]): it would cut the
    /// session.
    pub async fn open_ssh_session(
        &self,
        process_guid: &str,
        instance_guid: &str,
        secret: &str,
        request: &ssh::SessionRequest,
    ) -> Result<tokio_util::codec::Framed<reqwest::Upgraded, ssh::FrameCodec>> {
        use reqwest::header::{CONNECTION, UPGRADE};
        let url = format!(
            "{}/v1/lrps/{process_guid}/instances/{instance_guid}/ssh",
            self.base
        );
        let r = self
            .http
            .post(&url)
            .bearer_auth(secret)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, ssh::UPGRADE_PROTOCOL)
            .json(request)
            .send()
            .await;
        let response = check(&url, r, |s| s == reqwest::StatusCode::SWITCHING_PROTOCOLS).await?;
        let io = response
            .upgrade()
            .await
            .map_err(|e| RepClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(tokio_util::codec::Framed::new(
            io,
            ssh::FrameCodec::default(),
        ))
    }

    /// Asks the rep to evacuate (what SIGTERM does).
    pub async fn drain(&self) -> Result<()> {
        let url = format!("{}/v1/drain", self.base);
        let r = self.http.post(&url).propagate_request_id().send().await;
        expect_ok(&url, r).await.map(drop)
    }
}

async fn expect_ok(
    url: &str,
    response: std::result::Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response> {
    check(url, response, |s| s.is_success()).await
}

/// The response if `ok` says its status is; else the error it carries.
async fn check(
    url: &str,
    response: std::result::Result<reqwest::Response, reqwest::Error>,
    ok: impl Fn(reqwest::StatusCode) -> bool,
) -> Result<reqwest::Response> {
    let response = response.map_err(|e| RepClientError::Transport {
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let status = response.status();
    if ok(status) {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    let message = match serde_json::from_slice::<ErrorResponse>(&body) {
        Ok(e) => e.error.message,
        Err(_) => String::from_utf8_lossy(&body).chars().take(512).collect(),
    };
    Err(RepClientError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        message,
    })
}

async fn decode<T: DeserializeOwned>(url: &str, response: reqwest::Response) -> Result<T> {
    let body = response
        .bytes()
        .await
        .map_err(|e| RepClientError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    serde_json::from_slice(&body).map_err(|e| RepClientError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrp_key_is_flattened_on_the_wire() {
        let lrp = Lrp {
            instance_guid: "i-1".into(),
            key: ActualLrpKey::new("pg", 2, "d"),
            ..Default::default()
        };
        let json = serde_json::to_value(&lrp).unwrap_or_default();
        assert_eq!(json["process_guid"], "pg");
        assert_eq!(json["index"], 2);
        assert_eq!(json["state"], "RESERVED");
        let back: Lrp = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back, lrp);
    }
}
