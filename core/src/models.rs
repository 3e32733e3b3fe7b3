//! The model registry: model groups (versions, approval and the MLflow-compatible API
//! build on these).

use serde::Serialize;

use crate::authz::{authorize, Action, Principal, Resource};
use crate::db::Db;
use crate::iam::store::validate_name;
use crate::{now, CoreError, CoreResult};

/// A model group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ModelGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
}

/// The resource name of a model group.
pub fn resource(group: &ModelGroup) -> Resource {
    Resource::new(format!("atelier:models:group/{}", group.name)).created_by(group.created_by.clone())
}

/// Model groups the principal may see.
pub async fn list_groups(db: &Db, p: &Principal) -> CoreResult<Vec<ModelGroup>> {
    authorize(p, Action::ListModelGroups, &Resource::new("atelier:models:group/*"))?;
    let groups: Vec<ModelGroup> =
        sqlx::query_as("SELECT id, name, description, created_by, created_at FROM model_groups ORDER BY name")
            .fetch_all(&db.pool)
            .await?;
    // Listing is allowed; each group is shown only if it may be read.
    Ok(groups.into_iter().filter(|g| p.can(Action::GetModelGroup, &resource(g))).collect())
}

/// A model group by name.
pub async fn get_group(db: &Db, p: &Principal, name: &str) -> CoreResult<ModelGroup> {
    authorize(p, Action::GetModelGroup, &Resource::new(format!("atelier:models:group/{name}")))?;
    let group: Option<ModelGroup> =
        sqlx::query_as("SELECT id, name, description, created_by, created_at FROM model_groups WHERE name = $1")
            .bind(name)
            .fetch_optional(&db.pool)
            .await?;
    let group = group.ok_or(CoreError::NotFound("model group"))?;
    authorize(p, Action::GetModelGroup, &resource(&group))?;
    Ok(group)
}

/// Creates a model group.
pub async fn create_group(db: &Db, p: &Principal, name: &str, description: &str) -> CoreResult<ModelGroup> {
    let name = validate_name("name", name)?;
    authorize(p, Action::CreateModelGroup, &Resource::new(format!("atelier:models:group/{name}")))?;
    let description = description.trim();
    if description.chars().count() > 1000 {
        return Err(CoreError::invalid("description", "description must be at most 1000 characters"));
    }
    let group = ModelGroup {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        description: description.to_string(),
        created_by: p.user.username.clone(),
        created_at: now(),
    };
    sqlx::query("INSERT INTO model_groups (id, name, description, created_by, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&group.id)
        .bind(&group.name)
        .bind(&group.description)
        .bind(&group.created_by)
        .bind(group.created_at)
        .execute(&db.pool)
        .await
        .map_err(|e| match CoreError::from(e) {
            CoreError::Conflict(_) => CoreError::Conflict(format!("a model group named {} already exists", group.name)),
            other => other,
        })?;
    p.note_change(format!("created model group {}", group.name));
    Ok(group)
}
