//! DesiredLRPs and the ActualLRP lifecycle calls (claim, start, crash, fail, remove, retire).

use std::collections::BTreeSet;

use diego_model::actual_lrp::truncate_reason;
use diego_model::requests::*;
use diego_model::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpState, BbsError, DesiredLrp,
    DesiredLrpSchedulingInfo, ErrorType, ModificationTag, Presence,
};
use diego_store::{Compare, Op, Txn};

use crate::db::{Versioned, encode, with_retries};
use crate::{Bbs, BbsResult, keys, new_guid, now};

/// The most store operations put in one transaction (etcd refuses more than 128 by default).
pub(crate) const OPS_PER_TXN: i32 = 100;

impl Bbs {
    // ---- desired LRPs ----

    pub async fn desired_lrps(&self, req: &DesiredLrpsRequest) -> BbsResult<Vec<DesiredLrp>> {
        decode_all(keys::DESIRED, self.desired_lrps_json(req).await?)
    }

    /// Like [`Bbs::desired_lrps`], as the stored JSON of each record.
    pub async fn desired_lrps_json(&self, req: &DesiredLrpsRequest) -> BbsResult<Vec<Vec<u8>>> {
        #[derive(serde::Deserialize)]
        struct View {
            #[serde(default)]
            process_guid: String,
            #[serde(default)]
            domain: String,
        }
        let mut p = diego_model::validate::Problems::new();
        p.records(
            "process_guids",
            req.process_guids.len(),
            self.config.max_records_per_request,
        );
        p.into_request_result()?;
        let wanted: BTreeSet<&str> = req.process_guids.iter().map(String::as_str).collect();
        let records = self.db.list_json(keys::DESIRED).await?;
        if req.domain.is_empty() && wanted.is_empty() {
            return Ok(records);
        }
        filter_json(records, keys::DESIRED, |v: &View| {
            (req.domain.is_empty() || v.domain == req.domain)
                && (wanted.is_empty() || wanted.contains(v.process_guid.as_str()))
        })
    }

    pub async fn desired_lrp(&self, process_guid: &str) -> BbsResult<Versioned<DesiredLrp>> {
        self.db
            .read(&keys::desired(process_guid))
            .await?
            .ok_or_else(|| BbsError::not_found(format!("desired LRP {process_guid:?} not found")))
    }

    pub async fn scheduling_infos(
        &self,
        req: &DesiredLrpsRequest,
    ) -> BbsResult<Vec<DesiredLrpSchedulingInfo>> {
        Ok(self
            .desired_lrps(req)
            .await?
            .iter()
            .map(DesiredLrp::scheduling_info)
            .collect())
    }

    /// Refuses an instance count above the configured limit, naming it.
    pub(crate) fn check_instances(&self, instances: i32) -> BbsResult<()> {
        let max = self.config.max_instances_per_lrp;
        if instances > max {
            return Err(BbsError::invalid_request(format!(
                "instances is {instances}, more than the limit of {max} instances per LRP (the BBS's --max-instances-per-lrp)"
            )));
        }
        Ok(())
    }

    /// Stores a new DesiredLRP and creates its UNCLAIMED instances. The record and its first
    /// instances go in one transaction, so a small desire is one commit; the rest follow in
    /// bounded batches guarded by the record's revision (see `bulk`). A desire cut short leaves
    /// the record, whose missing instances convergence creates.
    pub async fn desire_lrp(&self, mut lrp: DesiredLrp) -> BbsResult<()> {
        lrp.validate()?;
        self.check_instances(lrp.instances)?;
        lrp.modification_tag = ModificationTag::new(new_guid());
        let key = keys::desired(&lrp.process_guid);
        let desired = Txn::new()
            .when(Compare::absent(&key))
            .then(Op::put(&key, encode(&lrp)?));
        let first = 0..lrp.instances.min(OPS_PER_TXN - 1);
        let exists =
            || BbsError::exists(format!("desired LRP {:?} already exists", lrp.process_guid));
        let with_first = self.with_unclaimed(desired.clone(), &lrp, first.clone())?;
        let (revision, rest) = match self.db.commit_at(with_first).await? {
            Some(revision) => {
                self.external
                    .request_lrp_auctions(&lrp, first.clone().collect());
                (revision, first.end..lrp.instances)
            }
            // Either the LRP exists, or an instance row is left from an earlier LRP of this
            // guid (being retired): store the record alone and create what is missing.
            None => match self.db.commit_at(desired).await? {
                Some(revision) => (revision, 0..lrp.instances),
                None => return Err(exists()),
            },
        };
        self.create_instances(&lrp, revision, rest).await?;
        tracing::info!(process_guid = %lrp.process_guid, instances = lrp.instances, "desired LRP created");
        Ok(())
    }

