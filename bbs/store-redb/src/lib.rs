//! The embedded store: a [`diego_store::Store`] on one local redb file, for a BBS that runs
//! without etcd.
//!
//! # Layout
//!
//! One redb file holds five tables (see `schema`):
//!
//! - `kv`: key -> create revision, mod revision, lease, value;
//! - `meta`: the store revision, the compacted revision, the next lease id, the layout version;
//! - `leases`: lease id -> TTL and deadline (wall-clock unix ms), so leases survive a restart
//!   and keep ticking across it; `lease_keys`: lease id -> its keys, so expiry needs no scan;
//! - `changes`: revision -> every event of that revision (with the previous key-value), the
//!   change log watches replay from. It keeps the last
//!   [`EmbeddedStoreOptions::change_log_retention`] revisions; a watch from an older one gets
//!   [`StoreError::Compacted`].
//!
//! # Writes: one thread, group commit
//!
//! Every write (transactions and lease operations) goes to a single writer thread over a
//! channel. The thread takes everything queued (waiting up to
//! [`EmbeddedStoreOptions::group_linger`] for stragglers when the queue is shorter than the last
//! group was), applies it in order in one redb write transaction — each store transaction still
//! sees the ones before it and gets its own revision, exactly as if committed alone — commits
//! once with [`redb::Durability::Immediate`] (one fsync for the whole group), and only then
//! answers each caller. So an acknowledged write survives `kill -9` and power loss, and a store
//! transaction is never half-applied; concurrent writers share fsyncs instead of queueing for
//! one each. The same thread expires leases: it wakes at the next lease deadline (or every
//! [`EmbeddedStoreOptions::lease_tick`]) and deletes an expired lease's keys in an ordinary
//! revision-bumping transaction, so watches see the deletes.
//!
//! # Reads and watches
//!
//! Reads use redb read transactions: MVCC snapshots, never blocked by the writer. Point reads
//! run inline (a few cached pages); listings and change-log replays, which can be large, run on
//! tokio's blocking pool. After each commit the writer broadcasts the committed events; a watch
//! replays the change log up to the present and then follows the broadcast, falling back to the log
//! whenever it lags behind the broadcast (see `watch`).

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use diego_store::{
    KeyValue, LeaseId, Listing, MemberHealth, Op, Revision, Store, StoreError, StoreHealth, Txn,
    TxnOutcome, WatchStream,
};
use redb::Database;
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

mod codec;
mod schema;
mod watch;
mod writer;

use writer::{Command, Committed, Message, Outcome};

/// The default of [`EmbeddedStoreOptions::min_free_bytes`]: 512 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 512 * 1024 * 1024;

/// Tuning of an [`EmbeddedStore`]. The defaults suit a BBS.
#[derive(Debug, Clone)]
pub struct EmbeddedStoreOptions {
    /// How many of the latest revisions the change log keeps for watches that resume from the
    /// past. Older revisions are compacted away. At least 1.
    pub change_log_retention: u64,
    /// The longest the writer sleeps between checks for expired leases. Leases normally expire
    /// at their deadline; the tick only bounds the delay after a clock change.
    pub lease_tick: Duration,
    /// The largest value a put may write.
    pub max_value_bytes: usize,
    /// The most requests one group commit takes.
    pub max_batch: usize,
    /// How long the writer may wait for stragglers when fewer requests are queued than the last
    /// group had: the callers that group answered are usually about to send their next request,
    /// and committing without them would make them wait a whole commit. Zero disables it; it
    /// never delays a lone writer.
    pub group_linger: Duration,
    /// How many committed groups the live broadcast buffers for a slow watch before that watch
    /// falls back to reading the change log.
    pub watch_buffer: usize,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// Makes each commit also save redb's allocator state, so that reopening after a crash is
    /// instant rather than a walk of the whole file. Off by default: it costs 10-40% of write
    /// throughput, while the walk takes about a second for 200k keys (measured).
    pub quick_repair: bool,
    /// Writes that add data are refused (with [`StoreError::Unavailable`] naming the free space)
    /// while the file's filesystem has less than this many bytes available, so the store never
    /// fills its disk (redb cannot commit on a full disk, and the BBS beside it cannot log).
    /// Deletes and lease renewals still go through: they are how space is won back. Zero
    /// disables the check.
    pub min_free_bytes: u64,
}

