//! Metric retention: old per-minute endpoint metrics become hourly rows that chart the
//! same, node samples become per-minute means, and what is past the retention goes.

mod common;

use atelier_core::endpoints::metrics::bucket_of;
use atelier_core::retention::{self, Retention};
use axum::http::{Method, StatusCode};
use common::{Auth, TestApp};
use serde_json::Value;

async fn exec(app: &TestApp, sql: &str, binds: &[i64]) {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(&app.state.db.pool).await.expect("test setup");
}

async fn count(app: &TestApp, sql: &str, binds: &[i64]) -> i64 {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_one(&app.state.db.pool).await.expect("query")
}

async fn series(app: &TestApp, token: &str, from: i64, to: i64) -> Value {
    let path = format!("/api/v1/endpoints/old/metrics?from={from}&to={to}");
    let r = app.call(Method::GET, &path, Auth::Bearer(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn old_metrics_are_folded_and_expired_ones_deleted() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    exec(
        &app,
        "INSERT INTO endpoints (id, name, status, reason, generation, created_by, created_at, updated_at) \
         VALUES ('e', 'old', 'InService', '', 1, 'admin', 0, 0)",
        &[],
    )
    .await;
    let t = atelier_core::now();
    let hour = {
        let h = t - 72 * 3_600;
        h - h.rem_euclid(3_600)
    };
    // Three days ago, a full hour of minutes: 1..=60 invocations, one 4xx each, two
    // instances for one minute; latency mostly 1 ms with a tenth at 100 ms.
    for m in 0..60 {
        let minute = hour + 60 * m;
        exec(
            &app,
            "INSERT INTO endpoint_metrics (endpoint_id, variant, minute, invocations, errors_4xx, errors_5xx, instances) \
             VALUES ('e', 'primary', $1, $2, 1, 0, $3)",
            &[minute, m + 1, if m == 30 { 2 } else { 1 }],
        )
        .await;
        for (bucket, n) in [(bucket_of(1_000), 9), (bucket_of(100_000), 1)] {
            exec(
                &app,
                "INSERT INTO endpoint_latency (endpoint_id, variant, minute, kind, bucket, n) \
                 VALUES ('e', 'primary', $1, 'model', $2, $3)",
                &[minute, bucket, n],
            )
            .await;
        }
    }
    let recent = t - t.rem_euclid(60) - 120;
    let expired = t - 100 * 86_400;
    for minute in [recent, expired] {
        exec(
            &app,
            "INSERT INTO endpoint_metrics (endpoint_id, variant, minute, invocations, instances) VALUES ('e', 'primary', $1, 5, 1)",
            &[minute],
        )
        .await;
    }
    // Node samples two hours ago, every 5 seconds of one minute.
    atelier_core::compute::nodes::create_unchecked(&app.state.db, "n1", "admin").await.expect("test setup");
    let sample_minute = {
        let m = t - 7_200;
        m - m.rem_euclid(60)
    };
    for i in 0..12 {
        sqlx::query(
            "INSERT INTO node_samples (node_id, ts, cpu_pct, memory_used_mb, gpus) \
             SELECT id, $1, $2, $3, $4 FROM nodes WHERE name = 'n1'",
        )
        .bind(sample_minute + i * 5)
        .bind(10.0 * i as f64)
        .bind(1_000 + i)
        .bind(format!(r#"[{{"index":0,"utilization_pct":{},"memory_used_mb":100}}]"#, i * 2))
        .execute(&app.state.db.pool)
        .await
        .expect("test setup");
    }

    // A day-wide view of that hour, before and after: the same totals and percentiles.
    let (from, to) = (hour - 12 * 3_600, hour + 12 * 3_600 + 1);
    let before = series(&app, &token, from, to).await;
    let pass = retention::run(&app.state.db, Retention { detail_hours: 48, days: 90 }).await.expect("retention");
    assert_eq!(pass.hours_folded, 1, "{pass:?}");
    assert_eq!(pass.minutes_folded, 1, "{pass:?}");
    assert!(pass.rows_deleted >= 1, "{pass:?}");
    let after = series(&app, &token, from, to).await;
    let points = after["points"].as_array().expect("points");
    assert_eq!(points.len(), 1, "{after:#}");
    let p = &points[0];
    assert_eq!(p["invocations"], 60 * 61 / 2);
    assert_eq!(p["errors_4xx"], 60);
    assert_eq!(p["instances"], 2);
    let total =
        |v: &Value| v["points"].as_array().map_or(0, |l| l.iter().filter_map(|p| p["invocations"].as_i64()).sum());
    assert_eq!(total(&before), total(&after));
    let p50 = p["model_p50_ms"].as_f64().expect("p50");
    let p99 = p["model_p99_ms"].as_f64().expect("p99");
    assert!((0.9..1.1).contains(&p50), "{p50}");
    assert!((90.0..110.0).contains(&p99), "{p99}");

    let rows = "SELECT COUNT(*) FROM endpoint_metrics WHERE minute >= $1 AND minute < $2";
    assert_eq!(count(&app, rows, &[hour, hour + 3_600]).await, 1);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM endpoint_latency WHERE minute >= $1 AND minute < $2", &[hour, hour + 3_600])
            .await,
        2
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM endpoint_metrics WHERE minute = $1", &[recent]).await,
        1,
        "recent minutes stay"
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM endpoint_metrics WHERE minute = $1", &[expired]).await,
        0,
        "expired rows go"
    );

    let (ts, cpu, memory, gpus): (i64, f64, i64, String) =
        sqlx::query_as("SELECT ts, cpu_pct, memory_used_mb, gpus FROM node_samples")
            .fetch_one(&app.state.db.pool)
            .await
            .expect("one sample for the minute");
    assert_eq!((ts, cpu, memory), (sample_minute, 55.0, 1_006));
    assert!(gpus.contains("\"utilization_pct\":11.0"), "{gpus}");

    // A second pass changes nothing.
    let again = retention::run(&app.state.db, Retention { detail_hours: 48, days: 90 }).await.expect("retention");
    assert_eq!(again, retention::Pass::default());
    assert_eq!(series(&app, &token, from, to).await, after);
}
