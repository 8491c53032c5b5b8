//! The platform end to end, as an operator runs it: a `diego bbs`, `diego brain`s and several
//! `diego cell`s as real processes with real containers, driven through the `diego` CLI.
//!
//! These tests need root (containers) and the busybox rootfs; as root, or under CI=true, a
//! missing prerequisite fails them. They run one at a time (each starts a whole platform and
//! the machine has few cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod failover;
mod observability;
mod plugins;
mod policies;
mod push;
mod ssh;
mod tls;
mod workloads;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use diego_testkit::platform::answers_http;
use diego_testkit::{Platform, PlatformConfig};
use serde_json::Value;

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `diego app NAME -o json` against a `diego dev`.
fn app_json(dev: &diego_testkit::DevPlatform, name: &str) -> Value {
    let out = dev.diego_ok(&["app", name, "-o", "json"]).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A failing `diego <args>` against a `diego dev`: its exit code and stderr.
fn fails(dev: &diego_testkit::DevPlatform, args: &[&str]) -> (i32, String) {
    let out = dev.diego(args).unwrap();
    assert!(
        !out.status.success(),
        "diego {} should have failed; stdout: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One platform at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts a platform of `cells` cells offering `preloaded:busybox`, or `None` to skip (not root,
/// outside CI).
fn platform(test: &str, cells: usize, tweak: impl FnOnce(&mut PlatformConfig)) -> Option<Platform> {
    if !diego_testkit::root::root_or_skip(test) {
        return None;
    }
    let mut config = PlatformConfig {
        cells,
        rootfs: vec![("busybox".into(), diego_testkit::root::busybox_rootfs())],
        ..PlatformConfig::default()
    };
    tweak(&mut config);
    Some(Platform::start(&PathBuf::from(env!("CARGO_BIN_EXE_diego")), config).unwrap())
}

/// A web server LRP on the busybox rootfs: busybox httpd serving "hi" on $PORT (8080).
fn web_lrp(process_guid: &str, instances: i32, memory_mb: i32) -> Value {
    serde_json::json!({
        "process_guid": process_guid,
        "domain": "tests",
        "rootfs": "preloaded:busybox",
        "instances": instances,
        "memory_mb": memory_mb,
        "disk_mb": 64,
        "ports": [8080],
        "action": {"run": {"path": "/bin/sh", "args": ["-c",
            "mkdir -p /tmp/www && echo hi > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www"]}},
        "check_definition": {"checks": [{"tcp_check": {"port": 8080}}]},
    })
}

/// Desires `lrp` through the CLI (`diego desire-lrp -`).
fn desire(p: &Platform, lrp: &Value) {
    let file = p
        .dir()
        .join(format!("{}.json", lrp["process_guid"].as_str().unwrap()));
    std::fs::write(&file, lrp.to_string()).unwrap();
    p.diego_ok(&["desire-lrp", file.to_str().unwrap()]).unwrap();
}

/// The ORDINARY instances of `guid` that are RUNNING.
fn running(p: &Platform, guid: &str) -> Vec<Value> {
    p.actual_lrps(guid)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["state"] == "RUNNING" && presence(a) == "ORDINARY")
        .collect()
}

fn presence(a: &Value) -> &str {
    a["presence"].as_str().unwrap_or("ORDINARY")
}

/// The host address and port an instance answers on.
fn endpoint(a: &Value) -> (String, u64) {
    let address = a["address"].as_str().unwrap_or_default().to_string();
    let port = a["ports"][0]["host_port"].as_u64().unwrap_or_default();
    (address, port)
}

/// Waits until `n` instances of `guid` are RUNNING and each answers HTTP.
fn wait_running_and_answering(p: &Platform, guid: &str, n: usize, timeout: Duration) -> Duration {
    p.wait_for(
        &format!("{n} instances of {guid} RUNNING and answering"),
        timeout,
        |p| {
            let up = running(p, guid);
            Ok(up.len() == n
                && up.iter().all(|a| {
                    let (address, port) = endpoint(a);
                    answers_http(&address, port)
                }))
        },
    )
    .unwrap()
}

fn cells_of(p: &Platform, guid: &str) -> Vec<String> {
    running(p, guid)
        .iter()
        .map(|a| a["cell_id"].as_str().unwrap_or_default().to_string())
        .collect()
}
