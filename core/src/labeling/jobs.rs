//! Labeling jobs: a dataset's items handed to the labelers of one or more work teams.
//! Who may see and work on a job is decided by the access-control layer with the job's
//! teams as `atelier:WorkTeam` (the built-in Labeler policy allows a user the jobs of
//! the groups they belong to).

use std::collections::{HashMap, HashSet};

use atelier_protocol::labeling::{hotkeys, Answer, Category, LabelingJob, LabelingJobSpec, MyWork, Progress, TaskType};
use serde::Serialize;

use crate::authz::{authorize, Action, Principal, Resource};
use crate::datasets;
use crate::db::Db;
use crate::iam::store::validate_name;
use crate::{now, CoreError, CoreResult};

pub const IN_PROGRESS: &str = "InProgress";
/// Consolidated; low-confidence items wait in the review queue.
pub const REVIEWING: &str = "Reviewing";
pub const COMPLETED: &str = "Completed";
/// Stopped by a user: what was labeled is consolidated, nothing more is handed out.
pub const STOPPED: &str = "Stopped";

const DEFAULT_TIME_LIMIT_SECS: u32 = 300;
const MAX_CATEGORIES: usize = 100;
const MAX_INSTRUCTIONS_CHARS: usize = 20_000;
const MAX_WORKERS_PER_ITEM: u32 = 10;
/// Keys the labeling page keeps for itself (skip, undo).
const RESERVED_KEYS: [&str; 2] = ["s", "z"];

/// A labeling job.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub dataset_id: String,
    pub dataset: String,
    pub task_type: String,
    pub label_attribute: String,
    /// JSON list of categories.
    pub categories: String,
    pub instructions: String,
    pub workers_per_item: i64,
    pub task_time_limit_secs: i64,
    pub gold_share: f64,
    pub review_below: Option<f64>,
    pub status: String,
    pub item_count: i64,
    pub remaining: i64,
    pub created_by: String,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub consolidated_at: Option<i64>,
    #[sqlx(skip)]
    pub teams: Vec<String>,
}

impl Job {
    pub fn task_type(&self) -> TaskType {
        // Written by `create` from a parsed value.
        TaskType::parse(&self.task_type).unwrap_or(TaskType::ImageClassification)
    }
    pub fn categories(&self) -> Vec<Category> {
        serde_json::from_str(&self.categories).unwrap_or_default()
    }
    /// The job as the API shows it.
    pub fn info(&self) -> LabelingJob {
        LabelingJob {
            name: self.name.clone(),
            dataset: self.dataset.clone(),
            task_type: self.task_type(),
            label_attribute: self.label_attribute.clone(),
            categories: self.categories(),
            instructions: self.instructions.clone(),
            workers_per_item: self.workers_per_item,
            task_time_limit_secs: self.task_time_limit_secs,
            gold_share: self.gold_share,
            review_below: self.review_below,
            status: self.status.clone(),
            item_count: self.item_count,
            remaining: self.remaining,
            teams: self.teams.clone(),
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            completed_at: self.completed_at,
        }
    }
}

pub(crate) const JOB_COLUMNS: &str = "j.id, j.name, j.dataset_id, d.name AS dataset, j.task_type, j.label_attribute, \
    j.categories, j.instructions, j.workers_per_item, j.task_time_limit_secs, j.gold_share, j.review_below, j.status, \
    j.item_count, j.remaining, j.created_by, j.created_at, j.completed_at, j.consolidated_at";
pub(crate) const JOB_FROM: &str = "labeling_jobs j JOIN datasets d ON d.id = j.dataset_id";

/// The resource name of a job (its teams are added per check, see [`authorize_job`]).
pub fn resource(job: &Job) -> Resource {
    Resource::new(format!("atelier:labeling:job/{}", job.name)).created_by(job.created_by.clone())
}

