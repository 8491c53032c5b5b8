//! Diego's auction scoring as a pure function of a batch.
//!
//! This crate is compiled twice: natively by `diego-host` (the fallback policy and the
//! benchmark baseline) and into the `policies/classic` Wasm guest (the policy the platform
//! loads by default). Both must give bit-identical answers, so everything here is plain
//! integer/f64 arithmetic with a deterministic order: no hashing order, no clocks, no I/O.
//!
//! The data model is what `diego:auction@0.2.0` (plugin-sdk/wit/auction/auction.wit) carries,
//! in the byte layout of [`wire`]: strings are interned in [`Batch::strings`] and referred to
//! by [`StrId`]; the producer of a batch interns uniquely, so equal ids mean equal strings.
//!
//! Semantics follow Diego's `auctionrunner` (see shared spec `diego.md` §4):
//! - hard filters per zone, in order: rootfs, volume drivers, placement tags, then resources;
//! - LRP score = resource score (memory + the cell's proxy memory) + 1000 × instances of the same
//!   process on the cell + bin-pack index × `bin_pack_first_fit_weight`;
//! - resource score = mean fraction used of memory, disk, containers after placement +
//!   starting containers × `starting_container_weight`;
//! - task score = resource score + 1000 × tasks on the cell;
//! - zone balancing for LRPs: zones in ascending order of instances of the process; zones that
//!   tie are pooled; stop at the first tie group with a winner;
//! - greedy: each placement updates the cell (resources, starting count, instance lists), so
//!   later decisions in the batch see it;
//! - order: LRPs with index 0 first, then tasks, then LRPs with index > 0; LRPs by index
//!   ascending then memory descending, tasks by memory descending (stable, so equal items keep
//!   batch order — Diego's Go sort is unstable, we want replayable auctions).
//!
//! Where Diego's Go code iterates maps (zones, cells), we use batch order (zones in the order
//! of their first cell), so ties are broken deterministically.

use std::collections::HashMap;

pub mod testing;
mod validate;
pub mod wire;
pub use validate::{InvalidPlacement, validate_outcomes};

/// Index into [`Batch::strings`].
pub type StrId = u32;

/// Index into [`Batch::id_sets`]: a set of strings (volume drivers, placement tags).
pub type SetId = u32;

/// Diego's `LocalityOffset`: the penalty per instance of the same process (or per task) already
/// on a cell.
pub const LOCALITY_OFFSET: f64 = 1000.0;

/// Diego's initial "best score": any real score beats it.
const INITIAL_BEST: f64 = 1e20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub containers: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsProvider {
    pub scheme: StrId,
    /// `None`: any rootfs of this scheme (docker); `Some`: only these names (preloaded stacks).
    pub stacks: Option<Vec<StrId>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub zone: StrId,
    /// The rep's reported CellIndex.
    pub index: u32,
    pub total: Resources,
    pub available: Resources,
    pub starting_containers: u32,
    pub proxy_memory_mb: u64,
    /// Index into [`Batch::rootfs_provider_sets`].
    pub rootfs_providers: u32,
    pub volume_drivers: SetId,
    pub placement_tags: SetId,
    pub optional_placement_tags: SetId,
    pub evacuating: bool,
    pub tasks: u32,
}

