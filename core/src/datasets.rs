//! Datasets: immutable items, images or texts, that labeling jobs and training jobs
//! read. Items arrive in batches (an upload of files, or a Ground Truth input manifest
//! with the images it names); each batch records what it rejected, file by file and
//! line by line, while the rest of it is imported.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::artifacts::{self, kind, ArtifactStore, NewArtifact};
use crate::authz::{authorize, Action, Principal, Resource};
use crate::db::Db;
use crate::iam::store::validate_name;
use crate::{now, CoreError, CoreResult};

/// Largest text item, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Largest text file read whole (CSV, JSON Lines, manifests), in bytes.
pub const MAX_TEXT_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Most rejections kept per batch; more are counted, not listed.
const MAX_REJECTIONS_LISTED: usize = 1000;
/// Most items (and manifest lines naming images) one batch takes: a batch is held in
/// memory until it is stored in one transaction, so it is bounded; more data goes in
/// more batches.
pub const MAX_BATCH_ITEMS: usize = 1_000_000;
/// Most text, in bytes, one batch holds in all (its items are stored in the database).
pub const MAX_BATCH_TEXT_BYTES: usize = 256 * 1024 * 1024;

/// What a dataset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    Image,
    Text,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Image => "image",
            DatasetKind::Text => "text",
        }
    }
    pub fn parse(s: &str) -> CoreResult<DatasetKind> {
        match s.trim() {
            "image" => Ok(DatasetKind::Image),
            "text" => Ok(DatasetKind::Text),
            other => Err(CoreError::invalid("kind", format!("kind must be image or text, not \"{other}\""))),
        }
    }
}

/// A dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Dataset {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub item_count: i64,
    pub total_bytes: i64,
    pub created_by: String,
    pub created_at: i64,
}

/// One upload into a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Batch {
    pub seq: i64,
    pub source: String,
    pub item_count: i64,
    pub total_bytes: i64,
    /// JSON list of "name: why".
    pub rejected: String,
    pub created_by: String,
    pub created_at: i64,
}

impl Batch {
    pub fn rejections(&self) -> Vec<String> {
        serde_json::from_str(&self.rejected).unwrap_or_default()
    }
}

/// One item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Item {
    pub seq: i64,
    pub batch_seq: i64,
    pub name: String,
    pub artifact_id: Option<String>,
    pub text: Option<String>,
    pub media_type: String,
    pub size: i64,
    pub source_ref: Option<String>,
    pub created_at: i64,
}

const DATASET_COLUMNS: &str = "id, name, description, kind, item_count, total_bytes, created_by, created_at";
const ITEM_COLUMNS: &str = "seq, batch_seq, name, artifact_id, text, media_type, size, source_ref, created_at";

/// The resource name of a dataset.
pub fn resource(dataset: &Dataset) -> Resource {
    Resource::new(format!("atelier:datasets:dataset/{}", dataset.name)).created_by(dataset.created_by.clone())
}

/// Datasets the principal may see, by name.
pub async fn list(db: &Db, p: &Principal) -> CoreResult<Vec<Dataset>> {
    authorize(p, Action::ListDatasets, &Resource::new("atelier:datasets:dataset/*"))?;
    let all: Vec<Dataset> =
        sqlx::query_as(&format!("SELECT {DATASET_COLUMNS} FROM datasets ORDER BY name")).fetch_all(&db.pool).await?;
    Ok(all.into_iter().filter(|d| p.can(Action::GetDataset, &resource(d))).collect())
}

