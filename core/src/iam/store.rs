//! Groups, policies, policy versions and attachments in the database, and the
//! per-principal compiled policies built from them.
//!
//! Every change bumps `iam_state.generation` in the same transaction; a cached
//! compilation is reused only while the generation it was built at is current, so a
//! change made through any server replica takes effect on the next request everywhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sqlx::{Any, Transaction};

use super::builtin::{self, BUILTINS, SELF_SERVICE};
use super::document::{self, PolicyDocument};
use super::engine::{CompiledPolicies, Vars};
use crate::accounts::User;
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// A policy as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PolicyInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub builtin: i64,
    pub default_version: i64,
    /// Users and groups it is attached to.
    pub attachments: i64,
    pub updated_at: i64,
}

/// One version of a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PolicyVersion {
    pub version: i64,
    pub document: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A group as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub members: i64,
}

/// Checks a policy or group name: IAM's rules, 1-128 of letters, digits and `+=,.@_-`.
pub fn validate_name(field: &'static str, name: &str) -> CoreResult<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err(CoreError::invalid(field, format!("{field} must be 1-128 letters, digits or + = , . @ _ -")));
    }
    Ok(name.to_string())
}

fn validate_description(description: &str) -> CoreResult<String> {
    let d = description.trim();
    if d.chars().count() > 1000 {
        return Err(CoreError::invalid("description", "description must be at most 1000 characters"));
    }
    Ok(d.to_string())
}

async fn bump(tx: &mut Transaction<'static, Any>) -> CoreResult<()> {
    sqlx::query("UPDATE iam_state SET generation = generation + 1 WHERE id = 1").execute(&mut **tx).await?;
    Ok(())
}

/// Active users holding AdministratorAccess, directly or through a group.
const ACTIVE_ADMINISTRATORS: &str = "SELECT COUNT(*) FROM users u WHERE u.active = 1 AND (\
     EXISTS (SELECT 1 FROM user_policies up WHERE up.user_id = u.id AND up.policy_id = $1) \
     OR EXISTS (SELECT 1 FROM group_members m JOIN group_policies gp ON gp.group_id = m.group_id \
                WHERE m.user_id = u.id AND gp.policy_id = $1))";

/// Whether, after the change this transaction has made, some active user still holds
/// AdministratorAccess. Without one nobody could manage users or policies again, so
/// changes that would remove the last one are refused (see [`last_administrator`]).
///
/// It first writes the IAM generation row: every change that can remove an
/// administrator goes through here, so on PostgreSQL two concurrent removals (of two
/// different administrators) queue on that row, and the second one counts after the
/// first committed instead of each seeing the other administrator still in place.
/// SQLite runs one writing transaction at a time anyway.
pub(crate) async fn administrator_remains(tx: &mut Transaction<'static, Any>) -> CoreResult<bool> {
    bump(tx).await?;
    let admins: i64 = sqlx::query_scalar(ACTIVE_ADMINISTRATORS)
        .bind(builtin::id(crate::accounts::ADMIN_POLICY))
        .fetch_one(&mut **tx)
        .await?;
    Ok(admins > 0)
}

/// The refusal of a change that would leave no active administrator; `change` says
/// what was asked ("detaching AdministratorAccess from alice").
pub fn last_administrator(change: &str) -> CoreError {
    let admin = crate::accounts::ADMIN_POLICY;
    CoreError::Conflict(format!(
        "refused: {change} would leave no active user holding {admin}, and nobody could manage users, \
         groups or policies again. Give {admin} to another active user first (an operator can also run \
         `atelier admin recover --user NAME` on the server's machine)."
    ))
}

/// A user's name, for messages.
async fn username_in(tx: &mut Transaction<'static, Any>, user_id: &str) -> CoreResult<String> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut **tx).await?;
    Ok(name.unwrap_or_else(|| user_id.to_string()))
}

