//! The REST layer's error type and its JSON shape:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.
//!
//! Policy: clients get a status, a stable code and a message fit to show a person;
//! internal errors are logged with their cause and answered with a bare
//! "internal error", never the cause.

use atelier_core::CoreError;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer of the REST API.
#[derive(Debug)]
pub struct ApiError(pub CoreError);

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `invalid`, `unauthenticated`, `forbidden`.
    pub code: &'static str,
    /// A message fit to show a person.
    pub message: String,
    /// The input field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        ApiError(err)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // The rejection text names the problem (missing field, wrong type, bad JSON).
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError(CoreError::TooLarge(rejection.body_text()));
        }
        ApiError(CoreError::invalid("body", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError(CoreError::invalid("path", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let CoreError::Internal(source) = &self.0 {
            tracing::error!(error = %source, "request failed");
        }
        let (code, field) = (self.0.code(), self.0.field().map(str::to_string));
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody { error: ErrorDetail { code, message: self.0.to_string(), field } };
        let mut response = (status, axum::Json(body)).into_response();
        match &self.0 {
            CoreError::TooManyAttempts { retry_after } => {
                if let Ok(value) = retry_after.to_string().parse() {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            CoreError::Unauthenticated(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
