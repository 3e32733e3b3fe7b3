//! Access administration as the UI and the REST API perform it: each operation
//! authorizes the acting principal, acts, and notes a summary for the audit log, so
//! the two front ends cannot drift apart.

use serde::Serialize;

use super::store::{self, GroupInfo, Holder, PolicyInfo, PolicyVersion};
use crate::accounts::{self, NewUser, User};
use crate::authz::{authorize, Action, Principal, Resource};
use crate::db::Db;
use crate::{CoreError, CoreResult};

/// A user with their direct policies and groups.
#[derive(Debug, Clone, Serialize)]
pub struct UserRecord {
    pub user: User,
    pub policies: Vec<String>,
    pub groups: Vec<String>,
}

/// A group with its members and policies.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDetail {
    pub group: GroupInfo,
    pub members: Vec<String>,
    pub policies: Vec<String>,
}

/// A policy with its default document, versions and holders.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDetail {
    pub policy: PolicyInfo,
    pub document: String,
    pub versions: Vec<PolicyVersion>,
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// A user by id or username.
pub async fn find_user(db: &Db, key: &str) -> CoreResult<User> {
    match accounts::find_by_username(db, key).await? {
        Some(user) => Ok(user),
        None => accounts::get_user(db, key).await,
    }
}

/// The user `key` names, once `p` may do `action` on them. A caller who may not gets
/// 403 whether or not the user exists, so refusals reveal no usernames.
async fn target_user(db: &Db, p: &Principal, key: &str, action: Action) -> CoreResult<User> {
    match find_user(db, key).await {
        Ok(user) => {
            authorize(p, action, &Resource::user(&user.username))?;
            Ok(user)
        }
        Err(CoreError::NotFound(what)) => {
            authorize(p, action, &Resource::user(&key.trim().to_ascii_lowercase()))?;
            Err(CoreError::NotFound(what))
        }
        Err(other) => Err(other),
    }
}

/// Joining a group grants its policies, so it needs what attaching them would:
/// `iam:AttachPolicy` on each.
async fn authorize_joining(db: &Db, p: &Principal, group: &str) -> CoreResult<()> {
    authorize(p, Action::UpdateGroup, &Resource::group(group))?;
    let info = store::get_group(db, group).await?;
    for policy in store::group_policies(db, &info.id).await? {
        authorize(p, Action::AttachPolicy, &Resource::policy(&policy))?;
    }
    Ok(())
}

async fn record(db: &Db, user: User) -> CoreResult<UserRecord> {
    let policies = store::user_policies(db, &user.id).await?;
    let groups = store::user_groups(db, &user.id).await?;
    Ok(UserRecord { user, policies, groups })
}

pub async fn list_users(db: &Db, p: &Principal) -> CoreResult<Vec<UserRecord>> {
    authorize(p, Action::ListUsers, &Resource::all_users())?;
    let mut attachments = store::all_user_attachments(db).await?;
    Ok(accounts::list_users(db)
        .await?
        .into_iter()
        .map(|user| {
            let (policies, groups) = attachments.remove(&user.id).unwrap_or_default();
            UserRecord { user, policies, groups }
        })
        .collect())
}

pub async fn get_user(db: &Db, p: &Principal, key: &str) -> CoreResult<UserRecord> {
    let user = target_user(db, p, key, Action::GetUser).await?;
    record(db, user).await
}

/// Creates a user; attaching policies and joining groups need their own permissions.
pub async fn create_user(db: &Db, p: &Principal, new: NewUser) -> CoreResult<UserRecord> {
    let username = accounts::normalize_username(&new.username)?;
    authorize(p, Action::CreateUser, &Resource::user(&username))?;
    for name in &new.policies {
        authorize(p, Action::AttachPolicy, &Resource::policy(name))?;
    }
    for name in &new.groups {
        authorize_joining(db, p, name).await.map_err(|e| match e {
            CoreError::NotFound(_) => CoreError::invalid("groups", format!("there is no group named {name}")),
            other => other,
        })?;
    }
    let (policies, groups) = (new.policies.clone(), new.groups.clone());
    let user = accounts::create_user(db, new).await?;
    p.note_change(format!("created user {} (policies: {policies:?}, groups: {groups:?})", user.username));
    record(db, user).await
}

pub async fn set_active(db: &Db, p: &Principal, key: &str, active: bool) -> CoreResult<UserRecord> {
    let target = target_user(db, p, key, Action::UpdateUser).await?;
    let user = accounts::set_active(db, &p.user, &target.id, active).await?;
    p.note_change(format!("{} {}", if active { "reactivated" } else { "deactivated" }, user.username));
    record(db, user).await
}

pub async fn reset_password(db: &Db, p: &Principal, key: &str, password: &str) -> CoreResult<()> {
    let target = target_user(db, p, key, Action::ResetPassword).await?;
    accounts::reset_password(db, &target.id, password).await?;
    p.note_change(format!("reset the password of {}", target.username));
    Ok(())
}

