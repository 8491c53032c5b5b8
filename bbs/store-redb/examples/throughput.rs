//! A rough throughput measurement of the embedded store: small unconditional puts, first one at
//! a time, then from many concurrent writers (which share group commits).
//!
//! `cargo run --release -p diego-store-redb --example throughput [-- WRITERS PUTS_PER_WRITER [DIR]]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use diego_store::{Store, StoreExt};
use diego_store_redb::{EmbeddedStore, EmbeddedStoreOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let writers: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(64);
    let per_writer: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let dir = match args.get(3) {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let quick_repair = std::env::var_os("QUICK_REPAIR").is_some();
    let options = EmbeddedStoreOptions {
        quick_repair,
        ..Default::default()
    };
    let store = EmbeddedStore::open_with(dir.path().join("bench.redb"), options).await?;
    let value = vec![b'x'; 100];

    let sequential = 2000;
    let started = Instant::now();
    for i in 0..sequential {
        store
            .put(&format!("/bench/seq/{i:08}"), value.clone())
            .await?;
    }
    report("sequential puts", sequential, started.elapsed());

    let before = store.stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store: Arc<dyn Store> = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let t = Instant::now();
                store
                    .put(&format!("/bench/par/{w:03}/{i:08}"), value.clone())
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, diego_store::StoreError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    report(
        &format!("{writers} concurrent writers, puts"),
        writers * per_writer,
        started.elapsed(),
    );
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let after = store.stats();
    let commits = after.commits - before.commits;
    println!(
        "  {commits} commits, {:.1} puts per commit",
        (after.requests - before.requests) as f64 / commits as f64
    );
    println!(
        "  latency p50 {:?}  p99 {:?}  max {:?}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );

    let started = Instant::now();
    let reads = 20_000;
    for i in 0..reads {
        store
            .get(&format!("/bench/seq/{:08}", i % sequential))
            .await?;
    }
    report("sequential gets", reads, started.elapsed());
    store.close();
    Ok(())
}

fn report(what: &str, n: usize, elapsed: Duration) {
    println!(
        "{what}: {n} in {elapsed:.2?} = {:.0}/s",
        n as f64 / elapsed.as_secs_f64()
    );
}
