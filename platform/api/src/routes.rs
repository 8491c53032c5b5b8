//! The HTTP API: the route table and thin handlers over `apps.rs`, `buildpacks.rs` and
//! `staging.rs`. Every error is `{"error", "code"}` with a 4xx/5xx status.
//!
//! `start`/`restart` answer after recording what they set in motion: a new staging
//! (`staging.state` PENDING, its `task_guid`; a deployment follows when it succeeds) or a new
//! deployment (`deployment.state` DEPLOYING, `to` the new process guid); with nothing to do
//! (same droplet and settings, running) the app as it is. `PUT /v1/apps/{name}` and
//! `PUT /v1/apps/{name}/env` change no running container: instances and routes apply at once,
//! other settings at the next start, restart or push. `scale` with memory or disk deploys as
//! `start` does.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /v1/info` | | [`Info`] |
//! | `GET /v1/apps` | | `[AppSummary]` |
//! | `PUT /v1/apps/{name}` | [`AppSettings`] | 201/200 [`AppView`] |
//! | `GET /v1/apps/{name}` | | [`AppView`] |
//! | `DELETE /v1/apps/{name}` | | 204 |
//! | `PUT /v1/apps/{name}/bits` | zip or tgz | [`AppView`] |
//! | `POST /v1/apps/{name}/start`, `/restart`, `/restage` | | 202 [`AppView`] |
//! | `POST /v1/apps/{name}/stop` | | [`AppView`] |
//! | `POST /v1/apps/{name}/scale` | [`ScaleRequest`] | [`AppView`] |
//! | `PUT /v1/apps/{name}/env` | `{KEY: "v" \| null}` | [`AppView`] |
//! | `GET /v1/apps/{name}/events` | | `[AppEvent]` |
//! | `POST /v1/apps/{name}/tasks` | [`TaskRequest`] | 202 [`TaskView`] |
//! | `GET /v1/apps/{name}/tasks` | | `[TaskView]` |
//! | `GET /v1/buildpacks` | | `[BuildpackView]` |
//! | `PUT /v1/buildpacks/{name}?position=N` | zip or tgz | [`BuildpackView`] |
//! | `DELETE /v1/buildpacks/{name}` | | 204 |
//! | `GET /v1/lifecycles` | | `[LifecycleEntry]` |
//! | `GET /v1/lifecycles/{name}` | | [`LifecycleEntry`] |
//! | `PUT /v1/lifecycles/{name}` | a `.wasm` component | [`LifecycleEntry`] (422 saying why a component is refused) |
//! | `DELETE /v1/lifecycles/{name}` | | [`LifecycleEntry`] (409 while apps use it) |
//! | `POST /v1/internal/staging/{task_guid}/completed` | the BBS's task callback | 200 |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::model::*;
use crate::state::State;
use crate::{apps, buildpacks, lifecycles, staging, uploads};

type S = AxState<Arc<State>>;

/// A JSON body whose rejection is an [`ApiError`] (400 with the parser's message).
struct JsonBody<T>(T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_json",
        format!("the body is not valid: {}", e.body_text()),
    )
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", e.body_text())
}

pub fn router(state: Arc<State>) -> Router {
    let uploads = Router::new()
        .route("/v1/apps/{name}/bits", put(put_bits))
        .route(
            "/v1/buildpacks/{name}",
            put(put_buildpack).delete(delete_buildpack),
        )
        .route(
            "/v1/lifecycles/{name}",
            put(put_lifecycle)
                .get(get_lifecycle)
                .delete(delete_lifecycle),
        )
        // Uploads are streamed to disk with their own cap (`max_upload_bytes`).
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/apps", get(list_apps))
        .route(
            "/v1/apps/{name}",
            put(put_app).get(get_app).delete(delete_app),
        )
        .route("/v1/apps/{name}/start", post(start))
        .route("/v1/apps/{name}/restart", post(restart))
        .route("/v1/apps/{name}/restage", post(restage))
        .route("/v1/apps/{name}/stop", post(stop))
        .route("/v1/apps/{name}/scale", post(scale))
        .route("/v1/apps/{name}/env", put(set_env))
        .route("/v1/apps/{name}/events", get(events))
        .route("/v1/apps/{name}/tasks", post(run_task).get(list_tasks))
        .route("/v1/buildpacks", get(list_buildpacks))
        .route("/v1/lifecycles", get(list_lifecycles))
        .route(
            "/v1/internal/staging/{task_guid}/completed",
            post(staging_completed),
        )
        .merge(uploads)
        .with_state(state)
}

