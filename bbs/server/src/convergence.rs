//! Convergence: Diego's ConvergeLRPs and ConvergeTasks (`db/sqldb/lrp_convergence.go`,
//! `controllers/lrp_convergence_controller.go`, `db/sqldb/task_convergence.go`).
//!
//! One pass reads each family once (cells, domains, desired LRPs, actual LRPs, tasks) into
//! compact views, plans the repairs, then applies them a bounded number at a time. Every repair
//! is a compare-and-swap on the revision the pass listed: a row that changed since (a rep or
//! another BBS got there first) is left for the next pass rather than judged on stale data.
//! Auctions are requested at the end, batched: one post carries many start requests.
//!
//! Passes are driven from outside (`POST /v1/converge`, by the brain holding its lock), so the
//! BBS itself runs no timer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use diego_model::requests::{ConvergeResponse, LrpCounts};
use diego_model::{
    ActualLrp, ActualLrpKey, ActualLrpState, BbsError, ErrorType, LrpStartRequest,
    PlacementConstraint, Presence, Resource, TaskStartRequest, TaskState, Timestamp,
};
use diego_store::{Compare, Op, Revision, Txn};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::db::{Versioned, encode, read_error};
use crate::evacuation::unclaimed;
use crate::tasks::completed;
use crate::{Bbs, BbsResult, keys, new_guid, now};

/// How long convergence waits before acting on stale records. `Default` gives Diego's
/// defaults (`jobs/bbs/spec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvergenceConfig {
    /// An UNCLAIMED instance whose `since` is older than this is auctioned again (Diego's
    /// `StaleUnclaimedActualLRPDuration`).
    pub stale_unclaimed: Duration,
    /// A PENDING task not updated for this long is auctioned again; a RESOLVING one is put back
    /// to COMPLETED; a COMPLETED one with a callback has its callback retried.
    pub kick_task: Duration,
    /// A PENDING task created this long ago fails ("not started within time limit").
    pub expire_pending_task: Duration,
    /// A COMPLETED task completed this long ago is deleted.
    pub expire_completed_task: Duration,
}

impl Default for ConvergenceConfig {
    fn default() -> Self {
        Self {
            stale_unclaimed: Duration::from_secs(30),
            kick_task: Duration::from_secs(30),
            expire_pending_task: Duration::from_secs(30 * 60),
            expire_completed_task: Duration::from_secs(120),
        }
    }
}

/// Repairs applied at once.
const REPAIR_CONCURRENCY: usize = 32;
/// The most missing instances one pass creates (an LRP desired with absurd instance counts must
/// not make a pass endless; the next pass goes on).
const MAX_CREATES_PER_PASS: usize = 100_000;
/// Rows created per transaction (etcd refuses more than 128 operations by default).
const CREATES_PER_TXN: usize = 100;
/// How long the pass waits for one retirement (a rep call with retries) before leaving it to
/// finish in the background.
const RETIRE_WAIT: Duration = Duration::from_secs(2);

pub(crate) const EXPIRED_PENDING_REASON: &str = "not started within time limit";
pub(crate) const CELL_DISAPPEARED_REASON: &str = "cell disappeared before completion";

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `at` is more than `d` before `now`.
fn older_than(at: Timestamp, d: Duration, now: Timestamp) -> bool {
    at < now.saturating_sub(ns(d))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MountView {
    driver: String,
}

/// What convergence reads of a desired LRP: its instance count and what an auction needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DesiredView {
    process_guid: String,
    domain: String,
    instances: i32,
    rootfs: String,
    memory_mb: i32,
    disk_mb: i32,
    max_pids: i32,
    placement_tags: Vec<String>,
    volume_mounts: Vec<MountView>,
}

impl DesiredView {
    fn start_request(&self, indices: Vec<i32>) -> LrpStartRequest {
        LrpStartRequest {
            process_guid: self.process_guid.clone(),
            domain: self.domain.clone(),
            indices,
            resource: Resource {
                memory_mb: self.memory_mb,
                disk_mb: self.disk_mb,
                max_pids: self.max_pids,
            },
            placement_constraint: PlacementConstraint {
                placement_tags: self.placement_tags.clone(),
                volume_drivers: self
                    .volume_mounts
                    .iter()
                    .map(|m| m.driver.clone())
                    .collect(),
                root_fs: self.rootfs.clone(),
            },
        }
    }
}