async fn find(db: &Db, name: &str) -> CoreResult<Dataset> {
    let found: Option<Dataset> = sqlx::query_as(&format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE name = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    found.ok_or(CoreError::NotFound("dataset"))
}

/// A dataset the principal may do `action` on.
pub async fn get_for(db: &Db, p: &Principal, name: &str, action: Action) -> CoreResult<Dataset> {
    authorize(p, action, &Resource::new(format!("atelier:datasets:dataset/{name}")))?;
    let dataset = find(db, name).await?;
    authorize(p, action, &resource(&dataset))?;
    Ok(dataset)
}

/// A dataset by name.
pub async fn get(db: &Db, p: &Principal, name: &str) -> CoreResult<Dataset> {
    get_for(db, p, name, Action::GetDataset).await
}

/// Creates an empty dataset; items arrive with `Upload`.
pub async fn create(db: &Db, p: &Principal, name: &str, description: &str, kind: DatasetKind) -> CoreResult<Dataset> {
    let name = validate_name("name", name)?;
    authorize(p, Action::CreateDataset, &Resource::new(format!("atelier:datasets:dataset/{name}")))?;
    let description = description.trim();
    if description.chars().count() > 1000 {
        return Err(CoreError::invalid("description", "description must be at most 1000 characters"));
    }
    let dataset = Dataset {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        description: description.to_string(),
        kind: kind.as_str().to_string(),
        item_count: 0,
        total_bytes: 0,
        created_by: p.user.username.clone(),
        created_at: now(),
    };
    sqlx::query(&format!("INSERT INTO datasets ({DATASET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(&dataset.id)
        .bind(&dataset.name)
        .bind(&dataset.description)
        .bind(&dataset.kind)
        .bind(dataset.item_count)
        .bind(dataset.total_bytes)
        .bind(&dataset.created_by)
        .bind(dataset.created_at)
        .execute(&db.pool)
        .await
        .map_err(|e| match CoreError::from(e) {
            CoreError::Conflict(_) => CoreError::Conflict(format!("a dataset named {} already exists", dataset.name)),
            other => other,
        })?;
    p.note_change(format!("created {} dataset {}", dataset.kind, dataset.name));
    Ok(dataset)
}

/// The dataset's batches, oldest first.
pub async fn batches(db: &Db, dataset: &Dataset) -> CoreResult<Vec<Batch>> {
    Ok(sqlx::query_as(
        "SELECT seq, source, item_count, total_bytes, rejected, created_by, created_at FROM dataset_batches \
         WHERE dataset_id = $1 ORDER BY seq",
    )
    .bind(&dataset.id)
    .fetch_all(&db.pool)
    .await?)
}

/// A page of items in order: those after position `after`, at most `limit`.
pub async fn items(db: &Db, dataset: &Dataset, after: i64, limit: i64) -> CoreResult<Vec<Item>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM dataset_items WHERE dataset_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ))
    .bind(&dataset.id)
    .bind(after)
    .bind(limit.clamp(1, 1000))
    .fetch_all(&db.pool)
    .await?)
}

/// The item at position `seq`.
pub async fn item(db: &Db, dataset: &Dataset, seq: i64) -> CoreResult<Item> {
    let found: Option<Item> =
        sqlx::query_as(&format!("SELECT {ITEM_COLUMNS} FROM dataset_items WHERE dataset_id = $1 AND seq = $2"))
            .bind(&dataset.id)
            .bind(seq)
            .fetch_optional(&db.pool)
            .await?;
    found.ok_or(CoreError::NotFound("dataset item"))
}

/// Most items a dataset may give a training channel (each becomes a file on the node).
pub const MAX_CHANNEL_ITEMS: i64 = 100_000;