/// A group's name, for messages.
async fn group_name_in(tx: &mut Transaction<'static, Any>, group_id: &str) -> CoreResult<String> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT name FROM groups WHERE id = $1").bind(group_id).fetch_optional(&mut **tx).await?;
    Ok(name.unwrap_or_else(|| group_id.to_string()))
}

/// The current IAM generation.
pub async fn generation(db: &Db) -> CoreResult<i64> {
    Ok(sqlx::query_scalar("SELECT generation FROM iam_state WHERE id = 1").fetch_one(&db.pool).await?)
}

/// Gives every built-in policy its row (run at start-up, after migrations).
pub async fn ensure_builtins(db: &Db) -> CoreResult<()> {
    for b in BUILTINS {
        sqlx::query(
            "INSERT INTO policies (id, name, description, builtin, default_version, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, 0, $4, $4) ON CONFLICT (id) DO UPDATE SET description = $3",
        )
        .bind(builtin::id(b.name))
        .bind(b.name)
        .bind(b.description)
        .bind(now())
        .execute(&db.pool)
        .await?;
    }
    Ok(())
}

const POLICY_INFO: &str = "SELECT p.id, p.name, p.description, p.builtin, p.default_version, \
     (SELECT COUNT(*) FROM user_policies up WHERE up.policy_id = p.id) \
     + (SELECT COUNT(*) FROM group_policies gp WHERE gp.policy_id = p.id) AS attachments, p.updated_at FROM policies p";

/// Every policy, built-in first.
pub async fn list_policies(db: &Db) -> CoreResult<Vec<PolicyInfo>> {
    Ok(sqlx::query_as(&format!("{POLICY_INFO} ORDER BY p.builtin DESC, p.name")).fetch_all(&db.pool).await?)
}

