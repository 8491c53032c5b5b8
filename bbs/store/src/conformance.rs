#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! One suite of behaviour every [`Store`] backend must pass.
//!
//! A backend's tests call [`conformance_tests!`] with an async expression that yields a
//! [`Harness`]: a store plus a key prefix no other test uses, so the cases can share one server.
//! Cases only assume what the trait promises: other writers may bump the revision meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::lock::{self, LockError};
use crate::{
    Compare, EventKind, Op, Store, StoreError, StoreExt, Txn, TxnOutcome, WatchEvent, WatchStream,
};

/// A store to test and the prefix the case may write under.
#[derive(Debug)]
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub prefix: String,
}

impl Harness {
    fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async expression that
/// evaluates to a [`Harness`]; it is evaluated once per case.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            get_missing_is_none, create_then_get, create_twice_fails, replace_is_compare_and_swap,
            racing_writers_never_lose_an_update, txn_is_all_or_nothing, delete_if_checks_revision,
            list_is_scoped_and_ordered, duplicate_keys_are_refused, lease_expiry_deletes_keys,
            keep_alive_extends_a_lease, revoke_deletes_keys_at_once, watch_replays_history_with_prev,
            watch_from_now_sees_new_changes, watch_sees_lease_expiry, locks_collide_renew_and_release,
            dead_lock_holder_loses_the_lock, large_values_round_trip, health_lists_members);
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make.await;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}

/// Waits for the next event of a watch, failing the test after 10 s.
async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10s"),
    }
}

pub async fn get_missing_is_none(h: &Harness) {
    assert_eq!(h.store.get(&h.key("missing")).await.unwrap(), None);
}

pub async fn create_then_get(h: &Harness) {
    let key = h.key("a");
    let before = h.store.revision().await.unwrap();
    assert!(h.store.create(&key, b"one".to_vec()).await.unwrap());
    let kv = h
        .store
        .get(&key)
        .await
        .unwrap()
        .expect("created key is readable");
    assert_eq!(kv.value, b"one");
    assert_eq!(kv.key, key);
    assert!(kv.mod_revision > before, "a write bumps the revision");
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert_eq!(kv.lease, None);
    assert!(h.store.revision().await.unwrap() >= kv.mod_revision);
}

pub async fn create_twice_fails(h: &Harness) {
    let key = h.key("a");
    assert!(h.store.create(&key, b"one".to_vec()).await.unwrap());
    assert!(!h.store.create(&key, b"two".to_vec()).await.unwrap());
    assert_eq!(h.store.get(&key).await.unwrap().unwrap().value, b"one");
}

pub async fn replace_is_compare_and_swap(h: &Harness) {
    let key = h.key("a");
    h.store.create(&key, b"one".to_vec()).await.unwrap();
    let first = h.store.get(&key).await.unwrap().unwrap();
    assert!(
        h.store
            .replace(&key, first.mod_revision, b"two".to_vec())
            .await
            .unwrap()
    );
    // The stale revision no longer matches: the second writer loses and nothing changes.
    assert!(
        !h.store
            .replace(&key, first.mod_revision, b"three".to_vec())
            .await
            .unwrap()
    );
    let second = h.store.get(&key).await.unwrap().unwrap();
    assert_eq!(second.value, b"two");
    assert!(second.mod_revision > first.mod_revision);
    assert_eq!(second.create_revision, first.create_revision);
    // Compare "absent" fails on an existing key.
    assert!(!h.store.replace(&key, 0, b"four".to_vec()).await.unwrap());
}

pub async fn racing_writers_never_lose_an_update(h: &Harness) {
    const WRITERS: u64 = 8;
    const INCREMENTS: u64 = 15;
    let key = h.key("counter");
    h.store.create(&key, b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = h.store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let kv = store.get(&key).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    if store
                        .replace(&key, kv.mod_revision, (n + 1).to_string().into_bytes())
                        .await
                        .unwrap()
                    {
                        break;
                    }
                    conflicts += 1;
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kv = h.store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(kv.value).unwrap(),
        (WRITERS * INCREMENTS).to_string()
    );
}

