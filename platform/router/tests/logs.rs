//! Access logs reach the app's log stream through a real log server as `[RTR/N]` lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use diego_logs::{LogClient, LogLimits, LogSender, LogServer};
use diego_router::{RouteItem, Router, RouterClient, RouterConfig};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn access_lines_go_to_the_app_log_as_rtr() {
    let logs = LogServer::new(LogLimits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let logs_url = format!("http://{}", listener.local_addr().unwrap());
    let app = logs.router();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sender = LogSender::spawn(&logs_url);
    let cfg = RouterConfig {
        index: 2,
        ..RouterConfig::default()
    };
    let router = Router::with_access_log(cfg, Arc::new(sender.clone()));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    tokio::spawn(router.clone().serve_proxy(proxy, stop.clone()));
    tokio::spawn(router.serve_admin(admin, stop.clone()));

    let app_backend = backend("a").await;
    RouterClient::new(&admin_url, "tests")
        .register(vec![RouteItem::endpoint(
            "app.dev.local",
            endpoint(app_backend.addr, 1),
        )])
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .get(format!("{proxy_url}/hello?x=1"))
        .header("host", "app.dev.local")
        .header("user-agent", "curl/8")
        .send()
        .await
        .unwrap();
    // The backend serves only `/`: its 404 comes back and is what the line records.
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);

    let client = LogClient::new(&logs_url);
    let start = Instant::now();
    let line = loop {
        sender.flush().await;
        let recent = client.recent("app-log").await.unwrap();
        if let Some(line) = recent.into_iter().find(|l| l.source_type == "RTR") {
            break line;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no RTR line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line.tag(), "[RTR/2]");
    assert!(
        line.message.starts_with("app.dev.local - ["),
        "{}",
        line.message
    );
    assert!(
        line.message.contains("\"GET /hello?x=1 HTTP/1.1\" 404 0 "),
        "{}",
        line.message
    );
    assert!(line.message.contains("\"curl/8\""), "{}", line.message);
    assert!(line.message.contains("app_index:\"1\""), "{}", line.message);
}
