//! Locks and presences on leases, the way Diego's Locket does them, for any [`Store`].
//!
//! A lock is a key attached to a lease and stamped with its owner. The owner takes it with
//! [`acquire`] and keeps it by calling [`acquire`] again before the TTL runs out (that renews the
//! lease); another owner gets [`LockError::Collision`] until the holder releases it or stops
//! renewing and the lease expires. A cell's presence is the same thing with the cell id as owner.

use std::time::Duration;

use crate::{Compare, KeyValue, LeaseId, Op, Store, StoreError, Txn, TxnOutcome};

/// A lock as it is stored: who holds it, what they attached, and the lease keeping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub key: String,
    pub owner: String,
    pub value: Vec<u8>,
    pub lease: LeaseId,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock {key:?} is held by {owner:?}")]
    Collision { key: String, owner: String },
    #[error("lock {0:?} not found")]
    NotFound(String),
    #[error("lock {key:?} has no lease: it was not written by this module")]
    Corrupt { key: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many times [`acquire`] re-reads after losing a race before it gives up.
const MAX_RACES: usize = 8;

/// Takes the lock at `key` for `owner`, or renews it if `owner` already holds it (updating its
/// value). Fails with [`LockError::Collision`] while someone else holds it.
pub async fn acquire(
    store: &dyn Store,
    key: &str,
    owner: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<Lock, LockError> {
    for _ in 0..MAX_RACES {
        match store.get(key).await? {
            None => {
                let lease = store.grant_lease(ttl).await?;
                let txn = Txn::new()
                    .when(Compare::absent(key))
                    .then(Op::put_with_lease(key, encode(owner, value), lease));
                match store.txn(txn).await {
                    Ok(TxnOutcome::Committed { .. }) => {
                        return Ok(Lock {
                            key: key.into(),
                            owner: owner.into(),
                            value: value.into(),
                            lease,
                        });
                    }
                    Ok(TxnOutcome::CompareFailed) => {
                        // Someone else took it between our read and our write.
                        let _ = store.revoke_lease(lease).await;
                    }
                    Err(e) => {
                        let _ = store.revoke_lease(lease).await;
                        return Err(e.into());
                    }
                }
            }
            Some(kv) => {
                let held = decode(&kv)?;
                if held.owner != owner {
                    return Err(LockError::Collision {
                        key: key.into(),
                        owner: held.owner,
                    });
                }
                match store.keep_alive(held.lease).await {
                    Ok(()) => {}
                    // Expired between our read and the renewal: the key is gone or going; retry.
                    Err(StoreError::LeaseNotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
                if held.value == value {
                    return Ok(held);
                }
                let txn = Txn::new()
                    .when(Compare::unchanged(key, kv.mod_revision))
                    .then(Op::put_with_lease(key, encode(owner, value), held.lease));
                if store.txn(txn).await?.committed() {
                    return Ok(Lock {
                        value: value.into(),
                        ..held
                    });
                }
            }
        }
    }
    Err(StoreError::Backend(format!(
        "lock {key:?} kept changing under {MAX_RACES} attempts"
    ))
    .into())
}

/// Releases the lock at `key` if `owner` holds it: its lease is revoked, so it is gone at once.
pub async fn release(store: &dyn Store, key: &str, owner: &str) -> Result<(), LockError> {
    let kv = store
        .get(key)
        .await?
        .ok_or_else(|| LockError::NotFound(key.into()))?;
    let held = decode(&kv)?;
    if held.owner != owner {
        return Err(LockError::Collision {
            key: key.into(),
            owner: held.owner,
        });
    }
    match store.revoke_lease(held.lease).await {
        // Already expired: the key is gone, which is what the caller wanted.
        Ok(()) | Err(StoreError::LeaseNotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads the lock at `key`.
pub async fn fetch(store: &dyn Store, key: &str) -> Result<Lock, LockError> {
    let kv = store
        .get(key)
        .await?
        .ok_or_else(|| LockError::NotFound(key.into()))?;
    decode(&kv)
}

/// Reads every lock under `prefix`, skipping none: a key that is not a lock is an error.
pub async fn list(store: &dyn Store, prefix: &str) -> Result<Vec<Lock>, LockError> {
    store.list(prefix).await?.kvs.iter().map(decode).collect()
}

/// `owner` length as 4 bytes big-endian, the owner, then the value.
fn encode(owner: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + owner.len() + value.len());
    out.extend_from_slice(&u32::try_from(owner.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(owner.as_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a stored lock.
pub fn decode(kv: &KeyValue) -> Result<Lock, LockError> {
    let corrupt = || LockError::Corrupt {
        key: kv.key.clone(),
    };
    let lease = kv.lease.ok_or_else(corrupt)?;
    let (len, rest) = kv.value.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
    if rest.len() < len {
        return Err(corrupt());
    }
    let (owner, value) = rest.split_at(len);
    let owner = String::from_utf8(owner.to_vec()).map_err(|_| corrupt())?;
    Ok(Lock {
        key: kv.key.clone(),
        owner,
        value: value.to_vec(),
        lease,
    })
}
