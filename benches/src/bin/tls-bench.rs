//! `tls-bench`: what mutual TLS costs the BBS and placement. The same work over plain HTTP and
//! over mTLS, side by side in one process and one run, in interleaved rounds (the order of the
//! two flips every round). Prints medians over the rounds and the ratio mTLS/plain.
//!
//! - **request latency**: a BBS (embedded store, in this process) with nothing to place for;
//!   one client on a keep-alive connection desires `--desires` LRPs one after another, then lists
//!   every ActualLRP `--lists` times; p50 and p99 of each request. Also a ping on a fresh
//!   connection each time (`--fresh`): what the handshake adds to a first request.
//! - **placement throughput**: a BBS, a brain (the real auctioneer, its HTTP API, the classic
//!   Wasm policy) and `--cells` simulated reps serving the rep's HTTP API (`/state`, `/work`),
//!   each claiming and starting what it is given through the BBS as a rep does, but without
//!   containers. `--lrps` LRPs of `--instances` are desired by `--concurrency` clients; the
//!   figure is the time from the first desire to the last instance started. Every hop (desire,
//!   BBS → brain, brain → cells, cells → BBS) is over mTLS in the mTLS run. What mTLS adds is
//!   mostly handshakes: the cells' claims open many connections at once when work lands (as a
//!   rep's do), each a full handshake, a cost fixed per burst — so it weighs more on a small
//!   `--lrps` than on a large one.
//!
//! Certificates are made in a temporary directory as `diego certs` makes them (ECDSA P-256).
//!
//! `cargo run --release -p diego-benches --bin tls-bench -- --rounds 5`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use diego_auctioneer::{Auctioneer, AuctioneerConfig, HttpCells};
use diego_bbs_client::BbsClient;
use diego_model::actions::RunAction;
use diego_model::requests::{ActualLrpsRequest, ClaimActualLrpRequest, StartActualLrpRequest};
use diego_model::{
    Action, ActualLrpInstanceKey, ActualLrpNetInfo, CellCapacity, CellPresence, DesiredLrp,
    Provider,
};
use diego_rep_client::{CellState, ContainerState, Resources, Work};
use diego_tls::{Listener, Tls, TlsFiles};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "tls-bench",
    about = "BBS request latency and placement throughput over plain HTTP and mutual TLS"
)]
struct Args {
    /// Interleaved rounds (each: one plain and one mTLS run of every phase).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sequential DesireLRP requests timed per run (they are also what the listings list).
    #[arg(long, default_value_t = 1_000)]
    desires: usize,
    /// ActualLRP listings timed per run.
    #[arg(long, default_value_t = 100)]
    lists: usize,
    /// Pings on a fresh connection each, timed per run.
    #[arg(long, default_value_t = 200)]
    fresh: usize,
    /// LRPs desired for the placement phase.
    #[arg(long, default_value_t = 5_000)]
    lrps: usize,
    /// Instances of each of those LRPs.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Simulated cells.
    #[arg(long, default_value_t = 10)]
    cells: usize,
    /// Concurrent clients desiring the placement phase's LRPs.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Mtls,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Mtls => "mTLS",
        }
    }
}

/// The identities of one platform, made once for the whole run.
struct Pki {
    _dir: tempfile::TempDir,
    bbs: Tls,
    brain: Tls,
    cell: Tls,
    client: Tls,
}

impl Pki {
    fn make() -> Result<Pki> {
        let dir = tempfile::tempdir()?;
        diego_tls::certs::make(&diego_tls::certs::Plan::new(
            dir.path(),
            vec!["127.0.0.1".into(), "localhost".into()],
        ))?;
        let load = |name: &str| {
            Tls::load(&TlsFiles::in_dir(dir.path(), name))
                .with_context(|| format!("loading the {name} certificate"))
        };
        Ok(Pki {
            bbs: load("bbs")?,
            brain: load("brain")?,
            cell: load("cell")?,
            client: load("client")?,
            _dir: dir,
        })
    }

    /// The identity of `role` in `mode` (none over plain HTTP).
    fn of<'a>(&'a self, mode: Mode, role: &'a Tls) -> Option<&'a Tls> {
        (mode == Mode::Mtls).then_some(role)
    }
}

/// A BBS in this process on the embedded store, and how to stop it.
struct Bbs {
    url: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), diego_bbs::Error>>,
    _dir: tempfile::TempDir,
}

