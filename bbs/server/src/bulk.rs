//! Large writes in bounded batches: the instances of one DesiredLRP are created or retired a
//! transaction of at most [`OPS_PER_TXN`] rows at a time, [`IN_FLIGHT`] transactions at once
//! (the embedded store commits concurrent transactions in one group, one fsync; etcd pipelines
//! them). So one request's memory is bounded by its batch, and its time by the instance limit.
//!
//! Batches that create instances are guarded by the DesiredLRP's revision: once the record
//! changes (scaled, or set to zero instances by a removal) the creator stops, so a removal racing
//! a large desire never leaves instances behind. Work cut short (shutdown, an error) leaves a
//! state that is finished later: missing instances of a DesiredLRP are created by convergence,
//! and a large removal keeps its DesiredLRP (at zero instances) until every instance is retired,
//! so a repeated removal finishes it.

use std::collections::HashMap;
use std::ops::Range;

use diego_model::{
    ActualLrpKey, ActualLrpState, BbsError, CellPresence, DesiredLrp, ErrorType, Presence,
};
use diego_store::{Compare, Op, Revision, Txn};
use futures::StreamExt;
use serde::Deserialize;

use crate::db::read_error;
use crate::lrps::OPS_PER_TXN;
use crate::{Bbs, BbsResult, keys};

/// Batches of one request in flight at once.
const IN_FLIGHT: usize = 8;
/// Rep calls (stop an instance) of one request in flight at once.
const REP_CALLS_IN_FLIGHT: usize = 16;

/// What a retirement reads of an instance row.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InstanceView {
    process_guid: String,
    index: i32,
    domain: String,
    cell_id: String,
    instance_guid: String,
    state: ActualLrpState,
    presence: Presence,
}

impl InstanceView {
    fn key(&self) -> ActualLrpKey {
        ActualLrpKey::new(&self.process_guid, self.index, &self.domain)
    }
}

/// A row that nothing runs, to delete if it is unchanged.
#[derive(Debug)]
struct Deletable {
    key: String,
    revision: Revision,
    view: InstanceView,
}

/// What [`Bbs::retire_instances`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retired {
    /// Rows deleted (nothing ran them).
    pub deleted: usize,
    /// Running instances whose rep was told to stop them (it removes the row).
    pub stopping: usize,
}

/// The error a large request answers when the BBS stops under it.
fn stopping(what: &str) -> BbsError {
    BbsError::new(
        ErrorType::Unavailable,
        format!(
            "the BBS is stopping: {what}; what is written is kept, and the converger (or the same request, repeated) finishes the rest"
        ),
    )
}

impl Bbs {
    /// Whether the DesiredLRP of `process_guid` is still at `revision`.
    async fn desired_at(&self, process_guid: &str, revision: Revision) -> BbsResult<bool> {
        let current = self
            .store()
            .get(&keys::desired(process_guid))
            .await
            .map_err(read_error)?;
        Ok(current.is_some_and(|kv| kv.mod_revision == revision))
    }

    /// Creates UNCLAIMED instances for `indices` (absent ones only) while the DesiredLRP is
    /// still at `revision`, and asks for their auction. Stops early, without error, when the
    /// record changed: whoever changed it owns the instance count now. Answers how many
    /// instances were created.
    pub(crate) async fn create_instances(
        &self,
        lrp: &DesiredLrp,
        revision: Revision,
        indices: Range<i32>,
    ) -> BbsResult<usize> {
        // One compare guards the record, so a batch holds one instance fewer.
        let size = OPS_PER_TXN - 1;
        let end = indices.end;
        let chunks = indices
            .step_by(size as usize)
            .map(move |start| start..start.saturating_add(size).min(end));
        let mut batches = futures::stream::iter(chunks)
            .map(|chunk| self.create_chunk(lrp, revision, chunk))
            .buffered(IN_FLIGHT);
        let mut created = Vec::new();
        let outcome = loop {
            if self.shutdown.is_cancelled() {
                break Err(stopping(&format!(
                    "{} of {} instances of {:?} were created",
                    created.len(),
                    lrp.instances,
                    lrp.process_guid
                )));
            }
            match batches.next().await {
                None => break Ok(()),
                Some(Ok((indices, superseded))) => {
                    created.extend(indices);
                    if superseded {
                        tracing::debug!(process_guid = %lrp.process_guid, "desired LRP changed while its instances were created; stopping");
                        break Ok(());
                    }
                }
                Some(Err(e)) => break Err(e),
            }
        };
        // Batches still in flight may commit; convergence auctions what they created.
        drop(batches);
        let count = created.len();
        self.external.request_lrp_auctions(lrp, created);
        outcome.map(|()| count)
    }

