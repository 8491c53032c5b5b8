//! A typed client for the BBS: one method per API route, and event subscriptions that resume
//! after a reconnect without missing an event.
//!
//! ```no_run
//! # async fn demo() -> Result<(), diego_bbs_client::ClientError> {
//! let bbs = diego_bbs_client::BbsClient::new("http://127.0.0.1:8889");
//! let lrps = bbs.desired_lrps(&Default::default()).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use diego_model::requests::*;
use diego_model::{
    ActualLrp, ActualLrpKey, BbsError, CellPresence, DesiredLrp, DesiredLrpSchedulingInfo,
    ErrorType, Event, LifecycleRecord, LifecycleVersion, Task,
};
use diego_telemetry::PropagateRequestId as _;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What went wrong talking to the BBS.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The BBS answered with a typed error; match on `.kind`.
    #[error("bbs refused {route}: {error}")]
    Bbs { route: String, error: BbsError },
    /// The BBS could not be reached or the connection broke. For a write, the outcome is unknown.
    #[error("cannot reach the bbs at {url}: {message}")]
    Transport { url: String, message: String },
    /// The BBS answered something this client cannot read.
    #[error("unexpected answer from {route}: {message}")]
    Decode { route: String, message: String },
}

impl ClientError {
    /// The BBS's error kind, if the BBS answered with one.
    pub fn kind(&self) -> Option<ErrorType> {
        match self {
            ClientError::Bbs { error, .. } => Some(error.kind),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Which event stream to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStream {
    /// Desired and actual LRP events (`/v1/events/lrp_instances.r1`).
    Lrps,
    /// Task events (`/v1/events/tasks.r1`).
    Tasks,
    /// Cell presence events (`/v1/events/cells`).
    Cells,
    /// All of them (`/v1/events`).
    All,
}

impl EventStream {
    fn path(self) -> &'static str {
        match self {
            EventStream::Lrps => "/v1/events/lrp_instances.r1",
            EventStream::Tasks => "/v1/events/tasks.r1",
            EventStream::Cells => "/v1/events/cells",
            EventStream::All => "/v1/events",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BbsClient {
    http: reqwest::Client,
    base: String,
}

impl BbsClient {
    /// A client for the BBS at `base_url` (e.g. `http://127.0.0.1:8889`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::with_tls(base_url, None)
    }

    /// A client for the BBS at `base_url` (`https://…` for a BBS serving mutual TLS) that
    /// presents `tls`'s identity and trusts only its CA.
    pub fn with_tls(base_url: impl Into<String>, tls: Option<&diego_tls::Tls>) -> Self {
        let http = diego_tls::client_builder(tls)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot configure the BBS client; using a default one");
                reqwest::Client::new()
            });
        Self {
            http,
            base: base_url.into().trim_end_matches('/').to_string(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// POSTs `request` to `route` and decodes the answer.
    pub async fn rpc<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        route: &str,
        request: &Req,
    ) -> Result<Resp> {
        let url = format!("{}{route}", self.base);
        let response = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(60))
            .propagate_request_id()
            .json(request)
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: diego_tls::error_chain(&e),
            })?;
        decode_response(route, response).await
    }

    pub async fn ping(&self) -> Result<bool> {
        Ok(self
            .rpc::<_, PingResponse>("/v1/ping", &EmptyRequest {})
            .await?
            .available)
    }

    // ---- domains ----

    pub async fn upsert_domain(&self, domain: &str, ttl_seconds: u32) -> Result<()> {
        self.unit(
            "/v1/domains/upsert",
            &UpsertDomainRequest {
                domain: domain.into(),
                ttl: ttl_seconds,
            },
        )
        .await
    }

    pub async fn domains(&self) -> Result<Vec<String>> {
        Ok(self
            .rpc::<_, DomainsResponse>("/v1/domains/list", &EmptyRequest {})
            .await?
            .domains)
    }

    // ---- desired LRPs ----

    pub async fn desire_lrp(&self, lrp: &DesiredLrp) -> Result<()> {
        #[derive(Serialize)]
        struct Body<'a> {
            desired_lrp: &'a DesiredLrp,
        }
        self.unit("/v1/desired_lrp/desire.r2", &Body { desired_lrp: lrp })
            .await
    }

    pub async fn update_desired_lrp(&self, request: &UpdateDesiredLrpRequest) -> Result<()> {
        self.unit("/v1/desired_lrp/update", request).await
    }

