//! [`Rep`]: the cell's work ledger (what is reserved, starting, running) and the loops around
//! it: API server, presence, sync, evacuation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use diego_bbs_client::BbsClient;
use diego_executor::Executor;
use diego_garden::{Backend, RootfsSpec};
use diego_model::requests::LockType;
use diego_model::{
    ActualLrpKey, ActualLrpNetInfo, CellCapacity, CellPresence, PlacementConstraint, Provider,
    Resource,
};
use diego_rep_client::{CellState, ContainerState, Lrp, Resources, Task, Work};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lifecycles::Lifecycles;
use crate::logs::CellLogs;
use crate::{Config, RepError};

/// What a slot holds.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Lrp(ActualLrpKey),
    Task { domain: String },
}

/// Why a slot's run was asked to stop; the lifecycle decides what to tell the BBS from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The BBS asked (`stop`): remove the ActualLRP.
    Stop,
    /// The BBS cancelled the task: nothing to report.
    Cancel,
    /// Sync found the container gone: crash (or remove if only claimed).
    Vanished,
    /// Evacuation handed the instance over: nothing to report.
    Evacuated,
    /// The BBS no longer knows the work here: nothing to report.
    Orphaned,
}

/// One unit of work on the cell, from reservation until its container is gone.
#[derive(Debug)]
pub(crate) struct Slot {
    pub kind: Kind,
    pub resource: Resource,
    pub placement: PlacementConstraint,
    pub state: ContainerState,
    /// LRP: the claim succeeded; task: the BBS said start.
    pub claimed: bool,
    /// LRP: reported RUNNING with this net info.
    pub net_info: Option<ActualLrpNetInfo>,
    /// LRP: `evacuate_running` answered keep_container.
    pub evacuated: bool,
    pub failed: bool,
    /// LRP: where the instance's `CELL` lines go, once its DesiredLRP is known.
    pub log_guid: String,
    pub stop: CancellationToken,
    pub stop_reason: Option<StopReason>,
    /// LRP: how an SSH session runs in the instance, once its container is made.
    pub session: Option<Arc<crate::ssh::SessionContext>>,
    /// Task: runs in the rep itself, with no container (a docker staging resolves its image
    /// natively), so a missing container is no sign of a lost one.
    pub containerless: bool,
}

