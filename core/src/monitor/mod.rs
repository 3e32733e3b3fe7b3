//! Model monitoring of endpoints. The statistics (profiling, drift, constraints) are
//! pure and live in `atelier_protocol::monitor`, shared with the UI; this module keeps
//! baselines, schedules and runs.

pub mod images;
pub mod runs;
