//! The model registry: model groups holding numbered versions, reviewer approvals with
//! a timeline, aliases and tags. The REST API, the UI and the MLflow-compatible API
//! all go through these functions.

pub mod approvals;
pub mod versions;
pub mod webhooks;

use std::collections::BTreeMap;

use atelier_protocol::models::{ModelGroup as GroupView, APPROVED};
use sqlx::Row;

use crate::authz::{authorize, Action, Principal, Resource};
use crate::db::Db;
use crate::iam::store::validate_name;
use crate::{now, CoreError, CoreResult};

/// A model group's record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    pub required_approvals: i64,
    pub tags: String,
    pub updated_at: i64,
}

const GROUP_COLUMNS: &str = "id, name, description, created_by, created_at, required_approvals, tags, updated_at";

impl ModelGroup {
    pub fn tag_map(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.tags).unwrap_or_default()
    }
}

/// The resource name of a model group; its tags are `atelier:ResourceTag/<key>`.
pub fn group_resource(group: &ModelGroup) -> Resource {
    let mut r = Resource::new(format!("atelier:models:group/{}", group.name)).created_by(group.created_by.clone());
    for (k, v) in group.tag_map() {
        r = r.tagged(k, v);
    }
    r
}

fn named(name: &str) -> Resource {
    Resource::new(format!("atelier:models:group/{name}"))
}

/// A group by name, unchecked (callers authorize).
pub(crate) async fn find_group(db: &Db, name: &str) -> CoreResult<ModelGroup> {
    let group: Option<ModelGroup> =
        sqlx::query_as(&format!("SELECT {GROUP_COLUMNS} FROM model_groups WHERE name = $1"))
            .bind(name)
            .fetch_optional(&db.pool)
            .await?;
    group.ok_or(CoreError::NotFound("model group"))
}

/// A group for someone who may do `action` on it: asked by name first, so a refusal
/// does not tell whether the group exists.
pub(crate) async fn group_for(db: &Db, p: &Principal, name: &str, action: Action) -> CoreResult<ModelGroup> {
    authorize(p, action, &named(name))?;
    let group = find_group(db, name).await?;
    authorize(p, action, &group_resource(&group))?;
    Ok(group)
}

/// Groups in wire form, with their latest and approved versions and aliases.
async fn views(db: &Db, groups: Vec<ModelGroup>) -> CoreResult<Vec<GroupView>> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let list = versions::placeholders(groups.len());
    let sql1 = format!(
        "SELECT group_id, CAST(COUNT(*) AS BIGINT) AS n, CAST(MAX(version) AS BIGINT) AS latest, \
         CAST(MAX(CASE WHEN status = '{APPROVED}' THEN version END) AS BIGINT) AS approved \
         FROM model_versions WHERE group_id IN ({list}) GROUP BY group_id"
    );
    let mut q = sqlx::query(&sql1);
    for g in &groups {
        q = q.bind(&g.id);
    }
    let mut counts = std::collections::HashMap::new();
    for row in q.fetch_all(&db.pool).await? {
        let id: String = row.try_get("group_id")?;
        counts.insert(
            id,
            (
                row.try_get::<i64, _>("n")?,
                row.try_get::<Option<i64>, _>("latest")?,
                row.try_get::<Option<i64>, _>("approved")?,
            ),
        );
    }
    let sql2 = format!(
        "SELECT a.group_id, a.alias, v.version FROM model_aliases a JOIN model_versions v ON v.id = a.version_id \
         WHERE a.group_id IN ({list})"
    );
    let mut q = sqlx::query(&sql2);
    for g in &groups {
        q = q.bind(&g.id);
    }
    let mut aliases: std::collections::HashMap<String, BTreeMap<String, i64>> = std::collections::HashMap::new();
    for row in q.fetch_all(&db.pool).await? {
        aliases.entry(row.try_get("group_id")?).or_default().insert(row.try_get("alias")?, row.try_get("version")?);
    }
    Ok(groups
        .into_iter()
        .map(|g| {
            let (version_count, latest_version, approved_version) =
                counts.get(&g.id).copied().unwrap_or((0, None, None));
            GroupView {
                tags: g.tag_map(),
                aliases: aliases.remove(&g.id).unwrap_or_default(),
                name: g.name,
                description: g.description,
                required_approvals: g.required_approvals,
                created_by: g.created_by,
                created_at: g.created_at,
                updated_at: g.updated_at.max(g.created_at),
                version_count,
                latest_version,
                approved_version,
            }
        })
        .collect())
}