    pub async fn remove_desired_lrp(&self, process_guid: &str) -> Result<()> {
        self.unit(
            "/v1/desired_lrp/remove",
            &RemoveDesiredLrpRequest {
                process_guid: process_guid.into(),
            },
        )
        .await
    }

    pub async fn desired_lrps(&self, filter: &DesiredLrpsRequest) -> Result<Vec<DesiredLrp>> {
        Ok(self
            .rpc::<_, DesiredLrpsResponse>("/v1/desired_lrps/list.r3", filter)
            .await?
            .desired_lrps)
    }

    pub async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp> {
        let request = DesiredLrpByProcessGuidRequest {
            process_guid: process_guid.into(),
        };
        Ok(self
            .rpc::<_, DesiredLrpResponse>("/v1/desired_lrps/get_by_process_guid.r3", &request)
            .await?
            .desired_lrp)
    }

    pub async fn scheduling_infos(
        &self,
        filter: &DesiredLrpsRequest,
    ) -> Result<Vec<DesiredLrpSchedulingInfo>> {
        let response: DesiredLrpSchedulingInfosResponse = self
            .rpc("/v1/desired_lrp_scheduling_infos/list", filter)
            .await?;
        Ok(response.desired_lrp_scheduling_infos)
    }

    // ---- actual LRPs ----

    pub async fn actual_lrps(&self, filter: &ActualLrpsRequest) -> Result<Vec<ActualLrp>> {
        Ok(self
            .rpc::<_, ActualLrpsResponse>("/v1/actual_lrps/list", filter)
            .await?
            .actual_lrps)
    }

    pub async fn claim_actual_lrp(&self, request: &ClaimActualLrpRequest) -> Result<()> {
        self.unit("/v1/actual_lrps/claim", request).await
    }

    pub async fn start_actual_lrp(&self, request: &StartActualLrpRequest) -> Result<()> {
        self.unit("/v1/actual_lrps/start.r1", request).await
    }

    pub async fn crash_actual_lrp(&self, request: &CrashActualLrpRequest) -> Result<()> {
        self.unit("/v1/actual_lrps/crash", request).await
    }

    pub async fn fail_actual_lrp(&self, request: &FailActualLrpRequest) -> Result<()> {
        self.unit("/v1/actual_lrps/fail", request).await
    }

    pub async fn remove_actual_lrp(&self, request: &RemoveActualLrpRequest) -> Result<()> {
        self.unit("/v1/actual_lrps/remove", request).await
    }

    pub async fn retire_actual_lrp(&self, key: &ActualLrpKey) -> Result<()> {
        self.unit(
            "/v1/actual_lrps/retire",
            &RetireActualLrpRequest {
                actual_lrp_key: key.clone(),
            },
        )
        .await
    }

    pub async fn evacuate_claimed(&self, request: &EvacuateActualLrpRequest) -> Result<bool> {
        Ok(self
            .rpc::<_, EvacuationResponse>("/v1/actual_lrps/evacuate_claimed", request)
            .await?
            .keep_container)
    }

    pub async fn evacuate_running(
        &self,
        request: &EvacuateRunningActualLrpRequest,
    ) -> Result<bool> {
        Ok(self
            .rpc::<_, EvacuationResponse>("/v1/actual_lrps/evacuate_running.r1", request)
            .await?
            .keep_container)
    }

    pub async fn evacuate_stopped(&self, request: &EvacuateActualLrpRequest) -> Result<bool> {
        Ok(self
            .rpc::<_, EvacuationResponse>("/v1/actual_lrps/evacuate_stopped", request)
            .await?
            .keep_container)
    }

    pub async fn evacuate_crashed(
        &self,
        request: &EvacuateCrashedActualLrpRequest,
    ) -> Result<bool> {
        Ok(self
            .rpc::<_, EvacuationResponse>("/v1/actual_lrps/evacuate_crashed", request)
            .await?
            .keep_container)
    }

    pub async fn remove_evacuating(&self, request: &EvacuateActualLrpRequest) -> Result<()> {
        self.unit("/v1/actual_lrps/remove_evacuating", request)
            .await
    }

    // ---- tasks ----

    pub async fn desire_task(&self, request: &DesireTaskRequest) -> Result<()> {
        self.unit("/v1/tasks/desire.r2", request).await
    }