/// The first of the job's teams for which the policies allow `action`.
fn allowing_team<'a>(p: &Principal, action: Action, job: &'a Job) -> Option<&'a String> {
    let base = resource(job);
    job.teams.iter().find(|t| p.can(action, &base.clone().for_team(t.as_str())))
}

/// Authorizes `action` on a job for whichever of its teams the policies allow (a
/// labeler in one of a job's two teams may work on it); one decision is recorded.
pub fn authorize_job(p: &Principal, action: Action, job: &Job) -> CoreResult<()> {
    let resource = match allowing_team(p, action, job).or(job.teams.first()) {
        Some(t) => resource(job).for_team(t.clone()),
        None => resource(job),
    };
    authorize(p, action, &resource)
}

/// Whether `action` would be allowed on the job; for filtering lists and showing
/// controls, never instead of [`authorize_job`].
pub fn can_job(p: &Principal, action: Action, job: &Job) -> bool {
    allowing_team(p, action, job).is_some()
}

async fn with_teams(db: &Db, mut jobs: Vec<Job>) -> CoreResult<Vec<Job>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT job_id, team FROM labeling_job_teams ORDER BY team").fetch_all(&db.pool).await?;
    let mut teams: HashMap<String, Vec<String>> = HashMap::new();
    for (job, team) in rows {
        teams.entry(job).or_default().push(team);
    }
    for job in &mut jobs {
        job.teams = teams.remove(&job.id).unwrap_or_default();
    }
    Ok(jobs)
}

pub(crate) async fn find(db: &Db, name: &str) -> CoreResult<Job> {
    let job: Option<Job> = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.name = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    let mut job = job.ok_or(CoreError::NotFound("labeling job"))?;
    job.teams = sqlx::query_scalar("SELECT team FROM labeling_job_teams WHERE job_id = $1 ORDER BY team")
        .bind(&job.id)
        .fetch_all(&db.pool)
        .await?;
    Ok(job)
}

/// A job the principal may do `action` on. The job is read first because its teams
/// take part in the decision.
pub async fn get_for(db: &Db, p: &Principal, name: &str, action: Action) -> CoreResult<Job> {
    let job = find(db, name).await?;
    authorize_job(p, action, &job)?;
    Ok(job)
}

/// Jobs the principal may see, newest first.
pub async fn list(db: &Db, p: &Principal) -> CoreResult<Vec<Job>> {
    authorize(p, Action::ListLabelingJobs, &Resource::new("atelier:labeling:job/*"))?;
    let jobs: Vec<Job> =
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} ORDER BY j.created_at DESC, j.name"))
            .fetch_all(&db.pool)
            .await?;
    let jobs = with_teams(db, jobs).await?;
    Ok(jobs.into_iter().filter(|j| can_job(p, Action::GetLabelingJob, j)).collect())
}

/// The in-progress jobs of the teams the principal belongs to that they may work on.
pub async fn my_work(db: &Db, p: &Principal) -> CoreResult<Vec<MyWork>> {
    authorize(p, Action::ListLabelingJobs, &Resource::new("atelier:labeling:job/*"))?;
    let groups: HashSet<String> = crate::iam::store::user_groups(db, &p.user.id).await?.into_iter().collect();
    let jobs: Vec<Job> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.status = $1 ORDER BY j.created_at, j.name"
    ))
    .bind(IN_PROGRESS)
    .fetch_all(&db.pool)
    .await?;
    let counts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT job_id, status, CAST(COUNT(*) AS BIGINT) FROM labeling_tasks WHERE worker_id = $1 GROUP BY job_id, status",
    )
    .bind(&p.user.id)
    .fetch_all(&db.pool)
    .await?;
    let count =
        |job: &str, status: &str| counts.iter().find(|(j, s, _)| j == job && s == status).map_or(0, |(_, _, n)| *n);
    Ok(with_teams(db, jobs)
        .await?
        .into_iter()
        .filter(|job| job.teams.iter().any(|t| groups.contains(t)) && can_job(p, Action::SubmitAnnotation, job))
        .map(|job| MyWork {
            submitted: count(&job.id, "submitted"),
            skipped: count(&job.id, "skipped"),
            job: job.info(),
        })
        .collect())
}

