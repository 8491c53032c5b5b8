//! The API's error: an HTTP status, a snake_case code and a message, answered as
//! `{"error": "<message>", "code": "<code>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::model::ErrorBody;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn app_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "app_not_found",
            format!("app {name:?} not found"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A service this API depends on (BBS, blob store) failed.
    pub fn upstream(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, error = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::internal(e.to_string())
    }
}

/// The BBS's refusals are the caller's to fix (422, 409, with the BBS's own message); only a
/// BBS that fails or cannot be reached is a 502.
impl From<diego_bbs_client::ClientError> for ApiError {
    fn from(e: diego_bbs_client::ClientError) -> Self {
        use diego_model::ErrorType;
        match &e {
            diego_bbs_client::ClientError::Bbs { error, .. } => match error.kind {
                ErrorType::InvalidRequest => {
                    ApiError::unprocessable("bbs_invalid_request", error.message.clone())
                }
                ErrorType::ResourceConflict => {
                    ApiError::conflict("bbs_conflict", error.message.clone())
                }
                _ => ApiError::upstream("bbs_error", e.to_string()),
            },
            _ => ApiError::upstream("bbs_error", e.to_string()),
        }
    }
}

impl From<crate::blobs::BlobsError> for ApiError {
    fn from(e: crate::blobs::BlobsError) -> Self {
        ApiError::upstream("blobstore_error", e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use diego_bbs_client::ClientError;
    use diego_model::{BbsError, ErrorType};

    fn refused(kind: ErrorType) -> ApiError {
        ClientError::Bbs {
            route: "DesireTask".into(),
            error: BbsError::new(kind, "annotation is too long"),
        }
        .into()
    }

    #[test]
    fn bbs_refusals_are_the_callers_and_failures_are_upstream() {
        let invalid = refused(ErrorType::InvalidRequest);
        assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(invalid.message, "annotation is too long");
        assert_eq!(
            refused(ErrorType::ResourceConflict).status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            refused(ErrorType::UnknownError).status,
            StatusCode::BAD_GATEWAY
        );
        let transport: ApiError = ClientError::Transport {
            url: "http://127.0.0.1:1".into(),
            message: "refused".into(),
        }
        .into();
        assert_eq!(transport.status, StatusCode::BAD_GATEWAY);
    }
}
