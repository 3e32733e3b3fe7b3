//! The Atelier server: configuration, startup, HTTP routing, middleware and the REST API.
//! Domain rules live in `atelier-core`; pages and server functions in `app`.

pub mod agent;
pub mod api;
pub mod assets;
pub mod cli;
pub mod compute;
pub mod config;
pub mod demo;
pub mod endpoints;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod mlflow;
pub mod notebooks;
pub mod router;
pub mod state;
pub mod webhooks;

pub use router::app;
pub use state::AppState;
