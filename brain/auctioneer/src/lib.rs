//! The auctioneer: batches start requests and places them on cells with the active auction
//! policy (Diego's auctioneer and `auctionrunner`, shared spec `diego.md` §4).
//!
//! - The BBS POSTs start requests (`/v1/lrps`, `/v1/tasks`); they join a de-duplicated queue
//!   that wakes the runner.
//! - An auction: list the cells from the BBS, fetch every cell's state concurrently (evacuating
//!   cells and answers from the wrong cell are ignored), place the queued work with the active
//!   policy through [`diego_host::PolicyRegistry`] in parts of at most 1,000 items (each part
//!   sees the cells as the previous parts left them), then send each cell one `Work`.
//! - Work a cell refused is queued again (up to `max_attempts` auctions), then failed; work no
//!   cell could take is failed in the BBS with Diego's placement error. A `perform` that did not
//!   answer is not retried (the cell may have taken it; the converger repairs).
//! - The policy: the classic Wasm component by default; operators set a built-in or their own
//!   component (canaried, then swapped; recorded in the BBS for the next brain) and try one
//!   against the pending work without changing anything.
//!
//! Cells are reached through [`CellClient`], so the benchmark runs the same auction against
//! simulated cells.

mod api;
mod cells;
mod plan;
mod policy;
mod queue;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diego_bbs_client::BbsClient;
use diego_host::scoring::{self as s, Outcome};
use diego_host::{
    ActivePolicy, DecidedBy, Host, HostConfig, Limits, PolicyRegistry, RegistryConfig,
};
use diego_model::requests::{
    ActualLrpsRequest, AuctionPolicyRecord, DesiredLrpsRequest, FailActualLrpRequest, TasksRequest,
};
use diego_model::{
    ActualLrpState, LrpStartRequest, PlacementConstraint, Presence, TaskStartRequest,
};
use diego_rep_client::{CellState, Work};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub use api::{
    DegradedPolicy, PolicyChoice, PolicyListEntry, PolicyStatus, TryItem, TryPlacement, TryReport,
};
pub use cells::{CellClient, CellClients, HttpCells};
pub use policy::{BUILTINS, Builtin, DEFAULT_POLICY, PolicyError, builtin};

use crate::api::ApiError;
use crate::plan::{Decision, Fleet, Want, WantKind};
use crate::policy::{Candidate, Policies};
use crate::queue::{LrpAuction, TaskAuction, WorkQueue};

/// How the auctioneer behaves. [`AuctioneerConfig::new`] gives Diego's defaults.
#[derive(Debug, Clone)]
pub struct AuctioneerConfig {
    /// This brain's base URL, e.g. `http://127.0.0.1:9016` (recorded with a policy it sets).
    pub advertise_url: String,
    /// Bound on every call to a cell (Diego's `cell_state_timeout`).
    pub cell_state_timeout: Duration,
    /// Scoring weights and the in-flight start cap.
    pub settings: s::Settings,
    /// Most work items in one policy call.
    pub max_batch_part: usize,
    /// Auctions an item may be refused by its cell before it is failed.
    pub max_attempts: u32,
    /// Where precompiled policy components are cached (owned by this process's user).
    pub policy_cache_dir: PathBuf,
    pub registry: RegistryConfig,
    /// Per-call limits of the policy (deadline, memory, input caps).
    pub policy_limits: Limits,
    /// Concurrent policy instances.
    pub max_policy_instances: u32,
}

impl AuctioneerConfig {
    pub fn new(advertise_url: impl Into<String>, policy_cache_dir: impl Into<PathBuf>) -> Self {
        AuctioneerConfig {
            advertise_url: advertise_url.into(),
            cell_state_timeout: Duration::from_secs(10),
            settings: s::Settings::default(),
            max_batch_part: 1000,
            max_attempts: 3,
            policy_cache_dir: policy_cache_dir.into(),
            registry: RegistryConfig::default(),
            policy_limits: Limits::auction(),
            max_policy_instances: 16,
        }
    }
}

