//! Typed reads and compare-and-swap writes of records over a [`Store`].
//!
//! Every write is a store transaction guarded by the revisions of the records it read, so two
//! BBS requests (in one process or in several over one etcd) racing on a record never lose an
//! update: the loser's compare fails, it re-reads, re-checks the state machine and tries again.

use std::future::Future;
use std::sync::Arc;

use diego_model::{BbsError, ErrorType};
use diego_store::{Op, Revision, Store, StoreError, Txn, TxnOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How many times a request re-reads and retries after losing a race before it reports a
/// conflict to its caller.
const MAX_ATTEMPTS: usize = 16;

/// A record with the store revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub record: T,
    pub revision: Revision,
}

#[derive(Debug, Clone)]
pub struct Db {
    store: Arc<dyn Store>,
}

impl Db {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, BbsError> {
        match self.store.get(key).await.map_err(read_error)? {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                record: decode(&kv.key, &kv.value)?,
                revision: kv.mod_revision,
            })),
        }
    }

    /// Every record under `prefix`, in key order. A record that does not decode is reported, not
    /// skipped: it would mean the store holds something the BBS never wrote.
    pub async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, BbsError> {
        let listing = self.store.list(prefix).await.map_err(read_error)?;
        listing
            .kvs
            .iter()
            .map(|kv| {
                Ok(Versioned {
                    record: decode(&kv.key, &kv.value)?,
                    revision: kv.mod_revision,
                })
            })
            .collect()
    }

    /// The stored JSON of every record under `prefix`, in key order, undecoded: for listings
    /// that pass records through to the client as they are.
    pub async fn list_json(&self, prefix: &str) -> Result<Vec<Vec<u8>>, BbsError> {
        let listing = self.store.list(prefix).await.map_err(read_error)?;
        Ok(listing.kvs.into_iter().map(|kv| kv.value).collect())
    }

    /// Applies `txn`. `Ok(false)` when a compare failed (the caller lost a race). A write whose
    /// outcome the store cannot tell (a timeout) is re-read: if every put is there and every
    /// delete is gone it did commit; otherwise the caller gets a `Timeout` error that says the
    /// write may still be applied — never a clean failure.
    pub async fn commit(&self, txn: Txn) -> Result<bool, BbsError> {
        Ok(self.commit_at(txn).await?.is_some())
    }

    /// Like [`Db::commit`], answering the revision the transaction committed at (`None` when a
    /// compare failed), so that later writes can be guarded by "unchanged since".
    pub async fn commit_at(&self, txn: Txn) -> Result<Option<Revision>, BbsError> {
        let ops = txn.ops.clone();
        match self.store.txn(txn).await {
            Ok(TxnOutcome::Committed { revision }) => Ok(Some(revision)),
            Ok(TxnOutcome::CompareFailed) => Ok(None),
            Err(StoreError::OutcomeUnknown(why)) => {
                if let Some(revision) = self.writes_visible(&ops).await {
                    tracing::warn!(%why, "write timed out but is visible on re-read: treating it as committed");
                    Ok(Some(revision))
                } else {
                    Err(BbsError::new(
                        ErrorType::Timeout,
                        format!(
                            "outcome unknown: the store did not confirm the write ({why}); it may still be applied, re-read before retrying"
                        ),
                    ))
                }
            }
            Err(e) => Err(write_error(e)),
        }
    }

    /// `Some(revision)` when every put of `ops` is there and every delete gone: the write
    /// landed (at the revision of its puts; for deletes only, the current store revision).
    async fn writes_visible(&self, ops: &[Op]) -> Option<Revision> {
        let mut landed = None;
        for op in ops {
            let current = self.store.get(op.key()).await.ok()?;
            match (op, current) {
                (Op::Put { value, .. }, Some(kv)) if kv.value == *value => {
                    landed = Some(kv.mod_revision)
                }
                (Op::Delete { .. }, None) => {}
                _ => return None,
            }
        }
        match landed {
            Some(revision) => Some(revision),
            None => self.store.revision().await.ok(),
        }
    }
}

/// Runs `attempt` until it returns `Some`, re-running it when it lost a race (`None`).
pub async fn with_retries<R, F, Fut>(what: &str, mut attempt: F) -> Result<R, BbsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<R>, BbsError>>,
{
    for round in 0..MAX_ATTEMPTS {
        if let Some(result) = attempt().await? {
            return Ok(result);
        }
        // Lost a race: back off a random, growing while so that many writers on one record
        // take turns instead of colliding again in lock step.
        let ceiling_us = 200u64 << round.min(7);
        let jitter_us = u64::from(uuid::Uuid::new_v4().as_fields().0) % ceiling_us;
        tokio::time::sleep(std::time::Duration::from_micros(jitter_us)).await;
    }
    Err(BbsError::conflict(format!(
        "{what}: the record kept changing under {MAX_ATTEMPTS} attempts; try again"
    )))
}

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, BbsError> {
    serde_json::to_vec(record).map_err(|e| {
        BbsError::new(
            ErrorType::InvalidRecord,
            format!("cannot encode record: {e}"),
        )
    })
}

pub fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, BbsError> {
    serde_json::from_slice(value).map_err(|e| {
        BbsError::new(
            ErrorType::Deserialize,
            format!("stored record {key} does not decode: {e}"),
        )
    })
}

/// A read that failed: nothing changed, the caller may retry.
pub fn read_error(e: StoreError) -> BbsError {
    match e {
        StoreError::Unavailable(m) | StoreError::OutcomeUnknown(m) => {
            BbsError::new(ErrorType::Unavailable, format!("store unavailable: {m}"))
        }
        other => BbsError::new(ErrorType::UnknownError, other.to_string()),
    }
}

/// A write that failed before anything was applied.
pub fn write_error(e: StoreError) -> BbsError {
    match e {
        StoreError::OutcomeUnknown(m) => {
            BbsError::new(ErrorType::Timeout, format!("outcome unknown: {m}"))
        }
        StoreError::Unavailable(m) => BbsError::new(
            ErrorType::Unavailable,
            format!("store unavailable, nothing written: {m}"),
        ),
        StoreError::InvalidRequest(m) => BbsError::invalid_request(m),
        other => BbsError::new(ErrorType::UnknownError, other.to_string()),
    }
}