/// The files a training channel gets from a dataset, as (artifact id, file name): a
/// Ground Truth input manifest `<dataset>.manifest` first (one line per item: `source`
/// for a text, `source-ref` naming an image's file), then the images. The manifest is
/// stored as a new artifact.
pub async fn channel_files(
    db: &Db,
    store: &ArtifactStore,
    p: &Principal,
    name: &str,
) -> CoreResult<Vec<(String, String)>> {
    let dataset = get(db, p, name).await?;
    if dataset.item_count > MAX_CHANNEL_ITEMS {
        return Err(CoreError::invalid(
            "spec",
            format!("dataset {name} has {} items; a channel takes at most {MAX_CHANNEL_ITEMS}", dataset.item_count),
        ));
    }
    let items: Vec<(i64, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT seq, name, artifact_id, text FROM dataset_items WHERE dataset_id = $1 ORDER BY seq")
            .bind(&dataset.id)
            .fetch_all(&db.pool)
            .await?;
    let mut manifest = String::new();
    let mut files = Vec::new();
    let mut seen: HashMap<&str, i64> = HashMap::new();
    for (seq, file, artifact, text) in &items {
        let line = match (artifact, text) {
            (Some(id), _) => {
                if let Some(first) = seen.insert(file, *seq) {
                    return Err(CoreError::invalid(
                        "spec",
                        format!("dataset {name} has two images named {file} (items {first} and {seq}); a channel needs distinct file names"),
                    ));
                }
                files.push((id.clone(), file.clone()));
                serde_json::json!({"source-ref": file, "dataset-item": seq})
            }
            (None, Some(t)) => serde_json::json!({"source": t, "dataset-item": seq}),
            (None, None) => continue,
        };
        manifest.push_str(&line.to_string());
        manifest.push('\n');
    }
    let manifest_name = format!("{name}.manifest");
    let new = NewArtifact { name: &manifest_name, kind: kind::UPLOAD, job_id: None, created_by: &p.user.username };
    let body = futures::stream::once(async move { Ok::<Bytes, String>(Bytes::from(manifest)) });
    let stored = store.put(db, new, body, u64::MAX).await?;
    let mut out = vec![(stored.id, manifest_name)];
    out.extend(files);
    Ok(out)
}

/// Training job states in which a job still reads (or will read) its inputs.
const ACTIVE_JOB_STATES: [&str; 5] = ["Pending", "Starting", "Downloading", "Training", "Uploading"];

/// What uses the dataset now and forbids deleting it or its items: training jobs not
/// yet finished with a channel from it (directly or through a labeling job on it), and
/// labeling jobs on it in progress. With `all_labeling_jobs`, every labeling job made
/// from it counts (they read its items for their output).
async fn users(db: &Db, dataset: &Dataset, all_labeling_jobs: bool) -> CoreResult<Vec<String>> {
    let labeling: Vec<(String, String)> =
        sqlx::query_as("SELECT name, status FROM labeling_jobs WHERE dataset_id = $1 ORDER BY name")
            .bind(&dataset.id)
            .fetch_all(&db.pool)
            .await?;
    let mut out = Vec::new();
    let placeholders = ACTIVE_JOB_STATES.iter().enumerate().map(|(i, _)| format!("${}", i + 1)).collect::<Vec<_>>();
    let sql = format!(
        "SELECT name, state, spec FROM training_jobs WHERE state IN ({}) ORDER BY name",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String, String, String)>(&sql);
    for state in ACTIVE_JOB_STATES {
        query = query.bind(state);
    }
    for (job, state, spec) in query.fetch_all(&db.pool).await? {
        let Ok(spec) = serde_json::from_str::<atelier_protocol::JobSpec>(&spec) else { continue };
        let uses = spec.channels.iter().any(|c| {
            c.dataset.as_deref() == Some(dataset.name.as_str())
                || c.labeling_job.as_deref().is_some_and(|l| labeling.iter().any(|(n, _)| n == l))
        });
        if uses {
            out.push(format!("training job {job} ({state})"));
        }
    }
    for (job, status) in labeling {
        if status == crate::labeling::jobs::IN_PROGRESS {
            out.push(format!("labeling job {job} (in progress)"));
        } else if all_labeling_jobs {
            out.push(format!("labeling job {job} ({status}), whose output reads its items"));
        }
    }
    Ok(out)
}

fn refuse_in_use(what: &str, users: &[String]) -> CoreResult<()> {
    if users.is_empty() {
        return Ok(());
    }
    Err(CoreError::Conflict(format!("{what} is in use by {}", users.join(", "))))
}

/// Removes the stored bytes of artifacts whose records are already gone; one that
/// fails is logged (the record is gone, so nothing refers to it any more).
async fn delete_contents(store: &ArtifactStore, ids: &[String]) {
    for id in ids {
        if let Err(err) = store.delete_content(id).await {
            tracing::warn!(%err, artifact = %id, "could not remove a deleted dataset item's file");
        }
    }
}

/// Deletes the artifact records in `ids` that no dataset item refers to any more;
/// returns those deleted.
async fn delete_unused_artifacts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ids: Vec<String>,
) -> CoreResult<Vec<String>> {
    let mut deleted = Vec::new();
    for id in ids {
        let still: i64 =
            sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM dataset_items WHERE artifact_id = $1")
                .bind(&id)
                .fetch_one(&mut **tx)
                .await?;
        if still > 0 {
            continue;
        }
        sqlx::query("DELETE FROM artifacts WHERE id = $1").bind(&id).execute(&mut **tx).await?;
        deleted.push(id);
    }
    Ok(deleted)
}