/// Why the auctioneer could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuctioneerError {
    #[error("cannot start the policy host: {0}")]
    Host(#[from] diego_host::HostError),
    #[error("cannot install the default policy: {0}")]
    Policy(#[from] PolicyError),
}

/// What one auction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuctionReport {
    pub cells: usize,
    pub lrps_placed: usize,
    pub tasks_placed: usize,
    /// Failed in the BBS (placement error, or refused too often).
    pub lrps_failed: usize,
    pub tasks_failed: usize,
    /// Refused by their cell and queued for the next auction.
    pub requeued: usize,
    /// Policy calls (parts) and how many the native fallback placed.
    pub parts: usize,
    pub fallbacks: usize,
    /// Time spent placing (policy calls and batch building), without I/O.
    pub placement_time: Duration,
}

#[derive(Debug, Clone)]
enum Role {
    Active,
    Standby { active_url: Option<String> },
}

/// The auctioneer of one brain. Share it in an `Arc`.
#[derive(Debug)]
pub struct Auctioneer {
    config: AuctioneerConfig,
    bbs: BbsClient,
    cells: Arc<dyn CellClients>,
    queue: WorkQueue,
    policies: Policies,
    role: Mutex<Role>,
    /// The policy labels `AuctioneerPolicyActive` was last set to 1 for.
    published_policy: Mutex<Option<[String; 3]>>,
}

impl Auctioneer {
    /// A standby auctioneer placing with the classic component (compiled here, so this takes
    /// a moment the first time; the compiled form is cached in `policy_cache_dir`).
    pub async fn new(
        config: AuctioneerConfig,
        bbs: BbsClient,
        cells: Arc<dyn CellClients>,
    ) -> Result<Arc<Auctioneer>, AuctioneerError> {
        let mut host_config = HostConfig::new(config.policy_cache_dir.clone());
        host_config.max_instances = config.max_policy_instances;
        let host = Host::new(host_config)?;
        let registry = PolicyRegistry::new(config.registry.clone());
        let policies = Policies::new(host, registry, config.policy_limits.clone()).await?;
        let auctioneer = Arc::new(Auctioneer {
            config,
            bbs,
            cells,
            queue: WorkQueue::default(),
            policies,
            role: Mutex::new(Role::Standby { active_url: None }),
            published_policy: Mutex::new(None),
        });
        diego_telemetry::on_scrape(&auctioneer, Auctioneer::publish_status);
        Ok(auctioneer)
    }

    pub fn config(&self) -> &AuctioneerConfig {
        &self.config
    }

