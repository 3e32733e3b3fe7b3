//! The task queue. A labeler asks for the next task and gets an item they have not
//! labeled or skipped, that still needs annotations, and that is not held by so many
//! others that it would get more than `workers_per_item`. The hold is a lease that
//! ends with a submission, a skip, or the job's time limit.
//!
//! Each item row counts its annotations (`done`) and live holds (`held`); a hold is
//! taken with a conditional update (`open = 1`), so two servers sharing a database
//! cannot over-assign an item. Expired holds are swept before new ones are handed out.

use std::collections::HashMap;
use std::sync::Mutex;

use atelier_protocol::labeling::{Answer, Submitted, Task};
use rand::Rng;

use super::jobs::{self, encode, get_for, Job, IN_PROGRESS};
use crate::authz::{Action, Principal};
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Tasks one labeler may hold in a job at once: the one on screen and the next one,
/// preloaded.
pub const MAX_HELD: usize = 2;
/// Open items considered per attempt; more than the concurrent labelers who usually
/// race for the same first items.
const CANDIDATES: i64 = 16;

/// Within one server process leases are taken one at a time: labelers asking at once
/// would otherwise all race for the same first open item and retry. Servers sharing a
/// database stay correct through the conditional update.
static LEASING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// When each job's expired holds were last swept (once a second is plenty); entries
/// older than an hour are dropped.
static SWEPT: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);

fn must_be_open(job: &Job) -> CoreResult<()> {
    if job.status != IN_PROGRESS {
        return Err(CoreError::Conflict(format!(
            "labeling job {} is {}; it takes no more annotations",
            job.name, job.status
        )));
    }
    Ok(())
}

async fn view(db: &Db, job: &Job, id: String, item_seq: i64, expires_at: i64) -> CoreResult<Task> {
    let (item_name, media_type, text): (String, String, Option<String>) =
        sqlx::query_as("SELECT name, media_type, text FROM dataset_items WHERE dataset_id = $1 AND seq = $2")
            .bind(&job.dataset_id)
            .bind(item_seq)
            .fetch_one(&db.pool)
            .await?;
    Ok(Task { id, item_seq, expires_at, item_name, media_type, text })
}

/// The principal's next task in the job, or `None` when there is nothing left for
/// them now. A task they already hold comes first, its hold renewed (a reload
/// continues where they were; the preloaded task gets its full time once shown),
/// except `besides`: the page asks for the task after the one on screen. A job that
/// is no longer in progress hands out nothing.
pub async fn next(db: &Db, p: &Principal, name: &str, besides: Option<&str>) -> CoreResult<(Job, Option<Task>)> {
    let job = get_for(db, p, name, Action::SubmitAnnotation).await?;
    // A job whose last annotation's request failed before consolidating finishes now.
    let job = super::output::ensure_consolidated(db, job).await?;
    if job.status != IN_PROGRESS {
        return Ok((job, None));
    }
    let task = match lease(db, p, &job, besides).await? {
        Some((id, seq, expires)) => Some(view(db, &job, id, seq, expires).await?),
        None => None,
    };
    Ok((job, task))
}

/// Takes (or renews) a hold: (task id, item, expiry).
async fn lease(db: &Db, p: &Principal, job: &Job, besides: Option<&str>) -> CoreResult<Option<(String, i64, i64)>> {
    let _one_at_a_time = LEASING.lock().await;
    let now = now();
    let expires = now + job.task_time_limit_secs;
    let held: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, item_seq FROM labeling_tasks \
         WHERE job_id = $1 AND worker_id = $2 AND status = 'held' AND expires_at > $3 ORDER BY leased_at, id",
    )
    .bind(&job.id)
    .bind(&p.user.id)
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    if let Some((id, seq)) = held.iter().find(|(id, ..)| Some(id.as_str()) != besides) {
        sqlx::query("UPDATE labeling_tasks SET expires_at = $1 WHERE id = $2 AND status = 'held'")
            .bind(expires)
            .bind(id)
            .execute(&db.pool)
            .await?;
        return Ok(Some((id.clone(), *seq, expires)));
    }
    if held.len() >= MAX_HELD {
        return Ok(None);
    }
    sweep(db, job, now).await?;
    // Items are handed out in dataset order, so few are ever partly done: the open
    // items this worker already labeled, which the query steps over, stay few.
    for _ in 0..4 {
        let candidates: Vec<i64> = sqlx::query_scalar(
            "SELECT i.item_seq FROM labeling_items i WHERE i.job_id = $1 AND i.open = 1 AND NOT EXISTS \
             (SELECT 1 FROM labeling_tasks t WHERE t.job_id = i.job_id AND t.item_seq = i.item_seq AND t.worker_id = $2) \
             ORDER BY i.item_seq LIMIT $3",
        )
        .bind(&job.id)
        .bind(&p.user.id)
        .bind(CANDIDATES)
        .fetch_all(&db.pool)
        .await?;
        if candidates.is_empty() {
            // Gold items are mixed into real work, never handed out alone.
            return Ok(None);
        }
        if job.gold_share > 0.0 && rand::thread_rng().gen_bool(job.gold_share.clamp(0.0, 1.0)) {
            if let Some(seq) = gold_for(db, job, &p.user.id).await? {
                let mut tx = db.pool.begin().await?;
                if let Some(id) = insert_task(&mut tx, job, p, seq, true, now, expires).await? {
                    tx.commit().await?;
                    return Ok(Some((id, seq, expires)));
                }
            }
        }
        for seq in candidates {
            let mut tx = db.pool.begin().await?;
            // Only while the job is in progress, so a Stop that just committed wins.
            let taken = sqlx::query(
                "UPDATE labeling_items SET held = held + 1, \
                 open = CASE WHEN done + held + 1 >= $1 THEN 0 ELSE 1 END \
                 WHERE job_id = $2 AND item_seq = $3 AND open = 1 \
                 AND EXISTS (SELECT 1 FROM labeling_jobs WHERE id = $2 AND status = $4)",
            )
            .bind(job.workers_per_item)
            .bind(&job.id)
            .bind(seq)
            .bind(IN_PROGRESS)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 0 {
                continue;
            }
            // Another server may have given this worker the item a moment ago.
            if let Some(id) = insert_task(&mut tx, job, p, seq, false, now, expires).await? {
                tx.commit().await?;
                return Ok(Some((id, seq, expires)));
            }
        }
    }
    Ok(None)
}

