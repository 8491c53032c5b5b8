//! The etcd store on a 3-member cluster while members die: writes fail over, nothing
//! acknowledged is lost, and a write whose fate is unknown says so.

// Helpers of integration tests are test code too (clippy.toml only exempts `#[test]` fns).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diego_store::{Revision, Store, StoreError, StoreExt};
use diego_store_etcd::{EtcdOptions, EtcdStore};
use diego_testkit::EtcdCluster;
use futures::StreamExt;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn start_cluster(n: usize) -> Arc<EtcdCluster> {
    Arc::new(
        tokio::task::spawn_blocking(move || EtcdCluster::start(n))
            .await
            .unwrap()
            .expect("starting etcd cluster"),
    )
}

/// Runs a blocking cluster operation off the runtime's workers.
async fn blocking<T: Send + 'static>(
    cluster: &Arc<EtcdCluster>,
    f: impl FnOnce(&EtcdCluster) -> T + Send + 'static,
) -> T {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || f(&cluster))
        .await
        .unwrap()
}

/// What the writers saw.
#[derive(Debug, Default)]
struct Record {
    /// Puts acknowledged: key and value.
    acked_puts: Vec<(String, String)>,
    /// Puts that ended in OutcomeUnknown.
    unknown_puts: Vec<(String, String)>,
    /// Puts that ended in Unavailable: they must not have been applied.
    unavailable_puts: Vec<(String, String)>,
    /// Counter values written by acknowledged compare-and-swaps.
    cas_acked: Vec<String>,
    /// Counter values whose compare-and-swap reported a failed compare.
    cas_failed: Vec<String>,
    /// Counter values whose compare-and-swap ended in OutcomeUnknown.
    cas_unknown: Vec<String>,
    /// Counter values whose compare-and-swap ended in Unavailable.
    cas_unavailable: Vec<String>,
    /// When each acknowledged write was sent and answered.
    successes: Vec<(Instant, Instant)>,
    /// Errors by kind.
    errors: BTreeMap<String, usize>,
}

impl Record {
    fn error(&mut self, op: &str, e: &StoreError) {
        let kind = match e {
            StoreError::OutcomeUnknown(_) => "OutcomeUnknown",
            StoreError::Unavailable(_) => "Unavailable",
            other => panic!("{op}: unexpected error during the disruption: {other}"),
        };
        *self.errors.entry(format!("{op}: {kind}")).or_default() += 1;
    }
}

/// One writer: alternately puts a fresh key and increments the shared counter by CAS.
async fn writer(
    store: Arc<dyn Store>,
    prefix: String,
    id: usize,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
) {
    let counter = format!("{prefix}counter");
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("{prefix}w{id}/{seq}");
        let value = format!("{id}:{seq}");
        let sent = Instant::now();
        let result = store.put(&key, value.clone().into_bytes()).await;
        {
            let mut r = record.lock().unwrap();
            match result {
                Ok(_) => {
                    r.acked_puts.push((key, value));
                    r.successes.push((sent, Instant::now()));
                }
                Err(e) => {
                    r.error("put", &e);
                    match e {
                        StoreError::OutcomeUnknown(_) => r.unknown_puts.push((key, value)),
                        _ => r.unavailable_puts.push((key, value)),
                    }
                }
            }
        }

        let current = match store.get(&counter).await {
            Ok(kv) => kv.unwrap(),
            Err(e) => {
                record.lock().unwrap().error("get", &e);
                continue;
            }
        };
        let n: u64 = String::from_utf8(current.value)
            .unwrap()
            .split('|')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let next = format!("{}|{id}|{seq}", n + 1);
        let sent = Instant::now();
        let result = store
            .replace(&counter, current.mod_revision, next.clone().into_bytes())
            .await;
        let mut r = record.lock().unwrap();
        match result {
            Ok(true) => {
                r.cas_acked.push(next);
                r.successes.push((sent, Instant::now()));
            }
            Ok(false) => r.cas_failed.push(next),
            Err(e) => {
                r.error("cas", &e);
                match e {
                    StoreError::OutcomeUnknown(_) => r.cas_unknown.push(next),
                    _ => r.cas_unavailable.push(next),
                }
            }
        }
    }
}

