//! The redb tables, and the reads that run in read transactions.

use diego_store::{KeyValue, Listing, Revision, WatchEvent};
use redb::{Database, MultimapTableDefinition, ReadTransaction, ReadableDatabase, TableDefinition};

use crate::{EmbeddedStoreError, codec};

/// Key -> key record (see [`codec`]).
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Store-wide counters, under the `META_*` names.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Lease id -> (TTL in seconds, deadline in wall-clock unix milliseconds).
pub(crate) const LEASES: TableDefinition<i64, (i64, i64)> = TableDefinition::new("leases");
/// Lease id -> the keys attached to it, so that expiry need not scan `kv`.
pub(crate) const LEASE_KEYS: MultimapTableDefinition<i64, &str> =
    MultimapTableDefinition::new("lease_keys");
/// Revision -> the events of that revision (see [`codec`]), for watches that resume.
pub(crate) const CHANGES: TableDefinition<i64, &[u8]> = TableDefinition::new("changes");

/// Layout version of the file, checked at open so that a later layout is not misread.
pub(crate) const META_FORMAT: &str = "format";
/// The store revision: the revision of the last transaction that changed something.
pub(crate) const META_REVISION: &str = "revision";
/// Every revision up to and including this one has been dropped from `changes`.
pub(crate) const META_COMPACTED: &str = "compacted";
/// The id the next granted lease gets; ids are never reused.
pub(crate) const META_NEXT_LEASE: &str = "next_lease";

pub(crate) const FORMAT: i64 = 1;

/// Revisions a catching-up watch reads from the change log at a time, to bound its memory.
pub(crate) const REPLAY_CHUNK: i64 = 1024;
/// ... and at most about this many bytes of logged events (at least one revision), since one
/// revision may hold a hundred records.
pub(crate) const REPLAY_CHUNK_BYTES: usize = 1024 * 1024;

fn meta(tx: &ReadTransaction, name: &str) -> Result<i64, EmbeddedStoreError> {
    let table = tx.open_table(META)?;
    Ok(table.get(name)?.map_or(0, |v| v.value()))
}

/// The current revision and the highest compacted one, read together.
pub(crate) fn revisions(db: &Database) -> Result<(Revision, Revision), EmbeddedStoreError> {
    let tx = db.begin_read()?;
    Ok((meta(&tx, META_REVISION)?, meta(&tx, META_COMPACTED)?))
}

pub(crate) fn get(db: &Database, key: &str) -> Result<Option<KeyValue>, EmbeddedStoreError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(KV)?;
    let found = table.get(key)?;
    found.map(|v| codec::decode_kv(key, v.value())).transpose()
}

pub(crate) fn list(db: &Database, prefix: &str) -> Result<Listing, EmbeddedStoreError> {
    // One read transaction: the keys and the revision are one snapshot.
    let tx = db.begin_read()?;
    let revision = meta(&tx, META_REVISION)?;
    let table = tx.open_table(KV)?;
    let mut kvs = Vec::new();
    for entry in table.range(prefix..)? {
        let (key, value) = entry?;
        let key = key.value();
        // Keys are in byte order, so the prefix's keys are one run starting at the prefix.
        if !key.starts_with(prefix) {
            break;
        }
        kvs.push(codec::decode_kv(key, value.value())?);
    }
    Ok(Listing { kvs, revision })
}

/// One chunk of the change log, for a watch catching up.
#[derive(Debug)]
pub(crate) struct Replay {
    /// The events under the prefix with revision in `(after, through]`.
    pub events: Vec<WatchEvent>,
    /// Every revision up to this one has been read (or did not exist yet).
    pub through: Revision,
    /// The store revision when the chunk was read.
    pub current: Revision,
}

/// Reads the logged events after revision `after`, at most [`REPLAY_CHUNK`] revisions of them.
pub(crate) fn replay(
    db: &Database,
    prefix: &str,
    after: Revision,
) -> Result<Replay, EmbeddedStoreError> {
    let tx = db.begin_read()?;
    let current = meta(&tx, META_REVISION)?;
    let compacted = meta(&tx, META_COMPACTED)?;
    if after < compacted && after < current {
        return Err(EmbeddedStoreError::Compacted {
            requested: after + 1,
            oldest: compacted + 1,
        });
    }
    let mut through = current.min(after.saturating_add(REPLAY_CHUNK));
    let mut events = Vec::new();
    if through > after {
        let table = tx.open_table(CHANGES)?;
        let mut bytes = 0;
        for entry in table.range((after + 1)..=through)? {
            let (revision, value) = entry?;
            bytes += value.value().len();
            events.extend(codec::decode_events(value.value(), prefix)?);
            if bytes >= REPLAY_CHUNK_BYTES {
                through = revision.value();
                break;
            }
        }
    }
    Ok(Replay {
        events,
        through: through.max(after),
        current,
    })
}