/// A policy by name.
pub async fn get_policy(db: &Db, name: &str) -> CoreResult<PolicyInfo> {
    sqlx::query_as(&format!("{POLICY_INFO} WHERE p.name = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(CoreError::NotFound("policy"))
}

/// A policy's versions, newest first. A built-in policy has one, version 0, from code.
pub async fn list_versions(db: &Db, policy: &PolicyInfo) -> CoreResult<Vec<PolicyVersion>> {
    if let Some(b) = builtin::find(&policy.name).filter(|_| policy.builtin != 0) {
        return Ok(vec![PolicyVersion {
            version: 0,
            document: b.document.to_string(),
            created_at: 0,
            created_by: "atelier".into(),
        }]);
    }
    Ok(sqlx::query_as(
        "SELECT version, document, created_at, created_by FROM policy_versions WHERE policy_id = $1 ORDER BY version DESC",
    )
    .bind(&policy.id)
    .fetch_all(&db.pool)
    .await?)
}

/// The document of a policy's default version.
pub async fn default_document(db: &Db, policy: &PolicyInfo) -> CoreResult<String> {
    list_versions(db, policy)
        .await?
        .into_iter()
        .find(|v| v.version == policy.default_version)
        .map(|v| v.document)
        .ok_or(CoreError::NotFound("policy version"))
}

fn refuse_builtin(policy: &PolicyInfo) -> CoreResult<()> {
    if policy.builtin != 0 {
        return Err(CoreError::Conflict(format!("{} is a built-in policy and cannot be changed", policy.name)));
    }
    Ok(())
}

/// Creates a customer-managed policy with its first version.
pub async fn create_policy(
    db: &Db,
    actor: &str,
    name: &str,
    description: &str,
    document: &str,
) -> CoreResult<PolicyInfo> {
    let name = validate_name("name", name)?;
    let description = validate_description(description)?;
    document::parse(document)?;
    let id = uuid::Uuid::new_v4().to_string();
    let at = now();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO policies (id, name, description, builtin, default_version, created_at, updated_at) \
         VALUES ($1, $2, $3, 0, 1, $4, $4)",
    )
    .bind(&id)
    .bind(&name)
    .bind(&description)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(|e| match CoreError::from(e) {
        CoreError::Conflict(_) => CoreError::Conflict(format!("a policy named {name} already exists")),
        other => other,
    })?;
    insert_version(&mut tx, &id, 1, document, actor).await?;
    bump(&mut tx).await?;
    tx.commit().await?;
    get_policy(db, &name).await
}

async fn insert_version(
    tx: &mut Transaction<'static, Any>,
    policy_id: &str,
    version: i64,
    document: &str,
    actor: &str,
) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO policy_versions (policy_id, version, document, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(policy_id)
    .bind(version)
    .bind(document)
    .bind(now())
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds a version (which becomes the default) and, if given, a new description.
/// An invalid document changes nothing.
pub async fn update_policy(
    db: &Db,
    actor: &str,
    name: &str,
    document: Option<&str>,
    description: Option<&str>,
) -> CoreResult<PolicyInfo> {
    let policy = get_policy(db, name).await?;
    refuse_builtin(&policy)?;
    if let Some(d) = document {
        document::parse(d)?;
    }
    let description = description.map(validate_description).transpose()?;
    let mut tx = db.pool.begin().await?;
    if let Some(d) = document {
        // Numbered in the insert itself, so concurrent saves cannot pick the same number.
        sqlx::query(
            "INSERT INTO policy_versions (policy_id, version, document, created_at, created_by) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4 FROM policy_versions WHERE policy_id = $1",
        )
        .bind(&policy.id)
        .bind(d)
        .bind(now())
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE policies SET default_version = (SELECT MAX(version) FROM policy_versions WHERE policy_id = $1) \
             WHERE id = $1",
        )
        .bind(&policy.id)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(d) = description {
        sqlx::query("UPDATE policies SET description = $1 WHERE id = $2")
            .bind(d)
            .bind(&policy.id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE policies SET updated_at = $1 WHERE id = $2")
        .bind(now())
        .bind(&policy.id)
        .execute(&mut *tx)
        .await?;
    bump(&mut tx).await?;
    tx.commit().await?;
    get_policy(db, name).await
}

/// Makes an earlier (or later) version the default: one-click rollback.
pub async fn set_default_version(db: &Db, name: &str, version: i64) -> CoreResult<PolicyInfo> {
    let policy = get_policy(db, name).await?;
    refuse_builtin(&policy)?;
    let mut tx = db.pool.begin().await?;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT version FROM policy_versions WHERE policy_id = $1 AND version = $2")
            .bind(&policy.id)
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(CoreError::NotFound("policy version"));
    }
    sqlx::query("UPDATE policies SET default_version = $1, updated_at = $2 WHERE id = $3")
        .bind(version)
        .bind(now())
        .bind(&policy.id)
        .execute(&mut *tx)
        .await?;
    bump(&mut tx).await?;
    tx.commit().await?;
    get_policy(db, name).await
}

/// Deletes a customer-managed policy that is attached to nobody.
pub async fn delete_policy(db: &Db, name: &str) -> CoreResult<()> {
    let policy = get_policy(db, name).await?;
    refuse_builtin(&policy)?;
    if policy.attachments > 0 {
        return Err(CoreError::Conflict(format!(
            "{name} is attached to {} users or groups; detach it first",
            policy.attachments
        )));
    }
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM policies WHERE id = $1").bind(&policy.id).execute(&mut *tx).await?;
    bump(&mut tx).await?;
    tx.commit()
        .await
        // A concurrent attachment makes the foreign key refuse the delete.
        .map_err(|e| match CoreError::from(e) {
            CoreError::Internal(_) => CoreError::Conflict(format!("{name} was attached meanwhile; detach it first")),
            other => other,
        })?;
    Ok(())
}

/// Who a policy is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    User(&'a str),
    Group(&'a str),
}

/// Attaches (or, with `attach` false, detaches) a policy. Idempotent.
pub async fn set_attachment(db: &Db, holder: Holder<'_>, policy_name: &str, attach: bool) -> CoreResult<()> {
    let policy = get_policy(db, policy_name).await?;
    let (table, column, id) = match holder {
        Holder::User(id) => ("user_policies", "user_id", id),
        Holder::Group(id) => ("group_policies", "group_id", id),
    };
    let mut tx = db.pool.begin().await?;
    let sql = if attach {
        format!("INSERT INTO {table} ({column}, policy_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
    } else {
        format!("DELETE FROM {table} WHERE {column} = $1 AND policy_id = $2")
    };
    sqlx::query(&sql).bind(id).bind(&policy.id).execute(&mut *tx).await?;
    bump(&mut tx).await?;
    if !attach && policy.id == builtin::id(crate::accounts::ADMIN_POLICY) && !administrator_remains(&mut tx).await? {
        let from = match holder {
            Holder::User(id) => format!("user {}", username_in(&mut tx, id).await?),
            Holder::Group(id) => format!("group {}", group_name_in(&mut tx, id).await?),
        };
        return Err(last_administrator(&format!("detaching {} from {from}", policy.name)));
    }
    tx.commit().await?;
    Ok(())
}

/// The one-column result of `sql` with `$1` bound to `id`.
async fn names(db: &Db, sql: &str, id: &str) -> CoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(sql).bind(id).fetch_all(&db.pool).await?)
}

/// Names of the policies attached to a user directly.
pub async fn user_policies(db: &Db, user_id: &str) -> CoreResult<Vec<String>> {
    names(
        db,
        "SELECT p.name FROM user_policies up JOIN policies p ON p.id = up.policy_id WHERE up.user_id = $1 ORDER BY p.name",
        user_id,
    )
    .await
}

/// Names of the groups a user belongs to.
pub async fn user_groups(db: &Db, user_id: &str) -> CoreResult<Vec<String>> {
    names(
        db,
        "SELECT g.name FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = $1 ORDER BY g.name",
        user_id,
    )
    .await
}

const GROUP_INFO: &str = "SELECT g.id, g.name, g.description, g.created_at, \
     (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id) AS members FROM groups g";

/// Every group.
pub async fn list_groups(db: &Db) -> CoreResult<Vec<GroupInfo>> {
    Ok(sqlx::query_as(&format!("{GROUP_INFO} ORDER BY g.name")).fetch_all(&db.pool).await?)
}

/// A group by name.
pub async fn get_group(db: &Db, name: &str) -> CoreResult<GroupInfo> {
    sqlx::query_as(&format!("{GROUP_INFO} WHERE g.name = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(CoreError::NotFound("group"))
}

/// Usernames of a group's members.
pub async fn group_members(db: &Db, group_id: &str) -> CoreResult<Vec<String>> {
    names(
        db,
        "SELECT u.username FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 ORDER BY u.username",
        group_id,
    )
    .await
}

/// Names of the policies attached to a group.
pub async fn group_policies(db: &Db, group_id: &str) -> CoreResult<Vec<String>> {
    names(
        db,
        "SELECT p.name FROM group_policies gp JOIN policies p ON p.id = gp.policy_id WHERE gp.group_id = $1 ORDER BY p.name",
        group_id,
    )
    .await
}

/// Creates a group.
pub async fn create_group(db: &Db, name: &str, description: &str) -> CoreResult<GroupInfo> {
    let name = validate_name("name", name)?;
    let description = validate_description(description)?;
    let mut tx = db.pool.begin().await?;
    sqlx::query("INSERT INTO groups (id, name, description, created_at) VALUES ($1, $2, $3, $4)")
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&name)
        .bind(&description)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| match CoreError::from(e) {
            CoreError::Conflict(_) => CoreError::Conflict(format!("a group named {name} already exists")),
            other => other,
        })?;
    bump(&mut tx).await?;
    tx.commit().await?;
    get_group(db, &name).await
}

/// Changes a group's description.
pub async fn update_group(db: &Db, name: &str, description: &str) -> CoreResult<GroupInfo> {
    let description = validate_description(description)?;
    let group = get_group(db, name).await?;
    sqlx::query("UPDATE groups SET description = $1 WHERE id = $2")
        .bind(description)
        .bind(&group.id)
        .execute(&db.pool)
        .await?;
    get_group(db, name).await
}

/// Deletes a group; its members lose the group's policies.
pub async fn delete_group(db: &Db, name: &str) -> CoreResult<()> {
    let group = get_group(db, name).await?;
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM groups WHERE id = $1").bind(&group.id).execute(&mut *tx).await?;
    bump(&mut tx).await?;
    if !administrator_remains(&mut tx).await? {
        return Err(last_administrator(&format!("deleting group {}", group.name)));
    }
    tx.commit().await?;
    Ok(())
}

/// Adds (or removes) a user to (from) a group. Idempotent.
pub async fn set_membership(db: &Db, group_id: &str, user_id: &str, member: bool) -> CoreResult<()> {
    let mut tx = db.pool.begin().await?;
    if member {
        sqlx::query(
            "INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(group_id)
        .bind(user_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if !administrator_remains(&mut tx).await? {
            let (user, group) = (username_in(&mut tx, user_id).await?, group_name_in(&mut tx, group_id).await?);
            return Err(last_administrator(&format!("removing {user} from group {group}")));
        }
    }
    bump(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Makes `user_id` an active administrator again with a new password hash: active,
/// AdministratorAccess attached directly (so no group change can take it away), its
/// old sessions ended and its sign-in failures forgotten, in one transaction.
pub(crate) async fn restore_administrator(
    db: &Db,
    user_id: &str,
    username: &str,
    password_hash: &str,
) -> CoreResult<()> {
    let mut tx = db.pool.begin().await?;
    sqlx::query("UPDATE users SET active = 1, password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(password_hash)
        .bind(now())
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO user_policies (user_id, policy_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .bind(builtin::id(crate::accounts::ADMIN_POLICY))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM sign_in_failures WHERE throttle_key = $1")
        .bind(format!("user:{username}"))
        .execute(&mut *tx)
        .await?;
    bump(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Attaches policies and adds groups for a new user, inside its creating transaction.
pub(crate) async fn grant_new_user(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    policies: &[String],
    groups: &[String],
) -> CoreResult<()> {
    for name in policies {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM policies WHERE name = $1").bind(name).fetch_optional(&mut **tx).await?;
        let id = id.ok_or_else(|| CoreError::invalid("policies", format!("there is no policy named {name}")))?;
        sqlx::query("INSERT INTO user_policies (user_id, policy_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    for name in groups {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM groups WHERE name = $1").bind(name).fetch_optional(&mut **tx).await?;
        let id = id.ok_or_else(|| CoreError::invalid("groups", format!("there is no group named {name}")))?;
        sqlx::query(
            "INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(user_id)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    }
    bump(tx).await
}

/// Every policy that applies to a user (attached directly, through a group, and
/// SelfService), with its parsed default document.
pub async fn applicable_policies(db: &Db, user_id: &str) -> CoreResult<Vec<(String, PolicyDocument)>> {
    let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT p.name, p.builtin, v.document FROM policies p \
         LEFT JOIN policy_versions v ON v.policy_id = p.id AND v.version = p.default_version \
         WHERE p.id IN (SELECT policy_id FROM user_policies WHERE user_id = $1 \
                        UNION SELECT gp.policy_id FROM group_policies gp \
                        JOIN group_members m ON m.group_id = gp.group_id WHERE m.user_id = $1) \
         ORDER BY p.name",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len() + 1);
    let self_service = builtin::find(SELF_SERVICE).map(|b| b.document).unwrap_or_default();
    out.push((SELF_SERVICE.to_string(), document::parse(self_service)?));
    for (name, is_builtin, stored) in rows {
        let text = match (is_builtin, stored) {
            (0, Some(text)) => text,
            _ => match builtin::find(&name) {
                Some(b) => b.document.to_string(),
                None => continue,
            },
        };
        if name == SELF_SERVICE {
            continue;
        }
        // A stored document that no longer validates (say, an action a later release
        // removed) must not lock its holders out of everything: it grants nothing.
        match document::parse(&text) {
            Ok(d) => out.push((name, d)),
            Err(e) => tracing::error!(policy = %name, error = %e, "stored policy no longer valid; ignored"),
        }
    }
    Ok(out)
}

/// Compiles the policies that apply to `user`.
pub async fn compile_for_user(db: &Db, user: &User) -> CoreResult<CompiledPolicies> {
    let policies = applicable_policies(db, &user.id).await?;
    let vars =
        Vars { username: user.username.clone(), userid: user.id.clone(), groups: user_groups(db, &user.id).await? };
    CompiledPolicies::compile(policies.iter().map(|(n, d)| (n.as_str(), d)), &vars)
}

/// Compiles an API token's inline policy for its user.
pub async fn compile_token_policy(db: &Db, user: &User, token_id: &str, text: &str) -> CoreResult<CompiledPolicies> {
    let document = document::parse(text)?;
    let vars =
        Vars { username: user.username.clone(), userid: user.id.clone(), groups: user_groups(db, &user.id).await? };
    CompiledPolicies::compile([(format!("token:{token_id}").as_str(), &document)], &vars)
}

/// Compiled policies per user (and per token), valid for one IAM generation.
#[derive(Debug, Default, Clone)]
pub struct PolicyCache {
    entries: Arc<Mutex<HashMap<String, Cached>>>,
}

/// A compilation and the IAM generation it was built at.
type Cached = (i64, Arc<CompiledPolicies>);

/// Entries kept before the cache starts over (a bound, not a tuning knob).
const CACHE_LIMIT: usize = 10_000;

impl PolicyCache {
    /// The compiled policies for `key` at `generation`, compiling them with `compile` when
    /// missing or stale.
    pub async fn get_or_compile<F, Fut>(
        &self,
        key: &str,
        generation: i64,
        compile: F,
    ) -> CoreResult<Arc<CompiledPolicies>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = CoreResult<CompiledPolicies>>,
    {
        if let Some((g, compiled)) = self.lock().get(key) {
            if *g == generation {
                return Ok(compiled.clone());
            }
        }
        let compiled = Arc::new(compile().await?);
        let mut entries = self.lock();
        if entries.len() >= CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(key.to_string(), (generation, compiled.clone()));
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Usernames and group names a policy is attached to.
pub async fn policy_holders(db: &Db, policy_id: &str) -> CoreResult<(Vec<String>, Vec<String>)> {
    let users = names(
        db,
        "SELECT u.username FROM user_policies up JOIN users u ON u.id = up.user_id WHERE up.policy_id = $1 ORDER BY u.username",
        policy_id,
    )
    .await?;
    let groups = names(
        db,
        "SELECT g.name FROM group_policies gp JOIN groups g ON g.id = gp.group_id WHERE gp.policy_id = $1 ORDER BY g.name",
        policy_id,
    )
    .await?;
    Ok((users, groups))
}

/// Directly attached policy names and group names of every user, by user id (for lists).
pub async fn all_user_attachments(db: &Db) -> CoreResult<HashMap<String, (Vec<String>, Vec<String>)>> {
    let mut out: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    let policies: Vec<(String, String)> = sqlx::query_as(
        "SELECT up.user_id, p.name FROM user_policies up JOIN policies p ON p.id = up.policy_id ORDER BY p.name",
    )
    .fetch_all(&db.pool)
    .await?;
    for (user, policy) in policies {
        out.entry(user).or_default().0.push(policy);
    }
    let groups: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.user_id, g.name FROM group_members m JOIN groups g ON g.id = m.group_id ORDER BY g.name",
    )
    .fetch_all(&db.pool)
    .await?;
    for (user, group) in groups {
        out.entry(user).or_default().1.push(group);
    }
    Ok(out)
}
