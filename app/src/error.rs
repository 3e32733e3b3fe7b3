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
        let (kind, field) = match &err {
            E::Invalid { field, .. } | E::Malformed { field, .. } => (ErrorKind::Invalid, Some(field.to_string())),
            E::Unauthenticated(_) => (ErrorKind::Unauthenticated, None),
            E::Forbidden(_) => (ErrorKind::Forbidden, None),
            E::NotFound(_) => (ErrorKind::NotFound, None),
            E::Conflict(_) => (ErrorKind::Conflict, None),
            E::TooLarge(_) => (ErrorKind::Invalid, None),
            E::TooManyAttempts { .. } => (ErrorKind::TooManyRequests, None),
            E::Upstream { .. } => (ErrorKind::Transport, None),
            E::Internal(source) => {
                tracing::error!(error = %source, "server function failed");
                (ErrorKind::Internal, None)
            }
        };
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