/// What convergence reads of an actual LRP.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActualView {
    process_guid: String,
    index: i32,
    domain: String,
    cell_id: String,
    state: ActualLrpState,
    presence: Presence,
    since: Timestamp,
    crash_count: i32,
}

/// What convergence reads of a task (the definition is flattened into the record).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TaskView {
    task_guid: String,
    domain: String,
    state: TaskState,
    cell_id: String,
    created_at: Timestamp,
    updated_at: Timestamp,
    first_completed_at: Timestamp,
    completion_callback_url: String,
    rootfs: String,
    memory_mb: i32,
    disk_mb: i32,
    max_pids: i32,
    placement_tags: Vec<String>,
    volume_mounts: Vec<MountView>,
}

impl TaskView {
    fn start_request(&self) -> TaskStartRequest {
        TaskStartRequest {
            task_guid: self.task_guid.clone(),
            domain: self.domain.clone(),
            resource: Resource {
                memory_mb: self.memory_mb,
                disk_mb: self.disk_mb,
                max_pids: self.max_pids,
            },
            placement_constraint: PlacementConstraint {
                placement_tags: self.placement_tags.clone(),
                volume_drivers: self
                    .volume_mounts
                    .iter()
                    .map(|m| m.driver.clone())
                    .collect(),
                root_fs: self.rootfs.clone(),
            },
        }
    }
}

/// A listed record's view and the revision it was listed at.
#[derive(Debug)]
struct Listed<V> {
    view: V,
    revision: Revision,
}

/// The rows of one instance index.
#[derive(Debug, Default)]
struct Slots<'a> {
    ordinary: Option<&'a Listed<ActualView>>,
    suspect: Option<&'a Listed<ActualView>>,
    evacuating: Option<&'a Listed<ActualView>>,
}