    /// Adds "create UNCLAIMED instance i if absent" for each index to `txn`.
    pub(crate) fn with_unclaimed(
        &self,
        mut txn: Txn,
        lrp: &DesiredLrp,
        indices: impl IntoIterator<Item = i32>,
    ) -> BbsResult<Txn> {
        for index in indices {
            let key = keys::actual(&lrp.process_guid, index, Presence::Ordinary);
            let actual = ActualLrp::unclaimed(
                &ActualLrpKey::new(&lrp.process_guid, index, &lrp.domain),
                new_guid(),
                now(),
            );
            txn = txn
                .when(Compare::absent(&key))
                .then(Op::put(&key, encode(&actual)?));
        }
        Ok(txn)
    }

    pub async fn update_desired_lrp(&self, req: UpdateDesiredLrpRequest) -> BbsResult<()> {
        req.validate()?;
        if let Some(instances) = req.update.instances {
            self.check_instances(instances)?;
        }
        let (before, after, revision) = with_retries("update desired LRP", || async {
            let current = self.desired_lrp(&req.process_guid).await?;
            if let Some(expected) = &req.expected_modification_tag
                && *expected != current.record.modification_tag
            {
                return Err(BbsError::conflict(format!(
                    "desired LRP {:?} is at modification tag {:?}, not {:?}",
                    req.process_guid, current.record.modification_tag, expected
                )));
            }
            let mut updated = current.record.clone();
            if !updated.apply(&req.update) {
                return Ok(Some((current.record.clone(), updated, current.revision)));
            }
            updated.modification_tag.increment();
            let key = keys::desired(&req.process_guid);
            let txn = Txn::new()
                .when(Compare::unchanged(&key, current.revision))
                .then(Op::put(&key, encode(&updated)?));
            Ok(self
                .db
                .commit_at(txn)
                .await?
                .map(|revision| (current.record.clone(), updated, revision)))
        })
        .await?;
        if after.instances > before.instances {
            self.create_instances(&after, revision, before.instances..after.instances)
                .await?;
        } else if req.update.instances.is_some() {
            // Also when the count did not change: a scale-down cut short is finished by
            // repeating it.
            self.retire_instances(&after.process_guid, after.instances)
                .await?;
        }
        Ok(())
    }

    /// Removes a DesiredLRP and retires all its instances, leaving none behind even when cut
    /// short. A small LRP goes in one transaction (the record and its idle instances). A large
    /// one is first set to zero instances — so creators and convergence stop making instances —
    /// then its instances are retired in batches, and only then is the record deleted: until
    /// that moment a repeated removal finds the record and finishes the job.
    pub async fn remove_desired_lrp(&self, process_guid: &str) -> BbsResult<()> {
        const ROUNDS: usize = 4;
        for _ in 0..ROUNDS {
            let Some(current) = self
                .db
                .read::<DesiredLrp>(&keys::desired(process_guid))
                .await?
            else {
                // Nothing desired: instances left by an older BBS's interrupted removal would
                // be orphans that convergence retires only in fresh domains. Retire them here.
                let retired = self.retire_instances(process_guid, 0).await?;
                let mut message = format!("desired LRP {process_guid:?} not found");
                if retired.deleted + retired.stopping > 0 {
                    message.push_str(&format!(
                        " (retired {} instance(s) left without it)",
                        retired.deleted + retired.stopping
                    ));
                }
                return Err(BbsError::not_found(message));
            };
            if let Some(done) = self.remove_small(&current).await? {
                if done {
                    tracing::info!(%process_guid, "desired LRP removed");
                    return Ok(());
                }
                continue;
            }
            let key = keys::desired(process_guid);
            let at_zero = if current.record.instances == 0 {
                current.revision
            } else {
                let mut zero = current.record.clone();
                zero.instances = 0;
                zero.modification_tag.increment();
                let txn = Txn::new()
                    .when(Compare::unchanged(&key, current.revision))
                    .then(Op::put(&key, encode(&zero)?));
                match self.db.commit_at(txn).await? {
                    Some(revision) => revision,
                    None => continue,
                }
            };
            self.retire_instances(process_guid, 0).await?;
            let txn = Txn::new()
                .when(Compare::unchanged(&key, at_zero))
                .then(Op::delete(&key));
            if self.db.commit(txn).await? {
                tracing::info!(%process_guid, "desired LRP removed");
                return Ok(());
            }
        }
        Err(BbsError::conflict(format!(
            "remove desired LRP {process_guid:?}: the record kept changing under {ROUNDS} attempts; try again"
        )))
    }

