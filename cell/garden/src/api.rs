//! The Garden-style HTTP API over any [`Backend`]. Handlers only decode, call the backend and
//! encode; errors become `{"error":{"type":KIND,"message":...}}` with a matching status.
//!
//! Routes:
//! ```text
//! GET    /ping
//! POST   /containers                              ContainerSpec -> {"handle"}
//! GET    /containers?name=value...                -> {"handles":[..]} (property filter)
//! DELETE /containers/{handle}
//! GET    /containers/{handle}/info | /metrics
//! GET    /containers/{handle}/spec                -> the OCI runtime spec of what it got
//! POST   /containers/{handle}/processes           ProcessSpec -> {"id"}
//! GET    /containers/{handle}/processes/{id}      newline-delimited JSON frames:
//!                                                 {"stdout":b64} {"stderr":b64} {"exit":n}
//! POST   /containers/{handle}/processes/{id}/signal {"signal":n}
//! POST   /containers/{handle}/processes/{id}/stdin  body: bytes for an interactive process
//! DELETE /containers/{handle}/processes/{id}/stdin  ends its stdin
//! POST   /containers/{handle}/processes/{id}/resize {"cols":c,"rows":r} (its terminal)
//! PUT    /containers/{handle}/stream_in?path=P    body: tar
//! GET    /containers/{handle}/stream_out?path=P   body: tar
//! GET    /containers/{handle}/properties          -> {name: value}
//! PUT|GET|DELETE /containers/{handle}/properties/{name}   body/answer: the value as text
//! POST   /containers/{handle}/net_in              NetIn -> PortMapping
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::Error;
use crate::types::{ContainerSpec, NetIn, ProcessEvent, ProcessSpec, TtySpec};

/// Shared state of the server.
type AppState = Arc<dyn Backend>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match self.kind() {
            "ResourceNotFound" => StatusCode::NOT_FOUND,
            "ResourceExists" => StatusCode::CONFLICT,
            "InvalidRequest" | "PathEscape" => StatusCode::BAD_REQUEST,
            "ProcessStartFailed" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(error_body(&self))).into_response()
    }
}

fn error_body(e: &Error) -> serde_json::Value {
    serde_json::json!({"error": {"type": e.kind(), "message": e.to_string()}})
}

/// Wire frames of a process stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// base64 of stdout bytes.
    Stdout(String),
    /// base64 of stderr bytes.
    Stderr(String),
    /// Exit status.
    Exit(i32),
    /// The stream failed.
    Error {
        /// Error kind.
        #[serde(rename = "type")]
        kind: String,
        /// Message.
        message: String,
    },
}

impl From<&ProcessEvent> for Frame {
    fn from(ev: &ProcessEvent) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        match ev {
            ProcessEvent::Stdout(b) => Frame::Stdout(b64.encode(b)),
            ProcessEvent::Stderr(b) => Frame::Stderr(b64.encode(b)),
            ProcessEvent::Exit(c) => Frame::Exit(*c),
        }
    }
}

/// Handle in answers to create.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandleBody {
    /// The container handle.
    pub handle: String,
}

/// Answer to list.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandlesBody {
    /// Matching handles.
    pub handles: Vec<String>,
}

/// Answer to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessIdBody {
    /// The process id.
    pub id: String,
}

/// Body of a signal request.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignalBody {
    /// Linux signal number.
    pub signal: i32,
}

/// Query of stream_in / stream_out.
#[derive(Debug, Serialize, Deserialize)]
pub struct PathQuery {
    /// Path inside the container.
    pub path: String,
}

type ApiResult<T> = Result<T, Error>;

/// The router; serve it with [`serve`] or drive it in-process.
pub fn app(backend: Arc<dyn Backend>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "ok" }))
        .route("/containers", post(create).get(list))
        .route("/containers/{handle}", axum::routing::delete(destroy))
        .route("/containers/{handle}/info", get(info))
        .route("/containers/{handle}/metrics", get(metrics))
        .route("/containers/{handle}/spec", get(runtime_spec))
        .route("/containers/{handle}/processes", post(run_process))
        .route("/containers/{handle}/processes/{id}", get(attach))
        .route("/containers/{handle}/processes/{id}/signal", post(signal))
        .route(
            "/containers/{handle}/processes/{id}/stdin",
            post(write_stdin).delete(close_stdin),
        )
        .route("/containers/{handle}/processes/{id}/resize", post(resize))
        .route("/containers/{handle}/stream_in", put(stream_in))
        .route("/containers/{handle}/stream_out", get(stream_out))
        .route("/containers/{handle}/properties", get(properties))
        .route(
            "/containers/{handle}/properties/{name}",
            put(set_property).get(property).delete(remove_property),
        )
        .route("/containers/{handle}/net_in", post(net_in))
        .with_state(backend)
}

/// Configuration of a Garden server: where to listen and the native backend's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address (default `127.0.0.1:7777`).
    pub listen: std::net::SocketAddr,
    /// The native backend.
    pub backend: crate::native::Config,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 7777)),
            backend: crate::native::Config::default(),
        }
    }
}