/// `count` instances of `process_guid` already on `batch.cells[cell]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInstances {
    pub cell: u32,
    pub process_guid: StrId,
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rootfs {
    pub scheme: StrId,
    pub name: StrId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Lrp {
        process_guid: StrId,
        index: u32,
        domain: StrId,
    },
    Task {
        task_guid: StrId,
        domain: StrId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub kind: WorkKind,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub max_pids: u32,
    pub rootfs: Rootfs,
    pub volume_drivers: SetId,
    pub placement_tags: SetId,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub starting_container_weight: f64,
    pub bin_pack_first_fit_weight: f64,
    /// 0 = unlimited.
    pub starting_container_count_maximum: u32,
}

impl Default for Settings {
    /// Diego's auctioneer defaults.
    fn default() -> Self {
        Settings {
            starting_container_weight: 0.25,
            bin_pack_first_fit_weight: 0.0,
            starting_container_count_maximum: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub strings: Vec<String>,
    pub settings: Settings,
    /// Distinct sets of strings; cells and works refer to them by [`SetId`].
    pub id_sets: Vec<Vec<StrId>>,
    /// Distinct rootfs provider sets; cells refer to one by index.
    pub rootfs_provider_sets: Vec<Vec<RootfsProvider>>,
    pub cells: Vec<Cell>,
    pub process_instances: Vec<ProcessInstances>,
    pub works: Vec<Work>,
}

impl Batch {
    /// The interned string, or `""` for an id out of range (only used for messages).
    pub fn str(&self, id: StrId) -> &str {
        self.strings.get(id as usize).map_or("", String::as_str)
    }

    /// The interned set, or the empty set for an id out of range.
    pub fn set(&self, id: SetId) -> &[StrId] {
        self.id_sets.get(id as usize).map_or(&[], Vec::as_slice)
    }
}

/// Which resources were short on every cell that passed the other filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shortfall {
    pub disk: bool,
    pub memory: bool,
    pub containers: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    NoCells,
    RootfsMismatch,
    VolumeDriverMismatch,
    PlacementTagMismatch,
    InsufficientResources(Shortfall),
    InflightStartLimit,
    Other(String),
}

impl PlacementError {
    /// Diego's `placement_error` string for this error on `work`.
    pub fn message(&self, batch: &Batch, work: &Work) -> String {
        match self {
            PlacementError::NoCells => "unable to communicate to compatible cells".to_owned(),
            PlacementError::RootfsMismatch => {
                "found no compatible cell for required rootfs".to_owned()
            }
            PlacementError::VolumeDriverMismatch => {
                "found no compatible cell with required volume drivers".to_owned()
            }
            PlacementError::PlacementTagMismatch => {
                let tags: Vec<String> = batch
                    .set(work.placement_tags)
                    .iter()
                    .map(|t| format!("\"{}\"", batch.str(*t)))
                    .collect();
                match tags.as_slice() {
                    [] => "found no compatible cell with no placement tags".to_owned(),
                    [one] => format!("found no compatible cell with placement tag {one}"),
                    [init @ .., last] => format!(
                        "found no compatible cell with placement tags {} and {last}",
                        init.join(", ")
                    ),
                }
            }
            PlacementError::InsufficientResources(s) => {
                // Sorted, as Diego sorts the problem names.
                let mut problems = Vec::new();
                if s.containers {
                    problems.push("containers");
                }
                if s.disk {
                    problems.push("disk");
                }
                if s.memory {
                    problems.push("memory");
                }
                if problems.is_empty() {
                    "insufficient resources".to_owned()
                } else {
                    format!("insufficient resources: {}", problems.join(", "))
                }
            }
            PlacementError::InflightStartLimit => {
                "waiting to start instance: reached in-flight start limit".to_owned()
            }
            PlacementError::Other(m) => m.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Index into `batch.cells`.
    Placed(u32),
    Failed(PlacementError),
}

/// The scoring rule. `Classic` is Diego's; the others are the shipped alternatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Diego's balance-by-resources with zone balancing and locality.
    #[default]
    Classic,
    /// Fill the fullest cell that fits first (fewest cells busy): the resource term is
    /// inverted and starting containers do not count against a cell; same-process
    /// anti-affinity is kept so instances still spread across cells.
    Binpack,
    /// Spread by container count: fewest containers wins, with Diego's locality and zone
    /// balancing; memory and disk only filter.
    Spread,
}

/// Diego's classic policy.
pub fn place_classic(batch: &Batch) -> Vec<Outcome> {
    place(batch, Strategy::Classic)
}

/// Places every work item of `batch`; one outcome per item, in `batch.works` order.
pub fn place(batch: &Batch, strategy: Strategy) -> Vec<Outcome> {
    place_parts(
        Parts {
            settings: &batch.settings,
            sets: Sets::of(batch),
            works: &batch.works,
        },
        batch.cells.iter().cloned(),
        batch.process_instances.iter().copied(),
        strategy,
    )
}

/// What the scoring reads of a batch besides its cells and process instances, which it reads
/// once, in order (so that a caller can stream them, as [`wire::place`] does from the bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub settings: &'a Settings,
    pub sets: Sets<'a>,
    pub works: &'a [Work],
}

/// The interned sets the hard filters look up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sets<'a> {
    pub id_sets: &'a [Vec<StrId>],
    pub rootfs_provider_sets: &'a [Vec<RootfsProvider>],
}

impl<'a> Sets<'a> {
    fn of(batch: &'a Batch) -> Self {
        Sets {
            id_sets: &batch.id_sets,
            rootfs_provider_sets: &batch.rootfs_provider_sets,
        }
    }

    fn set(&self, id: SetId) -> &'a [StrId] {
        self.id_sets.get(id as usize).map_or(&[], Vec::as_slice)
    }
}