/// One repair of an LRP instance.
#[derive(Debug)]
enum LrpRepair<'a> {
    /// An EVACUATING copy on a lost cell: delete it.
    DeleteEvacuating(&'a Listed<ActualView>),
    /// An extra or orphaned instance: retire it.
    Retire(&'a Listed<ActualView>),
    /// An orphaned or extra suspect, or one whose replacement runs: delete it.
    RemoveSuspect(&'a Listed<ActualView>),
    /// A suspect whose cell came back: make it ORDINARY again, dropping its replacement.
    PromoteSuspect(&'a Listed<ActualView>),
    /// RUNNING on a lost cell: keep it as SUSPECT, create a replacement, auction it.
    Suspect(&'a Listed<ActualView>),
    /// Back to UNCLAIMED and auctioned (claimed on a lost cell, crashed past its backoff).
    Unclaim(&'a Listed<ActualView>),
    /// Auction again without a write (stale UNCLAIMED).
    Auction(&'a Listed<ActualView>),
    /// Create the missing instances and auction them.
    Create {
        desired: &'a DesiredView,
        indices: Vec<i32>,
    },
}

/// What a repair did.
#[derive(Debug, Default)]
struct LrpEffect<'a> {
    process_guid: &'a str,
    auction: Vec<i32>,
    created: u32,
    retired: u32,
    suspected: u32,
}

#[derive(Debug)]
enum TaskRepair<'a> {
    Fail(&'a Listed<TaskView>, &'static str),
    Delete(&'a Listed<TaskView>),
    Demote(&'a Listed<TaskView>),
    Callback(&'a Listed<TaskView>),
}

#[derive(Debug, Default)]
struct TaskEffect {
    pruned: u32,
    callbacks: u32,
}

impl Bbs {
    /// One convergence pass over LRPs and tasks (Diego's ConvergeLRPs and ConvergeTasks).
    /// Fails only when the records cannot be read; a repair that fails is logged and left to the
    /// next pass.
    pub async fn converge(self: &Arc<Self>) -> BbsResult<ConvergeResponse> {
        let started = std::time::Instant::now();
        let cells: HashSet<String> = self.cells().await?.into_iter().map(|c| c.cell_id).collect();
        let mut response = ConvergeResponse::default();
        let mut missing_cells = BTreeSet::new();
        self.converge_lrps(&cells, &mut response, &mut missing_cells)
            .await?;
        self.converge_tasks(&cells, &mut response, &mut missing_cells)
            .await?;
        response.missing_cells = missing_cells.into_iter().collect();
        // A pass that repaired nothing is routine: keep it out of the info log.
        let level_info = response.repairs() != ConvergeResponse::default();
        macro_rules! report {
            ($level:ident) => {
                tracing::$level!(
                    elapsed_ms = started.elapsed().as_millis(),
                    lrps_auctioned = response.lrps_auctioned,
                    lrps_created = response.lrps_created,
                    lrps_retired = response.lrps_retired,
                    lrps_suspected = response.lrps_suspected,
                    tasks_kicked = response.tasks_kicked,
                    tasks_pruned = response.tasks_pruned,
                    callbacks_retried = response.callbacks_retried,
                    missing_cells = ?response.missing_cells,
                    "convergence pass done"
                )
            };
        }
        if level_info {
            report!(info);
        } else {
            report!(debug);
        }
        Ok(response)
    }

    /// Lists the records under `prefix` as views, consuming the listing as it goes so the raw
    /// records and the views are not both held in full. A record that does not decode is
    /// logged and skipped: one bad record must not stop every repair.
    async fn list_views<V: DeserializeOwned>(&self, prefix: &str) -> BbsResult<Vec<Listed<V>>> {
        let listing = self.store().list(prefix).await.map_err(read_error)?;
        let mut views = Vec::with_capacity(listing.kvs.len());
        for kv in listing.kvs {
            match crate::db::decode::<V>(&kv.key, &kv.value) {
                Ok(view) => views.push(Listed {
                    view,
                    revision: kv.mod_revision,
                }),
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "convergence skips a record"),
            }
        }
        Ok(views)
    }

    async fn converge_lrps(
        self: &Arc<Self>,
        cells: &HashSet<String>,
        response: &mut ConvergeResponse,
        missing_cells: &mut BTreeSet<String>,
    ) -> BbsResult<()> {
        let now = now();
        let fresh: HashSet<String> = self.domains().await?.into_iter().collect();
        let desired: HashMap<String, DesiredView> = self
            .list_views::<DesiredView>(keys::DESIRED)
            .await?
            .into_iter()
            .map(|d| (d.view.process_guid.clone(), d.view))
            .collect();
        let actuals = self.list_views::<ActualView>(keys::ACTUAL).await?;
        let lost = |cell_id: &str| !cell_id.is_empty() && !cells.contains(cell_id);
        let policy = &self.config.restart_policy;
        let stale_unclaimed = self.config.convergence.stale_unclaimed;

        let mut repairs = Vec::new();
        let mut create_budget = MAX_CREATES_PER_PASS;
        let mut seen: HashSet<&str> = HashSet::new();
        let counts = &mut response.lrps;
        for d in desired.values() {
            counts.desired += count(d.instances.max(0));
        }
        // The listing is in key order, so one process guid's rows are contiguous.
        for group in actuals.chunk_by(|a, b| a.view.process_guid == b.view.process_guid) {
            let guid = group[0].view.process_guid.as_str();
            seen.insert(guid);
            let mut by_index: BTreeMap<i32, Slots> = BTreeMap::new();
            for row in group {
                let slots = by_index.entry(row.view.index).or_default();
                match row.view.presence {
                    Presence::Ordinary => slots.ordinary = Some(row),
                    Presence::Suspect => slots.suspect = Some(row),
                    Presence::Evacuating => slots.evacuating = Some(row),
                }
            }
            let desired = desired.get(guid);
            count_group(counts, desired, &by_index);
            // Indices whose suspect becomes ORDINARY again this pass: not missing.
            let mut promoted = HashSet::new();
            for (&index, slots) in &by_index {
                if let Some(evacuating) = slots.evacuating
                    && lost(&evacuating.view.cell_id)
                {
                    missing_cells.insert(evacuating.view.cell_id.clone());
                    repairs.push(LrpRepair::DeleteEvacuating(evacuating));
                }
                let Some(desired) = desired else {
                    // Orphaned: retired, as Diego does, only while its domain is fresh.
                    if let Some(suspect) = slots.suspect
                        && fresh.contains(&suspect.view.domain)
                    {
                        repairs.push(LrpRepair::RemoveSuspect(suspect));
                    }
                    if let Some(ordinary) = slots.ordinary
                        && fresh.contains(&ordinary.view.domain)
                    {
                        repairs.push(LrpRepair::Retire(ordinary));
                    }
                    continue;
                };
                let extra = index >= desired.instances;
                let domain_fresh = fresh.contains(&desired.domain);
                let mut suspect_kept = None;
                if let Some(suspect) = slots.suspect {
                    if extra {
                        if domain_fresh {
                            repairs.push(LrpRepair::RemoveSuspect(suspect));
                        }
                    } else if !lost(&suspect.view.cell_id) {
                        // Its cell is back: it is the instance again; the replacement goes.
                        repairs.push(LrpRepair::PromoteSuspect(suspect));
                        promoted.insert(index);
                        continue;
                    } else if slots.ordinary.is_some_and(|o| {
                        o.view.state == ActualLrpState::Running && !lost(&o.view.cell_id)
                    }) {
                        // Its replacement runs (on a live cell): the suspect is not needed.
                        repairs.push(LrpRepair::RemoveSuspect(suspect));
                    } else {
                        suspect_kept = Some(suspect);
                    }
                }
                let Some(ordinary) = slots.ordinary else {
                    continue; // missing: created below
                };
                if extra {
                    if domain_fresh {
                        repairs.push(LrpRepair::Retire(ordinary));
                    }
                    continue;
                }
                let view = &ordinary.view;
                match view.state {
                    ActualLrpState::Unclaimed => {
                        if older_than(view.since, stale_unclaimed, now) {
                            repairs.push(LrpRepair::Auction(ordinary));
                        }
                    }
                    ActualLrpState::Claimed => {
                        if lost(&view.cell_id) {
                            missing_cells.insert(view.cell_id.clone());
                            repairs.push(LrpRepair::Unclaim(ordinary));
                        }
                    }
                    ActualLrpState::Running => {
                        if lost(&view.cell_id) {
                            missing_cells.insert(view.cell_id.clone());
                            // A suspect already stands for this index (this is its replacement,
                            // lost too): just place it again.
                            repairs.push(if suspect_kept.is_some() {
                                LrpRepair::Unclaim(ordinary)
                            } else {
                                LrpRepair::Suspect(ordinary)
                            });
                        }
                    }
                    ActualLrpState::Crashed => {
                        if policy.should_restart(now, view.since, view.crash_count) {
                            repairs.push(LrpRepair::Unclaim(ordinary));
                        }
                    }
                }
            }
            if let Some(desired) = desired {
                let present = |index| {
                    promoted.contains(&index)
                        || by_index.get(&index).is_some_and(|s| s.ordinary.is_some())
                };
                counts.missing += count(
                    (0..desired.instances.max(0))
                        .filter(|&i| !present(i))
                        .count(),
                );
                let indices = missing_indices(desired.instances, present, &mut create_budget);
                if !indices.is_empty() {
                    repairs.push(LrpRepair::Create { desired, indices });
                }
            }
        }
        for (guid, desired) in &desired {
            if !seen.contains(guid.as_str()) {
                counts.missing += count(desired.instances.max(0));
                let indices = missing_indices(desired.instances, |_| false, &mut create_budget);
                if !indices.is_empty() {
                    repairs.push(LrpRepair::Create { desired, indices });
                }
            }
        }
        if create_budget == 0 {
            tracing::warn!(
                "convergence created {MAX_CREATES_PER_PASS} instances this pass; the rest wait for the next"
            );
        }

        let mut effects = Vec::new();
        let mut running = FuturesUnordered::new();
        for repair in repairs {
            if running.len() >= REPAIR_CONCURRENCY
                && let Some(effect) = running.next().await
            {
                effects.push(effect);
            }
            running.push(self.repair_lrp(repair, cells));
        }
        while let Some(effect) = running.next().await {
            effects.push(effect);
        }
        let mut auctions: HashMap<&str, Vec<i32>> = HashMap::new();
        for effect in effects {
            response.lrps_created += effect.created;
            response.lrps_retired += effect.retired;
            response.lrps_suspected += effect.suspected;
            if !effect.auction.is_empty() {
                auctions
                    .entry(effect.process_guid)
                    .or_default()
                    .extend(effect.auction);
            }
        }
        let mut requests = Vec::with_capacity(auctions.len());
        for (guid, mut indices) in auctions {
            let Some(desired) = desired.get(guid) else {
                continue;
            };
            indices.sort_unstable();
            indices.dedup();
            response.lrps_auctioned += u32::try_from(indices.len()).unwrap_or(u32::MAX);
            requests.push(desired.start_request(indices));
        }
        self.external.post_lrp_auctions(requests).await;
        Ok(())
    }

    async fn repair_lrp<'a>(
        self: &Arc<Self>,
        repair: LrpRepair<'a>,
        cells: &HashSet<String>,
    ) -> LrpEffect<'a> {
        let (guid, what) = match &repair {
            LrpRepair::Create { desired, .. } => (desired.process_guid.as_str(), "create missing"),
            LrpRepair::DeleteEvacuating(r) => (r.view.process_guid.as_str(), "delete evacuating"),
            LrpRepair::Retire(r) => (r.view.process_guid.as_str(), "retire"),
            LrpRepair::RemoveSuspect(r) => (r.view.process_guid.as_str(), "remove suspect"),
            LrpRepair::PromoteSuspect(r) => (r.view.process_guid.as_str(), "promote suspect"),
            LrpRepair::Suspect(r) => (r.view.process_guid.as_str(), "suspect"),
            LrpRepair::Unclaim(r) => (r.view.process_guid.as_str(), "unclaim"),
            LrpRepair::Auction(r) => (r.view.process_guid.as_str(), "auction"),
        };
        let mut effect = LrpEffect {
            process_guid: guid,
            ..LrpEffect::default()
        };
        let outcome: BbsResult<()> = async {
            match repair {
                LrpRepair::Auction(row) => effect.auction.push(row.view.index),
                LrpRepair::DeleteEvacuating(row) => {
                    self.delete_listed(row).await?;
                }
                LrpRepair::RemoveSuspect(row) => {
                    if self.delete_listed(row).await? {
                        effect.retired += 1;
                    }
                }
                LrpRepair::Retire(row) => {
                    if self.retire_in_pass(row).await? {
                        effect.retired += 1;
                    }
                }
                LrpRepair::Unclaim(row) => {
                    if let Some(current) = self.fetch_listed(row).await?
                        && self
                            .replace_actual(&current, &unclaimed(&current.record))
                            .await?
                    {
                        effect.auction.push(row.view.index);
                    }
                }
                LrpRepair::Suspect(row) => {
                    if self.suspect(row).await? {
                        effect.suspected += 1;
                        effect.auction.push(row.view.index);
                    }
                }
                LrpRepair::PromoteSuspect(row) => {
                    if self.promote_suspect(row, cells).await? {
                        effect.retired += 1;
                    }
                }
                LrpRepair::Create { desired, indices } => {
                    let created = self.create_missing(desired, &indices).await?;
                    effect.created = u32::try_from(created.len()).unwrap_or(u32::MAX);
                    effect.auction = created;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(process_guid = %guid, repair = what, error = %e, "convergence repair failed; the next pass retries");
        }
        effect
    }

    /// The row as stored now, if it is still what the pass listed.
    async fn fetch_listed(
        &self,
        row: &Listed<ActualView>,
    ) -> BbsResult<Option<Versioned<ActualLrp>>> {
        let v = &row.view;
        Ok(self
            .read_actual(&v.process_guid, v.index, v.presence)
            .await?
            .filter(|current| current.revision == row.revision))
    }

    async fn delete_listed(&self, row: &Listed<ActualView>) -> BbsResult<bool> {
        match self.fetch_listed(row).await? {
            Some(current) => self.delete_actual(&current).await,
            None => Ok(false),
        }
    }

    /// Retires through the usual path; a retirement that has to wait on a slow rep finishes in
    /// the background so that one rep cannot hold up the pass.
    async fn retire_in_pass(self: &Arc<Self>, row: &Listed<ActualView>) -> BbsResult<bool> {
        let key = ActualLrpKey::new(&row.view.process_guid, row.view.index, &row.view.domain);
        let bbs = self.clone();
        let mut retiring = tokio::spawn(async move {
            tokio::select! {
                _ = bbs.shutdown.cancelled() => Ok(()),
                result = bbs.retire_actual_lrp(&key) => result,
            }
        });
        match tokio::time::timeout(RETIRE_WAIT, &mut retiring).await {
            Ok(Ok(Ok(()))) => Ok(true),
            Ok(Ok(Err(e))) if e.kind == ErrorType::ResourceNotFound => Ok(false),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(join)) => Err(BbsError::new(
                ErrorType::UnknownError,
                format!("retirement stopped: {join}"),
            )),
            Err(_) => Ok(true), // still waiting on the rep; it goes on without us
        }
    }

    /// A RUNNING instance on a lost cell becomes SUSPECT (it may still run, unreachable) and an
    /// UNCLAIMED replacement takes its ORDINARY place, in one transaction.
    async fn suspect(&self, row: &Listed<ActualView>) -> BbsResult<bool> {
        let Some(current) = self.fetch_listed(row).await? else {
            return Ok(false);
        };
        let lrp = &current.record;
        let mut suspect = lrp.clone();
        suspect.presence = Presence::Suspect;
        suspect.modification_tag.increment();
        let replacement = ActualLrp::unclaimed(&lrp.key(), new_guid(), now());
        let ordinary_key = keys::actual(&lrp.process_guid, lrp.index, Presence::Ordinary);
        let suspect_key = keys::actual(&lrp.process_guid, lrp.index, Presence::Suspect);
        let txn = Txn::new()
            .when(Compare::unchanged(&ordinary_key, current.revision))
            .when(Compare::absent(&suspect_key))
            .then(Op::put(&suspect_key, encode(&suspect)?))
            .then(Op::put(&ordinary_key, encode(&replacement)?));
        let done = self.db.commit(txn).await?;
        if done {
            tracing::info!(process_guid = %lrp.process_guid, index = lrp.index, cell_id = %lrp.cell_id, "instance on a lost cell is suspect; placing a replacement");
        }
        Ok(done)
    }

    /// A suspect whose cell is back becomes the ORDINARY instance again; its replacement's row
    /// goes, and a replacement already placed on a cell is told to stop.
    async fn promote_suspect(
        &self,
        row: &Listed<ActualView>,
        cells: &HashSet<String>,
    ) -> BbsResult<bool> {
        let Some(suspect) = self.fetch_listed(row).await? else {
            return Ok(false);
        };
        let lrp = &suspect.record;
        let ordinary = self
            .read_actual(&lrp.process_guid, lrp.index, Presence::Ordinary)
            .await?;
        let mut promoted = lrp.clone();
        promoted.presence = Presence::Ordinary;
        promoted.modification_tag.increment();
        let ordinary_key = keys::actual(&lrp.process_guid, lrp.index, Presence::Ordinary);
        let suspect_key = keys::actual(&lrp.process_guid, lrp.index, Presence::Suspect);
        let mut txn = Txn::new().when(Compare::unchanged(&suspect_key, suspect.revision));
        txn = match &ordinary {
            Some(o) => txn.when(Compare::unchanged(&ordinary_key, o.revision)),
            None => txn.when(Compare::absent(&ordinary_key)),
        };
        txn = txn
            .then(Op::delete(&suspect_key))
            .then(Op::put(&ordinary_key, encode(&promoted)?));
        if !self.db.commit(txn).await? {
            return Ok(false);
        }
        tracing::info!(process_guid = %lrp.process_guid, index = lrp.index, cell_id = %lrp.cell_id, "suspect instance's cell is back; it is ordinary again");
        if let Some(replacement) = ordinary
            && matches!(
                replacement.record.state,
                ActualLrpState::Claimed | ActualLrpState::Running
            )
            && cells.contains(&replacement.record.cell_id)
            && replacement.record.instance_guid != lrp.instance_guid
            && let Some(cell) = self.cell(&replacement.record.cell_id).await?
        {
            let external = self.external.clone();
            let key = replacement.record.key();
            let instance_guid = replacement.record.instance_guid.clone();
            tokio::spawn(async move {
                if let Err(e) = external
                    .stop_lrp_instance(&cell, &key, &instance_guid)
                    .await
                {
                    tracing::warn!(process_guid = %key.process_guid, index = key.index, error = %e, "cannot stop the replacement of a promoted suspect; its rep will find no record for it");
                }
            });
        }
        Ok(true)
    }

    /// Creates UNCLAIMED rows for `indices` (absent ones only), a transaction per chunk; a chunk
    /// where some row appeared meanwhile is redone row by row. Answers the indices created.
    async fn create_missing(&self, desired: &DesiredView, indices: &[i32]) -> BbsResult<Vec<i32>> {
        let mut created = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(CREATES_PER_TXN) {
            if self.db.commit(unclaimed_rows(desired, chunk)?).await? {
                created.extend_from_slice(chunk);
                continue;
            }
            for &index in chunk {
                if self.db.commit(unclaimed_rows(desired, &[index])?).await? {
                    created.push(index);
                }
            }
        }
        if !created.is_empty() {
            tracing::info!(process_guid = %desired.process_guid, count = created.len(), "created missing instances");
        }
        Ok(created)
    }

    async fn converge_tasks(
        self: &Arc<Self>,
        cells: &HashSet<String>,
        response: &mut ConvergeResponse,
        missing_cells: &mut BTreeSet<String>,
    ) -> BbsResult<()> {
        let now = now();
        let c = self.config.convergence;
        let tasks = self.list_views::<TaskView>(keys::TASKS).await?;
        let mut repairs = Vec::new();
        let mut kicks = Vec::new();
        for task in &tasks {
            let t = &task.view;
            match t.state {
                TaskState::Pending => {
                    if older_than(t.created_at, c.expire_pending_task, now) {
                        repairs.push(TaskRepair::Fail(task, EXPIRED_PENDING_REASON));
                    } else if older_than(t.updated_at, c.kick_task, now) {
                        kicks.push(t.start_request());
                    }
                }
                TaskState::Running => {
                    if t.cell_id.is_empty() || !cells.contains(&t.cell_id) {
                        if !t.cell_id.is_empty() {
                            missing_cells.insert(t.cell_id.clone());
                        }
                        repairs.push(TaskRepair::Fail(task, CELL_DISAPPEARED_REASON));
                    }
                }
                TaskState::Completed => {
                    if older_than(t.first_completed_at, c.expire_completed_task, now) {
                        repairs.push(TaskRepair::Delete(task));
                    } else if !t.completion_callback_url.is_empty()
                        && older_than(t.updated_at, c.kick_task, now)
                    {
                        repairs.push(TaskRepair::Callback(task));
                    }
                }
                TaskState::Resolving => {
                    if older_than(t.updated_at, c.kick_task, now) {
                        repairs.push(TaskRepair::Demote(task));
                    }
                }
                TaskState::Invalid => {}
            }
        }
        let mut effects = Vec::new();
        let mut running = FuturesUnordered::new();
        for repair in repairs {
            if running.len() >= REPAIR_CONCURRENCY
                && let Some(effect) = running.next().await
            {
                effects.push(effect);
            }
            running.push(self.repair_task(repair));
        }
        while let Some(effect) = running.next().await {
            effects.push(effect);
        }
        for effect in effects {
            response.tasks_pruned += effect.pruned;
            response.callbacks_retried += effect.callbacks;
        }
        response.tasks_kicked = u32::try_from(kicks.len()).unwrap_or(u32::MAX);
        self.external.post_task_auctions(kicks).await;
        Ok(())
    }

    async fn repair_task(self: &Arc<Self>, repair: TaskRepair<'_>) -> TaskEffect {
        let mut effect = TaskEffect::default();
        let (listed, what) = match &repair {
            TaskRepair::Fail(t, _) => (*t, "fail"),
            TaskRepair::Delete(t) => (*t, "delete"),
            TaskRepair::Demote(t) => (*t, "demote"),
            TaskRepair::Callback(t) => (*t, "callback"),
        };
        let outcome: BbsResult<()> = async {
            let current = match self.task(&listed.view.task_guid).await {
                Ok(current) if current.revision == listed.revision => current,
                Ok(_) => return Ok(()), // changed since listed: the next pass looks again
                Err(e) if e.kind == ErrorType::ResourceNotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            match repair {
                TaskRepair::Fail(_, reason) => {
                    let after = completed(&current.record, true, reason, "");
                    if self.replace_task(&current, &after).await? {
                        tracing::info!(task_guid = %after.task_guid, reason, "task failed by convergence");
                        effect.pruned += 1;
                        self.after_completion(after);
                    }
                }
                TaskRepair::Delete(_) => {
                    let key = keys::task(&current.record.task_guid);
                    let txn = Txn::new()
                        .when(Compare::unchanged(&key, current.revision))
                        .then(Op::delete(&key));
                    if self.db.commit(txn).await? {
                        effect.pruned += 1;
                    }
                }
                TaskRepair::Demote(_) => {
                    // As Diego, only the state changes: the callback is due again at once.
                    let mut after = current.record.clone();
                    after.state = TaskState::Completed;
                    if self.replace_task(&current, &after).await?
                        && !after.task_definition.completion_callback_url.is_empty()
                    {
                        effect.callbacks += 1;
                        self.after_completion(after);
                    }
                }
                TaskRepair::Callback(_) => {
                    effect.callbacks += 1;
                    self.after_completion(current.record);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(task_guid = %listed.view.task_guid, repair = what, error = %e, "task convergence repair failed; the next pass retries");
        }
        effect
    }
}

/// The indices in `0..instances` that are not `present`, at most `budget` of them; the budget
/// goes down by what is returned.
/// A count for the response (saturating: the counts are for metrics).
fn count(n: impl TryInto<u32>) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

/// Counts one process guid's rows (Diego's convergence metrics).
fn count_group(counts: &mut LrpCounts, desired: Option<&DesiredView>, rows: &BTreeMap<i32, Slots>) {
    let mut crashing = false;
    for (&index, slots) in rows {
        if let Some(ordinary) = slots.ordinary {
            let extra = desired.is_none_or(|d| index >= d.instances);
            match ordinary.view.state {
                ActualLrpState::Unclaimed => counts.unclaimed += 1,
                ActualLrpState::Claimed => counts.claimed += 1,
                ActualLrpState::Running => counts.running += 1,
                ActualLrpState::Crashed => {
                    counts.crashed += 1;
                    crashing |= !extra;
                }
            }
            if extra {
                counts.extra += 1;
            }
        }
        if let Some(suspect) = slots.suspect {
            match suspect.view.state {
                ActualLrpState::Running => counts.suspect_running += 1,
                ActualLrpState::Claimed => counts.suspect_claimed += 1,
                _ => {}
            }
        }
    }
    if crashing {
        counts.crashing_desired += 1;
    }
}

fn missing_indices(instances: i32, present: impl Fn(i32) -> bool, budget: &mut usize) -> Vec<i32> {
    let mut missing = Vec::new();
    for index in 0..instances.max(0) {
        if missing.len() >= *budget {
            break;
        }
        if !present(index) {
            missing.push(index);
        }
    }
    *budget -= missing.len();
    missing
}

/// A transaction creating UNCLAIMED rows at `indices`, each only if absent.
fn unclaimed_rows(desired: &DesiredView, indices: &[i32]) -> BbsResult<Txn> {
    let mut txn = Txn::new();
    for &index in indices {
        let key = keys::actual(&desired.process_guid, index, Presence::Ordinary);
        let row = ActualLrp::unclaimed(
            &ActualLrpKey::new(&desired.process_guid, index, &desired.domain),
            new_guid(),
            now(),
        );
        txn = txn
            .when(Compare::absent(&key))
            .then(Op::put(&key, encode(&row)?));
    }
    Ok(txn)
}