impl Bbs {
    async fn start(tls: Option<&Tls>, auctioneer_url: Option<String>) -> Result<Bbs> {
        let dir = tempfile::tempdir()?;
        let options = diego_store_redb::EmbeddedStoreOptions {
            // the machine's disk, not the figures, decides whether this is enough
            min_free_bytes: 64 << 20,
            ..Default::default()
        };
        let store =
            diego_store_redb::EmbeddedStore::open_with(dir.path().join("bbs.redb"), options)
                .await
                .context("opening the embedded store")?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let config = diego_bbs::Config {
            listen: addr,
            auctioneer_url,
            tls: tls.cloned(),
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(diego_bbs::serve(tcp, store, config, shutdown.clone()));
        Ok(Bbs {
            url: format!("{}://{addr}", diego_tls::scheme(tls)),
            shutdown,
            server,
            _dir: dir,
        })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .context("the BBS did not stop within 10 s")?
            .context("the BBS task panicked")?
            .context("the BBS failed")
    }
}

fn lrp(guid: String, instances: usize) -> DesiredLrp {
    DesiredLrp {
        log_guid: guid.clone(),
        process_guid: guid,
        domain: "bench".into(),
        rootfs: "preloaded:cflinuxfs4".into(),
        instances: i32::try_from(instances).unwrap_or(i32::MAX),
        action: Some(Action::Run(RunAction {
            path: "/tmp/lifecycle/launcher".into(),
            args: vec!["app".into(), "bundle exec rackup -p $PORT".into()],
            user: "vcap".into(),
            ..RunAction::default()
        })),
        memory_mb: 64,
        disk_mb: 64,
        ports: vec![8080],
        ..DesiredLrp::default()
    }
}

async fn ping(client: &BbsClient) -> Result<()> {
    ensure!(client.ping().await?, "the BBS says it is not available");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request latency
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Latency {
    desire: Vec<Duration>,
    list: Vec<Duration>,
    fresh: Vec<Duration>,
}

async fn latency_run(mode: Mode, pki: &Pki, args: &Args, round: usize) -> Result<Latency> {
    let bbs = Bbs::start(pki.of(mode, &pki.bbs), None).await?;
    let tls = pki.of(mode, &pki.client);
    let client = BbsClient::with_tls(&bbs.url, tls);
    ping(&client).await?;
    let mut out = Latency::default();
    for i in 0..args.desires {
        let lrp = lrp(format!("latency-{round}-{i:05}"), 1);
        let start = Instant::now();
        client.desire_lrp(&lrp).await?;
        out.desire.push(start.elapsed());
    }
    for _ in 0..args.lists {
        let start = Instant::now();
        let listed = client.actual_lrps(&ActualLrpsRequest::default()).await?;
        out.list.push(start.elapsed());
        ensure!(
            listed.len() == args.desires,
            "listed {} ActualLRPs, desired {}",
            listed.len(),
            args.desires
        );
    }
    for _ in 0..args.fresh {
        let fresh = BbsClient::with_tls(&bbs.url, tls);
        let start = Instant::now();
        ping(&fresh).await?;
        out.fresh.push(start.elapsed());
    }
    bbs.stop().await?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Placement throughput
// ---------------------------------------------------------------------------------------------

const CELL_MEMORY_MB: i32 = 1 << 20;
const CELL_DISK_MB: i32 = 1 << 20;
const CELL_CONTAINERS: i32 = 100_000;

fn providers() -> Vec<Provider> {
    vec![Provider {
        name: "preloaded".into(),
        properties: vec!["cflinuxfs4".into()],
    }]
}

/// A rep without containers: it takes all the work it is offered, then claims and starts each
/// instance through the BBS.
struct SimRep {
    id: String,
    state: Mutex<CellState>,
    bbs: BbsClient,
    started: Arc<AtomicUsize>,
    done: Arc<tokio::sync::Notify>,
    failures: Arc<AtomicUsize>,
}

impl SimRep {
    fn state(&self) -> std::sync::MutexGuard<'_, CellState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn run_instance(self: Arc<Self>, lrp: diego_rep_client::Lrp) {
        let instance = ActualLrpInstanceKey::new(lrp.instance_guid.clone(), self.id.clone());
        let claim = ClaimActualLrpRequest {
            process_guid: lrp.key.process_guid.clone(),
            index: lrp.key.index,
            actual_lrp_instance_key: instance.clone(),
        };
        let start = StartActualLrpRequest {
            actual_lrp_key: lrp.key.clone(),
            actual_lrp_instance_key: instance,
            actual_lrp_net_info: ActualLrpNetInfo {
                address: "127.0.0.1".into(),
                instance_address: "10.254.0.2".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let outcome = async {
            self.bbs.claim_actual_lrp(&claim).await?;
            self.bbs.start_actual_lrp(&start).await
        }
        .await;
        if let Err(e) = outcome {
            eprintln!("cell {}: {e}", self.id);
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        self.done.notify_one();
    }
}

async fn rep_state(
    axum::extract::State(rep): axum::extract::State<Arc<SimRep>>,
) -> axum::Json<CellState> {
    axum::Json(rep.state().clone())
}

async fn rep_work(
    axum::extract::State(rep): axum::extract::State<Arc<SimRep>>,
    axum::Json(work): axum::Json<Work>,
) -> axum::Json<Work> {
    {
        let mut state = rep.state();
        for lrp in &work.lrps {
            let available = &mut state.available_resources;
            available.memory_mb -= lrp.resource.memory_mb;
            available.disk_mb -= lrp.resource.disk_mb;
            available.containers -= 1;
            let mut held = lrp.clone();
            held.state = ContainerState::Reserved;
            state.lrps.push(held);
        }
    }
    for lrp in work.lrps {
        tokio::spawn(rep.clone().run_instance(lrp));
    }
    axum::Json(Work::default())
}

/// Starts `count` simulated reps serving the rep API, each present in the BBS.
async fn start_cells(
    count: usize,
    tls: Option<&Tls>,
    bbs_url: &str,
    shutdown: &CancellationToken,
    started: &Arc<AtomicUsize>,
    done: &Arc<tokio::sync::Notify>,
    failures: &Arc<AtomicUsize>,
) -> Result<()> {
    let bbs = BbsClient::with_tls(bbs_url, tls);
    for i in 0..count {
        let listener = Listener::bind("127.0.0.1:0".parse()?, tls).await?;
        let url = listener.url()?;
        let id = format!("sim-cell-{i}");
        let total = Resources {
            memory_mb: CELL_MEMORY_MB,
            disk_mb: CELL_DISK_MB,
            containers: CELL_CONTAINERS,
        };
        let rep = Arc::new(SimRep {
            id: id.clone(),
            state: Mutex::new(CellState {
                rep_url: url.clone(),
                cell_id: id.clone(),
                cell_index: i32::try_from(i).unwrap_or(0),
                zone: format!("z{}", i % 3),
                rootfs_providers: providers(),
                available_resources: total,
                total_resources: total,
                ..Default::default()
            }),
            bbs: bbs.clone(),
            started: started.clone(),
            done: done.clone(),
            failures: failures.clone(),
        });
        let app = axum::Router::new()
            .route("/state", axum::routing::get(rep_state))
            .route("/work", axum::routing::post(rep_work))
            .route("/ping", axum::routing::get(|| async { "" }))
            .with_state(rep);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        let presence = CellPresence {
            cell_id: id,
            rep_address: url.clone(),
            rep_url: url,
            zone: format!("z{}", i % 3),
            capacity: CellCapacity {
                memory_mb: CELL_MEMORY_MB,
                disk_mb: CELL_DISK_MB,
                containers: CELL_CONTAINERS,
            },
            rootfs_providers: providers(),
            ..Default::default()
        };
        bbs.register_cell(&presence, 600).await?;
    }
    Ok(())
}

async fn placement_run(mode: Mode, pki: &Pki, args: &Args, cache: &Path) -> Result<Duration> {
    let shutdown = CancellationToken::new();
    let brain_tls = pki.of(mode, &pki.brain);
    let brain_listener = Listener::bind("127.0.0.1:0".parse()?, brain_tls).await?;
    let brain_url = brain_listener.url()?;
    let bbs = Bbs::start(pki.of(mode, &pki.bbs), Some(brain_url.clone())).await?;

    let auctioneer = Auctioneer::new(
        AuctioneerConfig::new(&brain_url, cache),
        BbsClient::with_tls(&bbs.url, brain_tls),
        Arc::new(HttpCells::with_tls(Duration::from_secs(10), brain_tls)),
    )
    .await
    .context("starting the auctioneer")?;
    tokio::spawn(auctioneer.clone().serve(brain_listener, shutdown.clone()));
    auctioneer.activate().await;
    tokio::spawn(auctioneer.clone().run(shutdown.clone()));

    let started = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    start_cells(
        args.cells,
        pki.of(mode, &pki.cell),
        &bbs.url,
        &shutdown,
        &started,
        &done,
        &failures,
    )
    .await?;

    let client = BbsClient::with_tls(&bbs.url, pki.of(mode, &pki.client));
    ping(&client).await?;
    let expected = args.lrps * args.instances;
    let next = Arc::new(AtomicUsize::new(0));
    let begin = Instant::now();
    let mut desirers = JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        let (lrps, instances) = (args.lrps, args.instances);
        desirers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= lrps {
                    return Ok::<_, anyhow::Error>(());
                }
                client
                    .desire_lrp(&lrp(format!("placed-{i:05}"), instances))
                    .await?;
            }
        });
    }
    while let Some(joined) = desirers.join_next().await {
        joined.context("a desiring client panicked")??;
    }
    let deadline = begin + Duration::from_secs(300);
    while started.load(Ordering::Relaxed) < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "{} of {expected} instances started within 300 s",
            started.load(Ordering::Relaxed)
        );
        let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), done.notified()).await;
    }
    let elapsed = begin.elapsed();
    ensure!(
        failures.load(Ordering::Relaxed) == 0,
        "{} claims or starts failed",
        failures.load(Ordering::Relaxed)
    );
    let running = client.actual_lrps(&ActualLrpsRequest::default()).await?;
    let running = running
        .iter()
        .filter(|a| a.state == diego_model::ActualLrpState::Running)
        .count();
    ensure!(
        running == expected,
        "{running} of {expected} instances RUNNING"
    );
    shutdown.cancel();
    bbs.stop().await?;
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(d: f64) -> String {
    format!("{:.3} ms", d * 1e3)
}

