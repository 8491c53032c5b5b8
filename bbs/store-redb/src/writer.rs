//! The writer thread: the only code that writes to the redb file.
//!
//! It drains a channel of requests, applies every request it found queued in one redb write
//! transaction, commits once (one fsync) and only then answers each request. Requests are applied
//! one after the other, each seeing the ones before it, so the batch behaves exactly as if every
//! request had been committed alone; a failure while building the batch aborts the whole redb
//! transaction, so nothing of it is ever half-applied.
//!
//! The thread also reaps leases: it sleeps no longer than the time to the next lease deadline
//! (capped at the tick), and expires leases that are due at the head of the next batch.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diego_store::{
    Compare, EventKind, KeyValue, LeaseId, Op, Revision, StoreError, Txn, TxnOutcome, WatchEvent,
};
use redb::{Database, Durability, MultimapTable, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, error, info, trace, warn};

use crate::schema::{
    CHANGES, FORMAT, KV, LEASE_KEYS, LEASES, META, META_COMPACTED, META_FORMAT, META_NEXT_LEASE,
    META_REVISION,
};
use crate::{EmbeddedStoreError, codec};

/// A write the writer thread applies.
#[derive(Debug)]
pub(crate) enum Command {
    Txn(Txn),
    Grant { ttl_secs: i64 },
    KeepAlive(LeaseId),
    Revoke(LeaseId),
}

impl Command {
    /// Payload bytes, to bound the size of one batch.
    fn size(&self) -> usize {
        match self {
            Command::Txn(txn) => txn
                .ops
                .iter()
                .map(|op| match op {
                    Op::Put { key, value, .. } => key.len() + value.len(),
                    Op::Delete { key } => key.len(),
                })
                .sum(),
            _ => 0,
        }
    }
}

/// What a command did, once its batch is committed.
#[derive(Debug)]
pub(crate) enum Outcome {
    Txn(TxnOutcome),
    Lease(LeaseId),
    Done,
}

/// The answer to one request.
pub(crate) type Answer = Result<Outcome, StoreError>;

pub(crate) type Reply = oneshot::Sender<Answer>;

#[derive(Debug)]
pub(crate) enum Message {
    Request {
        command: Command,
        reply: Reply,
    },
    /// Finish the batch in progress and stop. Sent last: the store stops accepting requests first.
    Shutdown,
}

/// The events of one committed revision, as live watches receive them.
#[derive(Debug)]
pub(crate) struct RevisionEvents {
    pub revision: Revision,
    pub events: Vec<WatchEvent>,
}

/// What one committed batch tells live watches.
#[derive(Debug)]
pub(crate) enum Group {
    /// The events of the revisions the batch committed.
    Events(Vec<RevisionEvents>),
    /// The batch was too large to keep in the broadcast ring (which holds its last messages
    /// for as long as any watch has not read them, so a stalled watch would pin
    /// `watch_buffer` large groups): read the revisions up to `through` from the change log.
    InLog { through: Revision },
}

/// A committed batch, broadcast to live watches in one message.
pub(crate) type Committed = Arc<Group>;

/// The most event bytes one broadcast message carries; a larger batch is announced as
/// [`Group::InLog`]. Bounds the ring to `watch_buffer` × this.
pub(crate) const MAX_BROADCAST_BYTES: usize = 64 * 1024;

fn event_bytes(revisions: &[RevisionEvents]) -> usize {
    revisions
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| e.kv.key.len() + e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len()))
        .sum()
}

#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub retention: i64,
    pub tick: Duration,
    pub max_batch: usize,
    pub max_batch_bytes: usize,
    pub quick_repair: bool,
    /// How long a group may wait for stragglers (see `Writer::run`).
    pub linger: Duration,
    /// The store file, whose filesystem's free space is checked before writes.
    pub path: std::path::PathBuf,
    /// See `EmbeddedStoreOptions::min_free_bytes`.
    pub min_free_bytes: u64,
}

/// The counters and leases of the file, as read at open.
#[derive(Debug)]
pub(crate) struct Initial {
    pub revision: Revision,
    pub compacted: Revision,
    pub next_lease: i64,
    /// (lease, deadline) of every persisted lease.
    pub leases: Vec<(i64, i64)>,
}

