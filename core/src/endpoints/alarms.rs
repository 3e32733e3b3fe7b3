//! Alarms on an endpoint: a threshold on a per-minute metric, or on the model monitor's
//! drift, that goes into alarm after N consecutive breaching periods (minutes, or
//! monitor runs) and back to OK after one that does not breach. Every change is kept in
//! the alarm's history, sent to the webhooks of the served model group and the studio,
//! and an alarm can open a retraining job from the served version's training job.

use atelier_protocol::endpoints::{Alarm, AlarmChange, NewAlarm};

use super::{add_event, endpoint_for, EndpointRow};
use crate::artifacts::ArtifactStore;
use crate::authz::{Action, Principal};
use crate::compute::{jobs, now_ms};
use crate::db::Db;
use crate::models::webhooks;
use crate::{now, CoreError, CoreResult};

/// What an alarm can watch.
pub const METRICS: [&str; 7] = [
    "invocations",
    "errors_4xx",
    "errors_5xx",
    "model_latency_p99_ms",
    "overhead_latency_p99_ms",
    "drifted_features",
    "violations",
];

/// The metrics evaluated per monitor run rather than per minute.
fn per_run(metric: &str) -> bool {
    matches!(metric, "drifted_features" | "violations")
}

pub const OK: &str = "OK";
pub const ALARM: &str = "ALARM";
pub const INSUFFICIENT_DATA: &str = "INSUFFICIENT_DATA";

#[derive(Debug, Clone, sqlx::FromRow)]
struct AlarmRow {
    id: String,
    endpoint_id: String,
    name: String,
    metric: String,
    comparison: String,
    threshold: f64,
    periods: i64,
    /// 1 to open a retraining job on going into alarm.
    retrain: i64,
    state: String,
    reason: String,
    breaching: i64,
    last_period: i64,
    created_by: String,
    updated_at: i64,
    /// 1 when muted: evaluated, but tells no one.
    muted: i64,
}

const COLUMNS: &str =
    "id, endpoint_id, name, metric, comparison, threshold, periods, retrain, state, reason, breaching, \
                       last_period, created_by, updated_at, muted";

impl AlarmRow {
    fn to_wire(&self, history: Vec<AlarmChange>) -> Alarm {
        Alarm {
            name: self.name.clone(),
            metric: self.metric.clone(),
            comparison: self.comparison.clone(),
            threshold: self.threshold,
            periods: self.periods,
            retrain: self.retrain != 0,
            state: self.state.clone(),
            reason: self.reason.clone(),
            muted: self.muted != 0,
            created_by: self.created_by.clone(),
            updated_at: self.updated_at,
            history,
        }
    }

    fn breaches(&self, value: f64) -> bool {
        match self.comparison.as_str() {
            "gt" => value > self.threshold,
            "ge" => value >= self.threshold,
            "lt" => value < self.threshold,
            _ => value <= self.threshold,
        }
    }
}

fn validate(new: &NewAlarm) -> CoreResult<()> {
    super::validate_name("name", &new.name)?;
    if !METRICS.contains(&new.metric.as_str()) {
        return Err(CoreError::invalid("metric", format!("metric must be one of {}", METRICS.join(", "))));
    }
    if !matches!(new.comparison.as_str(), "gt" | "ge" | "lt" | "le") {
        return Err(CoreError::invalid("comparison", "comparison must be gt, ge, lt or le"));
    }
    if !new.threshold.is_finite() {
        return Err(CoreError::invalid("threshold", "threshold must be a number"));
    }
    if !(1..=1440).contains(&new.periods) {
        return Err(CoreError::invalid("periods", "periods must be 1-1440"));
    }
    Ok(())
}

/// The id of the endpoint's alarm named `name`, if there is one.
async fn find_id<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    executor: E,
    endpoint_id: &str,
    name: &str,
) -> CoreResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM endpoint_alarms WHERE endpoint_id = $1 AND name = $2")
        .bind(endpoint_id)
        .bind(name)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|(id,)| id))
}

