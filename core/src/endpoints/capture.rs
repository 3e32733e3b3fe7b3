//! Data capture: a sampled share of an endpoint's requests and responses, kept as JSON
//! Lines files in the artifact store (SageMaker's capture record format), partitioned
//! by hour, within a disk budget. When the budget is used, capture pauses and says so;
//! serving is not affected.

use atelier_protocol::endpoints::{CaptureFile, DataCapture, DataCaptureStatus};

use super::{add_event, endpoint_for, EndpointRow};
use crate::artifacts::{self, ArtifactStore, NewArtifact};
use crate::authz::{Action, Principal};
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// The artifact kind of captured files.
pub const KIND: &str = "capture";

pub fn validate(dc: &DataCapture) -> CoreResult<()> {
    if !(0..=100).contains(&dc.percent) {
        return Err(CoreError::invalid("data_capture.percent", "data_capture.percent must be 0-100"));
    }
    if !(1..=1_048_576).contains(&dc.budget_mb) {
        return Err(CoreError::invalid("data_capture.budget_mb", "data_capture.budget_mb must be 1-1048576"));
    }
    Ok(())
}

/// Bytes and records captured so far.
async fn used(db: &Db, endpoint_id: &str) -> CoreResult<(i64, i64)> {
    let (bytes, records): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT CAST(SUM(bytes) AS BIGINT), CAST(SUM(records) AS BIGINT) FROM endpoint_captures WHERE endpoint_id = $1",
    )
    .bind(endpoint_id)
    .fetch_one(&db.pool)
    .await?;
    Ok((bytes.unwrap_or(0), records.unwrap_or(0)))
}

pub(crate) async fn status(db: &Db, row: &EndpointRow) -> CoreResult<DataCaptureStatus> {
    let (used_bytes, records) = used(db, &row.id).await?;
    Ok(DataCaptureStatus {
        percent: row.capture_percent,
        budget_mb: row.capture_budget_mb,
        used_bytes,
        records,
        paused: (!row.capture_paused.is_empty()).then(|| row.capture_paused.clone()),
    })
}

/// Changes the capture settings; a larger budget resumes a paused capture.
pub async fn configure(db: &Db, p: &Principal, name: &str, dc: &DataCapture) -> CoreResult<DataCaptureStatus> {
    let row = endpoint_for(db, p, name, Action::UpdateEndpoint).await?;
    validate(dc)?;
    let (used_bytes, _) = used(db, &row.id).await?;
    let paused = if used_bytes >= dc.budget_mb * 1_048_576 { paused_reason(dc.budget_mb) } else { String::new() };
    sqlx::query(
        "UPDATE endpoints SET capture_percent = $1, capture_budget_mb = $2, capture_paused = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(dc.percent)
    .bind(dc.budget_mb)
    .bind(&paused)
    .bind(now())
    .bind(&row.id)
    .execute(&db.pool)
    .await?;
    let message = format!("data capture set to {}% (budget {} MB) by {}", dc.percent, dc.budget_mb, p.user.username);
    add_event(&db.pool, &row.id, &message).await?;
    p.note_change(format!("endpoint {name}: {message}"));
    status(db, &super::find(db, name).await?).await
}

fn paused_reason(budget_mb: i64) -> String {
    format!("capture paused: its {budget_mb} MB budget is used (serving continues); raise the budget to resume")
}

/// Captured files whose records fall between `from` and `to` (seconds), oldest first.
pub async fn files(db: &Db, p: &Principal, name: &str, from: i64, to: i64) -> CoreResult<Vec<CaptureFile>> {
    let row = endpoint_for(db, p, name, Action::GetEndpoint).await?;
    files_of(db, &row.id, from, to).await
}

pub(crate) async fn files_of(db: &Db, endpoint_id: &str, from: i64, to: i64) -> CoreResult<Vec<CaptureFile>> {
    let rows: Vec<(String, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT c.artifact_id, a.name, c.hour, c.first_at, c.last_at, c.records, c.bytes FROM endpoint_captures c \
         JOIN artifacts a ON a.id = c.artifact_id WHERE c.endpoint_id = $1 AND c.last_at >= $2 AND c.first_at <= $3 \
         ORDER BY c.first_at, c.id",
    )
    .bind(endpoint_id)
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(artifact_id, name, hour, first_at, last_at, records, bytes)| CaptureFile {
            artifact_id,
            name,
            hour,
            first_at,
            last_at,
            records,
            bytes,
        })
        .collect())
}

/// A captured file of the endpoint, for someone who may read the endpoint.
pub async fn file(db: &Db, p: &Principal, name: &str, artifact_id: &str) -> CoreResult<artifacts::Artifact> {
    let row = endpoint_for(db, p, name, Action::GetEndpoint).await?;
    let found: Option<(String,)> =
        sqlx::query_as("SELECT artifact_id FROM endpoint_captures WHERE endpoint_id = $1 AND artifact_id = $2")
            .bind(&row.id)
            .bind(artifact_id)
            .fetch_optional(&db.pool)
            .await?;
    found.ok_or(CoreError::NotFound("captured file"))?;
    artifacts::get(db, artifact_id).await
}

/// What a server replica buffered for one endpoint and hour.
pub struct Batch {
    pub endpoint_id: String,
    pub endpoint: String,
    pub hour: i64,
    pub first_at: i64,
    pub last_at: i64,
    pub records: i64,
    pub lines: Vec<u8>,
}

/// Stores a batch as one file; pauses capture once the budget is used. A batch of an
/// endpoint deleted meanwhile is dropped.
pub async fn store(db: &Db, store: &ArtifactStore, batch: Batch) -> CoreResult<()> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT capture_budget_mb FROM endpoints WHERE id = $1")
        .bind(&batch.endpoint_id)
        .fetch_optional(&db.pool)
        .await?;
    let Some((budget_mb,)) = row else { return Ok(()) };
    let stamp = time::OffsetDateTime::from_unix_timestamp(batch.hour)
        .map(|t| format!("{:04}-{:02}-{:02}T{:02}", t.year(), u8::from(t.month()), t.day(), t.hour()))
        .unwrap_or_default();
    let name = format!("capture-{}-{stamp}-{}.jsonl", batch.endpoint, uuid::Uuid::new_v4().simple());
    let bytes = batch.lines.len() as i64;
    let body = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes::Bytes::from(batch.lines)) });
    let created_by = format!("endpoint:{}", batch.endpoint);
    let new = NewArtifact { name: &name, kind: KIND, job_id: None, created_by: &created_by };
    let artifact = store.put(db, new, body, u64::MAX).await?;
    sqlx::query(
        "INSERT INTO endpoint_captures (id, endpoint_id, artifact_id, hour, first_at, last_at, records, bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&batch.endpoint_id)
    .bind(&artifact.id)
    .bind(batch.hour)
    .bind(batch.first_at)
    .bind(batch.last_at)
    .bind(batch.records)
    .bind(bytes)
    .execute(&db.pool)
    .await?;
    let (used_bytes, _) = used(db, &batch.endpoint_id).await?;
    if used_bytes >= budget_mb * 1_048_576 {
        let reason = paused_reason(budget_mb);
        let paused = sqlx::query("UPDATE endpoints SET capture_paused = $1 WHERE id = $2 AND capture_paused = ''")
            .bind(&reason)
            .bind(&batch.endpoint_id)
            .execute(&db.pool)
            .await?;
        if paused.rows_affected() == 1 {
            add_event(&db.pool, &batch.endpoint_id, &reason).await?;
        }
    }
    Ok(())
}