    /// Removes a DesiredLRP with few instance rows in one transaction with its idle rows, then
    /// has the reps stop its running instances. `None` when it has too many rows for that;
    /// `Some(false)` when something changed meanwhile (the caller retries).
    async fn remove_small(&self, current: &Versioned<DesiredLrp>) -> BbsResult<Option<bool>> {
        let process_guid = current.record.process_guid.as_str();
        // Rows beyond the instance count (extra, suspect, evacuating) are few: a large LRP is
        // known to be large without listing it.
        if current.record.instances >= OPS_PER_TXN / 2 {
            return Ok(None);
        }
        let rows: Vec<Versioned<ActualLrp>> = self.db.list(&keys::actuals_of(process_guid)).await?;
        if rows.len() >= OPS_PER_TXN as usize {
            return Ok(None);
        }
        let key = keys::desired(process_guid);
        let mut txn = Txn::new()
            .when(Compare::unchanged(&key, current.revision))
            .then(Op::delete(&key));
        let mut running = Vec::new();
        for row in &rows {
            let lrp = &row.record;
            let runs_on_live_cell =
                matches!(lrp.state, ActualLrpState::Claimed | ActualLrpState::Running)
                    && self.cell(&lrp.cell_id).await?.is_some();
            if runs_on_live_cell && lrp.presence == Presence::Ordinary {
                running.push(lrp.key());
            } else if !runs_on_live_cell {
                let row_key = keys::actual(&lrp.process_guid, lrp.index, lrp.presence);
                txn = txn
                    .when(Compare::unchanged(&row_key, row.revision))
                    .then(Op::delete(row_key));
            }
        }
        if !self.db.commit(txn).await? {
            return Ok(Some(false));
        }
        for key in running {
            if let Err(e) = self.retire_actual_lrp(&key).await {
                tracing::warn!(%process_guid, index = key.index, error = %e, "cannot retire instance; the converger will");
            }
        }
        Ok(Some(true))
    }

    // ---- actual LRPs ----

    pub async fn actual_lrps(&self, req: &ActualLrpsRequest) -> BbsResult<Vec<ActualLrp>> {
        decode_all(keys::ACTUAL, self.actual_lrps_json(req).await?)
    }

    /// Like [`Bbs::actual_lrps`], as the stored JSON of each record.
    pub async fn actual_lrps_json(&self, req: &ActualLrpsRequest) -> BbsResult<Vec<Vec<u8>>> {
        #[derive(serde::Deserialize)]
        struct View {
            #[serde(default)]
            domain: String,
            #[serde(default)]
            cell_id: String,
            #[serde(default)]
            index: i32,
        }
        let prefix = if req.process_guid.is_empty() {
            keys::ACTUAL.to_string()
        } else {
            keys::actuals_of(&req.process_guid)
        };
        let records = self.db.list_json(&prefix).await?;
        if req.domain.is_empty() && req.cell_id.is_empty() && req.index.is_none() {
            return Ok(records);
        }
        filter_json(records, &prefix, |v: &View| {
            (req.domain.is_empty() || v.domain == req.domain)
                && (req.cell_id.is_empty() || v.cell_id == req.cell_id)
                && req.index.is_none_or(|i| v.index == i)
        })
    }

