//! The scoring as it was before the filter-class and allocation work (commit 5a87cb7), kept
//! verbatim as an oracle: the optimised `place` must answer exactly as this does. (The auction
//! order was not part of that work: both use `crate::auction_order`.)

use std::collections::HashMap;

use crate::{
    Batch, Cell, LOCALITY_OFFSET, Outcome, PlacementError, Resources, Shortfall, StrId, Strategy,
    Work, WorkKind, auction_order, matches_placement_tags, matches_rootfs, matches_volume_drivers,
};

const INITIAL_BEST: f64 = 1e20;

/// Places every work item of `batch`; one outcome per item, in `batch.works` order.
pub(crate) fn place(batch: &Batch, strategy: Strategy) -> Vec<Outcome> {
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