/// Opens the native backend (adopting or cleaning up what the depot holds) and serves the API
/// until `shutdown` is cancelled. `on_listen` is told the bound address.
pub async fn run(
    config: ServerConfig,
    shutdown: tokio_util::sync::CancellationToken,
    on_listen: impl FnOnce(std::net::SocketAddr),
) -> Result<(), Error> {
    let backend = Arc::new(crate::native::NativeBackend::new(config.backend).await?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("listen on {}", config.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    tracing::info!(%addr, "garden server listening");
    on_listen(addr);
    serve(listener, backend, async move { shutdown.cancelled().await })
        .await
        .map_err(|e| Error::io(format!("serve on {addr}"), e))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Arc<dyn Backend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(backend))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn create(
    State(b): State<AppState>,
    Json(spec): Json<ContainerSpec>,
) -> ApiResult<Json<HandleBody>> {
    Ok(Json(HandleBody {
        handle: b.create(spec).await?,
    }))
}

async fn list(
    State(b): State<AppState>,
    Query(filter): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<HandlesBody>> {
    Ok(Json(HandlesBody {
        handles: b.list(&filter).await?,
    }))
}

async fn destroy(State(b): State<AppState>, Path(handle): Path<String>) -> ApiResult<StatusCode> {
    b.destroy(&handle).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn info(
    State(b): State<AppState>,
    Path(handle): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(b.info(&handle).await?))
}

async fn metrics(
    State(b): State<AppState>,
    Path(handle): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(b.metrics(&handle).await?))
}

async fn runtime_spec(
    State(b): State<AppState>,
    Path(handle): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(b.runtime_spec(&handle).await?))
}

async fn run_process(
    State(b): State<AppState>,
    Path(handle): Path<String>,
    Json(spec): Json<ProcessSpec>,
) -> ApiResult<Json<ProcessIdBody>> {
    Ok(Json(ProcessIdBody {
        id: b.run(&handle, spec).await?,
    }))
}

async fn attach(
    State(b): State<AppState>,
    Path((handle, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let stream = b.attach(&handle, &id).await?;
    let frames = stream.map(|ev| {
        let frame = match &ev {
            Ok(ev) => Frame::from(ev),
            Err(e) => Frame::Error {
                kind: e.kind().into(),
                message: e.to_string(),
            },
        };
        let mut line = serde_json::to_vec(&frame).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(frames))
        .map_err(|e| Error::Transport(e.to_string()))
}

async fn signal(
    State(b): State<AppState>,
    Path((handle, id)): Path<(String, String)>,
    Json(s): Json<SignalBody>,
) -> ApiResult<StatusCode> {
    b.signal(&handle, &id, s.signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn write_stdin(
    State(b): State<AppState>,
    Path((handle, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    b.write_stdin(&handle, &id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn close_stdin(
    State(b): State<AppState>,
    Path((handle, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    b.close_stdin(&handle, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resize(
    State(b): State<AppState>,
    Path((handle, id)): Path<(String, String)>,
    Json(size): Json<TtySpec>,
) -> ApiResult<StatusCode> {
    b.resize(&handle, &id, size).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stream_in(
    State(b): State<AppState>,
    Path(handle): Path<String>,
    Query(q): Query<PathQuery>,
    body: Body,
) -> ApiResult<StatusCode> {
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|e| Error::Transport(format!("request body: {e}"))));
    b.stream_in(&handle, &q.path, Box::pin(stream)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stream_out(
    State(b): State<AppState>,
    Path(handle): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let tar = b.stream_out(&handle, &q.path).await?;
    Ok((
        [("content-type", "application/x-tar")],
        Body::from_stream(tar),
    )
        .into_response())
}

async fn properties(
    State(b): State<AppState>,
    Path(handle): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(b.properties(&handle).await?))
}

async fn property(
    State(b): State<AppState>,
    Path((handle, name)): Path<(String, String)>,
) -> ApiResult<String> {
    b.property(&handle, &name).await
}

async fn set_property(
    State(b): State<AppState>,
    Path((handle, name)): Path<(String, String)>,
    value: String,
) -> ApiResult<StatusCode> {
    b.set_property(&handle, &name, &value).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_property(
    State(b): State<AppState>,
    Path((handle, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    b.remove_property(&handle, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn net_in(
    State(b): State<AppState>,
    Path(handle): Path<String>,
    Json(req): Json<NetIn>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(b.net_in(&handle, req).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::fake::FakeBackend;

    #[tokio::test]
    async fn runtime_spec_is_served_read_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(FakeBackend::default()),
            std::future::pending(),
        ));
        let c = Client::new(format!("http://{addr}"));
        let mut spec = ContainerSpec::from_dir("/rootfs");
        spec.handle = Some("h1".into());
        spec.limits.nproc = Some(64);
        c.create(spec.clone()).await.unwrap();
        let got = c.runtime_spec("h1").await.unwrap();
        assert_eq!(got, crate::spec::runtime_spec(&spec, "h1"));
        let rlimits = got.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!(rlimits[1].hard(), 64);
        // the route answers JSON in the runtime spec's own shape
        let raw: serde_json::Value = reqwest::get(format!("http://{addr}/containers/h1/spec"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(raw["linux"]["maskedPaths"].is_array(), "{raw}");
        assert_eq!(raw["process"]["noNewPrivileges"], true);
        let err = c.runtime_spec("nope").await.unwrap_err();
        assert!(
            matches!(&err, Error::Remote { kind, .. } if kind == "ResourceNotFound"),
            "{err}"
        );
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/containers/h1/spec"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        server.abort();
    }
}