    /// Returns whether the rep should start the task (false if it already runs on this cell).
    pub async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool> {
        let request = StartTaskRequest {
            task_guid: task_guid.into(),
            cell_id: cell_id.into(),
        };
        Ok(self
            .rpc::<_, StartTaskResponse>("/v1/tasks/start", &request)
            .await?
            .should_start)
    }

    pub async fn cancel_task(&self, task_guid: &str) -> Result<()> {
        self.unit(
            "/v1/tasks/cancel",
            &TaskGuidRequest {
                task_guid: task_guid.into(),
            },
        )
        .await
    }

    pub async fn fail_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        self.unit(
            "/v1/tasks/fail",
            &FailTaskRequest {
                task_guid: task_guid.into(),
                failure_reason: reason.into(),
            },
        )
        .await
    }

    pub async fn reject_task(&self, task_guid: &str, reason: &str) -> Result<()> {
        self.unit(
            "/v1/tasks/reject",
            &RejectTaskRequest {
                task_guid: task_guid.into(),
                rejection_reason: reason.into(),
            },
        )
        .await
    }

    pub async fn complete_task(&self, request: &CompleteTaskRequest) -> Result<()> {
        self.unit("/v1/tasks/complete", request).await
    }

    pub async fn resolving_task(&self, task_guid: &str) -> Result<()> {
        self.unit(
            "/v1/tasks/resolving",
            &TaskGuidRequest {
                task_guid: task_guid.into(),
            },
        )
        .await
    }

    pub async fn delete_task(&self, task_guid: &str) -> Result<()> {
        self.unit(
            "/v1/tasks/delete",
            &TaskGuidRequest {
                task_guid: task_guid.into(),
            },
        )
        .await
    }

    pub async fn tasks(&self, filter: &TasksRequest) -> Result<Vec<Task>> {
        Ok(self
            .rpc::<_, TasksResponse>("/v1/tasks/list.r3", filter)
            .await?
            .tasks)
    }

    pub async fn task(&self, task_guid: &str) -> Result<Task> {
        Ok(self
            .rpc::<_, TaskResponse>(
                "/v1/tasks/get_by_task_guid.r3",
                &TaskGuidRequest {
                    task_guid: task_guid.into(),
                },
            )
            .await?
            .task)
    }

    // ---- cells, locks, store ----

    pub async fn cells(&self) -> Result<Vec<CellPresence>> {
        Ok(self
            .rpc::<_, CellsResponse>("/v1/cells/list.r1", &EmptyRequest {})
            .await?
            .cells)
    }

    /// Takes or renews a lock; call again before `ttl_seconds` run out to keep it.
    pub async fn lock(&self, key: &str, owner: &str, value: &str, ttl_seconds: i64) -> Result<()> {
        let resource = LockResource {
            key: key.into(),
            owner: owner.into(),
            value: value.into(),
            lock_type: LockType::Lock,
        };
        self.unit(
            "/v1/locks/lock",
            &LockRequest {
                resource,
                ttl_in_seconds: ttl_seconds,
            },
        )
        .await
    }

    /// Registers or renews a cell's presence.
    pub async fn register_cell(&self, cell: &CellPresence, ttl_seconds: i64) -> Result<()> {
        let value = serde_json::to_string(cell).map_err(|e| ClientError::Decode {
            route: "presence".into(),
            message: e.to_string(),
        })?;
        let resource = LockResource {
            key: cell.cell_id.clone(),
            owner: cell.cell_id.clone(),
            value,
            lock_type: LockType::Presence,
        };
        self.unit(
            "/v1/locks/lock",
            &LockRequest {
                resource,
                ttl_in_seconds: ttl_seconds,
            },
        )
        .await
    }

    pub async fn release_lock(&self, key: &str, owner: &str, lock_type: LockType) -> Result<()> {
        let resource = LockResource {
            key: key.into(),
            owner: owner.into(),
            value: String::new(),
            lock_type,
        };
        self.unit("/v1/locks/release", &ReleaseLockRequest { resource })
            .await
    }

    pub async fn fetch_lock(&self, key: &str) -> Result<LockResource> {
        Ok(self
            .rpc::<_, FetchLockResponse>("/v1/locks/fetch", &FetchLockRequest { key: key.into() })
            .await?
            .resource)
    }

    /// Runs one convergence pass (Diego's ConvergeLRPs and ConvergeTasks) and says what it did.
    pub async fn converge(&self) -> Result<ConvergeResponse> {
        self.rpc("/v1/converge", &EmptyRequest {}).await
    }

    /// The auction policy an operator set, if any.
    pub async fn auction_policy(&self) -> Result<Option<AuctionPolicyRecord>> {
        Ok(self
            .rpc::<_, AuctionPolicyResponse>("/v1/auction_policy/get", &EmptyRequest {})
            .await?
            .policy)
    }

    /// Records the auction policy every brain should place with.
    pub async fn set_auction_policy(&self, policy: &AuctionPolicyRecord) -> Result<()> {
        self.unit(
            "/v1/auction_policy/set",
            &SetAuctionPolicyRequest {
                policy: policy.clone(),
            },
        )
        .await
    }

    /// Every lifecycle an operator added.
    pub async fn lifecycles(&self) -> Result<Vec<LifecycleRecord>> {
        Ok(self
            .rpc::<_, LifecyclesResponse>("/v1/lifecycles/list", &EmptyRequest {})
            .await?
            .lifecycles)
    }

    /// One added lifecycle (a `ResourceNotFound` error when there is none by that name).
    pub async fn lifecycle(&self, name: &str) -> Result<LifecycleRecord> {
        Ok(self
            .rpc::<_, LifecycleResponse>(
                "/v1/lifecycles/get",
                &LifecycleByNameRequest { name: name.into() },
            )
            .await?
            .lifecycle)
    }

    /// Adds a version to lifecycle `name` (created if new) as its current one.
    pub async fn add_lifecycle_version(
        &self,
        name: &str,
        version: &LifecycleVersion,
    ) -> Result<LifecycleRecord> {
        Ok(self
            .rpc::<_, LifecycleResponse>(
                "/v1/lifecycles/add_version",
                &AddLifecycleVersionRequest {
                    name: name.into(),
                    version: version.clone(),
                },
            )
            .await?
            .lifecycle)
    }

    /// Removes lifecycle `name`; answers what it was.
    pub async fn remove_lifecycle(&self, name: &str) -> Result<LifecycleRecord> {
        Ok(self
            .rpc::<_, LifecycleResponse>(
                "/v1/lifecycles/remove",
                &LifecycleByNameRequest { name: name.into() },
            )
            .await?
            .lifecycle)
    }

    pub async fn store_health(&self) -> Result<StoreHealthResponse> {
        self.get("/v1/store/health").await
    }

    /// The BBS's OpenAPI description.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.get("/v1/openapi.json").await
    }

    /// GETs `route` and decodes the answer.
    async fn get<Resp: DeserializeOwned>(&self, route: &str) -> Result<Resp> {
        let url = format!("{}{route}", self.base);
        let response = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(30))
            .propagate_request_id()
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        decode_response(route, response).await
    }

    async fn unit<Req: Serialize + ?Sized>(&self, route: &str, request: &Req) -> Result<()> {
        self.rpc::<_, serde_json::Value>(route, request)
            .await
            .map(|_| ())
    }

    /// Follows an event stream from now on (or after `last_event_id`), reconnecting by itself.
    pub fn subscribe(
        &self,
        stream: EventStream,
        cell_id: Option<String>,
        last_event_id: Option<String>,
    ) -> Subscription {
        Subscription {
            client: self.clone(),
            stream,
            cell_id,
            last_event_id,
            current: None,
            reconnects: 0,
        }
    }
}

