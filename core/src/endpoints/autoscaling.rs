//! Autoscaling: target tracking on invocations per instance and minute, between a
//! variant's minimum and maximum instance count, with cooldowns.
//!
//! The autoscaler only changes the serving configuration's `instance_count`; the
//! reconciler then starts or stops instances as for any other count. Every change is
//! a conditional update, so replicas running the autoscaler at once scale once.

use atelier_protocol::endpoints::{Autoscaling, IN_SERVICE};

use super::{add_event, endpoint_for, EndpointRow};
use crate::authz::{Action, Principal};
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// The most instances a variant may have (as for a configuration).
const MAX_INSTANCES: i64 = 20;

fn validate(a: &Autoscaling) -> CoreResult<()> {
    if !(1..=MAX_INSTANCES).contains(&a.min_instances) {
        return Err(CoreError::invalid("min_instances", format!("min_instances must be 1-{MAX_INSTANCES}")));
    }
    if !(a.min_instances..=MAX_INSTANCES).contains(&a.max_instances) {
        return Err(CoreError::invalid(
            "max_instances",
            format!("max_instances must be from min_instances ({}) to {MAX_INSTANCES}", a.min_instances),
        ));
    }
    let target = a.target_invocations_per_instance;
    if !(target.is_finite() && target > 0.0 && target <= 1_000_000.0) {
        return Err(CoreError::invalid(
            "target_invocations_per_instance",
            "target_invocations_per_instance must be a number above 0 and at most 1000000",
        ));
    }
    for (field, secs) in
        [("scale_out_cooldown_secs", a.scale_out_cooldown_secs), ("scale_in_cooldown_secs", a.scale_in_cooldown_secs)]
    {
        if !(0..=86_400).contains(&secs) {
            return Err(CoreError::invalid(field, format!("{field} must be 0-86400 seconds")));
        }
    }
    Ok(())
}

/// The variant names of the configurations an endpoint serves or deploys.
async fn variant_names(db: &Db, e: &EndpointRow) -> CoreResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT name FROM endpoint_variants WHERE endpoint_id = $1 AND (generation = $2 OR generation = $3) \
         ORDER BY name",
    )
    .bind(&e.id)
    .bind(e.generation)
    .bind(e.active_generation.unwrap_or(-1))
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Sets (or replaces) a variant's policy. The current count is brought into the new
/// range at the autoscaler's next pass.
pub async fn put(db: &Db, p: &Principal, name: &str, variant: &str, a: &Autoscaling) -> CoreResult<Autoscaling> {
    let e = endpoint_for(db, p, name, Action::UpdateEndpoint).await?;
    validate(a)?;
    let names = variant_names(db, &e).await?;
    if !names.iter().any(|n| n == variant) {
        return Err(CoreError::invalid(
            "variant",
            format!("endpoint {name} has no variant {variant} (it has: {})", names.join(", ")),
        ));
    }
    sqlx::query(
        "INSERT INTO endpoint_autoscaling (endpoint_id, variant, min_instances, max_instances, target, \
         scale_out_cooldown_secs, scale_in_cooldown_secs, updated_by, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (endpoint_id, variant) DO UPDATE SET \
         min_instances = excluded.min_instances, max_instances = excluded.max_instances, target = excluded.target, \
         scale_out_cooldown_secs = excluded.scale_out_cooldown_secs, \
         scale_in_cooldown_secs = excluded.scale_in_cooldown_secs, updated_by = excluded.updated_by, \
         updated_at = excluded.updated_at",
    )
    .bind(&e.id)
    .bind(variant)
    .bind(a.min_instances)
    .bind(a.max_instances)
    .bind(a.target_invocations_per_instance)
    .bind(a.scale_out_cooldown_secs)
    .bind(a.scale_in_cooldown_secs)
    .bind(&p.user.username)
    .bind(now())
    .execute(&db.pool)
    .await?;
    let text = format!(
        "autoscaling of variant {variant} set by {}: {}-{} instances, {} invocations per instance and minute",
        p.user.username, a.min_instances, a.max_instances, a.target_invocations_per_instance
    );
    add_event(&db.pool, &e.id, &text).await?;
    p.note_change(format!("set autoscaling of endpoint {name} variant {variant}"));
    Ok(a.clone())
}

