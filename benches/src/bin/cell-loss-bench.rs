//! `cell-loss-bench`: how long after `kill -9` of a cell all its instances run again elsewhere,
//! with the real processes — a `diego bbs`, a `diego brain` and `--cells` `diego cell`s with
//! real containers (needs root and the busybox rootfs, like the platform tests).
//!
//! Each round desires an LRP of `--instances` web servers, waits until every one answers HTTP,
//! kills one cell that holds some of them, and times until every instance is RUNNING on a
//! live cell and answering again. The killed cell is restarted between rounds (its sync
//! destroys the containers it no longer owns). Prints each round and the median.
//!
//! The figure is dominated by the presence TTL (`--ttl`, seconds): the BBS notices a lost cell
//! when its lease expires, the converger re-places its work at once on that event. Diego's
//! defaults (15 s presence TTL, 30 s convergence) take 30 s or more.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use diego_testkit::platform::answers_http;
use diego_testkit::{Platform, PlatformConfig};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "cell-loss-bench",
    about = "Time from kill -9 of a cell to all its instances running elsewhere"
)]
struct Args {
    /// The `diego` binary (default: next to this program).
    #[arg(long)]
    diego: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    cells: usize,
    #[arg(long, default_value_t = 6)]
    instances: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Presence and lock TTL, seconds.
    #[arg(long, default_value_t = 3)]
    ttl: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let diego = match args.diego {
        Some(path) => path,
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
    let rootfs = diego_testkit::root::busybox_rootfs();
    let mut p = Platform::start(
        &diego,
        PlatformConfig {
            cells: args.cells,
            rootfs: vec![("busybox".into(), rootfs)],
            ttl_seconds: args.ttl,
            ..PlatformConfig::default()
        },
    )?;
    let mut times = Vec::new();
    for round in 0..args.rounds {
        let guid = format!("loss-{round}");
        let lrp = json!({
            "process_guid": guid, "domain": "bench", "rootfs": "preloaded:busybox",
            "instances": args.instances, "memory_mb": 32, "disk_mb": 32, "ports": [8080],
            "action": {"run": {"path": "/bin/sh", "args": ["-c",
                "mkdir -p /tmp/www && echo hi > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www"]}},
            "check_definition": {"checks": [{"tcp_check": {"port": 8080}}]},
        });
        let file = p.dir().join(format!("{guid}.json"));
        std::fs::write(&file, lrp.to_string())?;
        p.diego_ok(&["desire-lrp", file.to_str().unwrap_or_default()])?;
        wait_all(&p, &guid, args.instances, None, Duration::from_secs(120))?;
        let victim = p.actual_lrps(&guid)?[0]["cell_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let i = (0..args.cells)
            .find(|i| p.cell_id(*i) == victim)
            .context("the victim is not one of ours")?;
        let killed = Instant::now();
        p.cells[i].kill9();
        wait_all(
            &p,
            &guid,
            args.instances,
            Some(&victim),
            Duration::from_secs(120),
        )?;
        let took = killed.elapsed();
        println!("round {round}: {:.2} s", took.as_secs_f64());
        times.push(took);
        p.diego_ok(&["remove-lrp", &guid])?;
        p.start_cell(i)?;
        p.wait_for(
            "the restarted cell's presence",
            Duration::from_secs(60),
            |p| Ok(p.cell_ids_present()?.contains(&victim)),
        )?;
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "cell loss → all {} instances RUNNING and answering elsewhere: median {:.2} s over {} rounds (presence TTL {} s; target < 10 s)",
        args.instances,
        median.as_secs_f64(),
        times.len(),
        args.ttl
    );
    Ok(())
}

/// Waits until `n` ORDINARY instances are RUNNING (none on `not_on`) and each answers HTTP.
fn wait_all(
    p: &Platform,
    guid: &str,
    n: usize,
    not_on: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let lrps = p.actual_lrps(guid)?;
        let up: Vec<&Value> = lrps
            .iter()
            .filter(|a| {
                a["state"] == "RUNNING"
                    && a["presence"].as_str().unwrap_or("ORDINARY") == "ORDINARY"
                    && not_on.is_none_or(|c| a["cell_id"] != c)
            })
            .collect();
        if up.len() == n
            && up.iter().all(|a| {
                answers_http(
                    a["address"].as_str().unwrap_or_default(),
                    a["ports"][0]["host_port"].as_u64().unwrap_or_default(),
                )
            })
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "{guid}: not all {n} instances up within {timeout:?}\n{}",
                p.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