    /// The HTTP API (see [`api`](crate::api) for the routes).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        api::router(self.clone())
    }

    /// Serves the HTTP API on `listener` (a `TcpListener`, or a [`diego_tls::Listener`] for
    /// mutual TLS) until `shutdown`, then finishes in-flight requests.
    pub async fn serve(
        self: Arc<Self>,
        listener: impl Into<diego_tls::Listener>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener.into(), self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    fn role(&self) -> Role {
        self.role
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_active(&self) -> bool {
        matches!(self.role(), Role::Active)
    }

    /// This brain holds the lock now: take the policy recorded in the BBS and accept work.
    pub async fn activate(&self) {
        let record = self.bbs.auction_policy().await.map_err(|e| e.to_string());
        self.policies.adopt(record).await;
        *self.role.lock().unwrap_or_else(PoisonError::into_inner) = Role::Active;
        tracing::info!(policy = %self.policies.chosen().0, "auctioneer active");
    }

    /// Another brain is (or may become) active: refuse work and drop what is queued (the
    /// active brain's converger asks again for anything still unplaced).
    pub fn stand_by(&self, active_url: Option<String>) {
        let was_active = self.is_active();
        *self.role.lock().unwrap_or_else(PoisonError::into_inner) = Role::Standby { active_url };
        let dropped = self.queue.clear();
        if was_active || dropped > 0 {
            tracing::info!(dropped, "auctioneer standing by");
        }
    }

    pub(crate) fn require_active(&self) -> Result<(), ApiError> {
        match self.role() {
            Role::Active => Ok(()),
            Role::Standby { active_url } => Err(ApiError::new(
                diego_model::ErrorType::Unavailable,
                match active_url {
                    Some(url) => format!("not the active brain; the active one is {url}"),
                    None => "not the active brain; no brain is active yet".to_owned(),
                },
            )),
        }
    }

    /// Queues LRP start requests (every index of each); answers how many instances were new.
    pub fn submit_lrps(&self, requests: Vec<LrpStartRequest>) -> Result<usize, String> {
        requests.iter().try_for_each(queue::validate_lrp)?;
        let queued = self
            .queue
            .push_lrp_requests(requests, diego_telemetry::current_request_id());
        tracing::debug!(queued, "LRP start requests queued");
        Ok(queued)
    }

    pub fn submit_tasks(&self, requests: Vec<TaskStartRequest>) -> Result<usize, String> {
        requests.iter().try_for_each(queue::validate_task)?;
        let queued = self
            .queue
            .push_task_requests(requests, diego_telemetry::current_request_id());
        tracing::debug!(queued, "task start requests queued");
        Ok(queued)
    }

    /// Items waiting for the next auction.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Runs auctions whenever work is queued, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.queue.wait() => {}
            }
            if self.queue.len() == 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.auction_once() => {}
            }
        }
    }

    /// One auction of everything queued now.
    pub async fn auction_once(&self) -> AuctionReport {
        let states = self.fetch_states().await;
        let (lrps, tasks) = self.queue.drain();
        if lrps.is_empty() && tasks.is_empty() {
            return AuctionReport::default();
        }
        // Diego's WaitDuration: how long the oldest item waited for this auction.
        let waited = lrps
            .iter()
            .map(|a| a.queued_at)
            .chain(tasks.iter().map(|a| a.queued_at))
            .min()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let mut report = AuctionReport {
            cells: states.len(),
            ..AuctionReport::default()
        };
        let fleet = Fleet::new(states);
        let (settings, max_part) = (self.config.settings, self.config.max_batch_part);
        let placed = {
            // Held while placing: a policy swap waits for this auction.
            let _policy = self.policies.gate.read().await;
            let registry = self.policies.registry.clone();
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let mut fleet = fleet;
                let mut decided: Vec<DecidedBy> = Vec::new();
                let wants = wants_of(&lrps, &tasks);
                let decisions = plan::plan(&mut fleet, &wants, settings, max_part, |batch| {
                    let placement = registry.place(batch);
                    decided.push(placement.decided_by);
                    Ok::<_, std::convert::Infallible>(placement.outcomes)
                });
                let decisions = match decisions {
                    Ok(d) => d,
                    Err(never) => match never {},
                };
                (fleet, lrps, tasks, decisions, decided, started.elapsed())
            })
            .await
        };
        let (fleet, lrps, tasks, decisions, decided, placement_time) = match placed {
            Ok(p) => p,
            Err(e) => {
                // Nothing was sent to a cell; the converger asks for this work again.
                tracing::error!(error = %e, "auction placement stopped");
                return report;
            }
        };
        report.placement_time = placement_time;
        report.parts = decided.len();
        for d in &decided {
            self.policies.observe(d);
            if !matches!(d, DecidedBy::Native | DecidedBy::Wasm { .. }) {
                report.fallbacks += 1;
            }
        }
        self.commit(&fleet, lrps, tasks, decisions, &mut report)
            .await;
        count_auctions(&report);
        tracing::info!(
            cells = report.cells,
            lrps_placed = report.lrps_placed,
            tasks_placed = report.tasks_placed,
            lrps_failed = report.lrps_failed,
            tasks_failed = report.tasks_failed,
            requeued = report.requeued,
            placement_ms = placement_time.as_millis() as u64,
            waited_ms = waited.as_millis() as u64,
            "auction done"
        );
        report
    }

    /// The cells the BBS lists, with their states: evacuating cells and answers from another
    /// cell id are left out. Diego tries 3 more times when no cell answers at all.
    async fn fetch_states(&self) -> Vec<(Arc<dyn CellClient>, CellState)> {
        for attempt in 0..4 {
            let presences = loop {
                match self.bbs.cells().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list cells; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            let timeout = self.config.cell_state_timeout;
            let fetched = futures::future::join_all(presences.iter().map(|p| {
                let client = self.cells.client(p);
                async move {
                    let state = tokio::time::timeout(timeout, client.state()).await;
                    (p, client, state)
                }
            }))
            .await;
            let mut states = Vec::with_capacity(fetched.len());
            for (presence, client, state) in fetched {
                match state {
                    Ok(Ok(st)) if st.evacuating => {}
                    Ok(Ok(st)) if st.cell_id != presence.cell_id => {
                        tracing::warn!(cell_id = %presence.cell_id, answered = %st.cell_id, "cell state from another cell; ignored");
                    }
                    Ok(Ok(st)) => states.push((client, st)),
                    Ok(Err(e)) => {
                        tracing::warn!(cell_id = %presence.cell_id, error = %e, "cannot fetch cell state")
                    }
                    Err(_) => {
                        tracing::warn!(cell_id = %presence.cell_id, "cell state timed out")
                    }
                }
            }
            if !states.is_empty() || presences.is_empty() || attempt == 3 {
                return states;
            }
        }
        Vec::new()
    }

    /// Sends each cell its work, queues refused work again or fails it, and records placement
    /// failures in the BBS.
    async fn commit(
        &self,
        fleet: &Fleet,
        lrps: Vec<LrpAuction>,
        tasks: Vec<TaskAuction>,
        decisions: Vec<Decision>,
        report: &mut AuctionReport,
    ) {
        let mut works: HashMap<usize, Work> = HashMap::new();
        let mut failed_lrps: Vec<(LrpAuction, String)> = Vec::new();
        let mut failed_tasks: Vec<(TaskAuction, String)> = Vec::new();
        let mut lrp_decisions = decisions;
        let task_decisions = lrp_decisions.split_off(lrps.len());
        let mut placed_lrps: HashMap<(String, i32), LrpAuction> = HashMap::new();
        let mut placed_tasks: HashMap<String, TaskAuction> = HashMap::new();
        // The requests that asked for each cell's work, whose ids go with it.
        let mut asked_by: HashMap<usize, Vec<String>> = HashMap::new();
        for (a, d) in lrps.into_iter().zip(lrp_decisions) {
            match d {
                Decision::Placed(cell) => {
                    asked_by
                        .entry(cell)
                        .or_default()
                        .extend(a.request_id.clone());
                    let work = works.entry(cell).or_default();
                    work.lrps.push(diego_rep_client::Lrp {
                        instance_guid: uuid::Uuid::new_v4().to_string(),
                        key: a.key.clone(),
                        placement_constraint: a.constraint.clone(),
                        resource: a.resource.clone(),
                        state: Default::default(),
                    });
                    placed_lrps.insert((a.key.process_guid.clone(), a.key.index), a);
                }
                Decision::Failed(message) => failed_lrps.push((a, message)),
            }
        }
        for (a, d) in tasks.into_iter().zip(task_decisions) {
            match d {
                Decision::Placed(cell) => {
                    asked_by
                        .entry(cell)
                        .or_default()
                        .extend(a.request_id.clone());
                    let work = works.entry(cell).or_default();
                    work.tasks.push(diego_rep_client::Task {
                        task_guid: a.task_guid.clone(),
                        domain: a.domain.clone(),
                        placement_constraint: a.constraint.clone(),
                        resource: a.resource.clone(),
                        ..Default::default()
                    });
                    placed_tasks.insert(a.task_guid.clone(), a);
                }
                Decision::Failed(message) => failed_tasks.push((a, message)),
            }
        }
        report.lrps_placed = placed_lrps.len();
        report.tasks_placed = placed_tasks.len();

        let performed =
            futures::future::join_all(works.into_iter().filter_map(|(cell, mut work)| {
                let live = fleet.cells.get(cell)?;
                work.cell_id = live.cell_id.clone();
                let client = live.client.clone();
                let ids = asked_by.get(&cell).map(Vec::as_slice).unwrap_or_default();
                let request_id = diego_telemetry::join_request_ids(ids.iter().map(String::as_str));
                Some(async move {
                    let send = async {
                        tracing::info!(cell_id = %work.cell_id, lrps = work.lrps.len(), tasks = work.tasks.len(), "sending work to the cell");
                        client.perform(&work).await
                    };
                    let answer = in_request(request_id, send).await;
                    (work.cell_id, answer)
                })
            }))
            .await;

        let mut requeue_lrps = Vec::new();
        let mut requeue_tasks = Vec::new();
        for (cell_id, answer) in performed {
            let refused = match answer {
                Ok(refused) => refused,
                Err(e) => {
                    // The cell may have taken it: re-placing could start it twice.
                    tracing::warn!(%cell_id, error = %e, "cannot send work to the cell; not rescheduled");
                    continue;
                }
            };
            for lrp in refused.lrps {
                let Some(mut a) =
                    placed_lrps.remove(&(lrp.key.process_guid.clone(), lrp.key.index))
                else {
                    continue;
                };
                report.lrps_placed -= 1;
                a.attempts += 1;
                if a.attempts >= self.config.max_attempts {
                    let why = refused_message(&cell_id, a.attempts);
                    failed_lrps.push((a, why));
                } else {
                    requeue_lrps.push(a);
                }
            }
            for task in refused.tasks {
                let Some(mut a) = placed_tasks.remove(&task.task_guid) else {
                    continue;
                };
                report.tasks_placed -= 1;
                a.attempts += 1;
                if a.attempts >= self.config.max_attempts {
                    let why = refused_message(&cell_id, a.attempts);
                    failed_tasks.push((a, why));
                } else {
                    requeue_tasks.push(a);
                }
            }
        }
        report.requeued = requeue_lrps.len() + requeue_tasks.len();
        if !requeue_lrps.is_empty() {
            self.queue.push_lrps(requeue_lrps);
        }
        if !requeue_tasks.is_empty() {
            self.queue.push_tasks(requeue_tasks);
        }
        report.lrps_failed = failed_lrps.len();
        report.tasks_failed = failed_tasks.len();
        self.record_failures(failed_lrps, failed_tasks).await;
    }

    async fn record_failures(
        &self,
        lrps: Vec<(LrpAuction, String)>,
        tasks: Vec<(TaskAuction, String)>,
    ) {
        const CONCURRENT: usize = 32;
        let bbs = &self.bbs;
        futures::stream::iter(lrps)
            .map(|(a, message)| {
                in_request(a.request_id.clone(), async move {
                    tracing::info!(process_guid = %a.key.process_guid, index = a.key.index, %message, "LRP placement failed");
                    let request = FailActualLrpRequest {
                        actual_lrp_key: a.key.clone(),
                        error_message: message,
                    };
                    if let Err(e) = bbs.fail_actual_lrp(&request).await {
                        tracing::warn!(process_guid = %a.key.process_guid, index = a.key.index, error = %e, "cannot record the placement failure");
                    }
                })
            })
            .buffer_unordered(CONCURRENT)
            .collect::<Vec<()>>()
            .await;
        futures::stream::iter(tasks)
            .map(|(a, message)| {
                in_request(a.request_id.clone(), async move {
                    tracing::info!(task_guid = %a.task_guid, %message, "task placement failed");
                    if let Err(e) = bbs.reject_task(&a.task_guid, &message).await {
                        tracing::warn!(task_guid = %a.task_guid, error = %e, "cannot reject the task");
                    }
                })
            })
            .buffer_unordered(CONCURRENT)
            .collect::<Vec<()>>()
            .await;
    }

    pub fn policy_status(&self) -> PolicyStatus {
        match self.role() {
            Role::Active => self
                .policies
                .status(true, Some(self.config.advertise_url.clone())),
            Role::Standby { active_url } => self.policies.status(false, active_url),
        }
    }

    /// Sets the gauges of the policy status (at scrape time: the status is cheap to read).
    fn publish_status(&self) {
        use diego_telemetry::names;
        let status = self.policy_status();
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        metrics::gauge!(names::AUCTIONEER_ACTIVE).set(flag(status.active));
        metrics::gauge!(names::AUCTIONEER_POLICY_DEGRADED).set(flag(status.degraded.is_some()));
        let labels = [status.name, status.sha256, status.placing_with];
        let active = |[name, sha256, placing_with]: [String; 3]| {
            let labels = [
                ("name", name),
                ("sha256", sha256),
                ("placing_with", placing_with),
            ];
            metrics::gauge!(names::AUCTIONEER_POLICY_ACTIVE, &labels)
        };
        let mut published = self
            .published_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if published.as_ref() != Some(&labels)
            && let Some(before) = published.replace(labels.clone())
        {
            active(before).set(0.0);
        }
        active(labels).set(1.0);
    }

    pub fn policy_list(&self) -> Vec<PolicyListEntry> {
        self.policies.list()
    }

    /// Loads, canaries and activates a policy, then records it in the BBS; on any failure the
    /// current policy stays. Auctions in flight finish on the old policy.
    pub async fn set_policy(&self, choice: &PolicyChoice) -> Result<PolicyStatus, PolicyError> {
        let candidate = Candidate::from_choice(choice)?;
        let component = choice.component.clone().unwrap_or_default();
        let before = self.policies.chosen();
        let previous = self.policies.install(candidate).await?;
        let (name, builtin, sha256) = self.policies.chosen();
        let record = AuctionPolicyRecord {
            name: name.clone(),
            builtin,
            sha256: if builtin { String::new() } else { sha256 },
            component: if builtin { String::new() } else { component },
            set_at: now_ns(),
            set_by: self.config.advertise_url.clone(),
        };
        if let Err(e) = self.bbs.set_auction_policy(&record).await {
            tracing::warn!(policy = %name, error = %e, "cannot record the auction policy; keeping the previous one");
            self.policies.restore(previous, before).await;
            return Err(PolicyError::Unavailable(format!(
                "cannot record the policy in the BBS ({e}); the previous policy stays"
            )));
        }
        self.policies.set_note(None);
        tracing::info!(policy = %name, builtin, "auction policy set by an operator");
        Ok(self.policy_status())
    }

    /// Reverts to the native classic policy (the fallback), e.g. for a comparison. Not
    /// recorded in the BBS.
    pub async fn use_native_policy(&self) {
        self.policies.use_native().await;
    }

    /// Places the pending work (UNCLAIMED instances not on a cell, PENDING tasks) on the
    /// cells' current states once with the active policy and once with `choice`, and reports
    /// both. Changes nothing: no cell, record or policy is touched.
    pub async fn try_policy(&self, choice: &PolicyChoice) -> Result<TryReport, PolicyError> {
        let (candidate, loaded) = Candidate::from_choice(choice)?
            .load(&self.policies.host, &self.policies.limits)
            .await?;
        let candidate_name = loaded
            .builtin
            .map_or_else(|| candidate.name().to_owned(), str::to_owned);
        let unavailable =
            |e: diego_bbs_client::ClientError| PolicyError::Unavailable(format!("bbs: {e}"));
        let actuals = self
            .bbs
            .actual_lrps(&ActualLrpsRequest::default())
            .await
            .map_err(unavailable)?;
        let infos = self
            .bbs
            .scheduling_infos(&DesiredLrpsRequest::default())
            .await
            .map_err(unavailable)?;
        let all_tasks = self
            .bbs
            .tasks(&TasksRequest::default())
            .await
            .map_err(unavailable)?;
        let states = self.fetch_states().await;

        let now = Instant::now();
        let infos: HashMap<&str, &diego_model::DesiredLrpSchedulingInfo> =
            infos.iter().map(|i| (i.process_guid.as_str(), i)).collect();
        let lrps: Vec<LrpAuction> = actuals
            .iter()
            .filter(|a| {
                a.state == ActualLrpState::Unclaimed
                    && a.presence == Presence::Ordinary
                    && a.cell_id.is_empty()
            })
            .filter_map(|a| {
                let info = infos.get(a.process_guid.as_str())?;
                Some(LrpAuction {
                    key: a.key(),
                    resource: diego_model::Resource {
                        memory_mb: info.memory_mb,
                        disk_mb: info.disk_mb,
                        max_pids: info.max_pids,
                    },
                    constraint: PlacementConstraint {
                        placement_tags: info.placement_tags.clone(),
                        volume_drivers: info.volume_placement.driver_names.clone(),
                        root_fs: info.rootfs.clone(),
                    },
                    attempts: 0,
                    queued_at: now,
                    request_id: None,
                })
            })
            .collect();
        let tasks: Vec<TaskAuction> = all_tasks
            .into_iter()
            .filter(|t| t.state == diego_model::TaskState::Pending)
            .map(|t| {
                let start = TaskStartRequest::new(&t);
                TaskAuction {
                    task_guid: start.task_guid,
                    domain: start.domain,
                    resource: start.resource,
                    constraint: start.placement_constraint,
                    attempts: 0,
                    queued_at: now,
                    request_id: None,
                }
            })
            .collect();

        let active = self.policies.registry.current();
        let active_name = self.policies.chosen().0;
        let (settings, max_part) = (self.config.settings, self.config.max_batch_part);
        let candidate_sha256 = candidate.info().sha256.clone();
        let cells = states.len();
        let planned = tokio::task::spawn_blocking(move || {
            let wants = wants_of(&lrps, &tasks);
            let mut under_active = Fleet::new(states);
            let mut under_candidate = under_active.clone();
            let Ok(a) = plan::plan(&mut under_active, &wants, settings, max_part, |batch| {
                Ok::<_, std::convert::Infallible>(place_dry(&active, batch))
            });
            let c = plan::plan(&mut under_candidate, &wants, settings, max_part, |batch| {
                let outcomes = candidate.place(batch).map_err(|f| f.to_string())?;
                s::validate_outcomes(batch, &outcomes).map_err(|e| e.to_string())?;
                Ok::<_, String>(outcomes)
            })
            .map_err(|e| PolicyError::Refused(format!("the candidate faulted: {e}")))?;
            let items = lrps
                .iter()
                .map(|l| TryItem {
                    process_guid: Some(l.key.process_guid.clone()),
                    index: Some(l.key.index),
                    ..TryItem::default()
                })
                .chain(tasks.iter().map(|t| TryItem {
                    task_guid: Some(t.task_guid.clone()),
                    ..TryItem::default()
                }))
                .zip(a.into_iter().zip(c))
                .map(|(mut item, (a, c))| {
                    item.active = try_placement(&under_active, a);
                    item.candidate = try_placement(&under_candidate, c);
                    item.differs = item.active != item.candidate;
                    item
                })
                .collect::<Vec<_>>();
            Ok::<_, PolicyError>(items)
        })
        .await
        .map_err(|e| PolicyError::Unavailable(format!("dry run stopped: {e}")))??;
        Ok(TryReport {
            active_policy: active_name,
            candidate_policy: candidate_name,
            candidate_sha256,
            cells,
            differing: planned.iter().filter(|i| i.differs).count(),
            placed_by_active: planned
                .iter()
                .filter(|i| i.active.cell_id.is_some())
                .count(),
            placed_by_candidate: planned
                .iter()
                .filter(|i| i.candidate.cell_id.is_some())
                .count(),
            items: planned,
        })
    }
}