pub(crate) struct Inner {
    pub config: Config,
    pub url: String,
    pub bbs: BbsClient,
    pub backend: Arc<dyn Backend>,
    pub executor: Executor,
    /// Where log lines leave the cell.
    pub logs: Arc<CellLogs>,
    /// The lifecycle plug-ins staging tasks name.
    pub lifecycles: Lifecycles,
    slots: Mutex<HashMap<String, Slot>>,
    evacuating: AtomicBool,
    /// Cancelled to start evacuating.
    pub evacuate: CancellationToken,
    /// Cancelled when the rep is done: loops end, lifecycles abandon their work.
    pub done: CancellationToken,
    /// Cancelled once the presence is released and the server stopped.
    pub finished: CancellationToken,
    /// Wakes the sync loop early (BBS events).
    pub wake_sync: Notify,
    /// Wakes the evacuation loop early (a slot went away).
    pub slot_gone: Notify,
    /// The last CPU sample (when, CPU ns) per instance, for `cpu_percent` between samples.
    cpu_samples: Mutex<HashMap<String, (std::time::Instant, u64)>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rep")
            .field("cell_id", &self.config.cell_id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A running rep. Dropping it does not stop it: call [`Rep::stop`] or [`Rep::evacuate`].
#[derive(Debug, Clone)]
pub struct Rep {
    inner: Arc<Inner>,
}

impl Rep {
    /// Binds `config.listen`, registers the presence, and starts serving, syncing and running
    /// work in containers of `backend`. Returns once the API answers.
    pub async fn start(
        config: Config,
        bbs: BbsClient,
        backend: Arc<dyn Backend>,
    ) -> Result<Rep, RepError> {
        if config.cell_id.is_empty() {
            return Err(RepError::Config("cell_id is required".into()));
        }
        if config.memory_mb <= 0 || config.max_containers <= 0 || config.disk_mb < 0 {
            return Err(RepError::Config(
                "memory_mb and max_containers must be > 0, disk_mb >= 0".into(),
            ));
        }
        let executor = Executor::new(backend.clone(), config.executor_config())?;
        let listener = diego_tls::Listener::bind(config.listen, config.tls.as_ref())
            .await
            .map_err(|source| RepError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr: SocketAddr = listener.local_addr().map_err(|source| RepError::Listen {
            addr: config.listen,
            source,
        })?;
        let tls = config.tls.as_ref();
        let logs = Arc::new(CellLogs::new(config.logs_url.as_deref(), tls));
        let downloads = diego_tls::download_client_builder(tls)
            .build()
            .map_err(|e| RepError::Config(format!("cannot build the download client: {e}")))?;
        let lifecycles = Lifecycles::new(config.data_dir.join("lifecycles"), downloads);
        let inner = Arc::new(Inner {
            url: format!("{}://{addr}", diego_tls::scheme(tls)),
            config,
            logs,
            lifecycles,
            bbs,
            backend,
            executor,
            slots: Mutex::new(HashMap::new()),
            evacuating: AtomicBool::new(false),
            evacuate: CancellationToken::new(),
            done: CancellationToken::new(),
            finished: CancellationToken::new(),
            wake_sync: Notify::new(),
            slot_gone: Notify::new(),
            cpu_samples: Mutex::new(HashMap::new()),
        });
        tracing::info!(cell_id = %inner.config.cell_id, url = %inner.url, "rep listening");
        diego_telemetry::on_scrape(&inner, Inner::publish_capacity);

        // the first registration before answering, so a caller sees the cell at once
        // (a BBS not up yet is retried by the presence loop)
        if let Err(e) = inner.register().await {
            tracing::warn!(error = %e, "first presence registration failed; retrying");
        }
        let server = {
            let inner = inner.clone();
            let router = crate::api::router(inner.clone());
            tokio::spawn(async move {
                let stop = inner.done.clone();
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "rep API stopped");
                }
            })
        };
        tokio::spawn(crate::logs::forward_executor_lines(
            inner.logs.clone(),
            inner.executor.subscribe(),
            inner.done.clone(),
        ));
        tokio::spawn(presence_loop(inner.clone(), server));
        tokio::spawn(crate::sync::sync_loop(inner.clone()));
        tokio::spawn(crate::sync::event_loop(inner.clone()));
        tokio::spawn(crate::evacuation::controller(inner.clone()));
        Ok(Rep { inner })
    }

    /// The rep's API, `http://ADDR` (`https://` with mutual TLS; its presence's `rep_url`).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn cell_id(&self) -> &str {
        &self.inner.config.cell_id
    }

    /// Starts evacuating (as SIGTERM and `POST /v1/drain` do); see [`Rep::finished`].
    pub fn evacuate(&self) {
        self.inner.evacuate.cancel();
    }

    /// Whether the cell is evacuating.
    pub fn is_evacuating(&self) -> bool {
        self.inner.is_evacuating()
    }

    /// Resolves once the rep has stopped: after an evacuation, or [`Rep::stop`].
    pub async fn finished(&self) {
        self.inner.finished.cancelled().await;
    }

    /// Stops at once without evacuating: the API and loops stop, runs are abandoned (their
    /// processes killed, containers left for the next start's sync to destroy), the presence
    /// is released. The BBS's convergence takes it from there.
    pub async fn stop(&self) {
        self.inner.done.cancel();
        self.finished().await;
    }

    /// Runs one reconciliation pass with the BBS now (the sync loop runs one every
    /// `sync_interval` and on BBS events).
    pub async fn sync(&self) -> Result<(), diego_bbs_client::ClientError> {
        crate::sync::sync_once(&self.inner).await
    }

    /// The cell state `/state` answers.
    pub fn state(&self) -> CellState {
        self.inner.cell_state()
    }
}