impl Default for EmbeddedStoreOptions {
    fn default() -> Self {
        Self {
            change_log_retention: 200_000,
            lease_tick: Duration::from_millis(200),
            max_value_bytes: 32 * 1024 * 1024,
            max_batch: 1024,
            group_linger: Duration::from_micros(200),
            watch_buffer: 256,
            cache_bytes: 64 * 1024 * 1024,
            quick_repair: false,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// Counters of the writer, to see how well group commit is grouping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbeddedStoreStats {
    /// redb transactions committed (each one fsync).
    pub commits: u64,
    /// Requests (store transactions and lease operations) those commits carried.
    pub requests: u64,
    /// Leases the writer expired.
    pub expired_leases: u64,
}

/// Errors of the embedded store; inside [`Store`] methods they become [`StoreError`]s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedStoreError {
    #[error("cannot open {path:?}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("the store file has layout version {found}; this build reads version {expected}")]
    Format { found: i64, expected: i64 },
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the embedded store is closed")]
    Closed,
    #[error("revision {requested} has been compacted; oldest available is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("background task failed: {0}")]
    Task(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for EmbeddedStoreError {
            fn from(e: $t) -> Self {
                EmbeddedStoreError::Storage(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<EmbeddedStoreError> for StoreError {
    fn from(e: EmbeddedStoreError) -> Self {
        match e {
            EmbeddedStoreError::Closed => StoreError::Unavailable(e.to_string()),
            EmbeddedStoreError::Compacted { requested, oldest } => StoreError::Compacted {
                requested,
                compact_revision: oldest,
            },
            e => StoreError::Backend(e.to_string()),
        }
    }
}

/// The store on one local redb file. Cheap to share as `Arc<dyn Store>`; [`EmbeddedStore::close`]
/// (or dropping the last reference) stops its writer thread and releases the file.
pub struct EmbeddedStore {
    path: PathBuf,
    options: EmbeddedStoreOptions,
    inner: Arc<Inner>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// What readers, writers and watches share. Watches hold this rather than the store, so that
/// dropping the store closes it even while watches are alive (they then end).
#[derive(Debug)]
pub(crate) struct Inner {
    /// `None` once closed.
    open: RwLock<Option<Handles>>,
    /// Why the writer stopped accepting writes, if it did.
    failure: Arc<Mutex<Option<String>>>,
    stats: Arc<writer::Stats>,
}

struct Handles {
    db: Arc<Database>,
    writer: mpsc::Sender<Message>,
    events: broadcast::Sender<Committed>,
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handles").finish_non_exhaustive()
    }
}

impl Inner {
    fn with_open<T>(&self, f: impl FnOnce(&Handles) -> T) -> Result<T, EmbeddedStoreError> {
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        open.as_ref().map(f).ok_or(EmbeddedStoreError::Closed)
    }

    pub(crate) fn db(&self) -> Result<Arc<Database>, EmbeddedStoreError> {
        self.with_open(|h| h.db.clone())
    }

    pub(crate) fn subscribe(&self) -> Result<broadcast::Receiver<Committed>, EmbeddedStoreError> {
        self.with_open(|h| h.events.subscribe())
    }

    /// Queues a message for the writer. Sent under the read lock, so that once `close` holds the
    /// write lock no request can slip in behind its shutdown message.
    fn send(&self, message: Message) -> Result<(), EmbeddedStoreError> {
        self.with_open(|h| {
            h.writer
                .send(message)
                .map_err(|_| EmbeddedStoreError::Closed)
        })?
    }
}

/// Runs blocking redb work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EmbeddedStoreError> + Send + 'static,
) -> Result<T, EmbeddedStoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EmbeddedStoreError::Task(e.to_string()))?
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store at `path` with default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Arc<Self>, EmbeddedStoreError> {
        Self::open_with(path, EmbeddedStoreOptions::default()).await
    }

    /// Opens (creating if needed) the store at `path`. After a crash, redb recovers the last
    /// committed state first (which may take a while for a large file without
    /// [`EmbeddedStoreOptions::quick_repair`]).
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: EmbeddedStoreOptions,
    ) -> Result<Arc<Self>, EmbeddedStoreError> {
        let path = path.as_ref().to_path_buf();
        let store = tokio::task::spawn_blocking(move || Self::open_blocking(path, options))
            .await
            .map_err(|e| EmbeddedStoreError::Task(e.to_string()))??;
        Ok(Arc::new(store))
    }

    fn open_blocking(
        path: PathBuf,
        options: EmbeddedStoreOptions,
    ) -> Result<Self, EmbeddedStoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|source| EmbeddedStoreError::Open {
                path: path.clone(),
                source,
            })?;
        let db = Arc::new(db);
        let initial = writer::load(&db)?;
        info!(
            path = %path.display(),
            revision = initial.revision,
            compacted = initial.compacted,
            leases = initial.leases.len(),
            "embedded store opened"
        );
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let failure = Arc::new(Mutex::new(None));
        let config = writer::WriterConfig {
            retention: i64::try_from(options.change_log_retention.max(1)).unwrap_or(i64::MAX),
            tick: options.lease_tick.max(Duration::from_millis(1)),
            max_batch: options.max_batch.max(1),
            // Keep one redb transaction to a sane size even with large values.
            max_batch_bytes: options.max_value_bytes.max(64 * 1024 * 1024),
            quick_repair: options.quick_repair,
            linger: options.group_linger,
            path: path.clone(),
            min_free_bytes: options.min_free_bytes,
        };
        let stats = Arc::new(writer::Stats::default());
        let (sender, handle) = writer::spawn(
            db.clone(),
            initial,
            config,
            events.clone(),
            failure.clone(),
            stats.clone(),
        )?;
        let inner = Inner {
            open: RwLock::new(Some(Handles {
                db,
                writer: sender,
                events,
            })),
            failure,
            stats,
        };
        Ok(Self {
            path,
            options,
            inner: Arc::new(inner),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Counters of the writer since the store was opened.
    pub fn stats(&self) -> EmbeddedStoreStats {
        self.inner.stats.snapshot()
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer (after it finishes the group in progress) and releases the file, so it
    /// can be opened again. Requests made afterwards fail with [`StoreError::Unavailable`];
    /// watches end. Idempotent; dropping the store does the same.
    ///
    /// Blocks while the writer finishes its current group (a few milliseconds at most).
    pub fn close(&self) {
        // Taking the handles under the write lock waits for in-flight sends, so the shutdown
        // message is the last one the writer receives and every earlier request is answered.
        let handles = self
            .inner
            .open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Handles { db, writer, events }) = handles else {
            return;
        };
        let _ = writer.send(Message::Shutdown);
        drop(writer);
        // With the writer's sender gone too, live watches see the broadcast close and end.
        drop(events);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            warn!("embedded store writer thread panicked");
        }
        match Arc::try_unwrap(db) {
            Ok(db) => {
                if let Err(e) = db.close() {
                    warn!(error = %e, "closing the embedded store file");
                }
            }
            // A read still running holds the file; it is released when that read finishes.
            Err(_) => {
                info!("embedded store closed; a read in progress releases the file when done")
            }
        }
        info!(path = %self.path.display(), "embedded store closed");
    }

    async fn submit(&self, command: Command) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.send(Message::Request { command, reply })?;
        // The writer answers every request it takes, so a dropped reply means it died mid-way.
        answer
            .await
            .map_err(|_| StoreError::OutcomeUnknown("the embedded store writer stopped".into()))?
    }

    fn check_sizes(&self, txn: &Txn) -> Result<(), StoreError> {
        for op in &txn.ops {
            if let Op::Put { key, value, .. } = op
                && value.len() > self.options.max_value_bytes
            {
                return Err(StoreError::InvalidRequest(format!(
                    "value of {key:?} is {} bytes; the limit is {}",
                    value.len(),
                    self.options.max_value_bytes
                )));
            }
        }
        Ok(())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn unexpected(outcome: Outcome) -> StoreError {
    StoreError::Backend(format!(
        "embedded store writer gave an unexpected answer: {outcome:?}"
    ))
}

/// TTLs are whole seconds, rounded up, at least one (as etcd does).
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .min(i64::MAX / 1000)
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        // Inline rather than on the blocking pool: a point lookup is a walk of a few cached
        // B-tree pages plus a copy of the value, around a microsecond for a BBS record, where the
        // hop to the pool and back costs ten times that (measured: 1.5M vs 0.1M gets/s).
        let db = self.inner.db()?;
        Ok(schema::get(&db, key)?)
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let db = self.inner.db()?;
        let prefix = prefix.to_owned();
        Ok(blocking(move || schema::list(&db, &prefix)).await?)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        diego_store::validate_txn(&txn)?;
        self.check_sizes(&txn)?;
        match self.submit(Command::Txn(txn)).await? {
            Outcome::Txn(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        match self
            .submit(Command::Grant {
                ttl_secs: ttl_secs(ttl),
            })
            .await?
        {
            Outcome::Lease(lease) => Ok(lease),
            other => Err(unexpected(other)),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.submit(Command::KeepAlive(lease)).await? {
            Outcome::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.submit(Command::Revoke(lease)).await? {
            Outcome::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::watch(self.inner.clone(), prefix.to_owned(), from_revision).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // One lookup in a tiny, always-cached table: cheaper inline than a hop to the pool.
        let db = self.inner.db()?;
        Ok(schema::revisions(&db)?.0)
    }

    async fn health(&self) -> Result<StoreHealth, StoreError> {
        let failure = self
            .inner
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let error = match self.inner.db() {
            Ok(_) => failure,
            Err(e) => Some(e.to_string()),
        };
        Ok(StoreHealth {
            backend: "embedded".into(),
            members: vec![MemberHealth {
                name: "embedded".into(),
                endpoint: self.path.display().to_string(),
                healthy: error.is_none(),
                leader: true,
                error,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_secs(Duration::MAX), i64::MAX / 1000);
    }
}
