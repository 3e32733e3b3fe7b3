//! Approval decisions on model versions, the timeline they leave, and the reviewer
//! inbox.
//!
//! States: `PendingManualApproval` -> `Approved` once the group's quorum of distinct
//! reviewers approved (one approval by default), or `Rejected` (a comment is
//! required). An Approved version may be rejected later (revoked); a Rejected one may be
//! approved again, with a comment saying what changed, which starts a new round of
//! approvals. Who may decide is policy (`models:UpdateModelApprovalStatus` on the
//! version; the built-in Reviewer policy denies it on one's own versions).
//!
//! Concurrency: every status change bumps `status_seq`, and a decision updates the
//! row only at the sequence it read, so of two reviewers deciding at once one wins and
//! the other gets a conflict naming what happened. Approvals toward a quorum first
//! touch the row the same way, which also serializes them (two approvals racing for
//! the last place cannot both count only themselves).

use atelier_protocol::models::{Decision, PendingVersion, VersionEvent, APPROVED, PENDING, REJECTED};

use super::versions::{self, VersionRow, VERSION_SELECT};
use crate::authz::{authorize, Action, Principal, Resource};
use crate::compute::now_ms;
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Applies a reviewer's decision; returns the version's new status.
pub async fn decide(db: &Db, p: &Principal, group: &str, version: i64, decision: &Decision) -> CoreResult<String> {
    let row = versions::get_for(db, p, group, version, Action::UpdateModelApprovalStatus).await?;
    let comment = decision.comment.trim();
    if comment.chars().count() > 5000 {
        return Err(CoreError::invalid("comment", "comment must be at most 5000 characters"));
    }
    if let Some(expected) = &decision.expected_status {
        if *expected != row.status {
            return Err(changed(db, &row).await);
        }
    }
    let target = decision.status.as_str();
    match (target, row.status.as_str()) {
        (APPROVED | REJECTED, current) if current == target => {
            return Err(CoreError::Conflict(format!("version {version} of {group} is already {current}")))
        }
        (REJECTED, _) if comment.is_empty() => {
            return Err(CoreError::invalid("comment", "say why the version is rejected: a comment is required"))
        }
        (APPROVED, REJECTED) if comment.is_empty() => {
            return Err(CoreError::invalid(
                "comment",
                "this version was rejected: approving it needs a comment saying what changed",
            ))
        }
        (APPROVED | REJECTED, _) => {}
        (other, _) => {
            return Err(CoreError::invalid("status", format!("status must be Approved or Rejected, not {other:?}")))
        }
    }

    let mut tx = db.pool.begin().await?;
    // Take the row at the state we read (and, on PostgreSQL, its lock until commit).
    let round = if row.status == REJECTED { row.approval_round + 1 } else { row.approval_round };
    let touched =
        sqlx::query("UPDATE model_versions SET updated_at = $1, approval_round = $2 WHERE id = $3 AND status_seq = $4")
            .bind(now())
            .bind(round)
            .bind(&row.id)
            .bind(row.status_seq)
            .execute(&mut *tx)
            .await?;
    if touched.rows_affected() == 0 {
        drop(tx);
        return Err(changed(db, &row).await);
    }
    let new_status = if target == REJECTED {
        REJECTED.to_string()
    } else {
        // An approval: count this round's approvals, this one included.
        let voted = sqlx::query(
            "INSERT INTO model_version_events (version_id, round, ts_ms, actor, kind, status, comment) \
             VALUES ($1, $2, $3, $4, 'approve', $5, $6)",
        )
        .bind(&row.id)
        .bind(round)
        .bind(now_ms())
        .bind(&p.user.username)
        .bind(PENDING)
        .bind(comment)
        .execute(&mut *tx)
        .await;
        if let Err(e) = voted {
            return Err(match CoreError::from(e) {
                CoreError::Conflict(_) => {
                    CoreError::Conflict(format!("you have already approved version {version} of {group}"))
                }
                other => other,
            });
        }
        let approvals: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM model_version_events WHERE version_id = $1 AND round = $2 AND kind = 'approve'",
        )
        .bind(&row.id)
        .bind(round)
        .fetch_one(&mut *tx)
        .await?;
        if approvals >= row.required_approvals {
            APPROVED.to_string()
        } else {
            PENDING.to_string()
        }
    };
    if new_status != row.status {
        sqlx::query("UPDATE model_versions SET status = $1, status_seq = status_seq + 1 WHERE id = $2")
            .bind(&new_status)
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
    }
    if target == REJECTED {
        sqlx::query(
            "INSERT INTO model_version_events (version_id, round, ts_ms, actor, kind, status, comment) \
             VALUES ($1, $2, $3, $4, 'reject', $5, $6)",
        )
        .bind(&row.id)
        .bind(round)
        .bind(now_ms())
        .bind(&p.user.username)
        .bind(REJECTED)
        .bind(comment)
        .execute(&mut *tx)
        .await
        .map_err(|e| match CoreError::from(e) {
            CoreError::Conflict(_) => {
                CoreError::Conflict(format!("you have already rejected version {version} of {group}"))
            }
            other => other,
        })?;
    } else {
        // The approval's event records the status it led to.
        sqlx::query(
            "UPDATE model_version_events SET status = $1 WHERE version_id = $2 AND round = $3 AND actor = $4 AND kind = 'approve'",
        )
        .bind(&new_status)
        .bind(&row.id)
        .bind(round)
        .bind(&p.user.username)
        .execute(&mut *tx)
        .await?;
    }
    if new_status != row.status {
        let payload = serde_json::json!({
            "group": row.group_name, "version": row.version, "from": row.status, "to": new_status,
            "by": p.user.username, "comment": comment,
        });
        super::webhooks::enqueue(&mut tx, &row.group_id, super::webhooks::STATUS_CHANGED, &payload).await?;
    }
    tx.commit().await?;
    if new_status != row.status {
        crate::endpoints::rules::on_status_change(db, &row.group_id, row.version, &new_status).await;
    }
    let verb = if target == APPROVED { "approved" } else { "rejected" };
    p.note_change(format!("{verb} version {version} of model group {group}; now {new_status}"));
    Ok(new_status)
}