/// Checks the categories: named, distinct, at most one-character hotkeys that do not
/// collide with each other or with the page's own keys.
fn check_categories(task: TaskType, categories: &[Category]) -> CoreResult<Vec<Category>> {
    let min = if task.is_single_label() { 2 } else { 1 };
    if categories.len() < min || categories.len() > MAX_CATEGORIES {
        return Err(CoreError::invalid(
            "categories",
            format!("a {} job needs {min} to {MAX_CATEGORIES} categories", task.as_str()),
        ));
    }
    let mut out: Vec<Category> = Vec::new();
    for c in categories {
        let name = c.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(CoreError::invalid("categories", "each category needs a name of 1-100 characters"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(CoreError::invalid("categories", format!("category \"{name}\" is listed twice")));
        }
        let hotkey = match c.hotkey.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            None => None,
            Some(h) if h.chars().count() == 1 => Some(h.to_lowercase()),
            Some(h) => {
                return Err(CoreError::invalid("categories", format!("hotkey \"{h}\" of {name} must be one character")))
            }
        };
        out.push(Category { name: name.to_string(), hotkey });
    }
    let keys = hotkeys(&out);
    for (n, key) in keys.iter().enumerate() {
        let Some(key) = key else { continue };
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(CoreError::invalid(
                "categories",
                format!("hotkey \"{key}\" is kept for skip (s) and undo (z)"),
            ));
        }
        if keys[..n].contains(&Some(key.clone())) {
            return Err(CoreError::invalid("categories", format!("two categories use the hotkey \"{key}\"")));
        }
    }
    Ok(out)
}

