use super::testing::{Interner, Shape, random_batch};
use super::*;

struct Fixture {
    i: Interner,
    batch: Batch,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            i: Interner::default(),
            batch: Batch::default(),
        }
    }

    fn cell(&mut self, name: &str, zone: &str, memory_free: u64) -> usize {
        let preloaded = self.i.id("preloaded");
        let stack = self.i.id("cflinuxfs4");
        // Cells are known by position; interning the name keeps string ids stable.
        self.i.id(name);
        if self.batch.rootfs_provider_sets.is_empty() {
            let provider = RootfsProvider {
                scheme: preloaded,
                stacks: Some(vec![stack]),
            };
            self.batch.rootfs_provider_sets = vec![vec![provider]];
        }
        let cell = Cell {
            zone: self.i.id(zone),
            index: self.batch.cells.len() as u32,
            total: Resources {
                memory_mb: 1000,
                disk_mb: 1000,
                containers: 10,
            },
            available: Resources {
                memory_mb: memory_free,
                disk_mb: 1000,
                containers: 10,
            },
            starting_containers: 0,
            proxy_memory_mb: 0,
            rootfs_providers: 0,
            volume_drivers: 0,
            placement_tags: 0,
            optional_placement_tags: 0,
            evacuating: false,
            tasks: 0,
        };
        self.batch.cells.push(cell);
        self.batch.cells.len() - 1
    }

    fn lrp(&mut self, process: &str, index: u32, memory: u64) -> usize {
        let work = Work {
            kind: WorkKind::Lrp {
                process_guid: self.i.id(process),
                index,
                domain: self.i.id("d"),
            },
            memory_mb: memory,
            disk_mb: 10,
            max_pids: 0,
            rootfs: Rootfs {
                scheme: self.i.id("preloaded"),
                name: self.i.id("cflinuxfs4"),
            },
            volume_drivers: 0,
            placement_tags: 0,
        };
        self.batch.works.push(work);
        self.batch.works.len() - 1
    }

    fn task(&mut self, guid: &str, memory: u64) -> usize {
        let w = self.lrp("unused", 0, memory);
        self.batch.works[w].kind = WorkKind::Task {
            task_guid: self.i.id(guid),
            domain: 0,
        };
        w
    }

    fn place(&mut self) -> Vec<Outcome> {
        self.batch.strings = self.i.strings.clone();
        self.batch.id_sets = self.i.sets.clone();
        let out = place_classic(&self.batch);
        assert_eq!(validate_outcomes(&self.batch, &out), Ok(()));
        out
    }

    fn message(&self, out: &Outcome, work: usize) -> String {
        match out {
            Outcome::Failed(e) => e.message(&self.batch, &self.batch.works[work]),
            Outcome::Placed(c) => format!("placed on {c}"),
        }
    }
}

#[test]
fn picks_the_emptier_cell_and_spreads_instances() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 500);
    f.cell("b", "z1", 900);
    f.lrp("p", 0, 100);
    f.lrp("p", 1, 100);
    let out = f.place();
    // Index 0 goes to the emptier cell b; index 1 is pushed away from b by locality.
    assert_eq!(out, vec![Outcome::Placed(1), Outcome::Placed(0)]);
}

#[test]
fn zone_balancing_prefers_the_zone_with_fewer_instances() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 1000);
    f.cell("b", "z2", 100);
    let p = f.i.id("p");
    f.batch.process_instances.push(ProcessInstances {
        cell: 0,
        process_guid: p,
        count: 1,
    });
    f.lrp("p", 1, 50);
    let out = f.place();
    // z2 has no instance of p: its (fuller) cell wins over the empty cell of z1.
    assert_eq!(out, vec![Outcome::Placed(1)]);
}

#[test]
fn falls_through_to_the_next_zone_group_when_the_first_has_no_room() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 1000);
    f.cell("b", "z2", 10);
    let p = f.i.id("p");
    f.batch.process_instances.push(ProcessInstances {
        cell: 0,
        process_guid: p,
        count: 1,
    });
    f.lrp("p", 1, 50);
    assert_eq!(f.place(), vec![Outcome::Placed(0)]);
}

#[test]
fn orders_index_zero_then_tasks_then_later_indices() {
    let order = {
        let mut f = Fixture::new();
        f.lrp("p", 2, 100);
        f.task("t", 100);
        f.lrp("q", 0, 100);
        f.lrp("r", 1, 500);
        f.lrp("s", 1, 900);
        auction_order(&f.batch.works)
    };
    assert_eq!(order, vec![2, 1, 4, 3, 0]);
}

