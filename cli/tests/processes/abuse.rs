//! The BBS under a careless or hostile client (issue 10), with real `diego` processes: absurd
//! instance counts refused with the limit's name; 100,000 instances desired, scaled and removed
//! leaving no orphan, even when a removal races the desire; a stalled event subscriber cut off
//! with a resumable id while the BBS's memory stays flat; SIGTERM mid-write returning within
//! seconds with every acknowledged write kept; and the CLI in a pipeline.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use diego_model::requests::{ActualLrpsRequest, DesiredLrpsRequest, UpdateDesiredLrpRequest};
use diego_model::{DesiredLrpUpdate, ErrorType};
use diego_testkit::platform::{Platform, PlatformConfig};

use crate::*;

/// A BBS alone (no brain, no cells) as a testkit platform process.
async fn bbs_alone() -> Platform {
    tokio::task::spawn_blocking(|| {
        Platform::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_diego")),
            PlatformConfig {
                cells: 0,
                brains: 0,
                ..Default::default()
            },
        )
    })
    .await
    .unwrap()
    .unwrap()
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

async fn instances_of(client: &BbsClient, guid: &str) -> usize {
    client
        .actual_lrps(&ActualLrpsRequest {
            process_guid: guid.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// Every actual LRP's process guid has a desired LRP.
async fn orphans(client: &BbsClient) -> Vec<String> {
    let desired: BTreeSet<String> = client
        .desired_lrps(&DesiredLrpsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.process_guid)
        .collect();
    let actual: BTreeSet<String> = client
        .actual_lrps(&ActualLrpsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.process_guid)
        .collect();
    actual.difference(&desired).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absurd_instance_counts_are_refused_naming_the_limit() {
    let platform = bbs_alone().await;
    let client = BbsClient::new(platform.bbs_url());
    let err = client.desire_lrp(&lrp("huge", i32::MAX)).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::InvalidRequest), "{err}");
    assert!(
        err.to_string()
            .contains("more than the limit of 100000 instances per LRP"),
        "{err}"
    );
    assert!(client.desired_lrp("huge").await.is_err(), "nothing stored");
    // Scaling above the limit is refused the same way.
    client.desire_lrp(&lrp("small", 1)).await.unwrap();
    let err = client
        .update_desired_lrp(&UpdateDesiredLrpRequest {
            process_guid: "small".into(),
            update: DesiredLrpUpdate {
                instances: Some(100_001),
                ..Default::default()
            },
            expected_modification_tag: None,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit of 100000"), "{err}");

    // The CLI: refused is exit 4, with the message; not found 3; unreachable 12.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.json");
    std::fs::write(&file, serde_json::to_vec(&lrp("huge", i32::MAX)).unwrap()).unwrap();
    let out = platform
        .diego(&["desire-lrp", &file.display().to_string()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("limit of 100000 instances per LRP"),
        "{stderr}"
    );
    let out = platform.diego(&["remove-lrp", "no-such-lrp"]).unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(["--bbs-url", "http://127.0.0.1:1", "cells"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_instances_desired_scaled_and_removed_leave_no_orphan() {
    let platform = bbs_alone().await;
    let client = BbsClient::new(platform.bbs_url());

    let started = Instant::now();
    client.desire_lrp(&lrp("big", 100_000)).await.unwrap();
    let desired_in = started.elapsed();
    assert_eq!(instances_of(&client, "big").await, 100_000);

    let started = Instant::now();
    client
        .update_desired_lrp(&UpdateDesiredLrpRequest {
            process_guid: "big".into(),
            update: DesiredLrpUpdate {
                instances: Some(10),
                ..Default::default()
            },
            expected_modification_tag: None,
        })
        .await
        .unwrap();
    let scaled_in = started.elapsed();
    assert_eq!(instances_of(&client, "big").await, 10);

    client
        .update_desired_lrp(&UpdateDesiredLrpRequest {
            process_guid: "big".into(),
            update: DesiredLrpUpdate {
                instances: Some(100_000),
                ..Default::default()
            },
            expected_modification_tag: None,
        })
        .await
        .unwrap();
    assert_eq!(instances_of(&client, "big").await, 100_000);
    let started = Instant::now();
    client.remove_desired_lrp("big").await.unwrap();
    let removed_in = started.elapsed();
    assert_eq!(instances_of(&client, "big").await, 0);
    assert_eq!(
        client.desired_lrp("big").await.unwrap_err().kind(),
        Some(ErrorType::ResourceNotFound)
    );
    eprintln!(
        "100,000 instances: desired in {desired_in:?}, scaled to 10 in {scaled_in:?}, removed in {removed_in:?}"
    );

    // A removal racing a large desire: whatever the interleaving, nothing is left behind.
    let desire = {
        let client = client.clone();
        tokio::spawn(async move { client.desire_lrp(&lrp("raced", 100_000)).await })
    };
    loop {
        match client.remove_desired_lrp("raced").await {
            Ok(()) => break,
            Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("remove failed: {e}"),
        }
    }
    let _ = desire.await.unwrap();
    assert_eq!(orphans(&client).await, Vec::<String>::new());
    assert_eq!(instances_of(&client, "raced").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_is_cut_off_with_a_resumable_id_and_memory_stays_flat() {
    let platform = bbs_alone().await;
    let client = BbsClient::new(platform.bbs_url());
    let pid = platform.bbs.pid().unwrap();
    let load = |guid: &'static str| {
        let client = client.clone();
        async move {
            client.desire_lrp(&lrp(guid, 100_000)).await.unwrap();
            client.remove_desired_lrp(guid).await.unwrap();
        }
    };
    // Peak resident memory while `work` runs, sampled every 20 ms.
    async fn peak_during<F: std::future::Future<Output = ()>>(pid: u32, work: F) -> u64 {
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering::SeqCst;
                while sampling.load(SeqCst) {
                    peak.fetch_max(memory_kb(pid, "VmRSS"), SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        work.await;
        sampling.store(false, std::sync::atomic::Ordering::SeqCst);
        sampler.join().unwrap();
        peak.load(std::sync::atomic::Ordering::SeqCst)
    }
    // Warm up until the allocator's pools and the store's page cache have grown to the work's
    // size, then measure the same work without a subscriber: the baseline.
    load("warm-up-1").await;
    load("warm-up-2").await;
    let baseline_kb = peak_during(pid, load("baseline")).await;

    // A subscriber that connects and then never reads.
    let address = platform.bbs_url().trim_start_matches("http://").to_string();
    let mut stalled = TcpStream::connect(&address).unwrap();
    write!(
        stalled,
        "GET /v1/events HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();

    // 400,000 instance events and more while the subscriber reads none of them, and past the
    // stall timeout (10 s by default), after which it is cut off.
    let stalled_kb = peak_during(pid, async {
        load("stalled-1").await;
        load("stalled-2").await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        load("after-cut-off").await;
    })
    .await;
    eprintln!(
        "BBS peak resident memory during 100,000-instance desire+remove: {} MB without a subscriber, {} MB with a stalled one",
        baseline_kb / 1024,
        stalled_kb / 1024,
    );
    assert!(
        stalled_kb < baseline_kb + 64 * 1024,
        "memory grew by {} MB with a stalled subscriber",
        stalled_kb.saturating_sub(baseline_kb) / 1024
    );

    // The subscriber now reads: what was in flight, then the cut-off with its resume id.
    let mut reader = BufReader::new(stalled);
    let mut resume_after = None;
    let mut line = String::new();
    let mut last_id = None;
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(id) = line.trim_end().strip_prefix("id:") {
            last_id = Some(id.trim().to_string());
        }
        if line.trim_end() == "event: cut_off" || line.trim_end() == "event:cut_off" {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let data: serde_json::Value =
                serde_json::from_str(line.trim_end().trim_start_matches("data:").trim()).unwrap();
            resume_after = data["resume_after"].as_str().map(str::to_string);
            break;
        }
        line.clear();
    }
    let resume_after = resume_after.expect("the stream ends with a cut_off event");
    assert!(resume_after.parse::<String>().is_ok());
    if let Some(last_id) = last_id {
        assert!(
            !last_id.is_empty(),
            "events before the cut-off carry ids; resume after {resume_after}"
        );
    }
    // The id resumes: a subscription from it gets the next events.
    let mut resumed = client.subscribe(
        diego_bbs_client::EventStream::Lrps,
        None,
        Some(resume_after),
    );
    let (_, event) = tokio::time::timeout(Duration::from_secs(20), resumed.next())
        .await
        .expect("an event after resuming")
        .unwrap();
    assert!(!event.name().is_empty());
    let mut rest = Vec::new();
    let _ = reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)));
    let _ = reader.read_to_end(&mut rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_large_write_stops_within_seconds_keeping_acked_writes() {
    let mut platform = bbs_alone().await;
    let client = BbsClient::new(platform.bbs_url());
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (client, acked) = (client.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let guid = format!("w{writer}-n{n}");
                if client.desire_lrp(&lrp(&guid, 2)).await.is_err() {
                    return;
                }
                acked.lock().unwrap().insert(guid);
            }
        }));
    }
    let big = {
        let client = client.clone();
        tokio::spawn(async move { client.desire_lrp(&lrp("big", 100_000)).await })
    };
    // Mid-way through the large desire.
    while instances_of(&client, "big").await < 5_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = Instant::now();
    platform.bbs.sigterm();
    let status = tokio::task::block_in_place(|| platform.bbs.wait_exit(Duration::from_secs(10)))
        .expect("the BBS exits after SIGTERM");
    let stopped_in = stopping.elapsed();
    eprintln!("SIGTERM mid-desire: exited in {stopped_in:?} ({status})");
    assert!(
        stopped_in < Duration::from_secs(5),
        "took {stopped_in:?} to stop"
    );
    for writer in writers {
        writer.await.unwrap();
    }
    let _ = big.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());

    let data_dir = platform.dir().join("bbs").display().to_string();
    let bbs = BbsProcess::start(&["--data-dir".into(), data_dir]).await;
    let desired: BTreeSet<String> = bbs
        .client
        .desired_lrps(&DesiredLrpsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.process_guid)
        .collect();
    let lost: Vec<&String> = acked.difference(&desired).collect();
    assert!(lost.is_empty(), "acknowledged desires lost: {lost:?}");
    assert_eq!(orphans(&bbs.client).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_pipe_ends_the_cli_quietly_and_logs_have_no_colour() {
    let platform = bbs_alone().await;
    let client = BbsClient::new(platform.bbs_url());
    // Far more output than a pipe holds.
    client.desire_lrp(&lrp("many", 2_000)).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_diego"))
        .args([
            "--log",
            "debug",
            "--bbs-url",
            platform.bbs_url(),
            "actual-lrps",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"process_guid\":\"many\""), "{first}");
    drop(stdout); // `| head -1`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes off a terminal: {stderr}"
    );
    assert!(!stderr.is_empty(), "debug logs were written");

    let log = std::fs::read_to_string(platform.dir().join("bbs.log")).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "the BBS's log file has no colour codes"
    );
}
