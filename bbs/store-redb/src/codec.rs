//! Byte layouts of the records the store keeps in redb.
//!
//! Both layouts are little-endian and self-delimiting, and decoding never panics: a record that
//! does not parse is reported as [`EmbeddedStoreError::Corrupt`] (redb's checksums make that a
//! "should never happen", but a store must not crash on a bad page).
//!
//! - A **key record** (table `kv`) is `create_revision: i64`, `mod_revision: i64`,
//!   `lease: i64` (0 = none), then the value bytes up to the end.
//! - A **revision record** (table `changes`) is the events of one revision: `count: u64`, then per
//!   event `kind: u8` (0 put, 1 delete), `key` (u64 length + bytes), the event's key record
//!   fields (`create`, `mod`, `lease`, value as u64 length + bytes), then `has_prev: u8` and, if 1,
//!   the previous key record's fields in the same form. The previous key is the event's key, so
//!   it is not stored twice.

use diego_store::{EventKind, KeyValue, LeaseId, Revision, WatchEvent};

use crate::EmbeddedStoreError;

/// Length of a key record's header, before the value.
const HEADER: usize = 24;

/// Encodes a key record.
pub(crate) fn encode_kv(
    create: Revision,
    modified: Revision,
    lease: Option<LeaseId>,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(&lease_to_raw(lease).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a key record stored under `key`.
pub(crate) fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue, EmbeddedStoreError> {
    let mut r = Reader::new(bytes, key);
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let lease = lease_from_raw(r.i64()?);
    Ok(KeyValue {
        key: key.to_owned(),
        value: r.rest().to_vec(),
        create_revision,
        mod_revision,
        lease,
    })
}

/// Reads only the mod revision of a key record: what a compare needs, without copying the value.
pub(crate) fn kv_mod_revision(key: &str, bytes: &[u8]) -> Result<Revision, EmbeddedStoreError> {
    let mut r = Reader::new(bytes, key);
    r.i64()?;
    r.i64()
}

/// Encodes the events of one revision.
pub(crate) fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let size: usize = events
        .iter()
        .map(|e| {
            64 + e.kv.key.len()
                + e.kv.value.len()
                + e.prev.as_ref().map_or(0, |p| 32 + p.value.len())
        })
        .sum();
    let mut out = Vec::with_capacity(8 + size);
    put_len(&mut out, events.len());
    for event in events {
        out.push(match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        put_len(&mut out, event.kv.key.len());
        out.extend_from_slice(event.kv.key.as_bytes());
        put_fields(&mut out, &event.kv);
        match &event.prev {
            None => out.push(0),
            Some(prev) => {
                out.push(1);
                put_fields(&mut out, prev);
            }
        }
    }
    out
}

/// Decodes the events of one revision, keeping only those whose key starts with `prefix`.
pub(crate) fn decode_events(
    bytes: &[u8],
    prefix: &str,
) -> Result<Vec<WatchEvent>, EmbeddedStoreError> {
    let mut r = Reader::new(bytes, "change log");
    let count = r.len()?;
    let mut events = Vec::new();
    for _ in 0..count {
        let kind = match r.u8()? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => return Err(r.corrupt(&format!("event kind {other}"))),
        };
        let key_len = r.len()?;
        let key =
            std::str::from_utf8(r.take(key_len)?).map_err(|_| r.corrupt("key is not UTF-8"))?;
        // Skip other prefixes without allocating their values.
        let keep = key.starts_with(prefix);
        let kv = r.fields(key, keep)?;
        let prev = match r.u8()? {
            0 => None,
            1 => Some(r.fields(key, keep)?),
            other => return Err(r.corrupt(&format!("prev marker {other}"))),
        };
        if keep {
            events.push(WatchEvent { kind, kv, prev });
        }
    }
    if !r.rest().is_empty() {
        return Err(r.corrupt("trailing bytes"));
    }
    Ok(events)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_fields(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&lease_to_raw(kv.lease).to_le_bytes());
    put_len(out, kv.value.len());
    out.extend_from_slice(&kv.value);
}

fn lease_to_raw(lease: Option<LeaseId>) -> i64 {
    lease.map_or(0, |l| l.0)
}

fn lease_from_raw(raw: i64) -> Option<LeaseId> {
    (raw != 0).then_some(LeaseId(raw))
}

/// A cursor over a record that reports truncation instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'a str) -> Self {
        Self { bytes, what }
    }

    fn corrupt(&self, why: &str) -> EmbeddedStoreError {
        EmbeddedStoreError::Corrupt(format!("record of {:?}: {why}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], EmbeddedStoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EmbeddedStoreError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, EmbeddedStoreError> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| self.corrupt("truncated"))?;
        Ok(i64::from_le_bytes(bytes))
    }

    fn len(&mut self) -> Result<usize, EmbeddedStoreError> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| self.corrupt("truncated"))?;
        usize::try_from(u64::from_le_bytes(bytes)).map_err(|_| self.corrupt("length overflows"))
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// Reads the key-record fields of an event; `keep` false skips the value without copying it.
    fn fields(&mut self, key: &str, keep: bool) -> Result<KeyValue, EmbeddedStoreError> {
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        let lease = lease_from_raw(self.i64()?);
        let len = self.len()?;
        let value = self.take(len)?;
        Ok(KeyValue {
            key: if keep { key.to_owned() } else { String::new() },
            value: if keep { value.to_vec() } else { Vec::new() },
            create_revision,
            mod_revision,
            lease,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_records_round_trip() {
        let bytes = encode_kv(3, 7, Some(LeaseId(9)), b"value");
        let kv = decode_kv("k", &bytes).unwrap();
        assert_eq!(
            kv,
            KeyValue {
                key: "k".into(),
                value: b"value".to_vec(),
                create_revision: 3,
                mod_revision: 7,
                lease: Some(LeaseId(9))
            }
        );
        assert_eq!(kv_mod_revision("k", &bytes).unwrap(), 7);
        assert!(decode_kv("k", &bytes[..10]).is_err());
    }

    #[test]
    fn revision_records_round_trip_and_filter() {
        let put = WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: "a/1".into(),
                value: b"new".to_vec(),
                create_revision: 2,
                mod_revision: 5,
                lease: None,
            },
            prev: Some(KeyValue {
                key: "a/1".into(),
                value: b"old".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                lease: Some(LeaseId(4)),
            }),
        };
        let delete = WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: "b/1".into(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 5,
                lease: None,
            },
            prev: None,
        };
        let bytes = encode_events(&[put.clone(), delete.clone()]);
        assert_eq!(
            decode_events(&bytes, "").unwrap(),
            vec![put.clone(), delete]
        );
        assert_eq!(decode_events(&bytes, "a/").unwrap(), vec![put]);
        for cut in 0..bytes.len() {
            assert!(
                decode_events(&bytes[..cut], "").is_err(),
                "a record cut at {cut} must not parse"
            );
        }
    }
}
