use diego_bbs_client::EventStream;
use diego_model::requests::LockType;
use diego_model::{ErrorType, Event};

use crate::*;

#[tokio::test]
async fn domains_stay_fresh_for_their_ttl() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.upsert_domain("forever", 0).await.unwrap();
    c.upsert_domain("brief", 1).await.unwrap();
    let mut domains = c.domains().await.unwrap();
    domains.sort();
    assert_eq!(domains, ["brief", "forever"]);
    eventually(10, "the brief domain lapses", || async {
        c.domains().await.unwrap() == ["forever"]
    })
    .await;
}

#[tokio::test]
async fn a_cell_that_stops_renewing_disappears_and_an_event_says_so() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    let mut events = c.subscribe(EventStream::Cells, None, None);
    events.connect().await.unwrap();
    register_cell(c, "cell-1", "http://127.0.0.1:1", 1).await;
    register_cell(c, "cell-1", "http://127.0.0.1:1", 1).await; // a renewal
    assert_eq!(c.cells().await.unwrap().len(), 1);
    let created = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .1;
    assert!(
        matches!(created, Event::CellPresenceCreated { ref cell } if cell.cell_id == "cell-1"),
        "{created:?}"
    );
    eventually(10, "the cell's presence expires", || async {
        c.cells().await.unwrap().is_empty()
    })
    .await;
    let removed = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .1;
    assert!(
        matches!(removed, Event::CellPresenceRemoved { .. }),
        "{removed:?}"
    );
}

#[tokio::test]
async fn locks_have_one_holder_until_it_releases_or_dies() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    c.lock("auctioneer", "a-1", "http://a-1", 1).await.unwrap();
    let err = c
        .lock("auctioneer", "a-2", "http://a-2", 15)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::LockCollision));
    assert_eq!(c.fetch_lock("auctioneer").await.unwrap().owner, "a-1");
    // a-1 dies (stops renewing): within its TTL the lock passes to a-2.
    eventually(10, "a-2 takes the lock", || async {
        c.lock("auctioneer", "a-2", "http://a-2", 15).await.is_ok()
    })
    .await;
    assert_eq!(
        c.release_lock("auctioneer", "a-1", LockType::Lock)
            .await
            .unwrap_err()
            .kind(),
        Some(ErrorType::LockCollision)
    );
    c.release_lock("auctioneer", "a-2", LockType::Lock)
        .await
        .unwrap();
    assert_eq!(
        c.fetch_lock("auctioneer").await.unwrap_err().kind(),
        Some(ErrorType::ResourceNotFound)
    );
}

#[tokio::test]
async fn a_presence_must_be_a_valid_cell() {
    let bbs = start_bbs().await;
    let resource = diego_model::requests::LockResource {
        key: "cell-1".into(),
        owner: "cell-1".into(),
        value: "{}".into(),
        lock_type: LockType::Presence,
    };
    let err = bbs
        .client
        .rpc::<_, serde_json::Value>(
            "/v1/locks/lock",
            &diego_model::requests::LockRequest {
                resource,
                ttl_in_seconds: 5,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::InvalidRecord), "{err}");
    assert!(bbs.client.cells().await.unwrap().is_empty());
}
