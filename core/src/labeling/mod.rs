//! Labeling: consolidating several workers' annotations into one label per item, and
//! measuring how much the workers agree. (Labeling jobs, queues and the labeler UI
//! build on these.)

pub mod agreement;
pub mod consolidation;