/// Deletes a dataset: its items, batches and record in one transaction, then its files
/// from the store. Refused (409, naming them) while a training job that is not
/// finished reads it or a labeling job was made from it. Training jobs and model
/// versions keep its name in their lineage, shown as "deleted dataset NAME".
pub async fn delete_dataset(db: &Db, store: &ArtifactStore, p: &Principal, name: &str) -> CoreResult<()> {
    let dataset = get_for(db, p, name, Action::DeleteDataset).await?;
    refuse_in_use(&format!("dataset {}", dataset.name), &users(db, &dataset, true).await?)?;
    let mut tx = db.pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT artifact_id FROM dataset_items WHERE dataset_id = $1 AND artifact_id IS NOT NULL",
    )
    .bind(&dataset.id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM dataset_items WHERE dataset_id = $1").bind(&dataset.id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM dataset_batches WHERE dataset_id = $1").bind(&dataset.id).execute(&mut *tx).await?;
    let removed = sqlx::query("DELETE FROM datasets WHERE id = $1").bind(&dataset.id).execute(&mut *tx).await?;
    if removed.rows_affected() != 1 {
        return Err(CoreError::NotFound("dataset"));
    }
    let deleted = delete_unused_artifacts(&mut tx, ids).await?;
    tx.commit().await?;
    delete_contents(store, &deleted).await;
    p.note_change(format!(
        "deleted {} dataset {}: {} items, {} bytes, {} files removed",
        dataset.kind,
        dataset.name,
        dataset.item_count,
        dataset.total_bytes,
        deleted.len()
    ));
    Ok(())
}

/// Removes the item at position `seq` (and its file, unless another item shares it);
/// the other items keep their positions. Refused while the dataset is in use.
pub async fn remove_item(db: &Db, store: &ArtifactStore, p: &Principal, name: &str, seq: i64) -> CoreResult<()> {
    let dataset = get_for(db, p, name, Action::UpdateDataset).await?;
    let item = item(db, &dataset, seq).await?;
    refuse_in_use(&format!("dataset {}", dataset.name), &users(db, &dataset, false).await?)?;
    let mut tx = db.pool.begin().await?;
    let removed = sqlx::query("DELETE FROM dataset_items WHERE dataset_id = $1 AND seq = $2")
        .bind(&dataset.id)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() != 1 {
        return Err(CoreError::NotFound("dataset item"));
    }
    sqlx::query("UPDATE datasets SET item_count = item_count - 1, total_bytes = total_bytes - $1 WHERE id = $2")
        .bind(item.size)
        .bind(&dataset.id)
        .execute(&mut *tx)
        .await?;
    let deleted = delete_unused_artifacts(&mut tx, item.artifact_id.clone().into_iter().collect()).await?;
    tx.commit().await?;
    delete_contents(store, &deleted).await;
    p.note_change(format!("removed item {seq} ({}) from dataset {}", item.name, dataset.name));
    Ok(())
}

