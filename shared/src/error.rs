//! Stable error codes and the error JSON every failed request answers with.

use serde::{Deserialize, Serialize};

/// One bad input field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path of the field, e.g. `recipientIds[3]`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Machine-readable reason of a failed request. Serialized in `snake_case`; the
/// names are a contract with clients and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MissingToken,
    InvalidToken,
    TokenExpired,
    TokenNotYetValid,
    ValidationFailed,
    InvalidJson,
    NotFound,
    MethodNotAllowed,
    NotRetryable,
    NotCancelable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    WebhookLimitReached,
    BodyTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    RateLimiterDisabled,
    UpstreamUnavailable,
    NotConfigured,
    InternalError,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MissingToken | InvalidToken | TokenExpired | TokenNotYetValid => 401,
            ValidationFailed | InvalidJson => 400,
            NotFound => 404,
            MethodNotAllowed => 405,
            NotRetryable | NotCancelable | IdempotencyKeyInUse | WebhookLimitReached => 409,
            IdempotencyKeyReused => 422,
            BodyTooLarge => 413,
            UnsupportedMediaType => 415,
            TooManyRequests => 429,
            RateLimiterDisabled | UpstreamUnavailable | NotConfigured => 503,
            InternalError => 500,
        }
    }

    /// The human sentence that goes with the code when nothing more specific is said.
    pub fn default_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MissingToken | InvalidToken | TokenExpired | TokenNotYetValid => "Not authenticated",
            ValidationFailed => "Invalid request",
            InvalidJson => "Request body is not valid JSON",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            NotRetryable => "Only a failed message can be retried",
            NotCancelable => "Only a queued or scheduled message can be canceled: this one is being sent or is done",
            IdempotencyKeyInUse => "A request with this Idempotency-Key is still being processed",
            IdempotencyKeyReused => "This Idempotency-Key was used with a different request",
            WebhookLimitReached => "This account has as many webhook endpoints as it may: delete one first",
            BodyTooLarge => "Request body is too large",
            UnsupportedMediaType => "Content-Type must be application/json",
            TooManyRequests => "Too many requests",
            RateLimiterDisabled => "Messaging is paused: the rate limiter is not enabled",
            UpstreamUnavailable => "The queue or the ledger cannot be reached",
            NotConfigured => "Service is not configured",
            InternalError => "Internal error",
        }
    }
}

/// The error JSON: `{"error", "code", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode) -> Self {
        Self { error: code.default_message().to_owned(), code, details: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_snake_case_and_map_to_statuses() {
        let body = ErrorBody::new(ErrorCode::TokenExpired);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json, serde_json::json!({"error": "Not authenticated", "code": "token_expired"}));
        assert_eq!(ErrorCode::NotRetryable.status(), 409);
        assert_eq!(ErrorCode::RateLimiterDisabled.status(), 503);
        assert_eq!(ErrorCode::BodyTooLarge.status(), 413);
    }
}
