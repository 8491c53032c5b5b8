//! Several BBS processes over one etcd: all serve, every write is a CAS, events agree.

use diego_bbs_client::EventStream;
use diego_model::requests::ClaimActualLrpRequest;
use diego_model::{ActualLrpInstanceKey, ErrorType, Event};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_bbs_processes_share_records_races_and_events() {
    let etcd = tokio::task::spawn_blocking(diego_testkit::EtcdServer::start)
        .await
        .unwrap()
        .expect("etcd");
    let store = vec!["--etcd".to_string(), etcd.endpoints().join(",")];
    let a = BbsProcess::start(&store).await;
    let mut b = BbsProcess::start(&store).await;

    // Events watched through B see writes made through A, with the same ids.
    let mut via_a = a.client.subscribe(EventStream::Lrps, None, None);
    let mut via_b = b.client.subscribe(EventStream::Lrps, None, None);
    via_a.connect().await.unwrap();
    via_b.connect().await.unwrap();
    a.client.desire_lrp(&lrp("web", 1)).await.unwrap();
    assert_eq!(b.client.desired_lrp("web").await.unwrap().instances, 1);
    for _ in 0..2 {
        let (id_a, event_a) = tokio::time::timeout(Duration::from_secs(10), via_a.next())
            .await
            .unwrap()
            .unwrap();
        let (id_b, event_b) = tokio::time::timeout(Duration::from_secs(10), via_b.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((id_a, event_a.name()), (id_b, event_b.name()));
    }

    // Cells racing to claim one instance through different BBSs: exactly one wins.
    let mut racers = Vec::new();
    for cell in 0..10 {
        let client = if cell % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        racers.push(tokio::spawn(async move {
            client
                .claim_actual_lrp(&ClaimActualLrpRequest {
                    process_guid: "web".into(),
                    index: 0,
                    actual_lrp_instance_key: ActualLrpInstanceKey::new(
                        format!("i-{cell}"),
                        format!("cell-{cell}"),
                    ),
                })
                .await
        }));
    }
    let mut winners = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(()) => winners += 1,
            Err(e) => assert_eq!(e.kind(), Some(ErrorType::ActualLrpCannotBeClaimed), "{e}"),
        }
    }
    assert_eq!(winners, 1);

    // Concurrent desires through both: none lost, none doubled.
    let mut writers = Vec::new();
    for i in 0..40 {
        let client = if i % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        writers.push(tokio::spawn(async move {
            client.desire_lrp(&lrp(&format!("app-{i}"), 1)).await
        }));
    }
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    assert_eq!(
        a.client
            .desired_lrps(&Default::default())
            .await
            .unwrap()
            .len(),
        41
    );

    // One BBS dies: the other keeps serving, and a subscriber resumes on it from its last id.
    let last = via_b.last_event_id().unwrap().to_string();
    b.kill9();
    a.client.remove_desired_lrp("app-0").await.unwrap();
    let mut resumed = a.client.subscribe(EventStream::Lrps, None, Some(last));
    let mut saw_removal = false;
    while !saw_removal {
        let (_, event) = tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .unwrap()
            .unwrap();
        saw_removal = matches!(event, Event::DesiredLrpRemoved { ref desired_lrp } if desired_lrp.process_guid == "app-0");
    }
}