pub async fn txn_is_all_or_nothing(h: &Harness) {
    let (a, b, c) = (h.key("a"), h.key("b"), h.key("c"));
    h.store.create(&a, b"a".to_vec()).await.unwrap();
    let a_rev = h.store.get(&a).await.unwrap().unwrap().mod_revision;
    // b must be absent (it is) and a must be unchanged (it is not: a wrong revision).
    let txn = Txn::new()
        .when(Compare::absent(&b))
        .when(Compare::unchanged(&a, a_rev + 1000))
        .then(Op::put(&b, b"b".to_vec()))
        .then(Op::put(&c, b"c".to_vec()));
    assert_eq!(h.store.txn(txn).await.unwrap(), TxnOutcome::CompareFailed);
    assert_eq!(h.store.get(&b).await.unwrap(), None);
    assert_eq!(h.store.get(&c).await.unwrap(), None);
    let txn = Txn::new()
        .when(Compare::absent(&b))
        .when(Compare::unchanged(&a, a_rev))
        .then(Op::put(&b, b"b".to_vec()))
        .then(Op::put(&c, b"c".to_vec()))
        .then(Op::delete(&a));
    let TxnOutcome::Committed { revision } = h.store.txn(txn).await.unwrap() else {
        panic!("compares hold, the transaction must commit");
    };
    let b_kv = h.store.get(&b).await.unwrap().unwrap();
    let c_kv = h.store.get(&c).await.unwrap().unwrap();
    assert_eq!(
        (b_kv.mod_revision, c_kv.mod_revision),
        (revision, revision),
        "one revision per transaction"
    );
    assert_eq!(h.store.get(&a).await.unwrap(), None);
}

pub async fn delete_if_checks_revision(h: &Harness) {
    let key = h.key("a");
    h.store.create(&key, b"a".to_vec()).await.unwrap();
    let rev = h.store.get(&key).await.unwrap().unwrap().mod_revision;
    assert!(!h.store.delete_if(&key, rev + 1000).await.unwrap());
    assert!(h.store.get(&key).await.unwrap().is_some());
    assert!(h.store.delete_if(&key, rev).await.unwrap());
    assert_eq!(h.store.get(&key).await.unwrap(), None);
    // Deleting an absent key unconditionally commits and changes nothing.
    assert!(
        h.store
            .txn(Txn::new().then(Op::delete(&key)))
            .await
            .unwrap()
            .committed()
    );
}

