//! Deterministic batch generators for tests and benchmarks (no `rand` dependency: a seeded
//! xorshift is enough and keeps native and Wasm runs replayable from a seed).

use crate::{
    Batch, Cell, ProcessInstances, Resources, Rootfs, RootfsProvider, SetId, Settings, StrId, Work,
    WorkKind,
};

/// xorshift64*: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Interns strings and sets of strings uniquely, as the host does.
#[derive(Debug)]
pub struct Interner {
    pub strings: Vec<String>,
    pub sets: Vec<Vec<StrId>>,
}

impl Default for Interner {
    /// Set 0 is the empty set.
    fn default() -> Self {
        Interner {
            strings: Vec::new(),
            sets: vec![Vec::new()],
        }
    }
}

impl Interner {
    pub fn id(&mut self, s: &str) -> StrId {
        match self.strings.iter().position(|x| x == s) {
            Some(i) => i as StrId,
            None => {
                self.strings.push(s.to_owned());
                (self.strings.len() - 1) as StrId
            }
        }
    }

    /// The id of a set of strings (order-insensitive).
    pub fn set(&mut self, ids: &[StrId]) -> SetId {
        let mut set = ids.to_vec();
        set.sort_unstable();
        set.dedup();
        match self.sets.iter().position(|x| *x == set) {
            Some(i) => i as SetId,
            None => {
                self.sets.push(set);
                (self.sets.len() - 1) as SetId
            }
        }
    }
}

/// Shape of a generated batch.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub cells: usize,
    pub works: usize,
    pub zones: usize,
    /// Distinct LRP processes the works and existing instances are drawn from.
    pub processes: usize,
    /// Percent of works that are tasks.
    pub task_percent: u64,
    /// Add rootfs/tag/volume/evacuation variety (exercises every filter and error).
    pub constraints: bool,
    /// Percent of each cell's capacity already used.
    pub used_percent: u64,
}

impl Shape {
    /// The benchmark's shape: uniform cells, LRPs only, no constraint variety.
    pub fn uniform(cells: usize, works: usize) -> Self {
        Shape {
            cells,
            works,
            zones: 3,
            processes: works.div_ceil(10).max(1),
            task_percent: 0,
            constraints: false,
            used_percent: 30,
        }
    }
}

