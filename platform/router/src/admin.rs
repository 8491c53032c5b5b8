//! The registration API: emitters put their whole table or register and unregister routes;
//! anyone may read the merged table.
//!
//! - `PUT /v1/routes` `{"emitter", "routes": [{"hostname", "endpoint"?}]}`: replaces that
//!   emitter's routes.
//! - `POST /v1/routes/register`, `POST /v1/routes/unregister`: the same body, applied item by
//!   item.
//! - `GET /v1/routes`: `{"hostname": [endpoint, ...]}`.
//! - `GET /v1/metrics`: the proxy's counters.

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
    axum::Router::new()
        .route("/v1/routes", get(table).put(replace))
        .route("/v1/routes/register", post(register))
        .route("/v1/routes/unregister", post(unregister))
        .route("/v1/metrics", get(metrics))
        .with_state(shared)
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
