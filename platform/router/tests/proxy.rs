//! The proxy end to end: a real router in front of real backend servers on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use common::*;
use diego_router::{RouteItem, RouterClient};
use futures::StreamExt;
use reqwest::{Method, StatusCode};

async fn register(router: &TestRouter, items: Vec<RouteItem>) {
    RouterClient::new(&router.admin, "tests")
        .register(items)
        .await
        .unwrap();
}

#[tokio::test]
async fn requests_spread_over_the_endpoints() {
    let router = start_router().await;
    let (a, b) = (backend("a").await, backend("b").await);
    register(
        &router,
        vec![
            RouteItem::endpoint("app.dev.local", endpoint(a.addr, 0)),
            RouteItem::endpoint("app.dev.local", endpoint(b.addr, 1)),
        ],
    )
    .await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        // The Host header decides, whatever its case and port.
        let response = router.get("App.Dev.Local:8080", "/").await;
        assert_eq!(response.status(), StatusCode::OK);
        *seen.entry(response.text().await.unwrap()).or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
    let metrics = router.router.metrics();
    assert_eq!((metrics.requests, metrics.responses_2xx), (20, 20));

    // One access-log line per request, to the app's log guid, in gorouter's format.
    let logs = router.logs.0.lock().unwrap().clone();
    assert_eq!(logs.len(), 20);
    assert_eq!(logs[0].log_guid, "app-log");
    assert_eq!(logs[0].router_index, 3);
    assert!(
        logs[0].message.starts_with("app.dev.local - ["),
        "{}",
        logs[0].message
    );
    assert!(
        logs[0].message.contains("\"GET / HTTP/1.1\" 200 0 1 "),
        "{}",
        logs[0].message
    );
    assert!(
        logs[0].message.contains("app_index:\""),
        "{}",
        logs[0].message
    );
}

#[tokio::test]
async fn unknown_hosts_get_404_and_hosts_without_instances_503() {
    let router = start_router().await;
    let response = router.get("nowhere.dev.local", "/").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-diego-router-error"], "unknown_route");
    assert_eq!(
        response.text().await.unwrap().trim(),
        "unknown route: nowhere.dev.local"
    );

    register(&router, vec![RouteItem::host("idle.dev.local")]).await;
    let response = router.get("idle.dev.local", "/").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.text().await.unwrap().trim(),
        "no instance of idle.dev.local is running"
    );
}

#[tokio::test]
async fn a_backend_that_is_down_is_skipped_without_a_failed_request() {
    let router = start_router().await;
    let good = backend("good").await;
    let down = closed_port().await;
    register(
        &router,
        vec![
            RouteItem::endpoint("app.dev.local", endpoint(down, 0)),
            RouteItem::endpoint("app.dev.local", endpoint(good.addr, 1)),
        ],
    )
    .await;
    for _ in 0..10 {
        let response = router.get("app.dev.local", "/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "good");
    }
    let metrics = router.router.metrics();
    // Tried once, marked bad, then skipped while it stays bad.
    assert_eq!(metrics.bad_endpoints, 1, "{metrics:?}");
    assert_eq!(metrics.retries, 1, "{metrics:?}");
    // Also for a POST: nothing was sent to the closed port, so it may move on.
    let response = router
        .to(Method::POST, "app.dev.local", "/")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_streamed_post_moves_on_unread_when_the_connect_fails() {
    let router = start_router().await;
    let good = backend("good").await;
    let down = closed_port().await;
    register(
        &router,
        vec![
            RouteItem::endpoint("app.dev.local", endpoint(down, 0)),
            RouteItem::endpoint("app.dev.local", endpoint(good.addr, 1)),
        ],
    )
    .await;
    // Two requests start at two different endpoints, so one meets the closed port first.
    for i in 0..2 {
        let chunks = futures::stream::iter(["part one, ", "part two"])
            .map(move |s| Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{i}:{s}"))));
        let response = router
            .to(Method::POST, "app.dev.local", "/echo")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.text().await.unwrap(),
            format!("{i}:part one, {i}:part two")
        );
    }
    let metrics = router.router.metrics();
    assert_eq!(
        (metrics.retries, metrics.bad_endpoints),
        (1, 1),
        "{metrics:?}"
    );
}

#[tokio::test]
async fn a_reset_after_the_request_retries_gets_but_not_posts() {
    let router = start_router().await;
    let good = backend("good").await;
    let reset = resetting_backend().await;
    register(
        &router,
        vec![
            RouteItem::endpoint("app.dev.local", endpoint(reset.addr, 0)),
            RouteItem::endpoint("app.dev.local", endpoint(good.addr, 1)),
            RouteItem::endpoint("post.dev.local", endpoint(reset.addr, 0)),
        ],
    )
    .await;
    for _ in 0..6 {
        let response = router.get("app.dev.local", "/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "good");
    }
    assert!(router.router.metrics().retries >= 1);

    let response = router
        .to(Method::POST, "post.dev.local", "/")
        .body("not idempotent")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response.headers()["x-diego-router-error"],
        "endpoint_failure"
    );
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("all instances of post.dev.local failed: "),
        "{text}"
    );
}

#[tokio::test]
async fn every_endpoint_down_is_a_502_after_three_tries() {
    let router = start_router().await;
    let mut items = Vec::new();
    for i in 0..4 {
        items.push(RouteItem::endpoint(
            "app.dev.local",
            endpoint(closed_port().await, i),
        ));
    }
    register(&router, items).await;
    let response = router.get("app.dev.local", "/").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("all instances of app.dev.local failed: 127.0.0.1:"),
        "{text}"
    );
    let metrics = router.router.metrics();
    assert_eq!(
        (metrics.bad_endpoints, metrics.retries),
        (3, 2),
        "{metrics:?}"
    );
}

