//! Auction policy: Wasm (the classic guest) against the same scoring code built natively.
//!
//! Prints medians of: instantiation (fresh store + instance from the InstancePre, pooling),
//! call overhead (an empty `place` on a warm instance), and policy scoring for batches of
//! N cells × M LRP instances — native, Wasm end to end (encode to the wire bytes + instantiate +
//! copy in + score + lift), and the encoding alone — with the Wasm/native ratio. A program, not a test: it
//! asserts nothing about speed.
//!
//! Run: `cargo bench -p diego-host --bench policy-bench` (release build).

use std::time::{Duration, Instant};

use diego_auction_scoring::testing::{Shape, random_batch};
use diego_auction_scoring::{Batch, place_classic};
use diego_host::{Host, HostConfig, Limits, bench};
use diego_plugin_artifacts as artifacts;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(iterations: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(f());
        times.push(t.elapsed());
    }
    median(times)
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{:.0} ns", us * 1e3)
    } else if us < 10_000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let dir = tempfile::tempdir()?;
    let host = Host::new(HostConfig::new(dir.path().join("cache")))?;
    let bytes = std::fs::read(artifacts::CLASSIC)?;
    let load_started = Instant::now();
    // A generous deadline: the bench measures, the limits are tested elsewhere.
    let policy = host.load_policy(&bytes)?.with_limits(Limits {
        deadline: Duration::from_secs(10),
        ..Limits::auction()
    });
    let compile = load_started.elapsed();
    let cached = Instant::now();
    let _again = host.load_policy(&bytes)?;
    let cached = cached.elapsed();

    println!(
        "classic policy component: {} bytes, sha256 {}",
        bytes.len(),
        &policy.info().sha256[..16]
    );
    println!(
        "load: compile {} | from .cwasm cache {}",
        fmt(compile),
        fmt(cached)
    );
    println!();

    let inst = time(3000, || bench::instantiate(&policy));
    let warm = median(bench::warm_place(
        &policy,
        &bench::convert(&Batch::default()),
        20_000,
    )?);
    let empty = Batch::default();
    let fresh_nop = time(3000, || policy.place(&empty));
    println!(
        "{:<44} {:>12}",
        "instantiate (pooling, InstancePre)",
        fmt(inst)
    );
    println!(
        "{:<44} {:>12}",
        "call overhead: empty place, warm instance",
        fmt(warm)
    );
    println!(
        "{:<44} {:>12}",
        "empty place, fresh instance (per-call cost)",
        fmt(fresh_nop)
    );
    println!();

    println!(
        "{:<16} {:>10} {:>11} {:>10} {:>11} {:>8} {:>7} {:>7}",
        "cells x LRPs", "native", "wasm", "of which", "wasm warm", "placed", "wasm/", "warm/"
    );
    println!(
        "{:<16} {:>10} {:>11} {:>10} {:>11} {:>8} {:>7} {:>7}",
        "", "", "end to end", "encode", "instance", "", "native", "native"
    );
    for (cells, works, iterations) in [(1000, 10, 400), (1000, 100, 200), (5000, 20, 60)] {
        let batch = random_batch(42, Shape::uniform(cells, works));
        let native_out = place_classic(&batch);
        let wasm_out = policy.place(&batch)?;
        anyhow::ensure!(
            native_out == wasm_out,
            "wasm and native disagree on {cells}x{works}"
        );
        let placed = native_out
            .iter()
            .filter(|o| matches!(o, diego_auction_scoring::Outcome::Placed(_)))
            .count();
        let native = time(iterations, || place_classic(&batch));
        let wasm = time(iterations, || policy.place(&batch));
        // Into a reused buffer, as `place` encodes (a fresh multi-MiB buffer per call would
        // time the allocator's page faults, not the encoding).
        let mut buffer = Vec::new();
        let convert = time(iterations, || {
            buffer.clear();
            diego_auction_scoring::wire::encode_into(&batch, &mut buffer);
            buffer.len()
        });
        let warm = median(bench::warm_place(
            &policy,
            &bench::convert(&batch),
            iterations,
        )?);
        println!(
            "{:<16} {:>10} {:>11} {:>10} {:>11} {:>8} {:>6.2}x {:>6.2}x",
            format!("{cells} x {works}"),
            fmt(native),
            fmt(wasm),
            fmt(convert),
            fmt(warm),
            format!("{placed}/{works}"),
            wasm.as_secs_f64() / native.as_secs_f64(),
            warm.as_secs_f64() / native.as_secs_f64()
        );
    }
    Ok(())
}