/// The active policy on a dry run: as the registry would place, without booking faults.
fn place_dry(active: &ActivePolicy, batch: &Arc<s::Batch>) -> Vec<Outcome> {
    match active {
        ActivePolicy::Native => s::place_classic(batch),
        ActivePolicy::Wasm(p) => match p.place(batch) {
            Ok(o) if s::validate_outcomes(batch, &o).is_ok() => o,
            // The registry would fall back to native for this batch.
            _ => s::place_classic(batch),
        },
    }
}

fn try_placement(fleet: &Fleet, d: Decision) -> TryPlacement {
    match d {
        Decision::Placed(cell) => TryPlacement {
            cell_id: fleet.cells.get(cell).map(|c| c.cell_id.clone()),
            error: None,
        },
        Decision::Failed(e) => TryPlacement {
            cell_id: None,
            error: Some(e),
        },
    }
}

/// The auction's view of queued items: LRPs first, then tasks (decisions come back in this
/// order).
fn wants_of<'a>(lrps: &'a [LrpAuction], tasks: &'a [TaskAuction]) -> Vec<Want<'a>> {
    lrps.iter()
        .map(|a| Want {
            kind: WantKind::Lrp {
                process_guid: &a.key.process_guid,
                index: a.key.index,
                domain: &a.key.domain,
            },
            resource: &a.resource,
            constraint: &a.constraint,
        })
        .chain(tasks.iter().map(|a| Want {
            kind: WantKind::Task {
                task_guid: &a.task_guid,
                domain: &a.domain,
            },
            resource: &a.resource,
            constraint: &a.constraint,
        }))
        .collect()
}

/// Runs `work` as part of request `id` (its logs and calls carry the id), if there is one.
async fn in_request<F: std::future::Future>(id: Option<String>, work: F) -> F::Output {
    match id {
        Some(id) => diego_telemetry::with_request_id(id, work).await,
        None => work.await,
    }
}

/// Diego's auction counters, from one auction's report.
fn count_auctions(report: &AuctionReport) {
    use diego_telemetry::names;
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    metrics::counter!(names::AUCTIONEER_LRP_AUCTIONS_STARTED).increment(count(report.lrps_placed));
    metrics::counter!(names::AUCTIONEER_LRP_AUCTIONS_FAILED).increment(count(report.lrps_failed));
    metrics::counter!(names::AUCTIONEER_TASK_AUCTIONS_STARTED)
        .increment(count(report.tasks_placed));
    metrics::counter!(names::AUCTIONEER_TASK_AUCTIONS_FAILED).increment(count(report.tasks_failed));
}

fn refused_message(cell_id: &str, attempts: u32) -> String {
    format!("the cell refused the work ({attempts} attempts; last on {cell_id})")
}

fn now_ns() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}