#[tokio::test]
async fn proxy_headers_are_set_like_gorouter() {
    let router = start_router().await;
    let app = backend("a").await;
    register(
        &router,
        vec![RouteItem::endpoint("app.dev.local", endpoint(app.addr, 0))],
    )
    .await;
    let response = router
        .to(Method::GET, "app.dev.local", "/headers")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: BTreeMap<String, String> = response.json().await.unwrap();
    assert_eq!(seen["host"], "app.dev.local");
    assert_eq!(seen["x-custom"], "kept");
    assert!(!seen.contains_key("x-hop"), "{seen:?}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    let start: i64 = seen["x-request-start"].parse().unwrap();
    assert!(start > 1_600_000_000_000, "ms since the epoch: {start}");
    assert_eq!(seen["x-vcap-request-id"].len(), 36);

    // A client's own X-Forwarded-For is extended, its request id kept.
    let response = router
        .to(Method::GET, "app.dev.local", "/headers")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-vcap-request-id", "abc")
        .send()
        .await
        .unwrap();
    let seen: BTreeMap<String, String> = response.json().await.unwrap();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-vcap-request-id"], "abc");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let router = start_router().await;
    let app = backend("a").await;
    register(
        &router,
        vec![RouteItem::endpoint("app.dev.local", endpoint(app.addr, 0))],
    )
    .await;

    // 16 MiB up, streamed in 64 KiB chunks (no Content-Length), and echoed back.
    const CHUNKS: usize = 256;
    let upload = futures::stream::iter(0..CHUNKS)
        .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; 64 * 1024])));
    let response = router
        .to(Method::POST, "app.dev.local", "/echo")
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let (mut total, mut sum) = (0usize, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        sum += chunk.iter().map(|b| u64::from(*b)).sum::<u64>();
    }
    let expected: u64 = (0..CHUNKS).map(|i| (i % 251) as u64 * 64 * 1024).sum();
    assert_eq!((total, sum), (CHUNKS * 64 * 1024, expected));

    // 16 MiB down.
    let response = router.get("app.dev.local", "/big").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 16 << 20);
    assert!(body[..1 << 20].iter().all(|b| *b == 0) && body[15 << 20..].iter().all(|b| *b == 15));

    let logs = router.logs.0.lock().unwrap().clone();
    let big = logs.iter().find(|l| l.message.contains("/big")).unwrap();
    assert!(
        big.message.contains(&format!(" 200 0 {} ", 16 << 20)),
        "{}",
        big.message
    );
}