async fn decode_response<Resp: DeserializeOwned>(
    route: &str,
    response: reqwest::Response,
) -> Result<Resp> {
    let status = response.status();
    let body = response.bytes().await.map_err(|e| ClientError::Decode {
        route: route.into(),
        message: e.to_string(),
    })?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            route: route.into(),
            message: e.to_string(),
        });
    }
    let error = match serde_json::from_slice::<ErrorResponse>(&body) {
        Ok(response) => response.error,
        Err(_) => BbsError::new(
            ErrorType::from_http_status(status.as_u16()),
            format!("{status}: {}", String::from_utf8_lossy(&body)),
        ),
    };
    Err(ClientError::Bbs {
        route: route.into(),
        error,
    })
}

/// The event a BBS ends a stream with when it cuts off a subscriber that fell behind.
pub const CUT_OFF_EVENT: &str = "cut_off";

/// The data of a [`CUT_OFF_EVENT`].
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CutOff {
    /// Resume after this event id (`Last-Event-ID`) to miss nothing.
    pub resume_after: String,
    #[serde(default)]
    pub reason: String,
}

/// Parsed server-sent events of one connection.
type EventBytes = BoxStream<'static, std::result::Result<eventsource_stream::Event, String>>;

/// An event subscription. [`Subscription::next`] reconnects after a broken connection with the
/// last event id it saw, so no event is missed or repeated (within what the store still keeps).
pub struct Subscription {
    client: BbsClient,
    stream: EventStream,
    cell_id: Option<String>,
    last_event_id: Option<String>,
    current: Option<EventBytes>,
    reconnects: u32,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("stream", &self.stream)
            .field("last_event_id", &self.last_event_id)
            .finish()
    }
}

