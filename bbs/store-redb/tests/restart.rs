//! Closing and reopening a store keeps everything: keys, the revision, leases (still ticking),
//! lease ids, and the change log.

use std::time::{Duration, Instant};

use diego_store::{EventKind, Op, Store, StoreError, StoreExt, Txn, WatchEvent, WatchStream};
use diego_store_redb::EmbeddedStore;
use futures::StreamExt;

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_keys_revision_leases_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");

    let store = EmbeddedStore::open(&path).await.unwrap();
    store.put("/a", b"1".to_vec()).await.unwrap();
    store.put("/a", b"2".to_vec()).await.unwrap();
    store.put("/b", b"b".to_vec()).await.unwrap();
    let short = store.grant_lease(Duration::from_secs(3)).await.unwrap();
    let granted = Instant::now();
    store
        .txn(Txn::new().then(Op::put_with_lease("/short", b"s".to_vec(), short)))
        .await
        .unwrap();
    let long = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .txn(Txn::new().then(Op::put_with_lease("/long", b"l".to_vec(), long)))
        .await
        .unwrap();
    let revision = store.revision().await.unwrap();
    let listing = store.list("/").await.unwrap();
    assert_eq!(revision, 5);
    assert_eq!(listing.kvs.len(), 4);

    // A live watch ends when the store closes, and the closed store refuses requests.
    let mut live = store.watch("/", 0).await.unwrap();
    store.close();
    let ended = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .unwrap();
    assert!(ended.is_none(), "a watch ends when its store closes");
    assert!(matches!(
        store.get("/a").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.put("/c", b"c".to_vec()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.health().await.unwrap().degraded());

    // The file is released by close(), even while the old handle is still alive.
    let reopened = EmbeddedStore::open(&path).await.unwrap();
    drop(store);
    let store = reopened;
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.list("/").await.unwrap(), listing);
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"2"[..], 1, 2)
    );

    // Leases survive with their keys, and ids are never handed out twice.
    store.keep_alive(long).await.unwrap();
    let newer = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert!(
        newer.0 > long.0 && newer.0 > short.0,
        "lease ids are not reused: {newer} after {long}"
    );

    // The change log survived: a watch from revision 1 replays the history before the restart.
    let mut history = store.watch("/", 1).await.unwrap();
    let mut replayed = Vec::new();
    for _ in 0..revision {
        let e = next_event(&mut history).await;
        replayed.push((e.revision(), e.kv.key.clone()));
    }
    assert_eq!(
        replayed,
        vec![
            (1, "/a".into()),
            (2, "/a".into()),
            (3, "/b".into()),
            (4, "/short".into()),
            (5, "/long".into())
        ]
    );

    // The short lease kept ticking through the restart and expires on schedule, seen by the watch.
    let e = next_event(&mut history).await;
    let expired_after = granted.elapsed();
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.revision()),
        (EventKind::Delete, "/short", revision + 1)
    );
    assert_eq!(e.prev.map(|p| p.value), Some(b"s".to_vec()));
    assert!(
        expired_after >= Duration::from_millis(2900) && expired_after < Duration::from_secs(5),
        "a 3s lease expired after {expired_after:?}"
    );
    assert_eq!(store.get("/short").await.unwrap(), None);
    assert!(matches!(
        store.keep_alive(short).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(store.get("/long").await.unwrap().is_some());

    // And the expiry itself is durable.
    store.close();
    drop(store);
    let store = EmbeddedStore::open(&path).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), revision + 1);
    assert_eq!(store.get("/short").await.unwrap(), None);
    assert!(matches!(
        store.revoke_lease(short).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.revoke_lease(long).await.unwrap();
    assert_eq!(store.get("/long").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_that_expired_while_closed_expires_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store
        .txn(Txn::new().then(Op::put_with_lease("/gone", b"x".to_vec(), lease)))
        .await
        .unwrap();
    store.close();
    drop(store);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let store = EmbeddedStore::open(&path).await.unwrap();
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    let deadline = Instant::now() + Duration::from_secs(2);
    while store.get("/gone").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "an overdue lease is reaped right after open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
