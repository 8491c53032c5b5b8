//! The registration API: emitters put their whole table or register and unregister routes;
//! anyone may read the merged table.
//!
//! - `PUT /v1/routes` `{"emitter", "routes": [{"hostname", "endpoint"?}]}`: replaces that
//!   emitter's routes.
//! - `POST /v1/routes/register`, `POST /v1/routes/unregister`: the same body, applied item by
//!   item.
//! - `GET /v1/routes`: `{"hostname": [endpoint, ...]}`.
//! - `GET /v1/metrics`: the proxy's counters (JSON).
//! - `GET /metrics`: every metric of the process, for Prometheus.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::Shared;
use crate::routes::RoutesRequest;

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/routes", get(table).put(replace))
        .route("/v1/routes/register", post(register))
        .route("/v1/routes/unregister", post(unregister))
        .route("/v1/metrics", get(metrics))
        .with_state(shared);
    // `/metrics` here, where operators reach the router, not on the apps' port.
    diego_telemetry::instrument(api, "router")
}

/// The proxy's counters and the table's size as Prometheus metrics (at scrape time: the
/// counters are the ones `GET /v1/metrics` answers).
pub(crate) fn publish(shared: &Shared) {
    use diego_telemetry::names;
    let m = shared.counters.snapshot();
    ::metrics::counter!(names::ROUTER_TOTAL_REQUESTS).absolute(m.requests);
    for (class, n) in [
        ("1xx", m.responses_1xx),
        ("2xx", m.responses_2xx),
        ("3xx", m.responses_3xx),
        ("4xx", m.responses_4xx),
        ("5xx", m.responses_5xx),
    ] {
        ::metrics::counter!(names::ROUTER_RESPONSES, "status_class" => class).absolute(n);
    }
    ::metrics::counter!(names::ROUTER_RETRIES).absolute(m.retries);
    ::metrics::counter!(names::ROUTER_BAD_ENDPOINTS).absolute(m.bad_endpoints);
    let routes = shared.table.snapshot().len();
    ::metrics::gauge!(names::ROUTER_TOTAL_ROUTES).set(routes as f64);
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

fn ok() -> Response {
    Json(serde_json::json!({})).into_response()
}

async fn replace(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match RoutesRequest::parse(&body) {
        Ok(request) => {
            tracing::debug!(emitter = %request.emitter, routes = request.routes.len(), "routes replaced");
            shared.table.replace(&request.emitter, request.routes);
            ok()
        }
        Err(message) => bad_request(message),
    }
}

async fn register(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match RoutesRequest::parse(&body) {
        Ok(request) => {
            shared.table.register(&request.emitter, request.routes);
            ok()
        }
        Err(message) => bad_request(message),
    }
}

async fn unregister(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match RoutesRequest::parse(&body) {
        Ok(request) => {
            shared.table.unregister(&request.emitter, request.routes);
            ok()
        }
        Err(message) => bad_request(message),
    }
}

async fn table(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.table.snapshot()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.counters.snapshot()).into_response()
}
