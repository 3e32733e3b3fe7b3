//! The artifact store: uploaded files, job inputs, checkpoints and trained models.
//!
//! Bytes live in an `object_store`: a directory under the data dir by default, or an
//! S3-compatible bucket when a team outgrows one machine; the database records each artifact's name, SHA-256 and size. Objects are keyed by the
//! artifact's id, never by a user-given name, so a name cannot traverse paths; names
//! are still validated because they become file names on compute nodes.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::authz::{authorize, Action, Principal, Resource};
use crate::compute::jobs;
use crate::db::Db;
use crate::{datasets, endpoints, labeling, models, now, CoreError, CoreResult};

/// What an artifact is for.
pub mod kind {
    pub const UPLOAD: &str = "upload";
    pub const MODEL: &str = "model";
    pub const OUTPUT: &str = "output";
    pub const CHECKPOINT: &str = "checkpoint";
    /// An image item of a dataset.
    pub const DATASET: &str = "dataset";
}

/// An artifact's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Artifact {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub sha256: String,
    pub size: i64,
    pub job_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// Where artifact bytes are kept.
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactStore({})", self.store)
    }
}

/// A file name as it may appear on a compute node: one path component, printable,
/// not `.` or `..`.
pub fn validate_file_name(field: &'static str, name: &str) -> CoreResult<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(CoreError::invalid(field, "file name must be 1-255 bytes"));
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) || name.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            field,
            format!("\"{name}\" is not a plain file name (no slashes, not . or ..)"),
        ));
    }
    Ok(name.to_string())
}

impl ArtifactStore {
    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> CoreResult<ArtifactStore> {
        std::fs::create_dir_all(dir).map_err(CoreError::internal)?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(CoreError::internal)?;
        Ok(ArtifactStore { store: Arc::new(store) })
    }

    /// The store `url` names: `s3://bucket[/prefix]` (credentials, region and endpoint
    /// from the usual `AWS_*` variables, e.g. `AWS_ENDPOINT` for MinIO or Ceph), or, with
    /// no URL, the local directory `local_dir`.
    pub fn open(url: Option<&str>, local_dir: &std::path::Path) -> CoreResult<ArtifactStore> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return ArtifactStore::local(local_dir);
        };
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(CoreError::invalid(
                "artifact_store",
                format!("\"{url}\" is not a supported artifact store URL (expected s3://bucket/prefix)"),
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(CoreError::invalid("artifact_store", format!("\"{url}\" names no bucket")));
        }
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| CoreError::invalid("artifact_store", format!("{url}: {e}")))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)) };
        Ok(ArtifactStore { store })
    }

    /// Whether the store answers (the first page of a listing; a missing object would
    /// not tell a missing bucket apart): for readiness checks and to fail fast at start
    /// on a wrong bucket, endpoint or credentials.
    /// The error says what failed, for the operator (never sent to clients).
    pub async fn check(&self) -> Result<(), String> {
        match self.store.list(Some(&ObjectPath::from("artifacts"))).next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(err)) => Err(format!("artifact store {self:?} is not reachable: {err}")),
        }
    }

    fn path(id: &str) -> ObjectPath {
        ObjectPath::from(format!("artifacts/{id}"))
    }

    /// Streams `body` into a new artifact, hashing as it goes; refuses more than
    /// `max_bytes`. The record is written only once every byte is stored.
    pub async fn put<S, E>(&self, db: &Db, new: NewArtifact<'_>, body: S, max_bytes: u64) -> CoreResult<Artifact>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let name = validate_file_name("name", new.name)?;
        let id = uuid::Uuid::now_v7().to_string();
        let path = Self::path(&id);
        let mut writer = BufWriter::new(self.store.clone(), path.clone());
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = std::pin::pin!(body);
        let outcome: CoreResult<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| CoreError::invalid("body", format!("upload interrupted: {e}")))?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(CoreError::TooLarge(format!("{name} is larger than the limit of {max_bytes} bytes")));
                }
                hasher.update(&chunk);
                writer.put(chunk).await.map_err(CoreError::internal)?;
            }
            writer.shutdown().await.map_err(CoreError::internal)
        }
        .await;
        if let Err(err) = outcome {
            let _ = writer.abort().await;
            let _ = self.store.delete(&path).await;
            return Err(err);
        }
        let artifact = Artifact {
            id,
            name,
            kind: new.kind.to_string(),
            sha256: hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            size: size as i64,
            job_id: new.job_id.map(str::to_string),
            created_by: new.created_by.to_string(),
            created_at: now(),
        };
        let inserted = sqlx::query(
            "INSERT INTO artifacts (id, name, kind, sha256, size, job_id, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&artifact.id)
        .bind(&artifact.name)
        .bind(&artifact.kind)
        .bind(&artifact.sha256)
        .bind(artifact.size)
        .bind(&artifact.job_id)
        .bind(&artifact.created_by)
        .bind(artifact.created_at)
        .execute(&db.pool)
        .await;
        if let Err(err) = inserted {
            let _ = self.store.delete(&path).await;
            return Err(err.into());
        }
        Ok(artifact)
    }

    /// The artifact's bytes as a stream.
    pub async fn get(&self, id: &str) -> CoreResult<BoxStream<'static, std::io::Result<Bytes>>> {
        let result = self.store.get(&Self::path(id)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => CoreError::NotFound("artifact content"),
            other => CoreError::internal(other),
        })?;
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    /// Deletes only the bytes (the record was removed by the caller, in its transaction);
    /// bytes already gone are not an error.
    pub async fn delete_content(&self, id: &str) -> CoreResult<()> {
        match self.store.delete(&Self::path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(CoreError::internal(other)),
        }
    }

    /// Deletes the bytes and the record (used to replace superseded checkpoints).
    pub async fn delete(&self, db: &Db, id: &str) -> CoreResult<()> {
        sqlx::query("DELETE FROM artifacts WHERE id = $1").bind(id).execute(&db.pool).await?;
        match self.store.delete(&Self::path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(CoreError::internal(other)),
        }
    }
}