    pub async fn actual_lrps_by_process_guids(
        &self,
        guids: &[String],
    ) -> BbsResult<Vec<ActualLrp>> {
        let mut out = Vec::new();
        for guid in guids {
            let found: Vec<Versioned<ActualLrp>> = self.db.list(&keys::actuals_of(guid)).await?;
            out.extend(found.into_iter().map(|v| v.record));
        }
        Ok(out)
    }

    pub(crate) async fn read_actual(
        &self,
        process_guid: &str,
        index: i32,
        presence: Presence,
    ) -> BbsResult<Option<Versioned<ActualLrp>>> {
        self.db
            .read(&keys::actual(process_guid, index, presence))
            .await
    }

    async fn ordinary(&self, process_guid: &str, index: i32) -> BbsResult<Versioned<ActualLrp>> {
        self.read_actual(process_guid, index, Presence::Ordinary)
            .await?
            .ok_or_else(|| {
                BbsError::not_found(format!(
                    "actual LRP {process_guid:?} index {index} not found"
                ))
            })
    }

    /// Writes `after` over the row read as `before`, only if nobody changed it meanwhile.
    pub(crate) async fn replace_actual(
        &self,
        before: &Versioned<ActualLrp>,
        after: &ActualLrp,
    ) -> BbsResult<bool> {
        let key = keys::actual(&after.process_guid, after.index, after.presence);
        let txn = Txn::new()
            .when(Compare::unchanged(&key, before.revision))
            .then(Op::put(&key, encode(after)?));
        self.db.commit(txn).await
    }

    pub(crate) async fn delete_actual(&self, row: &Versioned<ActualLrp>) -> BbsResult<bool> {
        let key = keys::actual(
            &row.record.process_guid,
            row.record.index,
            row.record.presence,
        );
        self.db
            .commit(
                Txn::new()
                    .when(Compare::unchanged(&key, row.revision))
                    .then(Op::delete(&key)),
            )
            .await
    }

    /// The rep claims an instance before it creates the container.
    pub async fn claim_actual_lrp(&self, req: &ClaimActualLrpRequest) -> BbsResult<()> {
        req.validate()?;
        with_retries("claim actual LRP", || async {
            let row = self.ordinary(&req.process_guid, req.index).await?;
            let lrp = &row.record;
            let instance = &req.actual_lrp_instance_key;
            if !lrp.allows_transition_to(&lrp.key(), instance, ActualLrpState::Claimed) {
                return Err(BbsError::new(
                    ErrorType::ActualLrpCannotBeClaimed,
                    format!(
                        "actual LRP {:?} index {} is {:?} on {:?}",
                        lrp.process_guid, lrp.index, lrp.state, lrp.instance_guid
                    ),
                ));
            }
            if lrp.state == ActualLrpState::Claimed && lrp.instance_key() == *instance {
                return Ok(Some(()));
            }
            let mut after = lrp.clone();
            after.state = ActualLrpState::Claimed;
            after.set_instance_key(instance);
            after.placement_error.clear();
            after.since = now();
            after.modification_tag.increment();
            Ok(self.replace_actual(&row, &after).await?.then_some(()))
        })
        .await
    }

