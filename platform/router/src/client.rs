//! A client for a router's registration API, with short timeouts so a router that is down
//! costs its caller little.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::routes::{Endpoint, RouteItem, RoutesRequest};

#[derive(Debug, thiserror::Error)]
pub enum RouterClientError {
    #[error("cannot reach the router at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("the router at {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
}

#[derive(Debug, Clone)]
pub struct RouterClient {
    http: reqwest::Client,
    base: String,
    emitter: String,
}

impl RouterClient {
    /// A client for the router whose admin API is at `base_url`, sending as `emitter`.
    pub fn new(base_url: impl Into<String>, emitter: impl Into<String>) -> Self {
        Self::with_timeout(base_url, emitter, Duration::from_secs(5))
    }

    /// As [`RouterClient::new`], with every request bounded by `timeout`.
    pub fn with_timeout(
        base_url: impl Into<String>,
        emitter: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        Self::with_tls(base_url, emitter, timeout, None)
    }

    /// As [`RouterClient::with_timeout`], presenting `tls`'s identity to an admin API serving
    /// mutual TLS.
    pub fn with_tls(
        base_url: impl Into<String>,
        emitter: impl Into<String>,
        timeout: Duration,
        tls: Option<&diego_tls::Tls>,
    ) -> Self {
        let http = diego_tls::client_builder(tls)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            base: base_url.into().trim_end_matches('/').to_string(),
            emitter: emitter.into(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Replaces this emitter's whole table on the router.
    pub async fn put_table(&self, routes: Vec<RouteItem>) -> Result<(), RouterClientError> {
        self.send(reqwest::Method::PUT, "/v1/routes", routes).await
    }

    pub async fn register(&self, routes: Vec<RouteItem>) -> Result<(), RouterClientError> {
        self.send(reqwest::Method::POST, "/v1/routes/register", routes)
            .await
    }

    pub async fn unregister(&self, routes: Vec<RouteItem>) -> Result<(), RouterClientError> {
        self.send(reqwest::Method::POST, "/v1/routes/unregister", routes)
            .await
    }

    /// The router's merged table: hostname → endpoints.
    pub async fn table(&self) -> Result<BTreeMap<String, Vec<Endpoint>>, RouterClientError> {
        let url = format!("{}/v1/routes", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| transport(&url, e))?;
        let response = check(&url, response).await?;
        response
            .json()
            .await
            .map_err(|e| RouterClientError::Decode {
                url,
                message: e.to_string(),
            })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        route: &str,
        routes: Vec<RouteItem>,
    ) -> Result<(), RouterClientError> {
        let url = format!("{}{route}", self.base);
        let body = RoutesRequest {
            emitter: self.emitter.clone(),
            routes,
        };
        let response = self
            .http
            .request(method, &url)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&url, e))?;
        check(&url, response).await.map(|_| ())
    }
}

fn transport(url: &str, e: reqwest::Error) -> RouterClientError {
    RouterClientError::Transport {
        url: url.to_string(),
        message: e.to_string(),
    }
}

async fn check(
    url: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, RouterClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(RouterClientError::Refused {
        url: url.to_string(),
        status: status.as_u16(),
        body: response.text().await.unwrap_or_default(),
    })
}