/// The description of an artifact about to be stored.
#[derive(Debug, Clone, Copy)]
pub struct NewArtifact<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub job_id: Option<&'a str>,
    pub created_by: &'a str,
}

/// An artifact's record by id.
pub async fn get(db: &Db, id: &str) -> CoreResult<Artifact> {
    let found: Option<Artifact> = sqlx::query_as(
        "SELECT id, name, kind, sha256, size, job_id, created_by, created_at FROM artifacts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    found.ok_or(CoreError::NotFound("artifact"))
}

/// Whether `p` may read `artifact`, decided by what owns it, so that reading by id
/// never grants more than the owner's own routes do:
/// - a dataset's image, or a training channel's manifest made from a dataset or a
///   labeling job: only the readers of that dataset (and of that job's output), even
///   when a training job took it as input, since the job's readers need not be the
///   dataset's;
/// - an endpoint's captured file: the endpoint's readers;
/// - a model version's artifact or a job's output: the readers of any version that
///   references it or of the job that made it;
/// - a plain upload owned by none of these: the readers of the uploader's training
///   jobs.
///
/// Denied, it returns the first owner's refusal.
pub async fn authorize_read(db: &Db, p: &Principal, artifact: &Artifact) -> CoreResult<()> {
    let owning_datasets: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT d.name FROM dataset_items i JOIN datasets d ON d.id = i.dataset_id WHERE i.artifact_id = $1",
    )
    .bind(&artifact.id)
    .fetch_all(&db.pool)
    .await?;
    if !owning_datasets.is_empty() {
        let mut refusal = None;
        for (name,) in &owning_datasets {
            match datasets::get(db, p, name).await {
                Ok(_) => return Ok(()),
                Err(err) => {
                    refusal.get_or_insert(err);
                }
            }
        }
        // The list is not empty, so a refusal was kept.
        return Err(refusal.unwrap_or_else(|| CoreError::Forbidden("you may not read this dataset".into())));
    }
    if artifact.kind == kind::DATASET {
        // An image whose batch never became items (an aborted upload): still a
        // dataset's, so only someone who may read datasets of its uploader.
        return authorize(
            p,
            Action::GetDataset,
            &Resource::new("atelier:datasets:dataset/*").created_by(artifact.created_by.clone()),
        );
    }
    let capturing: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT e.name FROM endpoint_captures c JOIN endpoints e ON e.id = c.endpoint_id WHERE c.artifact_id = $1",
    )
    .bind(&artifact.id)
    .fetch_all(&db.pool)
    .await?;
    if let Some((name,)) = capturing.first() {
        // The same check as listing and downloading the endpoint's captures.
        return endpoints::endpoint_for(db, p, name, Action::GetEndpoint).await.map(|_| ());
    }
    if artifact.kind == endpoints::capture::KIND {
        return authorize(p, Action::GetEndpoint, &Resource::new("atelier:endpoints:endpoint/*"));
    }
    if let Some(source) = derived_manifest_source(db, artifact).await? {
        return match source {
            ManifestSource::Dataset(name) => datasets::get(db, p, &name).await.map(|_| ()),
            ManifestSource::LabelingJob(name) => {
                let job = labeling::jobs::get_for(db, p, &name, Action::GetLabelingJobOutput).await?;
                datasets::get(db, p, &job.dataset).await.map(|_| ())
            }
        };
    }
    let versions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT g.name, v.version FROM model_versions v JOIN model_groups g ON g.id = v.group_id \
         WHERE v.artifact_id = $1 ORDER BY g.name, v.version",
    )
    .bind(&artifact.id)
    .fetch_all(&db.pool)
    .await?;
    let mut refusal = None;
    for (group, version) in &versions {
        match models::versions::get_for(db, p, group, *version, Action::GetModelVersion).await {
            Ok(_) => return Ok(()),
            Err(err) => {
                refusal.get_or_insert(err);
            }
        }
    }
    if let Some(job_id) = &artifact.job_id {
        let job = jobs::find_by_id(db, job_id).await?;
        return match authorize(p, Action::GetTrainingJob, &jobs::resource(&job)) {
            Ok(()) => Ok(()),
            Err(err) => Err(refusal.unwrap_or(err)),
        };
    }
    if let Some(err) = refusal {
        // A registered upload belongs to the registry now: its uploader's job readers
        // do not get it by that alone.
        return Err(err);
    }
    authorize(
        p,
        Action::GetTrainingJob,
        &Resource::new("atelier:training:job/*").created_by(artifact.created_by.clone()),
    )
}

