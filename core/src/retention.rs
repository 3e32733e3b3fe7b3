//! Retention of time series: endpoint metrics are kept per minute for a while, then
//! folded into hours; compute nodes' utilization samples (one per heartbeat) are
//! folded into minutes after an hour; everything is deleted after the retention
//! period.
//!
//! Folding an hour (or minute) replaces its rows with one row at its start, in one
//! transaction that writes first. Folding a period twice gives the same row, so
//! replicas may run this at once.

use std::collections::BTreeMap;

use atelier_protocol::GpuUsage;

use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// How long series are kept, and how long at full resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Endpoint metrics stay per minute for this many hours.
    pub detail_hours: i64,
    /// Everything older than this many days is deleted.
    pub days: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { detail_hours: 48, days: 90 }
    }
}

/// Node samples stay one per heartbeat for this long.
const NODE_DETAIL_SECS: i64 = 3_600;

/// At most this many periods are folded per pass, so a pass stays short after a long
/// pause; the next passes do the rest.
const BATCH: i64 = 500;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub hours_folded: usize,
    pub minutes_folded: usize,
    pub rows_deleted: u64,
}

/// One pass: delete what is older than the retention, fold what is old enough.
pub async fn run(db: &Db, r: Retention) -> CoreResult<Pass> {
    let t = now();
    let hour_cutoff = {
        let c = t - r.detail_hours.max(1) * 3_600;
        c - c.rem_euclid(3_600)
    };
    let minute_cutoff = {
        let c = t - NODE_DETAIL_SECS;
        c - c.rem_euclid(60)
    };
    // Expired rows go first, so they are not folded on their way out.
    let expired = t - r.days.max(1) * 86_400;
    let mut pass = Pass::default();
    for (table, column) in [("endpoint_metrics", "minute"), ("endpoint_latency", "minute"), ("node_samples", "ts")] {
        let done =
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} < $1")).bind(expired).execute(&db.pool).await?;
        pass.rows_deleted += done.rows_affected();
    }
    pass.hours_folded = fold_endpoint_hours(db, hour_cutoff).await?;
    pass.minutes_folded = fold_node_minutes(db, minute_cutoff).await?;
    Ok(pass)
}

#[derive(sqlx::FromRow)]
struct HourRow {
    endpoint_id: String,
    variant: String,
    hour: i64,
    invocations: i64,
    errors_4xx: i64,
    errors_5xx: i64,
    instances: i64,
}

