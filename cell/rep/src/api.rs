//! The rep's HTTP API (routes in `diego_rep_client`'s doc). Handlers only decode and call
//! the ledger in `rep.rs`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diego_model::BbsError;
use diego_model::requests::ErrorResponse;
use diego_rep_client::{CellState, Work};

use crate::rep::{Inner, Kind, StopReason};

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let api = Router::new()
        .route("/ping", get(ping))
        .route("/state", get(state))
        .route("/work", post(work))
        .route(
            "/v1/lrps/{process_guid}/instances/{instance_guid}/stop",
            post(stop_lrp),
        )
        .route(
            "/v1/lrps/{process_guid}/instances/{instance_guid}/metrics",
            get(instance_metrics),
        )
        .route("/v1/tasks/{task_guid}/cancel", post(cancel_task))
        .route("/v1/drain", post(drain))
        .route(
            "/v1/lrps/{process_guid}/instances/{instance_guid}/ssh",
            post(crate::ssh::session),
        )
        .with_state(inner);
    diego_telemetry::instrument(api, "rep")
}

/// An error answered as `{"error": {"type", "message"}}` with the kind's status.
struct ApiError(BbsError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorResponse { error: self.0 })).into_response()
    }
}

async fn ping() -> StatusCode {
    StatusCode::OK
}

async fn state(State(inner): State<Arc<Inner>>) -> Json<CellState> {
    Json(inner.cell_state())
}

async fn work(
    State(inner): State<Arc<Inner>>,
    body: Result<Json<Work>, JsonRejection>,
) -> Result<Json<Work>, ApiError> {
    let Json(work) = body.map_err(|e| ApiError(BbsError::invalid_request(e.body_text())))?;
    Ok(Json(inner.perform(work)))
}

async fn stop_lrp(
    State(inner): State<Arc<Inner>>,
    Path((process_guid, instance_guid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ours = inner
        .with_slot(
            &instance_guid,
            |slot| matches!(&slot.kind, Kind::Lrp(key) if key.process_guid == process_guid),
        )
        .unwrap_or(false);
    if !ours || !inner.request_stop(&instance_guid, StopReason::Stop) {
        return Err(ApiError(BbsError::not_found(format!(
            "no instance {instance_guid} of {process_guid} on this cell"
        ))));
    }
    tracing::info!(%process_guid, %instance_guid, "stop requested");
    Ok(StatusCode::ACCEPTED)
}

async fn instance_metrics(
    State(inner): State<Arc<Inner>>,
    Path((process_guid, instance_guid)): Path<(String, String)>,
) -> Result<Json<diego_rep_client::InstanceMetrics>, ApiError> {
    inner
        .instance_metrics(&process_guid, &instance_guid)
        .await
        .map(Json)
        .ok_or_else(|| {
            ApiError(BbsError::not_found(format!(
                "no running container of instance {instance_guid} of {process_guid} on this cell"
            )))
        })
}

async fn cancel_task(
    State(inner): State<Arc<Inner>>,
    Path(task_guid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ours = inner
        .with_slot(&task_guid, |slot| matches!(slot.kind, Kind::Task { .. }))
        .unwrap_or(false);
    if !ours || !inner.request_stop(&task_guid, StopReason::Cancel) {
        return Err(ApiError(BbsError::not_found(format!(
            "no task {task_guid} on this cell"
        ))));
    }
    tracing::info!(%task_guid, "cancel requested");
    Ok(StatusCode::ACCEPTED)
}

async fn drain(State(inner): State<Arc<Inner>>) -> StatusCode {
    tracing::info!("drain requested: evacuating");
    // flag first, so the answer is already true in /state when the caller reads it
    inner.set_evacuating();
    inner.evacuate.cancel();
    StatusCode::ACCEPTED
}