/// Counters the writer bumps after each commit.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    commits: AtomicU64,
    requests: AtomicU64,
    expired_leases: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> crate::EmbeddedStoreStats {
        crate::EmbeddedStoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            expired_leases: self.expired_leases.load(Ordering::Relaxed),
        }
    }
}

/// Wall-clock unix milliseconds: lease deadlines are persisted in these, so they mean the same
/// thing after a restart.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The tables a write transaction works on, opened once per batch.
struct Tables<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, i64>,
    leases: Table<'t, i64, (i64, i64)>,
    lease_keys: MultimapTable<'t, i64, &'static str>,
    changes: Table<'t, i64, &'static [u8]>,
}

impl<'t> Tables<'t> {
    /// Opens every table, creating those that do not exist yet.
    fn open(tx: &'t WriteTransaction) -> Result<Self, EmbeddedStoreError> {
        Ok(Self {
            kv: tx.open_table(KV)?,
            meta: tx.open_table(META)?,
            leases: tx.open_table(LEASES)?,
            lease_keys: tx.open_multimap_table(LEASE_KEYS)?,
            changes: tx.open_table(CHANGES)?,
        })
    }

    fn meta(&self, name: &str) -> Result<Option<i64>, EmbeddedStoreError> {
        Ok(self.meta.get(name)?.map(|v| v.value()))
    }
}

/// Creates the tables of a new file, checks the layout of an old one, and reads its counters.
pub(crate) fn load(db: &Database) -> Result<Initial, EmbeddedStoreError> {
    let tx = db.begin_write()?;
    let initial = {
        let mut t = Tables::open(&tx)?;
        match t.meta(META_FORMAT)? {
            None => {
                t.meta.insert(META_FORMAT, FORMAT)?;
            }
            Some(FORMAT) => {}
            Some(found) => {
                return Err(EmbeddedStoreError::Format {
                    found,
                    expected: FORMAT,
                });
            }
        }
        let mut leases = Vec::new();
        for entry in t.leases.iter()? {
            let (id, lease) = entry?;
            leases.push((id.value(), lease.value().1));
        }
        Initial {
            revision: t.meta(META_REVISION)?.unwrap_or(0),
            compacted: t.meta(META_COMPACTED)?.unwrap_or(0),
            // Lease 0 means "no lease" in a key record, so ids start at 1.
            next_lease: t.meta(META_NEXT_LEASE)?.unwrap_or(1).max(1),
            leases,
        }
    };
    tx.commit()?;
    Ok(initial)
}

/// Starts the writer thread.
pub(crate) fn spawn(
    db: Arc<Database>,
    initial: Initial,
    config: WriterConfig,
    events: broadcast::Sender<Committed>,
    failure: Arc<Mutex<Option<String>>>,
    stats: Arc<Stats>,
) -> Result<(mpsc::Sender<Message>, JoinHandle<()>), EmbeddedStoreError> {
    let (sender, messages) = mpsc::channel();
    let mut writer = Writer {
        db,
        messages,
        events,
        failure,
        stats,
        config,
        revision: initial.revision,
        compacted: initial.compacted,
        next_lease: initial.next_lease,
        expiries: BTreeSet::new(),
        deadlines: HashMap::new(),
        failed: None,
        last_batch: 0,
    };
    for (lease, deadline) in initial.leases {
        writer.set_deadline(lease, Some(deadline));
    }
    let handle = std::thread::Builder::new()
        .name("store-redb-writer".into())
        .spawn(move || writer.run())?;
    Ok((sender, handle))
}

struct Writer {
    db: Arc<Database>,
    messages: mpsc::Receiver<Message>,
    events: broadcast::Sender<Committed>,
    /// Shared with the store, for `health()`.
    failure: Arc<Mutex<Option<String>>>,
    stats: Arc<Stats>,
    config: WriterConfig,
    // The committed state, kept here so that a batch starts without re-reading it.
    revision: Revision,
    compacted: Revision,
    next_lease: i64,
    /// (deadline, lease) of every lease: the first one is the next to expire.
    expiries: BTreeSet<(i64, i64)>,
    /// lease -> deadline, to find a lease's entry in `expiries`.
    deadlines: HashMap<i64, i64>,
    /// Set when a commit failed: redb then refuses writes until the file is reopened, and the
    /// in-memory state may no longer match the file, so the writer refuses everything.
    failed: Option<String>,
    /// Requests in the previous group.
    last_batch: usize,
}

