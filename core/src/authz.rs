//! The one access-control check: may this principal do this action on this resource?
//!
//! Every HTTP route and server function that is not on the reviewed public list calls
//! [`authorize`] before acting. The answer comes from the principal's policies
//! (compiled once per IAM generation, see `iam::store`), narrowed by the API token's
//! inline policy when the request carries one. Each decision is noted on the principal
//! so the server's middleware can write the audit log once the response is known.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::accounts::User;
use crate::iam::{CompiledPolicies, Evaluation, Facts};
use crate::{now, CoreError, CoreResult};

pub use crate::iam::Action;

/// Who is acting, how they proved it, and the policies that govern them.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub via: Credential,
    pub policies: Arc<CompiledPolicies>,
    /// The API token's inline policy, if it has one: the token may do only what both
    /// this and the user's policies allow.
    pub token_policies: Option<Arc<CompiledPolicies>>,
    pub source_ip: Option<String>,
    trail: Arc<Mutex<Vec<Noted>>>,
}

/// How a principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A browser session cookie.
    Session,
    /// An API token, by token id.
    ApiToken(String),
}

/// A decision noted during a request, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    pub action: Action,
    pub resource: String,
    pub allowed: bool,
    pub summary: String,
}

/// A resource being acted on: its name and the attributes conditions may test.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    /// Username of whoever created it (`atelier:ResourceCreator`).
    pub creator: Option<String>,
    /// `atelier:ResourceTag/<key>`.
    pub tags: Vec<(String, String)>,
    /// `atelier:WorkTeam`, for labeling work.
    pub work_team: Option<String>,
    /// `atelier:NotebookRole`: the acting user's role on a notebook.
    pub notebook_role: Option<String>,
}

impl Resource {
    /// A resource by name, such as `atelier:models:group/fraud`.
    pub fn new(name: impl Into<String>) -> Self {
        Resource { name: name.into(), ..Default::default() }
    }
    /// A user account.
    pub fn user(username: &str) -> Self {
        Resource::new(format!("atelier:iam:user/{username}"))
    }
    /// The collection of all users (for listing and creating).
    pub fn all_users() -> Self {
        Resource::new("atelier:iam:user/*")
    }
    pub fn group(name: &str) -> Self {
        Resource::new(format!("atelier:iam:group/{name}"))
    }
    pub fn policy(name: &str) -> Self {
        Resource::new(format!("atelier:iam:policy/{name}"))
    }
    pub fn created_by(mut self, username: impl Into<String>) -> Self {
        self.creator = Some(username.into());
        self
    }
    pub fn tagged(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }
    pub fn for_team(mut self, team: impl Into<String>) -> Self {
        self.work_team = Some(team.into());
        self
    }
    pub fn with_notebook_role(mut self, role: impl Into<String>) -> Self {
        self.notebook_role = Some(role.into());
        self
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The combined answer for a principal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    /// What the user's policies decided.
    pub user: Evaluation,
    /// What the API token's inline policy decided, when it has one.
    pub token: Option<Evaluation>,
}

impl Principal {
    pub fn new(
        user: User,
        via: Credential,
        policies: Arc<CompiledPolicies>,
        token_policies: Option<Arc<CompiledPolicies>>,
        source_ip: Option<String>,
    ) -> Self {
        Principal { user, via, policies, token_policies, source_ip, trail: Arc::default() }
    }

    /// The condition keys this principal brings to every request.
    pub fn facts(&self, resource: &Resource) -> Facts {
        let mut facts = resource_facts(resource);
        facts
            .set("atelier:username", self.user.username.clone())
            .set("atelier:userid", self.user.id.clone())
            .set("atelier:ViaApiToken", matches!(self.via, Credential::ApiToken(_)).to_string())
            .set_time("atelier:CurrentTime", now());
        if let Some(ip) = &self.source_ip {
            facts.set("atelier:SourceIp", ip.clone());
        }
        facts
    }

    /// Evaluates without enforcing or auditing (the simulator and UI hints use this).
    pub fn decide(&self, action: Action, resource: &Resource) -> CoreResult<Decision> {
        let facts = self.facts(resource);
        let user = self.policies.evaluate(action, &facts)?;
        let token = match &self.token_policies {
            Some(t) => Some(t.evaluate(action, &facts)?),
            None => None,
        };
        let allowed = self.user.is_active() && user.allowed() && token.as_ref().is_none_or(Evaluation::allowed);
        Ok(Decision { allowed, user, token })
    }

    /// Refuses when the request came with an API token narrowed by an inline policy:
    /// such a token may not mint tokens, which would escape its narrowing.
    pub fn refuse_if_narrowed(&self, what: &str) -> CoreResult<()> {
        match self.token_policies {
            Some(_) => Err(CoreError::Forbidden(format!("an API token narrowed by an inline policy cannot {what}"))),
            None => Ok(()),
        }
    }

    /// Whether the action would be allowed; for hiding what a user cannot do. Never
    /// a substitute for [`authorize`].
    pub fn can(&self, action: Action, resource: &Resource) -> bool {
        self.decide(action, resource).is_ok_and(|d| d.allowed)
    }

    /// Describes the change this request made, for the audit log (for example
    /// "attached DataScientist to user alice"); it goes with the first write the
    /// request was allowed, which is the event the log records for the change.
    pub fn note_change(&self, summary: impl Into<String>) {
        let mut trail = self.lock();
        if let Some(first) = trail.iter_mut().find(|n| n.allowed && n.action.is_write()) {
            first.summary = summary.into();
        }
    }

    /// Removes and returns the decisions noted so far.
    pub fn take_noted(&self) -> Vec<Noted> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Noted>> {
        self.trail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The condition keys a resource brings.
pub fn resource_facts(resource: &Resource) -> Facts {
    let mut facts = Facts::new(resource.name.clone());
    if let Some(c) = &resource.creator {
        facts.set("atelier:ResourceCreator", c.clone());
    }
    if let Some(t) = &resource.work_team {
        facts.set("atelier:WorkTeam", t.clone());
    }
    if let Some(r) = &resource.notebook_role {
        facts.set("atelier:NotebookRole", r.clone());
    }
    for (k, v) in &resource.tags {
        facts.set(format!("atelier:ResourceTag/{k}"), v.clone());
    }
    facts
}

/// Allows or refuses `action` on `resource` for `principal`. Denials and allowed
/// changes are noted for the audit log.
pub fn authorize(principal: &Principal, action: Action, resource: &Resource) -> CoreResult<()> {
    let decision = principal.decide(action, resource)?;
    // Allowed reads and data-plane writes are not audited; other allowed writes and
    // every denial are.
    if !decision.allowed || (action.is_write() && !action.is_data_plane()) {
        principal.lock().push(Noted {
            action,
            resource: resource.name.clone(),
            allowed: decision.allowed,
            summary: String::new(),
        });
    }
    if decision.allowed {
        Ok(())
    } else {
        tracing::info!(user = %principal.user.username, %action, %resource, "access denied");
        Err(CoreError::Forbidden(format!(
            "{} is not allowed to perform {action} on {resource}",
            principal.user.username
        )))
    }
}