impl Subscription {
    /// The id of the last event returned: pass it to [`BbsClient::subscribe`] to resume later.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Opens the connection now (otherwise the first `next` does): events that happen after this
    /// returns are seen.
    pub async fn connect(&mut self) -> Result<()> {
        if self.current.is_none() {
            self.current = Some(self.open().await?);
        }
        Ok(())
    }

    /// Builds the request from `self`, then connects without borrowing it, so that the
    /// subscription (and `next`'s future) stays `Send`.
    fn open(&self) -> impl std::future::Future<Output = Result<EventBytes>> + Send + 'static {
        let route = self.stream.path();
        let url = format!("{}{route}", self.client.base);
        let mut request = self.client.http.get(&url);
        if let Some(cell) = &self.cell_id {
            request = request.query(&[("cell_id", cell)]);
        }
        if let Some(id) = &self.last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        async move {
            let response = request.send().await.map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
            if !response.status().is_success() {
                return Err(decode_response::<serde_json::Value>(route, response)
                    .await
                    .err()
                    .unwrap_or_else(|| ClientError::Decode {
                        route: url.clone(),
                        message: "error status without error".into(),
                    }));
            }
            Ok(response
                .bytes_stream()
                .eventsource()
                .map(|r| r.map_err(|e| e.to_string()))
                .boxed())
        }
    }

    /// The next event, or an error the subscription cannot recover from (e.g. the resume point
    /// is no longer kept: re-list and subscribe again). Transport errors are retried forever
    /// with a capped backoff.
    pub async fn next(&mut self) -> Result<(String, Event)> {
        // (`Subscription` is `Send`, and so is this future: it can run on any tokio task.)
        loop {
            if self.current.is_none() {
                match self.open().await {
                    Ok(stream) => {
                        self.current = Some(stream);
                        self.reconnects = 0;
                    }
                    Err(ClientError::Transport { url, message }) => {
                        self.backoff(&format!("{url}: {message}")).await;
                        continue;
                    }
                    Err(e) if e.kind() == Some(ErrorType::Unavailable) => {
                        self.backoff(&e.to_string()).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(stream) = self.current.as_mut() else {
                continue;
            };
            match stream.next().await {
                Some(Ok(sse)) if sse.event == "error" => {
                    self.current = None;
                    self.backoff(&sse.data).await;
                }
                // The BBS cut this subscriber off for falling behind: resume at once. Our own
                // last id is exact; the one the BBS names serves a subscriber that got nothing.
                Some(Ok(sse)) if sse.event == CUT_OFF_EVENT => {
                    self.current = None;
                    if self.last_event_id.is_none() {
                        self.last_event_id = serde_json::from_str::<CutOff>(&sse.data)
                            .ok()
                            .map(|c| c.resume_after);
                    }
                    tracing::debug!(data = %sse.data, "cut off by the BBS for falling behind; resuming");
                }
                Some(Ok(sse)) => {
                    let event: Event =
                        serde_json::from_str(&sse.data).map_err(|e| ClientError::Decode {
                            route: self.stream.path().into(),
                            message: format!("event {}: {e}", sse.id),
                        })?;
                    if !sse.id.is_empty() {
                        self.last_event_id = Some(sse.id.clone());
                    }
                    return Ok((sse.id, event));
                }
                Some(Err(message)) => {
                    self.current = None;
                    self.backoff(&message).await;
                }
                None => {
                    self.current = None;
                    self.backoff("stream ended").await;
                }
            }
        }
    }

    async fn backoff(&mut self, why: &str) {
        self.reconnects = self.reconnects.saturating_add(1);
        let delay = Duration::from_millis(50 * 2u64.pow(self.reconnects.min(6)));
        tracing::debug!(why, ?delay, "event stream broke; reconnecting");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn subscriptions_can_move_between_tasks() {
        let mut subscription =
            BbsClient::new("http://127.0.0.1:1").subscribe(EventStream::All, None, None);
        assert_send(&subscription);
        assert_send(&subscription.next());
    }
}