/// A random but reproducible batch.
pub fn random_batch(seed: u64, shape: Shape) -> Batch {
    let mut rng = Rng::new(seed);
    let mut i = Interner::default();
    let preloaded = i.id("preloaded");
    let docker = i.id("docker");
    let stacks = [i.id("cflinuxfs4"), i.id("cflinuxfs3")];
    let tags = [i.id("gpu"), i.id("ssd"), i.id("isolated")];
    let drivers = [i.id("nfs"), i.id("smb")];
    let zones: Vec<StrId> = (0..shape.zones.max(1))
        .map(|z| i.id(&format!("z{z}")))
        .collect();
    let processes: Vec<StrId> = (0..shape.processes.max(1))
        .map(|p| i.id(&format!("process-{p:04}")))
        .collect();
    let domain = i.id("cf-apps");

    let mut cells = Vec::with_capacity(shape.cells);
    for c in 0..shape.cells {
        let total = Resources {
            memory_mb: [16_384, 32_768, 65_536][rng.below(3) as usize],
            disk_mb: [65_536, 131_072][rng.below(2) as usize],
            containers: [100, 250][rng.below(2) as usize],
        };
        let used = |t: u64, r: &mut Rng| t * r.below(shape.used_percent + 1) / 100;
        let available = Resources {
            memory_mb: total.memory_mb - used(total.memory_mb, &mut rng),
            disk_mb: total.disk_mb - used(total.disk_mb, &mut rng),
            containers: total.containers - used(u64::from(total.containers), &mut rng) as u32,
        };
        let mut cell = Cell {
            zone: zones[c % zones.len()],
            index: c as u32,
            total,
            available,
            starting_containers: rng.below(3) as u32,
            proxy_memory_mb: if rng.chance(50) { 32 } else { 0 },
            rootfs_providers: 0,
            volume_drivers: 0,
            placement_tags: 0,
            optional_placement_tags: 0,
            evacuating: false,
            tasks: rng.below(4) as u32,
        };
        if shape.constraints {
            // Set 1: both stacks; set 2: preloaded only (no docker).
            if rng.chance(30) {
                cell.rootfs_providers = 1;
            } else if rng.chance(10) {
                cell.rootfs_providers = 2;
            }
            if rng.chance(20) {
                cell.volume_drivers = i.set(&[drivers[rng.below(2) as usize]]);
            }
            if rng.chance(10) {
                cell.placement_tags = i.set(&[tags[rng.below(3) as usize]]);
            }
            if rng.chance(20) {
                cell.optional_placement_tags = i.set(&[tags[rng.below(3) as usize]]);
            }
            cell.evacuating = rng.chance(5);
            if rng.chance(10) {
                // A nearly full cell.
                cell.available.memory_mb = rng.below(600);
                cell.available.containers = rng.below(2) as u32;
            }
        }
        cells.push(cell);
    }

    let provider = |scheme, stacks| RootfsProvider { scheme, stacks };
    let rootfs_provider_sets = vec![
        vec![
            provider(preloaded, Some(vec![stacks[0]])),
            provider(docker, None),
        ],
        vec![
            provider(preloaded, Some(vec![stacks[0], stacks[1]])),
            provider(docker, None),
        ],
        vec![provider(preloaded, Some(vec![stacks[0]]))],
    ];

    let mut process_instances = Vec::new();
    for (c, _) in cells.iter().enumerate() {
        for _ in 0..rng.below(3) {
            process_instances.push(ProcessInstances {
                cell: c as u32,
                process_guid: processes[rng.below(processes.len() as u64) as usize],
                count: 1 + rng.below(2) as u32,
            });
        }
    }

    let mut works = Vec::with_capacity(shape.works);
    let mut next_index = vec![0u32; processes.len()];
    for t in 0..shape.works {
        let kind = if rng.chance(shape.task_percent) {
            WorkKind::Task {
                task_guid: i.id(&format!("task-{t:05}")),
                domain,
            }
        } else {
            let p = rng.below(processes.len() as u64) as usize;
            let index = next_index[p];
            next_index[p] += 1;
            WorkKind::Lrp {
                process_guid: processes[p],
                index,
                domain,
            }
        };
        let mut work = Work {
            kind,
            memory_mb: [128, 256, 512, 1024, 2048][rng.below(5) as usize],
            disk_mb: [256, 1024, 4096][rng.below(3) as usize],
            max_pids: 1024,
            rootfs: Rootfs {
                scheme: preloaded,
                name: stacks[0],
            },
            volume_drivers: 0,
            placement_tags: 0,
        };
        if shape.constraints {
            match rng.below(10) {
                0 => {
                    work.rootfs = Rootfs {
                        scheme: preloaded,
                        name: stacks[1],
                    }
                }
                1 => {
                    work.rootfs = Rootfs {
                        scheme: docker,
                        name: i.id("//busybox"),
                    }
                }
                2 => work.volume_drivers = i.set(&[drivers[rng.below(2) as usize]]),
                3 => work.placement_tags = i.set(&[tags[rng.below(3) as usize]]),
                4 => work.memory_mb = 40_000,
                _ => {}
            }
        }
        works.push(work);
    }

    Batch {
        strings: i.strings,
        id_sets: i.sets,
        settings: Settings {
            starting_container_weight: 0.25,
            bin_pack_first_fit_weight: if shape.constraints && rng.chance(30) {
                0.1
            } else {
                0.0
            },
            starting_container_count_maximum: if shape.constraints && rng.chance(20) {
                (shape.cells as u32) + 5
            } else {
                0
            },
        },
        rootfs_provider_sets,
        cells,
        process_instances,
        works,
    }
}