fn name_taken(endpoint: &str, name: &str) -> CoreError {
    CoreError::Conflict(format!(
        "endpoint {endpoint} already has an alarm named {name}: change that one, or choose another name"
    ))
}

/// Adds an alarm. A name the endpoint's alarms already use is refused (409): changing
/// an alarm is [`update`], which keeps its history.
pub async fn create(db: &Db, p: &Principal, endpoint: &str, new: &NewAlarm) -> CoreResult<Alarm> {
    let e = endpoint_for(db, p, endpoint, Action::UpdateEndpoint).await?;
    validate(new)?;
    let name = new.name.trim();
    let t = now();
    let mut tx = db.pool.begin().await?;
    if find_id(&mut *tx, &e.id, name).await?.is_some() {
        return Err(name_taken(endpoint, name));
    }
    // The unique (endpoint_id, name) key settles a race with another create.
    sqlx::query(&format!(
        "INSERT INTO endpoint_alarms ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, $11, $12, 0)"
    ))
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&e.id)
    .bind(name)
    .bind(&new.metric)
    .bind(&new.comparison)
    .bind(new.threshold)
    .bind(new.periods)
    .bind(i64::from(new.retrain))
    .bind(INSUFFICIENT_DATA)
    .bind("not evaluated yet")
    .bind(&p.user.username)
    .bind(t)
    .execute(&mut *tx)
    .await
    .map_err(|err| if is_unique_violation(&err) { name_taken(endpoint, name) } else { err.into() })?;
    tx.commit().await?;
    p.note_change(format!(
        "endpoint {endpoint}: alarm {name} when {} {} {} for {} periods",
        new.metric, new.comparison, new.threshold, new.periods
    ));
    one(db, &e, name).await
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn one(db: &Db, e: &EndpointRow, name: &str) -> CoreResult<Alarm> {
    let mut all = list_of(db, e).await?;
    all.retain(|a| a.name == name);
    all.pop().ok_or(CoreError::NotFound("alarm"))
}

/// Changes the alarm `name` (its condition, and its name if `new.name` differs and is
/// free). Its history stays; its breaching count starts again, and a changed condition
/// is judged from the next period on.
pub async fn update(db: &Db, p: &Principal, endpoint: &str, name: &str, new: &NewAlarm) -> CoreResult<Alarm> {
    let e = endpoint_for(db, p, endpoint, Action::UpdateEndpoint).await?;
    validate(new)?;
    let new_name = new.name.trim();
    let mut tx = db.pool.begin().await?;
    let id = find_id(&mut *tx, &e.id, name).await?.ok_or(CoreError::NotFound("alarm"))?;
    if new_name != name && find_id(&mut *tx, &e.id, new_name).await?.is_some() {
        return Err(name_taken(endpoint, new_name));
    }
    sqlx::query(
        "UPDATE endpoint_alarms SET name = $1, metric = $2, comparison = $3, threshold = $4, periods = $5, \
         retrain = $6, breaching = 0, updated_at = $7 WHERE id = $8",
    )
    .bind(new_name)
    .bind(&new.metric)
    .bind(&new.comparison)
    .bind(new.threshold)
    .bind(new.periods)
    .bind(i64::from(new.retrain))
    .bind(now())
    .bind(&id)
    .execute(&mut *tx)
    .await
    .map_err(|err| if is_unique_violation(&err) { name_taken(endpoint, new_name) } else { err.into() })?;
    tx.commit().await?;
    p.note_change(format!(
        "endpoint {endpoint}: alarm {name} changed to {new_name} when {} {} {} for {} periods",
        new.metric, new.comparison, new.threshold, new.periods
    ));
    one(db, &e, new_name).await
}