/// What a training channel's generated manifest was made from.
enum ManifestSource {
    Dataset(String),
    LabelingJob(String),
}

/// The dataset or labeling job a manifest was written from at a job's submission,
/// if `artifact` is one. Within a dataset or labeling channel the file named
/// `<source>.manifest` is the generated one: submission refuses a channel with two files
/// of one name, so an upload cannot take that name there.
async fn derived_manifest_source(db: &Db, artifact: &Artifact) -> CoreResult<Option<ManifestSource>> {
    if artifact.kind != kind::UPLOAD || artifact.job_id.is_some() {
        return Ok(None);
    }
    for job in jobs::naming_artifact(db, &artifact.id).await? {
        let spec = job.spec()?;
        for channel in spec.channels.iter().filter(|c| c.artifacts.contains(&artifact.id)) {
            let source = match (&channel.dataset, &channel.labeling_job) {
                (Some(d), _) if artifact.name == format!("{d}.manifest") => ManifestSource::Dataset(d.clone()),
                (None, Some(j)) if artifact.name == format!("{j}.manifest") => ManifestSource::LabelingJob(j.clone()),
                _ => continue,
            };
            return Ok(Some(source));
        }
    }
    Ok(None)
}

/// The artifacts a job produced, oldest first.
pub async fn for_job(db: &Db, job_id: &str) -> CoreResult<Vec<Artifact>> {
    Ok(sqlx::query_as(
        "SELECT id, name, kind, sha256, size, job_id, created_by, created_at FROM artifacts \
         WHERE job_id = $1 ORDER BY created_at, id",
    )
    .bind(job_id)
    .fetch_all(&db.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_traverse() {
        assert!(validate_file_name("name", "train.py").is_ok());
        for bad in ["", "..", ".", "../etc/passwd", "a/b", "a\\b", "a\0b", "x\ny"] {
            assert!(validate_file_name("name", bad).is_err(), "{bad:?} accepted");
        }
    }
}