/// Removes a variant's policy; its instance count stays where it is.
pub async fn delete(db: &Db, p: &Principal, name: &str, variant: &str) -> CoreResult<()> {
    let e = endpoint_for(db, p, name, Action::UpdateEndpoint).await?;
    let gone = sqlx::query("DELETE FROM endpoint_autoscaling WHERE endpoint_id = $1 AND variant = $2")
        .bind(&e.id)
        .bind(variant)
        .execute(&db.pool)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(CoreError::NotFound("autoscaling policy"));
    }
    add_event(&db.pool, &e.id, &format!("autoscaling of variant {variant} removed by {}", p.user.username)).await?;
    p.note_change(format!("removed autoscaling of endpoint {name} variant {variant}"));
    Ok(())
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    variant: String,
    min_instances: i64,
    max_instances: i64,
    target: f64,
    scale_out_cooldown_secs: i64,
    scale_in_cooldown_secs: i64,
}

impl PolicyRow {
    fn wire(&self) -> Autoscaling {
        Autoscaling {
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            target_invocations_per_instance: self.target,
            scale_out_cooldown_secs: self.scale_out_cooldown_secs,
            scale_in_cooldown_secs: self.scale_in_cooldown_secs,
        }
    }
}

const POLICY_COLUMNS: &str =
    "variant, min_instances, max_instances, target, scale_out_cooldown_secs, scale_in_cooldown_secs";

/// An endpoint's policies by variant name.
pub(super) async fn policies(db: &Db, endpoint_id: &str) -> CoreResult<Vec<(String, Autoscaling)>> {
    let rows: Vec<PolicyRow> =
        sqlx::query_as(&format!("SELECT {POLICY_COLUMNS} FROM endpoint_autoscaling WHERE endpoint_id = $1"))
            .bind(endpoint_id)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.iter().map(|r| (r.variant.clone(), r.wire())).collect())
}

/// A new configuration's instance count for a variant that has a policy: within its
/// range.
pub(super) fn clamp(count: i64, policy: Option<&Autoscaling>) -> i64 {
    match policy {
        Some(a) => count.clamp(a.min_instances, a.max_instances),
        None => count,
    }
}

/// The instance count a policy asks for, given the invocations of the last minute.
pub fn desired(a: &Autoscaling, per_minute: f64) -> i64 {
    ((per_minute / a.target_invocations_per_instance).ceil() as i64).clamp(a.min_instances, a.max_instances)
}

/// When a policy last acted, and when it was set (seconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct History {
    pub last_scaled_at: Option<i64>,
    pub last_scale_out_at: Option<i64>,
    pub set_at: i64,
}

/// The count to move a variant to at `t`, if any: into the range at once when it is
/// outside it, else the desired count when the cooldowns allow it. A scale-in
/// never delays a scale-out; a policy just set waits a scale-in cooldown before
/// removing instances, as after a scaling, since it has not seen a window of traffic.
pub fn next_count(a: &Autoscaling, per_minute: f64, current: i64, h: &History, t: i64) -> Option<i64> {
    if current < a.min_instances || current > a.max_instances {
        return Some(current.clamp(a.min_instances, a.max_instances));
    }
    let wanted = desired(a, per_minute);
    let since = |at: Option<i64>| at.map_or(i64::MAX, |at| t - at);
    let settled = since(h.last_scaled_at).min(since(Some(h.set_at)));
    let allowed = (wanted > current && since(h.last_scale_out_at) >= a.scale_out_cooldown_secs)
        || (wanted < current && settled >= a.scale_in_cooldown_secs);
    (wanted != current && allowed).then_some(wanted)
}

