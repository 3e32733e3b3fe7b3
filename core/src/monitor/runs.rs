//! Model Monitor for an endpoint: a baseline profiled from the training data of the
//! version it serves, suggested constraints, a schedule (hourly, daily or on demand)
//! and runs that compare the captured inputs of a window with the baseline.

use std::collections::BTreeMap;

use atelier_protocol::monitor::{Baseline, Constraints, Monitor, MonitorConfig, MonitorRun, Report, Thresholds};
use base64::Engine as _;
use futures::TryStreamExt;

use super::images;
use super::stats::{compare, suggest_constraints, Profiler};
use crate::artifacts::ArtifactStore;
use crate::authz::{Action, Principal};
use crate::db::Db;
use crate::endpoints::{add_event, capture, endpoint_for, EndpointRow};
use crate::{now, CoreError, CoreResult};

/// Below this many captured rows a run says its drift figures are not to be trusted.
const MIN_ROWS: u64 = 100;

/// Most features a baseline profiles: each keeps a sample and its category counts, and
/// the baseline is one stored document.
pub const MAX_FEATURES: usize = 1000;

/// Largest training file or captured window read for a baseline or a run.
const MAX_READ_BYTES: usize = 512 * 1024 * 1024;

#[derive(sqlx::FromRow)]
struct ScheduleRow {
    endpoint_id: String,
    frequency: String,
    thresholds: String,
    baseline: String,
    constraints: String,
    model_group: String,
    model_version: i64,
    last_run_at: Option<i64>,
    next_run_at: Option<i64>,
    created_by: String,
    updated_at: i64,
}

const SCHEDULE_COLUMNS: &str =
    "endpoint_id, frequency, thresholds, baseline, constraints, model_group, model_version, \
                                last_run_at, next_run_at, created_by, updated_at";

fn period(frequency: &str) -> Option<i64> {
    match frequency {
        "hourly" => Some(3600),
        "daily" => Some(86_400),
        _ => None,
    }
}

