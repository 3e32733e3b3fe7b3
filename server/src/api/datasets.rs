//! `/api/v1/datasets`: create datasets, upload batches of files (images, texts, Ground
//! Truth input manifests), page through items and read an item's content.

use app::datasets::{BatchInfo, DatasetDetail, DatasetInfo, ItemInfo};
use atelier_core::datasets::{self, DatasetKind, Upload};
use atelier_core::CoreError;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::{ApiJson, Auth};
use crate::state::AppState;

/// Body of `POST /api/v1/datasets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatasetRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `image` or `text`.
    pub kind: String,
}

/// Which items to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ItemPage {
    /// Items after this position (0: from the first).
    #[serde(default)]
    pub after: i64,
    /// At most this many (1-1000, default 100).
    pub limit: Option<i64>,
}

/// Datasets the caller may read.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets",
    responses((status = 200, body = Vec<DatasetInfo>), (status = 403, body = ErrorBody)))]
pub async fn list_datasets(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<DatasetInfo>>, ApiError> {
    Ok(Json(datasets::list(&state.db, &p).await?.into_iter().map(DatasetInfo::from).collect()))
}

/// Creates an empty dataset; add items with `POST /api/v1/datasets/{dataset}/batches`.
#[utoipa::path(post, path = "/api/v1/datasets", tag = "datasets", request_body = CreateDatasetRequest,
    responses((status = 201, body = DatasetInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_dataset(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateDatasetRequest>,
) -> Result<(StatusCode, Json<DatasetInfo>), ApiError> {
    let kind = DatasetKind::parse(&body.kind)?;
    let dataset = datasets::create(&state.db, &p, &body.name, &body.description, kind).await?;
    Ok((StatusCode::CREATED, Json(dataset.into())))
}

/// A dataset with its batches (which upload added what, and what it rejected).
#[utoipa::path(get, path = "/api/v1/datasets/{dataset}", tag = "datasets",
    params(("dataset" = String, Path, description = "Dataset name")),
    responses((status = 200, body = DatasetDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_dataset(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<DatasetDetail>, ApiError> {
    let dataset = datasets::get(&state.db, &p, &name).await?;
    let batches = datasets::batches(&state.db, &dataset).await?.into_iter().map(BatchInfo::from).collect();
    Ok(Json(DatasetDetail { dataset: dataset.into(), batches }))
}

/// Adds a batch of items: a `multipart/form-data` body with any number of `file` parts
/// (PNG, JPEG, WebP for image datasets; `.txt`, `.csv`, `.jsonl` for text datasets; a
/// Ground Truth input manifest `.manifest` for either, whose `source-ref`s name images
/// uploaded in the same request) and an optional `text_column` part naming the CSV
/// column with the text. Files stream to the artifact store. A bad file or line is
/// listed in the batch's `rejected` and the rest is imported.
#[utoipa::path(post, path = "/api/v1/datasets/{dataset}/batches", tag = "datasets",
    params(("dataset" = String, Path, description = "Dataset name")),
    request_body(content = String, content_type = "multipart/form-data"),
    responses((status = 201, body = BatchInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_batch(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<BatchInfo>), ApiError> {
    // Authorized before a byte of the body is read.
    let mut upload = Upload::begin(&state.db, &p, &name).await?;
    let bad_form =
        |e: axum::extract::multipart::MultipartError| CoreError::invalid("body", format!("bad multipart body: {e}"));
    let outcome: Result<(), CoreError> = async {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| CoreError::invalid("body", format!("expected a multipart/form-data body: {e}")))?;
        while let Some(field) = multipart.next_field().await.map_err(bad_form)? {
            match field.name() {
                // Applies to the CSV files after it; the form sends it first.
                Some("text_column") => upload.set_text_column(&field.text().await.map_err(bad_form)?),
                Some("file") | Some("files") => {
                    let file_name = field.file_name().unwrap_or("").to_string();
                    let stream = field.map_err(|e| e.to_string());
                    upload
                        .add_file(&state.artifacts, &state.db, &file_name, stream, state.config.max_upload_bytes)
                        .await?;
                }
                Some(other) => {
                    return Err(CoreError::invalid(
                        "body",
                        format!("unknown form field \"{other}\" (expected file, text_column)"),
                    ))
                }
                None => return Err(CoreError::invalid("body", "a form part has no name")),
            }
        }
        if upload.is_empty() {
            return Err(CoreError::invalid("file", "no files were uploaded"));
        }
        Ok(())
    }
    .await;
    if let Err(err) = outcome {
        upload.abort(&state.artifacts, &state.db).await;
        return Err(err.into());
    }
    let dataset_name = upload.dataset().name.clone();
    let batch = match upload.finish(&state.db).await {
        Ok(batch) => batch,
        Err(err) => {
            upload.abort(&state.artifacts, &state.db).await;
            return Err(err.into());
        }
    };
    p.note_change(format!(
        "added batch {} to dataset {dataset_name}: {} items, {} rejected",
        batch.seq,
        batch.item_count,
        batch.rejections().len()
    ));
    Ok((StatusCode::CREATED, Json(batch.into())))
}

/// A page of the dataset's items, in order.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset}/items", tag = "datasets",
    params(("dataset" = String, Path, description = "Dataset name"), ItemPage),
    responses((status = 200, body = Vec<ItemInfo>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_items(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    Query(page): Query<ItemPage>,
) -> Result<Json<Vec<ItemInfo>>, ApiError> {
    let dataset = datasets::get(&state.db, &p, &name).await?;
    let items = datasets::items(&state.db, &dataset, page.after, page.limit.unwrap_or(100)).await?;
    Ok(Json(items.into_iter().map(ItemInfo::from).collect()))
}

/// An item's content: the image bytes, or the text as `text/plain`.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset}/items/{seq}/content", tag = "datasets",
    params(("dataset" = String, Path, description = "Dataset name"), ("seq" = i64, Path, description = "Item position, from 1")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn item_content(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, seq)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let dataset = datasets::get(&state.db, &p, &name).await?;
    let item = datasets::item(&state.db, &dataset, seq).await?;
    let headers = content_headers;
    match (&item.artifact_id, item.text) {
        (Some(artifact), _) => {
            let stream = state.artifacts.get(artifact).await?;
            Ok((headers(item.media_type), Body::from_stream(stream)).into_response())
        }
        (None, Some(text)) => Ok((headers("text/plain; charset=utf-8".into()), text).into_response()),
        (None, None) => Err(CoreError::NotFound("dataset item content").into()),
    }
}

/// Deletes a dataset: its items, batches and files. Refused (409, naming them) while a
/// training job that is not finished reads it or a labeling job was made from it.
/// Training jobs and model versions keep its name in their lineage.
#[utoipa::path(delete, path = "/api/v1/datasets/{dataset}", tag = "datasets",
    params(("dataset" = String, Path, description = "Dataset name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_dataset(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    datasets::delete_dataset(&state.db, &state.artifacts, &p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes one item (and its file); the other items keep their positions. Refused
/// (409) while a training job that is not finished or a labeling job in progress
/// reads the dataset.
#[utoipa::path(delete, path = "/api/v1/datasets/{dataset}/items/{seq}", tag = "datasets",
    params(("dataset" = String, Path, description = "Dataset name"), ("seq" = i64, Path, description = "Item position, from 1")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_item(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((name, seq)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    datasets::remove_item(&state.db, &state.artifacts, &p, &name, seq).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Headers of an item's content. The type was decided from the bytes at upload; never
/// sniffed again, and never able to run script in this origin.
pub fn content_headers(media_type: String) -> [(header::HeaderName, String); 4] {
    [
        (header::CONTENT_TYPE, media_type),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
        (header::CACHE_CONTROL, "private, max-age=86400, immutable".to_string()),
    ]
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_datasets, create_dataset))
        .routes(routes!(get_dataset, delete_dataset))
        .routes(routes!(list_items))
        .routes(routes!(remove_item))
        .routes(routes!(item_content))
}

/// Routes whose request bodies are large uploads.
pub fn upload_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(add_batch))
}

/// Whether a request is a dataset upload (for the upload body limit).
pub fn is_upload(path: &str) -> bool {
    path.strip_prefix("/api/v1/datasets/")
        .is_some_and(|rest| rest.ends_with("/batches") && rest.matches('/').count() == 1)
}