impl Inner {
    pub fn is_evacuating(&self) -> bool {
        self.evacuating.load(Ordering::SeqCst)
    }

    pub fn set_evacuating(&self) {
        self.evacuating.store(true, Ordering::SeqCst);
    }

    pub fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the slot `guid`, if it still exists.
    pub fn with_slot<T>(&self, guid: &str, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        self.slots().get_mut(guid).map(f)
    }

    /// What instance `instance_guid` of `process_guid` uses now, if it runs here. CPU is the
    /// share of one core since the previous sample (the first: over 200 ms).
    pub async fn instance_metrics(
        &self,
        process_guid: &str,
        instance_guid: &str,
    ) -> Option<diego_rep_client::InstanceMetrics> {
        let ours = self
            .with_slot(
                instance_guid,
                |slot| matches!(&slot.kind, Kind::Lrp(key) if key.process_guid == process_guid),
            )
            .unwrap_or(false);
        if !ours {
            return None;
        }
        let previous = self
            .cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance_guid)
            .copied();
        let (at, ns) = match previous {
            Some(sample) => sample,
            // No earlier sample: take one now and measure over a short window.
            None => {
                let first = self.backend.metrics(instance_guid).await.ok()?;
                let at = std::time::Instant::now();
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                (at, first.cpu_usage_ns)
            }
        };
        let m = self.backend.metrics(instance_guid).await.ok()?;
        let now = std::time::Instant::now();
        let cpu_percent = m.cpu_usage_ns.saturating_sub(ns) as f64 * 100.0
            / now.duration_since(at).as_nanos().max(1) as f64;
        {
            let mut samples = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
            let slots = self.slots();
            samples.retain(|guid, _| slots.contains_key(guid));
            samples.insert(instance_guid.to_string(), (now, m.cpu_usage_ns));
        }
        Some(diego_rep_client::InstanceMetrics {
            cpu_percent,
            memory_bytes: m.memory_bytes,
            memory_limit_bytes: m.memory_limit_bytes,
            disk_bytes: m.disk_bytes,
            disk_limit_bytes: m.disk_limit_bytes,
        })
    }

    pub fn remove_slot(&self, guid: &str) {
        self.slots().remove(guid);
        self.slot_gone.notify_waiters();
    }

    /// Asks the run of `guid` to stop for `reason`; false if there is no such run. The first
    /// reason given wins.
    pub fn request_stop(&self, guid: &str, reason: StopReason) -> bool {
        self.with_slot(guid, |slot| {
            slot.stop_reason.get_or_insert(reason);
            slot.stop.cancel();
        })
        .is_some()
    }

    pub fn presence(&self) -> CellPresence {
        let c = &self.config;
        CellPresence {
            cell_id: c.cell_id.clone(),
            rep_address: self.url.clone(),
            zone: c.zone.clone(),
            capacity: CellCapacity {
                memory_mb: c.memory_mb,
                disk_mb: c.disk_mb,
                containers: c.max_containers,
            },
            rootfs_providers: self.rootfs_providers(),
            placement_tags: c.placement_tags.clone(),
            optional_placement_tags: c.optional_placement_tags.clone(),
            rep_url: self.url.clone(),
            annotations: Default::default(),
        }
    }

    fn rootfs_providers(&self) -> Vec<Provider> {
        vec![
            Provider {
                name: "preloaded".into(),
                properties: self.config.preloaded_rootfses.keys().cloned().collect(),
            },
            Provider {
                name: "docker".into(),
                properties: Vec::new(),
            },
        ]
    }

    /// The container rootfs of a work's `rootfs` URL, if this cell provides it.
    pub fn rootfs_spec(&self, rootfs: &str) -> Option<RootfsSpec> {
        if let Some(name) = rootfs.strip_prefix("preloaded:") {
            return self
                .config
                .preloaded_rootfses
                .get(name)
                .map(|dir| RootfsSpec::Dir(dir.clone()));
        }
        if rootfs.starts_with("docker:") {
            return Some(RootfsSpec::Image(rootfs.to_string()));
        }
        None
    }

    async fn register(&self) -> Result<(), diego_bbs_client::ClientError> {
        let ttl = i64::try_from(self.config.presence_ttl.as_secs().max(1)).unwrap_or(15);
        self.bbs.register_cell(&self.presence(), ttl).await
    }

    pub fn total(&self) -> Resources {
        Resources {
            memory_mb: self.config.memory_mb,
            disk_mb: self.config.disk_mb,
            containers: self.config.max_containers,
        }
    }

    /// Total minus what every slot (reserved, starting or running) holds.
    fn available(slots: &HashMap<String, Slot>, total: Resources) -> Resources {
        let mut left = total;
        for slot in slots.values() {
            left.memory_mb -= slot.resource.memory_mb;
            left.disk_mb -= slot.resource.disk_mb;
            left.containers -= 1;
        }
        left
    }

    pub fn cell_state(&self) -> CellState {
        let slots = self.slots();
        let mut lrps = Vec::new();
        let mut tasks = Vec::new();
        let mut starting = 0;
        for (guid, slot) in slots.iter() {
            if slot.state != ContainerState::Running {
                starting += 1;
            }
            match &slot.kind {
                Kind::Lrp(key) => lrps.push(Lrp {
                    instance_guid: guid.clone(),
                    key: key.clone(),
                    placement_constraint: slot.placement.clone(),
                    resource: slot.resource.clone(),
                    state: slot.state,
                }),
                Kind::Task { domain } => tasks.push(Task {
                    task_guid: guid.clone(),
                    domain: domain.clone(),
                    placement_constraint: slot.placement.clone(),
                    resource: slot.resource.clone(),
                    state: slot.state,
                    failed: slot.failed,
                }),
            }
        }
        lrps.sort_by(|a, b| a.instance_guid.cmp(&b.instance_guid));
        tasks.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
        let c = &self.config;
        CellState {
            rep_url: self.url.clone(),
            cell_id: c.cell_id.clone(),
            cell_index: c.cell_index,
            zone: c.zone.clone(),
            rootfs_providers: self.rootfs_providers(),
            available_resources: Self::available(&slots, self.total()),
            total_resources: self.total(),
            lrps,
            tasks,
            starting_container_count: starting,
            evacuating: self.is_evacuating(),
            volume_drivers: Vec::new(),
            placement_tags: c.placement_tags.clone(),
            optional_placement_tags: c.optional_placement_tags.clone(),
            proxy_memory_allocation_mb: 0,
        }
    }

    /// Sets the cell's capacity gauges (at scrape time: they are read from the ledger).
    fn publish_capacity(&self) {
        use diego_telemetry::names;
        let (total, left, containers) = {
            let slots = self.slots();
            let total = self.total();
            (total, Self::available(&slots, total), slots.len())
        };
        let cell = self.config.cell_id.clone();
        let gauge = |name: &'static str, value: i32| {
            metrics::gauge!(name, "cell_id" => cell.clone()).set(f64::from(value));
        };
        gauge(names::CAPACITY_TOTAL_MEMORY, total.memory_mb);
        gauge(names::CAPACITY_TOTAL_DISK, total.disk_mb);
        gauge(names::CAPACITY_TOTAL_CONTAINERS, total.containers);
        gauge(names::CAPACITY_REMAINING_MEMORY, left.memory_mb);
        gauge(names::CAPACITY_REMAINING_DISK, left.disk_mb);
        gauge(names::CAPACITY_REMAINING_CONTAINERS, left.containers);
        gauge(
            names::CONTAINER_COUNT,
            i32::try_from(containers).unwrap_or(i32::MAX),
        );
    }

    /// Diego's Perform: reserves what fits, starts it, and answers what it refused.
    pub fn perform(self: &Arc<Self>, work: Work) -> Work {
        let mut refused = Work {
            cell_id: work.cell_id.clone(),
            ..Work::default()
        };
        let for_us = work.cell_id.is_empty() || work.cell_id == self.config.cell_id;
        if !for_us || self.is_evacuating() || self.done.is_cancelled() {
            tracing::info!(
                for_cell = %work.cell_id,
                evacuating = self.is_evacuating(),
                "refusing all work"
            );
            refused.lrps = work.lrps;
            refused.tasks = work.tasks;
            return refused;
        }
        let mut started_lrps = Vec::new();
        let mut started_tasks = Vec::new();
        {
            let mut slots = self.slots();
            for mut lrp in work.lrps {
                if lrp.instance_guid.is_empty() {
                    lrp.instance_guid = uuid::Uuid::new_v4().to_string();
                }
                let rootfs_ok = self
                    .rootfs_spec(&lrp.placement_constraint.root_fs)
                    .is_some();
                let duplicate = slots.contains_key(&lrp.instance_guid)
                    || slots
                        .values()
                        .any(|s| matches!(&s.kind, Kind::Lrp(k) if *k == lrp.key));
                if !rootfs_ok || duplicate || !fits(&slots, self.total(), &lrp.resource) {
                    refused.lrps.push(lrp);
                    continue;
                }
                slots.insert(
                    lrp.instance_guid.clone(),
                    Slot::new(
                        Kind::Lrp(lrp.key.clone()),
                        lrp.resource.clone(),
                        lrp.placement_constraint.clone(),
                    ),
                );
                started_lrps.push((lrp.instance_guid, lrp.key));
            }
            for task in work.tasks {
                let rootfs_ok = self
                    .rootfs_spec(&task.placement_constraint.root_fs)
                    .is_some();
                if task.task_guid.is_empty()
                    || !rootfs_ok
                    || slots.contains_key(&task.task_guid)
                    || !fits(&slots, self.total(), &task.resource)
                {
                    refused.tasks.push(task);
                    continue;
                }
                slots.insert(
                    task.task_guid.clone(),
                    Slot::new(
                        Kind::Task {
                            domain: task.domain.clone(),
                        },
                        task.resource.clone(),
                        task.placement_constraint.clone(),
                    ),
                );
                started_tasks.push(task.task_guid);
            }
        }
        // Each run keeps the id of the request that placed it: its claim, start and logs carry it.
        for (guid, key) in started_lrps {
            tokio::spawn(diego_telemetry::propagate(crate::lrp::run(
                self.clone(),
                guid,
                key,
            )));
        }
        for guid in started_tasks {
            tokio::spawn(diego_telemetry::propagate(crate::task::run(
                self.clone(),
                guid,
            )));
        }
        refused
    }
}