/// Folds the per-minute endpoint metrics (and latency histograms) of complete hours
/// before `cutoff` into one row per hour. The instance gauge keeps the hour's most.
async fn fold_endpoint_hours(db: &Db, cutoff: i64) -> CoreResult<usize> {
    let hours: Vec<HourRow> = sqlx::query_as(
        "SELECT endpoint_id, variant, minute - minute % 3600 AS hour, CAST(SUM(invocations) AS BIGINT) AS invocations, \
         CAST(SUM(errors_4xx) AS BIGINT) AS errors_4xx, CAST(SUM(errors_5xx) AS BIGINT) AS errors_5xx, \
         CAST(MAX(instances) AS BIGINT) AS instances FROM endpoint_metrics WHERE minute < $1 \
         GROUP BY endpoint_id, variant, minute - minute % 3600 \
         HAVING COUNT(*) > 1 OR MAX(minute % 3600) > 0 ORDER BY 3 LIMIT $2",
    )
    .bind(cutoff)
    .bind(BATCH)
    .fetch_all(&db.pool)
    .await?;
    for h in &hours {
        let latency: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT kind, bucket, CAST(SUM(n) AS BIGINT) FROM endpoint_latency WHERE endpoint_id = $1 AND variant = $2 \
             AND minute >= $3 AND minute < $4 GROUP BY kind, bucket",
        )
        .bind(&h.endpoint_id)
        .bind(&h.variant)
        .bind(h.hour)
        .bind(h.hour + 3_600)
        .fetch_all(&db.pool)
        .await?;
        let mut tx = db.pool.begin().await?;
        for table in ["endpoint_metrics", "endpoint_latency"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE endpoint_id = $1 AND variant = $2 AND minute >= $3 AND minute < $4"
            ))
            .bind(&h.endpoint_id)
            .bind(&h.variant)
            .bind(h.hour)
            .bind(h.hour + 3_600)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO endpoint_metrics (endpoint_id, variant, minute, invocations, errors_4xx, errors_5xx, instances) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&h.endpoint_id)
        .bind(&h.variant)
        .bind(h.hour)
        .bind(h.invocations)
        .bind(h.errors_4xx)
        .bind(h.errors_5xx)
        .bind(h.instances)
        .execute(&mut *tx)
        .await?;
        for (kind, bucket, n) in &latency {
            sqlx::query(
                "INSERT INTO endpoint_latency (endpoint_id, variant, minute, kind, bucket, n) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&h.endpoint_id)
            .bind(&h.variant)
            .bind(h.hour)
            .bind(kind)
            .bind(bucket)
            .bind(n)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(hours.len())
}

/// Folds node utilization samples of complete minutes before `cutoff` into one
/// sample per minute: the mean CPU and memory, and each GPU's mean.
async fn fold_node_minutes(db: &Db, cutoff: i64) -> CoreResult<usize> {
    let minutes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT node_id, ts - ts % 60 AS m FROM node_samples WHERE ts < $1 GROUP BY node_id, ts - ts % 60 \
         HAVING COUNT(*) > 1 OR MAX(ts % 60) > 0 ORDER BY 2 LIMIT $2",
    )
    .bind(cutoff)
    .bind(BATCH)
    .fetch_all(&db.pool)
    .await?;
    for (node_id, minute) in &minutes {
        let samples: Vec<(f64, i64, String)> = sqlx::query_as(
            "SELECT cpu_pct, memory_used_mb, gpus FROM node_samples WHERE node_id = $1 AND ts >= $2 AND ts < $3",
        )
        .bind(node_id)
        .bind(minute)
        .bind(minute + 60)
        .fetch_all(&db.pool)
        .await?;
        if samples.is_empty() {
            continue;
        }
        let (cpu, memory, gpus) = mean(&samples);
        let mut tx = db.pool.begin().await?;
        sqlx::query("DELETE FROM node_samples WHERE node_id = $1 AND ts >= $2 AND ts < $3")
            .bind(node_id)
            .bind(minute)
            .bind(minute + 60)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO node_samples (node_id, ts, cpu_pct, memory_used_mb, gpus) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(node_id)
        .bind(minute)
        .bind(cpu)
        .bind(memory)
        .bind(serde_json::to_string(&gpus).map_err(CoreError::internal)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(minutes.len())
}

/// The mean of samples (CPU %, memory MB, GPUs as JSON); a GPU missing from some
/// samples is averaged over those that have it.
fn mean(samples: &[(f64, i64, String)]) -> (f64, i64, Vec<GpuUsage>) {
    let n = samples.len().max(1) as f64;
    let cpu = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let memory = (samples.iter().map(|s| s.1 as f64).sum::<f64>() / n).round() as i64;
    let mut per_gpu: BTreeMap<u32, (f64, f64, f64)> = BTreeMap::new();
    for (_, _, gpus) in samples {
        for g in serde_json::from_str::<Vec<GpuUsage>>(gpus).unwrap_or_default() {
            let e = per_gpu.entry(g.index).or_default();
            e.0 += g.utilization_pct;
            e.1 += g.memory_used_mb as f64;
            e.2 += 1.0;
        }
    }
    let gpus = per_gpu
        .into_iter()
        .map(|(index, (util, mem, k))| GpuUsage {
            index,
            utilization_pct: util / k,
            memory_used_mb: (mem / k).round() as u64,
        })
        .collect();
    (cpu, memory, gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_average_per_gpu() {
        let samples = vec![
            (10.0, 100, r#"[{"index":0,"utilization_pct":50.0,"memory_used_mb":1000}]"#.to_string()),
            (30.0, 300, r#"[{"index":0,"utilization_pct":70.0,"memory_used_mb":3000},{"index":1,"utilization_pct":5.0,"memory_used_mb":10}]"#.to_string()),
        ];
        let (cpu, memory, gpus) = mean(&samples);
        assert_eq!(cpu, 20.0);
        assert_eq!(memory, 200);
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].utilization_pct, gpus[0].memory_used_mb), (60.0, 2000));
        assert_eq!((gpus[1].utilization_pct, gpus[1].memory_used_mb), (5.0, 10));
    }
}
