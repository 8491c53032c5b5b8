//! `push-bench`: how long from `diego push` to the first 200 through the router, for a
//! buildpack app and for a Docker app from a local registry, and the router's throughput and
//! p99 against hitting the instance directly — all against a real `diego dev` (needs root, the
//! stack rootfs, Debian's `docker-registry`, `umoci`, `skopeo` and `wrk`).
//!
//! Each push round pushes a fresh app (a new name: staging, droplet upload, placement, start,
//! route registration) and times from starting `diego push` until `GET /` through the router
//! answers 200. Prints every round and the medians. The throughput part runs `wrk` against the
//! router (by Host header) and against the instance's host port, side by side, and prints the
//! ratio.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use diego_testkit::{DevConfig, DevPlatform, ImageSpec, Registry, push_test_image};

#[derive(Debug, Parser)]
#[command(
    name = "push-bench",
    about = "Push to first 200 through the router; router against direct throughput"
)]
struct Args {
    /// The `diego` binary (default: next to this program).
    #[arg(long)]
    diego: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// wrk's duration per side, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Runs `diego push args…` and times until `host` answers 200 through the router.
fn time_push(dev: &DevPlatform, host: &str, args: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    dev.diego_ok(args)?;
    loop {
        if dev.get(host, "/").is_ok_and(|(s, _)| s == 200) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("{host} never answered 200\n{}", dev.log_tail());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// wrk's requests per second and p99 latency (ms) for `url`, with `host` as Host header.
fn wrk(url: &str, host: Option<&str>, args: &Args) -> Result<(f64, f64)> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{}", args.connections),
        &format!("-d{}s", args.seconds),
        "--latency",
    ]);
    if let Some(host) = host {
        cmd.args(["-H", &format!("Host: {host}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "wrk failed: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_latency_ms(v.trim()))
        .with_context(|| format!("no 99% latency in wrk's output: {text}"))??;
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("wrk reported errors for {url}:\n{text}");
    }
    Ok((rps, p99))
}

fn parse_latency_ms(v: &str) -> Result<f64> {
    let (number, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unknown latency {v}")
    };
    Ok(number.parse::<f64>()? * factor)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let diego = match &args.diego {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("diego"),
    };
    ensure!(
        diego.exists(),
        "no diego binary at {} (build it, or pass --diego)",
        diego.display()
    );
    diego_testkit::registry_tools()?;
    let registry = Registry::start()?;
    let image = ImageSpec::httpd("hello\n");
    push_test_image(&registry, "bench", "v1", &image)?;
    let image_ref = format!("{}/bench:v1", registry.host());

    let dev = DevPlatform::start(&diego, DevConfig::default())?;
    let python_bp = repo().join("lifecycles/buildpacks/python");
    dev.diego_ok(&[
        "create-buildpack",
        "python",
        &python_bp.display().to_string(),
    ])?;
    let app_dir = repo().join("lifecycles/test-apps/python-web");
    let app_dir = app_dir.display().to_string();

    let mut buildpack = Vec::new();
    let mut docker = Vec::new();
    for round in 0..args.rounds {
        let name = format!("bp{round}");
        let t = time_push(
            &dev,
            &format!("{name}.localhost"),
            &["push", &name, "-p", &app_dir],
        )?;
        println!("round {round}: buildpack app {:.2} s", t.as_secs_f64());
        buildpack.push(t.as_secs_f64());
        let name = format!("dk{round}");
        let t = time_push(
            &dev,
            &format!("{name}.localhost"),
            &["push", &name, "--docker-image", &image_ref],
        )?;
        println!("round {round}: docker app    {:.2} s", t.as_secs_f64());
        docker.push(t.as_secs_f64());
    }
    println!(
        "push → first 200 through the router, median of {}: buildpack {:.2} s, docker {:.2} s",
        args.rounds,
        median(&mut buildpack),
        median(&mut docker)
    );

    // Router against direct, same app instance, same run.
    let app: serde_json::Value =
        serde_json::from_str(&dev.diego_ok(&["app", "bp0", "-o", "json"])?)?;
    let instance = app["instances"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["state"] == "RUNNING"))
        .context("no running instance of bp0")?;
    let direct = format!(
        "http://{}:{}/",
        instance["address"].as_str().context("no address")?,
        instance["host_port"].as_u64().context("no host_port")?
    );
    let (direct_rps, direct_p99) = wrk(&direct, None, &args)?;
    let (router_rps, router_p99) = wrk(
        &format!("http://{}/", dev.router_addr),
        Some("bp0.localhost"),
        &args,
    )?;
    println!(
        "direct {direct_rps:.0} req/s p99 {direct_p99:.2} ms · router {router_rps:.0} req/s p99 {router_p99:.2} ms · router/direct throughput {:.2}x, p99 {:.2}x",
        router_rps / direct_rps,
        router_p99 / direct_p99
    );
    Ok(())
}