/// Creates a labeling job over the items the dataset holds now.
pub async fn create(db: &Db, p: &Principal, spec: &LabelingJobSpec) -> CoreResult<Job> {
    let name = validate_name("name", &spec.name)?;
    authorize(p, Action::CreateLabelingJob, &Resource::new(format!("atelier:labeling:job/{name}")))?;
    let dataset = datasets::get(db, p, &spec.dataset).await?;
    let task = spec.task_type;
    if dataset.kind != task.dataset_kind() {
        return Err(CoreError::invalid(
            "task_type",
            format!(
                "{} needs an {} dataset; {} holds {}s",
                task.as_str(),
                task.dataset_kind(),
                dataset.name,
                dataset.kind
            ),
        ));
    }
    let categories = check_categories(task, &spec.categories)?;
    // The default attribute is the job name with what an attribute cannot hold as `-`.
    let default_attribute: String =
        name.chars().take(127).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let attribute =
        spec.label_attribute.as_deref().map(str::trim).filter(|a| !a.is_empty()).unwrap_or(&default_attribute);
    if attribute.len() > 127
        || !attribute.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || attribute.ends_with("-metadata")
        || ["source", "source-ref"].contains(&attribute)
    {
        return Err(CoreError::invalid(
            "label_attribute",
            "label_attribute must be letters, digits and -, not source, source-ref or end in -metadata",
        ));
    }
    if spec.instructions.chars().count() > MAX_INSTRUCTIONS_CHARS {
        return Err(CoreError::invalid(
            "instructions",
            format!("instructions must be at most {MAX_INSTRUCTIONS_CHARS} characters"),
        ));
    }
    let workers = spec.workers_per_item.unwrap_or_else(|| task.default_workers());
    if !(1..=MAX_WORKERS_PER_ITEM).contains(&workers) {
        return Err(CoreError::invalid(
            "workers_per_item",
            format!("workers_per_item must be 1-{MAX_WORKERS_PER_ITEM}"),
        ));
    }
    let time_limit = spec.task_time_limit_secs.unwrap_or(DEFAULT_TIME_LIMIT_SECS);
    if !(30..=86_400).contains(&time_limit) {
        return Err(CoreError::invalid("task_time_limit_secs", "task_time_limit_secs must be 30-86400"));
    }
    let mut teams: Vec<String> = spec.teams.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    teams.sort();
    teams.dedup();
    if teams.is_empty() {
        return Err(CoreError::invalid("teams", "name at least one work team (a group) to label the job"));
    }
    for team in &teams {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM groups WHERE name = $1").bind(team).fetch_optional(&db.pool).await?;
        if found.is_none() {
            return Err(CoreError::invalid("teams", format!("there is no group named {team}")));
        }
    }
    let gold_share = spec.gold_share.unwrap_or(if spec.gold.is_empty() { 0.0 } else { 0.1 });
    if !(0.0..=0.5).contains(&gold_share) {
        return Err(CoreError::invalid("gold_share", "gold_share must be between 0 and 0.5"));
    }
    if let Some(r) = spec.review_below {
        if !(0.0..=1.0).contains(&r) {
            return Err(CoreError::invalid("review_below", "review_below must be between 0 and 1"));
        }
    }
    let mut gold: Vec<(i64, String)> = Vec::new();
    for g in &spec.gold {
        if g.item < 1 || g.item > dataset.item_count {
            return Err(CoreError::invalid(
                "gold",
                format!("gold item {} is not in {} (items 1-{})", g.item, dataset.name, dataset.item_count),
            ));
        }
        if gold.iter().any(|(seq, _)| *seq == g.item) {
            return Err(CoreError::invalid("gold", format!("gold item {} is listed twice", g.item)));
        }
        let chars = item_text_chars(db, &dataset.id, g.item).await?;
        g.answer
            .validate(task, &categories, chars)
            .map_err(|e| CoreError::invalid("gold", format!("gold item {}: {e}", g.item)))?;
        gold.push((g.item, encode(&g.answer)?));
    }
    if dataset.item_count <= gold.len() as i64 {
        return Err(CoreError::invalid(
            "dataset",
            format!("dataset {} has no items to label besides gold items", dataset.name),
        ));
    }

    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = db.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO labeling_jobs (id, name, dataset_id, task_type, label_attribute, categories, instructions, \
         workers_per_item, task_time_limit_secs, gold_share, review_below, status, item_count, remaining, created_by, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 0, $13, $14)",
    )
    .bind(&id)
    .bind(&name)
    .bind(&dataset.id)
    .bind(task.as_str())
    .bind(attribute)
    .bind(encode(&categories)?)
    .bind(&spec.instructions)
    .bind(i64::from(workers))
    .bind(i64::from(time_limit))
    .bind(gold_share)
    .bind(spec.review_below)
    .bind(IN_PROGRESS)
    .bind(&p.user.username)
    .bind(now())
    .execute(&mut *tx)
    .await;
    if let Err(sqlx::Error::Database(e)) = &inserted {
        if e.is_unique_violation() {
            return Err(CoreError::Conflict(format!("a labeling job named {name} already exists")));
        }
    }
    inserted?;
    for team in &teams {
        sqlx::query("INSERT INTO labeling_job_teams (job_id, team) VALUES ($1, $2)")
            .bind(&id)
            .bind(team)
            .execute(&mut *tx)
            .await?;
    }
    // The items present now; a batch appended later does not change the job. The
    // counts come from the rows copied, not from the dataset read before.
    let copied = sqlx::query(
        "INSERT INTO labeling_items (job_id, item_seq, done, held, open) \
         SELECT $1, seq, 0, 0, 1 FROM dataset_items WHERE dataset_id = $2",
    )
    .bind(&id)
    .bind(&dataset.id)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    for (seq, answer) in &gold {
        let marked = sqlx::query("UPDATE labeling_items SET gold = $1, open = 0 WHERE job_id = $2 AND item_seq = $3")
            .bind(answer)
            .bind(&id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        if marked.rows_affected() != 1 {
            return Err(CoreError::invalid("gold", format!("gold item {seq} is not in {}", dataset.name)));
        }
    }
    sqlx::query("UPDATE labeling_jobs SET item_count = $1, remaining = $1 WHERE id = $2")
        .bind(copied - gold.len() as i64)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    p.note_change(format!(
        "created {} labeling job {name} over {} for {}",
        task.as_str(),
        dataset.name,
        teams.join(", ")
    ));
    find(db, &name).await
}

