//! A model group's deployment rule: "deploy each newly approved version to endpoint X".
//! When a version of the group becomes Approved, the endpoint's first variant is
//! updated to it (blue/green, as any update); when the version that endpoint serves is
//! rejected, it goes back to the group's latest earlier Approved version. Both act as
//! the rule's author, with their permissions, and leave events on the endpoint.

use atelier_protocol::endpoints::{EndpointConfig, VariantSpec};
use atelier_protocol::models::APPROVED;

use super::{add_event, endpoint_for};
use crate::authz::{Action, Principal};
use crate::db::Db;
use crate::models::group_for;
use crate::{CoreError, CoreResult};

/// Sets (or with `None` removes) the group's rule. Needs `models:UpdateModelGroup` on
/// the group and `endpoints:UpdateEndpoint` on the endpoint.
pub async fn set(db: &Db, p: &Principal, group: &str, endpoint: Option<&str>) -> CoreResult<Option<String>> {
    let g = group_for(db, p, group, Action::UpdateModelGroup).await?;
    if let Some(endpoint) = endpoint {
        endpoint_for(db, p, endpoint, Action::UpdateEndpoint).await.map_err(|e| match e {
            CoreError::NotFound(_) => CoreError::invalid("endpoint", format!("there is no endpoint {endpoint}")),
            other => other,
        })?;
    }
    sqlx::query("UPDATE model_groups SET deploy_endpoint = $1, deploy_rule_by = $2 WHERE id = $3")
        .bind(endpoint)
        .bind(endpoint.map(|_| p.user.username.clone()))
        .bind(&g.id)
        .execute(&db.pool)
        .await?;
    p.note_change(match endpoint {
        Some(e) => format!("model group {group}: deploy each newly approved version to endpoint {e}"),
        None => format!("model group {group}: deployment rule removed"),
    });
    Ok(endpoint.map(str::to_string))
}

/// The group's rule: the endpoint it deploys to.
pub async fn get(db: &Db, p: &Principal, group: &str) -> CoreResult<Option<String>> {
    let g = group_for(db, p, group, Action::GetModelGroup).await?;
    let (endpoint,): (Option<String>,) = sqlx::query_as("SELECT deploy_endpoint FROM model_groups WHERE id = $1")
        .bind(&g.id)
        .fetch_one(&db.pool)
        .await?;
    Ok(endpoint)
}

/// Whether the caller may change the group's rule (as far as the group goes: the
/// endpoint is checked when one is named).
pub async fn may_change(db: &Db, p: &Principal, group: &str) -> CoreResult<bool> {
    let g = crate::models::find_group(db, group).await?;
    Ok(p.can(Action::UpdateModelGroup, &crate::models::group_resource(&g)))
}

/// Called after a version's status changed: deploys a newly Approved version, or
/// rolls the endpoint back from a rejected one it serves.
pub async fn on_status_change(db: &Db, group_id: &str, version: i64, status: &str) {
    if let Err(err) = apply(db, group_id, version, status).await {
        tracing::warn!(error = %err, "the deployment rule could not be applied");
        let endpoint: Option<(String,)> = sqlx::query_as(
            "SELECT e.id FROM model_groups g JOIN endpoints e ON e.name = g.deploy_endpoint WHERE g.id = $1",
        )
        .bind(group_id)
        .fetch_optional(&db.pool)
        .await
        .ok()
        .flatten();
        if let Some((id,)) = endpoint {
            let _ = add_event(&db.pool, &id, &format!("the deployment rule could not act on version {version}: {err}"))
                .await;
        }
    }
}

async fn apply(db: &Db, group_id: &str, version: i64, status: &str) -> CoreResult<()> {
    let rule: Option<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT name, deploy_endpoint, deploy_rule_by FROM model_groups WHERE id = $1")
            .bind(group_id)
            .fetch_optional(&db.pool)
            .await?;
    let Some((group, Some(endpoint), Some(author))) = rule else { return Ok(()) };
    let p = super::acting_as(db, &author).await?;
    let current = super::get(db, &p, &endpoint).await?;
    let Some(first) = current.pending_variants.first().or(current.variants.first()).cloned() else { return Ok(()) };
    let target = if status == APPROVED {
        if first.model_group == group && first.model_version == version {
            return Ok(());
        }
        version
    } else {
        // Only a rejection of what the endpoint serves or is deploying moves it.
        if !(first.model_group == group && first.model_version == version) {
            return Ok(());
        }
        let earlier: Option<(i64,)> = sqlx::query_as(
            "SELECT version FROM model_versions WHERE group_id = $1 AND status = $2 AND version < $3 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(group_id)
        .bind(APPROVED)
        .bind(version)
        .fetch_optional(&db.pool)
        .await?;
        match earlier {
            Some((v,)) => v,
            None => {
                let message =
                    format!("{group} v{version} was rejected, and no earlier version is Approved to go back to");
                let e = super::find(db, &endpoint).await?;
                return add_event(&db.pool, &e.id, &message).await;
            }
        }
    };
    let mut variants: Vec<VariantSpec> = current.variants.iter().map(|v| v.spec()).collect();
    if let Some(v) = variants.first_mut() {
        v.model_group = group.clone();
        v.model_version = target;
    }
    super::update(db, &p, &endpoint, &EndpointConfig { variants }).await?;
    let why = if status == APPROVED {
        format!("{group} v{version} was approved")
    } else {
        format!("{group} v{version} was rejected; going back to v{target}")
    };
    // A change made for a user, without a request of theirs to audit it: the event names
    // the rule, so an auditor can tell it from the user's own clicks.
    let event = crate::audit::NewEvent {
        principal: author.clone(),
        action: "endpoints:UpdateEndpoint".into(),
        resource: format!("atelier:endpoints:endpoint/{endpoint}"),
        allowed: true,
        summary: format!("by the deployment rule of model group {group}: {why}"),
        ..Default::default()
    };
    crate::audit::record_or_log(db, event).await;
    let e = super::find(db, &endpoint).await?;
    add_event(&db.pool, &e.id, &format!("deployment rule of {group} (by {author}): {why}")).await
}
