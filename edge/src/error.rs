//! The one place where a failure becomes the API's error JSON. Internal detail (an AWS
//! error type, a bad setting) goes to the log, never into the response.

use shared::error::{ErrorBody, ErrorCode, FieldError};

use crate::auth::AuthError;
use crate::aws::AwsError;
use crate::http::ApiResponse;

/// A request that ends in an error response.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Option<String>,
    pub details: Vec<FieldError>,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
    /// The methods the route has, for 405 (RFC 9110 requires the `Allow` header).
    pub allow: Option<String>,
    /// For the operator's log only.
    pub log: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        Self { code, message: None, details: Vec::new(), retry_after: None, allow: None, log: None }
    }

    pub fn invalid(details: Vec<FieldError>) -> Self {
        Self { details, ..Self::new(ErrorCode::ValidationFailed) }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn into_response(self) -> ApiResponse {
        let status = self.code.status();
        let mut body = ErrorBody::new(self.code);
        if let Some(m) = self.message {
            body.error = m;
        }
        body.details = self.details;
        let mut response = ApiResponse::json(status, &body);
        if status == 401 {
            response.headers.push(("www-authenticate", r#"Bearer realm="messaging""#.into()));
        }
        if let Some(secs) = self.retry_after {
            response.headers.push(("retry-after", secs.to_string()));
        }
        if let Some(methods) = self.allow {
            response.headers.push(("allow", methods));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(e.code())
    }
}

impl From<AwsError> for ApiError {
    fn from(e: AwsError) -> Self {
        Self { log: Some(e.to_string()), ..Self::new(ErrorCode::UpstreamUnavailable) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_failures_become_503_without_detail() {
        let e: ApiError = AwsError::Refused { service: "sqs", status: 403, kind: "InvalidClientTokenId".into() }.into();
        let r = e.into_response();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, r#"{"error":"The queue or the ledger cannot be reached","code":"upstream_unavailable"}"#);
    }

    #[test]
    fn auth_failures_are_401_with_challenge() {
        let r = ApiError::from(AuthError::Expired).into_response();
        assert_eq!((r.status, r.body.as_str()), (401, r#"{"error":"Not authenticated","code":"token_expired"}"#));
        assert!(r.headers.iter().any(|(k, _)| *k == "www-authenticate"));
    }
}
