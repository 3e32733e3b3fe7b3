//! Model monitoring of endpoints: baselines, schedules and runs ([`runs`]), and the
//! statistics they compute ([`stats`]: profiling, drift, constraints), which are pure.
//! The types the API shows are `atelier_protocol::monitor`'s.

pub mod images;
pub mod runs;
pub mod stats;