pub(crate) fn place_parts(
    parts: Parts<'_>,
    cells: impl ExactSizeIterator<Item = Cell>,
    instances: impl Iterator<Item = ProcessInstances>,
    strategy: Strategy,
) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = vec![None; parts.works.len()];
    let mut state = State::new(parts, cells, instances, strategy);
    for w in auction_order(parts.works) {
        let outcome = state.place_one(&parts.works[w]);
        out[w] = Some(outcome);
    }
    out.into_iter()
        .map(|o| o.unwrap_or(Outcome::Failed(PlacementError::NoCells)))
        .collect()
}

/// Indices of `works` in Diego's auction order.
pub fn auction_order(works: &[Work]) -> Vec<usize> {
    let mut first: Vec<usize> = Vec::new();
    let mut tasks: Vec<usize> = Vec::new();
    let mut later: Vec<usize> = Vec::new();
    for (i, w) in works.iter().enumerate() {
        match w.kind {
            WorkKind::Lrp { index: 0, .. } => first.push(i),
            WorkKind::Lrp { .. } => later.push(i),
            WorkKind::Task { .. } => tasks.push(i),
        }
    }
    let lrp_index = |i: usize| match works[i].kind {
        WorkKind::Lrp { index, .. } => index,
        WorkKind::Task { .. } => 0,
    };
    // sort_by is stable: equal keys keep batch order.
    first.sort_by(|a, b| works[*b].memory_mb.cmp(&works[*a].memory_mb));
    tasks.sort_by(|a, b| works[*b].memory_mb.cmp(&works[*a].memory_mb));
    later.sort_by(|a, b| {
        lrp_index(*a)
            .cmp(&lrp_index(*b))
            .then(works[*b].memory_mb.cmp(&works[*a].memory_mb))
    });
    first.extend(tasks);
    first.extend(later);
    first
}

/// Whether `cell` can run `rootfs` (rep `RootFSProviders.Match`). A provider set index out of
/// range matches nothing.
pub fn matches_rootfs(batch: &Batch, cell: &Cell, rootfs: &Rootfs) -> bool {
    rootfs_ok(Sets::of(batch), cell.rootfs_providers, rootfs)
}

/// Every requested driver is on the cell.
pub fn matches_volume_drivers(batch: &Batch, cell: &Cell, drivers: SetId) -> bool {
    drivers_ok(Sets::of(batch), cell.volume_drivers, drivers)
}

/// The cell's required tags ⊆ desired, and desired ⊆ required ∪ optional.
pub fn matches_placement_tags(batch: &Batch, cell: &Cell, desired: SetId) -> bool {
    tags_ok(Sets::of(batch), &FilterKey::of(cell), desired)
}