/// Per mode, per figure: one value per round.
#[derive(Default)]
struct Figures {
    values: BTreeMap<(&'static str, &'static str), Vec<f64>>,
}

impl Figures {
    fn add(&mut self, figure: &'static str, mode: Mode, value: f64) {
        self.values
            .entry((figure, mode.label()))
            .or_default()
            .push(value);
    }

    fn median(&self, figure: &'static str, mode: Mode) -> f64 {
        let mut v = self
            .values
            .get(&(figure, mode.label()))
            .cloned()
            .unwrap_or_default();
        median(&mut v)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let pki = Pki::make()?;
    let cache = tempfile::tempdir()?;
    let mut figures = Figures::default();
    eprintln!(
        "tls-bench: {} rounds; latency: {} desires, {} listings of {} ActualLRPs, {} fresh connections; placement: {} LRPs x {} on {} cells, {} clients",
        args.rounds,
        args.desires,
        args.lists,
        args.desires,
        args.fresh,
        args.lrps,
        args.instances,
        args.cells,
        args.concurrency
    );
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [Mode::Plain, Mode::Mtls]
        } else {
            [Mode::Mtls, Mode::Plain]
        };
        for mode in order {
            let l = latency_run(mode, &pki, &args, round).await?;
            figures.add(
                "desire p50",
                mode,
                percentile(&l.desire, 50.0).as_secs_f64(),
            );
            figures.add(
                "desire p99",
                mode,
                percentile(&l.desire, 99.0).as_secs_f64(),
            );
            figures.add("list p50", mode, percentile(&l.list, 50.0).as_secs_f64());
            figures.add("list p99", mode, percentile(&l.list, 99.0).as_secs_f64());
            figures.add("fresh p50", mode, percentile(&l.fresh, 50.0).as_secs_f64());
            let placed = placement_run(mode, &pki, &args, cache.path()).await?;
            figures.add("placement", mode, placed.as_secs_f64());
            eprintln!(
                "round {} {:<5}: desire p50 {}, list p50 {}, fresh p50 {}, placement {:.2} s",
                round + 1,
                mode.label(),
                ms(percentile(&l.desire, 50.0).as_secs_f64()),
                ms(percentile(&l.list, 50.0).as_secs_f64()),
                ms(percentile(&l.fresh, 50.0).as_secs_f64()),
                placed.as_secs_f64()
            );
        }
    }

    println!("\nmedians of {} rounds", args.rounds);
    println!(
        "{:<34} {:>12} {:>12} {:>11}",
        "", "plain", "mTLS", "mTLS/plain"
    );
    let rows: [(&str, &'static str); 5] = [
        ("DesireLRP, keep-alive, p50", "desire p50"),
        ("DesireLRP, keep-alive, p99", "desire p99"),
        ("ActualLRPs list, keep-alive, p50", "list p50"),
        ("ActualLRPs list, keep-alive, p99", "list p99"),
        ("ping on a new connection, p50", "fresh p50"),
    ];
    for (label, key) in rows {
        let (plain, mtls) = (
            figures.median(key, Mode::Plain),
            figures.median(key, Mode::Mtls),
        );
        println!(
            "{label:<34} {:>12} {:>12} {:>10.2}x",
            ms(plain),
            ms(mtls),
            mtls / plain
        );
    }
    let expected = (args.lrps * args.instances) as f64;
    let (plain, mtls) = (
        figures.median("placement", Mode::Plain),
        figures.median("placement", Mode::Mtls),
    );
    println!(
        "{:<34} {:>10.0}/s {:>10.0}/s {:>10.2}x   (time mTLS/plain; {} instances)",
        "placement, instances started",
        expected / plain,
        expected / mtls,
        mtls / plain,
        args.lrps * args.instances
    );
    Ok(())
}