pub async fn list_is_scoped_and_ordered(h: &Harness) {
    for name in ["dir/c", "dir/a", "dir/b", "dirx", "other"] {
        h.store
            .put(&h.key(name), name.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let listing = h.store.list(&h.key("dir/")).await.unwrap();
    let keys: Vec<String> = listing.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![h.key("dir/a"), h.key("dir/b"), h.key("dir/c")]);
    let newest = listing.kvs.iter().map(|kv| kv.mod_revision).max().unwrap();
    assert!(listing.revision >= newest);
    assert!(
        h.store
            .list(&h.key("nothing/"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
}

pub async fn duplicate_keys_are_refused(h: &Harness) {
    let key = h.key("a");
    let txn = Txn::new()
        .then(Op::put(&key, b"1".to_vec()))
        .then(Op::delete(&key));
    assert!(matches!(
        h.store.txn(txn).await,
        Err(StoreError::InvalidRequest(_))
    ));
    assert_eq!(h.store.get(&key).await.unwrap(), None);
}

pub async fn lease_expiry_deletes_keys(h: &Harness) {
    let key = h.key("leased");
    let lease = h.store.grant_lease(Duration::from_secs(1)).await.unwrap();
    h.store
        .txn(Txn::new().then(Op::put_with_lease(&key, b"x".to_vec(), lease)))
        .await
        .unwrap();
    assert_eq!(h.store.get(&key).await.unwrap().unwrap().lease, Some(lease));
    // etcd may keep an expired lease for a little while; allow a few seconds past the TTL.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while h.store.get(&key).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leased key outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        h.store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

pub async fn keep_alive_extends_a_lease(h: &Harness) {
    let key = h.key("kept");
    let lease = h.store.grant_lease(Duration::from_secs(2)).await.unwrap();
    h.store
        .txn(Txn::new().then(Op::put_with_lease(&key, b"x".to_vec(), lease)))
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.store.keep_alive(lease).await.unwrap();
    }
    assert!(
        h.store.get(&key).await.unwrap().is_some(),
        "a kept-alive lease holds its keys past the TTL"
    );
    h.store.revoke_lease(lease).await.unwrap();
}

pub async fn revoke_deletes_keys_at_once(h: &Harness) {
    let (a, b) = (h.key("a"), h.key("b"));
    let lease = h.store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let txn = Txn::new()
        .then(Op::put_with_lease(&a, b"a".to_vec(), lease))
        .then(Op::put_with_lease(&b, b"b".to_vec(), lease));
    h.store.txn(txn).await.unwrap();
    h.store.revoke_lease(lease).await.unwrap();
    assert_eq!(h.store.get(&a).await.unwrap(), None);
    assert_eq!(h.store.get(&b).await.unwrap(), None);
    assert!(matches!(
        h.store.revoke_lease(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        h.store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

pub async fn watch_replays_history_with_prev(h: &Harness) {
    let (a, b) = (h.key("w/a"), h.key("w/b"));
    let first = h.store.put(&a, b"1".to_vec()).await.unwrap();
    h.store
        .put(&h.key("elsewhere"), b"x".to_vec())
        .await
        .unwrap();
    h.store.put(&a, b"2".to_vec()).await.unwrap();
    h.store
        .txn(
            Txn::new()
                .then(Op::delete(&a))
                .then(Op::put(&b, b"3".to_vec())),
        )
        .await
        .unwrap();
    let mut stream = h.store.watch(&h.key("w/"), first).await.unwrap();

    let e = next_event(&mut stream).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.kv.value.as_slice()),
        (EventKind::Put, a.as_str(), &b"1"[..])
    );
    assert_eq!(e.revision(), first);
    assert_eq!(e.prev, None);

    let e = next_event(&mut stream).await;
    assert_eq!((e.kind, e.kv.value.as_slice()), (EventKind::Put, &b"2"[..]));
    assert_eq!(e.prev.as_ref().map(|p| p.value.as_slice()), Some(&b"1"[..]));

    let delete = next_event(&mut stream).await;
    let put = next_event(&mut stream).await;
    assert_eq!(
        (delete.kind, delete.kv.key.as_str()),
        (EventKind::Delete, a.as_str())
    );
    assert_eq!(
        delete.prev.as_ref().map(|p| p.value.as_slice()),
        Some(&b"2"[..])
    );
    assert_eq!(
        (put.kind, put.kv.key.as_str()),
        (EventKind::Put, b.as_str())
    );
    assert_eq!(
        delete.revision(),
        put.revision(),
        "changes of one transaction share its revision"
    );

    // And it goes on with live changes.
    h.store.put(&b, b"4".to_vec()).await.unwrap();
    let e = next_event(&mut stream).await;
    assert_eq!(e.kv.value, b"4");
}

pub async fn watch_from_now_sees_new_changes(h: &Harness) {
    let key = h.key("live");
    h.store.put(&key, b"old".to_vec()).await.unwrap();
    let mut stream = h.store.watch(&h.key("live"), 0).await.unwrap();
    h.store.put(&key, b"new".to_vec()).await.unwrap();
    let e = next_event(&mut stream).await;
    assert_eq!(
        e.kv.value, b"new",
        "a watch from now does not replay older changes"
    );
}

pub async fn watch_sees_lease_expiry(h: &Harness) {
    let key = h.key("presence");
    let mut stream = h.store.watch(&key, 0).await.unwrap();
    let lease = h.store.grant_lease(Duration::from_secs(1)).await.unwrap();
    h.store
        .txn(Txn::new().then(Op::put_with_lease(&key, b"here".to_vec(), lease)))
        .await
        .unwrap();
    assert_eq!(next_event(&mut stream).await.kind, EventKind::Put);
    let e = next_event(&mut stream).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str()),
        (EventKind::Delete, key.as_str())
    );
    assert_eq!(e.prev.map(|p| p.value), Some(b"here".to_vec()));
}

pub async fn locks_collide_renew_and_release(h: &Harness) {
    let key = h.key("locks/auctioneer");
    let store = h.store.as_ref();
    let held = lock::acquire(store, &key, "a", b"v1", Duration::from_secs(10))
        .await
        .unwrap();
    match lock::acquire(store, &key, "b", b"", Duration::from_secs(10)).await {
        Err(LockError::Collision { owner, .. }) => assert_eq!(owner, "a"),
        other => panic!("expected a collision, got {other:?}"),
    }
    let renewed = lock::acquire(store, &key, "a", b"v2", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(renewed.lease, held.lease, "renewing keeps the lease");
    assert_eq!(lock::fetch(store, &key).await.unwrap().value, b"v2");
    assert_eq!(lock::list(store, &h.key("locks/")).await.unwrap().len(), 1);
    assert!(matches!(
        lock::release(store, &key, "b").await,
        Err(LockError::Collision { .. })
    ));
    lock::release(store, &key, "a").await.unwrap();
    assert!(matches!(
        lock::fetch(store, &key).await,
        Err(LockError::NotFound(_))
    ));
    lock::acquire(store, &key, "b", b"", Duration::from_secs(10))
        .await
        .unwrap();
}

pub async fn dead_lock_holder_loses_the_lock(h: &Harness) {
    let key = h.key("locks/converger");
    let store = h.store.as_ref();
    lock::acquire(store, &key, "dies", b"", Duration::from_secs(1))
        .await
        .unwrap();
    // The holder stops renewing. Within its TTL (plus the backend's expiry granularity) the lock
    // passes to the next owner.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        match lock::acquire(store, &key, "next", b"", Duration::from_secs(5)).await {
            Ok(lock) => {
                assert_eq!(lock.owner, "next");
                break;
            }
            Err(LockError::Collision { .. }) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "dead holder kept the lock"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

pub async fn large_values_round_trip(h: &Harness) {
    let key = h.key("big");
    let value: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    h.store.put(&key, value.clone()).await.unwrap();
    assert_eq!(h.store.get(&key).await.unwrap().unwrap().value, value);
}

pub async fn health_lists_members(h: &Harness) {
    let health = h.store.health().await.unwrap();
    assert!(!health.members.is_empty());
    assert!(!health.degraded(), "a fresh store is healthy: {health:?}");
}
