//! The MLflow Model Registry REST API under `/api/2.0/mlflow/`, so the official
//! `mlflow` client (`MlflowClient(tracking_uri=...)` with `MLFLOW_TRACKING_TOKEN` as a
//! bearer API token) works against Atelier's registry: registered models are model
//! groups, model versions are versions. Everything goes through the same core
//! functions, and so the same access control and audit log, as `/api/v1/`.
//!
//! MLflow's shapes: JSON in (query string for GETs), `{"registered_model": ...}`-style
//! answers, errors as `{"error_code": ..., "message": ...}`. A version's approval
//! status shows as its tag `atelier.approval_status` (read-only through MLflow:
//! decisions go through the approval workflow). Stages are not used (MLflow deprecated
//! them): every version's `current_stage` is `None`.

use std::collections::BTreeMap;

use atelier_core::authz::Principal;
use atelier_core::models::{self, versions, NewGroup};
use atelier_core::CoreError;
use atelier_protocol::models::{ModelGroup, ModelVersion};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::Auth;
use crate::state::AppState;

/// Where the MLflow API lives.
pub const PREFIX: &str = "/api/2.0/mlflow/";

/// The tag that shows a version's approval status.
pub const STATUS_TAG: &str = "atelier.approval_status";

/// An error in MLflow's shape.
#[derive(Debug)]
pub struct MlflowError(CoreError);

impl From<CoreError> for MlflowError {
    fn from(e: CoreError) -> Self {
        MlflowError(e)
    }
}

