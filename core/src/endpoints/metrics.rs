//! Invocation metrics: counted in memory by the server that answered, added to the
//! per-minute rows every few seconds (so replicas' counts sum), and read back as
//! series with latency percentiles from log-scale histograms.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use atelier_protocol::endpoints::{EndpointMetrics, MetricPoint};

use crate::authz::{Action, Principal};
use crate::db::Db;
use crate::{CoreError, CoreResult};

/// Histogram buckets per doubling of the latency: 8 gives about 9% resolution.
const PER_OCTAVE: f64 = 8.0;

/// The bucket of a latency in microseconds.
pub fn bucket_of(micros: u64) -> i64 {
    ((micros.max(1) as f64).log2() * PER_OCTAVE).floor() as i64
}

/// The middle of a bucket, in milliseconds.
pub fn bucket_ms(bucket: i64) -> f64 {
    2f64.powf((bucket as f64 + 0.5) / PER_OCTAVE) / 1000.0
}

/// The `q` quantile (0-1) of a histogram, in milliseconds.
pub fn quantile(histogram: &BTreeMap<i64, i64>, q: f64) -> Option<f64> {
    let total: i64 = histogram.values().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as i64).clamp(1, total);
    let mut seen = 0;
    for (bucket, n) in histogram {
        seen += n;
        if seen >= rank {
            return Some(bucket_ms(*bucket));
        }
    }
    None
}

#[derive(Debug, Default, Clone)]
struct Minute {
    invocations: i64,
    errors_4xx: i64,
    errors_5xx: i64,
    model: BTreeMap<i64, i64>,
    overhead: BTreeMap<i64, i64>,
}

type Key = (String, String, i64);

/// Counts since the last flush, by endpoint id, variant and minute.
#[derive(Debug, Default)]
pub struct Recorder {
    pending: Mutex<HashMap<Key, Minute>>,
}

impl Recorder {
    /// One invocation: its status, the model's time and the server's own (the total
    /// less the model's), in microseconds.
    pub fn record(&self, endpoint_id: &str, variant: &str, status: u16, model_us: u64, overhead_us: u64) {
        let t = crate::now();
        let key = (endpoint_id.to_string(), variant.to_string(), t - t.rem_euclid(60));
        let Ok(mut pending) = self.pending.lock() else { return };
        let m = pending.entry(key).or_default();
        m.invocations += 1;
        match status {
            400..=499 => m.errors_4xx += 1,
            500..=599 => m.errors_5xx += 1,
            _ => {}
        }
        *m.model.entry(bucket_of(model_us)).or_default() += 1;
        *m.overhead.entry(bucket_of(overhead_us)).or_default() += 1;
    }

