//! Domains, cells and locks: records that live on store leases.

use std::time::Duration;

use diego_model::requests::*;
use diego_model::{BbsError, CellPresence, ErrorType};
use diego_store::lock::{self, LockError};
use diego_store::{Op, Txn};

use crate::db::{read_error, write_error};
use crate::{Bbs, BbsResult, keys};

fn lock_error(e: LockError) -> BbsError {
    match e {
        LockError::Collision { key, owner } => BbsError::new(
            ErrorType::LockCollision,
            format!(
                "{} is held by {owner:?}",
                key.rsplit('/').next().unwrap_or(&key)
            ),
        ),
        LockError::NotFound(key) => BbsError::not_found(format!(
            "lock {:?} not found",
            key.rsplit('/').next().unwrap_or(&key)
        )),
        LockError::Corrupt { key } => {
            BbsError::new(ErrorType::Deserialize, format!("lock {key} is corrupt"))
        }
        LockError::Store(e) => write_error(e),
    }
}

fn store_key(resource: &LockResource) -> String {
    match resource.lock_type {
        LockType::Lock => keys::lock(&resource.key),
        LockType::Presence => keys::presence(&resource.key),
    }
}

impl Bbs {
    /// Marks a domain fresh for `ttl` seconds (0: until upserted again with a TTL).
    pub async fn upsert_domain(&self, req: &UpsertDomainRequest) -> BbsResult<()> {
        req.validate()?;
        let key = keys::domain(&req.domain);
        let op = if req.ttl == 0 {
            Op::put(&key, Vec::new())
        } else {
            let lease = self
                .store()
                .grant_lease(Duration::from_secs(u64::from(req.ttl)))
                .await
                .map_err(write_error)?;
            Op::put_with_lease(&key, Vec::new(), lease)
        };
        self.db.commit(Txn::new().then(op)).await?;
        Ok(())
    }

    pub async fn domains(&self) -> BbsResult<Vec<String>> {
        let listing = self.store().list(keys::DOMAINS).await.map_err(read_error)?;
        Ok(listing
            .kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(keys::DOMAINS).map(str::to_string))
            .collect())
    }

    /// Cells whose presence is alive.
    pub async fn cells(&self) -> BbsResult<Vec<CellPresence>> {
        let presences = lock::list(self.store().as_ref(), keys::PRESENCES)
            .await
            .map_err(lock_error)?;
        Ok(presences
            .iter()
            .filter_map(|p| match serde_json::from_slice::<CellPresence>(&p.value) {
                Ok(cell) => Some(cell),
                Err(e) => {
                    tracing::warn!(key = %p.key, error = %e, "presence is not a cell");
                    None
                }
            })
            .collect())
    }

    pub async fn cell(&self, cell_id: &str) -> BbsResult<Option<CellPresence>> {
        if cell_id.is_empty() {
            return Ok(None);
        }
        match lock::fetch(self.store().as_ref(), &keys::presence(cell_id)).await {
            Ok(p) => Ok(serde_json::from_slice(&p.value).ok()),
            Err(LockError::NotFound(_)) => Ok(None),
            Err(e) => Err(lock_error(e)),
        }
    }

    /// Takes or renews a lock or a presence (Locket's `Lock`). A presence's value must be the
    /// cell's [`CellPresence`] JSON, and its key the cell id.
    pub async fn lock(&self, req: &LockRequest) -> BbsResult<()> {
        req.validate()?;
        let resource = &req.resource;
        if resource.lock_type == LockType::Presence {
            let cell: CellPresence = serde_json::from_str(&resource.value).map_err(|e| {
                BbsError::invalid_request(format!(
                    "a presence's value must be a cell presence: {e}"
                ))
            })?;
            cell.validate()?;
            if cell.cell_id != resource.key {
                return Err(BbsError::invalid_request(format!(
                    "presence key {:?} differs from its cell_id {:?}",
                    resource.key, cell.cell_id
                )));
            }
        }
        let ttl = Duration::from_secs(u64::try_from(req.ttl_in_seconds).unwrap_or(1));
        lock::acquire(
            self.store().as_ref(),
            &store_key(resource),
            &resource.owner,
            resource.value.as_bytes(),
            ttl,
        )
        .await
        .map_err(lock_error)?;
        Ok(())
    }

    pub async fn release_lock(&self, req: &ReleaseLockRequest) -> BbsResult<()> {
        let mut p = diego_model::validate::Problems::new();
        req.resource.validate_into(&mut p);
        p.into_request_result()?;
        lock::release(
            self.store().as_ref(),
            &store_key(&req.resource),
            &req.resource.owner,
        )
        .await
        .map_err(lock_error)
    }

    pub async fn fetch_lock(&self, key: &str, lock_type: LockType) -> BbsResult<LockResource> {
        let resource = LockResource {
            key: key.to_string(),
            lock_type,
            ..LockResource::default()
        };
        let mut p = diego_model::validate::Problems::new();
        p.name("key", key);
        p.into_request_result()?;
        let held = lock::fetch(self.store().as_ref(), &store_key(&resource))
            .await
            .map_err(lock_error)?;
        Ok(LockResource {
            owner: held.owner,
            value: String::from_utf8_lossy(&held.value).into_owned(),
            ..resource
        })
    }

    pub async fn fetch_all_locks(
        &self,
        lock_type: Option<LockType>,
    ) -> BbsResult<Vec<LockResource>> {
        let mut out = Vec::new();
        for (prefix, kind) in [
            (keys::LOCKS, LockType::Lock),
            (keys::PRESENCES, LockType::Presence),
        ] {
            if lock_type.is_some_and(|t| t != kind) {
                continue;
            }
            for held in lock::list(self.store().as_ref(), prefix)
                .await
                .map_err(lock_error)?
            {
                out.push(LockResource {
                    key: held
                        .key
                        .strip_prefix(prefix)
                        .unwrap_or(&held.key)
                        .to_string(),
                    owner: held.owner,
                    value: String::from_utf8_lossy(&held.value).into_owned(),
                    lock_type: kind,
                });
            }
        }
        Ok(out)
    }

    pub async fn store_health(&self) -> BbsResult<StoreHealthResponse> {
        let health = self.store().health().await.map_err(read_error)?;
        Ok(StoreHealthResponse {
            backend: health.backend.clone(),
            degraded: health.degraded(),
            members: health
                .members
                .into_iter()
                .map(|m| StoreMember {
                    name: m.name,
                    endpoint: m.endpoint,
                    healthy: m.healthy,
                    leader: m.leader,
                    error: m.error,
                })
                .collect(),
        })
    }
}