impl Slot {
    fn new(kind: Kind, resource: Resource, placement: PlacementConstraint) -> Slot {
        Slot {
            kind,
            resource,
            placement,
            state: ContainerState::Reserved,
            claimed: false,
            net_info: None,
            evacuated: false,
            failed: false,
            log_guid: String::new(),
            stop: CancellationToken::new(),
            stop_reason: None,
            session: None,
            containerless: false,
        }
    }
}

fn fits(slots: &HashMap<String, Slot>, total: Resources, need: &Resource) -> bool {
    let left = Inner::available(slots, total);
    left.containers >= 1 && left.memory_mb >= need.memory_mb && left.disk_mb >= need.disk_mb
}

/// Keeps the presence alive every third of its TTL until the rep is done, then releases it
/// and, once the API has stopped too, marks the rep finished.
async fn presence_loop(inner: Arc<Inner>, server: tokio::task::JoinHandle<()>) {
    let every = (inner.config.presence_ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = inner.done.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = inner.register().await {
            tracing::warn!(error = %e, "renewing the cell presence failed");
        }
    }
    let id = &inner.config.cell_id;
    match inner.bbs.release_lock(id, id, LockType::Presence).await {
        Ok(()) => tracing::info!(cell_id = %id, "presence released"),
        Err(e) => tracing::warn!(error = %e, "releasing the cell presence failed"),
    }
    if let Err(e) = server.await {
        tracing::error!(error = %e, "rep API task failed");
    }
    inner.finished.cancel();
}
