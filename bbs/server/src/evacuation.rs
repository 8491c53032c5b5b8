//! Evacuation: a cell that is draining hands its instances over. An instance keeps running as an
//! EVACUATING copy while its ORDINARY row is auctioned again, until the replacement runs.

use diego_model::requests::*;
use diego_model::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpState, BbsError, ErrorType, Presence,
};
use diego_store::{Compare, Op, Txn};

use crate::db::{Versioned, encode, with_retries};
use crate::{Bbs, BbsResult, keys, now};

fn evacuating_key(key: &ActualLrpKey) -> String {
    keys::actual(&key.process_guid, key.index, Presence::Evacuating)
}

fn ordinary_key(key: &ActualLrpKey) -> String {
    keys::actual(&key.process_guid, key.index, Presence::Ordinary)
}

/// Adds "delete the EVACUATING row if it is this instance" to `txn`.
fn drop_evacuating(
    txn: Txn,
    evacuating: &Option<Versioned<ActualLrp>>,
    key: &ActualLrpKey,
    instance: &ActualLrpInstanceKey,
) -> Txn {
    match evacuating {
        Some(row) if row.record.instance_key() == *instance => txn
            .when(Compare::unchanged(evacuating_key(key), row.revision))
            .then(Op::delete(evacuating_key(key))),
        _ => txn,
    }
}

pub(crate) fn unclaimed(lrp: &ActualLrp) -> ActualLrp {
    let mut after = lrp.clone();
    after.state = ActualLrpState::Unclaimed;
    after.clear_placement();
    after.routable = None;
    after.since = now();
    after.modification_tag.increment();
    after
}

impl Bbs {
    async fn rows(
        &self,
        key: &ActualLrpKey,
    ) -> BbsResult<(Option<Versioned<ActualLrp>>, Option<Versioned<ActualLrp>>)> {
        let ordinary = self
            .read_actual(&key.process_guid, key.index, Presence::Ordinary)
            .await?;
        let evacuating = self
            .read_actual(&key.process_guid, key.index, Presence::Evacuating)
            .await?;
        Ok((ordinary, evacuating))
    }

    /// A claimed (not yet running) instance on an evacuating cell: give it back to the auction.
    pub async fn evacuate_claimed(
        &self,
        req: &EvacuateActualLrpRequest,
    ) -> BbsResult<EvacuationResponse> {
        req.validate()?;
        let (key, instance) = (&req.actual_lrp_key, &req.actual_lrp_instance_key);
        let auction = with_retries("evacuate claimed", || async {
            let (ordinary, evacuating) = self.rows(key).await?;
            let mut txn = drop_evacuating(Txn::new(), &evacuating, key, instance);
            let mut auction = false;
            if let Some(row) = &ordinary
                && row.record.instance_key() == *instance
                && row.record.state == ActualLrpState::Claimed
            {
                txn = txn
                    .when(Compare::unchanged(ordinary_key(key), row.revision))
                    .then(Op::put(ordinary_key(key), encode(&unclaimed(&row.record))?));
                auction = true;
            }
            Ok(self.db.commit(txn).await?.then_some(auction))
        })
        .await?;
        if auction {
            self.request_auction_for(key).await;
        }
        Ok(EvacuationResponse {
            keep_container: false,
        })
    }

