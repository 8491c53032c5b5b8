//! `/metrics` and request ids on the BBS: requests counted under Diego's route names, and a
//! desire's request id carried to the auctioneer with its start request.

use std::sync::{Arc, Mutex};

use diego_telemetry::REQUEST_ID_HEADER;

use crate::*;

/// A stand-in auctioneer recording the request id of every `POST /v1/lrps`.
async fn auctioneer_recording_ids() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let ids: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let sink = ids.clone();
    let app = axum::Router::new().route(
        "/v1/lrps",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let sink = sink.clone();
            async move {
                let id = headers
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                sink.lock().unwrap().push(id);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, ids)
}

/// `RequestCount` of the BBS for `route` and `status` in a scrape's text.
fn request_count(scrape: &str, route: &str, status: u16) -> f64 {
    let series = format!("RequestCount{{server=\"bbs\",route=\"{route}\",status=\"{status}\"}} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn scrape(bbs: &TestBbs) -> String {
    let response = reqwest::get(format!("{}/metrics", bbs.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_desires_request_id_reaches_the_auctioneer_and_requests_are_counted_by_route() {
    let (auctioneer, ids) = auctioneer_recording_ids().await;
    let bbs = start_bbs_with(diego_bbs::Config {
        auctioneer_url: Some(auctioneer),
        ..diego_bbs::Config::default()
    })
    .await;
    let before = scrape(&bbs).await;

    // The client sends the id of the work it does (here: set by the test, as a role's request
    // handler has it); the BBS takes it and passes it on with the start request.
    diego_telemetry::with_request_id(
        "desire-web-1".into(),
        bbs.client.desire_lrp(&lrp("observed", 2)),
    )
    .await
    .unwrap();
    // Without one, the BBS makes one and still passes it on.
    bbs.client.desire_lrp(&lrp("unobserved", 1)).await.unwrap();
    eventually(10, "both start requests reach the auctioneer", || async {
        ids.lock().unwrap().len() == 2
    })
    .await;
    let ids = ids.lock().unwrap().clone();
    assert!(ids.contains(&Some("desire-web-1".to_owned())), "{ids:?}");
    assert!(
        ids.iter()
            .flatten()
            .any(|id| id != "desire-web-1" && uuid::Uuid::parse_str(id).is_ok()),
        "{ids:?}"
    );

    let bad = bbs.client.desire_lrp(&lrp("", 1)).await;
    assert!(bad.is_err());
    let after = scrape(&bbs).await;
    let route = "/v1/desired_lrp/desire.r2";
    assert_eq!(
        request_count(&after, route, 200) - request_count(&before, route, 200),
        2.0
    );
    assert_eq!(
        request_count(&after, route, 400) - request_count(&before, route, 400),
        1.0
    );
    assert!(
        after.contains("RequestLatency_bucket{server=\"bbs\",route=\"/v1/desired_lrp/desire.r2\""),
        "{after}"
    );
}