/// Mutes or unmutes an alarm: a muted one is still evaluated and keeps its history, but
/// sends no webhook, writes no endpoint event, opens no retraining job and is not shown
/// as firing.
pub async fn set_muted(db: &Db, p: &Principal, endpoint: &str, name: &str, muted: bool) -> CoreResult<Alarm> {
    let e = endpoint_for(db, p, endpoint, Action::UpdateEndpoint).await?;
    let changed = sqlx::query("UPDATE endpoint_alarms SET muted = $1 WHERE endpoint_id = $2 AND name = $3")
        .bind(i64::from(muted))
        .bind(&e.id)
        .bind(name)
        .execute(&db.pool)
        .await?;
    if changed.rows_affected() == 0 {
        return Err(CoreError::NotFound("alarm"));
    }
    p.note_change(format!("endpoint {endpoint}: {} alarm {name}", if muted { "muted" } else { "unmuted" }));
    one(db, &e, name).await
}

/// An alarm in alarm and not muted, on an endpoint the caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub endpoint: String,
    pub alarm: String,
    pub reason: String,
}

/// The alarms going off now (not muted) on the endpoints the caller may see.
pub async fn firing(db: &Db, p: &Principal) -> CoreResult<Vec<Firing>> {
    let visible: std::collections::HashSet<String> = super::list(db, p).await?.into_iter().map(|e| e.name).collect();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT e.name, a.name, a.reason FROM endpoint_alarms a JOIN endpoints e ON e.id = a.endpoint_id \
         WHERE a.state = $1 AND a.muted = 0 ORDER BY e.name, a.name",
    )
    .bind(ALARM)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(endpoint, ..)| visible.contains(endpoint))
        .map(|(endpoint, alarm, reason)| Firing { endpoint, alarm, reason })
        .collect())
}

/// The endpoint's alarms with their recent history.
pub async fn list(db: &Db, p: &Principal, endpoint: &str) -> CoreResult<Vec<Alarm>> {
    let e = endpoint_for(db, p, endpoint, Action::GetEndpoint).await?;
    list_of(db, &e).await
}

async fn list_of(db: &Db, e: &EndpointRow) -> CoreResult<Vec<Alarm>> {
    let rows: Vec<AlarmRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM endpoint_alarms WHERE endpoint_id = $1 ORDER BY name"))
            .bind(&e.id)
            .fetch_all(&db.pool)
            .await?;
    let mut out = Vec::new();
    for row in rows {
        let history: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT at_ms, from_state, to_state, reason FROM endpoint_alarm_history WHERE alarm_id = $1 \
             ORDER BY at_ms DESC, id DESC LIMIT 20",
        )
        .bind(&row.id)
        .fetch_all(&db.pool)
        .await?;
        let history =
            history.into_iter().map(|(at_ms, from, to, reason)| AlarmChange { at_ms, from, to, reason }).collect();
        out.push(row.to_wire(history));
    }
    Ok(out)
}

pub async fn delete(db: &Db, p: &Principal, endpoint: &str, name: &str) -> CoreResult<()> {
    let e = endpoint_for(db, p, endpoint, Action::UpdateEndpoint).await?;
    let gone = sqlx::query("DELETE FROM endpoint_alarms WHERE endpoint_id = $1 AND name = $2")
        .bind(&e.id)
        .bind(name)
        .execute(&db.pool)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(CoreError::NotFound("alarm"));
    }
    p.note_change(format!("endpoint {endpoint}: deleted alarm {name}"));
    Ok(())
}

/// Evaluates the per-minute alarms on the last complete minute (once per minute).
pub async fn evaluate_minutes(db: &Db, store: &ArtifactStore) -> CoreResult<()> {
    let t = now();
    // Servers store their counts every few seconds: a minute is judged once the next
    // is ten seconds old.
    if t.rem_euclid(60) < 10 {
        return Ok(());
    }
    let minute = t - t.rem_euclid(60) - 60;
    let rows: Vec<AlarmRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM endpoint_alarms WHERE last_period < $1"))
        .bind(minute)
        .fetch_all(&db.pool)
        .await?;
    for alarm in rows.into_iter().filter(|a| !per_run(&a.metric)) {
        let value = minute_value(db, &alarm, minute).await?;
        observe(db, store, &alarm, minute, value).await?;
    }
    Ok(())
}

