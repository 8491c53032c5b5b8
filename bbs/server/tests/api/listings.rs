//! Full listings take turns: each holds its memory until its last byte is sent, so the number
//! built or sent at once is bounded (`Config::max_concurrent_listings`).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::*;

#[tokio::test]
async fn a_listing_waits_while_a_slow_reader_holds_the_only_turn() {
    let bbs = start_bbs_with(diego_bbs::Config {
        max_concurrent_listings: 1,
        ..Default::default()
    })
    .await;
    // ~20,000 instances: a listing of several MB, more than the socket buffers hold.
    for i in 0..20 {
        bbs.client
            .desire_lrp(&lrp(&format!("big-{i}"), 1000))
            .await
            .unwrap();
    }
    // A client that asks for every instance and never reads the answer.
    let addr = bbs.url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = "{}";
    slow.write_all(
        format!(
            "POST /v1/actual_lrps/list HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another listing waits for the turn...
    let waiting = tokio::time::timeout(
        Duration::from_secs(1),
        bbs.client.desired_lrps(&Default::default()),
    )
    .await;
    assert!(
        waiting.is_err(),
        "a second listing ran while the slow one held the only turn"
    );
    // ...which comes as soon as the slow reader goes away; other routes never wait.
    assert!(bbs.client.ping().await.unwrap());
    drop(slow);
    let listed = tokio::time::timeout(
        Duration::from_secs(10),
        bbs.client.desired_lrps(&Default::default()),
    )
    .await
    .expect("the listing got its turn once the slow reader left")
    .unwrap();
    assert_eq!(listed.len(), 20);
}
