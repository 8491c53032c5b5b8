//! The auction's pure half: cells' states and work in, one decision per work item out.
//!
//! Work is placed in parts of at most `max_part` items (in Diego's auction order, so index-0
//! instances and tasks go first overall); each part is one scoring [`Batch`] for the policy and
//! sees the cells as the previous parts left them. A batch holds only what its part needs:
//! strings are interned afresh and `process_instances` lists only the part's processes, so its
//! size does not grow with the fleet's history.

use std::collections::HashMap;
use std::sync::Arc;

use diego_host::scoring::{self as s, Batch, Outcome};
use diego_model::{PlacementConstraint, Resource};
use diego_rep_client::CellState;

use crate::cells::CellClient;

/// A cell as the auction sees it while it places work.
#[derive(Debug, Clone)]
pub(crate) struct LiveCell {
    pub cell_id: String,
    pub client: Arc<dyn CellClient>,
    pub zone: String,
    pub index: u32,
    pub total: s::Resources,
    pub available: s::Resources,
    pub starting: u32,
    pub proxy_memory_mb: u64,
    /// (scheme, stacks): `None` accepts any rootfs of the scheme.
    pub rootfs: Vec<(String, Option<Vec<String>>)>,
    pub volume_drivers: Vec<String>,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    pub tasks: u32,
}

fn non_negative(v: i32) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn resources(r: &diego_rep_client::Resources) -> s::Resources {
    s::Resources {
        memory_mb: non_negative(r.memory_mb),
        disk_mb: non_negative(r.disk_mb),
        containers: u32::try_from(r.containers).unwrap_or(0),
    }
}

/// The cells of one auction and which processes run where.
#[derive(Debug, Default, Clone)]
pub(crate) struct Fleet {
    pub cells: Vec<LiveCell>,
    /// process guid → (cell, instances) for every instance on a cell, including those
    /// placed earlier in this auction.
    processes: HashMap<String, HashMap<u32, u32>>,
}

impl Fleet {
    /// The fleet from cells' reported states (already filtered: evacuating and mismatched
    /// cells are not here).
    pub fn new(states: Vec<(Arc<dyn CellClient>, CellState)>) -> Fleet {
        let mut fleet = Fleet::default();
        for (client, st) in states {
            let c = fleet.cells.len() as u32;
            for lrp in &st.lrps {
                *fleet
                    .processes
                    .entry(lrp.key.process_guid.clone())
                    .or_default()
                    .entry(c)
                    .or_default() += 1;
            }
            fleet.cells.push(LiveCell {
                client,
                zone: st.zone,
                index: u32::try_from(st.cell_index).unwrap_or(0),
                total: resources(&st.total_resources),
                available: resources(&st.available_resources),
                starting: u32::try_from(st.starting_container_count).unwrap_or(0),
                proxy_memory_mb: non_negative(st.proxy_memory_allocation_mb),
                rootfs: st
                    .rootfs_providers
                    .into_iter()
                    .map(|p| {
                        // `preloaded` is a fixed set of stacks; other providers (docker) take
                        // any rootfs of their scheme (Diego's arbitrary provider).
                        let stacks = (p.name == "preloaded" || !p.properties.is_empty())
                            .then_some(p.properties);
                        (p.name, stacks)
                    })
                    .collect(),
                volume_drivers: st.volume_drivers,
                placement_tags: st.placement_tags,
                optional_placement_tags: st.optional_placement_tags,
                tasks: st.tasks.len() as u32,
                cell_id: st.cell_id,
            });
        }
        fleet
    }

    /// Books a placement: what the next part (and the rep's next state) will show.
    fn reserve(&mut self, cell: usize, want: &Want<'_>) {
        let Some(c) = self.cells.get_mut(cell) else {
            return;
        };
        c.available.memory_mb = c
            .available
            .memory_mb
            .saturating_sub(non_negative(want.resource.memory_mb));
        c.available.disk_mb = c
            .available
            .disk_mb
            .saturating_sub(non_negative(want.resource.disk_mb));
        c.available.containers = c.available.containers.saturating_sub(1);
        c.starting += 1;
        match want.kind {
            WantKind::Lrp { process_guid, .. } => {
                *self
                    .processes
                    .entry(process_guid.to_owned())
                    .or_default()
                    .entry(cell as u32)
                    .or_default() += 1;
            }
            WantKind::Task { .. } => c.tasks += 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum WantKind<'a> {
    Lrp {
        process_guid: &'a str,
        index: i32,
        domain: &'a str,
    },
    Task {
        task_guid: &'a str,
        domain: &'a str,
    },
}

/// One item to place, borrowed from whatever holds it (the queue's auctions, a dry run's
/// records).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    pub kind: WantKind<'a>,
    pub resource: &'a Resource,
    pub constraint: &'a PlacementConstraint,
}

/// Where an item goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Index into `Fleet::cells`.
    Placed(usize),
    /// Diego's `placement_error`.
    Failed(String),
}

