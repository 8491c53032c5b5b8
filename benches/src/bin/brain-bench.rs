//! Placement throughput of the auctioneer: N LRP instances on M simulated cells through the
//! real auction runner (batch building, parts of 1,000, PolicyRegistry, commit to cells), once
//! with the classic Wasm component and once with the native classic policy, in interleaved
//! rounds. Prints medians: placements/s for each, and the Wasm/native time ratio.
//!
//! Cells are in-process `CellClient`s that take work without containers and update their state
//! (as a rep reserves); the cell list comes from a BBS running in-process on the embedded store.
//!
//! `cargo run --release -p diego-benches --bin brain-bench -- --rounds 5`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use diego_auctioneer::{AuctionReport, Auctioneer, AuctioneerConfig, CellClient, CellClients};
use diego_model::{
    CellCapacity, CellPresence, LrpStartRequest, PlacementConstraint, Provider, Resource,
};
use diego_rep_client::{CellState, ContainerState, RepClientError, Resources, Work};

#[derive(Debug, Parser)]
struct Args {
    /// Interleaved rounds (each: one Wasm run, one native run).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct LRPs.
    #[arg(long, default_value_t = 10_000)]
    lrps: usize,
    /// Instances of each LRP.
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// Simulated cells.
    #[arg(long, default_value_t = 1_000)]
    cells: usize,
    /// Zones the cells are spread over.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Work items per policy call.
    #[arg(long, default_value_t = 1_000)]
    part: usize,
    /// Per-call deadline of the Wasm policy, ms (the host's default is 100).
    #[arg(long, default_value_t = 100)]
    deadline_ms: u64,
}

/// A cell that accepts work without containers: it reserves capacity and lists the work.
#[derive(Debug)]
struct SimCell {
    state: Mutex<CellState>,
}

#[async_trait::async_trait]
impl CellClient for SimCell {
    async fn state(&self) -> Result<CellState, RepClientError> {
        Ok(lock(&self.state).clone())
    }