/// Attaching needs `iam:AttachPolicy` on the policy and `iam:UpdateUser` on the user.
pub async fn set_user_policy(db: &Db, p: &Principal, key: &str, policy: &str, attach: bool) -> CoreResult<UserRecord> {
    let target = target_user(db, p, key, Action::UpdateUser).await?;
    let action = if attach { Action::AttachPolicy } else { Action::DetachPolicy };
    authorize(p, action, &Resource::policy(policy))?;
    store::set_attachment(db, Holder::User(&target.id), policy, attach).await?;
    p.note_change(format!("{} {policy} {} user {}", verb(attach), prep(attach), target.username));
    record(db, target).await
}

fn verb(attach: bool) -> &'static str {
    if attach {
        "attached"
    } else {
        "detached"
    }
}

fn prep(attach: bool) -> &'static str {
    if attach {
        "to"
    } else {
        "from"
    }
}

pub async fn list_groups(db: &Db, p: &Principal) -> CoreResult<Vec<GroupInfo>> {
    authorize(p, Action::ListGroups, &Resource::group("*"))?;
    store::list_groups(db).await
}

pub async fn get_group(db: &Db, p: &Principal, name: &str) -> CoreResult<GroupDetail> {
    authorize(p, Action::GetGroup, &Resource::group(name))?;
    group_detail(db, name).await
}

async fn group_detail(db: &Db, name: &str) -> CoreResult<GroupDetail> {
    let group = store::get_group(db, name).await?;
    let members = store::group_members(db, &group.id).await?;
    let policies = store::group_policies(db, &group.id).await?;
    Ok(GroupDetail { group, members, policies })
}

pub async fn create_group(db: &Db, p: &Principal, name: &str, description: &str) -> CoreResult<GroupDetail> {
    authorize(p, Action::CreateGroup, &Resource::group(&store::validate_name("name", name)?))?;
    let group = store::create_group(db, name, description).await?;
    p.note_change(format!("created group {}", group.name));
    group_detail(db, &group.name).await
}

pub async fn update_group(db: &Db, p: &Principal, name: &str, description: &str) -> CoreResult<GroupDetail> {
    authorize(p, Action::UpdateGroup, &Resource::group(name))?;
    store::update_group(db, name, description).await?;
    p.note_change(format!("changed the description of group {name}"));
    group_detail(db, name).await
}

pub async fn delete_group(db: &Db, p: &Principal, name: &str) -> CoreResult<()> {
    authorize(p, Action::DeleteGroup, &Resource::group(name))?;
    store::delete_group(db, name).await?;
    p.note_change(format!("deleted group {name}"));
    Ok(())
}

pub async fn set_member(db: &Db, p: &Principal, group: &str, user_key: &str, member: bool) -> CoreResult<GroupDetail> {
    if member {
        authorize_joining(db, p, group).await?;
    } else {
        authorize(p, Action::UpdateGroup, &Resource::group(group))?;
    }
    let info = store::get_group(db, group).await?;
    let user = find_user(db, user_key)
        .await
        .map_err(|_| CoreError::invalid("username", format!("there is no user {user_key}")))?;
    store::set_membership(db, &info.id, &user.id, member).await?;
    p.note_change(format!(
        "{} {} {} group {group}",
        if member { "added" } else { "removed" },
        user.username,
        prep(member)
    ));
    group_detail(db, group).await
}

/// Attaching needs `iam:AttachPolicy` on the policy and `iam:UpdateGroup` on the group.
pub async fn set_group_policy(
    db: &Db,
    p: &Principal,
    group: &str,
    policy: &str,
    attach: bool,
) -> CoreResult<GroupDetail> {
    // The group is what changes, so it is checked first: the audit event names it.
    authorize(p, Action::UpdateGroup, &Resource::group(group))?;
    let action = if attach { Action::AttachPolicy } else { Action::DetachPolicy };
    authorize(p, action, &Resource::policy(policy))?;
    let info = store::get_group(db, group).await?;
    store::set_attachment(db, Holder::Group(&info.id), policy, attach).await?;
    p.note_change(format!("{} {policy} {} group {group}", verb(attach), prep(attach)));
    group_detail(db, group).await
}

pub async fn list_policies(db: &Db, p: &Principal) -> CoreResult<Vec<PolicyInfo>> {
    authorize(p, Action::ListPolicies, &Resource::policy("*"))?;
    store::list_policies(db).await
}

pub async fn get_policy(db: &Db, p: &Principal, name: &str) -> CoreResult<PolicyDetail> {
    authorize(p, Action::GetPolicy, &Resource::policy(name))?;
    policy_detail(db, name).await
}

async fn policy_detail(db: &Db, name: &str) -> CoreResult<PolicyDetail> {
    let policy = store::get_policy(db, name).await?;
    let versions = store::list_versions(db, &policy).await?;
    let document = versions
        .iter()
        .find(|v| v.version == policy.default_version)
        .map(|v| v.document.clone())
        .ok_or(CoreError::NotFound("policy version"))?;
    let (users, groups) = store::policy_holders(db, &policy.id).await?;
    Ok(PolicyDetail { policy, document, versions, users, groups })
}

