//! Identity and access management: the catalogue of actions, IAM-style policy
//! documents, their evaluation (Cedar underneath), groups and attachments.
//!
//! The single question every route asks — may this principal do this action on this
//! resource? — is [`crate::authz::authorize`]; this module supplies its answer.

pub mod admin;
pub mod builtin;
pub mod catalogue;
pub mod document;
pub mod engine;
pub mod simulate;
pub mod store;

pub use catalogue::Action;
pub use document::{Effect, PolicyDocument};
pub use engine::{CompiledPolicies, Evaluation, Facts, Outcome, StatementRef};
