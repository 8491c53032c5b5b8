//! The store the BBS keeps its records in.
//!
//! A [`Store`] is a flat, ordered map of string keys to byte values with etcd's semantics, because
//! etcd is the store at scale and the embedded store copies its model:
//!
//! - every change bumps one store-wide **revision**; each key remembers the revision that created
//!   it and the one that last modified it;
//! - writes are **transactions** guarded by compares on a key's `mod_revision` (0 = "absent"), so
//!   two writers racing on one key never lose an update: the second one's compare fails;
//! - keys can be attached to a **lease** with a TTL; when the lease is revoked or expires the keys
//!   are deleted (this is how locks, cell presence and domain freshness work);
//! - a **watch** streams every change under a prefix from a given revision on, with the previous
//!   value, so a reader that reconnects can resume where it stopped.
//!
//! The store knows nothing of Diego's records: keys and values are opaque here.

use std::fmt;
use std::time::Duration;

use futures::stream::BoxStream;

pub mod lock;

#[cfg(feature = "conformance")]
pub mod conformance;

/// A store-wide revision. Revision 0 means "never": a key whose mod revision is 0 does not exist.
pub type Revision = i64;

/// The id of a lease granted by [`Store::grant_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the put that created this key (since it was last absent).
    pub create_revision: Revision,
    /// Revision of the last put to this key.
    pub mod_revision: Revision,
    /// Lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// A condition a transaction checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals the given one; `0` means the key must be absent.
    ModRevision { key: String, revision: Revision },
}

impl Compare {
    /// The key must not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::ModRevision {
            key: key.into(),
            revision: 0,
        }
    }

    /// The key must still be at `revision` (unchanged since it was read).
    pub fn unchanged(key: impl Into<String>, revision: Revision) -> Self {
        Compare::ModRevision {
            key: key.into(),
            revision,
        }
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn put_with_lease(
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Compares, then operations applied atomically if every compare holds.
///
/// The operations of one transaction must name distinct keys (etcd refuses duplicates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held and the operations were applied at this revision. A transaction with
    /// no effective change (deleting absent keys only) reports the current revision.
    Committed { revision: Revision },
    /// A compare failed: nothing was written.
    CompareFailed,
}

impl TxnOutcome {
    pub fn committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed { .. })
    }
}

/// A page of keys under a prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Keys in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// The store revision the listing was read at: a watch from `revision + 1` sees every change
    /// made after it.
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For a put, the new key-value; for a delete, the key with an empty value and
    /// `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The key-value before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A stream of changes in revision order; changes of one transaction arrive in key order.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// The health of one member of the store's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    pub name: String,
    pub endpoint: String,
    pub healthy: bool,
    pub leader: bool,
    /// Why the member is unhealthy, if it is.
    pub error: Option<String>,
}

/// The health of the store as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// "embedded" or "etcd".
    pub backend: String,
    pub members: Vec<MemberHealth>,
}

impl StoreHealth {
    /// Some member is unhealthy but the store still answers.
    pub fn degraded(&self) -> bool {
        self.members.iter().any(|m| !m.healthy)
    }
}

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request may or may not have been applied (a timeout or a lost connection after the
    /// request was sent). Callers must not report this as a clean failure: re-read, or say so.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The store could not be reached; the request was not applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (never granted, revoked or expired).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A watch asked for revisions that have been compacted away.
    #[error("revision {requested} has been compacted; oldest available is {compact_revision}")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    /// The request itself was wrong (e.g. duplicate keys in one transaction, an empty key).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Anything else the backend reports: corrupt files, I/O errors, protocol errors.
    #[error("store error: {0}")]
    Backend(String),
}

/// The store the BBS keeps its records in. Implemented by the embedded store and by etcd; both
/// pass [`conformance`] (feature `conformance`).
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key starting with `prefix`, in key order, at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Applies `txn` atomically if all its compares hold.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;

    /// Grants a lease that expires `ttl` after it was granted or last kept alive. TTLs are
    /// rounded up to whole seconds, as etcd does.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease for another full TTL. `LeaseNotFound` once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Revokes a lease now, deleting every key attached to it. Revoking an unknown lease is
    /// `LeaseNotFound`.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Streams every change to keys under `prefix` with revision `>= from_revision`, then every
    /// later change, until the stream is dropped. `from_revision` 0 means "from now on".
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;

    /// The current store revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// The health of each member, without failing when some are down.
    async fn health(&self) -> Result<StoreHealth, StoreError>;
}

/// Convenience reads and writes built on [`Store`].
#[async_trait::async_trait]
pub trait StoreExt: Store {
    /// Creates `key` only if it is absent. `Ok(false)` if it already exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let outcome = self
            .txn(
                Txn::new()
                    .when(Compare::absent(key))
                    .then(Op::put(key, value)),
            )
            .await?;
        Ok(outcome.committed())
    }

    /// Replaces `key` only if it is still at `revision`. `Ok(false)` if it changed meanwhile.
    async fn replace(
        &self,
        key: &str,
        revision: Revision,
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when(Compare::unchanged(key, revision))
            .then(Op::put(key, value));
        Ok(self.txn(txn).await?.committed())
    }

    /// Deletes `key` only if it is still at `revision`. `Ok(false)` if it changed meanwhile.
    async fn delete_if(&self, key: &str, revision: Revision) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when(Compare::unchanged(key, revision))
            .then(Op::delete(key));
        Ok(self.txn(txn).await?.committed())
    }

    /// Writes `key` unconditionally.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        match self.txn(Txn::new().then(Op::put(key, value))).await? {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::CompareFailed => Err(StoreError::Backend(
                "unconditional put reported a failed compare".into(),
            )),
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Checks a transaction's shape before a backend applies it; both backends call it so that they
/// refuse the same requests.
pub fn validate_txn(txn: &Txn) -> Result<(), StoreError> {
    let mut keys: Vec<&str> = txn.ops.iter().map(Op::key).collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(StoreError::InvalidRequest("empty key".into()));
    }
    keys.sort_unstable();
    if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(StoreError::InvalidRequest(format!(
            "key {:?} appears twice in one transaction",
            pair[0]
        )));
    }
    Ok(())
}
