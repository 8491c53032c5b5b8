//! Behaviour specific to the embedded store, beyond the conformance suite: change-log retention,
//! watches that fall behind the live broadcast, group commit keeping one revision per
//! transaction, and the limits.

// Helpers outside #[test] functions panic as the tests do: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use diego_store::{
    EventKind, LeaseId, Op, Store, StoreError, StoreExt, Txn, TxnOutcome, WatchEvent, WatchStream,
};
use diego_store_redb::{EmbeddedStore, EmbeddedStoreOptions};
use futures::StreamExt;

async fn open(options: EmbeddedStoreOptions) -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path().join("store.redb"), options)
        .await
        .unwrap();
    (dir, store)
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_revisions_are_compacted() {
    let (_dir, store) = open(EmbeddedStoreOptions {
        change_log_retention: 10,
        ..Default::default()
    })
    .await;
    for i in 0..30 {
        store
            .put(&format!("/k/{i:02}"), b"v".to_vec())
            .await
            .unwrap();
    }
    match store.watch("/k/", 1).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!((requested, compact_revision), (1, 21));
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| "a stream")),
    }
    // The retained revisions still replay, then the watch goes on live.
    let mut stream = store.watch("/k/", 21).await.unwrap();
    for revision in 21..=30 {
        assert_eq!(next_event(&mut stream).await.revision(), revision);
    }
    store.put("/k/live", b"v".to_vec()).await.unwrap();
    assert_eq!(next_event(&mut stream).await.kv.key, "/k/live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_lags_reads_the_log_without_gaps_or_duplicates() {
    // A broadcast buffer of one group: an idle watcher lags at once.
    let (_dir, store) = open(EmbeddedStoreOptions {
        watch_buffer: 1,
        ..Default::default()
    })
    .await;
    store.put("/other", b"x".to_vec()).await.unwrap();
    let mut stream = store.watch("/w/", 0).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                store
                    .put(&format!("/w/{w}"), i.to_string().into_bytes())
                    .await
                    .unwrap();
                store.put("/other", b"x".to_vec()).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut last = 1;
    let mut seen = [0u32; 4];
    for _ in 0..200 {
        let e = next_event(&mut stream).await;
        assert!(
            e.revision() > last,
            "revisions strictly increase: {} after {last}",
            e.revision()
        );
        last = e.revision();
        let w: usize = e.kv.key.strip_prefix("/w/").unwrap().parse().unwrap();
        assert_eq!(
            e.kv.value,
            seen[w].to_string().into_bytes(),
            "writer {w}'s puts arrive in order, none missed"
        );
        seen[w] += 1;
    }
    store.put("/w/0", b"live".to_vec()).await.unwrap();
    let e = next_event(&mut stream).await;
    assert_eq!(e.kv.value, b"live");
    assert_eq!(e.prev.map(|p| p.value), Some(b"49".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_each_get_their_own_revision() {
    let (_dir, store) = open(EmbeddedStoreOptions::default()).await;
    let start = store.revision().await.unwrap();
    let mut stream = store.watch("/g/", 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let txn = Txn::new()
                .then(Op::put(format!("/g/{i:02}/a"), b"a".to_vec()))
                .then(Op::put(format!("/g/{i:02}/b"), b"b".to_vec()));
            match store.txn(txn).await.unwrap() {
                TxnOutcome::Committed { revision } => revision,
                TxnOutcome::CompareFailed => panic!("no compares to fail"),
            }
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap());
    }
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        ((start + 1)..=(start + 64)).collect::<Vec<_>>(),
        "one revision per transaction, no gaps"
    );
    for _ in 0..64 {
        let (a, b) = (next_event(&mut stream).await, next_event(&mut stream).await);
        assert_eq!(
            a.revision(),
            b.revision(),
            "a transaction's events share its revision"
        );
        assert!(
            a.kv.key.ends_with("/a") && b.kv.key.ends_with("/b"),
            "in key order"
        );
        let kv = store.get(&a.kv.key).await.unwrap().unwrap();
        assert_eq!(kv.mod_revision, a.revision());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_absent_keys_changes_nothing() {
    let (_dir, store) = open(EmbeddedStoreOptions::default()).await;
    store.put("/x", b"x".to_vec()).await.unwrap();
    let revision = store.revision().await.unwrap();
    let mut stream = store.watch("/", 0).await.unwrap();
    let outcome = store
        .txn(
            Txn::new()
                .then(Op::delete("/absent"))
                .then(Op::delete("/also-absent")),
        )
        .await
        .unwrap();
    assert_eq!(outcome, TxnOutcome::Committed { revision });
    assert_eq!(store.revision().await.unwrap(), revision);
    store.put("/y", b"y".to_vec()).await.unwrap();
    let e = next_event(&mut stream).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.revision()),
        (EventKind::Put, "/y", revision + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_an_unknown_lease_is_refused_whole() {
    let (_dir, store) = open(EmbeddedStoreOptions::default()).await;
    let txn = Txn::new()
        .then(Op::put("/plain", b"p".to_vec()))
        .then(Op::put_with_lease("/leased", b"l".to_vec(), LeaseId(77)));
    assert!(matches!(
        store.txn(txn).await,
        Err(StoreError::LeaseNotFound(LeaseId(77)))
    ));
    assert_eq!(store.get("/plain").await.unwrap(), None);
    assert_eq!(store.revision().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_key_to_another_lease_detaches_it_from_the_first() {
    let (_dir, store) = open(EmbeddedStoreOptions::default()).await;
    let first = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let second = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .txn(Txn::new().then(Op::put_with_lease("/k", b"1".to_vec(), first)))
        .await
        .unwrap();
    store
        .txn(Txn::new().then(Op::put_with_lease("/k", b"2".to_vec(), second)))
        .await
        .unwrap();
    store.revoke_lease(first).await.unwrap();
    assert_eq!(store.get("/k").await.unwrap().unwrap().lease, Some(second));
    store.put("/k", b"3".to_vec()).await.unwrap();
    store.revoke_lease(second).await.unwrap();
    assert_eq!(
        store.get("/k").await.unwrap().unwrap().value,
        b"3",
        "a key put without a lease is detached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_ten_mebibytes_round_trip_and_bigger_ones_are_refused() {
    let (_dir, store) = open(EmbeddedStoreOptions {
        max_value_bytes: 12 * 1024 * 1024,
        ..Default::default()
    })
    .await;
    let value: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut stream = store.watch("/big", 0).await.unwrap();
    store.put("/big", value.clone()).await.unwrap();
    assert_eq!(store.get("/big").await.unwrap().unwrap().value, value);
    assert_eq!(next_event(&mut stream).await.kv.value, value);
    let too_big = vec![0u8; 12 * 1024 * 1024 + 1];
    assert!(matches!(
        store.put("/bigger", too_big).await,
        Err(StoreError::InvalidRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_file() {
    let (dir, store) = open(EmbeddedStoreOptions::default()).await;
    let health = store.health().await.unwrap();
    assert_eq!(health.backend, "embedded");
    assert_eq!(health.members.len(), 1);
    let member = &health.members[0];
    assert_eq!(member.name, "embedded");
    assert_eq!(
        member.endpoint,
        dir.path().join("store.redb").display().to_string()
    );
    assert!(member.healthy && member.leader && member.error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_writes_that_add_data_but_not_deletes() {
    // Any real disk has less free space than u64::MAX: the store behaves as on a full disk.
    let (_dir, store) = open(EmbeddedStoreOptions {
        min_free_bytes: 0,
        ..Default::default()
    })
    .await;
    store
        .txn(Txn::new().then(Op::put("/a", "1")))
        .await
        .unwrap();
    let path = store.path().to_path_buf();
    store.close();
    drop(store);
    let store = EmbeddedStore::open_with(
        &path,
        EmbeddedStoreOptions {
            min_free_bytes: u64::MAX,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = store
        .txn(Txn::new().then(Op::put("/b", "2")))
        .await
        .unwrap_err();
    match &err {
        StoreError::Unavailable(why) => {
            assert!(
                why.contains("nearly full") && why.contains("MiB free"),
                "{why}"
            );
            assert!(why.contains("nothing written"), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(store.get("/b").await.unwrap().is_none(), "nothing written");
    // Deletes win space back, and leases keep locks alive.
    store.txn(Txn::new().then(Op::delete("/a"))).await.unwrap();
    assert!(store.get("/a").await.unwrap().is_none());
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store.keep_alive(lease).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_reaches_live_watches_through_the_change_log() {
    let (_dir, store) = open(EmbeddedStoreOptions::default()).await;
    let mut watch = store.watch("/big/", 0).await.unwrap();
    // One transaction far larger than a broadcast message may carry.
    let value = vec![b'x'; 16 * 1024];
    let mut txn = Txn::new();
    for i in 0..64 {
        txn = txn.then(Op::put(format!("/big/{i:03}"), value.clone()));
    }
    store.txn(txn).await.unwrap();
    store
        .txn(Txn::new().then(Op::put("/big/zz", "after")))
        .await
        .unwrap();
    for i in 0..64 {
        let event = next_event(&mut watch).await;
        assert_eq!(event.kv.key, format!("/big/{i:03}"));
        assert_eq!(event.kv.value.len(), value.len());
    }
    assert_eq!(next_event(&mut watch).await.kv.key, "/big/zz");
}