fn invalid(message: impl Into<String>) -> MlflowError {
    MlflowError(CoreError::invalid("request", message.into()))
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            CoreError::Invalid { .. } | CoreError::Malformed { .. } | CoreError::TooLarge(_) => {
                (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
            }
            CoreError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            CoreError::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            CoreError::NotFound(_) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            CoreError::Conflict(m) if m.contains("already exists") => {
                (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS")
            }
            CoreError::Conflict(_) => (StatusCode::CONFLICT, "ABORTED"),
            CoreError::TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "REQUEST_LIMIT_EXCEEDED"),
            CoreError::Upstream { .. } => (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
            CoreError::Internal(e) => {
                tracing::error!(error = %e, "MLflow API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            }
        };
        (status, Json(json!({"error_code": code, "message": self.0.to_string()}))).into_response()
    }
}

type Answer = Result<Json<Value>, MlflowError>;

/// An MLflow path Atelier does not serve, as MLflow says it (clients fall back on it).
pub fn endpoint_not_found(path: &str) -> Response {
    let body = json!({"error_code": "ENDPOINT_NOT_FOUND", "message": format!("{path} is not part of the MLflow API Atelier serves")});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Request fields: the JSON body, or for GETs the query string (MLflow's client sends
/// GET parameters that way).
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, MlflowError> {
    let text = if bytes.is_empty() { "{}".as_bytes() } else { bytes.as_ref() };
    serde_json::from_slice(text).map_err(|e| invalid(format!("malformed request: {e}")))
}

fn timestamp_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

fn tag_list(tags: &BTreeMap<String, String>) -> Vec<Value> {
    tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect()
}

fn version_json(v: &ModelVersion) -> Value {
    let mut tags = v.tags.clone();
    tags.insert(STATUS_TAG.into(), v.status.clone());
    json!({
        "name": v.group,
        "version": v.version.to_string(),
        "creation_timestamp": timestamp_ms(v.created_at),
        "last_updated_timestamp": timestamp_ms(v.updated_at),
        "user_id": v.created_by,
        "current_stage": "None",
        "description": v.description,
        "source": if v.source.is_empty() { format!("atelier:artifact/{}", v.artifact.id) } else { v.source.clone() },
        "run_id": v.training_job.clone().unwrap_or_default(),
        "status": "READY",
        "tags": tag_list(&tags),
        "aliases": v.aliases,
    })
}

async fn model_json(state: &AppState, p: &Principal, g: &ModelGroup) -> Result<Value, MlflowError> {
    // A latest version a policy hides is left out rather than failing the group.
    let latest = match g.latest_version {
        Some(n) => versions::get(&state.db, p, &g.name, n).await.ok().map(|v| version_json(&v)).into_iter().collect(),
        None => Vec::new(),
    };
    Ok(json!({
        "name": g.name,
        "creation_timestamp": timestamp_ms(g.created_at),
        "last_updated_timestamp": timestamp_ms(g.updated_at),
        "user_id": g.created_by,
        "description": g.description,
        "latest_versions": latest,
        "tags": tag_list(&g.tags),
        "aliases": g.aliases.iter().map(|(alias, v)| json!({"alias": alias, "version": v.to_string()})).collect::<Vec<_>>(),
    }))
}

fn parse_version(text: &str) -> Result<i64, MlflowError> {
    text.trim().parse().map_err(|_| invalid(format!("version must be a number, not {text:?}")))
}

#[derive(Deserialize)]
struct TagIn {
    key: String,
    #[serde(default)]
    value: String,
}

fn tag_map(tags: Vec<TagIn>) -> BTreeMap<String, String> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

#[derive(Deserialize)]
struct CreateModel {
    name: String,
    #[serde(default)]
    tags: Vec<TagIn>,
    #[serde(default)]
    description: Option<String>,
}

async fn create_model(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: CreateModel = body(&bytes)?;
    let new = NewGroup {
        name: &req.name,
        description: req.description.as_deref().unwrap_or(""),
        tags: tag_map(req.tags),
        required_approvals: None,
    };
    let g = models::create_group(&state.db, &p, new).await?;
    Ok(Json(json!({"registered_model": model_json(&state, &p, &g).await?})))
}

#[derive(Deserialize)]
struct NameOnly {
    name: String,
}

async fn get_model(State(state): State<AppState>, Auth(p): Auth, Query(q): Query<NameOnly>) -> Answer {
    let g = models::get_group(&state.db, &p, &q.name).await?;
    Ok(Json(json!({"registered_model": model_json(&state, &p, &g).await?})))
}

#[derive(Deserialize)]
struct UpdateModel {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

async fn update_model(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: UpdateModel = body(&bytes)?;
    let g = models::update_group(&state.db, &p, &req.name, None, req.description.as_deref(), None, None).await?;
    Ok(Json(json!({"registered_model": model_json(&state, &p, &g).await?})))
}

#[derive(Deserialize)]
struct RenameModel {
    name: String,
    new_name: String,
}

async fn rename_model(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: RenameModel = body(&bytes)?;
    let g = models::rename_group(&state.db, &p, &req.name, &req.new_name).await?;
    Ok(Json(json!({"registered_model": model_json(&state, &p, &g).await?})))
}

async fn delete_model(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: NameOnly = body(&bytes)?;
    models::delete_group(&state.db, &p, &req.name).await?;
    Ok(Json(json!({})))
}

/// Search parameters. The client repeats `order_by` for several keys, so the query is
/// read as pairs; the first key orders.
#[derive(Default)]
struct Search {
    filter: Option<String>,
    max_results: Option<String>,
    order_by: Option<String>,
    page_token: Option<String>,
}

impl Search {
    fn from_pairs(pairs: Vec<(String, String)>) -> Search {
        let mut s = Search::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "filter" => &mut s.filter,
                "max_results" => &mut s.max_results,
                "order_by" => &mut s.order_by,
                "page_token" => &mut s.page_token,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        s
    }
}

/// A page of `items` from the offset in `page_token`; the next token if more remain.
fn page<T>(items: Vec<T>, q: &Search, default_max: usize) -> Result<(Vec<T>, Option<String>), MlflowError> {
    let max = match &q.max_results {
        Some(m) => m.parse::<usize>().map_err(|_| invalid(format!("max_results must be a number, not {m:?}")))?,
        None => default_max,
    };
    if max == 0 || max > 200_000 {
        return Err(invalid("max_results must be between 1 and 200000"));
    }
    let offset = match q.page_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => t.parse::<usize>().map_err(|_| invalid(format!("invalid page_token {t:?}")))?,
        None => 0,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(max).collect();
    let end = offset.saturating_add(max);
    let next = (end < total).then(|| end.to_string());
    Ok((page, next))
}

async fn search_models(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Answer {
    let q = Search::from_pairs(pairs);
    let filter = filter::parse(q.filter.as_deref().unwrap_or(""))?;
    let mut groups: Vec<ModelGroup> =
        models::list_groups(&state.db, &p).await?.into_iter().filter(|g| filter.matches_group(g)).collect();
    order_groups(&mut groups, q.order_by.as_deref())?;
    let (groups, next) = page(groups, &q, 100)?;
    let mut out = Vec::with_capacity(groups.len());
    for g in &groups {
        out.push(model_json(&state, &p, g).await?);
    }
    let mut answer = json!({"registered_models": out});
    if let Some(next) = next {
        answer["next_page_token"] = json!(next);
    }
    Ok(Json(answer))
}

fn order_groups(groups: &mut [ModelGroup], order_by: Option<&str>) -> Result<(), MlflowError> {
    let Some(order) = order_by.filter(|o| !o.trim().is_empty()) else { return Ok(()) };
    let mut parts = order.split_whitespace();
    let key = parts.next().unwrap_or("name");
    let descending = parts.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
    match key {
        "name" => groups.sort_by(|a, b| a.name.cmp(&b.name)),
        "creation_timestamp" => groups.sort_by_key(|g| g.created_at),
        "last_updated_timestamp" | "timestamp" => groups.sort_by_key(|g| g.updated_at),
        other => return Err(invalid(format!("cannot order registered models by {other:?}"))),
    }
    if descending {
        groups.reverse();
    }
    Ok(())
}

#[derive(Deserialize)]
struct LatestVersions {
    name: String,
    #[serde(default)]
    stages: Vec<String>,
}

async fn latest_versions(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: LatestVersions = body(&bytes)?;
    let all = versions::list(&state.db, &p, &req.name).await?;
    // Every version is in stage None: the latest of it, if that stage is asked for.
    let wanted = req.stages.is_empty() || req.stages.iter().any(|s| s.eq_ignore_ascii_case("none"));
    let latest: Vec<Value> = all.first().filter(|_| wanted).map(version_json).into_iter().collect();
    Ok(Json(json!({"model_versions": latest})))
}

async fn latest_versions_get(state: State<AppState>, auth: Auth, Query(q): Query<NameOnly>) -> Answer {
    let bytes = Bytes::from(serde_json::to_vec(&json!({"name": q.name})).unwrap_or_default());
    latest_versions(state, auth, bytes).await
}

#[derive(Deserialize)]
struct ModelTag {
    name: String,
    key: String,
    #[serde(default)]
    value: String,
}

async fn set_model_tag(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: ModelTag = body(&bytes)?;
    models::set_group_tag(&state.db, &p, &req.name, &req.key, Some(&req.value)).await?;
    Ok(Json(json!({})))
}

async fn delete_model_tag(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: ModelTag = body(&bytes)?;
    models::set_group_tag(&state.db, &p, &req.name, &req.key, None).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct Alias {
    name: String,
    alias: String,
    #[serde(default)]
    version: Option<String>,
}

async fn set_alias(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: Alias = body(&bytes)?;
    let version = parse_version(req.version.as_deref().unwrap_or(""))?;
    versions::set_alias(&state.db, &p, &req.name, &req.alias, version).await?;
    Ok(Json(json!({})))
}

async fn delete_alias(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: Alias = body(&bytes)?;
    versions::delete_alias(&state.db, &p, &req.name, &req.alias).await?;
    Ok(Json(json!({})))
}

async fn get_by_alias(State(state): State<AppState>, Auth(p): Auth, Query(q): Query<Alias>) -> Answer {
    let v = versions::by_alias(&state.db, &p, &q.name, &q.alias).await?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

#[derive(Deserialize)]
struct CreateVersion {
    name: String,
    source: String,
    #[serde(default)]
    tags: Vec<TagIn>,
    #[serde(default)]
    description: Option<String>,
}

async fn create_version(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: CreateVersion = body(&bytes)?;
    let tags = tag_map(req.tags);
    refuse_status_tag(tags.keys())?;
    let v = versions::register_from_source(
        &state.db,
        &p,
        &req.name,
        &req.source,
        req.description.as_deref().unwrap_or(""),
        &tags,
    )
    .await?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

fn refuse_status_tag<'a>(mut keys: impl Iterator<Item = &'a String>) -> Result<(), MlflowError> {
    if keys.any(|k| k == STATUS_TAG) {
        return Err(invalid(format!(
            "{STATUS_TAG} shows the approval status; it changes through the approval workflow, not as a tag"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct VersionRef {
    name: String,
    version: String,
}

async fn get_version(State(state): State<AppState>, Auth(p): Auth, Query(q): Query<VersionRef>) -> Answer {
    let v = versions::get(&state.db, &p, &q.name, parse_version(&q.version)?).await?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

#[derive(Deserialize)]
struct UpdateVersion {
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
}

async fn update_version(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: UpdateVersion = body(&bytes)?;
    let n = parse_version(&req.version)?;
    let v = versions::update(&state.db, &p, &req.name, n, req.description.as_deref(), None).await?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

async fn delete_version(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: VersionRef = body(&bytes)?;
    versions::delete(&state.db, &p, &req.name, parse_version(&req.version)?).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct VersionTag {
    name: String,
    version: String,
    key: String,
    #[serde(default)]
    value: String,
}

async fn set_version_tag(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: VersionTag = body(&bytes)?;
    refuse_status_tag(std::iter::once(&req.key))?;
    versions::set_tag(&state.db, &p, &req.name, parse_version(&req.version)?, &req.key, Some(&req.value)).await?;
    Ok(Json(json!({})))
}

async fn delete_version_tag(State(state): State<AppState>, Auth(p): Auth, bytes: Bytes) -> Answer {
    let req: VersionTag = body(&bytes)?;
    refuse_status_tag(std::iter::once(&req.key))?;
    versions::set_tag(&state.db, &p, &req.name, parse_version(&req.version)?, &req.key, None).await?;
    Ok(Json(json!({})))
}

async fn search_versions(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Answer {
    let q = Search::from_pairs(pairs);
    let filter = filter::parse(q.filter.as_deref().unwrap_or(""))?;
    let groups: Vec<String> = match filter.exact_name() {
        Some(name) => vec![name.to_string()],
        None => models::list_groups(&state.db, &p).await?.into_iter().map(|g| g.name).collect(),
    };
    let mut found = Vec::new();
    for g in groups {
        match versions::list(&state.db, &p, &g).await {
            Ok(list) => found.extend(list.into_iter().filter(|v| filter.matches_version(v))),
            // A name that matches no group finds nothing, as in MLflow.
            Err(CoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    order_versions(&mut found, q.order_by.as_deref())?;
    let (found, next) = page(found, &q, 10_000)?;
    let mut answer = json!({"model_versions": found.iter().map(version_json).collect::<Vec<_>>()});
    if let Some(next) = next {
        answer["next_page_token"] = json!(next);
    }
    Ok(Json(answer))
}

fn order_versions(found: &mut [ModelVersion], order_by: Option<&str>) -> Result<(), MlflowError> {
    let order = order_by.filter(|o| !o.trim().is_empty()).unwrap_or("name ASC");
    let mut parts = order.split_whitespace();
    let key = parts.next().unwrap_or("name");
    let descending = parts.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
    match key {
        // Within a name, newest version first.
        "name" => found.sort_by(|a, b| a.group.cmp(&b.group).then(b.version.cmp(&a.version))),
        "version_number" => found.sort_by_key(|v| v.version),
        "creation_timestamp" => found.sort_by_key(|v| v.created_at),
        "last_updated_timestamp" | "timestamp" => found.sort_by_key(|v| v.updated_at),
        other => return Err(invalid(format!("cannot order model versions by {other:?}"))),
    }
    if descending && key != "name" {
        found.reverse();
    } else if descending {
        found.sort_by(|a, b| b.group.cmp(&a.group).then(b.version.cmp(&a.version)));
    }
    Ok(())
}

async fn download_uri(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    Query(q): Query<VersionRef>,
) -> Answer {
    let n = parse_version(&q.version)?;
    let v = versions::get(&state.db, &p, &q.name, n).await?;
    let base = match &state.config.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    let uri = format!("{base}/api/v1/model-groups/{}/versions/{}/artifact", v.group, v.version);
    Ok(Json(json!({"artifact_uri": uri})))
}

/// Every MLflow operation served, as (method, path under [`PREFIX`]): the access
/// control test walks this list, and [`router`] routes only paths listed here.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("POST", "registered-models/create"),
    ("GET", "registered-models/get"),
    ("PATCH", "registered-models/update"),
    ("POST", "registered-models/rename"),
    ("DELETE", "registered-models/delete"),
    ("GET", "registered-models/search"),
    ("POST", "registered-models/get-latest-versions"),
    ("GET", "registered-models/get-latest-versions"),
    ("POST", "registered-models/set-tag"),
    ("DELETE", "registered-models/delete-tag"),
    ("POST", "registered-models/alias"),
    ("DELETE", "registered-models/alias"),
    ("GET", "registered-models/alias"),
    ("POST", "model-versions/create"),
    ("GET", "model-versions/get"),
    ("PATCH", "model-versions/update"),
    ("DELETE", "model-versions/delete"),
    ("GET", "model-versions/search"),
    ("GET", "model-versions/get-download-uri"),
    ("POST", "model-versions/set-tag"),
    ("DELETE", "model-versions/delete-tag"),
];

/// The full path of a listed operation.
fn at(path: &str) -> String {
    assert!(OPERATIONS.iter().any(|(_, p)| *p == path), "{path} is routed but not in OPERATIONS");
    format!("{PREFIX}{path}")
}

/// The MLflow routes (full paths).
pub fn router() -> Router<AppState> {
    use axum::routing::{delete, patch};
    Router::new()
        .route(&at("registered-models/create"), post(create_model))
        .route(&at("registered-models/get"), get(get_model))
        .route(&at("registered-models/update"), patch(update_model))
        .route(&at("registered-models/rename"), post(rename_model))
        .route(&at("registered-models/delete"), delete(delete_model))
        .route(&at("registered-models/search"), get(search_models))
        .route(&at("registered-models/get-latest-versions"), post(latest_versions).get(latest_versions_get))
        .route(&at("registered-models/set-tag"), post(set_model_tag))
        .route(&at("registered-models/delete-tag"), delete(delete_model_tag))
        .route(&at("registered-models/alias"), post(set_alias).delete(delete_alias).get(get_by_alias))
        .route(&at("model-versions/create"), post(create_version))
        .route(&at("model-versions/get"), get(get_version))
        .route(&at("model-versions/update"), patch(update_version))
        .route(&at("model-versions/delete"), delete(delete_version))
        .route(&at("model-versions/search"), get(search_versions))
        .route(&at("model-versions/get-download-uri"), get(download_uri))
        .route(&at("model-versions/set-tag"), post(set_version_tag))
        .route(&at("model-versions/delete-tag"), delete(delete_version_tag))
}

/// MLflow's search filter: clauses joined by AND, each `key op 'value'`.
mod filter {
    use super::{invalid, MlflowError};
    use atelier_protocol::models::{ModelGroup, ModelVersion};
    use std::collections::BTreeMap;

    #[derive(Debug)]
    enum Op {
        Eq,
        Ne,
        Like,
        ILike,
    }

    #[derive(Debug)]
    struct Clause {
        key: String,
        op: Op,
        value: String,
    }

    #[derive(Debug, Default)]
    pub struct Filter {
        clauses: Vec<Clause>,
    }

    pub fn parse(text: &str) -> Result<Filter, MlflowError> {
        if text.len() > 4096 {
            return Err(invalid("filter must be at most 4096 bytes"));
        }
        let mut clauses = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            // The key runs up to a space or the operator (`name='x'` has no spaces).
            let end = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '!').ok_or_else(|| bad(text))?;
            let (key, after) = rest.split_at(end);
            let after = after.trim_start();
            let (op, after) = [("!=", Op::Ne), ("=", Op::Eq), ("ILIKE", Op::ILike), ("LIKE", Op::Like)]
                .into_iter()
                .find_map(|(sym, op)| {
                    let head = after.get(..sym.len())?;
                    head.eq_ignore_ascii_case(sym).then(|| (op, &after[sym.len()..]))
                })
                .ok_or_else(|| bad(text))?;
            let after = after.trim_start();
            let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or_else(|| bad(text))?;
            let close = after[1..].find(quote).ok_or_else(|| bad(text))? + 1;
            let value = after[1..close].to_string();
            let key = key.trim_matches('`').to_string();
            let key = match key.strip_prefix("tags.").or_else(|| key.strip_prefix("tag.")) {
                Some(t) => format!("tags.{}", t.trim_matches('`').trim_matches('"')),
                None => key,
            };
            if !matches!(key.as_str(), "name" | "run_id" | "source_path" | "version_number")
                && !key.starts_with("tags.")
            {
                return Err(invalid(format!(
                    "unsupported filter key {key:?}: use name, run_id, source_path, version_number or tags.<key>"
                )));
            }
            clauses.push(Clause { key, op, value });
            rest = after[close + 1..].trim_start();
            if rest.is_empty() {
                break;
            }
            match (rest.get(..3), rest.get(3..)) {
                (Some(and), Some(tail)) if and.eq_ignore_ascii_case("and") => rest = tail.trim_start(),
                _ => return Err(bad(text)),
            }
        }
        Ok(Filter { clauses })
    }

    fn bad(text: &str) -> MlflowError {
        invalid(format!(
            "cannot parse filter {text:?}: expected clauses like name = 'x' or tags.k LIKE 'v%' joined by AND"
        ))
    }

    /// SQL LIKE: `%` any run, `_` one character. Dynamic programming over the
    /// pattern, O(pattern × text) whatever the pattern (no recursion to exhaust).
    fn like(pattern: &str, text: &str, fold: bool) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = if fold {
            (pattern.to_lowercase().chars().collect(), text.to_lowercase().chars().collect())
        } else {
            (pattern.chars().collect(), text.chars().collect())
        };
        // matches[j]: the pattern so far matches the first j characters of the text.
        let mut matches = vec![false; t.len() + 1];
        matches[0] = true;
        for c in &p {
            let mut next = vec![false; t.len() + 1];
            for j in 0..=t.len() {
                next[j] = match c {
                    '%' => matches[j] || (j > 0 && next[j - 1]),
                    '_' => j > 0 && matches[j - 1],
                    c => j > 0 && matches[j - 1] && t[j - 1] == *c,
                };
            }
            matches = next;
        }
        matches[t.len()]
    }

    impl Clause {
        fn test(&self, value: Option<&str>) -> bool {
            let Some(v) = value else { return matches!(self.op, Op::Ne) };
            match self.op {
                Op::Eq => v == self.value,
                Op::Ne => v != self.value,
                Op::Like => like(&self.value, v, false),
                Op::ILike => like(&self.value, v, true),
            }
        }
    }

    fn tag<'a>(tags: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
        tags.get(key).map(String::as_str)
    }

    impl Filter {
        /// The one name an `name = '...'` clause pins, if any.
        pub fn exact_name(&self) -> Option<&str> {
            self.clauses.iter().find(|c| c.key == "name" && matches!(c.op, Op::Eq)).map(|c| c.value.as_str())
        }

        pub fn matches_group(&self, g: &ModelGroup) -> bool {
            self.clauses.iter().all(|c| match c.key.as_str() {
                "name" => c.test(Some(&g.name)),
                key => match key.strip_prefix("tags.") {
                    Some(k) => c.test(tag(&g.tags, k)),
                    None => false,
                },
            })
        }

        pub fn matches_version(&self, v: &ModelVersion) -> bool {
            let number = v.version.to_string();
            self.clauses.iter().all(|c| match c.key.as_str() {
                "name" => c.test(Some(&v.group)),
                "run_id" => c.test(v.training_job.as_deref().or(Some(""))),
                "source_path" => c.test(Some(&v.source)),
                "version_number" => c.test(Some(&number)),
                key => match key.strip_prefix("tags.") {
                    Some(super::STATUS_TAG) => c.test(Some(&v.status)),
                    Some(k) => c.test(tag(&v.tags, k)),
                    None => false,
                },
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn filters_parse_and_match_like_mlflow() {
            let f = parse("name = 'fraud' AND tags.team LIKE 'ri%'").expect("valid filter");
            assert_eq!(f.exact_name(), Some("fraud"));
            // What the MLflow client appends to every registered-model search.
            let f = parse("name='a' AND tag.`mlflow.prompt.is_prompt` != 'true'").expect("the client's filter");
            assert_eq!(f.exact_name(), Some("a"));
            assert!(like("ri%", "risk", false));
            assert!(!like("ri%", "Risk", false));
            assert!(like("ri%", "Risk", true));
            assert!(like("a_c", "abc", false));
            assert!(parse("name LIKE 'x%' or name = 'y'").is_err());
            assert!(parse("owner = 'x'").is_err());
            assert!(parse("name = 'unterminated").is_err());
            assert!(parse("").expect("empty filter").exact_name().is_none());
            assert!(parse("name='x' éé").is_err(), "multi-byte junk after a clause is an error, not a panic");
            // Many wildcards cost time linear in their number, not exponential.
            let many = "%a".repeat(60) + "b";
            assert!(!like(&many, &"a".repeat(128), false));
            assert!(like("%a%b", "xxaxxb", false));
        }
    }
}