async fn info(AxState(state): S) -> Json<Info> {
    Json(Info {
        domain: state.config.domain.clone(),
        bbs_url: state.config.bbs_url.clone(),
        api_url: state.config.api_url.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

async fn list_apps(AxState(state): S) -> ApiResult<Json<Vec<AppSummary>>> {
    Ok(Json(apps::summaries(&state).await?))
}

async fn put_app(
    AxState(state): S,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<AppSettings>,
) -> ApiResult<Response> {
    let (app, created) = apps::put(&state, &name, body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(apps::view(&state, &app).await)).into_response())
}

async fn get_app(AxState(state): S, Path(name): Path<String>) -> ApiResult<Json<AppView>> {
    Ok(Json(apps::view_by_name(&state, &name).await?))
}

async fn delete_app(AxState(state): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    apps::delete(&state, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_bits(
    AxState(state): S,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<AppView>> {
    let upload = uploads::receive(
        body,
        &state.config.data_dir.join("tmp"),
        state.config.max_upload_bytes,
    )
    .await?;
    let app = apps::put_bits(&state, &name, &upload).await?;
    Ok(Json(apps::view(&state, &app).await))
}

async fn start(AxState(state): S, Path(name): Path<String>) -> ApiResult<Response> {
    let app = apps::start(&state, &name, false).await?;
    Ok((StatusCode::ACCEPTED, Json(apps::view(&state, &app).await)).into_response())
}

async fn restart(AxState(state): S, Path(name): Path<String>) -> ApiResult<Response> {
    let app = apps::start(&state, &name, true).await?;
    Ok((StatusCode::ACCEPTED, Json(apps::view(&state, &app).await)).into_response())
}

async fn restage(AxState(state): S, Path(name): Path<String>) -> ApiResult<Response> {
    let app = apps::restage(&state, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(apps::view(&state, &app).await)).into_response())
}

async fn stop(AxState(state): S, Path(name): Path<String>) -> ApiResult<Json<AppView>> {
    let app = apps::stop(&state, &name).await?;
    Ok(Json(apps::view(&state, &app).await))
}

async fn scale(
    AxState(state): S,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ScaleRequest>,
) -> ApiResult<Json<AppView>> {
    let app = apps::scale(&state, &name, body).await?;
    Ok(Json(apps::view(&state, &app).await))
}

async fn set_env(
    AxState(state): S,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<BTreeMap<String, Option<String>>>,
) -> ApiResult<Json<AppView>> {
    let app = apps::set_env(&state, &name, body).await?;
    Ok(Json(apps::view(&state, &app).await))
}

async fn events(AxState(state): S, Path(name): Path<String>) -> ApiResult<Json<Vec<AppEvent>>> {
    Ok(Json(apps::events(&state, &name).await?))
}

async fn run_task(
    AxState(state): S,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<TaskRequest>,
) -> ApiResult<Response> {
    let task = apps::run_task(&state, &name, body).await?;
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

async fn list_tasks(AxState(state): S, Path(name): Path<String>) -> ApiResult<Json<Vec<TaskView>>> {
    Ok(Json(apps::tasks(&state, &name).await?))
}

async fn list_buildpacks(AxState(state): S) -> ApiResult<Json<Vec<BuildpackView>>> {
    Ok(Json(buildpacks::list(&state).await?))
}

#[derive(Debug, Deserialize)]
struct PositionQuery {
    position: Option<u32>,
}

async fn put_buildpack(
    AxState(state): S,
    Path(name): Path<String>,
    query: Result<Query<PositionQuery>, QueryRejection>,
    body: Body,
) -> ApiResult<Json<BuildpackView>> {
    let Query(query) = query.map_err(query_rejection)?;
    let upload = uploads::receive(
        body,
        &state.config.data_dir.join("tmp"),
        state.config.max_upload_bytes,
    )
    .await?;
    Ok(Json(
        buildpacks::put(&state, &name, query.position, &upload).await?,
    ))
}

async fn delete_buildpack(AxState(state): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    buildpacks::delete(&state, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The BBS's completion callback body (Diego's `TaskCallbackResponse`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TaskCallback {
    task_guid: String,
    failed: bool,
    failure_reason: String,
    result: String,
}

/// A 503 asks the BBS to call again: the callback must not be lost to a passing failure.
async fn staging_completed(
    AxState(state): S,
    Path(task_guid): Path<String>,
    JsonBody(body): JsonBody<TaskCallback>,
) -> ApiResult<StatusCode> {
    if !body.task_guid.is_empty() && body.task_guid != task_guid {
        return Err(ApiError::bad_request(
            "task_mismatch",
            format!(
                "the body is for task {:?}, the URL for {task_guid:?}",
                body.task_guid
            ),
        ));
    }
    staging::complete(
        &state,
        &task_guid,
        body.failed,
        &body.failure_reason,
        &body.result,
    )
    .await
    .map_err(|e| {
        if e.status.is_server_error() {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code, e.message)
        } else {
            e
        }
    })?;
    Ok(StatusCode::OK)
}

async fn list_lifecycles(AxState(state): S) -> ApiResult<Json<Vec<LifecycleEntry>>> {
    Ok(Json(lifecycles::list(&state).await?))
}

async fn get_lifecycle(
    AxState(state): S,
    Path(name): Path<String>,
) -> ApiResult<Json<LifecycleEntry>> {
    Ok(Json(lifecycles::get(&state, &name).await?))
}

async fn put_lifecycle(
    AxState(state): S,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Json<LifecycleEntry>> {
    let max = lifecycles::MAX_COMPONENT_BYTES;
    let bytes = axum::body::to_bytes(body, max + 1).await.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "component_too_large",
            format!("the component is over the {} MiB cap ({e})", max >> 20),
        )
    })?;
    Ok(Json(lifecycles::add(&state, &name, bytes).await?))
}

async fn delete_lifecycle(
    AxState(state): S,
    Path(name): Path<String>,
) -> ApiResult<Json<LifecycleEntry>> {
    Ok(Json(lifecycles::remove(&state, &name).await?))
}
