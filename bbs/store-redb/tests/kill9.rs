//! `kill -9` in the middle of writing loses no acknowledged write and leaves no half-written one.
//!
//! The test re-executes its own binary as the writer (selected by an environment variable): the
//! child writes numbered keys from many tasks as fast as it can and prints each number once its
//! put is acknowledged. The parent SIGKILLs it after a few thousand acknowledgements, reopens the
//! store, and checks every acknowledged key and every value present. Two rounds, so that the
//! second one writes to (and crashes) a file that was itself recovered from a crash.

// Helpers outside #[test] functions panic as the tests do: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diego_store::{Store, StoreExt};
use diego_store_redb::EmbeddedStore;
use futures::StreamExt;

/// Set in the child: the store file to write to, and the round (the key prefix).
const CHILD_PATH: &str = "DIEGO_STORE_REDB_CRASH_WRITER_PATH";
const CHILD_ROUND: &str = "DIEGO_STORE_REDB_CRASH_WRITER_ROUND";
const TEST_NAME: &str = "kill_9_loses_no_acknowledged_write";
const ACKS_BEFORE_KILL: usize = 3000;
const WRITERS: u64 = 16;

fn key(round: u32, n: u64) -> String {
    format!("/crash/{round}/{n:08}")
}

/// Values of varied sizes (up to a few pages) whose every byte depends on `n`, so a torn or
/// misplaced value cannot pass for a right one.
fn value(n: u64) -> Vec<u8> {
    let len = 16 + (n * 7919 % 6000) as usize;
    let mut v = format!("value-{n:08}-").into_bytes();
    v.extend((0..len).map(|i| ((n as usize + i) % 251) as u8));
    v
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    if let Some(path) = std::env::var_os(CHILD_PATH) {
        let round = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
        write_until_killed(Path::new(&path), round);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..2 {
        let acked = run_child_and_kill(&path, round);
        assert!(
            acked.len() >= ACKS_BEFORE_KILL,
            "round {round}: only {} acks",
            acked.len()
        );
        runtime.block_on(check(&path, round, &acked));
    }
}

/// Runs the writer child, SIGKILLs it after enough acknowledgements, returns every number the
/// child acknowledged (including those still in the pipe when it died).
fn run_child_and_kill(path: &Path, round: u32) -> BTreeSet<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_PATH, path)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = BTreeSet::new();
    let mut line = String::new();
    let started = Instant::now();
    let mut killed = false;
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // A line cut short by the kill has no newline: it was not a whole acknowledgement.
        if let Some(n) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ack ")) {
            acked.insert(n.parse::<u64>().unwrap());
        }
        if !killed && acked.len() >= ACKS_BEFORE_KILL {
            // std's Child::kill sends SIGKILL: no destructor, no flush, no clean close.
            child.kill().unwrap();
            killed = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the writer child is too slow"
        );
    }
    let status = child.wait().unwrap();
    assert!(killed, "the writer child exited by itself: {status:?}");
    acked
}

async fn check(path: &Path, round: u32, acked: &BTreeSet<u64>) {
    let store = EmbeddedStore::open(path)
        .await
        .expect("the store opens cleanly after kill -9");
    for &n in acked {
        let kv = store.get(&key(round, n)).await.unwrap();
        let kv = kv.unwrap_or_else(|| panic!("acknowledged key {n} of round {round} is missing"));
        assert_eq!(
            kv.value,
            value(n),
            "acknowledged key {n} has the wrong value"
        );
    }
    // Every present key is well-formed, acknowledged or not (some were committed but the ack was
    // never printed).
    let listing = store.list("/crash/").await.unwrap();
    let mut in_round = 0;
    for kv in &listing.kvs {
        let (r, n) = kv
            .key
            .strip_prefix("/crash/")
            .and_then(|k| k.split_once('/'))
            .unwrap();
        let (r, n): (u32, u64) = (r.parse().unwrap(), n.parse().unwrap());
        assert_eq!(kv.value, value(n), "key {} has a malformed value", kv.key);
        assert_eq!(kv.create_revision, kv.mod_revision);
        in_round += usize::from(r == round);
    }
    assert!(in_round >= acked.len());
    println!(
        "round {round}: {} puts acknowledged before the kill, {in_round} found after it",
        acked.len()
    );
    // One revision per put (plus the put and delete of `/after-crash` below in each earlier
    // round), all in the change log, which replays cleanly.
    let keys = listing.kvs.len() as i64;
    assert_eq!(
        listing.revision,
        keys + 2 * i64::from(round),
        "one revision per committed put"
    );
    let mut watch = store.watch("/crash/", 1).await.unwrap();
    let mut last = 0;
    for _ in 0..keys {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(e.revision() > last && e.revision() <= listing.revision);
        assert_eq!(e.prev, None);
        last = e.revision();
    }
    // And the recovered store takes writes.
    let revision = store.put("/after-crash", b"ok".to_vec()).await.unwrap();
    assert_eq!(revision, listing.revision + 1);
    assert!(store.delete_if("/after-crash", revision).await.unwrap());
    store.close();
}

/// The child: writes until killed (or, should the parent vanish, for at most a minute).
fn write_until_killed(path: &Path, round: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> = EmbeddedStore::open(path).await.unwrap();
        let next = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let (store, next) = (store.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < stop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    store.put(&key(round, n), value(n)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {n}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}