/// Which of these dataset names no longer name a dataset (for lineage: "deleted
/// dataset NAME").
pub async fn deleted_among(db: &Db, names: &[String]) -> CoreResult<Vec<String>> {
    let mut out = Vec::new();
    for name in names {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM datasets WHERE name = $1").bind(name).fetch_optional(&db.pool).await?;
        if found.is_none() {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// The media type of an image, from its first bytes; `None` if it is not PNG, JPEG or
/// WebP (the file name is not trusted).
pub fn image_type(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// An item about to be stored.
#[derive(Debug)]
struct NewItem {
    name: String,
    artifact_id: Option<String>,
    text: Option<String>,
    media_type: &'static str,
    size: i64,
    source_ref: Option<String>,
}

/// What a file's extension says it is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FileKind {
    Image,
    Txt,
    Csv,
    JsonLines,
    Manifest,
}

fn file_kind(name: &str) -> Option<FileKind> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" | "jpg" | "jpeg" | "webp" => Some(FileKind::Image),
        "txt" => Some(FileKind::Txt),
        "csv" => Some(FileKind::Csv),
        "jsonl" => Some(FileKind::JsonLines),
        "manifest" => Some(FileKind::Manifest),
        _ => None,
    }
}

/// One batch being uploaded: files are added one at a time as they stream in (images
/// go straight to the artifact store), then `finish` stores the items and the batch
/// in one transaction. A file or line that cannot be imported is rejected with the
/// reason; the rest is kept.
pub struct Upload {
    dataset: Dataset,
    kind: DatasetKind,
    created_by: String,
    text_column: Option<String>,
    items: Vec<NewItem>,
    files: Vec<String>,
    rejected: Vec<String>,
    /// Rejections past [`MAX_REJECTIONS_LISTED`], counted only.
    more_rejected: usize,
    /// Text held in `items`, in bytes.
    text_bytes: usize,
    /// Manifest lines naming images: (origin, source-ref).
    refs: Vec<(String, String)>,
}

impl Upload {
    /// Starts a batch for the dataset `name`, if the principal may add to it.
    pub async fn begin(db: &Db, p: &Principal, name: &str) -> CoreResult<Upload> {
        let dataset = get_for(db, p, name, Action::UpdateDataset).await?;
        let kind = DatasetKind::parse(&dataset.kind)?;
        Ok(Upload {
            dataset,
            kind,
            created_by: p.user.username.clone(),
            text_column: None,
            items: Vec::new(),
            files: Vec::new(),
            rejected: Vec::new(),
            more_rejected: 0,
            text_bytes: 0,
            refs: Vec::new(),
        })
    }

    /// Names the CSV column that holds the text for the CSV files added after this
    /// (default `text`, else the first column).
    pub fn set_text_column(&mut self, column: &str) {
        self.text_column = Some(column.trim().to_string()).filter(|c| !c.is_empty());
    }

    /// Whether no file was added yet.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.rejected.is_empty()
    }

    fn reject(&mut self, what: impl Into<String>) {
        if self.rejected.len() < MAX_REJECTIONS_LISTED {
            self.rejected.push(what.into());
        } else {
            self.more_rejected += 1;
        }
    }

    /// Whether the batch has room for one more item (or manifest line); rejects `origin`
    /// with the reason when it has not.
    fn has_room(&mut self, origin: &str) -> bool {
        let full = self.items.len() + self.refs.len() >= MAX_BATCH_ITEMS;
        if full {
            self.reject(format!(
                "{origin}: the batch already holds {MAX_BATCH_ITEMS} items, the most one batch takes; \
                 upload the rest in another batch"
            ));
        }
        !full
    }

    /// Adds one uploaded file. Errors only for what ends the whole upload (the store
    /// failing, the client going away); a bad file is rejected and the upload goes on.
    pub async fn add_file<S, E>(
        &mut self,
        store: &ArtifactStore,
        db: &Db,
        name: &str,
        body: S,
        max_bytes: u64,
    ) -> CoreResult<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let name = match artifacts::validate_file_name("file", name) {
            Ok(n) => n,
            Err(err) => {
                self.reject(format!("{name}: {err}"));
                return Ok(());
            }
        };
        self.files.push(name.clone());
        let expected = match (file_kind(&name), self.kind) {
            (Some(FileKind::Image), DatasetKind::Image) => FileKind::Image,
            (Some(k @ (FileKind::Txt | FileKind::Csv | FileKind::JsonLines)), DatasetKind::Text) => k,
            (Some(FileKind::Manifest), _) => FileKind::Manifest,
            (_, DatasetKind::Image) => {
                self.reject(format!("{name}: an image dataset takes PNG, JPEG or WebP files and .manifest files"));
                return Ok(());
            }
            (_, DatasetKind::Text) => {
                self.reject(format!("{name}: a text dataset takes .txt, .csv, .jsonl and .manifest files"));
                return Ok(());
            }
        };
        let mut body = std::pin::pin!(body);
        if expected == FileKind::Image {
            // Peek at the first chunk: the bytes, not the name, say what an image is.
            let first = match body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(CoreError::invalid("file", format!("{name}: upload interrupted: {e}"))),
                None => Bytes::new(),
            };
            let Some(media_type) = image_type(&first) else {
                self.reject(format!("{name}: not a PNG, JPEG or WebP image"));
                return Ok(());
            };
            if !self.has_room(&name) {
                return Ok(());
            }
            let stream = futures::stream::once(async move { Ok::<Bytes, String>(first) })
                .chain(body.map(|r| r.map_err(|e| e.to_string())));
            let new = NewArtifact { name: &name, kind: kind::DATASET, job_id: None, created_by: &self.created_by };
            let artifact = match store.put(db, new, stream, max_bytes).await {
                Ok(a) => a,
                Err(CoreError::TooLarge(why)) => {
                    self.reject(why);
                    return Ok(());
                }
                Err(other) => return Err(other),
            };
            self.items.push(NewItem {
                name,
                artifact_id: Some(artifact.id),
                text: None,
                media_type,
                size: artifact.size,
                source_ref: None,
            });
            return Ok(());
        }
        let mut raw = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| CoreError::invalid("file", format!("{name}: upload interrupted: {e}")))?;
            if (raw.len() + chunk.len()) as u64 > MAX_TEXT_FILE_BYTES {
                self.reject(format!("{name}: larger than {MAX_TEXT_FILE_BYTES} bytes"));
                return Ok(());
            }
            raw.extend_from_slice(&chunk);
        }
        let Ok(text) = String::from_utf8(raw) else {
            self.reject(format!("{name}: not UTF-8 text"));
            return Ok(());
        };
        match expected {
            FileKind::Txt => self.add_text(name.clone(), name, &text),
            FileKind::Csv => self.add_csv(&name, &text),
            FileKind::JsonLines | FileKind::Manifest => self.add_lines(&name, &text),
            FileKind::Image => {}
        }
        Ok(())
    }

    fn add_text(&mut self, origin: String, name: String, text: &str) {
        if text.trim().is_empty() {
            self.reject(format!("{origin}: empty text"));
        } else if text.len() > MAX_TEXT_BYTES {
            self.reject(format!("{origin}: text longer than {MAX_TEXT_BYTES} bytes"));
        } else if self.text_bytes + text.len() > MAX_BATCH_TEXT_BYTES {
            self.reject(format!(
                "{origin}: the batch already holds {} MiB of text, the most one batch takes; \
                 upload the rest in another batch",
                MAX_BATCH_TEXT_BYTES / (1024 * 1024)
            ));
        } else if self.has_room(&origin) {
            self.text_bytes += text.len();
            self.items.push(NewItem {
                name,
                artifact_id: None,
                text: Some(text.to_string()),
                media_type: "text/plain",
                size: text.len() as i64,
                source_ref: None,
            });
        }
    }

    fn add_csv(&mut self, file: &str, text: &str) {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
        let header: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
            Err(e) => return self.reject(format!("{file}: not CSV: {e}")),
        };
        let wanted = self.text_column.clone().unwrap_or_else(|| "text".into());
        let column = match header.iter().position(|h| *h == wanted) {
            Some(i) => i,
            None if self.text_column.is_some() => {
                return self.reject(format!("{file}: no column named {wanted} (columns: {})", header.join(", ")))
            }
            None => 0,
        };
        for (i, record) in reader.records().enumerate() {
            let origin = format!("{file} line {}", i + 2);
            match record {
                Ok(r) => match r.get(column) {
                    Some(t) => self.add_text(origin.clone(), origin, t),
                    None => self.reject(format!("{origin}: has no column {}", header[column])),
                },
                Err(e) => self.reject(format!("{origin}: {e}")),
            }
        }
    }

    /// JSON Lines (`text` or `source`) and Ground Truth input manifests (`source`, or
    /// `source-ref` naming an image uploaded in the same batch).
    fn add_lines(&mut self, file: &str, text: &str) {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{file} line {}", i + 1);
            let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(line) {
                Ok(o) => o,
                Err(e) => {
                    self.reject(format!("{origin}: not a JSON object: {e}"));
                    continue;
                }
            };
            let inline = object.get("source").or_else(|| object.get("text")).and_then(|v| v.as_str());
            let reference = object.get("source-ref").and_then(|v| v.as_str());
            match (self.kind, inline, reference) {
                (DatasetKind::Text, Some(t), _) => self.add_text(origin.clone(), origin, t),
                (DatasetKind::Image, _, Some(r)) => {
                    if self.has_room(&origin) {
                        self.refs.push((origin, r.to_string()))
                    }
                }
                (DatasetKind::Text, None, _) => {
                    self.reject(format!("{origin}: a text item needs \"source\" or \"text\""))
                }
                (DatasetKind::Image, _, None) => self.reject(format!("{origin}: an image item needs \"source-ref\"")),
            }
        }
    }

    /// Stores the batch's items and the batch record. Manifest references are matched
    /// to the uploaded images by file name (`s3://bucket/cats/1.jpg` matches `1.jpg`).
    /// On an error nothing was recorded; `abort` then removes the stored images.
    pub async fn finish(&mut self, db: &Db) -> CoreResult<Batch> {
        let by_name: HashMap<String, usize> = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.artifact_id.is_some())
            .map(|(n, i)| (i.name.clone(), n))
            .collect();
        for (origin, reference) in std::mem::take(&mut self.refs) {
            let file_name = reference.rsplit('/').next().unwrap_or(&reference).to_string();
            match by_name.get(&file_name) {
                Some(&n) => self.items[n].source_ref = Some(reference),
                None => self.reject(format!("{origin}: the image {reference} was not uploaded with the manifest")),
            }
        }
        let total_bytes: i64 = self.items.iter().map(|i| i.size).sum();
        let count = self.items.len() as i64;
        let source = match self.files.as_slice() {
            [] => "nothing".to_string(),
            [one] => one.clone(),
            many if many.len() <= 5 => format!("{} files: {}", many.len(), many.join(", ")),
            many => format!("{} files: {}, ...", many.len(), many[..5].join(", ")),
        };
        let mut rejected = std::mem::take(&mut self.rejected);
        if self.more_rejected > 0 {
            rejected.push(format!("... and {} more", self.more_rejected));
        }
        let at = now();
        let mut tx = db.pool.begin().await?;
        // Reserving the positions first takes the write lock, so concurrent uploads to
        // one dataset number their items one after the other.
        let end: i64 = sqlx::query_scalar(
            "UPDATE datasets SET item_count = item_count + $1, total_bytes = total_bytes + $2 WHERE id = $3 \
             RETURNING item_count",
        )
        .bind(count)
        .bind(total_bytes)
        .bind(&self.dataset.id)
        .fetch_one(&mut *tx)
        .await?;
        // Positions continue after the last item ever kept: a removed item's position
        // is not reused, so the items after it keep theirs.
        let last: i64 =
            sqlx::query_scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM dataset_items WHERE dataset_id = $1")
                .bind(&self.dataset.id)
                .fetch_one(&mut *tx)
                .await?;
        let first = last.max(end - count) + 1;
        let batch_seq: i64 =
            sqlx::query_scalar("SELECT CAST(COUNT(*) + 1 AS BIGINT) FROM dataset_batches WHERE dataset_id = $1")
                .bind(&self.dataset.id)
                .fetch_one(&mut *tx)
                .await?;
        let batch = Batch {
            seq: batch_seq,
            source,
            item_count: count,
            total_bytes,
            rejected: serde_json::to_string(&rejected).map_err(CoreError::internal)?,
            created_by: self.created_by.clone(),
            created_at: at,
        };
        sqlx::query(
            "INSERT INTO dataset_batches (id, dataset_id, seq, source, item_count, total_bytes, rejected, created_by, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&self.dataset.id)
        .bind(batch.seq)
        .bind(&batch.source)
        .bind(batch.item_count)
        .bind(batch.total_bytes)
        .bind(&batch.rejected)
        .bind(&batch.created_by)
        .bind(batch.created_at)
        .execute(&mut *tx)
        .await?;
        for (i, item) in self.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO dataset_items (id, dataset_id, batch_seq, seq, name, artifact_id, text, media_type, size, \
                 source_ref, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&self.dataset.id)
            .bind(batch.seq)
            .bind(first + i as i64)
            .bind(&item.name)
            .bind(&item.artifact_id)
            .bind(&item.text)
            .bind(item.media_type)
            .bind(item.size)
            .bind(&item.source_ref)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(batch)
    }

    /// Removes the images already stored, when the upload is abandoned.
    pub async fn abort(&self, store: &ArtifactStore, db: &Db) {
        for id in self.items.iter().filter_map(|i| i.artifact_id.as_deref()) {
            if let Err(err) = store.delete(db, id).await {
                tracing::warn!(%err, artifact = id, "could not remove an abandoned upload");
            }
        }
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised_by_their_bytes() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(image_type(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(image_type(b"RIFF\x10\x00\x00\x00WEBPVP8 "), Some("image/webp"));
        assert_eq!(image_type(b"GIF89a"), None);
        assert_eq!(image_type(b""), None);
    }

    #[test]
    fn file_kinds_come_from_the_extension() {
        assert_eq!(file_kind("a.JPG"), Some(FileKind::Image));
        assert_eq!(file_kind("reviews.csv"), Some(FileKind::Csv));
        assert_eq!(file_kind("input.manifest"), Some(FileKind::Manifest));
        assert_eq!(file_kind("notes"), None);
    }
}
