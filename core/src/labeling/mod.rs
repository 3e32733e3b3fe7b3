//! Labeling: jobs that hand a dataset's items to work teams (`jobs`, `tasks`),
//! consolidating several workers' annotations into one label per item
//! (`consolidation`), measuring how much they agree (`agreement`), and what a job
//! produces: the output manifest, the review queue and the quality report (`output`).

pub mod agreement;
pub mod consolidation;
pub mod jobs;
pub mod output;
pub mod tasks;

/// One submitted annotation: (item, worker, answer).
pub type Annotated = (i64, String, atelier_protocol::labeling::Answer);
