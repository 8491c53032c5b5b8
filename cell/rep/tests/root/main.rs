//! The rep over the real NativeBackend (needs root): an LRP in a busybox container passes its
//! TCP check, runs, answers on its host port, and crashes when its process is killed, its
//! output and Diego's `CELL` lines arriving at a real log server; staging tasks with the
//! buildpack and docker lifecycles (`staging.rs`, `docker.rs`).
//!
//! Run as root: `cargo test -p diego-rep --test root`. Without root the tests are skipped;
//! as root a missing prerequisite (stack rootfs, registry tools) fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod docker;
mod harness;
mod staging;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use diego_bbs_client::BbsClient;
use diego_garden::{Backend, ProcessSpec};
use diego_model::requests::ActualLrpsRequest;
use diego_model::{
    Action, ActualLrp, ActualLrpKey, ActualLrpState, Check, CheckDefinition, DesiredLrp,
    PlacementConstraint, Presence, Resource, TcpCheck,
};
use diego_rep_client::{Lrp, Work};
use diego_testkit::root::root_or_skip;
use harness::{TestCell, eventually};

pub async fn ordinary(bbs: &BbsClient, process_guid: &str) -> Option<ActualLrp> {
    bbs.actual_lrps(&ActualLrpsRequest {
        process_guid: process_guid.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_iter()
    .find(|a| a.presence == Presence::Ordinary)
}

/// Desires `lrp` and offers its instance 0 to the cell.
pub async fn run_lrp(cell: &TestCell, lrp: &DesiredLrp) {
    cell.bbs.client.desire_lrp(lrp).await.unwrap();
    let offer = Lrp {
        key: ActualLrpKey::new(lrp.process_guid.clone(), 0, lrp.domain.clone()),
        placement_constraint: PlacementConstraint {
            root_fs: lrp.rootfs.clone(),
            ..PlacementConstraint::default()
        },
        resource: Resource {
            memory_mb: lrp.memory_mb,
            disk_mb: lrp.disk_mb,
            max_pids: 0,
        },
        ..Lrp::default()
    };
    let refused = cell
        .client
        .perform(&Work {
            lrps: vec![offer],
            tasks: Vec::new(),
            cell_id: cell.cell_id.clone(),
        })
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
}

/// The instance once RUNNING.
pub async fn running(cell: &TestCell, process_guid: &str, secs: u64) -> ActualLrp {
    eventually("RUNNING", secs, || async {
        ordinary(&cell.bbs.client, process_guid)
            .await
            .filter(|a| a.state == ActualLrpState::Running)
    })
    .await
}

/// A TCP check on `port`.
pub fn tcp_check(port: u16) -> CheckDefinition {
    CheckDefinition {
        checks: vec![Check {
            tcp_check: Some(TcpCheck {
                port: u32::from(port),
                ..TcpCheck::default()
            }),
            http_check: None,
        }],
        ..CheckDefinition::default()
    }
}

/// Index of the first line containing `needle`, failing with all lines if none does.
pub fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", lines.join("\n")))
}

fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test]
async fn an_lrp_runs_in_a_real_container_answers_on_its_host_port_and_crashes_when_killed() {
    if !root_or_skip("rep root") {
        return;
    }
    // 127.0.0.200 gives the cell its own bridge, subnet and host ports
    let cell = TestCell::start(200).await;
    let lrp = DesiredLrp {
        process_guid: "root-web".into(),
        log_guid: "root-web-logs".into(),
        domain: "tests".into(),
        rootfs: "preloaded:busybox".into(),
        instances: 1,
        action: Some(Action::run(
            "sh",
            &[
                "-c",
                "echo app says hello; mkdir -p /www && echo hi-from-$CF_INSTANCE_INDEX > /www/index.html && exec httpd -f -p $PORT -h /www",
            ],
        )),
        memory_mb: 64,
        disk_mb: 64,
        ports: vec![8080],
        start_timeout_ms: 20_000,
        check_definition: Some(tcp_check(8080)),
        log_source: "APP/PROC/WEB".into(),
        ..DesiredLrp::default()
    };
    run_lrp(&cell, &lrp).await;

    let running = running(&cell, "root-web", 30).await;
    assert_eq!(running.address, "127.0.0.200");
    assert!(running.instance_address.starts_with("10.254.200."));
    let host_port = u16::try_from(running.ports[0].host_port).unwrap();
    assert!((52800..52864).contains(&host_port), "{host_port}");
    let body = http_get(SocketAddr::from(([127, 0, 0, 1], host_port))).unwrap();
    assert!(body.contains("hi-from-0"), "{body}");

    // kill the app: the instance crashes and its container goes
    let guid = running.instance_guid.clone();
    let out = cell
        .backend
        .run_and_wait(
            &guid,
            ProcessSpec {
                argv: vec!["sh".into(), "-c".into(), "kill -9 $(pidof httpd)".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0, "{}", out.stderr_str());
    let crashed = eventually("the crash", 20, || async {
        ordinary(&cell.bbs.client, "root-web")
            .await
            .filter(|a| a.crash_count == 1)
    })
    .await;
    assert_eq!(crashed.crash_reason, "APP/PROC/WEB: Exited with status 137");
    cell.container_gone(&guid).await;

    // the app's output on its log, with the cell's lines around it, in order
    let id = &cell.cell_id;
    let lines = cell
        .logs
        .wait_for(
            "root-web-logs",
            &format!("Cell {id} successfully destroyed container for instance {guid}"),
            5,
        )
        .await;
    let order = [
        format!("[CELL/0] Cell {id} creating container for instance {guid}"),
        format!("[CELL/0] Cell {id} successfully created container for instance {guid}"),
        "[APP/PROC/WEB/0] app says hello".to_string(),
        "[CELL/0] Container became healthy".to_string(),
        "[APP/PROC/WEB/0] Exit status 137".to_string(),
        "[CELL/0] Exit status 137".to_string(),
        format!("[CELL/0] Cell {id} destroying container for instance {guid}"),
        format!("[CELL/0] Cell {id} successfully destroyed container for instance {guid}"),
    ];
    let at: Vec<usize> = order.iter().map(|l| position(&lines, l)).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "{at:?} in\n{}",
        lines.join("\n")
    );
    let app = &cell.logs.recent("root-web-logs");
    assert!(
        app.iter()
            .any(|e| e.source_type == "APP/PROC/WEB" && e.instance == "0" && e.timestamp > 0),
        "{app:?}"
    );

    cell.shutdown().await;
}

/// A stopped instance says so: stopping, destroying, destroyed.
#[tokio::test]
async fn a_stopped_instance_logs_its_stop_and_the_destruction_of_its_container() {
    if !root_or_skip("rep root stop") {
        return;
    }
    let cell = TestCell::start(204).await;
    let lrp = DesiredLrp {
        process_guid: "root-stop".into(),
        log_guid: "root-stop-logs".into(),
        domain: "tests".into(),
        rootfs: "preloaded:busybox".into(),
        instances: 1,
        action: Some(Action::run("sh", &["-c", "exec httpd -f -p 8080 -h /"])),
        memory_mb: 64,
        ports: vec![8080],
        start_timeout_ms: 20_000,
        check_definition: Some(tcp_check(8080)),
        ..DesiredLrp::default()
    };
    run_lrp(&cell, &lrp).await;
    let running = running(&cell, "root-stop", 20).await;
    let guid = running.instance_guid;
    cell.client
        .stop_lrp_instance("root-stop", &guid)
        .await
        .unwrap();
    cell.container_gone(&guid).await;
    let id = &cell.cell_id;
    let lines = cell
        .logs
        .wait_for("root-stop-logs", "successfully destroyed", 5)
        .await;
    let stopping = position(
        &lines,
        &format!("[CELL/0] Cell {id} stopping instance {guid}"),
    );
    let destroying = position(
        &lines,
        &format!("Cell {id} destroying container for instance {guid}"),
    );
    assert!(stopping < destroying, "{}", lines.join("\n"));
    cell.shutdown().await;
}