/// Splits a rootfs URL into (scheme, name): `preloaded:cflinuxfs4` → (preloaded, cflinuxfs4),
/// `docker:///cloudfoundry/grace` → (docker, /cloudfoundry/grace). `preloaded+layer` is a
/// preloaded stack with a layer on top: it matches on the stack.
fn rootfs_parts(url: &str) -> (&str, &str) {
    let Some((scheme, rest)) = url.split_once(':') else {
        return ("", url);
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    match scheme {
        "preloaded+layer" => ("preloaded", rest.split('?').next().unwrap_or(rest)),
        _ => (scheme, rest),
    }
}

#[derive(Debug, Default, Clone)]
struct Interner {
    ids: HashMap<String, s::StrId>,
    strings: Vec<String>,
    set_ids: HashMap<Vec<s::StrId>, s::SetId>,
    sets: Vec<Vec<s::StrId>>,
}

impl Interner {
    fn new() -> Self {
        let mut i = Interner::default();
        // Set 0 is the empty set: most cells and works use it.
        i.set(&[] as &[String]);
        i
    }

    fn id(&mut self, s: &str) -> s::StrId {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as s::StrId;
        self.strings.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }

    fn set<S: AsRef<str>>(&mut self, items: &[S]) -> s::SetId {
        let ids: Vec<s::StrId> = items.iter().map(|x| self.id(x.as_ref())).collect();
        if let Some(id) = self.set_ids.get(&ids) {
            return *id;
        }
        let id = self.sets.len() as s::SetId;
        self.sets.push(ids.clone());
        self.set_ids.insert(ids, id);
        id
    }
}

/// The cell half of every part's batch, built once per auction.
#[derive(Debug, Clone)]
struct Template {
    interner: Interner,
    rootfs_provider_sets: Vec<Vec<s::RootfsProvider>>,
    cells: Vec<s::Cell>,
}

/// A rootfs provider as a hashable key: (scheme, stacks).
type ProviderKey = (s::StrId, Option<Vec<s::StrId>>);

fn template(fleet: &Fleet) -> Template {
    let mut i = Interner::new();
    let mut provider_set_ids: HashMap<Vec<ProviderKey>, u32> = HashMap::new();
    let mut rootfs_provider_sets = Vec::new();
    let mut cells = Vec::with_capacity(fleet.cells.len());
    for c in &fleet.cells {
        let providers: Vec<ProviderKey> = c
            .rootfs
            .iter()
            .map(|(scheme, stacks)| {
                (
                    i.id(scheme),
                    stacks
                        .as_ref()
                        .map(|st| st.iter().map(|x| i.id(x)).collect()),
                )
            })
            .collect();
        let rootfs_providers = match provider_set_ids.get(&providers) {
            Some(id) => *id,
            None => {
                let id = rootfs_provider_sets.len() as u32;
                rootfs_provider_sets.push(
                    providers
                        .iter()
                        .map(|(scheme, stacks)| s::RootfsProvider {
                            scheme: *scheme,
                            stacks: stacks.clone(),
                        })
                        .collect(),
                );
                provider_set_ids.insert(providers, id);
                id
            }
        };
        cells.push(s::Cell {
            zone: i.id(&c.zone),
            index: c.index,
            total: c.total,
            available: c.available,
            starting_containers: c.starting,
            proxy_memory_mb: c.proxy_memory_mb,
            rootfs_providers,
            volume_drivers: i.set(&c.volume_drivers),
            placement_tags: i.set(&c.placement_tags),
            optional_placement_tags: i.set(&c.optional_placement_tags),
            evacuating: false,
            tasks: c.tasks,
        });
    }
    Template {
        interner: i,
        rootfs_provider_sets,
        cells,
    }
}

/// Diego's auction order: LRPs of index 0, then tasks, then the other LRPs by index; memory
/// descending within each (stable: equal items keep arrival order).
fn auction_order(wants: &[Want<'_>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&w| {
        let want = &wants[w];
        let (class, index) = match want.kind {
            WantKind::Lrp { index: 0, .. } => (0, 0),
            WantKind::Task { .. } => (1, 0),
            WantKind::Lrp { index, .. } => (2, index),
        };
        (class, index, std::cmp::Reverse(want.resource.memory_mb))
    });
    order
}