/// Evaluates the drift alarms of an endpoint on a monitor run's figures.
pub async fn evaluate_run(
    db: &Db,
    store: &ArtifactStore,
    endpoint_id: &str,
    started_at: i64,
    drifted: i64,
    violations: i64,
) -> CoreResult<()> {
    let rows: Vec<AlarmRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM endpoint_alarms WHERE endpoint_id = $1"))
        .bind(endpoint_id)
        .fetch_all(&db.pool)
        .await?;
    for alarm in rows.into_iter().filter(|a| per_run(&a.metric)) {
        let value = if alarm.metric == "drifted_features" { drifted } else { violations };
        observe(db, store, &alarm, started_at, Some(value as f64)).await?;
    }
    Ok(())
}

async fn minute_value(db: &Db, alarm: &AlarmRow, minute: i64) -> CoreResult<Option<f64>> {
    let column = match alarm.metric.as_str() {
        "invocations" | "errors_4xx" | "errors_5xx" => alarm.metric.as_str(),
        "model_latency_p99_ms" | "overhead_latency_p99_ms" => {
            let kind = if alarm.metric.starts_with("model") { "model" } else { "overhead" };
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT bucket, CAST(SUM(n) AS BIGINT) FROM endpoint_latency WHERE endpoint_id = $1 AND minute = $2 \
                 AND kind = $3 GROUP BY bucket",
            )
            .bind(&alarm.endpoint_id)
            .bind(minute)
            .bind(kind)
            .fetch_all(&db.pool)
            .await?;
            return Ok(super::metrics::quantile(&rows.into_iter().collect(), 0.99));
        }
        _ => return Ok(None),
    };
    let (sum,): (Option<i64>,) = sqlx::query_as(&format!(
        "SELECT CAST(SUM({column}) AS BIGINT) FROM endpoint_metrics WHERE endpoint_id = $1 AND minute = $2"
    ))
    .bind(&alarm.endpoint_id)
    .bind(minute)
    .fetch_one(&db.pool)
    .await?;
    // No traffic is zero invocations and zero errors, not missing data.
    Ok(Some(sum.unwrap_or(0) as f64))
}