/// Every value the counter ever had from `from` on, in order, read back through a watch.
async fn counter_history(store: &dyn Store, counter: &str, from: Revision) -> Vec<String> {
    let last = store.get(counter).await.unwrap().unwrap().mod_revision;
    let mut stream = store.watch(counter, from).await.unwrap();
    let mut values = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let revision = event.revision();
        if event.kv.key == counter {
            values.push(String::from_utf8(event.kv.value).unwrap());
        }
        if revision >= last {
            return values;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_load_loses_no_acknowledged_write() {
    init_tracing();
    let cluster = start_cluster(3).await;
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&cluster.endpoints(), EtcdOptions::default())
            .await
            .expect("connecting"),
    );
    let prefix = format!("/load/{}/", uuid::Uuid::new_v4());
    let counter = format!("{prefix}counter");
    let start_revision = store.put(&counter, b"0|start|0".to_vec()).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(Mutex::new(Record::default()));
    let writers: Vec<_> = (0..4)
        .map(|id| {
            tokio::spawn(writer(
                store.clone(),
                prefix.clone(),
                id,
                stop.clone(),
                record.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = blocking(&cluster, |c| c.leader_index()).await.unwrap();
    let killed_at = Instant::now();
    blocking(&cluster, move |c| c.kill(leader)).await.unwrap();
    let acked_before_kill = record.lock().unwrap().successes.len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let record = Arc::try_unwrap(record).unwrap().into_inner().unwrap();

    // How long writes stalled.
    let first_after = record
        .successes
        .iter()
        .filter(|(sent, _)| *sent >= killed_at)
        .map(|(_, done)| done.duration_since(killed_at))
        .min()
        .expect("no write succeeded after the leader was killed");
    let mut completions: Vec<Instant> = record.successes.iter().map(|(_, done)| *done).collect();
    completions.sort();
    let longest_gap = completions
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "killed leader m{leader}: {acked_before_kill} writes acknowledged before; first write sent after the kill \
         acknowledged {first_after:?} after it; longest gap between acknowledgements {longest_gap:?}; \
         {} puts and {} CAS acknowledged in all; errors {:?}",
        record.acked_puts.len(),
        record.cas_acked.len(),
        record.errors
    );
    assert!(
        first_after < Duration::from_secs(8),
        "writes did not resume soon enough: {first_after:?}"
    );

    // The store is degraded, not down: the dead member is reported, the others lead and follow.
    let health = store
        .health()
        .await
        .expect("health succeeds while a quorum is up");
    println!("health with m{leader} dead: {health:?}");
    assert_eq!(health.members.len(), 3);
    let dead = health
        .members
        .iter()
        .find(|m| m.name == cluster.member_name(leader))
        .unwrap();
    assert!(
        !dead.healthy && dead.error.is_some(),
        "the dead member is unhealthy: {dead:?}"
    );
    assert!(health.degraded());
    assert_eq!(health.members.iter().filter(|m| m.healthy).count(), 2);
    assert_eq!(health.members.iter().filter(|m| m.leader).count(), 1);

    // Nothing acknowledged was lost; nothing reported as not applied was applied.
    for (key, value) in &record.acked_puts {
        let kv = store
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged put {key} was lost"));
        assert_eq!(kv.value, value.as_bytes());
    }
    for (key, _) in &record.unavailable_puts {
        assert_eq!(
            store.get(key).await.unwrap(),
            None,
            "a put reported Unavailable was applied: {key}"
        );
    }
    let mut unknown_applied = 0;
    for (key, _) in &record.unknown_puts {
        unknown_applied += usize::from(store.get(key).await.unwrap().is_some());
    }

    // The counter went up by one per change; a CAS that reported a failed compare never wrote.
    let history = counter_history(store.as_ref(), &counter, start_revision).await;
    for (i, value) in history.iter().enumerate() {
        let n: usize = value.split('|').next().unwrap().parse().unwrap();
        assert_eq!(n, i, "lost update in the counter history: {history:?}");
    }
    let written: HashMap<&str, ()> = history.iter().map(|v| (v.as_str(), ())).collect();
    for value in &record.cas_acked {
        assert!(
            written.contains_key(value.as_str()),
            "acknowledged CAS {value} is not in the history"
        );
    }
    for value in record.cas_failed.iter().chain(&record.cas_unavailable) {
        assert!(
            !written.contains_key(value.as_str()),
            "CAS {value} reported as not applied was applied"
        );
    }
    let cas_unknown_applied = record
        .cas_unknown
        .iter()
        .filter(|v| written.contains_key(v.as_str()))
        .count();
    println!(
        "outcome unknown: {} puts ({unknown_applied} applied after all), {} CAS ({cas_unknown_applied} applied)",
        record.unknown_puts.len(),
        record.cas_unknown.len()
    );

    // The member comes back and the cluster is whole again.
    blocking(&cluster, move |c| c.restart(leader))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = store.health().await.unwrap();
        if !health.degraded() {
            assert_eq!(health.members.iter().filter(|m| m.leader).count(), 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member is not healthy: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the restarted member serves what it missed.
    let direct = EtcdStore::connect(&[cluster.member_endpoint(leader)], EtcdOptions::default())
        .await
        .unwrap();
    let (last_key, last_value) = record.acked_puts.last().unwrap();
    assert_eq!(
        direct.get(last_key).await.unwrap().unwrap().value,
        last_value.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_the_death_of_its_member() {
    init_tracing();
    let cluster = start_cluster(3).await;
    // Only the first member is listed first, but the watch may live on any member; kill each
    // member in turn (keeping a quorum) and the watch must see every change exactly once.
    let store = EtcdStore::connect(&cluster.endpoints(), EtcdOptions::default())
        .await
        .unwrap();
    let prefix = format!("/watch/{}/", uuid::Uuid::new_v4());
    let mut stream = store.watch(&prefix, 0).await.unwrap();
    let mut expected = Vec::new();
    for victim in 0..3 {
        for i in 0..5 {
            let key = format!("{prefix}{victim}-{i}");
            store.put(&key, b"x".to_vec()).await.unwrap();
            expected.push(key);
        }
        blocking(&cluster, move |c| c.kill(victim)).await.unwrap();
        for i in 5..10 {
            let key = format!("{prefix}{victim}-{i}");
            // Writes around a leader change may be of unknown outcome; retry those by re-reading.
            loop {
                match store.put(&key, b"x".to_vec()).await {
                    Ok(_) => break,
                    Err(StoreError::OutcomeUnknown(_))
                        if store.get(&key).await.is_ok_and(|kv| kv.is_some()) =>
                    {
                        break;
                    }
                    Err(StoreError::OutcomeUnknown(_) | StoreError::Unavailable(_)) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
            expected.push(key);
        }
        blocking(&cluster, move |c| c.restart(victim))
            .await
            .unwrap();
        blocking(&cluster, |c| c.wait_healthy()).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watch stalled")
            .expect("watch ended")
            .expect("watch failed");
        seen.push(event.kv.key);
    }
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_makes_writes_outcome_unknown() {
    init_tracing();
    let cluster = start_cluster(3).await;
    let leader = blocking(&cluster, |c| c.leader_index()).await.unwrap();
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    // Talk to the leader only, so the write is proposed before it notices it lost its quorum.
    let store = EtcdStore::connect(&[cluster.member_endpoint(leader)], options)
        .await
        .unwrap();
    let key = format!("/quorum/{}", uuid::Uuid::new_v4());
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let f = followers.clone();
    blocking(&cluster, move |c| {
        for i in f {
            c.kill(i).unwrap();
        }
    })
    .await;
    match store.put(&key, b"maybe".to_vec()).await {
        Err(StoreError::OutcomeUnknown(reason)) => {
            println!("put without quorum: outcome unknown ({reason})")
        }
        other => panic!("a put without quorum must be of unknown outcome, got {other:?}"),
    }
    // Reads fail cleanly while there is no quorum.
    assert!(matches!(
        store.get(&key).await,
        Err(StoreError::Unavailable(_))
    ));
    let health = store.health().await.expect("the leader still answers");
    assert!(
        health.members.iter().all(|m| !m.healthy),
        "no member is healthy without quorum: {health:?}"
    );

    // With the quorum back, the write may turn out to have been committed after all.
    let f = followers.clone();
    blocking(&cluster, move |c| {
        for i in f {
            c.restart(i).unwrap();
        }
    })
    .await;
    blocking(&cluster, |c| c.wait_healthy()).await.unwrap();
    let after = store.get(&key).await.unwrap();
    println!(
        "after the quorum came back the unknown put is {}",
        if after.is_some() {
            "committed"
        } else {
            "absent"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_is_unavailable_and_writes_are_not_applied() {
    init_tracing();
    let cluster = start_cluster(1).await;
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(&cluster.endpoints(), options.clone())
        .await
        .unwrap();
    blocking(&cluster, |c| c.kill(0)).await.unwrap();
    // Nothing listens: no request can have been sent, so even writes are cleanly Unavailable.
    assert!(matches!(
        store.get("/k").await,
        Err(StoreError::Unavailable(_))
    ));
    let put = store.put("/k", b"v".to_vec()).await;
    assert!(matches!(put, Err(StoreError::Unavailable(_))), "{put:?}");
    assert!(matches!(
        store.health().await,
        Err(StoreError::Unavailable(_))
    ));
    let started = Instant::now();
    let err = EtcdStore::connect(&cluster.endpoints(), options)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "connect gives up after the request timeout"
    );
    println!("connect to a dead cluster: {err}");
    blocking(&cluster, |c| c.restart(0)).await.unwrap();
    // The same store works again once the member is back.
    store.put("/k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("/k").await.unwrap().unwrap().value, b"v");
}
