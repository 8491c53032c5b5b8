//! etcd-specific behaviour beyond the conformance suite, on one member.

// Helpers of integration tests are test code too (clippy.toml only exempts `#[test]` fns).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diego_store::{Store, StoreError, StoreExt, Txn};
use diego_store_etcd::{EtcdOptions, EtcdStore, EtcdStoreError};
use diego_testkit::EtcdServer;
use futures::StreamExt;

async fn server() -> EtcdServer {
    tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap()
        .expect("starting etcd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_says_so() {
    let etcd = server().await;
    let store = EtcdStore::connect(&etcd.endpoints(), EtcdOptions::default())
        .await
        .unwrap();
    let first = store.put("/c/a", b"1".to_vec()).await.unwrap();
    store.put("/c/a", b"2".to_vec()).await.unwrap();
    let last = store.put("/c/a", b"3".to_vec()).await.unwrap();
    store.client().compact(last, None).await.unwrap();

    let mut stream = store.watch("/c/", first).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    match item {
        Some(Err(StoreError::Compacted {
            requested,
            compact_revision,
        })) => {
            assert_eq!((requested, compact_revision), (first, last));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the watch ends after a compaction error"
    );

    // From the compaction revision on, the history is still there.
    let mut stream = store.watch("/c/", last).await.unwrap();
    let event = stream.next().await.unwrap().unwrap();
    assert_eq!(event.kv.value, b"3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_invalid_not_unknown() {
    let etcd = server().await;
    let store = EtcdStore::connect(&etcd.endpoints(), EtcdOptions::default())
        .await
        .unwrap();
    // More operations than etcd's --max-txn-ops (128).
    let txn = (0..200).fold(Txn::new(), |txn, i| {
        txn.then(diego_store::Op::put(format!("/many/{i}"), b"x".to_vec()))
    });
    assert!(matches!(
        store.txn(txn).await,
        Err(StoreError::InvalidRequest(_))
    ));
    // Larger than etcd's --max-request-bytes (1.5 MiB).
    let huge = vec![0u8; 3 << 20];
    assert!(matches!(
        store.put("/huge", huge).await,
        Err(StoreError::InvalidRequest(_))
    ));
    // A put on a lease that does not exist.
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let txn = Txn::new().then(diego_store::Op::put_with_lease(
        "/leased",
        b"x".to_vec(),
        lease,
    ));
    assert!(matches!(store.txn(txn).await, Err(StoreError::LeaseNotFound(l)) if l == lease));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_whole_seconds_at_least_etcds_minimum() {
    let etcd = server().await;
    let store = EtcdStore::connect(&etcd.endpoints(), EtcdOptions::default())
        .await
        .unwrap();
    let lease = store.grant_lease(Duration::from_millis(10)).await.unwrap();
    let ttl = store
        .client()
        .lease_time_to_live(lease.0, None)
        .await
        .unwrap();
    // Asked for 1 s; etcd raises TTLs below 1.5 election timeouts (here 1.5 s) to 2 s.
    assert!(
        (1..=2).contains(&ttl.granted_ttl()),
        "granted {}",
        ttl.granted_ttl()
    );
    println!("a 10 ms lease was granted {} s", ttl.granted_ttl());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_checks_its_arguments() {
    assert!(matches!(
        EtcdStore::connect(&[], EtcdOptions::default()).await,
        Err(EtcdStoreError::NoEndpoints)
    ));
    let err = EtcdStore::connect(&["http://bad host:1".to_string()], EtcdOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EtcdStoreError::InvalidEndpoint { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_usable_as_a_shared_trait_object() {
    let etcd = server().await;
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(
        EtcdStore::connect(&etcd.endpoints(), EtcdOptions::default())
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(&format!("/shared/{i}"), vec![i]).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.list("/shared/").await.unwrap().kvs.len(), 8);
    let health = store.health().await.unwrap();
    assert_eq!(health.backend, "etcd");
    assert_eq!(health.members.len(), 1);
    assert!(health.members[0].leader && health.members[0].healthy);
}