pub async fn create_policy(
    db: &Db,
    p: &Principal,
    name: &str,
    description: &str,
    document: &str,
) -> CoreResult<PolicyDetail> {
    authorize(p, Action::CreatePolicy, &Resource::policy(&store::validate_name("name", name)?))?;
    let policy = store::create_policy(db, &p.user.username, name, description, document).await?;
    p.note_change(format!("created policy {}", policy.name));
    policy_detail(db, &policy.name).await
}

/// Adds a version (when `document` is given) and/or changes the description.
pub async fn update_policy(
    db: &Db,
    p: &Principal,
    name: &str,
    document: Option<&str>,
    description: Option<&str>,
) -> CoreResult<PolicyDetail> {
    authorize(p, Action::UpdatePolicy, &Resource::policy(name))?;
    let policy = store::update_policy(db, &p.user.username, name, document, description).await?;
    p.note_change(match document {
        Some(_) => format!("saved version {} of policy {name}", policy.default_version),
        None => format!("changed the description of policy {name}"),
    });
    policy_detail(db, name).await
}

pub async fn set_default_version(db: &Db, p: &Principal, name: &str, version: i64) -> CoreResult<PolicyDetail> {
    authorize(p, Action::UpdatePolicy, &Resource::policy(name))?;
    store::set_default_version(db, name, version).await?;
    p.note_change(format!("made version {version} the default of policy {name}"));
    policy_detail(db, name).await
}

pub async fn delete_policy(db: &Db, p: &Principal, name: &str) -> CoreResult<()> {
    authorize(p, Action::DeletePolicy, &Resource::policy(name))?;
    store::delete_policy(db, name).await?;
    p.note_change(format!("deleted policy {name}"));
    Ok(())
}

/// Runs the policy simulator for another (or the same) user.
pub async fn simulate(
    db: &Db,
    p: &Principal,
    request: &super::simulate::SimulationRequest,
) -> CoreResult<super::simulate::Simulation> {
    let username = accounts::normalize_username(&request.username)?;
    authorize(p, Action::SimulatePolicy, &Resource::user(&username))?;
    super::simulate::simulate(db, request).await
}

/// Lists audit events.
pub async fn audit_events(db: &Db, p: &Principal, query: &crate::audit::Query) -> CoreResult<crate::audit::Page> {
    authorize(p, Action::ListAuditEvents, &Resource::new("atelier:audit:log"))?;
    crate::audit::list(db, query).await
}

/// What [`recover_administrator`] did.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub user: User,
    /// The new password, to be shown once.
    pub password: String,
    /// Set when the user still cannot administer access after the recovery: an explicit
    /// Deny in another of their policies wins over AdministratorAccess. Says which
    /// statement, so the operator can remove it.
    pub still_denied: Option<String>,
}

/// Restores `username` as an administrator from the server's machine (`atelier admin
/// recover`): reactivates the account, attaches AdministratorAccess directly, ends its
/// sessions and sets a new random password, which is returned to be shown once.
///
/// There is no principal to authorize: whoever runs this holds the server's database
/// settings, and so already has every right a policy could grant. It is the way back
/// when no administrator can sign in; the change is audited under `operator`.
pub async fn recover_administrator(db: &Db, username: &str) -> CoreResult<Recovery> {
    let user = accounts::find_by_username(db, username)
        .await?
        .ok_or_else(|| CoreError::invalid("user", format!("there is no user named {}", username.trim())))?;
    let password = accounts::random_secret(18);
    let hash = accounts::hash_password(password.clone()).await?;
    store::restore_administrator(db, &user.id, &user.username, &hash).await?;
    crate::audit::record_or_log(
        db,
        crate::audit::NewEvent {
            principal: "operator".into(),
            action: Action::AttachPolicy.name().to_string(),
            resource: Resource::user(&user.username).to_string(),
            allowed: true,
            summary: format!(
                "atelier admin recover: reactivated {}, attached {} and set a new password",
                user.username,
                accounts::ADMIN_POLICY
            ),
            ..Default::default()
        },
    )
    .await;
    tracing::warn!(user = %user.username, "administrator recovered from the command line");
    // Attaching AdministratorAccess is what every other repair needs; an explicit Deny
    // elsewhere would still refuse it, and the operator must hear so.
    let check = super::simulate::SimulationRequest {
        username: user.username.clone(),
        action: Action::AttachPolicy.name().to_string(),
        resource: Resource::policy(accounts::ADMIN_POLICY).to_string(),
        context: Vec::new(),
    };
    let simulation = super::simulate::simulate(db, &check).await?;
    let still_denied = (!simulation.allowed).then_some(simulation.explanation);
    Ok(Recovery { user: accounts::get_user(db, &user.id).await?, password, still_denied })
}