impl Writer {
    fn run(mut self) {
        info!(
            revision = self.revision,
            leases = self.deadlines.len(),
            "embedded store writer started"
        );
        let mut stopping = false;
        while !stopping {
            let batch;
            (batch, stopping) = self.next_group();
            if let Some(why) = &self.failed {
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Unavailable(why.clone())));
                }
                continue;
            }
            let batch = self.refuse_when_disk_full(batch);
            let now = now_ms();
            let due = self.due(now);
            if !batch.is_empty() || !due.is_empty() {
                self.commit_batch(batch, &due, now);
            }
        }
        info!(revision = self.revision, "embedded store writer stopped");
    }

    /// Waits for requests (or the next lease deadline) and takes every request queued, up to
    /// the batch limits. Also says whether the store is shutting down.
    fn next_group(&mut self) -> (Vec<(Command, Reply)>, bool) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next = match self.messages.recv_timeout(self.until_next_expiry()) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Message::Shutdown),
        };
        let linger_until = Instant::now() + self.config.linger;
        while let Some(message) = next.take() {
            let Message::Request { command, reply } = message else {
                return (batch, true);
            };
            bytes += command.size();
            batch.push((command, reply));
            if batch.len() >= self.config.max_batch || bytes >= self.config.max_batch_bytes {
                break;
            }
            next = match self.messages.try_recv() {
                Ok(message) => Some(message),
                Err(TryRecvError::Disconnected) => Some(Message::Shutdown),
                // The callers the last commit answered are still sending their next requests
                // (their tasks were only just woken). If the last group was bigger than this
                // one, wait a moment for them rather than commit a fraction of the group and
                // keep the rest waiting a whole commit.
                Err(TryRecvError::Empty) if batch.len() < self.last_batch => {
                    let wait = linger_until.saturating_duration_since(Instant::now());
                    match self.messages.recv_timeout(wait) {
                        Ok(message) => Some(message),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => Some(Message::Shutdown),
                    }
                }
                Err(TryRecvError::Empty) => None,
            };
        }
        self.last_batch = batch.len();
        (batch, false)
    }

    /// Answers the requests of `batch` that would add data with `Unavailable` when the disk is
    /// nearly full, and keeps the rest (deletes, lease operations).
    fn refuse_when_disk_full(&self, batch: Vec<(Command, Reply)>) -> Vec<(Command, Reply)> {
        let adds = |command: &Command| match command {
            Command::Txn(txn) => txn.ops.iter().any(|op| matches!(op, Op::Put { .. })),
            // Leases are a few bytes each, and locks and presences need them.
            Command::Grant { .. } | Command::KeepAlive(_) | Command::Revoke(_) => false,
        };
        if self.config.min_free_bytes == 0 || !batch.iter().any(|(c, _)| adds(c)) {
            return batch;
        }
        let Some(free) = self.free_bytes() else {
            return batch;
        };
        if free >= self.config.min_free_bytes {
            return batch;
        }
        let mib = |bytes: u64| bytes / (1024 * 1024);
        let why = format!(
            "the disk of {} is nearly full: {} MiB free, below the minimum of {} MiB; nothing written (free space, or remove records)",
            self.config.path.display(),
            mib(free),
            mib(self.config.min_free_bytes)
        );
        warn!(
            free,
            min = self.config.min_free_bytes,
            "disk nearly full; refusing writes that add data"
        );
        let mut kept = Vec::with_capacity(batch.len());
        for (command, reply) in batch {
            if adds(&command) {
                let _ = reply.send(Err(StoreError::Unavailable(why.clone())));
            } else {
                kept.push((command, reply));
            }
        }
        kept
    }

    /// Bytes available to this process on the store file's filesystem; `None` if unknown.
    fn free_bytes(&self) -> Option<u64> {
        let dir = self
            .config
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        match nix::sys::statvfs::statvfs(dir) {
            #[allow(clippy::useless_conversion)] // the field types differ between platforms
            Ok(stat) => Some(
                u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())),
            ),
            Err(e) => {
                debug!(error = %e, "cannot read the free space of the store's disk");
                None
            }
        }
    }

    /// How long to wait for requests before the next lease falls due.
    fn until_next_expiry(&self) -> Duration {
        match self.expiries.first() {
            Some(&(deadline, _)) if self.failed.is_none() => {
                let wait = u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0);
                Duration::from_millis(wait).min(self.config.tick)
            }
            _ => self.config.tick,
        }
    }

    /// Leases whose deadline has passed, a bounded number per batch.
    fn due(&self, now: i64) -> Vec<i64> {
        self.expiries
            .iter()
            .take_while(|&&(deadline, _)| deadline <= now)
            .take(self.config.max_batch)
            .map(|&(_, lease)| lease)
            .collect()
    }

    fn set_deadline(&mut self, lease: i64, deadline: Option<i64>) {
        if let Some(old) = self.deadlines.remove(&lease) {
            self.expiries.remove(&(old, lease));
        }
        if let Some(deadline) = deadline {
            self.deadlines.insert(lease, deadline);
            self.expiries.insert((deadline, lease));
        }
    }

    fn commit_batch(&mut self, batch: Vec<(Command, Reply)>, due: &[i64], now: i64) {
        let started = Instant::now();
        let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
        let mut staged = Staged {
            revision: self.revision,
            compacted: self.compacted,
            next_lease: self.next_lease,
            committed: Vec::new(),
            lease_changes: Vec::new(),
            expired: 0,
        };
        let (tx, results) = match self.build(&mut staged, commands, due, now) {
            Ok(built) => built,
            Err(e) => {
                // The redb transaction was dropped, so aborted: nothing of the batch was written.
                error!(error = %e, requests = replies.len(), "embedded store batch failed; nothing applied");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(format!("not applied: {e}"))));
                }
                // Do not spin on a persistent failure (lease expiries would retry at once).
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
        };
        let built = started.elapsed();
        if let Err(e) = tx.commit() {
            let why = format!("embedded store commit failed, reopen the store: {e}");
            error!(error = %e, "embedded store commit failed; refusing further writes");
            *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
            self.failed = Some(why.clone());
            for reply in replies {
                // redb says a failed commit may still have become durable.
                let _ = reply.send(Err(StoreError::OutcomeUnknown(why.clone())));
            }
            return;
        }
        // Durable: publish the new state, then answer.
        self.revision = staged.revision;
        self.compacted = staged.compacted;
        self.next_lease = staged.next_lease;
        for (lease, deadline) in staged.lease_changes {
            self.set_deadline(lease, deadline);
        }
        let revisions = staged.committed.len();
        if !staged.committed.is_empty() {
            let group = if event_bytes(&staged.committed) > MAX_BROADCAST_BYTES {
                Group::InLog {
                    through: staged.revision,
                }
            } else {
                Group::Events(staged.committed)
            };
            // No receiver is not an error: nobody is watching.
            let _ = self.events.send(Arc::new(group));
        }
        let requests = replies.len();
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(requests as u64, Ordering::Relaxed);
        self.stats
            .expired_leases
            .fetch_add(staged.expired, Ordering::Relaxed);
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away; its write is committed all the same.
            let _ = reply.send(result);
        }
        trace!(
            requests,
            expired = due.len(),
            revisions,
            build_us = built.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "batch committed"
        );
    }

    /// Applies a batch to a new write transaction, ready to commit.
    fn build(
        &self,
        staged: &mut Staged,
        commands: Vec<Command>,
        due: &[i64],
        now: i64,
    ) -> Result<(WriteTransaction, Vec<Answer>), EmbeddedStoreError> {
        let mut tx = self.db.begin_write()?;
        // Every acknowledged write must survive a crash: fsync before the commit returns.
        tx.set_durability(Durability::Immediate)?;
        tx.set_quick_repair(self.config.quick_repair);
        let results = {
            let mut batch = Batch {
                t: Tables::open(&tx)?,
                staged,
                now,
            };
            // Expiries go first: keep_alive already treats a lease past its deadline as gone.
            for &lease in due {
                batch.expire(lease)?;
            }
            let mut results = Vec::with_capacity(commands.len());
            for command in commands {
                results.push(batch.apply(command)?);
            }
            batch.compact(self.config.retention)?;
            batch.write_meta(self)?;
            results
        };
        Ok((tx, results))
    }
}