    /// The rep reports an instance running. Creates the row if it is missing, as Diego does.
    pub async fn start_actual_lrp(&self, req: &StartActualLrpRequest) -> BbsResult<()> {
        req.validate()?;
        let key = &req.actual_lrp_key;
        with_retries("start actual LRP", || async {
            let existing = self
                .read_actual(&key.process_guid, key.index, Presence::Ordinary)
                .await?;
            let mut after = match &existing {
                None => ActualLrp::unclaimed(key, new_guid(), now()),
                Some(row) => {
                    let lrp = &row.record;
                    if !lrp.allows_transition_to(
                        key,
                        &req.actual_lrp_instance_key,
                        ActualLrpState::Running,
                    ) {
                        return Err(BbsError::new(
                            ErrorType::ActualLrpCannotBeStarted,
                            format!(
                                "actual LRP {:?} index {} is {:?} on {:?}",
                                lrp.process_guid, lrp.index, lrp.state, lrp.instance_guid
                            ),
                        ));
                    }
                    lrp.clone()
                }
            };
            let before = after.clone();
            after.state = ActualLrpState::Running;
            after.set_instance_key(&req.actual_lrp_instance_key);
            after.set_net_info(&req.actual_lrp_net_info);
            after.actual_lrp_internal_routes = req.actual_lrp_internal_routes.clone();
            after.metric_tags = req.metric_tags.clone();
            after.routable = req.routable.or(Some(true));
            after.availability_zone = req.availability_zone.clone();
            after.placement_error.clear();
            if existing.is_some() && after == before {
                return Ok(Some(()));
            }
            if before.state != ActualLrpState::Running {
                after.since = now();
            }
            after.modification_tag.increment();
            let ordinary_key = keys::actual(&key.process_guid, key.index, Presence::Ordinary);
            let mut txn = Txn::new();
            txn = match &existing {
                None => txn.when(Compare::absent(&ordinary_key)),
                Some(row) => txn.when(Compare::unchanged(&ordinary_key, row.revision)),
            };
            txn = txn.then(Op::put(&ordinary_key, encode(&after)?));
            // A replacement now runs: the suspect copy on the lost cell is no longer needed.
            if let Some(suspect) = self
                .read_actual(&key.process_guid, key.index, Presence::Suspect)
                .await?
                && suspect.record.instance_key() != req.actual_lrp_instance_key
            {
                let suspect_key = keys::actual(&key.process_guid, key.index, Presence::Suspect);
                txn = txn
                    .when(Compare::unchanged(&suspect_key, suspect.revision))
                    .then(Op::delete(suspect_key));
            }
            Ok(self.db.commit(txn).await?.then_some(()))
        })
        .await
    }

    /// The rep reports a crash: count it, and restart at once for the first crashes (UNCLAIMED
    /// plus an auction) or leave it CRASHED for the converger's backoff.
    pub async fn crash_actual_lrp(&self, req: &CrashActualLrpRequest) -> BbsResult<()> {
        req.validate()?;
        let key = &req.actual_lrp_key;
        let instance = &req.actual_lrp_instance_key;
        let restarted = with_retries("crash actual LRP", || async {
            // A crash of the suspect copy on a lost cell just removes it.
            if let Some(suspect) = self
                .read_actual(&key.process_guid, key.index, Presence::Suspect)
                .await?
                && suspect.record.instance_key() == *instance
            {
                return Ok(self.delete_actual(&suspect).await?.then_some(false));
            }
            let row = self.ordinary(&key.process_guid, key.index).await?;
            let Some(after) = self.crashed(&row.record, key, instance, &req.error_message) else {
                return Err(BbsError::new(
                    ErrorType::ActualLrpCannotBeCrashed,
                    format!(
                        "actual LRP {:?} index {} is {:?} on {:?}",
                        key.process_guid, key.index, row.record.state, row.record.instance_guid
                    ),
                ));
            };
            let restart = after.state == ActualLrpState::Unclaimed;
            Ok(self.replace_actual(&row, &after).await?.then_some(restart))
        })
        .await?;
        if restarted {
            self.request_auction_for(key).await;
        }
        Ok(())
    }

