//! The brain's HTTP API: where the BBS sends start requests, and the operator's policy API.
//!
//! - `POST /v1/lrps` (`[LrpStartRequest]`), `POST /v1/tasks` (`[TaskStartRequest]`): 202, or 400
//!   with a message, or 503 when this brain is not the active one.
//! - `GET /v1/policy` ([`PolicyStatus`]), `GET /v1/policy/list` ([`PolicyListEntry`]s),
//!   `POST /v1/policy/set` and `POST /v1/policy/try` (both take a [`PolicyChoice`]; `try`
//!   answers a [`TryReport`] and changes nothing).
//! - `GET /v1/ping`.
//!
//! Errors are `{"error": {"type", "message"}}`, as the BBS answers.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use diego_model::requests::ErrorResponse;
use diego_model::{BbsError, ErrorType, LrpStartRequest, TaskStartRequest};
use serde::{Deserialize, Serialize};

use crate::Auctioneer;
use crate::policy::PolicyError;

/// A policy to set or try: exactly one of a built-in's name or a component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyChoice {
    pub builtin: Option<String>,
    /// A Wasm component of the `diego:auction` world, base64.
    pub component: Option<String>,
}

impl PolicyChoice {
    pub fn builtin(name: &str) -> Self {
        PolicyChoice {
            builtin: Some(name.to_owned()),
            component: None,
        }
    }

    pub fn component(wasm: &[u8]) -> Self {
        use base64::Engine as _;
        PolicyChoice {
            builtin: None,
            component: Some(base64::engine::general_purpose::STANDARD.encode(wasm)),
        }
    }
}

/// `GET /v1/policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyStatus {
    /// The chosen policy: a built-in's name, or the component's own name.
    pub name: String,
    pub builtin: bool,
    /// sha256 of the chosen component.
    pub sha256: String,
    /// What places batches now: the chosen component, or `classic (native)` after the circuit
    /// breaker tripped.
    pub placing_with: String,
    /// Batches the native classic policy placed because the chosen one faulted.
    pub fallbacks: u64,
    pub last_fault: Option<String>,
    /// Set when repeated faults switched the chosen policy off.
    pub degraded: Option<DegradedPolicy>,
    /// Why this brain does not place with the policy recorded in the BBS, if it does not.
    pub note: Option<String>,
    /// Whether this brain holds the auctioneer lock.
    pub active: bool,
    /// The active brain's URL, as far as this one knows.
    pub active_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegradedPolicy {
    pub name: String,
    pub sha256: String,
    pub reason: String,
}

/// One row of `GET /v1/policy/list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyListEntry {
    pub name: String,
    pub builtin: bool,
    pub sha256: String,
    pub description: String,
    pub active: bool,
}

/// Where one item went under a policy: a cell, or the placement error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TryPlacement {
    pub cell_id: Option<String>,
    pub error: Option<String>,
}

/// One pending item of a dry run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TryItem {
    /// For an LRP instance.
    pub process_guid: Option<String>,
    pub index: Option<i32>,
    /// For a task.
    pub task_guid: Option<String>,
    pub active: TryPlacement,
    pub candidate: TryPlacement,
    pub differs: bool,
}

/// `POST /v1/policy/try`: the pending work placed once with each policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TryReport {
    pub active_policy: String,
    pub candidate_policy: String,
    pub candidate_sha256: String,
    pub cells: usize,
    pub items: Vec<TryItem>,
    pub differing: usize,
    pub placed_by_active: usize,
    pub placed_by_candidate: usize,
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError(BbsError);

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        ApiError(BbsError::new(kind, message))
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let kind = match e {
            PolicyError::BadRequest(_) => ErrorType::InvalidRequest,
            PolicyError::Refused(_) => ErrorType::InvalidRecord,
            PolicyError::Unavailable(_) => ErrorType::Unavailable,
        };
        ApiError::new(kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.kind {
            // A component the host refused is well-formed input it cannot take.
            ErrorType::InvalidRecord => StatusCode::UNPROCESSABLE_ENTITY,
            kind => StatusCode::from_u16(kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        (status, axum::Json(ErrorResponse { error: self.0 })).into_response()
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorType::InvalidJson,
            format!("cannot decode the body: {e}"),
        )
    })
}

/// Components may be up to the host's cap (16 MiB), base64 in JSON.
const POLICY_BODY_LIMIT: usize = 24 << 20;
/// Start requests: the BBS sends at most a few thousand at a time.
const START_BODY_LIMIT: usize = 16 << 20;

pub(crate) fn router(auctioneer: Arc<Auctioneer>) -> Router {
    let api = Router::new()
        .route("/v1/ping", get(|| async { StatusCode::OK }))
        .route("/v1/lrps", post(lrps))
        .route("/v1/tasks", post(tasks))
        .layer(DefaultBodyLimit::max(START_BODY_LIMIT))
        .merge(
            Router::new()
                .route("/v1/policy", get(policy_status))
                .route("/v1/policy/list", get(policy_list))
                .route("/v1/policy/set", post(policy_set))
                .route("/v1/policy/try", post(policy_try))
                .layer(DefaultBodyLimit::max(POLICY_BODY_LIMIT)),
        )
        .with_state(auctioneer);
    diego_telemetry::instrument(api, "brain")
}

async fn lrps(State(a): State<Arc<Auctioneer>>, body: Bytes) -> Result<StatusCode, ApiError> {
    a.require_active()?;
    let requests: Vec<LrpStartRequest> = decode(&body)?;
    a.submit_lrps(requests)
        .map_err(|e| ApiError::new(ErrorType::InvalidRequest, e))?;
    Ok(StatusCode::ACCEPTED)
}

async fn tasks(State(a): State<Arc<Auctioneer>>, body: Bytes) -> Result<StatusCode, ApiError> {
    a.require_active()?;
    let requests: Vec<TaskStartRequest> = decode(&body)?;
    a.submit_tasks(requests)
        .map_err(|e| ApiError::new(ErrorType::InvalidRequest, e))?;
    Ok(StatusCode::ACCEPTED)
}

async fn policy_status(State(a): State<Arc<Auctioneer>>) -> axum::Json<PolicyStatus> {
    axum::Json(a.policy_status())
}

async fn policy_list(State(a): State<Arc<Auctioneer>>) -> axum::Json<Vec<PolicyListEntry>> {
    axum::Json(a.policy_list())
}

async fn policy_set(
    State(a): State<Arc<Auctioneer>>,
    body: Bytes,
) -> Result<axum::Json<PolicyStatus>, ApiError> {
    a.require_active()?;
    let choice: PolicyChoice = decode(&body)?;
    Ok(axum::Json(a.set_policy(&choice).await?))
}

async fn policy_try(
    State(a): State<Arc<Auctioneer>>,
    body: Bytes,
) -> Result<axum::Json<TryReport>, ApiError> {
    a.require_active()?;
    let choice: PolicyChoice = decode(&body)?;
    Ok(axum::Json(a.try_policy(&choice).await?))
}