fn rootfs_ok(sets: Sets<'_>, providers: u32, rootfs: &Rootfs) -> bool {
    let Some(providers) = sets.rootfs_provider_sets.get(providers as usize) else {
        return false;
    };
    providers
        .iter()
        .find(|p| p.scheme == rootfs.scheme)
        .is_some_and(|p| match &p.stacks {
            None => true,
            Some(stacks) => stacks.contains(&rootfs.name),
        })
}

fn drivers_ok(sets: Sets<'_>, have: SetId, wanted: SetId) -> bool {
    let have = sets.set(have);
    sets.set(wanted).iter().all(|d| have.contains(d))
}

fn tags_ok(sets: Sets<'_>, cell: &FilterKey, desired: SetId) -> bool {
    if cell.placement_tags == desired {
        // Same interned set (typically both empty): required == desired.
        return true;
    }
    let desired = sets.set(desired);
    let required = sets.set(cell.placement_tags);
    let optional = sets.set(cell.optional_placement_tags);
    required.iter().all(|t| desired.contains(t))
        && desired
            .iter()
            .all(|t| required.contains(t) || optional.contains(t))
}

/// What the hard filters read of a cell: cells with equal keys pass or fail together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FilterKey {
    rootfs_providers: u32,
    volume_drivers: SetId,
    placement_tags: SetId,
    optional_placement_tags: SetId,
}

impl FilterKey {
    fn of(cell: &Cell) -> Self {
        FilterKey {
            rootfs_providers: cell.rootfs_providers,
            volume_drivers: cell.volume_drivers,
            placement_tags: cell.placement_tags,
            optional_placement_tags: cell.optional_placement_tags,
        }
    }
}

/// How far a cell got through the hard filters; the furthest across all cells names the error
/// (placement tags beat volume drivers beat rootfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FilterLevel {
    Rootfs = 0,
    VolumeDrivers = 1,
    PlacementTags = 2,
    Passed = 3,
}

fn filter_level(sets: Sets<'_>, cell: &FilterKey, work: &Work) -> FilterLevel {
    if !rootfs_ok(sets, cell.rootfs_providers, &work.rootfs) {
        FilterLevel::Rootfs
    } else if !drivers_ok(sets, cell.volume_drivers, work.volume_drivers) {
        FilterLevel::VolumeDrivers
    } else if !tags_ok(sets, cell, work.placement_tags) {
        FilterLevel::PlacementTags
    } else {
        FilterLevel::Passed
    }
}

/// A cell as the auction sees it while it places the batch: everything scoring reads of it,
/// in one place (the batch's cells are read once, by `State::new`).
#[derive(Debug, Clone)]
struct LiveCell {
    /// Index into `batch.cells`.
    cell: u32,
    /// The rep's CellIndex.
    index: u32,
    total: Resources,
    proxy_memory_mb: u64,
    /// Index into `State::zones`.
    zone: u32,
    /// Index into `State::classes`.
    class: u32,
    /// The bin-pack index: rank by reported CellIndex within the zone.
    bin_index: u32,
    available: Resources,
    starting: u32,
    tasks: u32,
}

/// Hasher for interned ids (dense small integers from a trusted producer): one multiply
/// instead of SipHash, which costs ~3x more in Wasm than natively and showed in profiles.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // Fx-style: rotate-xor-multiply by an odd constant spreads low and high bits.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type IdMap<V> = HashMap<StrId, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
struct State<'a> {
    settings: &'a Settings,
    sets: Sets<'a>,
    strategy: Strategy,
    cells: Vec<LiveCell>,
    /// Per zone, indices into `cells`, in batch order.
    zones: Vec<Vec<u32>>,
    /// Filter classes: the distinct filter keys of the live cells. The hard filters depend
    /// only on these, so they are evaluated once per class per work item instead of once per
    /// cell (they were half of the scoring time, and twice slower in Wasm than natively).
    classes: Vec<FilterKey>,
    /// Scratch, one slot per class: the filter level of the work item being placed.
    levels: Vec<FilterLevel>,
    /// Per process guid: (index into `cells`, instances), possibly several entries per cell.
    instances: IdMap<Vec<(u32, u32)>>,
    /// Scratch, one slot per live cell: instances of the process being placed.
    locality: Vec<u32>,
    /// Scratch, one slot per zone: instances of the process being placed.
    zone_instances: Vec<u32>,
    /// Scratch: (instances of the process, zone) in the order zones are tried.
    zone_order: Vec<(u32, u32)>,
    starting_total: u64,
}