    /// One batch of [`Bbs::create_instances`]: the indices created, and whether the DesiredLRP
    /// changed (the caller then stops).
    async fn create_chunk(
        &self,
        lrp: &DesiredLrp,
        revision: Revision,
        chunk: Range<i32>,
    ) -> BbsResult<(Vec<i32>, bool)> {
        let desired_key = keys::desired(&lrp.process_guid);
        let guarded = || Txn::new().when(Compare::unchanged(&desired_key, revision));
        let all: Vec<i32> = chunk.collect();
        if self
            .db
            .commit(self.with_unclaimed(guarded(), lrp, all.iter().copied())?)
            .await?
        {
            return Ok((all, false));
        }
        // The record changed, or some rows exist (a racing creator, or rows of an earlier LRP
        // of this guid still being retired): create only the absent ones.
        if !self.desired_at(&lrp.process_guid, revision).await? {
            return Ok((Vec::new(), true));
        }
        let mut absent = Vec::with_capacity(all.len());
        for index in all {
            let key = keys::actual(&lrp.process_guid, index, Presence::Ordinary);
            if self.store().get(&key).await.map_err(read_error)?.is_none() {
                absent.push(index);
            }
        }
        if absent.is_empty()
            || self
                .db
                .commit(self.with_unclaimed(guarded(), lrp, absent.iter().copied())?)
                .await?
        {
            return Ok((absent, false));
        }
        // Still racing: one at a time.
        let mut created = Vec::new();
        for index in absent {
            if self
                .db
                .commit(self.with_unclaimed(guarded(), lrp, [index])?)
                .await?
            {
                created.push(index);
            } else if !self.desired_at(&lrp.process_guid, revision).await? {
                return Ok((created, true));
            }
        }
        Ok((created, false))
    }

    /// Retires every instance row of `process_guid` at `from_index` or above. Rows nothing
    /// runs (UNCLAIMED, CRASHED, or on a cell whose presence is gone) and suspect copies are
    /// deleted in batches; instances CLAIMED or RUNNING on a live cell are stopped by their
    /// rep, which then removes the row (as Diego retires them). Evacuating copies on a live
    /// cell are left to the rep evacuating them.
    pub(crate) async fn retire_instances(
        &self,
        process_guid: &str,
        from_index: i32,
    ) -> BbsResult<Retired> {
        let cells: HashMap<String, CellPresence> = self
            .cells()
            .await?
            .into_iter()
            .map(|c| (c.cell_id.clone(), c))
            .collect();
        let mut retired = Retired::default();
        // A tenth of the rows at a time: the memory of a retirement is that of one listing.
        for shard in keys::actuals_of_shards(process_guid) {
            let done = self
                .retire_shard(process_guid, &shard, from_index, &cells)
                .await?;
            retired.deleted += done.deleted;
            retired.stopping += done.stopping;
        }
        if retired != Retired::default() {
            tracing::info!(%process_guid, from_index, deleted = retired.deleted, stopping = retired.stopping, "instances retired");
        }
        Ok(retired)
    }

