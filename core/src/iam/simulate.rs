//! The policy simulator: what would a user's policies decide for an action on a
//! resource, with given condition keys, and which statement decided it.

use serde::{Deserialize, Serialize};

use super::catalogue::{self, Action, KeyType};
use super::engine::{Evaluation, Outcome};
use super::store;
use crate::accounts;
use crate::authz::{Credential, Principal, Resource};
use crate::db::Db;
use crate::{CoreError, CoreResult};

/// A simulated request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimulationRequest {
    pub username: String,
    /// `service:Verb`.
    pub action: String,
    /// A resource name, such as `atelier:models:group/fraud/version/3`.
    pub resource: String,
    /// Condition key values, such as `atelier:ResourceCreator` or `atelier:SourceIp`;
    /// `atelier:CurrentTime` takes RFC 3339. Keys not given take the values a real
    /// request by the user would have.
    #[serde(default)]
    pub context: Vec<(String, String)>,
}

/// The simulator's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    pub allowed: bool,
    pub evaluation: Evaluation,
    /// One sentence saying what decided.
    pub explanation: String,
    /// The policies that were evaluated.
    pub policies: Vec<String>,
}

/// Runs a simulation.
pub async fn simulate(db: &Db, request: &SimulationRequest) -> CoreResult<Simulation> {
    let user = accounts::find_by_username(db, &request.username)
        .await?
        .ok_or_else(|| CoreError::invalid("username", format!("there is no user named {}", request.username)))?;
    let action = Action::from_name(request.action.trim())
        .ok_or_else(|| CoreError::invalid("action", format!("{} is not an action in the catalogue", request.action)))?;
    let resource_name = request.resource.trim();
    if resource_name.is_empty() || resource_name.len() > 1024 {
        return Err(CoreError::invalid("resource", "give a resource name such as atelier:models:group/fraud"));
    }
    let compiled = store::compile_for_user(db, &user).await?;
    let policies = store::applicable_policies(db, &user.id).await?.into_iter().map(|(name, _)| name).collect();
    let principal = Principal::new(user.clone(), Credential::Session, compiled.into(), None, None);
    let mut facts = principal.facts(&Resource::new(resource_name));
    for (key, value) in &request.context {
        let (key, key_type) = catalogue::condition_key(key.trim())
            .ok_or_else(|| CoreError::invalid("context", format!("unknown condition key {key}")))?;
        match key_type {
            KeyType::Date => {
                let t = time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc3339)
                    .map_err(|_| CoreError::invalid("context", format!("{key}: {value} is not an RFC 3339 time")))?;
                facts.set_time(key, t.unix_timestamp());
            }
            KeyType::Bool => {
                facts.set(key, value.trim().to_ascii_lowercase());
            }
            KeyType::String => {
                facts.set(key, value.clone());
            }
        }
    }
    let evaluation = principal.policies.evaluate(action, &facts)?;
    let allowed = user.is_active() && evaluation.allowed();
    let explanation = explain(&evaluation, action, resource_name, user.is_active());
    Ok(Simulation { allowed, evaluation, explanation, policies })
}

fn explain(evaluation: &Evaluation, action: Action, resource: &str, active: bool) -> String {
    let statements = |e: &Evaluation| {
        e.decided_by
            .iter()
            .map(|s| match &s.sid {
                Some(sid) => format!("statement {} (Sid {sid}) of {}", s.index, s.policy),
                None => format!("statement {} of {}", s.index, s.policy),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let verdict = match evaluation.outcome {
        Outcome::Allow => format!("Allowed by {}.", statements(evaluation)),
        Outcome::ExplicitDeny => format!("Explicitly denied by {}.", statements(evaluation)),
        Outcome::ImplicitDeny => format!("Implicitly denied: no statement allows {action} on {resource}."),
    };
    if active {
        verdict
    } else {
        format!("Denied: the user is deactivated. (Their policies alone: {verdict})")
    }
}
