//! Atelier's control-plane core: everything the server decides that is not HTTP or UI.
//!
//! The `server` crate (REST API, middleware) and the `app` crate's server functions both
//! call into these modules, so a rule such as "deactivated users cannot act" or "who may
//! create a token for whom" is written once.

pub mod accounts;
pub mod artifacts;
pub mod audit;
pub mod authz;
pub mod compute;
pub mod datasets;
pub mod db;
pub mod endpoints;
pub mod error;
pub mod iam;
pub mod labeling;
pub mod models;
pub mod monitor;
pub mod notebooks;
pub mod outbound;
pub mod retention;
pub mod sessions;
pub mod throttle;
pub mod tokens;

pub use error::{CoreError, CoreResult};

/// Seconds since the Unix epoch: the one time representation stored in the database.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
