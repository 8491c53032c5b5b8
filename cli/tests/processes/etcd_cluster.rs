//! A BBS over a 3-member etcd cluster: the leader is killed mid-load; writes go on, no
//! acknowledged write is lost, timeouts are reported as "outcome unknown" (never as a clean
//! failure), and the BBS reports the degraded member.

use std::sync::{Arc, Mutex};

use diego_model::ErrorType;
use diego_model::requests::DesiredLrpsRequest;

use crate::*;

#[derive(Debug, Default)]
struct Outcomes {
    acked: Vec<String>,
    unknown: Vec<String>,
    refused: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_survive_losing_the_leader_and_the_bbs_reports_it() {
    let cluster = tokio::task::spawn_blocking(|| diego_testkit::EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster");
    let cluster = Arc::new(cluster);
    let bbs = BbsProcess::start(&["--etcd".to_string(), cluster.endpoints().join(",")]).await;
    let health = bbs.client.store_health().await.unwrap();
    assert_eq!(
        (health.members.len(), health.degraded),
        (3, false),
        "{health:?}"
    );

    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let client = bbs.client.clone();
        let outcomes = outcomes.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let guid = format!("w{writer}-n{n}");
                n += 1;
                match client.desire_lrp(&lrp(&guid, 1)).await {
                    Ok(()) => outcomes.lock().unwrap().acked.push(guid),
                    Err(e) if e.kind() == Some(ErrorType::Timeout) || e.kind().is_none() => {
                        outcomes.lock().unwrap().unknown.push(guid)
                    }
                    Err(e) => {
                        assert!(
                            e.kind() == Some(ErrorType::Unavailable),
                            "a write during failover failed cleanly with {e}"
                        );
                        outcomes.lock().unwrap().refused.push(guid);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = outcomes.lock().unwrap().acked.len();
    let leader = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.leader_index())
            .await
            .unwrap()
            .unwrap()
    };
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.kill(leader))
            .await
            .unwrap()
            .unwrap();
    }
    let killed_at = Instant::now();
    // Writes resume on the two survivors.
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed_after = loop {
        let acked = outcomes.lock().unwrap().acked.len();
        if acked > before_kill + 50 {
            break killed_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The BBS reports the dead member instead of failing.
    let health = bbs.client.store_health().await.unwrap();
    assert!(health.degraded, "{health:?}");
    assert_eq!(
        health.members.iter().filter(|m| !m.healthy).count(),
        1,
        "{health:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let stored: std::collections::BTreeSet<String> = bbs
        .client
        .desired_lrps(&DesiredLrpsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.process_guid)
        .collect();
    let lost: Vec<&String> = outcomes
        .acked
        .iter()
        .filter(|g| !stored.contains(*g))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let refused_but_stored: Vec<&String> = outcomes
        .refused
        .iter()
        .filter(|g| stored.contains(*g))
        .collect();
    assert!(
        refused_but_stored.is_empty(),
        "writes reported as not applied were applied: {refused_but_stored:?}"
    );
    eprintln!(
        "leader {leader} killed: writes resumed after {resumed_after:?}; {} acknowledged (all present), {} outcome unknown ({} of them applied), {} refused",
        outcomes.acked.len(),
        outcomes.unknown.len(),
        outcomes
            .unknown
            .iter()
            .filter(|g| stored.contains(*g))
            .count(),
        outcomes.refused.len()
    );

    // The member comes back and the BBS sees a healthy cluster again.
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.restart(leader))
            .await
            .unwrap()
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while bbs.client.store_health().await.unwrap().degraded {
        assert!(
            Instant::now() < deadline,
            "the restarted member never looked healthy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_its_store_gone_the_bbs_answers_503_and_recovers() {
    let etcd = Arc::new(
        tokio::task::spawn_blocking(|| diego_testkit::EtcdCluster::start(1))
            .await
            .unwrap()
            .expect("etcd"),
    );
    let bbs = BbsProcess::start(&["--etcd".to_string(), etcd.endpoints().join(",")]).await;
    bbs.client.desire_lrp(&lrp("before", 1)).await.unwrap();
    {
        let etcd = etcd.clone();
        tokio::task::spawn_blocking(move || etcd.kill(0))
            .await
            .unwrap()
            .unwrap();
    }
    let read = bbs
        .client
        .desired_lrps(&DesiredLrpsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(read.kind(), Some(ErrorType::Unavailable), "{read}");
    let write = bbs.client.desire_lrp(&lrp("during", 1)).await.unwrap_err();
    assert!(
        matches!(
            write.kind(),
            Some(ErrorType::Unavailable | ErrorType::Timeout)
        ),
        "{write}"
    );
    assert!(bbs.client.ping().await.unwrap(), "the BBS itself stays up");
    {
        let etcd = etcd.clone();
        tokio::task::spawn_blocking(move || etcd.restart(0))
            .await
            .unwrap()
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let names = loop {
        match bbs
            .client
            .desired_lrps(&DesiredLrpsRequest::default())
            .await
        {
            Ok(lrps) => break lrps.into_iter().map(|l| l.process_guid).collect::<Vec<_>>(),
            Err(e) => assert!(Instant::now() < deadline, "the BBS did not recover: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(names.contains(&"before".to_string()));
    if write.kind() == Some(ErrorType::Unavailable) {
        assert!(
            !names.contains(&"during".to_string()),
            "a write reported as not applied was applied"
        );
    }
}