#[derive(sqlx::FromRow)]
struct Candidate {
    endpoint_id: String,
    variant: String,
    variant_id: String,
    instance_count: i64,
    min_instances: i64,
    max_instances: i64,
    target: f64,
    scale_out_cooldown_secs: i64,
    scale_in_cooldown_secs: i64,
    last_scaled_at: Option<i64>,
    last_scale_out_at: Option<i64>,
    updated_at: i64,
}

/// Invocations of a variant over the last 60 seconds: this minute's so far and the
/// part of the previous minute still inside the window (counts are per minute).
async fn last_minute(db: &Db, endpoint_id: &str, variant: &str, t: i64) -> CoreResult<f64> {
    let minute = t - t.rem_euclid(60);
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT minute, invocations FROM endpoint_metrics WHERE endpoint_id = $1 AND variant = $2 \
         AND minute >= $3 AND minute <= $4",
    )
    .bind(endpoint_id)
    .bind(variant)
    .bind(minute - 60)
    .bind(minute)
    .fetch_all(&db.pool)
    .await?;
    let previous_share = 1.0 - (t - minute) as f64 / 60.0;
    Ok(rows.iter().map(|(m, n)| if *m == minute { *n as f64 } else { *n as f64 * previous_share }).sum())
}

/// One pass over every policy of an endpoint in service (an update under way is left
/// alone: its counts are the ones asked for). Returns how many variants were scaled.
pub async fn autoscale(db: &Db) -> CoreResult<usize> {
    let candidates: Vec<Candidate> = sqlx::query_as(
        "SELECT a.endpoint_id, a.variant, v.id AS variant_id, v.instance_count, a.min_instances, a.max_instances, \
         a.target, a.scale_out_cooldown_secs, a.scale_in_cooldown_secs, a.last_scaled_at, a.last_scale_out_at, \
         a.updated_at FROM endpoint_autoscaling a JOIN endpoints e ON e.id = a.endpoint_id \
         JOIN endpoint_variants v ON v.endpoint_id = e.id AND v.generation = e.generation AND v.name = a.variant \
         WHERE e.status = $1 AND e.active_generation = e.generation",
    )
    .bind(IN_SERVICE)
    .fetch_all(&db.pool)
    .await?;
    let t = now();
    let mut scaled = 0;
    for c in candidates {
        let policy = Autoscaling {
            min_instances: c.min_instances,
            max_instances: c.max_instances,
            target_invocations_per_instance: c.target,
            scale_out_cooldown_secs: c.scale_out_cooldown_secs,
            scale_in_cooldown_secs: c.scale_in_cooldown_secs,
        };
        let per_minute = last_minute(db, &c.endpoint_id, &c.variant, t).await?;
        let history =
            History { last_scaled_at: c.last_scaled_at, last_scale_out_at: c.last_scale_out_at, set_at: c.updated_at };
        let Some(wanted) = next_count(&policy, per_minute, c.instance_count, &history, t) else { continue };
        let outside = c.instance_count < c.min_instances || c.instance_count > c.max_instances;
        // Written first (SQLite), and only if nobody scaled meanwhile.
        let mut tx = db.pool.begin().await?;
        let done =
            sqlx::query("UPDATE endpoint_variants SET instance_count = $1 WHERE id = $2 AND instance_count = $3")
                .bind(wanted)
                .bind(&c.variant_id)
                .bind(c.instance_count)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() != 1 {
            continue;
        }
        let out = wanted > c.instance_count;
        sqlx::query(
            "UPDATE endpoint_autoscaling SET last_scaled_at = $1, last_scale_out_at = $2 \
             WHERE endpoint_id = $3 AND variant = $4",
        )
        .bind(t)
        .bind(if out { Some(t) } else { c.last_scale_out_at })
        .bind(&c.endpoint_id)
        .bind(&c.variant)
        .execute(&mut *tx)
        .await?;
        let why = if outside {
            format!("to stay within {}-{}", c.min_instances, c.max_instances)
        } else {
            format!(
                "{per_minute:.0} invocations in the last minute, {:.1} per instance, target {}",
                per_minute / c.instance_count.max(1) as f64,
                c.target
            )
        };
        let text = format!(
            "autoscaling: scaled variant {} {} from {} to {} instances ({why})",
            c.variant,
            if out { "out" } else { "in" },
            c.instance_count,
            wanted
        );
        add_event(&mut *tx, &c.endpoint_id, &text).await?;
        tx.commit().await?;
        tracing::info!(endpoint = %c.endpoint_id, "{text}");
        scaled += 1;
    }
    Ok(scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: i64, max: i64, target: f64) -> Autoscaling {
        Autoscaling {
            min_instances: min,
            max_instances: max,
            target_invocations_per_instance: target,
            scale_out_cooldown_secs: 60,
            scale_in_cooldown_secs: 300,
        }
    }

    #[test]
    fn desired_count_tracks_the_target_within_the_range() {
        let a = policy(1, 4, 100.0);
        assert_eq!(desired(&a, 0.0), 1);
        assert_eq!(desired(&a, 100.0), 1);
        assert_eq!(desired(&a, 101.0), 2);
        assert_eq!(desired(&a, 350.0), 4);
        assert_eq!(desired(&a, 10_000.0), 4);
        assert_eq!(desired(&policy(2, 3, 10.0), 0.0), 2);
    }

    #[test]
    fn cooldowns_hold_scaling_back() {
        let a = policy(1, 4, 10.0);
        let t = 10_000;
        let long_ago = History { last_scaled_at: Some(0), last_scale_out_at: Some(0), set_at: 0 };
        // Free to move either way.
        assert_eq!(next_count(&a, 35.0, 1, &long_ago, t), Some(4));
        assert_eq!(next_count(&a, 5.0, 3, &long_ago, t), Some(1));
        assert_eq!(next_count(&a, 25.0, 3, &long_ago, t), None);
        // A scale-out 30 s ago holds the next one (cooldown 60) but a scale-in 30 s ago
        // does not.
        let out = History { last_scaled_at: Some(t - 30), last_scale_out_at: Some(t - 30), set_at: 0 };
        assert_eq!(next_count(&a, 35.0, 2, &out, t), None);
        let scaled_in = History { last_scaled_at: Some(t - 30), last_scale_out_at: Some(0), set_at: 0 };
        assert_eq!(next_count(&a, 35.0, 2, &scaled_in, t), Some(4));
        // Any scaling, or setting the policy, holds a scale-in for 300 s.
        assert_eq!(next_count(&a, 0.0, 3, &scaled_in, t), None);
        let just_set = History { last_scaled_at: None, last_scale_out_at: None, set_at: t - 10 };
        assert_eq!(next_count(&a, 0.0, 3, &just_set, t), None);
        assert_eq!(next_count(&a, 0.0, 3, &just_set, t + 300), Some(1));
        // A count outside the range is corrected whatever the cooldowns say.
        assert_eq!(next_count(&a, 0.0, 6, &just_set, t), Some(4));
        assert_eq!(next_count(&policy(2, 4, 10.0), 0.0, 1, &out, t), Some(2));
    }

    #[test]
    fn bad_policies_name_the_field() {
        let field = |a: Autoscaling| match validate(&a) {
            Err(CoreError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(policy(0, 2, 10.0)), "min_instances");
        assert_eq!(field(policy(3, 2, 10.0)), "max_instances");
        assert_eq!(field(policy(1, 2, 0.0)), "target_invocations_per_instance");
        assert_eq!(field(policy(1, 2, f64::NAN)), "target_invocations_per_instance");
        let mut a = policy(1, 2, 10.0);
        a.scale_in_cooldown_secs = -1;
        assert_eq!(field(a), "scale_in_cooldown_secs");
        assert!(validate(&policy(1, 20, 0.5)).is_ok());
    }
}