/// Model groups the principal may see, by name.
pub async fn list_groups(db: &Db, p: &Principal) -> CoreResult<Vec<GroupView>> {
    authorize(p, Action::ListModelGroups, &named("*"))?;
    let groups: Vec<ModelGroup> =
        sqlx::query_as(&format!("SELECT {GROUP_COLUMNS} FROM model_groups ORDER BY name")).fetch_all(&db.pool).await?;
    // Listing is allowed; each group is shown only if it may be read.
    let visible = groups.into_iter().filter(|g| p.can(Action::GetModelGroup, &group_resource(g))).collect();
    views(db, visible).await
}

/// A model group by name.
pub async fn get_group(db: &Db, p: &Principal, name: &str) -> CoreResult<GroupView> {
    authorize(p, Action::GetModelGroup, &named(name))?;
    let group = find_group(db, name).await?;
    authorize(p, Action::GetModelGroup, &group_resource(&group))?;
    let mut v = views(db, vec![group]).await?;
    v.pop().ok_or(CoreError::NotFound("model group"))
}

/// What a group is created with.
#[derive(Debug, Clone, Default)]
pub struct NewGroup<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub tags: BTreeMap<String, String>,
    pub required_approvals: Option<i64>,
}

fn validate_quorum(n: i64) -> CoreResult<i64> {
    if !(1..=10).contains(&n) {
        return Err(CoreError::invalid("required_approvals", "required_approvals must be between 1 and 10"));
    }
    Ok(n)
}