/// The conflict a stale decision gets: what the version is now, and who made it so.
async fn changed(db: &Db, row: &VersionRow) -> CoreError {
    let last: Option<(String, String)> = sqlx::query_as(
        "SELECT actor, status FROM model_version_events WHERE version_id = $1 ORDER BY ts_ms DESC LIMIT 1",
    )
    .bind(&row.id)
    .fetch_optional(&db.pool)
    .await
    .ok()
    .flatten();
    let now = match last {
        Some((actor, status)) => format!("it is now {status} after a decision by {actor}"),
        None => "it changed".to_string(),
    };
    CoreError::Conflict(format!(
        "version {} of {} changed while you were deciding: {now}. Reload to see it.",
        row.version, row.group_name
    ))
}

/// A version's events, oldest first. Decisions on a version are serialized, so events
/// in the same millisecond are put in the only order they can have happened in: by
/// round, registration before votes, votes that left the version pending before the
/// one that decided it.
pub async fn timeline(db: &Db, p: &Principal, group: &str, version: i64) -> CoreResult<Vec<VersionEvent>> {
    let row = versions::get_for(db, p, group, version, Action::GetModelVersion).await?;
    let events: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT ts_ms, actor, kind, status, comment FROM model_version_events WHERE version_id = $1 \
         ORDER BY ts_ms, round, CASE kind WHEN 'registered' THEN 0 WHEN 'approve' THEN 1 ELSE 2 END, \
         CASE status WHEN 'PendingManualApproval' THEN 0 ELSE 1 END, actor",
    )
    .bind(&row.id)
    .fetch_all(&db.pool)
    .await?;
    Ok(events
        .into_iter()
        .map(|(ts_ms, actor, kind, status, comment)| VersionEvent { ts_ms, actor, kind, status, comment })
        .collect())
}

/// Pending versions the caller may decide on, oldest first: the reviewer inbox. A
/// version the caller already approved in its current round is not theirs to decide.
pub async fn inbox(db: &Db, p: &Principal) -> CoreResult<Vec<PendingVersion>> {
    // Listing every group's versions, or a say on some group's (a reviewer scoped to
    // a few groups sees theirs), opens the inbox; its rows are then checked one by one.
    let every = Resource::new("atelier:models:group/*");
    if !p.can(Action::ListModelVersions, &every) && !reviews_some_group(db, p).await? {
        authorize(p, Action::ListModelVersions, &every)?;
    }
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "{VERSION_SELECT} WHERE v.status = $1 AND NOT EXISTS (SELECT 1 FROM model_version_events e \
         WHERE e.version_id = v.id AND e.round = v.approval_round AND e.kind = 'approve' AND e.actor = $2) \
         ORDER BY v.created_at, v.version"
    ))
    .bind(PENDING)
    .bind(&p.user.username)
    .fetch_all(&db.pool)
    .await?;
    let mine: Vec<VersionRow> =
        rows.into_iter().filter(|r| p.can(Action::UpdateModelApprovalStatus, &versions::row_resource(r))).collect();
    Ok(versions::wires(db, mine)
        .await?
        .into_iter()
        .map(|v| PendingVersion {
            group: v.group,
            version: v.version,
            created_by: v.created_by,
            created_at: v.created_at,
            approvals: v.approvals,
            required_approvals: v.required_approvals,
            metrics: v.metrics,
            training_job: v.training_job,
        })
        .collect())
}

/// Whether the caller may decide on the versions of at least one group.
async fn reviews_some_group(db: &Db, p: &Principal) -> CoreResult<bool> {
    let groups: Vec<(String,)> = sqlx::query_as("SELECT name FROM model_groups").fetch_all(&db.pool).await?;
    Ok(groups.iter().any(|(g,)| p.can(Action::UpdateModelApprovalStatus, &versions::resource(g, 0, ""))))
}
