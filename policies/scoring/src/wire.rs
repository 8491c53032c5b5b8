//! The batch's wire form for `diego:auction@0.2.0`: one `list<u8>`, little-endian.
//!
//! Why bytes and not WIT records: lowering a record-of-lists costs a guest allocator call per
//! list and per string plus a field-by-field copy per cell (it was most of a call's cost at
//! 1,000 cells); a byte list is one allocation and one `memcpy`, and decoding it here is one
//! sequential pass. The host encodes ([`encode`]), the SDK decodes ([`decode`]); both sides
//! are this code, so they cannot disagree, and the WIT package version names the layout.
//!
//! Layout (every integer little-endian; `u32` unless said; no padding):
//!
//! ```text
//! header      magic "DAB1" (u32 0x3142_4144), starting-container-weight f64,
//!             bin-pack-first-fit-weight f64, starting-container-count-maximum
//! strings     count, then per string: byte length, UTF-8 bytes
//! id-sets     count, then per set: length, str-ids
//! rootfs      count of provider sets, then per set: length, then per provider:
//!             scheme, stack count (0xFFFF_FFFF = any name of the scheme), stack str-ids
//! cells       count, then per cell (84 bytes): zone, index,
//!             total (memory-mb u64, disk-mb u64, containers), available (same),
//!             starting-containers, proxy-memory-mb u64, rootfs-providers, volume-drivers,
//!             placement-tags, optional-placement-tags, evacuating (0/1), tasks
//! instances   count, then per entry (12 bytes): cell, process-guid, count
//! works       count, then per work (52 bytes): kind (0 LRP, 1 task), guid (process or task),
//!             index (0 for a task), domain, memory-mb u64, disk-mb u64, max-pids,
//!             rootfs scheme, rootfs name, volume-drivers, placement-tags
//! ```
//!
//! Nothing may follow the works. Counts are checked against the bytes left before anything is
//! allocated, so a short or hostile buffer is refused, never over-allocated.

use crate::{
    Batch, Cell, Outcome, ProcessInstances, Resources, Rootfs, RootfsProvider, Settings, StrId,
    Strategy, Work, WorkKind,
};

/// First four bytes of a batch: `DAB1` (diego auction batch, layout 1).
pub const MAGIC: u32 = u32::from_le_bytes(*b"DAB1");

/// `stack count` of a provider that accepts any name of its scheme.
const ANY_STACK: u32 = u32::MAX;

const CELL_BYTES: usize = 84;
const INSTANCES_BYTES: usize = 12;
const WORK_BYTES: usize = 52;

/// Why bytes are not a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed batch: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Bytes [`encode`] will write for `batch` (to size the buffer once).
pub fn encoded_len(batch: &Batch) -> usize {
    let strings: usize = batch.strings.iter().map(|s| 4 + s.len()).sum();
    let sets: usize = batch.id_sets.iter().map(|s| 4 + 4 * s.len()).sum();
    let rootfs: usize = batch
        .rootfs_provider_sets
        .iter()
        .map(|set| {
            4 + set
                .iter()
                .map(|p| 8 + 4 * p.stacks.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
        })
        .sum();
    4 + 20
        + (4 + strings)
        + (4 + sets)
        + (4 + rootfs)
        + (4 + CELL_BYTES * batch.cells.len())
        + (4 + INSTANCES_BYTES * batch.process_instances.len())
        + (4 + WORK_BYTES * batch.works.len())
}

/// Appends `batch`'s wire form to `out`.
pub fn encode_into(batch: &Batch, out: &mut Vec<u8>) {
    out.reserve(encoded_len(batch));
    let u32s = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    let u64s = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
    // A count above u32::MAX cannot be sent: the host caps batches far below that.
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);

    u32s(out, MAGIC);
    u64s(out, batch.settings.starting_container_weight.to_bits());
    u64s(out, batch.settings.bin_pack_first_fit_weight.to_bits());
    u32s(out, batch.settings.starting_container_count_maximum);

    u32s(out, len(batch.strings.len()));
    for s in &batch.strings {
        u32s(out, len(s.len()));
        out.extend_from_slice(s.as_bytes());
    }
    u32s(out, len(batch.id_sets.len()));
    for set in &batch.id_sets {
        u32s(out, len(set.len()));
        for id in set {
            u32s(out, *id);
        }
    }
    u32s(out, len(batch.rootfs_provider_sets.len()));
    for set in &batch.rootfs_provider_sets {
        u32s(out, len(set.len()));
        for p in set {
            u32s(out, p.scheme);
            match &p.stacks {
                None => u32s(out, ANY_STACK),
                Some(stacks) => {
                    u32s(out, len(stacks.len()));
                    for s in stacks {
                        u32s(out, *s);
                    }
                }
            }
        }
    }
    u32s(out, len(batch.cells.len()));
    for c in &batch.cells {
        let mut b = [0u8; CELL_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&c.zone.to_le_bytes());
        put(&c.index.to_le_bytes());
        for r in [&c.total, &c.available] {
            put(&r.memory_mb.to_le_bytes());
            put(&r.disk_mb.to_le_bytes());
            put(&r.containers.to_le_bytes());
        }
        put(&c.starting_containers.to_le_bytes());
        put(&c.proxy_memory_mb.to_le_bytes());
        put(&c.rootfs_providers.to_le_bytes());
        put(&c.volume_drivers.to_le_bytes());
        put(&c.placement_tags.to_le_bytes());
        put(&c.optional_placement_tags.to_le_bytes());
        put(&u32::from(c.evacuating).to_le_bytes());
        put(&c.tasks.to_le_bytes());
        out.extend_from_slice(&b);
    }
    u32s(out, len(batch.process_instances.len()));
    for p in &batch.process_instances {
        u32s(out, p.cell);
        u32s(out, p.process_guid);
        u32s(out, p.count);
    }
    u32s(out, len(batch.works.len()));
    for w in &batch.works {
        let (kind, guid, index, domain) = match w.kind {
            WorkKind::Lrp {
                process_guid,
                index,
                domain,
            } => (0, process_guid, index, domain),
            WorkKind::Task { task_guid, domain } => (1, task_guid, 0, domain),
        };
        let mut b = [0u8; WORK_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&u32::to_le_bytes(kind));
        put(&guid.to_le_bytes());
        put(&index.to_le_bytes());
        put(&domain.to_le_bytes());
        put(&w.memory_mb.to_le_bytes());
        put(&w.disk_mb.to_le_bytes());
        put(&w.max_pids.to_le_bytes());
        put(&w.rootfs.scheme.to_le_bytes());
        put(&w.rootfs.name.to_le_bytes());
        put(&w.volume_drivers.to_le_bytes());
        put(&w.placement_tags.to_le_bytes());
        out.extend_from_slice(&b);
    }
}

