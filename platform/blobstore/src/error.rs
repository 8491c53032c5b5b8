//! The one error type of the blob store, its server and its client. Every variant names the
//! key it is about, so a failure in a log line says which blob.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blob key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("bad request for blob {key:?}: {message}")]
    BadRequest { key: String, message: String },
    #[error("no blob {key:?}")]
    NotFound { key: String },
    #[error("blob {key:?} clashes with another blob: {reason}")]
    Conflict { key: String, reason: String },
    #[error("blob {key:?} is larger than the limit of {max} bytes")]
    TooLarge { key: String, max: u64 },
    #[error("blob {key:?} has sha256 {actual}, not the expected {expected}; nothing kept")]
    DigestMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error(
        "cannot store blob {key:?}: the disk has {free} bytes free, below the minimum of {min} bytes (free space or delete blobs)"
    )]
    InsufficientStorage { key: String, free: u64, min: u64 },
    #[error("the upload of blob {key:?} was cut off: {message}")]
    UploadInterrupted { key: String, message: String },
    #[error("blob {key:?} is damaged on disk: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the blob store for {key:?}: {source}")]
    Request {
        key: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the blob store answered {status} for {key:?}: {message}")]
    Server {
        key: String,
        status: u16,
        message: String,
    },
}

impl BlobError {
    /// The HTTP status the server answers with for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            BlobError::InvalidKey { .. } | BlobError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            BlobError::NotFound { .. } => StatusCode::NOT_FOUND,
            BlobError::Conflict { .. } => StatusCode::CONFLICT,
            BlobError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BlobError::DigestMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BlobError::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            BlobError::UploadInterrupted { .. } => StatusCode::BAD_REQUEST,
            BlobError::Corrupt { .. } | BlobError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            BlobError::Request { .. } => StatusCode::BAD_GATEWAY,
            BlobError::Server { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlobError {
        let context = context.into();
        move |source| BlobError::Io { context, source }
    }
}