/// What a batch changed, published to the writer only once the batch is committed.
struct Staged {
    revision: Revision,
    compacted: Revision,
    next_lease: i64,
    committed: Vec<RevisionEvents>,
    /// (lease, new deadline or None when gone), for the reaper's schedule.
    lease_changes: Vec<(i64, Option<i64>)>,
    /// Leases the reaper expired.
    expired: u64,
}

/// One batch being applied. Methods return `Err` for storage failures, which abort the batch,
/// and `Ok(Err(..))` for a request that fails on its own (nothing of it is applied).
struct Batch<'t, 's> {
    t: Tables<'t>,
    staged: &'s mut Staged,
    now: i64,
}

type Applied = Result<Answer, EmbeddedStoreError>;

impl Batch<'_, '_> {
    fn apply(&mut self, command: Command) -> Applied {
        match command {
            Command::Txn(txn) => self.txn(txn),
            Command::Grant { ttl_secs } => self.grant(ttl_secs),
            Command::KeepAlive(lease) => self.keep_alive(lease),
            Command::Revoke(lease) => self.revoke(lease),
        }
    }

    fn txn(&mut self, txn: Txn) -> Applied {
        // Checks first, writes after: a failing transaction must leave no trace in the batch.
        for compare in &txn.compares {
            let Compare::ModRevision { key, revision } = compare;
            let current = match self.t.kv.get(key.as_str())? {
                Some(record) => codec::kv_mod_revision(key, record.value())?,
                None => 0,
            };
            if current != *revision {
                return Ok(Ok(Outcome::Txn(TxnOutcome::CompareFailed)));
            }
        }
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
                && self.live_lease(*lease)?.is_none()
            {
                return Ok(Err(StoreError::LeaseNotFound(*lease)));
            }
        }
        let revision = self.staged.revision + 1;
        let mut ops = txn.ops;
        // Events of one transaction are reported in key order.
        ops.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    events.push(self.put(key, value, lease, revision)?)
                }
                Op::Delete { key } => events.extend(self.delete(key, revision)?),
            }
        }
        let revision = self.log(events)?;
        Ok(Ok(Outcome::Txn(TxnOutcome::Committed { revision })))
    }

    fn read_kv(&self, key: &str) -> Result<Option<KeyValue>, EmbeddedStoreError> {
        let found = self.t.kv.get(key)?;
        found
            .map(|record| codec::decode_kv(key, record.value()))
            .transpose()
    }

    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
        revision: Revision,
    ) -> Result<WatchEvent, EmbeddedStoreError> {
        let prev = self.read_kv(&key)?;
        let create_revision = prev.as_ref().map_or(revision, |p| p.create_revision);
        let record = codec::encode_kv(create_revision, revision, lease, &value);
        self.t.kv.insert(key.as_str(), record.as_slice())?;
        let old_lease = prev.as_ref().and_then(|p| p.lease);
        if old_lease != lease {
            if let Some(old) = old_lease {
                self.t.lease_keys.remove(old.0, key.as_str())?;
            }
            if let Some(new) = lease {
                self.t.lease_keys.insert(new.0, key.as_str())?;
            }
        }
        Ok(WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
                lease,
            },
            prev,
        })
    }

    /// Deletes `key`; `None` if it was absent (no change, no event).
    fn delete(
        &mut self,
        key: String,
        revision: Revision,
    ) -> Result<Option<WatchEvent>, EmbeddedStoreError> {
        let prev = {
            let removed = self.t.kv.remove(key.as_str())?;
            match removed {
                Some(record) => codec::decode_kv(&key, record.value())?,
                None => return Ok(None),
            }
        };
        if let Some(lease) = prev.lease {
            self.t.lease_keys.remove(lease.0, key.as_str())?;
        }
        Ok(Some(WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                lease: None,
            },
            prev: Some(prev),
        }))
    }

    /// Records the events of one transaction at the next revision, or, if it changed nothing,
    /// reports the current revision without bumping it.
    fn log(&mut self, events: Vec<WatchEvent>) -> Result<Revision, EmbeddedStoreError> {
        if events.is_empty() {
            return Ok(self.staged.revision);
        }
        let revision = self.staged.revision + 1;
        self.t
            .changes
            .insert(revision, codec::encode_events(&events).as_slice())?;
        self.staged.revision = revision;
        self.staged
            .committed
            .push(RevisionEvents { revision, events });
        Ok(revision)
    }

    fn lease(&self, lease: i64) -> Result<Option<(i64, i64)>, EmbeddedStoreError> {
        Ok(self.t.leases.get(lease)?.map(|v| v.value()))
    }

    /// The TTL of `lease` if it exists and has not passed its deadline.
    fn live_lease(&self, lease: LeaseId) -> Result<Option<i64>, EmbeddedStoreError> {
        Ok(match self.lease(lease.0)? {
            Some((ttl, deadline)) if deadline > self.now => Some(ttl),
            _ => None,
        })
    }

    fn deadline(&self, ttl_secs: i64) -> i64 {
        self.now.saturating_add(ttl_secs.saturating_mul(1000))
    }

    fn grant(&mut self, ttl_secs: i64) -> Applied {
        let lease = self.staged.next_lease;
        self.staged.next_lease += 1;
        let deadline = self.deadline(ttl_secs);
        self.t.leases.insert(lease, (ttl_secs, deadline))?;
        self.staged.lease_changes.push((lease, Some(deadline)));
        Ok(Ok(Outcome::Lease(LeaseId(lease))))
    }

    fn keep_alive(&mut self, lease: LeaseId) -> Applied {
        let Some(ttl) = self.live_lease(lease)? else {
            return Ok(Err(StoreError::LeaseNotFound(lease)));
        };
        let deadline = self.deadline(ttl);
        self.t.leases.insert(lease.0, (ttl, deadline))?;
        self.staged.lease_changes.push((lease.0, Some(deadline)));
        Ok(Ok(Outcome::Done))
    }

    fn revoke(&mut self, lease: LeaseId) -> Applied {
        // A lease past its deadline that the reaper has not reached yet is revoked all the same.
        if self.lease(lease.0)?.is_none() {
            return Ok(Err(StoreError::LeaseNotFound(lease)));
        }
        self.drop_lease(lease)?;
        Ok(Ok(Outcome::Done))
    }

    fn expire(&mut self, lease: i64) -> Result<(), EmbeddedStoreError> {
        match self.lease(lease)? {
            Some((_, deadline)) if deadline <= self.now => {
                debug!(lease = %LeaseId(lease), "lease expired");
                self.staged.expired += 1;
                self.drop_lease(LeaseId(lease))
            }
            // Renewed or revoked since the schedule was made: just correct the schedule.
            other => {
                self.staged
                    .lease_changes
                    .push((lease, other.map(|(_, deadline)| deadline)));
                Ok(())
            }
        }
    }

    /// Removes a lease and deletes its keys, in one revision, as etcd does.
    fn drop_lease(&mut self, lease: LeaseId) -> Result<(), EmbeddedStoreError> {
        self.t.leases.remove(lease.0)?;
        let mut keys = Vec::new();
        for key in self.t.lease_keys.remove_all(lease.0)? {
            keys.push(key?.value().to_owned());
        }
        // The multimap yields keys in order, so the events are in key order.
        let revision = self.staged.revision + 1;
        let mut events = Vec::with_capacity(keys.len());
        for key in keys {
            let attached = self.read_kv(&key)?.and_then(|kv| kv.lease) == Some(lease);
            if attached {
                events.extend(self.delete(key, revision)?);
            } else {
                // The index is maintained with every put and delete; never delete a key that
                // belongs to another lease because of a stale entry.
                warn!(%lease, key, "lease index named a key not attached to the lease");
            }
        }
        self.log(events)?;
        self.staged.lease_changes.push((lease.0, None));
        Ok(())
    }

    /// Drops change-log revisions that fall out of the retention window.
    fn compact(&mut self, retention: i64) -> Result<(), EmbeddedStoreError> {
        let threshold = self.staged.revision - retention;
        if threshold > self.staged.compacted {
            self.t.changes.retain_in(..=threshold, |_, _| false)?;
            self.staged.compacted = threshold;
        }
        Ok(())
    }

    fn write_meta(&mut self, writer: &Writer) -> Result<(), EmbeddedStoreError> {
        if self.staged.revision != writer.revision {
            self.t.meta.insert(META_REVISION, self.staged.revision)?;
        }
        if self.staged.compacted != writer.compacted {
            self.t.meta.insert(META_COMPACTED, self.staged.compacted)?;
        }
        if self.staged.next_lease != writer.next_lease {
            self.t
                .meta
                .insert(META_NEXT_LEASE, self.staged.next_lease)?;
        }
        Ok(())
    }
}
