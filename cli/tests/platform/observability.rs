//! Operating it: every role's `/metrics`, read with Prometheus's own text parser, changing as
//! instances start, crash and move to another cell; and `--log-format json` lines in which one
//! request id follows a placement from the BBS through the brain to a cell and back. A real
//! `diego dev` with two cells and real containers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diego_testkit::prometheus::Scrape;
use diego_testkit::{DevConfig, DevPlatform};
use serde_json::Value;

const WEB_INSTANCES: usize = 3;
const WEB_MEMORY_MB: i32 = 64;

fn desire(dev: &DevPlatform, dir: &Path, lrp: &Value) {
    let file = dir.join(format!("{}.json", lrp["process_guid"].as_str().unwrap()));
    std::fs::write(&file, lrp.to_string()).unwrap();
    dev.diego_ok(&["desire-lrp", file.to_str().unwrap()])
        .unwrap();
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The RUNNING ordinary instances of `guid`.
fn running(dev: &DevPlatform, guid: &str) -> Vec<Value> {
    let out = dev
        .diego_ok(&["actual-lrps", "--process-guid", guid])
        .unwrap_or_default();
    json_lines(&out)
        .into_iter()
        .filter(|a| a["state"] == "RUNNING" && super::presence(a) == "ORDINARY")
        .collect()
}

/// A label value of the metrics, by name and value.
fn on(cell: &str) -> [(&str, &str); 1] {
    [("cell_id", cell)]
}

/// The value of `RequestCount` of the BBS for `route`, answered 200.
fn bbs_requests(s: &Scrape, route: &str) -> f64 {
    s.sum(
        "RequestCount",
        &[("server", "bbs"), ("route", route), ("status", "200")],
    )
}

/// The request ids a JSON log line's spans carry (an auction's call to a cell may carry
/// several, comma-separated).
fn request_ids(line: &Value) -> Vec<String> {
    line["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&line["span"]))
        .filter_map(|s| s["request_id"].as_str())
        .flat_map(|ids| ids.split(','))
        .map(str::to_owned)
        .collect()
}

/// A field of the innermost span of a JSON log line.
fn span_field<'a>(line: &'a Value, key: &str) -> &'a str {
    line["span"][key].as_str().unwrap_or_default()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

fn target(line: &Value) -> &str {
    line["target"].as_str().unwrap_or_default()
}

#[test]
fn metrics_follow_instances_and_one_request_id_follows_a_placement() {
    let _serial = super::serial();
    if !diego_testkit::root::root_or_skip(
        "metrics_follow_instances_and_one_request_id_follows_a_placement",
    ) {
        return;
    }
    let busybox = diego_testkit::root::busybox_rootfs();
    let work = tempfile::tempdir().unwrap();
    let dev = DevPlatform::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_diego")),
        DevConfig {
            cells: 2,
            // the request middleware's "request answered" lines are debug
            log: "info,diego_telemetry=debug".into(),
            args: vec![
                "--crash-backoff-min".into(),
                "2s".into(),
                "--log-format".into(),
                "json".into(),
                "--rootfs".into(),
                format!("busybox={}", busybox.display()),
            ],
            ..DevConfig::default()
        },
    )
    .unwrap();
    let cells: Vec<(String, String)> = json_lines(&dev.diego_ok(&["cells"]).unwrap())
        .iter()
        .map(|c| {
            (
                c["cell_id"].as_str().unwrap().to_owned(),
                c["rep_url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(cells.len(), 2, "{cells:?}");
    let brain = dev.brain_url.clone();

    // ---- every role serves /metrics in a text Prometheus parses ----
    let roles = [
        ("bbs", dev.bbs_url.clone()),
        ("brain", brain.clone()),
        ("rep", cells[0].1.clone()),
        ("rep", cells[1].1.clone()),
        ("api", dev.api_url.clone()),
        ("router", dev.router_admin_url.clone()),
    ];
    for (_, url) in &roles {
        Scrape::fetch(url).unwrap();
    }
    for (server, url) in &roles {
        let s = Scrape::fetch(url).unwrap();
        // the first scrape of each role was counted under its own route template
        assert!(
            s.sum("RequestCount", &[("server", server), ("route", "/metrics")]) >= 1.0,
            "{server} at {url} did not count its own /metrics"
        );
        assert_eq!(s.kind("RequestCount"), Some("counter"));
        assert_eq!(s.kind("RequestLatency"), Some("histogram"));
    }
    // the brain reports once its first convergence pass ran
    dev.wait_for("a first convergence pass", Duration::from_secs(30), |_| {
        Ok(Scrape::fetch(&brain)?.sum("ConvergenceLRPRuns", &[]) >= 1.0)
    })
    .unwrap();
    // Each role's metrics are read from that role (in `diego dev` every role's /metrics shows
    // the whole process; the test does not lean on it).
    let cell_total = |name: &str| -> f64 {
        cells
            .iter()
            .map(|(cell, url)| Scrape::fetch(url).unwrap().sum(name, &on(cell)))
            .sum()
    };
    let before = Scrape::fetch(&brain).unwrap();
    let before_bbs = Scrape::fetch(&dev.bbs_url).unwrap();
    let remaining_before = cell_total("CapacityRemainingMemory");
    assert_eq!(
        remaining_before,
        cell_total("CapacityTotalMemory"),
        "empty cells"
    );
    assert_eq!(cell_total("ContainerCount"), 0.0);
    assert_eq!(before.value("LRPsDesired", &[]), Some(0.0));
    assert_eq!(before.kind("LRPsDesired"), Some("gauge"));
    assert_eq!(before.value("AuctioneerActive", &[]), Some(1.0));
    assert_eq!(
        before.value("AuctioneerPolicyActive", &[("name", "classic")]),
        Some(1.0),
        "the active policy and what places with it"
    );
    let router = Scrape::fetch(&dev.router_admin_url).unwrap();
    assert_eq!(router.kind("RouterTotalRoutes"), Some("gauge"));
    assert_eq!(router.kind("RouterTotalRequests"), Some("counter"));

    // ---- instances start: desired and running rise, capacity falls ----
    desire(
        &dev,
        work.path(),
        &super::web_lrp("web", WEB_INSTANCES as i32, WEB_MEMORY_MB),
    );
    dev.wait_for(
        "LRPsDesired and LRPsRunning at 3",
        Duration::from_secs(120),
        |d| {
            let s = Scrape::fetch(&brain)?;
            Ok(running(d, "web").len() == WEB_INSTANCES
                && s.value("LRPsDesired", &[]) == Some(3.0)
                && s.value("LRPsRunning", &[]) == Some(3.0))
        },
    )
    .unwrap();
    assert_eq!(cell_total("ContainerCount"), WEB_INSTANCES as f64);
    assert_eq!(
        remaining_before - cell_total("CapacityRemainingMemory"),
        f64::from(WEB_MEMORY_MB) * WEB_INSTANCES as f64,
        "each instance reserves its memory"
    );
    let started_brain = Scrape::fetch(&brain).unwrap();
    assert!(
        started_brain.sum("AuctioneerLRPAuctionsStarted", &[])
            - before.sum("AuctioneerLRPAuctionsStarted", &[])
            >= WEB_INSTANCES as f64
    );
    let started = Scrape::fetch(&dev.bbs_url).unwrap();
    for route in ["/v1/actual_lrps/claim", "/v1/actual_lrps/start.r1"] {
        assert!(
            bbs_requests(&started, route) - bbs_requests(&before_bbs, route)
                >= WEB_INSTANCES as f64,
            "{route}"
        );
    }

    // ---- one request id from the desire to the cell and back ----
    let log = dev.log().unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 50, "{} JSON lines", lines.len());
    for line in &lines {
        assert!(
            line["timestamp"].is_string()
                && line["level"].is_string()
                && line["target"].is_string(),
            "{line}"
        );
    }
    let desired = lines
        .iter()
        .find(|l| {
            target(l).starts_with("diego_bbs")
                && message(l) == "desired LRP created"
                && l["fields"]["process_guid"] == "web"
        })
        .unwrap_or_else(|| panic!("no desire of web in the BBS's log:\n{}", dev.log_tail()));
    assert_eq!(span_field(desired, "server"), "bbs");
    assert_eq!(span_field(desired, "route"), "/v1/desired_lrp/desire.r2");
    let id = span_field(desired, "request_id").to_owned();
    assert!(!id.is_empty(), "{desired}");
    let carrying = |what: &str, f: &dyn Fn(&Value) -> bool| -> usize {
        let n = lines
            .iter()
            .filter(|l| f(l) && request_ids(l).contains(&id))
            .count();
        assert!(n > 0, "{what} does not carry request id {id}");
        n
    };
    carrying("the brain's auction (work sent to a cell)", &|l| {
        target(l).starts_with("diego_auctioneer") && message(l) == "sending work to the cell"
    });
    carrying("the rep's /work", &|l| {
        message(l) == "request answered"
            && span_field(l, "server") == "rep"
            && span_field(l, "route") == "/work"
    });
    let running_lines = carrying("the rep's instance lifecycle", &|l| {
        target(l).starts_with("diego_rep")
            && message(l) == "instance running"
            && l["fields"]["process_guid"] == "web"
    });
    assert_eq!(running_lines, WEB_INSTANCES);
    let claims = carrying("the BBS's claims", &|l| {
        message(l) == "request answered"
            && span_field(l, "server") == "bbs"
            && span_field(l, "route") == "/v1/actual_lrps/claim"
    });
    assert_eq!(claims, WEB_INSTANCES, "each instance's claim");

    // ---- an instance crashes: Diego's crash gauges, the crash reports counted ----
    let crashes_before = bbs_requests(&started, "/v1/actual_lrps/crash");
    desire(
        &dev,
        work.path(),
        &serde_json::json!({
            "process_guid": "crasher",
            "domain": "tests",
            "rootfs": "preloaded:busybox",
            "instances": 1,
            "memory_mb": 32,
            "disk_mb": 32,
            "action": {"run": {"path": "/bin/sh", "args": ["-c", "sleep 1; exit 3"]}},
        }),
    );
    dev.wait_for(
        "CrashedActualLRPs and CrashingDesiredLRPs at 1",
        Duration::from_secs(120),
        |_| {
            let s = Scrape::fetch(&brain)?;
            Ok(s.value("CrashedActualLRPs", &[]) == Some(1.0)
                && s.value("CrashingDesiredLRPs", &[]) == Some(1.0)
                && s.value("LRPsDesired", &[]) == Some(4.0))
        },
    )
    .unwrap();
    let crashed = Scrape::fetch(&dev.bbs_url).unwrap();
    // it crashed through its immediate restarts into the backoff: three reports at least
    assert!(
        bbs_requests(&crashed, "/v1/actual_lrps/crash") - crashes_before >= 3.0,
        "crash reports counted"
    );
    dev.diego_ok(&["remove-lrp", "crasher"]).unwrap();
    dev.wait_for(
        "the crash gauges back to 0",
        Duration::from_secs(60),
        |_| {
            let s = Scrape::fetch(&brain)?;
            Ok(s.value("CrashedActualLRPs", &[]) == Some(0.0)
                && s.value("LRPsDesired", &[]) == Some(3.0))
        },
    )
    .unwrap();

    // ---- a cell drains: its instances are placed again on the other one ----
    let placed = Scrape::fetch(&brain).unwrap();
    let placed_bbs = Scrape::fetch(&dev.bbs_url).unwrap();
    let on_cell = |cell: &str| {
        running(&dev, "web")
            .iter()
            .filter(|a| a["cell_id"] == cell)
            .count()
    };
    let (drained, kept) = if on_cell(&cells[0].0) >= on_cell(&cells[1].0) {
        (&cells[0], &cells[1])
    } else {
        (&cells[1], &cells[0])
    };
    let moving = on_cell(&drained.0);
    assert!(moving > 0);
    let (status, body) =
        diego_testkit::dev::http(&format!("{}/v1/drain", drained.1), "POST", None, "").unwrap();
    assert_eq!(status, 202, "{body}");
    dev.wait_for(
        "every web instance RUNNING on the other cell",
        Duration::from_secs(120),
        |d| {
            let s = Scrape::fetch(&kept.1)?;
            Ok(running(d, "web")
                .iter()
                .filter(|a| a["cell_id"] == kept.0.as_str())
                .count()
                == WEB_INSTANCES
                && s.value("ContainerCount", &on(&kept.0)) == Some(WEB_INSTANCES as f64))
        },
    )
    .unwrap();
    dev.wait_for("LRPsRunning back at 3", Duration::from_secs(60), |_| {
        Ok(Scrape::fetch(&brain)?.value("LRPsRunning", &[]) == Some(3.0))
    })
    .unwrap();
    assert!(
        Scrape::fetch(&brain)
            .unwrap()
            .sum("AuctioneerLRPAuctionsStarted", &[])
            - placed.sum("AuctioneerLRPAuctionsStarted", &[])
            >= moving as f64,
        "the replacements were auctioned"
    );
    let moved_bbs = Scrape::fetch(&dev.bbs_url).unwrap();
    assert!(
        bbs_requests(&moved_bbs, "/v1/actual_lrps/evacuate_running.r1")
            - bbs_requests(&placed_bbs, "/v1/actual_lrps/evacuate_running.r1")
            >= moving as f64,
        "each instance was handed over"
    );
    let kept_cell = Scrape::fetch(&kept.1).unwrap();
    assert_eq!(
        kept_cell.value("CapacityRemainingMemory", &on(&kept.0)),
        kept_cell
            .value("CapacityTotalMemory", &on(&kept.0))
            .map(|t| t - f64::from(WEB_MEMORY_MB) * WEB_INSTANCES as f64)
    );
    dev.diego_ok(&["remove-lrp", "web"]).unwrap();
}