/// The scoring batch for one part, on the fleet as it is now.
fn part_batch(
    fleet: &Fleet,
    template: &Template,
    settings: s::Settings,
    wants: &[Want<'_>],
    part: &[usize],
) -> Batch {
    let mut i = template.interner.clone();
    let mut cells = template.cells.clone();
    for (cell, live) in cells.iter_mut().zip(&fleet.cells) {
        cell.available = live.available;
        cell.starting_containers = live.starting;
        cell.tasks = live.tasks;
    }
    let mut works = Vec::with_capacity(part.len());
    let mut processes: Vec<&str> = Vec::new();
    let mut seen: std::collections::HashSet<s::StrId> = std::collections::HashSet::new();
    for &w in part {
        let want = &wants[w];
        let (scheme, name) = rootfs_parts(&want.constraint.root_fs);
        let kind = match want.kind {
            WantKind::Lrp {
                process_guid,
                index,
                domain,
            } => {
                let id = i.id(process_guid);
                if seen.insert(id) {
                    processes.push(process_guid);
                }
                s::WorkKind::Lrp {
                    process_guid: id,
                    index: u32::try_from(index).unwrap_or(0),
                    domain: i.id(domain),
                }
            }
            WantKind::Task { task_guid, domain } => s::WorkKind::Task {
                task_guid: i.id(task_guid),
                domain: i.id(domain),
            },
        };
        works.push(s::Work {
            kind,
            memory_mb: non_negative(want.resource.memory_mb),
            disk_mb: non_negative(want.resource.disk_mb),
            max_pids: u32::try_from(want.resource.max_pids).unwrap_or(0),
            rootfs: s::Rootfs {
                scheme: i.id(scheme),
                name: i.id(name),
            },
            volume_drivers: i.set(&want.constraint.volume_drivers),
            placement_tags: i.set(&want.constraint.placement_tags),
        });
    }
    let mut process_instances = Vec::new();
    for p in processes {
        let Some(on_cells) = fleet.processes.get(p) else {
            continue;
        };
        let process_guid = i.id(p);
        let mut entries: Vec<s::ProcessInstances> = on_cells
            .iter()
            .map(|(cell, count)| s::ProcessInstances {
                cell: *cell,
                process_guid,
                count: *count,
            })
            .collect();
        // Map order is random; a batch must be replayable.
        entries.sort_by_key(|e| e.cell);
        process_instances.extend(entries);
    }
    Batch {
        strings: i.strings,
        settings,
        id_sets: i.sets,
        rootfs_provider_sets: template.rootfs_provider_sets.clone(),
        cells,
        process_instances,
        works,
    }
}

/// Diego's error when an item got no answer from any cell.
const NOT_PLACED: &str = "unable to communicate to compatible cells";

/// Places `wants` on `fleet` (which is updated with every placement) in parts of at most
/// `max_part`; one decision per want, in `wants` order. `place` is the policy; its error (a
/// dry run's candidate faulting) stops the plan.
pub(crate) fn plan<E>(
    fleet: &mut Fleet,
    wants: &[Want<'_>],
    settings: s::Settings,
    max_part: usize,
    mut place: impl FnMut(&Arc<Batch>) -> Result<Vec<Outcome>, E>,
) -> Result<Vec<Decision>, E> {
    // Every item gets a decision below; the default only shows if a policy answered short.
    let mut decisions = vec![Decision::Failed(NOT_PLACED.to_owned()); wants.len()];
    if wants.is_empty() {
        return Ok(decisions);
    }
    let template = template(fleet);
    let order = auction_order(wants);
    for part in order.chunks(max_part.max(1)) {
        let batch = Arc::new(part_batch(fleet, &template, settings, wants, part));
        let outcomes = place(&batch)?;
        for ((&w, outcome), work) in part.iter().zip(outcomes).zip(&batch.works) {
            decisions[w] = match outcome {
                Outcome::Placed(cell) => {
                    fleet.reserve(cell as usize, &wants[w]);
                    Decision::Placed(cell as usize)
                }
                Outcome::Failed(e) => Decision::Failed(e.message(&batch, work)),
            };
        }
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_urls_split_into_scheme_and_name() {
        assert_eq!(
            rootfs_parts("preloaded:cflinuxfs4"),
            ("preloaded", "cflinuxfs4")
        );
        assert_eq!(
            rootfs_parts("docker:///cloudfoundry/grace"),
            ("docker", "/cloudfoundry/grace")
        );
        assert_eq!(
            rootfs_parts("preloaded+layer:cflinuxfs4?layer=x"),
            ("preloaded", "cflinuxfs4")
        );
        assert_eq!(rootfs_parts("nonsense"), ("", "nonsense"));
    }
}