/// A gold item the worker has not had yet.
async fn gold_for(db: &Db, job: &Job, worker_id: &str) -> CoreResult<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT i.item_seq FROM labeling_items i WHERE i.job_id = $1 AND i.gold IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM labeling_tasks t WHERE t.job_id = i.job_id AND t.item_seq = i.item_seq AND t.worker_id = $2) \
         ORDER BY i.item_seq LIMIT 1",
    )
    .bind(&job.id)
    .bind(worker_id)
    .fetch_optional(&db.pool)
    .await?)
}

async fn insert_task(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: &Job,
    p: &Principal,
    seq: i64,
    gold: bool,
    now: i64,
    expires: i64,
) -> CoreResult<Option<String>> {
    let id = uuid::Uuid::now_v7().to_string();
    let inserted = sqlx::query(
        "INSERT INTO labeling_tasks (id, job_id, item_seq, worker_id, worker, status, gold, leased_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, 'held', $6, $7, $8)",
    )
    .bind(&id)
    .bind(&job.id)
    .bind(seq)
    .bind(&p.user.id)
    .bind(&p.user.username)
    .bind(i64::from(gold))
    .bind(now)
    .bind(expires)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(Some(id)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Releases the job's holds whose time limit has passed, so their items can go to
/// someone else (at most once a second per job and process).
async fn sweep(db: &Db, job: &Job, now: i64) -> CoreResult<()> {
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        let swept = swept.get_or_insert_with(HashMap::new);
        if swept.get(&job.id).is_some_and(|&at| at >= now) {
            return Ok(());
        }
        if swept.len() > 1000 {
            swept.retain(|_, at| now - *at < 3600);
        }
        swept.insert(job.id.clone(), now);
    }
    let mut tx = db.pool.begin().await?;
    let expired: Vec<(i64, i64)> = sqlx::query_as(
        "DELETE FROM labeling_tasks WHERE job_id = $1 AND status = 'held' AND expires_at <= $2 RETURNING item_seq, gold",
    )
    .bind(&job.id)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    for (seq, _) in expired.iter().filter(|(_, gold)| *gold == 0) {
        release(&mut tx, job, *seq).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Gives an item back the slot a hold took (the hold expired or was skipped).
async fn release(tx: &mut sqlx::Transaction<'static, sqlx::Any>, job: &Job, seq: i64) -> CoreResult<()> {
    sqlx::query("UPDATE labeling_items SET held = held - 1, open = 1 WHERE job_id = $1 AND item_seq = $2")
        .bind(&job.id)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The principal's task, with its item and state.
async fn own_task(db: &Db, job: &Job, p: &Principal, task_id: &str) -> CoreResult<(i64, String, bool, Option<String>)> {
    let row: Option<(i64, String, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT item_seq, worker_id, status, gold, answer FROM labeling_tasks WHERE id = $1 AND job_id = $2",
    )
    .bind(task_id)
    .bind(&job.id)
    .fetch_optional(&db.pool)
    .await?;
    match row {
        Some((seq, worker, status, gold, answer)) if worker == p.user.id => Ok((seq, status, gold == 1, answer)),
        _ => Err(CoreError::Conflict(format!(
            "task {task_id} is not held by you in {}: its time limit may have passed; ask for the next task",
            job.name
        ))),
    }
}

/// Records the principal's answer for a task they hold. Submitting the same task again
/// records nothing more.
pub async fn submit(
    db: &Db,
    p: &Principal,
    name: &str,
    task_id: &str,
    answer: &Answer,
    duration_ms: Option<i64>,
) -> CoreResult<Submitted> {
    let job = get_for(db, p, name, Action::SubmitAnnotation).await?;
    let (seq, status, gold, stored) = own_task(db, &job, p, task_id).await?;
    let encoded = encode(answer)?;
    let repeat = |stored: Option<String>, status: String| {
        if status == "skipped" {
            return Err(CoreError::Conflict(format!("task {task_id} was skipped; it cannot be submitted")));
        }
        if stored.as_deref().and_then(jobs::decode_answer).as_ref() != Some(answer) {
            return Err(CoreError::Conflict(format!("task {task_id} was already submitted with another answer")));
        }
        Ok(Submitted { recorded: false, job_status: job.status.clone() })
    };
    if status != "held" {
        return repeat(stored, status);
    }
    must_be_open(&job)?;
    jobs::check_answer(db, &job, seq, answer, "answer").await?;
    let duration = duration_ms.map(|d| d.clamp(0, 86_400_000));

    let mut tx = db.pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE labeling_tasks SET status = 'submitted', answer = $1, finished_at = $2, duration_ms = $3 \
         WHERE id = $4 AND status = 'held'",
    )
    .bind(&encoded)
    .bind(now())
    .bind(duration)
    .bind(task_id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        // Another request for the same task got there first.
        tx.rollback().await?;
        let (_, status, _, stored) = own_task(db, &job, p, task_id).await?;
        return repeat(stored, status);
    }
    let mut completed = false;
    if !gold {
        let done: i64 = sqlx::query_scalar(
            "UPDATE labeling_items SET held = held - 1, done = done + 1 WHERE job_id = $1 AND item_seq = $2 RETURNING done",
        )
        .bind(&job.id)
        .bind(seq)
        .fetch_one(&mut *tx)
        .await?;
        if done == job.workers_per_item {
            let remaining: i64 = sqlx::query_scalar(
                "UPDATE labeling_jobs SET remaining = remaining - 1 WHERE id = $1 RETURNING remaining",
            )
            .bind(&job.id)
            .fetch_one(&mut *tx)
            .await?;
            completed = remaining == 0;
        }
    }
    tx.commit().await?;
    let mut job_status = job.status.clone();
    if completed {
        // The last annotation: consolidate now, so the output is ready when the
        // labeler's page says the job is done.
        job_status = super::output::consolidate(db, &job).await?;
    }
    Ok(Submitted { recorded: true, job_status })
}

/// Skips a held task: recorded, and the item goes to someone else.
pub async fn skip(db: &Db, p: &Principal, name: &str, task_id: &str) -> CoreResult<()> {
    let job = get_for(db, p, name, Action::SubmitAnnotation).await?;
    let (seq, status, gold, _) = own_task(db, &job, p, task_id).await?;
    if status == "skipped" {
        return Ok(());
    }
    if status != "held" {
        return Err(CoreError::Conflict(format!("task {task_id} was submitted; it cannot be skipped")));
    }
    let mut tx = db.pool.begin().await?;
    let updated =
        sqlx::query("UPDATE labeling_tasks SET status = 'skipped', finished_at = $1 WHERE id = $2 AND status = 'held'")
            .bind(now())
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
    if updated.rows_affected() == 1 && !gold {
        release(&mut tx, &job, seq).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The content of one of a job's items: for labelers, only items they were given
/// (they are not given the dataset itself); for reviewers and owners, any.
pub async fn item_artifact(db: &Db, p: &Principal, name: &str, seq: i64) -> CoreResult<(String, String)> {
    let job = get_for(db, p, name, Action::ListTasks).await?;
    // Labelers see the items they were given; reviewers and owners see any.
    let sees_all =
        jobs::can_job(p, Action::ReviewAnnotations, &job) || jobs::can_job(p, Action::GetLabelingJobOutput, &job);
    if !sees_all {
        let given: Option<i64> = sqlx::query_scalar(
            "SELECT item_seq FROM labeling_tasks WHERE job_id = $1 AND item_seq = $2 AND worker_id = $3",
        )
        .bind(&job.id)
        .bind(seq)
        .bind(&p.user.id)
        .fetch_optional(&db.pool)
        .await?;
        if given.is_none() {
            return Err(CoreError::Forbidden(format!("item {seq} of {name} was not given to you")));
        }
    }
    let row: Option<(Option<String>, String)> = sqlx::query_as(
        "SELECT d.artifact_id, d.media_type FROM labeling_items i JOIN dataset_items d \
         ON d.dataset_id = $1 AND d.seq = i.item_seq WHERE i.job_id = $2 AND i.item_seq = $3",
    )
    .bind(&job.dataset_id)
    .bind(&job.id)
    .bind(seq)
    .fetch_optional(&db.pool)
    .await?;
    match row {
        Some((Some(artifact), media_type)) => Ok((artifact, media_type)),
        _ => Err(CoreError::NotFound("image item")),
    }
}