    async fn perform(&self, work: &Work) -> Result<Work, RepClientError> {
        let mut st = lock(&self.state);
        let mut refused = Work::default();
        for lrp in &work.lrps {
            let r = &lrp.resource;
            let a = &mut st.available_resources;
            if a.memory_mb < r.memory_mb || a.disk_mb < r.disk_mb || a.containers < 1 {
                refused.lrps.push(lrp.clone());
                continue;
            }
            a.memory_mb -= r.memory_mb;
            a.disk_mb -= r.disk_mb;
            a.containers -= 1;
            st.starting_container_count += 1;
            let mut lrp = lrp.clone();
            lrp.state = ContainerState::Reserved;
            st.lrps.push(lrp);
        }
        Ok(refused)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct SimFleet {
    cells: Mutex<HashMap<String, Arc<SimCell>>>,
}

impl CellClients for SimFleet {
    fn client(&self, cell: &CellPresence) -> Arc<dyn CellClient> {
        let mut cells = lock(&self.cells);
        cells
            .entry(cell.cell_id.clone())
            .or_insert_with(|| {
                Arc::new(SimCell {
                    state: Mutex::new(CellState::default()),
                })
            })
            .clone()
    }
}

const MEMORY_MB: i32 = 64 * 1024;
const DISK_MB: i32 = 256 * 1024;
const CONTAINERS: i32 = 250;

fn presence(i: usize, zones: usize) -> CellPresence {
    let url = format!("http://sim-cell-{i}.invalid");
    CellPresence {
        cell_id: format!("cell-{i}"),
        rep_address: url.clone(),
        rep_url: url,
        zone: format!("z{}", i % zones.max(1)),
        capacity: CellCapacity {
            memory_mb: MEMORY_MB,
            disk_mb: DISK_MB,
            containers: CONTAINERS,
        },
        rootfs_providers: providers(),
        ..Default::default()
    }
}

fn providers() -> Vec<Provider> {
    vec![
        Provider {
            name: "preloaded".into(),
            properties: vec!["cflinuxfs4".into()],
        },
        Provider {
            name: "docker".into(),
            properties: vec![],
        },
    ]
}

impl SimFleet {
    /// Every cell empty again.
    fn reset(&self, presences: &[CellPresence]) {
        let mut cells = lock(&self.cells);
        cells.clear();
        let total = Resources {
            memory_mb: MEMORY_MB,
            disk_mb: DISK_MB,
            containers: CONTAINERS,
        };
        for (i, p) in presences.iter().enumerate() {
            let state = CellState {
                rep_url: p.rep_url.clone(),
                cell_id: p.cell_id.clone(),
                cell_index: i as i32,
                zone: p.zone.clone(),
                rootfs_providers: providers(),
                available_resources: total,
                total_resources: total,
                ..Default::default()
            };
            cells.insert(
                p.cell_id.clone(),
                Arc::new(SimCell {
                    state: Mutex::new(state),
                }),
            );
        }
    }
}

/// `lrps` start requests of `instances` each: a mix of sizes and rootfses.
fn work(lrps: usize, instances: usize) -> Vec<LrpStartRequest> {
    const MEMORY: [i32; 6] = [64, 128, 128, 256, 512, 1024];
    const DISK: [i32; 3] = [256, 512, 1024];
    (0..lrps)
        .map(|i| LrpStartRequest {
            process_guid: format!("bench-{i:05}"),
            domain: "bench".into(),
            indices: (0..instances as i32).collect(),
            resource: Resource {
                memory_mb: MEMORY[i % MEMORY.len()],
                disk_mb: DISK[i % DISK.len()],
                max_pids: 1024,
            },
            placement_constraint: PlacementConstraint {
                root_fs: if i % 4 == 0 {
                    "docker:///library/app".into()
                } else {
                    "preloaded:cflinuxfs4".into()
                },
                ..Default::default()
            },
        })
        .collect()
}

struct Run {
    elapsed: Duration,
    report: AuctionReport,
}

async fn run_once(
    auctioneer: &Auctioneer,
    fleet: &SimFleet,
    presences: &[CellPresence],
    requests: &[LrpStartRequest],
) -> anyhow::Result<Run> {
    fleet.reset(presences);
    auctioneer
        .submit_lrps(requests.to_vec())
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let report = auctioneer.auction_once().await;
    Ok(Run {
        elapsed: started.elapsed(),
        report,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let args = Args::parse();

    let dir = tempfile::tempdir().context("temp dir")?;
    let test_bbs = diego_testkit::TestBbs::start().await?;
    let bbs = test_bbs.client.clone();
    let presences: Vec<CellPresence> = (0..args.cells).map(|i| presence(i, args.zones)).collect();
    for chunk in presences.chunks(64) {
        let registered =
            futures::future::join_all(chunk.iter().map(|p| bbs.register_cell(p, 3600))).await;
        for r in registered {
            r.context("register a simulated cell")?;
        }
    }

    let fleet = Arc::new(SimFleet::default());
    let mut config = AuctioneerConfig::new("http://127.0.0.1:0", dir.path().join("policies"));
    config.max_batch_part = args.part;
    config.policy_limits.deadline = Duration::from_millis(args.deadline_ms);
    let wasm = Auctioneer::new(config.clone(), bbs.clone(), fleet.clone()).await?;
    let native = Auctioneer::new(config, bbs.clone(), fleet.clone()).await?;
    native.use_native_policy().await;

    let requests = work(args.lrps, args.instances);
    let total = args.lrps * args.instances;
    println!(
        "brain-bench: {total} LRP instances ({} LRPs x {}) on {} cells in {} zones, parts of {}, {} rounds",
        args.lrps, args.instances, args.cells, args.zones, args.part, args.rounds
    );
    // Warm-up (connection pools, allocator, the policy's first instances).
    run_once(
        &wasm,
        &fleet,
        &presences,
        &requests[..requests.len().min(200)],
    )
    .await?;
    run_once(
        &native,
        &fleet,
        &presences,
        &requests[..requests.len().min(200)],
    )
    .await?;

    let (mut wasm_rates, mut native_rates) = (Vec::new(), Vec::new());
    let (mut wasm_secs, mut native_secs) = (Vec::new(), Vec::new());
    let (mut wasm_place, mut native_place) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Alternate which goes first, so drift (caches, other load) hits both alike.
        let order: [(&str, &Auctioneer); 2] = if round % 2 == 0 {
            [("wasm", &wasm), ("native", &native)]
        } else {
            [("native", &native), ("wasm", &wasm)]
        };
        for (name, auctioneer) in order {
            let run = run_once(auctioneer, &fleet, &presences, &requests).await?;
            let r = &run.report;
            let rate = r.lrps_placed as f64 / run.elapsed.as_secs_f64();
            println!(
                "round {round} {name:>6}: {:>8.0} placements/s  ({} placed, {} failed, {} parts, {} fallbacks; {:.3}s total, {:.3}s placing)",
                rate,
                r.lrps_placed,
                r.lrps_failed,
                r.parts,
                r.fallbacks,
                run.elapsed.as_secs_f64(),
                r.placement_time.as_secs_f64()
            );
            if r.fallbacks > 0 && name == "wasm" {
                println!(
                    "  warning: the Wasm policy faulted on {} parts (native placed them)",
                    r.fallbacks
                );
            }
            let (rates, secs, place) = if name == "wasm" {
                (&mut wasm_rates, &mut wasm_secs, &mut wasm_place)
            } else {
                (&mut native_rates, &mut native_secs, &mut native_place)
            };
            rates.push(rate);
            secs.push(run.elapsed.as_secs_f64());
            place.push(r.placement_time.as_secs_f64());
        }
    }
    let (w, n) = (median(wasm_rates), median(native_rates));
    let (ws, ns) = (median(wasm_secs), median(native_secs));
    let (wp, np) = (median(wasm_place), median(native_place));
    println!("median wasm:   {w:>8.0} placements/s ({ws:.3}s per auction, {wp:.3}s placing)");
    println!("median native: {n:>8.0} placements/s ({ns:.3}s per auction, {np:.3}s placing)");
    println!(
        "wasm/native time: {:.2}x per auction, {:.2}x placing (targets: >= 50000/s wasm; <= 2x)",
        ws / ns,
        wp / np
    );
    drop(test_bbs);
    Ok(())
}