impl<'a> State<'a> {
    fn new(
        parts: Parts<'a>,
        batch_cells: impl ExactSizeIterator<Item = Cell>,
        batch_instances: impl Iterator<Item = ProcessInstances>,
        strategy: Strategy,
    ) -> Self {
        let mut cells = Vec::with_capacity(batch_cells.len());
        let mut zone_ids: Vec<StrId> = Vec::new();
        let mut zones: Vec<Vec<u32>> = Vec::new();
        let mut classes: Vec<FilterKey> = Vec::new();
        // Batch index -> live index (evacuating cells are not live: Diego ignores their state).
        let mut live_of: Vec<Option<u32>> = vec![None; batch_cells.len()];
        for (i, c) in batch_cells.enumerate() {
            if c.evacuating {
                continue;
            }
            let zone = match zone_ids.iter().position(|z| *z == c.zone) {
                Some(z) => z,
                None => {
                    zone_ids.push(c.zone);
                    zones.push(Vec::new());
                    zone_ids.len() - 1
                }
            };
            let key = FilterKey::of(&c);
            // Cells of one kind share their sets, so there are few classes: a linear scan
            // (from the newest) beats hashing here.
            let class = match classes.iter().rposition(|k| *k == key) {
                Some(k) => k,
                None => {
                    classes.push(key);
                    classes.len() - 1
                }
            };
            let live = cells.len() as u32;
            live_of[i] = Some(live);
            zones[zone].push(live);
            cells.push(LiveCell {
                cell: i as u32,
                index: c.index,
                total: c.total,
                proxy_memory_mb: c.proxy_memory_mb,
                zone: zone as u32,
                class: class as u32,
                bin_index: 0,
                available: c.available,
                starting: c.starting_containers,
                tasks: c.tasks,
            });
        }
        if parts.settings.bin_pack_first_fit_weight > 0.0 {
            for zone in &zones {
                let mut by_index = zone.clone();
                by_index.sort_by_key(|l| cells[*l as usize].index);
                for (rank, l) in by_index.into_iter().enumerate() {
                    cells[l as usize].bin_index = rank as u32;
                }
            }
        }
        let mut instances: IdMap<Vec<(u32, u32)>> = IdMap::default();
        for pi in batch_instances {
            let Some(Some(live)) = live_of.get(pi.cell as usize) else {
                continue;
            };
            // Duplicates of a (cell, process) pair are summed when read (see `place_lrp`): a
            // linear dedupe here would be quadratic for a process on every cell.
            instances
                .entry(pi.process_guid)
                .or_default()
                .push((*live, pi.count));
        }
        let starting_total = cells.iter().map(|c| u64::from(c.starting)).sum();
        State {
            settings: parts.settings,
            sets: parts.sets,
            strategy,
            locality: vec![0; cells.len()],
            zone_instances: vec![0; zones.len()],
            zone_order: Vec::with_capacity(zones.len()),
            levels: vec![FilterLevel::Rootfs; classes.len()],
            classes,
            cells,
            zones,
            instances,
            starting_total,
        }
    }

