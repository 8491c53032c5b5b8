//! Diego's auction scoring as a pure function of a batch.
//!
//! This crate is compiled twice: natively by `diego-host` (the fallback policy and the
//! benchmark baseline) and into the `policies/classic` Wasm guest (the policy the platform
//! loads by default). Both must give bit-identical answers, so everything here is plain
//! integer/f64 arithmetic with a deterministic order: no hashing order, no clocks, no I/O.
//!
//! The data model mirrors `diego:auction@0.1.0` (plugin-sdk/wit/auction/auction.wit): strings
//! are interned in [`Batch::strings`] and referred to by [`StrId`]; the producer of a batch
//! interns uniquely, so equal ids mean equal strings.
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
    /// inverted; same-process anti-affinity is kept so instances still spread across cells.
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
    let mut out: Vec<Option<Outcome>> = vec![None; batch.works.len()];
    let mut state = State::new(batch, strategy);
    for w in auction_order(&batch.works) {
        let outcome = state.place_one(&batch.works[w]);
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
    let Some(providers) = batch
        .rootfs_provider_sets
        .get(cell.rootfs_providers as usize)
    else {
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

/// Every requested driver is on the cell.
pub fn matches_volume_drivers(batch: &Batch, cell: &Cell, drivers: SetId) -> bool {
    let have = batch.set(cell.volume_drivers);
    batch.set(drivers).iter().all(|d| have.contains(d))
}

/// The cell's required tags ⊆ desired, and desired ⊆ required ∪ optional.
pub fn matches_placement_tags(batch: &Batch, cell: &Cell, desired: SetId) -> bool {
    if cell.placement_tags == desired {
        // Same interned set (typically both empty): required == desired.
        return true;
    }
    let desired = batch.set(desired);
    let required = batch.set(cell.placement_tags);
    let optional = batch.set(cell.optional_placement_tags);
    required.iter().all(|t| desired.contains(t))
        && desired
            .iter()
            .all(|t| required.contains(t) || optional.contains(t))
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

fn filter_level(batch: &Batch, cell: &Cell, work: &Work) -> FilterLevel {
    if !matches_rootfs(batch, cell, &work.rootfs) {
        FilterLevel::Rootfs
    } else if !matches_volume_drivers(batch, cell, work.volume_drivers) {
        FilterLevel::VolumeDrivers
    } else if !matches_placement_tags(batch, cell, work.placement_tags) {
        FilterLevel::PlacementTags
    } else {
        FilterLevel::Passed
    }
}

/// A cell as the auction sees it while it places the batch.
#[derive(Debug, Clone)]
struct LiveCell {
    /// Index into `batch.cells`.
    cell: u32,
    /// Index into `State::zones`.
    zone: usize,
    /// The bin-pack index: rank by reported CellIndex within the zone.
    bin_index: u32,
    available: Resources,
    starting: u32,
    tasks: u32,
}

#[derive(Debug)]
struct State<'a> {
    batch: &'a Batch,
    strategy: Strategy,
    cells: Vec<LiveCell>,
    /// Per zone, indices into `cells`, in batch order.
    zones: Vec<Vec<usize>>,
    /// Per process guid: (index into `cells`, instances), possibly several entries per cell.
    instances: HashMap<StrId, Vec<(usize, u32)>>,
    /// Scratch, one slot per live cell: instances of the process being placed.
    locality: Vec<u32>,
    /// Scratch, one slot per zone: instances of the process being placed.
    zone_instances: Vec<u32>,
    starting_total: u64,
}

impl<'a> State<'a> {
    fn new(batch: &'a Batch, strategy: Strategy) -> Self {
        let mut cells = Vec::new();
        let mut zone_ids: Vec<StrId> = Vec::new();
        let mut zones: Vec<Vec<usize>> = Vec::new();
        // Batch index -> live index (evacuating cells are not live: Diego ignores their state).
        let mut live_of: Vec<Option<usize>> = vec![None; batch.cells.len()];
        for (i, c) in batch.cells.iter().enumerate() {
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
            live_of[i] = Some(cells.len());
            zones[zone].push(cells.len());
            cells.push(LiveCell {
                cell: i as u32,
                zone,
                bin_index: 0,
                available: c.available,
                starting: c.starting_containers,
                tasks: c.tasks,
            });
        }
        if batch.settings.bin_pack_first_fit_weight > 0.0 {
            for zone in &zones {
                let mut by_index = zone.clone();
                by_index.sort_by_key(|l| batch.cells[cells[*l].cell as usize].index);
                for (rank, l) in by_index.into_iter().enumerate() {
                    cells[l].bin_index = rank as u32;
                }
            }
        }
        let mut instances: HashMap<StrId, Vec<(usize, u32)>> = HashMap::new();
        for pi in &batch.process_instances {
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
            batch,
            strategy,
            locality: vec![0; cells.len()],
            zone_instances: vec![0; zones.len()],
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
        let max = self.batch.settings.starting_container_count_maximum;
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

    /// Per zone, the live cells passing the hard filters; or the most specific filter error.
    fn filter(&self, work: &Work) -> Result<Vec<(usize, Vec<usize>)>, PlacementError> {
        let mut furthest = FilterLevel::Rootfs;
        let mut zones = Vec::new();
        for (z, members) in self.zones.iter().enumerate() {
            let mut passed = Vec::new();
            for &l in members {
                let level = filter_level(
                    self.batch,
                    &self.batch.cells[self.cells[l].cell as usize],
                    work,
                );
                if level == FilterLevel::Passed {
                    passed.push(l);
                }
                furthest = furthest.max(level);
            }
            if !passed.is_empty() {
                zones.push((z, passed));
            }
        }
        if zones.is_empty() {
            return Err(match furthest {
                FilterLevel::Rootfs => PlacementError::RootfsMismatch,
                FilterLevel::VolumeDrivers => PlacementError::VolumeDriverMismatch,
                FilterLevel::PlacementTags | FilterLevel::Passed => {
                    PlacementError::PlacementTagMismatch
                }
            });
        }
        Ok(zones)
    }

    fn place_lrp(&mut self, work: &Work, process: StrId) -> Result<usize, PlacementError> {
        let zones = self.filter(work)?;
        // Locality and zone counts for this process, into the scratch arrays.
        if let Some(list) = self.instances.get(&process) {
            for &(l, n) in list {
                self.locality[l] += n;
                self.zone_instances[self.cells[l].zone] += n;
            }
        }
        let mut sorted: Vec<(usize, Vec<usize>, u32)> = zones
            .into_iter()
            .map(|(z, cells)| (z, cells, self.zone_instances[z]))
            .collect();
        let balance_zones = self.strategy != Strategy::Binpack;
        if balance_zones {
            sorted.sort_by_key(|(_, _, n)| *n);
        }
        let mut shortfall = Shortfall {
            disk: true,
            memory: true,
            containers: true,
        };
        let mut winner: Option<usize> = None;
        let mut best = INITIAL_BEST;
        for (i, (_, members, n)) in sorted.iter().enumerate() {
            for &l in members {
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
                i + 1 == sorted.len() || (balance_zones && *n < sorted[i + 1].2);
            if last_of_tie_group && winner.is_some() {
                break;
            }
        }
        // Reset the scratch arrays for the next item.
        if let Some(list) = self.instances.get(&process) {
            for &(l, _) in list {
                self.locality[l] = 0;
                self.zone_instances[self.cells[l].zone] = 0;
            }
        }
        winner.ok_or(PlacementError::InsufficientResources(shortfall))
    }

    fn place_task(&mut self, work: &Work) -> Result<usize, PlacementError> {
        let zones = self.filter(work)?;
        let mut shortfall = Shortfall {
            disk: true,
            memory: true,
            containers: true,
        };
        let mut winner = None;
        let mut best = INITIAL_BEST;
        for (_, members) in &zones {
            for &l in members {
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
        let spec = &self.batch.cells[cell.cell as usize];
        // Diego scores (and filters) an LRP with the cell's proxy memory added.
        let memory = work.memory_mb.saturating_add(spec.proxy_memory_mb);
        resource_match(&cell.available, memory, work.disk_mb)?;
        let locality = LOCALITY_OFFSET * f64::from(self.locality[l]);
        let resource = self.resource_score(cell, spec, memory, work.disk_mb);
        let bin = f64::from(cell.bin_index) * self.batch.settings.bin_pack_first_fit_weight;
        Ok(resource + locality + bin)
    }

    fn score_task(&self, l: usize, work: &Work) -> Result<f64, Shortfall> {
        let cell = &self.cells[l];
        let spec = &self.batch.cells[cell.cell as usize];
        resource_match(&cell.available, work.memory_mb, work.disk_mb)?;
        let locality = LOCALITY_OFFSET * f64::from(cell.tasks);
        Ok(self.resource_score(cell, spec, work.memory_mb, work.disk_mb) + locality)
    }

    fn resource_score(&self, cell: &LiveCell, spec: &Cell, memory: u64, disk: u64) -> f64 {
        let frac_used = |avail: u64, want: u64, total: u64| {
            // avail >= want: resource_match passed.
            1.0 - (avail - want) as f64 / total as f64
        };
        let mem = frac_used(cell.available.memory_mb, memory, spec.total.memory_mb);
        let disk = frac_used(cell.available.disk_mb, disk, spec.total.disk_mb);
        let containers = frac_used(
            u64::from(cell.available.containers),
            1,
            u64::from(spec.total.containers),
        );
        let starting = f64::from(cell.starting) * self.batch.settings.starting_container_weight;
        match self.strategy {
            Strategy::Classic => (mem + disk + containers) / 3.0 + starting,
            // Fullest first: lower remaining capacity scores lower.
            Strategy::Binpack => (3.0 - (mem + disk + containers)) / 3.0 + starting,
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
                self.instances.entry(process_guid).or_default().push((l, 1));
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
mod tests;