fn validate(config: &MonitorConfig) -> CoreResult<()> {
    if period(&config.frequency).is_none() && config.frequency != "manual" {
        return Err(CoreError::invalid("frequency", "frequency must be hourly, daily or manual"));
    }
    let t = &config.thresholds;
    let ok = |v: f64, hi: f64| v.is_finite() && v > 0.0 && v <= hi;
    if !ok(t.psi, 10.0) {
        return Err(CoreError::invalid("thresholds.psi", "thresholds.psi must be above 0 and at most 10"));
    }
    if !ok(t.ks, 1.0) {
        return Err(CoreError::invalid("thresholds.ks", "thresholds.ks must be above 0 and at most 1"));
    }
    if !ok(t.js, 1.0) {
        return Err(CoreError::invalid("thresholds.js", "thresholds.js must be above 0 and at most 1"));
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> CoreResult<String> {
    serde_json::to_string(v).map_err(CoreError::internal)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> CoreResult<T> {
    serde_json::from_str(text).map_err(CoreError::internal)
}

impl ScheduleRow {
    fn to_wire(&self, endpoint: &str) -> CoreResult<Monitor> {
        let mut baseline: Baseline = parse(&self.baseline)?;
        // The samples are for computing, not for showing.
        baseline.samples.clear();
        Ok(Monitor {
            endpoint: endpoint.to_string(),
            frequency: self.frequency.clone(),
            thresholds: parse(&self.thresholds)?,
            model_group: self.model_group.clone(),
            model_version: self.model_version,
            baseline,
            constraints: parse(&self.constraints)?,
            last_run_at: self.last_run_at,
            next_run_at: self.next_run_at,
            created_by: self.created_by.clone(),
            updated_at: self.updated_at,
        })
    }
}

async fn schedule_of(db: &Db, endpoint_id: &str) -> CoreResult<Option<ScheduleRow>> {
    Ok(sqlx::query_as(&format!("SELECT {SCHEDULE_COLUMNS} FROM monitor_schedules WHERE endpoint_id = $1"))
        .bind(endpoint_id)
        .fetch_optional(&db.pool)
        .await?)
}

/// The endpoint's monitor, if one is set up.
pub async fn get(db: &Db, p: &Principal, name: &str) -> CoreResult<Option<Monitor>> {
    let e = endpoint_for(db, p, name, Action::GetEndpoint).await?;
    schedule_of(db, &e.id).await?.map(|s| s.to_wire(&e.name)).transpose()
}

/// Sets up (or redoes) the endpoint's monitor: profiles the training data of the
/// version its first variant serves as the baseline, suggests constraints, and
/// schedules runs.
pub async fn configure(
    db: &Db,
    store: &ArtifactStore,
    p: &Principal,
    name: &str,
    config: &MonitorConfig,
) -> CoreResult<Monitor> {
    let e = endpoint_for(db, p, name, Action::UpdateEndpoint).await?;
    validate(config)?;
    let (group, version, baseline) = training_baseline(db, store, &e).await?;
    let constraints = suggest_constraints(&baseline);
    let t = now();
    let next = period(&config.frequency).map(|p| t + p);
    let (baseline_text, constraints_text, thresholds) =
        (json(&baseline)?, json(&constraints)?, json(&config.thresholds)?);
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM monitor_schedules WHERE endpoint_id = $1").bind(&e.id).execute(&mut *tx).await?;
    sqlx::query(&format!(
        "INSERT INTO monitor_schedules ({SCHEDULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10)"
    ))
    .bind(&e.id)
    .bind(&config.frequency)
    .bind(&thresholds)
    .bind(&baseline_text)
    .bind(&constraints_text)
    .bind(&group)
    .bind(version)
    .bind(next)
    .bind(&p.user.username)
    .bind(t)
    .execute(&mut *tx)
    .await?;
    let message = format!(
        "model monitor set up by {}: {} runs, baseline of {} rows from {group} v{version}'s training data",
        p.user.username, config.frequency, baseline.rows
    );
    add_event(&mut *tx, &e.id, &message).await?;
    tx.commit().await?;
    p.note_change(format!("endpoint {name}: {message}"));
    schedule_of(db, &e.id).await?.ok_or(CoreError::NotFound("model monitor"))?.to_wire(&e.name)
}

/// The profile of the training table of the version the endpoint's first variant
/// serves: the CSV files of its training job's `train` channel without the label
/// column, or, for an image model, the statistics of each training image (see
/// [`images`]). Rows are profiled as they are read, never all held at once.
async fn training_baseline(db: &Db, store: &ArtifactStore, e: &EndpointRow) -> CoreResult<(String, i64, Baseline)> {
    let generation = e.active_generation.unwrap_or(e.generation);
    let row: Option<(String, i64, Option<String>, String)> = sqlx::query_as(
        "SELECT g.name, m.version, j.spec, m.hyperparameters FROM endpoint_variants v \
         JOIN model_versions m ON m.id = v.model_version_id JOIN model_groups g ON g.id = m.group_id \
         LEFT JOIN training_jobs j ON j.id = m.training_job_id \
         WHERE v.endpoint_id = $1 AND v.generation = $2 ORDER BY v.name LIMIT 1",
    )
    .bind(&e.id)
    .bind(generation)
    .fetch_optional(&db.pool)
    .await?;
    let Some((group, version, spec, hyperparameters)) = row else {
        return Err(CoreError::invalid("endpoint", "the endpoint has no variant"));
    };
    let no_baseline = |why: &str| {
        CoreError::invalid(
            "endpoint",
            format!(
                "no baseline for {group} v{version}: {why}; monitoring needs a model trained here on CSV data or images"
            ),
        )
    };
    let spec: atelier_protocol::JobSpec =
        spec.and_then(|s| serde_json::from_str(&s).ok()).ok_or_else(|| no_baseline("it was not trained here"))?;
    let channel = spec
        .channels
        .iter()
        .find(|c| c.name == "train")
        .filter(|c| !c.artifacts.is_empty())
        .ok_or_else(|| no_baseline("its training job had no train channel of files"))?;
    if matches!(&spec.algorithm, atelier_protocol::Algorithm::Builtin { name } if name == "image_classification") {
        // The channel also holds the manifest; only the images are profiled.
        let mut profiler = Profiler::new(images::FEATURES.iter().map(|f| f.to_string()).collect());
        for artifact in &channel.artifacts {
            let bytes = read_bytes(store, artifact).await?;
            // Decoding an image is CPU work: off the runtime's threads.
            let stats =
                tokio::task::spawn_blocking(move || images::features(&bytes)).await.map_err(CoreError::internal)?;
            if let Some(stats) = stats {
                let values: Vec<String> = stats.iter().map(|v| images::format(*v)).collect();
                profiler.add_row(&values.iter().map(|v| Some(v.as_str())).collect::<Vec<_>>());
            }
        }
        let baseline = profiler.finish();
        if baseline.rows == 0 {
            return Err(no_baseline("its train channel held no images"));
        }
        return Ok((group, version, baseline));
    }
    let hps: BTreeMap<String, String> = serde_json::from_str(&hyperparameters).unwrap_or_default();
    // The first file's header, the label's position in it, and the profile so far.
    let mut table: Option<(Vec<String>, usize, Profiler)> = None;
    for artifact in &channel.artifacts {
        let text = String::from_utf8_lossy(&read_bytes(store, artifact).await?).into_owned();
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
        let this: Vec<String> = reader
            .headers()
            .map_err(|_| no_baseline("a training file is not CSV"))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        match &table {
            Some((header, _, _)) if *header != this => {
                return Err(no_baseline("its training files have different columns"))
            }
            Some(_) => {}
            None => {
                if this.len() > MAX_FEATURES + 1 {
                    return Err(CoreError::invalid(
                        "endpoint",
                        format!(
                            "{group} v{version}'s training data has {} columns; a baseline profiles at most \
                             {MAX_FEATURES} features",
                            this.len() - 1
                        ),
                    ));
                }
                // The label is what the model predicts, never an input.
                let label = hps.get("label").and_then(|l| this.iter().position(|h| h == l)).unwrap_or(0);
                let columns = this.iter().enumerate().filter(|(i, _)| *i != label).map(|(_, h)| h.clone()).collect();
                table = Some((this, label, Profiler::new(columns)));
            }
        }
        if let Some((_, label, profiler)) = &mut table {
            for record in reader.records().flatten() {
                let values: Vec<Option<&str>> =
                    record.iter().enumerate().filter(|(i, _)| *i != *label).map(|(_, v)| Some(v)).collect();
                profiler.add_row(&values);
            }
        }
    }
    let (_, _, profiler) = table.ok_or_else(|| no_baseline("its training job had no files"))?;
    Ok((group, version, profiler.finish()))
}

async fn read_bytes(store: &ArtifactStore, artifact_id: &str) -> CoreResult<Vec<u8>> {
    let mut stream = store.get(artifact_id).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.try_next().await.map_err(CoreError::internal)? {
        if bytes.len() + chunk.len() > MAX_READ_BYTES {
            return Err(CoreError::TooLarge(format!("a file is larger than {MAX_READ_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The inputs of the captured invocations between `from` and `to`: JSON instances
/// (objects of column to value), CSV rows with a header, and images (sent as bytes,
/// or as JSON instances `{"b64": ...}`) as their statistics. Other payloads are skipped.
async fn captured_rows(
    db: &Db,
    store: &ArtifactStore,
    endpoint_id: &str,
    from: i64,
    to: i64,
) -> CoreResult<Vec<BTreeMap<String, String>>> {
    let mut rows = Vec::new();
    for file in capture::files_of(db, endpoint_id, from, to).await? {
        let bytes = read_bytes(store, &file.artifact_id).await?;
        // Parsing (and decoding captured images) is CPU work: off the runtime's threads.
        let parsed =
            tokio::task::spawn_blocking(move || capture_file_rows(&bytes)).await.map_err(CoreError::internal)?;
        rows.extend(parsed);
    }
    Ok(rows)
}

/// The inputs in one capture file (JSON lines of capture records).
fn capture_file_rows(bytes: &[u8]) -> Vec<BTreeMap<String, String>> {
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let input = &record["captureData"]["endpointInput"];
        let Some(data) = input["data"].as_str() else { continue };
        match input["encoding"].as_str() {
            Some("JSON") => rows.extend(json_rows(data)),
            Some("CSV") => rows.extend(csv_rows(data)),
            Some("BASE64") => {
                let decoded = base64::engine::general_purpose::STANDARD.decode(data).ok();
                rows.extend(decoded.as_deref().and_then(images::row));
            }
            _ => {}
        }
    }
    rows
}

fn json_rows(data: &str) -> Vec<BTreeMap<String, String>> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else { return Vec::new() };
    let list = match &value {
        serde_json::Value::Array(items) => items,
        v => match v["instances"].as_array() {
            Some(items) => items,
            None => return Vec::new(),
        },
    };
    list.iter()
        .filter_map(|item| item.as_object())
        .filter_map(|obj| {
            if let Some(b64) = obj.get("b64").and_then(|v| v.as_str()) {
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
                return images::row(&bytes);
            }
            Some(
                obj.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                    .collect(),
            )
        })
        .collect()
}

fn csv_rows(data: &str) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data.as_bytes());
    let Ok(header) = reader.headers().cloned() else { return Vec::new() };
    reader
        .records()
        .flatten()
        .map(|r| header.iter().zip(r.iter()).map(|(h, v)| (h.trim().to_string(), v.to_string())).collect())
        .collect()
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    started_at: i64,
    window_from: i64,
    window_to: i64,
    status: String,
    message: String,
    row_count: i64,
    drifted: i64,
    violations: i64,
    report: String,
}

const RUN_COLUMNS: &str =
    "id, started_at, window_from, window_to, status, message, row_count, drifted, violations, report";

impl RunRow {
    fn to_wire(&self, with_report: bool) -> MonitorRun {
        MonitorRun {
            id: self.id.clone(),
            started_at: self.started_at,
            window_from: self.window_from,
            window_to: self.window_to,
            status: self.status.clone(),
            message: self.message.clone(),
            rows: self.row_count,
            drifted: self.drifted,
            violations: self.violations,
            report: if with_report { serde_json::from_str::<Report>(&self.report).ok() } else { None },
        }
    }
}

/// Compares the inputs captured between `from` and `to` with the baseline and stores
/// the report.
async fn execute(db: &Db, store: &ArtifactStore, schedule: &ScheduleRow, from: i64, to: i64) -> CoreResult<MonitorRun> {
    let baseline: Baseline = parse(&schedule.baseline)?;
    let constraints: Constraints = parse(&schedule.constraints)?;
    let thresholds: Thresholds = parse(&schedule.thresholds)?;
    let started = now();
    let captured = captured_rows(db, store, &schedule.endpoint_id, from, to).await;
    let (status, message, report) = match captured {
        Err(err) => ("Failed", format!("the captured data could not be read: {err}"), None),
        Ok(rows) if rows.is_empty() => {
            ("NoData", "no captured inputs in this window: is data capture on?".to_string(), None)
        }
        Ok(rows) => {
            // The baseline's columns first, then any others the window has.
            let mut columns: Vec<String> = baseline.features.iter().map(|f| f.name.clone()).collect();
            for row in &rows {
                for key in row.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
            let mut profiler = Profiler::new(columns.clone());
            for row in &rows {
                let values: Vec<Option<&str>> = columns.iter().map(|c| row.get(c).map(String::as_str)).collect();
                profiler.add_row(&values);
            }
            let report = compare(&baseline, &constraints, &thresholds, &profiler.finish());
            let mut message = match (report.drifted, report.violations.len()) {
                (0, 0) => "no drift, no violations".to_string(),
                (d, v) => format!("{d} features drifted, {v} constraint violations"),
            };
            if report.rows < MIN_ROWS {
                message.push_str(&format!(" (only {} rows: too few to judge drift reliably)", report.rows));
            }
            ("Completed", message, Some(report))
        }
    };
    let id = uuid::Uuid::now_v7().to_string();
    let (rows, drifted, violations) =
        report.as_ref().map(|r| (r.rows as i64, r.drifted as i64, r.violations.len() as i64)).unwrap_or((0, 0, 0));
    sqlx::query(&format!(
        "INSERT INTO monitor_runs (endpoint_id, {RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&schedule.endpoint_id)
    .bind(&id)
    .bind(started)
    .bind(from)
    .bind(to)
    .bind(status)
    .bind(&message)
    .bind(rows)
    .bind(drifted)
    .bind(violations)
    .bind(report.as_ref().map(json).transpose()?.unwrap_or_default())
    .execute(&db.pool)
    .await?;
    if drifted > 0 || violations > 0 {
        add_event(&db.pool, &schedule.endpoint_id, &format!("model monitor: {message}")).await?;
    }
    if status == "Completed" {
        crate::endpoints::alarms::evaluate_run(db, store, &schedule.endpoint_id, started, drifted, violations).await?;
    }
    Ok(MonitorRun {
        id,
        started_at: started,
        window_from: from,
        window_to: to,
        status: status.into(),
        message,
        rows,
        drifted,
        violations,
        report,
    })
}

/// Runs the monitor now over `from`..`to` (default: since the last run, or the last
/// hour).
pub async fn run_now(
    db: &Db,
    store: &ArtifactStore,
    p: &Principal,
    name: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> CoreResult<MonitorRun> {
    let e = endpoint_for(db, p, name, Action::UpdateEndpoint).await?;
    let schedule = schedule_of(db, &e.id).await?.ok_or_else(|| {
        CoreError::invalid("endpoint", format!("endpoint {name} has no model monitor; set one up first"))
    })?;
    let to = to.unwrap_or_else(now);
    let from = from.unwrap_or_else(|| schedule.last_run_at.unwrap_or(to - 3600));
    if from > to {
        return Err(CoreError::invalid("from", "from must not be after to"));
    }
    let run = execute(db, store, &schedule, from, to).await?;
    p.note_change(format!("ran the model monitor of endpoint {name}: {}", run.message));
    Ok(run)
}

/// The endpoint's runs, newest first, without their reports.
pub async fn runs(db: &Db, p: &Principal, name: &str) -> CoreResult<Vec<MonitorRun>> {
    let e = endpoint_for(db, p, name, Action::GetEndpoint).await?;
    let rows: Vec<RunRow> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM monitor_runs WHERE endpoint_id = $1 ORDER BY started_at DESC, id DESC LIMIT 100"
    ))
    .bind(&e.id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(|r| r.to_wire(false)).collect())
}

/// One run with its report.
pub async fn run(db: &Db, p: &Principal, name: &str, id: &str) -> CoreResult<MonitorRun> {
    let e = endpoint_for(db, p, name, Action::GetEndpoint).await?;
    let row: Option<RunRow> =
        sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM monitor_runs WHERE endpoint_id = $1 AND id = $2"))
            .bind(&e.id)
            .bind(id)
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.ok_or(CoreError::NotFound("monitoring run"))?.to_wire(true))
}

/// Runs the schedules that are due, each over the window since its last run. A
/// schedule is claimed by moving its next run first, so two replicas never both run it.
pub async fn run_due(db: &Db, store: &ArtifactStore) -> CoreResult<usize> {
    let t = now();
    let due: Vec<ScheduleRow> = sqlx::query_as(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM monitor_schedules WHERE next_run_at IS NOT NULL AND next_run_at <= $1"
    ))
    .bind(t)
    .fetch_all(&db.pool)
    .await?;
    let mut n = 0;
    for schedule in due {
        let Some(every) = period(&schedule.frequency) else { continue };
        let claimed = sqlx::query(
            "UPDATE monitor_schedules SET next_run_at = $1, last_run_at = $2 WHERE endpoint_id = $3 AND next_run_at = $4",
        )
        .bind(t + every)
        .bind(t)
        .bind(&schedule.endpoint_id)
        .bind(schedule.next_run_at)
        .execute(&db.pool)
        .await?;
        if claimed.rows_affected() != 1 {
            continue;
        }
        let from = schedule.last_run_at.unwrap_or(t - every);
        execute(db, store, &schedule, from, t).await?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_payloads_become_rows() {
        let rows = json_rows(r#"{"instances": [{"x1": 0.5, "colour": "red", "gone": null}, 7]}"#);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get("x1").map(String::as_str), Some("0.5"));
        assert_eq!(rows[0].get("colour").map(String::as_str), Some("red"));
        assert!(!rows[0].contains_key("gone"));
        assert_eq!(json_rows(r#"[{"a": 1}, {"a": 2}]"#).len(), 2);
        assert!(json_rows("not json").is_empty());
        // An image sent as JSON becomes its statistics; one that does not decode is skipped.
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30])))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("encode");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        let rows = json_rows(&format!(r#"{{"instances": [{{"b64": "{b64}"}}, {{"b64": "bm90IGFuIGltYWdl"}}]}}"#));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get("width").map(String::as_str), Some("3.000"));
        assert_eq!(rows[0].get("mean_blue").map(String::as_str), Some("30.000"));
        let rows = csv_rows("x1,x2\n1,2\n3,4\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].get("x2").map(String::as_str), Some("4"));
    }

    #[test]
    fn frequencies_and_thresholds_are_checked() {
        let ok = MonitorConfig { frequency: "hourly".into(), thresholds: Thresholds::default() };
        assert!(validate(&ok).is_ok());
        let bad = MonitorConfig { frequency: "weekly".into(), ..ok.clone() };
        assert!(matches!(validate(&bad), Err(CoreError::Invalid { field: "frequency", .. })));
        let bad = MonitorConfig { thresholds: Thresholds { psi: -1.0, ..Thresholds::default() }, ..ok };
        assert!(matches!(validate(&bad), Err(CoreError::Invalid { field: "thresholds.psi", .. })));
    }
}