/// One period's value: counts breaches, changes state when due, and records it. The
/// update is conditional on the period, so two replicas never count one twice.
async fn observe(db: &Db, store: &ArtifactStore, alarm: &AlarmRow, period: i64, value: Option<f64>) -> CoreResult<()> {
    let (breaching, state, reason) = match value {
        None => (0, INSUFFICIENT_DATA.to_string(), "no data in the last period".to_string()),
        Some(v) if alarm.breaches(v) => {
            let n = alarm.breaching + 1;
            let mut reason = format!(
                "{} was {v:.3} ({} {}) for {n} consecutive period(s)",
                alarm.metric, alarm.comparison, alarm.threshold
            );
            if n < alarm.periods {
                reason.push_str(&format!("; in alarm after {}", alarm.periods));
            }
            let state = if n >= alarm.periods { ALARM } else { alarm.state.as_str() };
            (n, state.to_string(), reason)
        }
        Some(v) => (0, OK.to_string(), format!("{} was {v:.3}, within the threshold", alarm.metric)),
    };
    let mut tx = db.pool.begin().await?;
    let claimed = sqlx::query(
        "UPDATE endpoint_alarms SET breaching = $1, state = $2, reason = $3, last_period = $4, updated_at = $5 \
         WHERE id = $6 AND last_period = $7",
    )
    .bind(breaching)
    .bind(&state)
    .bind(&reason)
    .bind(period)
    .bind(now())
    .bind(&alarm.id)
    .bind(alarm.last_period)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() != 1 || state == alarm.state {
        tx.commit().await?;
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO endpoint_alarm_history (id, alarm_id, at_ms, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&alarm.id)
    .bind(now_ms())
    .bind(&alarm.state)
    .bind(&state)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    let endpoint: (String, Option<String>) = sqlx::query_as(
        "SELECT e.name, (SELECT m.group_id FROM endpoint_variants v JOIN model_versions m ON m.id = v.model_version_id \
         WHERE v.endpoint_id = e.id AND v.generation = COALESCE(e.active_generation, e.generation) ORDER BY v.name LIMIT 1) \
         FROM endpoints e WHERE e.id = $1",
    )
    .bind(&alarm.endpoint_id)
    .fetch_one(&mut *tx)
    .await?;
    if alarm.muted != 0 {
        tx.commit().await?;
        return Ok(());
    }
    let payload = serde_json::json!({
        "endpoint": endpoint.0, "alarm": alarm.name, "metric": alarm.metric, "from": alarm.state, "to": state,
        "reason": reason,
    });
    webhooks::enqueue(&mut tx, endpoint.1.as_deref().unwrap_or(""), webhooks::ALARM_CHANGED, &payload).await?;
    add_event(&mut *tx, &alarm.endpoint_id, &format!("alarm {} is {state}: {reason}", alarm.name)).await?;
    tx.commit().await?;
    if state == ALARM && alarm.retrain != 0 {
        retrain(db, store, alarm, &endpoint.0).await;
    }
    Ok(())
}

/// Opens a retraining job: the served version's training job again, as the alarm's
/// creator (with their permissions), named after it.
async fn retrain(db: &Db, store: &ArtifactStore, alarm: &AlarmRow, endpoint: &str) {
    let result: CoreResult<String> = async {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT j.name, j.spec FROM endpoints e JOIN endpoint_variants v ON v.endpoint_id = e.id \
             AND v.generation = COALESCE(e.active_generation, e.generation) JOIN model_versions m ON m.id = v.model_version_id \
             JOIN training_jobs j ON j.id = m.training_job_id WHERE e.id = $1 ORDER BY v.name LIMIT 1",
        )
        .bind(&alarm.endpoint_id)
        .fetch_optional(&db.pool)
        .await?;
        let (job, spec) = row.ok_or_else(|| CoreError::invalid("retrain", "the served version has no training job"))?;
        let p = super::acting_as(db, &alarm.created_by).await?;
        let mut spec: atelier_protocol::JobSpec = serde_json::from_str(&spec).map_err(CoreError::internal)?;
        // Dataset and labeling job channels are read again: the retrained model learns
        // from what they hold now (their files were added to the stored spec).
        for channel in spec.channels.iter_mut().filter(|c| c.dataset.is_some() || c.labeling_job.is_some()) {
            channel.artifacts.clear();
        }
        let base: String = job.chars().take(100).collect();
        let name = format!("{base}-retrain-{}", now());
        jobs::submit(db, store, &p, &name, spec).await?;
        Ok(name)
    }
    .await;
    // Submitted for the alarm's creator with no request of theirs: audited here, naming
    // the alarm.
    let event = crate::audit::NewEvent {
        principal: alarm.created_by.clone(),
        action: "training:CreateTrainingJob".into(),
        resource: format!("atelier:training:job/{}", result.as_deref().unwrap_or("*")),
        allowed: result.is_ok(),
        summary: format!("by alarm {} of endpoint {endpoint}", alarm.name),
        ..Default::default()
    };
    crate::audit::record_or_log(db, event).await;
    let message = match result {
        Ok(name) => format!("alarm {} opened retraining job {name}", alarm.name),
        Err(err) => format!("alarm {} could not open a retraining job: {err}", alarm.name),
    };
    if let Err(err) = add_event(&db.pool, &alarm.endpoint_id, &message).await {
        tracing::warn!(error = %err, endpoint, "alarm event could not be written");
    }
}