    /// Adds what was counted to the database. Counts of an endpoint deleted meanwhile
    /// are dropped.
    pub async fn flush(&self, db: &Db) -> CoreResult<()> {
        let taken: Vec<(Key, Minute)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return Ok(()),
        };
        for ((endpoint_id, variant, minute), m) in taken {
            let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM endpoints WHERE id = $1")
                .bind(&endpoint_id)
                .fetch_optional(&db.pool)
                .await?;
            if exists.is_none() {
                continue;
            }
            let mut tx = db.pool.begin().await?;
            sqlx::query(
                "INSERT INTO endpoint_metrics (endpoint_id, variant, minute, invocations, errors_4xx, errors_5xx) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (endpoint_id, variant, minute) DO UPDATE SET \
                 invocations = endpoint_metrics.invocations + excluded.invocations, \
                 errors_4xx = endpoint_metrics.errors_4xx + excluded.errors_4xx, \
                 errors_5xx = endpoint_metrics.errors_5xx + excluded.errors_5xx",
            )
            .bind(&endpoint_id)
            .bind(&variant)
            .bind(minute)
            .bind(m.invocations)
            .bind(m.errors_4xx)
            .bind(m.errors_5xx)
            .execute(&mut *tx)
            .await?;
            for (kind, histogram) in [("model", &m.model), ("overhead", &m.overhead)] {
                for (bucket, n) in histogram {
                    sqlx::query(
                        "INSERT INTO endpoint_latency (endpoint_id, variant, minute, kind, bucket, n) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (endpoint_id, variant, minute, kind, bucket) \
                         DO UPDATE SET n = endpoint_latency.n + excluded.n",
                    )
                    .bind(&endpoint_id)
                    .bind(&variant)
                    .bind(minute)
                    .bind(kind)
                    .bind(bucket)
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Per endpoint and variant of the serving configurations: the instance count asked
/// for and the healthy one (for the metrics export).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InstanceGauge {
    pub endpoint: String,
    pub variant: String,
    pub desired: i64,
    pub healthy: i64,
}

pub async fn instance_gauges(db: &Db) -> CoreResult<Vec<InstanceGauge>> {
    Ok(sqlx::query_as(
        "SELECT e.name AS endpoint, v.name AS variant, v.instance_count AS desired, \
         CAST(COUNT(i.id) AS BIGINT) AS healthy FROM endpoints e \
         JOIN endpoint_variants v ON v.endpoint_id = e.id AND v.generation = e.active_generation \
         LEFT JOIN endpoint_instances i ON i.variant_id = v.id AND i.state = 'InService' \
         GROUP BY e.name, v.name, v.instance_count ORDER BY e.name, v.name",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// Seconds per point for a range: per minute up to a day, coarser beyond, so a chart
/// has at most about 1,500 points.
pub fn step_for(seconds: i64) -> i64 {
    match seconds {
        s if s <= 86_400 => 60,
        s => ((s / 1_500 / 60).max(1) + 1) * 60,
    }
}

#[derive(Default)]
struct Bucket {
    point: Option<MetricPoint>,
    model: BTreeMap<i64, i64>,
    overhead: BTreeMap<i64, i64>,
}

/// An endpoint's metrics from `from` to `to` (seconds), for one variant or all (`*`).
pub async fn series(
    db: &Db,
    p: &Principal,
    name: &str,
    variant: &str,
    from: i64,
    to: i64,
) -> CoreResult<EndpointMetrics> {
    let e = super::endpoint_for(db, p, name, Action::GetEndpoint).await?;
    if to <= from {
        return Err(CoreError::invalid("from", "from must be before to"));
    }
    if to - from > 400 * 86_400 {
        return Err(CoreError::invalid("from", "a range is at most 400 days"));
    }
    let step = step_for(to - from);
    let (from, to) = (from - from.rem_euclid(step), to);
    let all = variant == "*";
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT variant, minute, invocations, errors_4xx, errors_5xx, instances FROM endpoint_metrics \
         WHERE endpoint_id = $1 AND minute >= $2 AND minute < $3 AND ($4 OR variant = $5)",
    )
    .bind(&e.id)
    .bind(from)
    .bind(to)
    .bind(all)
    .bind(variant)
    .fetch_all(&db.pool)
    .await?;
    let latency: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT minute, kind, bucket, n FROM endpoint_latency \
         WHERE endpoint_id = $1 AND minute >= $2 AND minute < $3 AND ($4 OR variant = $5)",
    )
    .bind(&e.id)
    .bind(from)
    .bind(to)
    .bind(all)
    .bind(variant)
    .fetch_all(&db.pool)
    .await?;
    let slots = ((to - from + step - 1) / step) as usize;
    let mut buckets: Vec<Bucket> = (0..slots).map(|_| Bucket::default()).collect();
    // Instances: the sum over variants within a minute, the most over a step's minutes.
    let mut instances_by_minute: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, minute, invocations, e4, e5, instances) in rows {
        let i = ((minute - from) / step) as usize;
        let Some(b) = buckets.get_mut(i) else { continue };
        let point = b.point.get_or_insert_with(|| MetricPoint { at: from + i as i64 * step, ..empty_point() });
        point.invocations += invocations;
        point.errors_4xx += e4;
        point.errors_5xx += e5;
        *instances_by_minute.entry(minute).or_default() += instances;
    }
    for (minute, n) in instances_by_minute {
        let i = ((minute - from) / step) as usize;
        if let Some(point) = buckets.get_mut(i).and_then(|b| b.point.as_mut()) {
            point.instances = point.instances.max(n);
        }
    }
    for (minute, kind, bucket, n) in latency {
        let i = ((minute - from) / step) as usize;
        let Some(b) = buckets.get_mut(i) else { continue };
        let h = if kind == "model" { &mut b.model } else { &mut b.overhead };
        *h.entry(bucket).or_default() += n;
    }
    let points = buckets
        .into_iter()
        .filter_map(|b| {
            let mut point = b.point?;
            point.model_p50_ms = quantile(&b.model, 0.5);
            point.model_p90_ms = quantile(&b.model, 0.9);
            point.model_p99_ms = quantile(&b.model, 0.99);
            point.overhead_p50_ms = quantile(&b.overhead, 0.5);
            point.overhead_p99_ms = quantile(&b.overhead, 0.99);
            Some(point)
        })
        .collect();
    Ok(EndpointMetrics { from, to, step, variant: variant.to_string(), points })
}

fn empty_point() -> MetricPoint {
    MetricPoint {
        at: 0,
        invocations: 0,
        errors_4xx: 0,
        errors_5xx: 0,
        instances: 0,
        model_p50_ms: None,
        model_p90_ms: None,
        model_p99_ms: None,
        overhead_p50_ms: None,
        overhead_p99_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_their_resolution() {
        for micros in [1u64, 7, 100, 950, 12_345, 2_000_000] {
            let ms = bucket_ms(bucket_of(micros));
            let exact = micros as f64 / 1000.0;
            assert!((ms - exact).abs() / exact < 0.1, "{micros} µs came back as {ms} ms");
        }
    }

    #[test]
    fn quantiles_come_from_the_right_bucket() {
        let mut h = BTreeMap::new();
        *h.entry(bucket_of(1_000)).or_default() += 90;
        *h.entry(bucket_of(50_000)).or_default() += 10;
        let p50 = quantile(&h, 0.5).expect("p50");
        let p99 = quantile(&h, 0.99).expect("p99");
        assert!((0.9..1.1).contains(&p50), "p50 {p50}");
        assert!((45.0..55.0).contains(&p99), "p99 {p99}");
        assert_eq!(quantile(&BTreeMap::new(), 0.5), None);
    }

    #[test]
    fn a_week_is_drawn_with_coarser_steps() {
        assert_eq!(step_for(3_600), 60);
        assert_eq!(step_for(86_400), 60);
        let week = 7 * 86_400;
        assert!(week / step_for(week) <= 1_500, "{}", week / step_for(week));
    }
}
