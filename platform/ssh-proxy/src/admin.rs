//! The proxy's HTTP API: one-time codes (`diego ssh-code`), and where to connect.
//!
//! ```text
//! GET  /ping
//! GET  /v1/info        -> Info: the SSH endpoint and the host key's fingerprint
//! POST /v1/ssh-codes   {"process_guid"} -> 201 IssuedCodeView (404 no such process,
//!                      409 SSH disabled for it, 503 too many codes outstanding)
//! ```
//!
//! Errors are `{"error": {"type", "message"}}`, as the BBS's.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diego_model::desired_lrp::SSH_ROUTES_KEY;
use diego_model::requests::ErrorResponse;
use diego_model::{BbsError, ErrorType};

use crate::server::Shared;
use crate::{CodeRequest, Info, IssuedCodeView};

pub(crate) struct AdminState {
    pub shared: Arc<Shared>,
    pub info: Info,
}

pub(crate) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "ok" }))
        .route("/v1/info", get(info))
        .route("/v1/ssh-codes", post(issue))
        .with_state(state)
}

struct ApiError(StatusCode, BbsError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorResponse { error: self.1 })).into_response()
    }
}

async fn info(State(state): State<Arc<AdminState>>) -> Json<Info> {
    Json(state.info.clone())
}

async fn issue(
    State(state): State<Arc<AdminState>>,
    body: Result<Json<CodeRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedCodeView>), ApiError> {
    let Json(request) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            BbsError::invalid_request(e.body_text()),
        )
    })?;
    let pg = request.process_guid.trim();
    if pg.is_empty() || pg.len() > 256 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            BbsError::invalid_request("process_guid must be 1-256 characters"),
        ));
    }
    // said now rather than at login: the user learns it before reaching for ssh
    let desired = match state.shared.bbs.desired_lrp(pg).await {
        Ok(d) => d,
        Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                BbsError::not_found(format!("no app process {pg}")),
            ));
        }
        Err(e) => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                BbsError::new(
                    ErrorType::Unavailable,
                    format!("cannot look process {pg} up: {e}"),
                ),
            ));
        }
    };
    if !desired
        .routes
        .as_ref()
        .is_some_and(|r| r.contains_key(SSH_ROUTES_KEY))
    {
        let name = if desired.annotation.is_empty() {
            format!("process {pg}")
        } else {
            format!("app {}", desired.annotation)
        };
        return Err(ApiError(
            StatusCode::CONFLICT,
            BbsError::conflict(format!(
                "SSH is disabled for {name}: enable it with `diego enable-ssh APP`"
            )),
        ));
    }
    let issued = state.shared.codes.issue(pg).map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            BbsError::new(ErrorType::Unavailable, e.to_string()),
        )
    })?;
    tracing::info!(process_guid = %pg, "SSH code issued");
    Ok((
        StatusCode::CREATED,
        Json(IssuedCodeView {
            code: issued.code,
            process_guid: issued.process_guid,
            expires_at: humantime::format_rfc3339_seconds(issued.expires_at).to_string(),
            ssh_endpoint: state.info.ssh_endpoint.clone(),
            host_key_fingerprint: state.info.host_key_fingerprint.clone(),
        }),
    ))
}