    fn place_one(&mut self, work: &Work) -> Outcome {
        if self.cells.is_empty() {
            return Outcome::Failed(PlacementError::NoCells);
        }
        let max = self.settings.starting_container_count_maximum;
        if max > 0 && u64::from(max) <= self.starting_total {
            return Outcome::Failed(PlacementError::InflightStartLimit);
        }
        let result = match work.kind {
            WorkKind::Lrp { process_guid, .. } => self.place_lrp(work, process_guid),
            WorkKind::Task { .. } => self.place_task(work),
        };
        match result {
            Ok(live) => {
                self.reserve(live, work);
                Outcome::Placed(self.cells[live].cell)
            }
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Fills `self.levels` for `work` (one entry per class); errs with the most specific
    /// filter error when no live cell passes.
    fn filter(&mut self, work: &Work) -> Result<(), PlacementError> {
        let mut furthest = FilterLevel::Rootfs;
        for (level, key) in self.levels.iter_mut().zip(&self.classes) {
            *level = filter_level(self.sets, key, work);
            furthest = furthest.max(*level);
        }
        match furthest {
            FilterLevel::Passed => Ok(()),
            FilterLevel::Rootfs => Err(PlacementError::RootfsMismatch),
            FilterLevel::VolumeDrivers => Err(PlacementError::VolumeDriverMismatch),
            FilterLevel::PlacementTags => Err(PlacementError::PlacementTagMismatch),
        }
    }

    fn place_lrp(&mut self, work: &Work, process: StrId) -> Result<usize, PlacementError> {
        self.filter(work)?;
        // Locality and zone counts for this process, into the scratch arrays.
        if let Some(list) = self.instances.get(&process) {
            for &(l, n) in list {
                self.locality[l as usize] += n;
                self.zone_instances[self.cells[l as usize].zone as usize] += n;
            }
        }
        // Every zone is tried, also those where no cell passes the filters: they score
        // nothing, so the winner and the tie groups are those of the passing zones.
        let mut zone_order = std::mem::take(&mut self.zone_order);
        zone_order.clear();
        zone_order.extend(
            self.zone_instances
                .iter()
                .enumerate()
                .map(|(z, n)| (*n, z as u32)),
        );
        let balance_zones = self.strategy != Strategy::Binpack;
        if balance_zones {
            // Stable: zones with equal counts keep batch order.
            zone_order.sort_by_key(|(n, _)| *n);
        }
        let mut shortfall = Shortfall {
            disk: true,
            memory: true,
            containers: true,
        };
        let mut winner: Option<usize> = None;
        let mut best = INITIAL_BEST;
        for (i, &(n, z)) in zone_order.iter().enumerate() {
            for &l in &self.zones[z as usize] {
                let l = l as usize;
                if self.levels[self.cells[l].class as usize] != FilterLevel::Passed {
                    continue;
                }
                match self.score_lrp(l, work) {
                    Ok(score) => {
                        if score < best {
                            best = score;
                            winner = Some(l);
                        }
                    }
                    Err(s) => intersect(&mut shortfall, s),
                }
            }
            // Without zone balancing every zone is one pool.
            let last_of_tie_group =
                i + 1 == zone_order.len() || (balance_zones && n < zone_order[i + 1].0);
            if last_of_tie_group && winner.is_some() {
                break;
            }
        }
        self.zone_order = zone_order;
        // Reset the scratch arrays for the next item.
        if let Some(list) = self.instances.get(&process) {
            for &(l, _) in list {
                self.locality[l as usize] = 0;
                self.zone_instances[self.cells[l as usize].zone as usize] = 0;
            }
        }
        winner.ok_or(PlacementError::InsufficientResources(shortfall))
    }

    fn place_task(&mut self, work: &Work) -> Result<usize, PlacementError> {
        self.filter(work)?;
        let mut shortfall = Shortfall {
            disk: true,
            memory: true,
            containers: true,
        };
        let mut winner = None;
        let mut best = INITIAL_BEST;
        for members in &self.zones {
            for &l in members {
                let l = l as usize;
                if self.levels[self.cells[l].class as usize] != FilterLevel::Passed {
                    continue;
                }
                match self.score_task(l, work) {
                    Ok(score) => {
                        if score < best {
                            best = score;
                            winner = Some(l);
                        }
                    }
                    Err(s) => intersect(&mut shortfall, s),
                }
            }
        }
        winner.ok_or(PlacementError::InsufficientResources(shortfall))
    }

    fn score_lrp(&self, l: usize, work: &Work) -> Result<f64, Shortfall> {
        let cell = &self.cells[l];
        // Diego scores (and filters) an LRP with the cell's proxy memory added.
        let memory = work.memory_mb.saturating_add(cell.proxy_memory_mb);
        resource_match(&cell.available, memory, work.disk_mb)?;
        let locality = LOCALITY_OFFSET * f64::from(self.locality[l]);
        let resource = self.resource_score(cell, memory, work.disk_mb);
        let bin = f64::from(cell.bin_index) * self.settings.bin_pack_first_fit_weight;
        Ok(resource + locality + bin)
    }

    fn score_task(&self, l: usize, work: &Work) -> Result<f64, Shortfall> {
        let cell = &self.cells[l];
        resource_match(&cell.available, work.memory_mb, work.disk_mb)?;
        let locality = LOCALITY_OFFSET * f64::from(cell.tasks);
        Ok(self.resource_score(cell, work.memory_mb, work.disk_mb) + locality)
    }

    fn resource_score(&self, cell: &LiveCell, memory: u64, disk: u64) -> f64 {
        let frac_used = |avail: u64, want: u64, total: u64| {
            // avail >= want: resource_match passed.
            1.0 - (avail - want) as f64 / total as f64
        };
        let mem = frac_used(cell.available.memory_mb, memory, cell.total.memory_mb);
        let disk = frac_used(cell.available.disk_mb, disk, cell.total.disk_mb);
        let containers = frac_used(
            u64::from(cell.available.containers),
            1,
            u64::from(cell.total.containers),
        );
        let starting = f64::from(cell.starting) * self.settings.starting_container_weight;
        match self.strategy {
            Strategy::Classic => (mem + disk + containers) / 3.0 + starting,
            // Fullest first: lower remaining capacity scores lower.
            // No starting-container term: it would spread a batch over the emptiest cells,
            // which is what binpack exists not to do.
            Strategy::Binpack => (3.0 - (mem + disk + containers)) / 3.0,
            Strategy::Spread => containers + starting,
        }
    }

    fn reserve(&mut self, l: usize, work: &Work) {
        let cell = &mut self.cells[l];
        // Diego reserves the work's own resources (without the proxy memory).
        cell.available.memory_mb = cell.available.memory_mb.saturating_sub(work.memory_mb);
        cell.available.disk_mb = cell.available.disk_mb.saturating_sub(work.disk_mb);
        cell.available.containers = cell.available.containers.saturating_sub(1);
        cell.starting += 1;
        self.starting_total += 1;
        match work.kind {
            WorkKind::Lrp { process_guid, .. } => {
                self.instances
                    .entry(process_guid)
                    .or_default()
                    .push((l as u32, 1));
            }
            WorkKind::Task { .. } => cell.tasks += 1,
        }
    }
}

/// Diego's `CellState.ResourceMatch`.
fn resource_match(available: &Resources, memory: u64, disk: u64) -> Result<(), Shortfall> {
    let s = Shortfall {
        disk: available.disk_mb < disk,
        memory: available.memory_mb < memory,
        containers: available.containers < 1,
    };
    if s.disk || s.memory || s.containers {
        Err(s)
    } else {
        Ok(())
    }
}

/// Keeps only the problems common to every rejecting cell.
fn intersect(acc: &mut Shortfall, s: Shortfall) {
    acc.disk &= s.disk;
    acc.memory &= s.memory;
    acc.containers &= s.containers;
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
