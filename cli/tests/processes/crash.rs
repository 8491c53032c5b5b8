//! kill -9 of a BBS on the embedded store, mid-write: every acknowledged write survives, and
//! nothing is half-written.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use diego_model::requests::{ActualLrpsRequest, DesiredLrpsRequest};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = vec!["--data-dir".to_string(), dir.path().display().to_string()];
    for round in 0..2 {
        let mut bbs = BbsProcess::start(&store).await;
        let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let mut writers = Vec::new();
        for writer in 0..16 {
            let client = bbs.client.clone();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let guid = format!("r{round}-w{writer}-n{n}");
                    match client.desire_lrp(&lrp(&guid, 2)).await {
                        Ok(()) => {
                            acked.lock().unwrap().insert(guid);
                        }
                        Err(_) => return, // the BBS died under us: this write's outcome is unknown
                    }
                }
            }));
        }
        // Let it write for a while, then kill it without warning.
        while acked.lock().unwrap().len() < 400 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bbs.kill9();
        for writer in writers {
            writer.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();

        let bbs = BbsProcess::start(&store).await;
        // Listing decodes every stored record: a half-written one would fail the listing.
        let desired: BTreeSet<String> = bbs
            .client
            .desired_lrps(&DesiredLrpsRequest::default())
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.process_guid)
            .collect();
        let missing: Vec<&String> = acked.iter().filter(|g| !desired.contains(*g)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged desires lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let actuals = bbs
            .client
            .actual_lrps(&ActualLrpsRequest::default())
            .await
            .unwrap();
        for guid in &acked {
            let n = actuals.iter().filter(|a| &a.process_guid == guid).count();
            assert_eq!(n, 2, "round {round}: {guid} has {n} instances");
        }
        eprintln!(
            "round {round}: {} acknowledged writes all present after kill -9 ({} desired in store)",
            acked.len(),
            desired.len()
        );
    }
}
