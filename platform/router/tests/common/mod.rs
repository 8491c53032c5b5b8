//! Shared test fixtures: a router on ephemeral ports, real backend servers, and a collector of
//! access-log lines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::routing::{any, get, post};
use diego_router::{AccessLog, AccessLogEntry, Endpoint, Router, RouterConfig};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Collected(pub Mutex<Vec<AccessLogEntry>>);

impl AccessLog for Collected {
    fn record(&self, entry: AccessLogEntry) {
        self.0.lock().unwrap().push(entry);
    }
}

pub struct TestRouter {
    pub router: Router,
    pub proxy: String,
    pub admin: String,
    pub logs: Arc<Collected>,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_router() -> TestRouter {
    let logs = Arc::new(Collected::default());
    let cfg = RouterConfig {
        index: 3,
        ..RouterConfig::default()
    };
    let router = Router::with_access_log(cfg, logs.clone());
    let shutdown = CancellationToken::new();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (proxy_url, admin_url) = (
        format!("http://{}", proxy.local_addr().unwrap()),
        format!("http://{}", admin.local_addr().unwrap()),
    );
    tokio::spawn(router.clone().serve_proxy(proxy, shutdown.clone()));
    tokio::spawn(router.clone().serve_admin(admin, shutdown.clone()));
    TestRouter {
        router,
        proxy: proxy_url,
        admin: admin_url,
        logs,
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl TestRouter {
    /// A request to the proxy for `host`.
    pub fn to(&self, method: reqwest::Method, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.proxy))
            .header("host", host)
    }

    pub async fn get(&self, host: &str, path: &str) -> reqwest::Response {
        self.to(reqwest::Method::GET, host, path)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_send(
        &self,
        method: reqwest::Method,
        route: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .request(method, format!("{}{route}", self.admin))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

pub fn endpoint(addr: SocketAddr, index: i32) -> Endpoint {
    Endpoint {
        address: addr.ip().to_string(),
        port: addr.port(),
        process_guid: "app-guid".into(),
        index,
        instance_guid: format!("instance-{index}"),
        log_guid: "app-log".into(),
    }
}

pub struct Backend {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `/` (its name), `/headers` (the request's headers as JSON), `/echo` (the body back,
/// streamed), `/big?mb=N` (N MiB, streamed).
pub async fn backend(name: &'static str) -> Backend {
    let app = axum::Router::new()
        .route("/", any(move || async move { name }))
        .route(
            "/headers",
            get(|headers: HeaderMap| async move {
                let map: BTreeMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                axum::Json(map)
            }),
        )
        .route(
            "/echo",
            post(|request: Request| async move {
                Body::from_stream(request.into_body().into_data_stream())
            }),
        )
        .route(
            "/big",
            get(|| async {
                let chunks = futures::stream::iter(0..16u8)
                    .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![i; 1 << 20])));
                Body::from_stream(chunks)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Backend { addr, shutdown }
}

/// A backend that reads each request head, then closes the connection without answering, as
/// an instance does when it is stopped mid-request.
pub async fn resetting_backend() -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((mut socket, _)) = accepted else {
                return;
            };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                drop(socket);
            });
        }
    });
    Backend { addr, shutdown }
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