#[test]
fn reports_diego_error_strings() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 100);
    f.batch.cells[0].available.containers = 0;
    let big = f.lrp("p", 0, 500);
    let docker = f.lrp("q", 0, 10);
    let scheme = f.i.id("docker");
    f.batch.works[docker].rootfs.scheme = scheme;
    let tagged = f.lrp("r", 0, 10);
    let (a, b, c) = (f.i.id("a"), f.i.id("b"), f.i.id("c"));
    f.batch.works[tagged].placement_tags = f.i.set(&[a, b, c]);
    let out = f.place();
    assert_eq!(
        f.message(&out[big], big),
        "insufficient resources: containers, memory"
    );
    assert_eq!(
        f.message(&out[docker], docker),
        "found no compatible cell for required rootfs"
    );
    assert_eq!(
        f.message(&out[tagged], tagged),
        "found no compatible cell with placement tags \"a\", \"b\" and \"c\""
    );
}

#[test]
fn insufficient_resources_keeps_only_common_problems() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 10);
    f.cell("b", "z1", 900);
    f.batch.cells[1].available.disk_mb = 1;
    let w = f.lrp("p", 0, 500);
    let out = f.place();
    assert_eq!(f.message(&out[w], w), "insufficient resources");
}

#[test]
fn no_cells_and_evacuating_cells() {
    let mut f = Fixture::new();
    let w = f.lrp("p", 0, 10);
    let out = f.place();
    assert_eq!(
        f.message(&out[w], w),
        "unable to communicate to compatible cells"
    );
    f.cell("a", "z1", 1000);
    f.batch.cells[0].evacuating = true;
    assert_eq!(f.place(), vec![Outcome::Failed(PlacementError::NoCells)]);
}

#[test]
fn inflight_start_limit() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 1000);
    f.batch.cells[0].starting_containers = 1;
    f.batch.settings.starting_container_count_maximum = 2;
    f.lrp("p", 0, 10);
    f.lrp("q", 0, 10);
    let out = f.place();
    assert_eq!(out[0], Outcome::Placed(0));
    assert_eq!(out[1], Outcome::Failed(PlacementError::InflightStartLimit));
}

#[test]
fn tasks_prefer_cells_with_fewer_tasks() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 1000);
    f.cell("b", "z1", 500);
    f.batch.cells[0].tasks = 1;
    f.task("t", 10);
    assert_eq!(f.place(), vec![Outcome::Placed(1)]);
}

#[test]
fn every_strategy_gives_valid_placements_on_random_batches() {
    for seed in 0..40 {
        let shape = Shape {
            cells: 30,
            works: 60,
            zones: 3,
            processes: 8,
            task_percent: 25,
            constraints: true,
            used_percent: 60,
        };
        let batch = random_batch(seed, shape);
        for strategy in [Strategy::Classic, Strategy::Binpack, Strategy::Spread] {
            let out = place(&batch, strategy);
            assert_eq!(
                validate_outcomes(&batch, &out),
                Ok(()),
                "seed {seed} {strategy:?}"
            );
        }
    }
}

#[test]
fn validation_catches_overcommit_and_bad_cells() {
    let mut f = Fixture::new();
    f.cell("a", "z1", 100);
    f.lrp("p", 0, 80);
    f.lrp("p", 1, 80);
    f.batch.strings = f.i.strings.clone();
    f.batch.id_sets = f.i.sets.clone();
    let both = vec![Outcome::Placed(0), Outcome::Placed(0)];
    assert_eq!(
        validate_outcomes(&f.batch, &both),
        Err(InvalidPlacement::Overcommitted {
            cell: 0,
            resource: "memory"
        })
    );
    let missing = vec![Outcome::Placed(7), Outcome::Failed(PlacementError::NoCells)];
    assert_eq!(
        validate_outcomes(&f.batch, &missing),
        Err(InvalidPlacement::NoSuchCell { work: 0, cell: 7 })
    );
    assert!(matches!(
        validate_outcomes(&f.batch, &both[..1]),
        Err(InvalidPlacement::WrongLength { .. })
    ));
}