/// `batch`'s wire form.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(batch, &mut out);
    out
}

/// Reads fixed-size little-endian fields; every read is bounds-checked once per record.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError(format!(
                "{what}: needs {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.take(4, what).map(|b| le32(b, 0))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.take(8, what).map(|b| le64(b, 0))
    }

    /// A count of items of at least `min_size` bytes each, refused if the bytes left cannot
    /// hold them (so a bogus count never drives an allocation).
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_size) > self.bytes.len() {
            return Err(DecodeError(format!(
                "{what}: count {n} exceeds the {} bytes left",
                self.bytes.len()
            )));
        }
        Ok(n)
    }

    fn ids(&mut self, n: usize, what: &str) -> Result<Vec<u32>, DecodeError> {
        let b = self.take(n.saturating_mul(4), what)?;
        Ok(b.chunks_exact(4).map(|c| le32(c, 0)).collect())
    }
}

// Fixed offsets into a record already bounds-checked by `take`: the slice conversions cannot
// fail, and after inlining the compiler sees the lengths and drops the checks.
#[inline(always)]
fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline(always)]
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A batch's sections; cells and process instances left as bytes, to be read in place.
struct Sections<'a> {
    settings: Settings,
    strings: Vec<String>,
    id_sets: Vec<Vec<StrId>>,
    rootfs_provider_sets: Vec<Vec<RootfsProvider>>,
    cells: &'a [u8],
    instances: &'a [u8],
    works: Vec<Work>,
}

fn cell_at(c: &[u8]) -> Cell {
    Cell {
        zone: le32(c, 0),
        index: le32(c, 4),
        total: Resources {
            memory_mb: le64(c, 8),
            disk_mb: le64(c, 16),
            containers: le32(c, 24),
        },
        available: Resources {
            memory_mb: le64(c, 28),
            disk_mb: le64(c, 36),
            containers: le32(c, 44),
        },
        starting_containers: le32(c, 48),
        proxy_memory_mb: le64(c, 52),
        rootfs_providers: le32(c, 60),
        volume_drivers: le32(c, 64),
        placement_tags: le32(c, 68),
        optional_placement_tags: le32(c, 72),
        evacuating: le32(c, 76) != 0,
        tasks: le32(c, 80),
    }
}

fn instances_at(p: &[u8]) -> ProcessInstances {
    ProcessInstances {
        cell: le32(p, 0),
        process_guid: le32(p, 4),
        count: le32(p, 8),
    }
}