    /// A running instance on an evacuating cell: keep it as an EVACUATING copy while its
    /// replacement is placed; drop the copy once the replacement runs.
    pub async fn evacuate_running(
        &self,
        req: &EvacuateRunningActualLrpRequest,
    ) -> BbsResult<EvacuationResponse> {
        req.validate()?;
        let (key, instance) = (&req.actual_lrp_key, &req.actual_lrp_instance_key);
        let (keep, auction) = with_retries("evacuate running", || async {
            let (ordinary, evacuating) = self.rows(key).await?;
            let Some(row) = &ordinary else {
                // No instance is desired at this index any more.
                let txn = drop_evacuating(Txn::new(), &evacuating, key, instance);
                return Ok(self.db.commit(txn).await?.then_some((false, false)));
            };
            let lrp = &row.record;
            let ours = lrp.instance_key() == *instance;
            if lrp.state == ActualLrpState::Crashed || (!ours && lrp.state == ActualLrpState::Running) {
                // The replacement runs (or the instance crashed): the copy is no longer needed.
                let txn = drop_evacuating(Txn::new(), &evacuating, key, instance);
                return Ok(self.db.commit(txn).await?.then_some((false, false)));
            }
            let mut copy = lrp.clone();
            copy.presence = Presence::Evacuating;
            copy.state = ActualLrpState::Running;
            copy.set_instance_key(instance);
            copy.set_net_info(&req.actual_lrp_net_info);
            copy.actual_lrp_internal_routes = req.actual_lrp_internal_routes.clone();
            copy.metric_tags = req.metric_tags.clone();
            copy.routable = req.routable.or(Some(true));
            copy.availability_zone = req.availability_zone.clone();
            let mut txn = Txn::new();
            let mut auction = false;
            match &evacuating {
                Some(existing) if existing.record.instance_key() == *instance => {
                    copy.modification_tag = existing.record.modification_tag.clone();
                    copy.since = existing.record.since;
                    if existing.record == copy && !ours {
                        return Ok(Some((true, false)));
                    }
                    copy.modification_tag.increment();
                    txn = txn.when(Compare::unchanged(evacuating_key(key), existing.revision));
                }
                Some(other) => {
                    // Another cell's copy is already evacuating this index; keep ours running.
                    tracing::info!(process_guid = %key.process_guid, index = key.index, other = %other.record.instance_guid, "another evacuating copy exists");
                    return Ok(Some((true, false)));
                }
                None => {
                    copy.modification_tag = diego_model::ModificationTag::new(crate::new_guid());
                    copy.since = now();
                    txn = txn.when(Compare::absent(evacuating_key(key)));
                }
            }
            txn = txn.then(Op::put(evacuating_key(key), encode(&copy)?));
            if ours {
                txn = txn.when(Compare::unchanged(ordinary_key(key), row.revision)).then(Op::put(ordinary_key(key), encode(&unclaimed(lrp))?));
                auction = true;
            }
            Ok(self.db.commit(txn).await?.then_some((true, auction)))
        })
        .await?;
        if auction {
            self.request_auction_for(key).await;
        }
        Ok(EvacuationResponse {
            keep_container: keep,
        })
    }

    /// The evacuating instance stopped: remove its copy (and its ordinary row if it is still it).
    pub async fn evacuate_stopped(
        &self,
        req: &EvacuateActualLrpRequest,
    ) -> BbsResult<EvacuationResponse> {
        req.validate()?;
        let (key, instance) = (&req.actual_lrp_key, &req.actual_lrp_instance_key);
        with_retries("evacuate stopped", || async {
            let (ordinary, evacuating) = self.rows(key).await?;
            let mut txn = drop_evacuating(Txn::new(), &evacuating, key, instance);
            if let Some(row) = &ordinary
                && row.record.instance_key() == *instance
            {
                txn = txn
                    .when(Compare::unchanged(ordinary_key(key), row.revision))
                    .then(Op::delete(ordinary_key(key)));
            }
            Ok(self.db.commit(txn).await?.then_some(()))
        })
        .await?;
        Ok(EvacuationResponse {
            keep_container: false,
        })
    }

    /// The evacuating instance crashed: remove its copy; crash the ordinary row if it is it.
    pub async fn evacuate_crashed(
        &self,
        req: &EvacuateCrashedActualLrpRequest,
    ) -> BbsResult<EvacuationResponse> {
        req.validate()?;
        let (key, instance) = (&req.actual_lrp_key, &req.actual_lrp_instance_key);
        let restart = with_retries("evacuate crashed", || async {
            let (ordinary, evacuating) = self.rows(key).await?;
            let mut txn = drop_evacuating(Txn::new(), &evacuating, key, instance);
            let mut restart = false;
            if let Some(row) = &ordinary
                && let Some(after) = self.crashed(&row.record, key, instance, &req.error_message)
            {
                restart = after.state == ActualLrpState::Unclaimed;
                txn = txn
                    .when(Compare::unchanged(ordinary_key(key), row.revision))
                    .then(Op::put(ordinary_key(key), encode(&after)?));
            }
            Ok(self.db.commit(txn).await?.then_some(restart))
        })
        .await?;
        if restart {
            self.request_auction_for(key).await;
        }
        Ok(EvacuationResponse {
            keep_container: false,
        })
    }

    pub async fn remove_evacuating(&self, req: &EvacuateActualLrpRequest) -> BbsResult<()> {
        req.validate()?;
        let (key, instance) = (&req.actual_lrp_key, &req.actual_lrp_instance_key);
        with_retries("remove evacuating", || async {
            let evacuating = self
                .read_actual(&key.process_guid, key.index, Presence::Evacuating)
                .await?;
            match &evacuating {
                None => Err(BbsError::not_found(format!(
                    "no evacuating actual LRP {:?} index {}",
                    key.process_guid, key.index
                ))),
                Some(row) if row.record.instance_key() != *instance => Err(BbsError::new(
                    ErrorType::ActualLrpCannotBeRemoved,
                    format!(
                        "the evacuating copy is instance {:?}",
                        row.record.instance_guid
                    ),
                )),
                Some(_) => Ok(self
                    .db
                    .commit(drop_evacuating(Txn::new(), &evacuating, key, instance))
                    .await?
                    .then_some(())),
            }
        })
        .await
    }
}
