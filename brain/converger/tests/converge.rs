//! The converger against a real BBS on the embedded store: passes on the interval, at once
//! when elected, and at once when a cell's presence goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test
#![allow(missing_debug_implementations)]

use std::sync::Arc;
use std::time::Duration;

use diego_converger::{Converger, ConvergerConfig};
use diego_model::requests::LockType;
use diego_model::{CellCapacity, CellPresence};
use tokio_util::sync::CancellationToken;

pub use diego_testkit::TestBbs;

/// A BBS in this process over a fresh embedded store.
async fn start_bbs() -> TestBbs {
    TestBbs::start().await.unwrap()
}

fn start(bbs: &TestBbs, interval: Duration) -> (Arc<Converger>, CancellationToken) {
    let converger = Arc::new(Converger::new(
        bbs.client.clone(),
        ConvergerConfig { interval },
    ));
    let stop = CancellationToken::new();
    let running = converger.clone();
    let token = stop.clone();
    tokio::spawn(async move { running.run(token).await });
    (converger, stop)
}

async fn wait_for(what: &str, secs: u64, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn converges_when_elected_and_on_every_interval() {
    let bbs = start_bbs().await;
    let (converger, stop) = start(&bbs, Duration::from_millis(200));
    wait_for("the pass on election", 5, || converger.passes() >= 1).await;
    wait_for("passes on the interval", 5, || converger.passes() >= 4).await;
    assert_eq!(converger.failures(), 0, "the BBS converged every time");
    assert!(converger.last().is_some());

    // Stepping down stops the passes.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let passes = converger.passes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(converger.passes(), passes);
}

#[tokio::test]
async fn converges_at_once_when_a_cell_goes_away() {
    let bbs = start_bbs().await;
    let (converger, _stop) = start(&bbs, Duration::from_secs(3600));
    wait_for("the pass on election", 5, || converger.passes() == 1).await;
    // Let the cell event subscription connect.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cell = CellPresence {
        cell_id: "cell-gone".into(),
        rep_address: "http://127.0.0.1:1".into(),
        rep_url: "http://127.0.0.1:1".into(),
        zone: "z1".into(),
        capacity: CellCapacity {
            memory_mb: 1024,
            disk_mb: 1024,
            containers: 10,
        },
        ..Default::default()
    };
    bbs.client.register_cell(&cell, 60).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(converger.passes(), 1, "a new cell is no reason to converge");
    bbs.client
        .release_lock("cell-gone", "cell-gone", LockType::Presence)
        .await
        .unwrap();
    wait_for("the pass on the removal", 5, || converger.passes() == 2).await;
    assert_eq!(converger.cell_removals(), 1);
}