/// Splits `bytes` into sections. `keep_strings: false` skips the string table (scoring never
/// reads it) without allocating.
fn sections(bytes: &[u8], keep_strings: bool) -> Result<Sections<'_>, DecodeError> {
    let mut r = Reader { bytes };
    let magic = r.u32("magic")?;
    if magic != MAGIC {
        return Err(DecodeError(format!(
            "magic {magic:#010x}, expected {MAGIC:#010x} (DAB1)"
        )));
    }
    let settings = Settings {
        starting_container_weight: f64::from_bits(r.u64("settings")?),
        bin_pack_first_fit_weight: f64::from_bits(r.u64("settings")?),
        starting_container_count_maximum: r.u32("settings")?,
    };

    let n = r.count(4, "strings")?;
    let mut strings = Vec::with_capacity(if keep_strings { n } else { 0 });
    for i in 0..n {
        let len = r.u32("string length")? as usize;
        let b = r.take(len, "string")?;
        if keep_strings {
            let s = std::str::from_utf8(b).map_err(|e| DecodeError(format!("string {i}: {e}")))?;
            strings.push(s.to_owned());
        }
    }

    let n = r.count(4, "id sets")?;
    let mut id_sets = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u32("id set length")? as usize;
        id_sets.push(r.ids(len, "id set")?);
    }

    let n = r.count(4, "rootfs provider sets")?;
    let mut rootfs_provider_sets = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.count(8, "rootfs providers")?;
        let mut set = Vec::with_capacity(len);
        for _ in 0..len {
            let scheme = r.u32("rootfs provider")?;
            let stacks = match r.u32("rootfs provider")? {
                ANY_STACK => None,
                k => Some(r.ids(k as usize, "rootfs stacks")?),
            };
            set.push(RootfsProvider { scheme, stacks });
        }
        rootfs_provider_sets.push(set);
    }

    let n = r.count(CELL_BYTES, "cells")?;
    let cells = r.take(n * CELL_BYTES, "cells")?;
    let n = r.count(INSTANCES_BYTES, "process instances")?;
    let instances = r.take(n * INSTANCES_BYTES, "process instances")?;

    let n = r.count(WORK_BYTES, "works")?;
    let works = r
        .take(n * WORK_BYTES, "works")?
        .chunks_exact(WORK_BYTES)
        .map(|w| {
            let kind = match le32(w, 0) {
                0 => WorkKind::Lrp {
                    process_guid: le32(w, 4),
                    index: le32(w, 8),
                    domain: le32(w, 12),
                },
                1 => WorkKind::Task {
                    task_guid: le32(w, 4),
                    domain: le32(w, 12),
                },
                k => return Err(DecodeError(format!("work kind {k}"))),
            };
            Ok(Work {
                kind,
                memory_mb: le64(w, 16),
                disk_mb: le64(w, 24),
                max_pids: le32(w, 32),
                rootfs: Rootfs {
                    scheme: le32(w, 36),
                    name: le32(w, 40),
                },
                volume_drivers: le32(w, 44),
                placement_tags: le32(w, 48),
            })
        })
        .collect::<Result<Vec<Work>, DecodeError>>()?;

    if !r.bytes.is_empty() {
        return Err(DecodeError(format!(
            "{} bytes after the works",
            r.bytes.len()
        )));
    }
    Ok(Sections {
        settings,
        strings,
        id_sets,
        rootfs_provider_sets,
        cells,
        instances,
        works,
    })
}

/// Parses a batch written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
    let s = sections(bytes, true)?;
    Ok(Batch {
        strings: s.strings,
        settings: s.settings,
        id_sets: s.id_sets,
        rootfs_provider_sets: s.rootfs_provider_sets,
        cells: s.cells.chunks_exact(CELL_BYTES).map(cell_at).collect(),
        process_instances: s
            .instances
            .chunks_exact(INSTANCES_BYTES)
            .map(instances_at)
            .collect(),
        works: s.works,
    })
}

/// [`crate::place`] straight from the wire bytes: the same scoring, answering exactly as
/// `place(&decode(bytes)?, strategy)` does, but cells and process instances are read in place
/// and the string table is skipped. Why: in a guest, building the decoded batch (a heap copy
/// of every cell) cost about as much as scoring a few work items, and every page it dirtied
/// is reset after the call.
pub fn place(bytes: &[u8], strategy: Strategy) -> Result<Vec<Outcome>, DecodeError> {
    let s = sections(bytes, false)?;
    Ok(crate::place_parts(
        crate::Parts {
            settings: &s.settings,
            sets: crate::Sets {
                id_sets: &s.id_sets,
                rootfs_provider_sets: &s.rootfs_provider_sets,
            },
            works: &s.works,
        },
        s.cells.chunks_exact(CELL_BYTES).map(cell_at),
        s.instances.chunks_exact(INSTANCES_BYTES).map(instances_at),
        strategy,
    ))
}