/// Creates a model group.
pub async fn create_group(db: &Db, p: &Principal, new: NewGroup<'_>) -> CoreResult<GroupView> {
    let name = validate_name("name", new.name)?;
    authorize(p, Action::CreateModelGroup, &named(&name))?;
    let description = versions::validate_description(new.description)?;
    versions::validate_tags(&new.tags)?;
    let required = validate_quorum(new.required_approvals.unwrap_or(1))?;
    let at = now();
    sqlx::query(
        "INSERT INTO model_groups (id, name, description, created_by, created_at, required_approvals, tags, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $5)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&name)
    .bind(&description)
    .bind(&p.user.username)
    .bind(at)
    .bind(required)
    .bind(serde_json::to_string(&new.tags).map_err(CoreError::internal)?)
    .execute(&db.pool)
    .await
    .map_err(|e| match CoreError::from(e) {
        CoreError::Conflict(_) => CoreError::Conflict(format!("a model group named {name} already exists")),
        other => other,
    })?;
    p.note_change(format!("created model group {name}"));
    let group = find_group(db, &name).await?;
    let mut v = views(db, vec![group]).await?;
    v.pop().ok_or(CoreError::NotFound("model group"))
}

/// Changes a group: what is given of its name, description, tags and quorum, in one
/// write (a refused part leaves the group as it was).
pub async fn update_group(
    db: &Db,
    p: &Principal,
    name: &str,
    new_name: Option<&str>,
    description: Option<&str>,
    tags: Option<&BTreeMap<String, String>>,
    required_approvals: Option<i64>,
) -> CoreResult<GroupView> {
    let group = group_for(db, p, name, Action::UpdateModelGroup).await?;
    let new_name = new_name.filter(|n| *n != name).map(|n| validate_name("new_name", n)).transpose()?;
    if let Some(new_name) = &new_name {
        authorize(p, Action::CreateModelGroup, &named(new_name))?;
    }
    let description = description.map(versions::validate_description).transpose()?;
    if let Some(t) = tags {
        versions::validate_tags(t)?;
    }
    let tags = tags.map(|t| serde_json::to_string(t).map_err(CoreError::internal)).transpose()?;
    let required = required_approvals.map(validate_quorum).transpose()?;
    if required.is_some() {
        // Governance, not housekeeping: a separate action, so builders cannot lower it.
        authorize(p, Action::UpdateApprovalRequirements, &group_resource(&group))?;
    }
    // Only what was given is written, so concurrent edits of other fields survive.
    sqlx::query(
        "UPDATE model_groups SET name = COALESCE($1, name), description = COALESCE($2, description), \
         tags = COALESCE($3, tags), required_approvals = COALESCE($4, required_approvals), updated_at = $5 WHERE id = $6",
    )
    .bind(new_name.as_deref())
    .bind(description)
    .bind(tags)
    .bind(required)
    .bind(now())
    .bind(&group.id)
    .execute(&db.pool)
    .await
    .map_err(|e| match (CoreError::from(e), &new_name) {
        (CoreError::Conflict(_), Some(new_name)) => {
            CoreError::Conflict(format!("a model group named {new_name} already exists"))
        }
        (other, _) => other,
    })?;
    match &new_name {
        Some(new_name) => p.note_change(format!("updated model group {name}, renamed to {new_name}")),
        None => p.note_change(format!("updated model group {name}")),
    }
    get_group(db, p, new_name.as_deref().unwrap_or(name)).await
}

/// Sets (`Some`) or removes (`None`) one tag of a group.
pub async fn set_group_tag(db: &Db, p: &Principal, name: &str, key: &str, value: Option<&str>) -> CoreResult<()> {
    authorize(p, Action::UpdateModelGroup, &named(name))?;
    let group = find_group(db, name).await?;
    authorize(p, Action::UpdateModelGroup, &group_resource(&group))?;
    let mut tags = group.tag_map();
    match value {
        Some(v) => {
            versions::validate_tag(key, v)?;
            tags.insert(key.to_string(), v.to_string());
        }
        None => {
            if tags.remove(key).is_none() {
                return Err(CoreError::NotFound("tag"));
            }
        }
    }
    versions::validate_tags(&tags)?;
    let updated = sqlx::query("UPDATE model_groups SET tags = $1, updated_at = $2 WHERE id = $3 AND tags = $4")
        .bind(serde_json::to_string(&tags).map_err(CoreError::internal)?)
        .bind(now())
        .bind(&group.id)
        .bind(&group.tags)
        .execute(&db.pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(CoreError::Conflict(format!("the tags of model group {name} changed meanwhile; retry")));
    }
    p.note_change(format!("{} tag {key} of model group {name}", if value.is_some() { "set" } else { "deleted" }));
    Ok(())
}

/// Renames a group (MLflow's `rename`); allowed when the caller may update it under
/// its old name and create one under the new.
pub async fn rename_group(db: &Db, p: &Principal, name: &str, new_name: &str) -> CoreResult<GroupView> {
    update_group(db, p, name, Some(new_name), None, None, None).await
}

/// Deletes a group and its versions.
pub async fn delete_group(db: &Db, p: &Principal, name: &str) -> CoreResult<()> {
    authorize(p, Action::DeleteModelGroup, &named(name))?;
    let group = find_group(db, name).await?;
    authorize(p, Action::DeleteModelGroup, &group_resource(&group))?;
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM model_versions WHERE group_id = $1").bind(&group.id).fetch_all(&db.pool).await?;
    for (id,) in &ids {
        let serving = crate::endpoints::serving(db, id).await?;
        if !serving.is_empty() {
            return Err(CoreError::Conflict(format!(
                "model group {name} has a version served by endpoint {}; delete or update the endpoint first",
                serving.join(", ")
            )));
        }
    }
    for (id,) in &ids {
        crate::endpoints::forget_version(db, id).await?;
    }
    let mut tx = db.pool.begin().await?;
    // Explicit, not only by cascade: SQLite enforces foreign keys per connection.
    sqlx::query("DELETE FROM model_aliases WHERE group_id = $1").bind(&group.id).execute(&mut *tx).await?;
    sqlx::query(
        "DELETE FROM model_version_events WHERE version_id IN (SELECT id FROM model_versions WHERE group_id = $1)",
    )
    .bind(&group.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM model_versions WHERE group_id = $1").bind(&group.id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM model_groups WHERE id = $1").bind(&group.id).execute(&mut *tx).await?;
    tx.commit().await?;
    p.note_change(format!("deleted model group {name}"));
    Ok(())
}
