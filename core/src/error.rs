//! The core's one error type. Each variant maps to one kind of answer a client gets;
//! `Internal` carries details for the log only and is never shown to a client.

use std::fmt;

/// Result alias used across the core.
pub type CoreResult<T> = Result<T, CoreError>;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Input failed validation; `field` names the offending input.
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    /// A submitted document (such as a policy) is malformed; the message points at the
    /// offending part.
    #[error("{message}")]
    Malformed { field: &'static str, message: String },
    /// No valid credentials were presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The principal is known but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist (or the principal may not know it does).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with what is stored (a duplicate name, a stale version).
    #[error("{0}")]
    Conflict(String),
    /// The input is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// Too many attempts; retry after this many seconds.
    #[error("Too many failed sign-in attempts. Try again in {retry_after} seconds.")]
    TooManyAttempts { retry_after: i64 },
    /// A model server (or the fleet of them) failed to answer an invocation: 502, 503
    /// or 504, with what happened.
    #[error("{message}")]
    Upstream { status: u16, message: String },
    /// Anything else: a bug or an unavailable dependency.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CoreError {
    /// A validation error for one field.
    pub fn invalid(field: &'static str, message: impl fmt::Display) -> Self {
        CoreError::Invalid { field, message: message.to_string() }
    }

    /// A malformed-document error for one field.
    pub fn malformed(field: &'static str, message: impl fmt::Display) -> Self {
        CoreError::Malformed { field, message: message.to_string() }
    }

    /// The HTTP status that answers this error, the same for the REST API and for
    /// server functions (kept as a number so the core needs no HTTP crate).
    pub fn http_status(&self) -> u16 {
        match self {
            CoreError::Invalid { .. } => 422,
            CoreError::Malformed { .. } => 400,
            CoreError::Unauthenticated(_) => 401,
            CoreError::Forbidden(_) => 403,
            CoreError::NotFound(_) => 404,
            CoreError::Conflict(_) => 409,
            CoreError::TooLarge(_) => 413,
            CoreError::TooManyAttempts { .. } => 429,
            CoreError::Upstream { status, .. } => *status,
            CoreError::Internal(_) => 500,
        }
    }

    /// The stable machine-readable code of this error, the one vocabulary of every edge:
    /// the REST API's `error.code` and the server functions' error kind come from it.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Invalid { .. } => "invalid",
            CoreError::Malformed { .. } => "malformed",
            CoreError::Unauthenticated(_) => "unauthenticated",
            CoreError::Forbidden(_) => "forbidden",
            CoreError::NotFound(_) => "not_found",
            CoreError::Conflict(_) => "conflict",
            CoreError::TooLarge(_) => "too_large",
            CoreError::TooManyAttempts { .. } => "too_many_attempts",
            CoreError::Upstream { .. } => "model_unavailable",
            CoreError::Internal(_) => "internal",
        }
    }

    /// The input field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            CoreError::Invalid { field, .. } | CoreError::Malformed { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Wraps an unexpected failure.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        CoreError::Internal(Box::new(err))
    }
}

impl From<sqlx::Error> for CoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => CoreError::NotFound("record"),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                CoreError::Conflict("a record with that name already exists".into())
            }
            _ => CoreError::internal(err),
        }
    }
}

impl From<tokio::task::JoinError> for CoreError {
    fn from(err: tokio::task::JoinError) -> Self {
        CoreError::internal(err)
    }
}