/// The length in characters of a text item (None for an image).
pub(crate) async fn item_text_chars(db: &Db, dataset_id: &str, seq: i64) -> CoreResult<Option<usize>> {
    let text: Option<Option<String>> =
        sqlx::query_scalar("SELECT text FROM dataset_items WHERE dataset_id = $1 AND seq = $2")
            .bind(dataset_id)
            .bind(seq)
            .fetch_optional(&db.pool)
            .await?;
    Ok(text.flatten().map(|t| t.chars().count()))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> CoreResult<String> {
    serde_json::to_string(value).map_err(CoreError::internal)
}

pub(crate) fn decode_answer(text: &str) -> Option<Answer> {
    serde_json::from_str(text).ok()
}

pub async fn progress(db: &Db, job: &Job) -> CoreResult<Progress> {
    let (annotations, gold_answers, skips, held, workers): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'submitted' AND gold = 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN status = 'submitted' AND gold = 1 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN status = 'skipped' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN status = 'held' AND expires_at > $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COUNT(DISTINCT CASE WHEN status = 'submitted' THEN worker_id END) AS BIGINT) \
         FROM labeling_tasks WHERE job_id = $1",
    )
    .bind(&job.id)
    .bind(now())
    .fetch_one(&db.pool)
    .await?;
    let (gold_items, review_pending, reviewed): (i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN gold IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN review = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN review IN ('confirmed', 'corrected') THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM labeling_items WHERE job_id = $1",
    )
    .bind(&job.id)
    .fetch_one(&db.pool)
    .await?;
    Ok(Progress {
        items_done: job.item_count - job.remaining,
        annotations,
        skips,
        held,
        gold_items,
        gold_answers,
        workers,
        review_pending,
        reviewed,
    })
}

/// Stops a job: nothing more is handed out, held tasks are released, and what was
/// labeled is consolidated (items with fewer annotations than asked included).
pub async fn stop(db: &Db, p: &Principal, name: &str) -> CoreResult<Job> {
    let job = get_for(db, p, name, Action::StopLabelingJob).await?;
    let mut tx = db.pool.begin().await?;
    let stopped = sqlx::query("UPDATE labeling_jobs SET status = $1, completed_at = $2 WHERE id = $3 AND status = $4")
        .bind(STOPPED)
        .bind(now())
        .bind(&job.id)
        .bind(IN_PROGRESS)
        .execute(&mut *tx)
        .await?;
    if stopped.rows_affected() == 0 {
        return Err(CoreError::Conflict(format!("labeling job {name} is {}, not in progress", job.status)));
    }
    sqlx::query("DELETE FROM labeling_tasks WHERE job_id = $1 AND status = 'held'")
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE labeling_items SET held = 0, open = 0 WHERE job_id = $1")
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    p.note_change(format!("stopped labeling job {name}"));
    // Should consolidation fail here, the job is consolidated on its next read.
    super::output::ensure_consolidated(db, find(db, name).await?).await
}

/// Checks an answer against the job's task type, categories and the item (a span must
/// lie in the text).
pub(crate) async fn check_answer(db: &Db, job: &Job, seq: i64, answer: &Answer, field: &'static str) -> CoreResult<()> {
    let chars = item_text_chars(db, &job.dataset_id, seq).await?;
    answer.validate(job.task_type(), &job.categories(), chars).map_err(|e| CoreError::invalid(field, e))
}
