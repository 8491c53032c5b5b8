//! The blob store's HTTP routes.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use tracing::warn;

use crate::SHA256_HEADER;
use crate::error::BlobError;
use crate::store::{BlobInfo, BlobStore};

/// Bytes read from disk per chunk of a download.
const READ_CHUNK: usize = 64 * 1024;

impl BlobStore {
    /// The routes of the blob store, ready to be merged into a bigger router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/blobs", get(list).delete(delete_prefix))
            .route(
                "/v1/blobs/{*key}",
                get(download)
                    .head(head)
                    .put(upload)
                    .post(upload)
                    .delete(delete),
            )
            .with_state(self.clone())
    }
}

impl IntoResponse for BlobError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            warn!(error = %self, "blob store request failed");
        }
        (status, self.to_string()).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct UploadParams {
    sha256: Option<String>,
}

async fn upload(
    State(store): State<BlobStore>,
    Path(key): Path<String>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BlobError> {
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let info = store
        .put(
            &key,
            params.sha256.as_deref(),
            declared_len,
            body.into_data_stream(),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

/// The headers every reply about one blob carries.
fn blob_headers(info: &BlobInfo) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // Digests are validated hex, always valid header values.
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", info.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(sha) = HeaderValue::from_str(&info.sha256) {
        headers.insert(SHA256_HEADER, sha);
    }
    headers
}

fn not_modified(info: &BlobInfo, request: &HeaderMap) -> bool {
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/").trim_matches('"') == info.sha256)
        })
}

async fn download(
    State(store): State<BlobStore>,
    Path(key): Path<String>,
    request: HeaderMap,
) -> Result<Response, BlobError> {
    let (info, file) = store.open_blob(&key).await?;
    let mut headers = blob_headers(&info);
    if not_modified(&info, &request) {
        headers.remove(header::CONTENT_LENGTH);
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let bytes = ReaderStream::with_capacity(file.take(info.size), READ_CHUNK);
    Ok((headers, Body::from_stream(bytes)).into_response())
}

async fn head(
    State(store): State<BlobStore>,
    Path(key): Path<String>,
) -> Result<Response, BlobError> {
    let info = store.info(&key).await?;
    Ok((blob_headers(&info), Body::empty()).into_response())
}

async fn delete(
    State(store): State<BlobStore>,
    Path(key): Path<String>,
) -> Result<StatusCode, BlobError> {
    store.delete(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct PrefixParams {
    #[serde(default)]
    prefix: String,
}

async fn list(
    State(store): State<BlobStore>,
    Query(params): Query<PrefixParams>,
) -> Result<Response, BlobError> {
    let infos = store.list(&params.prefix).await?;
    Ok(axum::Json(infos).into_response())
}

async fn delete_prefix(
    State(store): State<BlobStore>,
    Query(params): Query<PrefixParams>,
) -> Result<Response, BlobError> {
    let deleted = store.delete_prefix(&params.prefix).await?;
    Ok(axum::Json(serde_json::json!({ "deleted": deleted })).into_response())
}