    /// The record after a crash, or `None` if this instance cannot crash from its state.
    pub(crate) fn crashed(
        &self,
        lrp: &ActualLrp,
        key: &ActualLrpKey,
        instance: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Option<ActualLrp> {
        if !lrp.allows_transition_to(key, instance, ActualLrpState::Crashed) {
            return None;
        }
        let policy = &self.config.restart_policy;
        let now = now();
        let mut after = lrp.clone();
        after.crash_count = policy.next_crash_count(
            lrp.crash_count,
            lrp.state == ActualLrpState::Running,
            lrp.since,
            now,
        );
        after.crash_reason = truncate_reason(reason);
        after.clear_placement();
        after.routable = None;
        after.since = now;
        after.state = if policy.should_restart_immediately(after.crash_count) {
            ActualLrpState::Unclaimed
        } else {
            ActualLrpState::Crashed
        };
        after.modification_tag.increment();
        Some(after)
    }

    /// Asks for an auction of one instance of a desired LRP (if it still exists).
    pub(crate) async fn request_auction_for(&self, key: &ActualLrpKey) {
        match self.desired_lrp(&key.process_guid).await {
            Ok(desired) => self
                .external
                .request_lrp_auctions(&desired.record, vec![key.index]),
            Err(e) => {
                tracing::debug!(process_guid = %key.process_guid, error = %e, "no auction: desired LRP not readable")
            }
        }
    }

    /// The auctioneer could not place an instance: record why.
    pub async fn fail_actual_lrp(&self, req: &FailActualLrpRequest) -> BbsResult<()> {
        req.validate()?;
        let key = &req.actual_lrp_key;
        with_retries("fail actual LRP", || async {
            let row = self.ordinary(&key.process_guid, key.index).await?;
            if row.record.state != ActualLrpState::Unclaimed || row.record.key() != *key {
                return Err(BbsError::new(
                    ErrorType::ActualLrpCannotBeFailed,
                    format!(
                        "actual LRP {:?} index {} is {:?}, not UNCLAIMED",
                        key.process_guid, key.index, row.record.state
                    ),
                ));
            }
            let mut after = row.record.clone();
            after.placement_error = req.error_message.clone();
            after.modification_tag.increment();
            Ok(self.replace_actual(&row, &after).await?.then_some(()))
        })
        .await
    }

    pub async fn remove_actual_lrp(&self, req: &RemoveActualLrpRequest) -> BbsResult<()> {
        req.validate()?;
        with_retries("remove actual LRP", || async {
            let row = self.ordinary(&req.process_guid, req.index).await?;
            if let Some(instance) = &req.actual_lrp_instance_key
                && row.record.instance_key() != *instance
            {
                return Err(BbsError::new(
                    ErrorType::ActualLrpCannotBeRemoved,
                    format!(
                        "actual LRP {:?} index {} is not instance {:?}",
                        req.process_guid, req.index, instance.instance_guid
                    ),
                ));
            }
            Ok(self.delete_actual(&row).await?.then_some(()))
        })
        .await
    }

    /// Stops an instance for good: UNCLAIMED and CRASHED rows are removed; a CLAIMED or RUNNING
    /// instance is stopped by its rep (which then removes the row), or removed at once when its
    /// cell is gone.
    pub async fn retire_actual_lrp(&self, key: &ActualLrpKey) -> BbsResult<()> {
        with_retries("retire actual LRP", || async {
            let row = self.ordinary(&key.process_guid, key.index).await?;
            let lrp = &row.record;
            let cell = match lrp.state {
                ActualLrpState::Unclaimed | ActualLrpState::Crashed => None,
                ActualLrpState::Claimed | ActualLrpState::Running => {
                    self.cell(&lrp.cell_id).await?
                }
            };
            let Some(cell) = cell else {
                // Nothing runs it (or its cell is gone): remove the row, unless it changed.
                return Ok(self.delete_actual(&row).await?.then_some(()));
            };
            // Its rep stops the container and then removes the row itself. The rep call has its
            // own retries; a rep that stays unreachable is reported, not retried forever.
            self.external
                .stop_lrp_instance(&cell, key, &lrp.instance_guid)
                .await
                .map_err(|e| {
                    BbsError::new(
                        ErrorType::UnknownError,
                        format!(
                            "cannot retire {:?} index {}: its rep did not answer: {e}",
                            key.process_guid, key.index
                        ),
                    )
                })?;
            Ok(Some(()))
        })
        .await
    }
}

/// Keeps the stored records whose `View` (the few fields a filter reads) passes `keep`.
pub(crate) fn filter_json<V: serde::de::DeserializeOwned>(
    records: Vec<Vec<u8>>,
    prefix: &str,
    keep: impl Fn(&V) -> bool,
) -> BbsResult<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let view: V = crate::db::decode(prefix, &record)?;
        if keep(&view) {
            out.push(record);
        }
    }
    Ok(out)
}

/// Decodes stored records (found under `prefix`, for the error message).
pub(crate) fn decode_all<T: serde::de::DeserializeOwned>(
    prefix: &str,
    records: Vec<Vec<u8>>,
) -> BbsResult<Vec<T>> {
    records
        .iter()
        .map(|r| crate::db::decode(prefix, r))
        .collect()
}