/// Shapes that exercise every filter, zone tie groups, evacuation, tasks, bin-pack and the
/// in-flight cap (from `random_batch`'s constraint variety), plus uniform ones.
fn oracle_shapes() -> Vec<Shape> {
    let mut shapes = vec![Shape::uniform(50, 40), Shape::uniform(7, 30)];
    for (cells, works, zones, processes) in [(30, 60, 3, 8), (12, 40, 5, 3), (3, 10, 1, 2)] {
        for used_percent in [20, 60, 95] {
            shapes.push(Shape {
                cells,
                works,
                zones,
                processes,
                task_percent: 25,
                constraints: true,
                used_percent,
            });
        }
    }
    shapes
}

#[test]
fn placement_equals_the_reference_implementation() {
    let mut placed = 0;
    let mut failed = 0;
    for (s, shape) in oracle_shapes().into_iter().enumerate() {
        for seed in 0..60 {
            let batch = random_batch(seed * 31 + s as u64, shape);
            for strategy in [Strategy::Classic, Strategy::Binpack, Strategy::Spread] {
                let out = place(&batch, strategy);
                assert_eq!(
                    out,
                    reference::place(&batch, strategy),
                    "seed {seed} shape {shape:?} {strategy:?}"
                );
                for o in &out {
                    match o {
                        Outcome::Placed(_) => placed += 1,
                        Outcome::Failed(_) => failed += 1,
                    }
                }
            }
        }
    }
    // The oracle only means something if both branches are well exercised.
    assert!(
        placed > 1000 && failed > 1000,
        "{placed} placed, {failed} failed"
    );
}

#[test]
fn wire_round_trips_every_field() {
    for (s, shape) in oracle_shapes().into_iter().enumerate() {
        let mut batch = random_batch(s as u64, shape);
        batch.settings.bin_pack_first_fit_weight = 0.1;
        batch.settings.starting_container_count_maximum = 7;
        batch.strings.push("ünïcode ✓".to_owned());
        let bytes = wire::encode(&batch);
        assert_eq!(bytes.len(), wire::encoded_len(&batch));
        assert_eq!(wire::decode(&bytes), Ok(batch), "shape {shape:?}");
    }
    assert_eq!(
        wire::decode(&wire::encode(&Batch::default())),
        Ok(Batch::default())
    );
}

#[test]
fn wire_refuses_malformed_bytes() {
    let batch = random_batch(3, oracle_shapes()[2]);
    let bytes = wire::encode(&batch);
    // Every truncation is refused (never a panic, never a partial batch).
    for cut in 0..bytes.len() {
        assert!(wire::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(wire::decode(&trailing).is_err());
    let mut magic = bytes.clone();
    magic[0] ^= 1;
    let err = wire::decode(&magic).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    // A huge count is refused before anything is allocated for it.
    let mut huge = wire::encode(&Batch::default());
    let strings_count = 4 + 8 + 8 + 4;
    huge[strings_count..strings_count + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(wire::decode(&huge).is_err());
}

#[test]
fn placing_from_the_wire_equals_placing_the_batch() {
    for (s, shape) in oracle_shapes().into_iter().enumerate() {
        for seed in 0..20 {
            let batch = random_batch(seed * 7 + s as u64, shape);
            let bytes = wire::encode(&batch);
            for strategy in [Strategy::Classic, Strategy::Binpack, Strategy::Spread] {
                assert_eq!(
                    wire::place(&bytes, strategy),
                    Ok(place(&batch, strategy)),
                    "seed {seed} shape {shape:?} {strategy:?}"
                );
            }
        }
    }
    assert!(wire::place(b"DAB1", Strategy::Classic).is_err());
}

#[test]
fn binpack_fills_one_cell_within_a_batch_and_keeps_instances_of_a_process_apart() {
    let mut f = Fixture::new();
    for name in ["a", "b", "c"] {
        f.cell(name, "z1", 1000);
    }
    for app in ["x", "y", "z"] {
        f.lrp(app, 0, 100);
    }
    f.lrp("w", 0, 100);
    f.lrp("w", 1, 100);
    f.batch.strings = f.i.strings.clone();
    f.batch.id_sets = f.i.sets.clone();
    let out = place(&f.batch, Strategy::Binpack);
    assert_eq!(validate_outcomes(&f.batch, &out), Ok(()));
    // Starting containers do not push binpack to the emptier cells: the first four single
    // instances share one cell; w's second instance goes elsewhere (anti-affinity).
    let first = out[0].clone();
    assert!(out[..4].iter().all(|o| *o == first), "{out:?}");
    assert_ne!(out[4], first, "{out:?}");
}
