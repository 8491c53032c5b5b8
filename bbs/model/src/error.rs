//! The typed error every BBS response carries: a closed kind and a message. Clients match on the
//! kind, never on the text.

use serde::{Deserialize, Serialize};

/// Diego's `Error.Type`, with its numbering (`models/error.proto`). Serialized by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ErrorType {
    UnknownError = 0,
    InvalidRecord = 3,
    InvalidRequest = 4,
    InvalidResponse = 5,
    InvalidProtobufMessage = 6,
    #[serde(rename = "InvalidJSON")]
    InvalidJson = 7,
    FailedToOpenEnvelope = 8,
    InvalidStateTransition = 9,
    ResourceConflict = 11,
    ResourceExists = 12,
    ResourceNotFound = 13,
    RouterError = 14,
    #[serde(rename = "ActualLRPCannotBeClaimed")]
    ActualLrpCannotBeClaimed = 15,
    #[serde(rename = "ActualLRPCannotBeStarted")]
    ActualLrpCannotBeStarted = 16,
    #[serde(rename = "ActualLRPCannotBeCrashed")]
    ActualLrpCannotBeCrashed = 17,
    #[serde(rename = "ActualLRPCannotBeFailed")]
    ActualLrpCannotBeFailed = 18,
    #[serde(rename = "ActualLRPCannotBeRemoved")]
    ActualLrpCannotBeRemoved = 19,
    #[serde(rename = "ActualLRPCannotBeUnclaimed")]
    ActualLrpCannotBeUnclaimed = 21,
    RunningOnDifferentCell = 24,
    #[serde(rename = "GUIDGeneration")]
    GuidGeneration = 26,
    Deserialize = 27,
    Deadlock = 28,
    Unrecoverable = 29,
    LockCollision = 30,
    Timeout = 31,
    /// Not in Diego: the store is unreachable and nothing was written (Diego reports these as
    /// UnknownError). Clients may retry.
    Unavailable = 100,
}

impl ErrorType {
    /// The HTTP status the BBS answers with. Bad input is a 4xx; a store that cannot answer is a
    /// 503; an outcome the BBS cannot know (a write that timed out) is a 504.
    pub fn http_status(self) -> u16 {
        use ErrorType::*;
        match self {
            InvalidRecord
            | InvalidRequest
            | InvalidProtobufMessage
            | InvalidJson
            | FailedToOpenEnvelope
            | Deserialize => 400,
            ResourceNotFound => 404,
            ResourceExists
            | ResourceConflict
            | InvalidStateTransition
            | ActualLrpCannotBeClaimed
            | ActualLrpCannotBeStarted
            | ActualLrpCannotBeCrashed
            | ActualLrpCannotBeFailed
            | ActualLrpCannotBeRemoved
            | ActualLrpCannotBeUnclaimed
            | RunningOnDifferentCell
            | LockCollision => 409,
            Unavailable | Deadlock => 503,
            Timeout => 504,
            UnknownError | InvalidResponse | RouterError | GuidGeneration | Unrecoverable => 500,
        }
    }

    /// The kind a client gets for an HTTP status when the body carries no typed error.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 | 413 | 415 | 422 => ErrorType::InvalidRequest,
            404 => ErrorType::ResourceNotFound,
            409 => ErrorType::ResourceConflict,
            503 => ErrorType::Unavailable,
            504 => ErrorType::Timeout,
            _ => ErrorType::UnknownError,
        }
    }
}

/// An error as the BBS reports it: `{"type": "ResourceNotFound", "message": "..."}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema,
)]
#[error("{kind:?}: {message}")]
pub struct BbsError {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
}

impl BbsError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorType::InvalidRequest, message)
    }

    pub fn invalid_record(message: impl Into<String>) -> Self {
        Self::new(ErrorType::InvalidRecord, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorType::ResourceNotFound, message)
    }

    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(ErrorType::ResourceExists, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorType::ResourceConflict, message)
    }

    pub fn transition(from: impl std::fmt::Debug, to: impl std::fmt::Debug) -> Self {
        Self::new(
            ErrorType::InvalidStateTransition,
            format!("Cannot transition from {from:?} to {to:?}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_serialize_with_diego_names() {
        let e = BbsError::new(ErrorType::ActualLrpCannotBeClaimed, "nope");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"type":"ActualLRPCannotBeClaimed","message":"nope"}"#
        );
        assert_eq!(serde_json::from_str::<BbsError>(&json).unwrap(), e);
        assert_eq!(ErrorType::InvalidJson as i32, 7);
        assert_eq!(e.kind.http_status(), 409);
    }
}
