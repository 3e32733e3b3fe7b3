//! The UI layer's error type: what a server function tells the page. It carries a kind,
//! a message fit to show a person, and the form field at fault, if any. Internal
//! details never reach it; they are logged on the server.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// Kinds of failure a page may want to treat differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    Invalid,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    TooManyRequests,
    /// The request's body or a file in it is over a limit.
    TooLarge,
    /// The model behind an endpoint did not answer, or answered badly.
    ModelUnavailable,
    Internal,
    /// The request did not reach the server or its answer could not be read.
    Transport,
}

/// An error returned by a server function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub kind: ErrorKind,
    pub message: String,
    /// The form field the error is about.
    pub field: Option<String>,
}

impl AppError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AppError { kind, message: message.into(), field: None }
    }

    /// The error's message if it is about `field`.
    pub fn for_field(&self, field: &str) -> Option<String> {
        (self.field.as_deref() == Some(field)).then(|| self.message.clone())
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        let kind = match value {
            ServerFnErrorErr::Args(_) | ServerFnErrorErr::MissingArg(_) => ErrorKind::Invalid,
            _ => ErrorKind::Transport,
        };
        AppError::new(kind, value.to_string())
    }
}

#[cfg(feature = "ssr")]
impl From<atelier_core::CoreError> for AppError {
    fn from(err: atelier_core::CoreError) -> Self {
        use atelier_core::CoreError as E;
        use http::StatusCode;
        if let E::Internal(source) = &err {
            tracing::error!(error = %source, "server function failed");
        }
        let kind = match err.code() {
            "invalid" | "malformed" => ErrorKind::Invalid,
            "unauthenticated" => ErrorKind::Unauthenticated,
            "forbidden" => ErrorKind::Forbidden,
            "not_found" => ErrorKind::NotFound,
            "conflict" => ErrorKind::Conflict,
            "too_large" => ErrorKind::TooLarge,
            "too_many_attempts" => ErrorKind::TooManyRequests,
            "model_unavailable" => ErrorKind::ModelUnavailable,
            _ => ErrorKind::Internal,
        };
        let field = err.field().map(str::to_string);
        let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A form posted without JavaScript (before hydration) must keep leptos'
        // redirect back to the page, which then shows the error; API-style calls get
        // the status that says what went wrong.
        let plain_form_post = leptos::prelude::use_context::<http::request::Parts>().is_some_and(|parts| {
            parts
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"))
        });
        if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
            if !plain_form_post {
                response.set_status(status);
            }
        }
        AppError { kind, message: err.to_string(), field }
    }
}