    /// [`Bbs::retire_instances`] for the rows under one shard prefix.
    async fn retire_shard(
        &self,
        process_guid: &str,
        shard: &str,
        from_index: i32,
        cells: &HashMap<String, CellPresence>,
    ) -> BbsResult<Retired> {
        let listing = self.store().list(shard).await.map_err(read_error)?;
        if listing.kvs.is_empty() {
            return Ok(Retired::default());
        }
        let mut deletable = Vec::new();
        let mut running = Vec::new();
        // Consumed as it goes: each row's JSON is freed once its view is taken.
        for kv in listing.kvs {
            let view: InstanceView = match crate::db::decode(&kv.key, &kv.value) {
                Ok(view) => view,
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "cannot read an instance row; deleting it with its LRP's instances");
                    InstanceView {
                        index: i32::MAX,
                        ..Default::default()
                    }
                }
            };
            if view.index < from_index {
                continue;
            }
            let runs_on = match view.state {
                ActualLrpState::Claimed | ActualLrpState::Running => cells.get(&view.cell_id),
                ActualLrpState::Unclaimed | ActualLrpState::Crashed => None,
            };
            match (view.presence, runs_on) {
                (Presence::Ordinary, Some(cell)) => running.push((view, cell.clone())),
                (Presence::Evacuating, Some(_)) => {}
                _ => deletable.push(Deletable {
                    key: kv.key,
                    revision: kv.mod_revision,
                    view,
                }),
            }
        }
        let mut retired = Retired::default();
        let total = deletable.len();
        let mut rows = deletable.into_iter();
        let mut batches = futures::stream::iter(std::iter::from_fn(|| {
            let batch: Vec<Deletable> = rows.by_ref().take(OPS_PER_TXN as usize).collect();
            (!batch.is_empty()).then_some(batch)
        }))
        .map(|batch| self.delete_batch(batch))
        .buffer_unordered(IN_FLIGHT);
        while let Some(deleted) = batches.next().await {
            retired.deleted += deleted?;
            if self.shutdown.is_cancelled() {
                return Err(stopping(&format!(
                    "{} of {total} instances of {process_guid:?} were retired",
                    retired.deleted
                )));
            }
        }
        drop(batches);
        let stops = futures::stream::iter(running)
            .map(|(view, cell)| async move {
                let key = view.key();
                let result = self
                    .external
                    .stop_lrp_instance(&cell, &key, &view.instance_guid)
                    .await;
                if let Err(e) = &result {
                    tracing::warn!(process_guid = %key.process_guid, index = key.index, cell_id = %cell.cell_id, error = %e, "cannot tell the rep to stop an instance; the converger retries");
                }
                result.is_ok()
            })
            .buffer_unordered(REP_CALLS_IN_FLIGHT);
        retired.stopping = stops.filter(|ok| std::future::ready(*ok)).count().await;
        Ok(retired)
    }

    /// Deletes rows that were unchanged since listed, in one transaction; when some changed
    /// (claimed meanwhile, say), retires them one by one through the usual path.
    async fn delete_batch(&self, batch: Vec<Deletable>) -> BbsResult<usize> {
        let mut txn = Txn::new();
        for row in &batch {
            txn = txn
                .when(Compare::unchanged(&row.key, row.revision))
                .then(Op::delete(&row.key));
        }
        if self.db.commit(txn).await? {
            return Ok(batch.len());
        }
        let mut deleted = 0;
        for row in batch {
            let outcome = if row.view.presence == Presence::Ordinary {
                self.retire_actual_lrp(&row.view.key()).await
            } else {
                self.delete_current(&row.key).await
            };
            match outcome {
                Ok(()) => deleted += 1,
                Err(e) if e.kind == ErrorType::ResourceNotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Deletes `key` as it is now (a suspect or evacuating copy whose cell is gone).
    async fn delete_current(&self, key: &str) -> BbsResult<()> {
        crate::db::with_retries("delete instance copy", || async {
            let Some(kv) = self.store().get(key).await.map_err(read_error)? else {
                return Ok(Some(()));
            };
            let txn = Txn::new()
                .when(Compare::unchanged(key, kv.mod_revision))
                .then(Op::delete(key));
            Ok(self.db.commit(txn).await?.then_some(()))
        })
        .await
    }
}
