//! The HTTP side of the log server: ingest, recent lines and live ndjson streams.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

use crate::envelope::{LogEnvelope, trim_line_end, truncate_message};
use crate::hub::{Hub, HubLimits};

/// The most envelopes one `POST /v1/logs` may carry.
pub const MAX_BATCH_LINES: usize = 10_000;
/// The largest `POST /v1/logs` body.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// How much the log server keeps in memory.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Recent lines kept per app; the oldest are dropped first.
    pub recent_per_guid: usize,
    /// Apps whose recent lines are kept; the least recently written is dropped first.
    pub max_guids: usize,
    /// What all recent lines together may hold (message, names and a fixed share per line);
    /// over it, the oldest lines of the least recently written app are dropped first.
    pub max_total_bytes: usize,
    /// Longer messages are cut to this many bytes and marked as truncated.
    pub max_message_bytes: usize,
    /// Lines queued for one live stream; a reader further behind is cut off.
    pub stream_buffer: usize,
    /// Live streams open at once; more are refused with 503.
    pub max_streams: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            recent_per_guid: 1_000,
            max_guids: 10_000,
            max_total_bytes: 256 * 1024 * 1024,
            max_message_bytes: 64 * 1024,
            stream_buffer: 1_000,
            max_streams: 10_000,
        }
    }
}

/// The log server: cheap to clone, every clone shares the same lines and streams.
#[derive(Debug, Clone)]
pub struct LogServer {
    hub: Arc<Hub>,
    limits: LogLimits,
}

impl LogServer {
    pub fn new(limits: LogLimits) -> Self {
        let hub = Hub::new(HubLimits {
            recent_per_guid: limits.recent_per_guid,
            max_guids: limits.max_guids,
            max_total_bytes: limits.max_total_bytes,
            stream_buffer: limits.stream_buffer,
            max_streams: limits.max_streams,
        });
        LogServer {
            hub: Arc::new(hub),
            limits,
        }
    }

    /// The routes of the log server, ready to be merged into a bigger router.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/v1/logs",
                post(ingest).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
            )
            .route("/v1/logs/{log_guid}/recent", get(recent))
            .route("/v1/logs/{log_guid}/stream", get(stream))
            .with_state(self.clone())
    }

    /// Appends envelopes directly (for a producer in the same process).
    pub fn publish(&self, mut lines: Vec<LogEnvelope>) {
        for line in &mut lines {
            trim_line_end(&mut line.message);
            truncate_message(&mut line.message, self.limits.max_message_bytes);
        }
        self.hub.publish(lines);
    }

    /// The recent lines of `log_guid`, oldest first.
    pub fn recent(&self, log_guid: &str) -> Vec<LogEnvelope> {
        self.hub
            .recent(log_guid)
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect()
    }

    /// What the recent lines of every app count for now (bounded by `max_total_bytes`).
    pub fn recent_bytes(&self) -> usize {
        self.hub.recent_bytes()
    }

    /// Live streams open now.
    pub fn stream_count(&self) -> usize {
        self.hub.stream_count()
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

async fn ingest(State(server): State<LogServer>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the batch is larger than {MAX_BATCH_BYTES} bytes; send smaller batches"),
            );
        }
        Err(rejection) => {
            return error(
                rejection.status(),
                format!("cannot read the batch: {rejection}"),
            );
        }
    };
    let lines: Vec<LogEnvelope> = match serde_json::from_slice(&body) {
        Ok(lines) => lines,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a JSON array of log envelopes: {e}"),
            );
        }
    };
    if lines.len() > MAX_BATCH_LINES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the batch has {} envelopes, more than the {MAX_BATCH_LINES} allowed; send smaller batches",
                lines.len()
            ),
        );
    }
    server.publish(lines);
    StatusCode::NO_CONTENT.into_response()
}

async fn recent(State(server): State<LogServer>, Path(log_guid): Path<String>) -> Response {
    let lines = server.hub.recent(&log_guid);
    let lines: Vec<&LogEnvelope> = lines.iter().map(|l| l.as_ref()).collect();
    axum::Json(lines).into_response()
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    #[serde(default)]
    recent: bool,
}

async fn stream(
    State(server): State<LogServer>,
    Path(log_guid): Path<String>,
    Query(params): Query<StreamParams>,
) -> Response {
    let subscription = match server.hub.subscribe(&log_guid, params.recent) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} log streams are open, the most allowed; try again later",
                    e.0
                ),
            );
        }
    };
    debug!(%log_guid, recent = params.recent, "log stream opened");
    let guard = subscription.guard;
    let lines = futures::stream::iter(subscription.recent)
        .chain(ReceiverStream::new(subscription.lines))
        .map(move |line| {
            // The guard lives as long as the body, so the stream is unregistered when the
            // client goes away and hyper drops the body.
            let _alive = &guard;
            Ok::<_, Infallible>(ndjson_line(&line))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot build the stream response: {e}"),
            )
        })
}

fn ndjson_line(line: &LogEnvelope) -> Bytes {
    // Serializing a struct of strings and integers cannot fail; an empty line is harmless.
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
