//! What a labeling job produces: consolidated labels (see [`super::consolidation`]),
//! the review queue for low-confidence items, the Ground Truth output manifest, and
//! the quality report (gold accuracy, agreement, confusion, throughput).

use std::collections::{BTreeMap, HashMap, HashSet};

use atelier_protocol::labeling::{
    Answer, Entity, ImageSize, LabeledBox, Outcome, PairAgreement, Quality, ReviewItem, TaskType, WorkerAnswer,
    WorkerQuality,
};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use serde_json::{json, Map, Value};

use super::consolidation::{self as cons, BoundingBox, Span};
use super::jobs::{self, decode_answer, encode, get_for, Job, COMPLETED, IN_PROGRESS, REVIEWING, STOPPED};
use super::{agreement, Annotated};
use crate::artifacts::{kind, ArtifactStore, NewArtifact};
use crate::authz::{Action, Principal};
use crate::datasets::MAX_CHANNEL_ITEMS;
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Boxes of different workers are the same object from this IoU on.
pub const BOX_MIN_IOU: f64 = 0.5;
/// Items per database page when writing results and the output manifest.
const PAGE: i64 = 1000;

/// Whether two answers say the same: equal classes or label sets; boxes matched one
/// to one with the same class and IoU ≥ 0.5; equal entity sets. Used for gold items
/// and for agreement with the consensus.
pub fn answers_match(task: TaskType, a: &Answer, b: &Answer) -> bool {
    match task {
        TaskType::ImageClassification | TaskType::TextClassification => a.label.is_some() && a.label == b.label,
        TaskType::ImageMultiLabel | TaskType::TextMultiLabel => {
            let set = |x: &Answer| {
                let mut v = x.labels.clone().unwrap_or_default();
                v.sort();
                v
            };
            set(a) == set(b)
        }
        TaskType::BoundingBox => {
            let (xs, ys) = (a.boxes.clone().unwrap_or_default(), b.boxes.clone().unwrap_or_default());
            if xs.len() != ys.len() {
                return false;
            }
            let mut used = vec![false; ys.len()];
            xs.iter().all(|x| {
                let hit = ys
                    .iter()
                    .enumerate()
                    .find(|(n, y)| !used[*n] && y.label == x.label && bbox(x, 0).iou(&bbox(y, 0)) >= BOX_MIN_IOU);
                hit.map(|(n, _)| used[n] = true).is_some()
            })
        }
        TaskType::NamedEntity => {
            let set = |x: &Answer| {
                let mut v: Vec<(usize, usize, String)> =
                    x.entities.iter().flatten().map(|e| (e.start, e.end, e.label.clone())).collect();
                v.sort();
                v
            };
            set(a) == set(b)
        }
    }
}

fn bbox(b: &LabeledBox, class: usize) -> BoundingBox {
    BoundingBox { class, left: b.left, top: b.top, width: b.width, height: b.height }
}

/// The submitted annotations of a job's regular items: (item, worker, answer).
async fn annotations(db: &Db, job: &Job) -> CoreResult<Vec<Annotated>> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT item_seq, worker, answer FROM labeling_tasks \
         WHERE job_id = $1 AND status = 'submitted' AND gold = 0 AND answer IS NOT NULL ORDER BY item_seq, worker",
    )
    .bind(&job.id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().filter_map(|(seq, w, a)| decode_answer(&a).map(|a| (seq, w, a))).collect())
}

/// Consolidates the job's annotations into one outcome per item with a confidence,
/// queues low-confidence items for review, and moves an in-progress job on (Reviewing
/// or Completed; a stopped job stays Stopped). Returns the status.
pub async fn consolidate(db: &Db, job: &Job) -> CoreResult<String> {
    let annotated = annotations(db, job).await?;
    let outcomes = consolidate_answers(job, &annotated);
    let threshold = job.review_below;
    let mut pending = 0;
    let mut tx = db.pool.begin().await?;
    for (seq, (outcome, confidence)) in &outcomes {
        let review = threshold.filter(|t| confidence < t).map(|_| "pending");
        pending += usize::from(review.is_some());
        sqlx::query(
            "UPDATE labeling_items SET result = $1, confidence = $2, review = $3 WHERE job_id = $4 AND item_seq = $5",
        )
        .bind(encode(outcome)?)
        .bind(confidence)
        .bind(review)
        .bind(&job.id)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    let status = match job.status.as_str() {
        IN_PROGRESS if pending > 0 => REVIEWING,
        IN_PROGRESS => COMPLETED,
        other => other,
    }
    .to_string();
    // Conditional on the status read, so a Stop that came in between is not undone.
    sqlx::query(
        "UPDATE labeling_jobs SET status = $1, completed_at = COALESCE(completed_at, $2), consolidated_at = $2 \
         WHERE id = $3 AND status = $4",
    )
    .bind(&status)
    .bind(now())
    .bind(&job.id)
    .bind(&job.status)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(status)
}

/// The job with its labeling over but not consolidated yet (the request that finished
/// or stopped it failed before consolidating) is consolidated now; others are
/// returned as they are.
pub async fn ensure_consolidated(db: &Db, job: Job) -> CoreResult<Job> {
    let over = job.status == STOPPED || (job.status == IN_PROGRESS && job.remaining == 0);
    if job.consolidated_at.is_some() || !over {
        return Ok(job);
    }
    consolidate(db, &job).await?;
    jobs::find(db, &job.name).await
}

/// Item -> (outcome, confidence of the item).
fn consolidate_answers(job: &Job, annotated: &[Annotated]) -> BTreeMap<i64, (Outcome, f64)> {
    let task = job.task_type();
    let categories: Vec<String> = job.categories().into_iter().map(|c| c.name).collect();
    let class = |name: &str| categories.iter().position(|c| c == name);
    let mut workers: Vec<&str> = annotated.iter().map(|(_, w, _)| w.as_str()).collect();
    workers.sort();
    workers.dedup();
    let worker_index = |w: &str| workers.binary_search(&w).unwrap_or(0);
    // Each item's annotations, grouped once (they arrive ordered by item).
    let mut by_item: BTreeMap<i64, Vec<(usize, &Answer)>> = BTreeMap::new();
    for (seq, w, a) in annotated {
        by_item.entry(*seq).or_default().push((worker_index(w), a));
    }
    let items: Vec<i64> = by_item.keys().copied().collect();
    let mut out = BTreeMap::new();
    if task.is_single_label() {
        let labels: Vec<cons::Annotation> = by_item
            .values()
            .enumerate()
            .flat_map(|(n, answers)| {
                answers.iter().filter_map(move |(w, a)| Some((n, *w, class(a.label.as_deref()?)?)))
            })
            .collect();
        let (results, _) = cons::classification(&labels, items.len(), categories.len());
        for (n, result) in results.into_iter().enumerate() {
            if let Some(r) = result {
                let answer = Answer { label: Some(categories[r.class].clone()), ..Default::default() };
                out.insert(items[n], (Outcome { answer, confidences: vec![] }, r.confidence));
            }
        }
        return out;
    }
    for (&seq, answers) in &by_item {
        let workers = answers.len();
        let (answer, confidences) = match task {
            TaskType::ImageMultiLabel | TaskType::TextMultiLabel => {
                let selections: Vec<(usize, usize, Vec<usize>)> = answers
                    .iter()
                    .map(|(w, a)| (0, *w, a.labels.iter().flatten().filter_map(|l| class(l)).collect()))
                    .collect();
                let chosen = cons::multi_label(&selections, 1, categories.len()).pop().flatten().unwrap_or_default();
                let labels = chosen.iter().map(|(c, _)| categories[*c].clone()).collect();
                (Answer { labels: Some(labels), ..Default::default() }, chosen.iter().map(|(_, c)| *c).collect())
            }
            TaskType::BoundingBox => {
                let drawn: Vec<(usize, BoundingBox)> = answers
                    .iter()
                    .flat_map(|(w, a)| a.boxes.iter().flatten().filter_map(|b| Some((*w, bbox(b, class(&b.label)?)))))
                    .collect();
                let kept = cons::boxes(&drawn, workers, BOX_MIN_IOU);
                let boxes = kept
                    .iter()
                    .map(|k| LabeledBox {
                        label: categories[k.bbox.class].clone(),
                        left: k.bbox.left,
                        top: k.bbox.top,
                        width: k.bbox.width,
                        height: k.bbox.height,
                    })
                    .collect();
                let size = most_common(answers.iter().filter_map(|(_, a)| a.image_size));
                let answer = Answer { boxes: Some(boxes), image_size: size, ..Default::default() };
                (answer, kept.iter().map(|k| k.confidence).collect())
            }
            _ => {
                let marked: Vec<(usize, Span)> = answers
                    .iter()
                    .flat_map(|(w, a)| {
                        a.entities
                            .iter()
                            .flatten()
                            .filter_map(|e| Some((*w, Span { start: e.start, end: e.end, label: class(&e.label)? })))
                    })
                    .collect();
                let kept = without_overlaps(cons::spans(&marked, workers));
                let entities = kept
                    .iter()
                    .map(|k| Entity { label: categories[k.span.label].clone(), start: k.span.start, end: k.span.end })
                    .collect();
                (Answer { entities: Some(entities), ..Default::default() }, kept.iter().map(|k| k.confidence).collect())
            }
        };
        let outcome = Outcome { answer, confidences };
        // Multi-label: the share of workers whose set is the result. Objects: their mean
        // confidence, or with none kept the share of workers who saw none.
        let confidence = if workers < 2 {
            0.0
        } else if task.is_multi_label() || outcome.confidences.is_empty() {
            answers.iter().filter(|(_, a)| answers_match(task, a, &outcome.answer)).count() as f64 / workers as f64
        } else {
            outcome.confidences.iter().sum::<f64>() / outcome.confidences.len() as f64
        };
        out.insert(seq, (outcome, confidence));
    }
    out
}

/// Spans that overlap (one worker's overlapping marks can start two clusters) are
/// resolved in favour of the more confident; the rest stay in text order.
fn without_overlaps(mut spans: Vec<cons::ConsolidatedSpan>) -> Vec<cons::ConsolidatedSpan> {
    spans.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.span.start.cmp(&b.span.start)));
    let mut kept: Vec<cons::ConsolidatedSpan> = Vec::new();
    for s in spans {
        if kept.iter().all(|k| s.span.end <= k.span.start || s.span.start >= k.span.end) {
            kept.push(s);
        }
    }
    kept.sort_by_key(|k| k.span.start);
    kept
}

fn most_common(sizes: impl Iterator<Item = ImageSize>) -> Option<ImageSize> {
    let mut counts: Vec<(ImageSize, usize)> = Vec::new();
    for s in sizes {
        match counts.iter_mut().find(|(c, _)| *c == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s)
}

/// The review queue: consolidated items below the job's confidence threshold, least
/// confident first.
pub async fn review_queue(db: &Db, p: &Principal, name: &str, limit: i64) -> CoreResult<(Job, Vec<ReviewItem>)> {
    let job = ensure_consolidated(db, get_for(db, p, name, Action::ReviewAnnotations).await?).await?;
    let rows: Vec<(i64, String, Option<String>, String, f64)> = sqlx::query_as(
        "SELECT i.item_seq, d.name, d.text, i.result, i.confidence FROM labeling_items i \
         JOIN dataset_items d ON d.dataset_id = $1 AND d.seq = i.item_seq \
         WHERE i.job_id = $2 AND i.review = 'pending' ORDER BY i.confidence, i.item_seq LIMIT $3",
    )
    .bind(&job.dataset_id)
    .bind(&job.id)
    .bind(limit.clamp(1, 200))
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::new();
    for (seq, item_name, text, result, confidence) in rows {
        let answers: Vec<(String, String)> = sqlx::query_as(
            "SELECT worker, answer FROM labeling_tasks WHERE job_id = $1 AND item_seq = $2 AND status = 'submitted' ORDER BY worker",
        )
        .bind(&job.id)
        .bind(seq)
        .fetch_all(&db.pool)
        .await?;
        let Ok(outcome) = serde_json::from_str(&result) else { continue };
        out.push(ReviewItem {
            item_seq: seq,
            item_name,
            text,
            outcome,
            confidence,
            annotations: answers
                .into_iter()
                .filter_map(|(worker, a)| decode_answer(&a).map(|answer| WorkerAnswer { worker, answer }))
                .collect(),
        });
    }
    Ok((job, out))
}

/// A reviewer confirms or corrects an item in the review queue. The answer replaces
/// the consolidated one; the item is marked confirmed (same answer) or corrected.
/// When the queue empties, the job is Completed.
pub async fn review(db: &Db, p: &Principal, name: &str, seq: i64, answer: &Answer) -> CoreResult<&'static str> {
    let job = get_for(db, p, name, Action::ReviewAnnotations).await?;
    let row: Option<(Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT result, review, reviewed_by FROM labeling_items WHERE job_id = $1 AND item_seq = $2")
            .bind(&job.id)
            .bind(seq)
            .fetch_optional(&db.pool)
            .await?;
    let Some((result, state, by)) = row else { return Err(CoreError::NotFound("labeling job item")) };
    if state.as_deref() != Some("pending") {
        return Err(match by {
            Some(by) => CoreError::Conflict(format!("item {seq} was already reviewed by {by}")),
            None => CoreError::Conflict(format!("item {seq} is not in the review queue")),
        });
    }
    jobs::check_answer(db, &job, seq, answer, "answer").await?;
    let before: Option<Outcome> = result.and_then(|r| serde_json::from_str(&r).ok());
    let verdict = match before {
        Some(b) if answers_match(job.task_type(), &b.answer, answer) => "confirmed",
        _ => "corrected",
    };
    let objects = answer
        .labels
        .as_ref()
        .map(Vec::len)
        .or(answer.boxes.as_ref().map(Vec::len))
        .or(answer.entities.as_ref().map(Vec::len));
    let outcome = Outcome { answer: answer.clone(), confidences: vec![1.0; objects.unwrap_or(0)] };
    let mut tx = db.pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE labeling_items SET result = $1, confidence = 1.0, review = $2, reviewed_by = $3, reviewed_at = $4 \
         WHERE job_id = $5 AND item_seq = $6 AND review = 'pending'",
    )
    .bind(encode(&outcome)?)
    .bind(verdict)
    .bind(&p.user.username)
    .bind(now())
    .bind(&job.id)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(CoreError::Conflict(format!("item {seq} was reviewed by someone else just now")));
    }
    sqlx::query(
        "UPDATE labeling_jobs SET status = $1 WHERE id = $2 AND status = $3 AND NOT EXISTS \
         (SELECT 1 FROM labeling_items WHERE job_id = $2 AND review = 'pending')",
    )
    .bind(COMPLETED)
    .bind(&job.id)
    .bind(REVIEWING)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    p.note_change(format!("{verdict} item {seq} of labeling job {name}"));
    Ok(verdict)
}

/// The output manifest, one JSON line per consolidated item in dataset order, as
/// Ground Truth writes it; streamed page by page, so memory stays flat whatever the
/// job's size. Refused while the job is still in progress.
pub async fn output_manifest(
    db: &Db,
    p: &Principal,
    name: &str,
) -> CoreResult<(Job, impl Stream<Item = Result<Bytes, CoreError>> + Send + 'static)> {
    let job = get_for(db, p, name, Action::GetLabelingJobOutput).await?;
    let job = ensure_consolidated(db, job).await?;
    let lines = manifest_lines(db, &job, false)?;
    Ok((job, lines))
}

/// The manifest's lines, page by page. `file_names`: images are referred to by their
/// file name (as a training channel holds them), not by the reference they were
/// imported with.
fn manifest_lines(
    db: &Db,
    job: &Job,
    file_names: bool,
) -> CoreResult<impl Stream<Item = Result<Bytes, CoreError>> + Send + 'static> {
    let name = &job.name;
    if job.status == IN_PROGRESS {
        let left = job.remaining;
        return Err(CoreError::Conflict(format!(
            "labeling job {name} is in progress ({left} of {} items still need annotations); stop it to consolidate what is labeled",
            job.item_count
        )));
    }
    let db = db.clone();
    let writer = ManifestWriter::new(job, file_names);
    let state = (db, job.clone(), writer, 0i64, false);
    let stream = futures::stream::try_unfold(state, |(db, job, writer, after, finished)| async move {
        if finished {
            return Ok(None);
        }
        let rows: Vec<ManifestRow> = sqlx::query_as(
            "SELECT i.item_seq, i.result, i.confidence, i.review, d.name, d.text, d.source_ref FROM labeling_items i \
             JOIN dataset_items d ON d.dataset_id = $1 AND d.seq = i.item_seq \
             WHERE i.job_id = $2 AND i.item_seq > $3 AND i.result IS NOT NULL ORDER BY i.item_seq LIMIT $4",
        )
        .bind(&job.dataset_id)
        .bind(&job.id)
        .bind(after)
        .bind(PAGE)
        .fetch_all(&db.pool)
        .await?;
        let last = rows.last().map(|r| r.0);
        let finished = (rows.len() as i64) < PAGE;
        let mut chunk = String::new();
        for row in &rows {
            chunk.push_str(&writer.line(row).to_string());
            chunk.push('\n');
        }
        Ok(Some((Bytes::from(chunk), (db, job, writer, last.unwrap_or(after), finished))))
    });
    Ok(stream)
}

/// (item_seq, result, confidence, review, item name, text, source_ref)
type ManifestRow = (i64, String, Option<f64>, Option<String>, String, Option<String>, Option<String>);

/// Writes output manifest lines for one job.
struct ManifestWriter {
    task: TaskType,
    attribute: String,
    categories: Vec<String>,
    job_name: String,
    creation_date: String,
    file_names: bool,
}

impl ManifestWriter {
    fn new(job: &Job, file_names: bool) -> Self {
        let at = job.completed_at.unwrap_or_else(now);
        let creation_date = time::OffsetDateTime::from_unix_timestamp(at)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        ManifestWriter {
            task: job.task_type(),
            attribute: job.label_attribute.clone(),
            categories: job.categories().into_iter().map(|c| c.name).collect(),
            job_name: format!("labeling-job/{}", job.name),
            creation_date,
            file_names,
        }
    }

    fn class_id(&self, name: &str) -> usize {
        self.categories.iter().position(|c| c == name).unwrap_or(0)
    }

    fn class_map<'a>(&self, names: impl Iterator<Item = &'a String>) -> Value {
        let map: BTreeMap<String, String> = names.map(|n| (self.class_id(n).to_string(), n.clone())).collect();
        json!(map)
    }

    fn line(&self, row: &ManifestRow) -> Value {
        let (seq, result, confidence, review, name, text, source_ref) = row;
        let outcome: Outcome =
            serde_json::from_str(result).unwrap_or(Outcome { answer: Answer::default(), confidences: vec![] });
        let mut line = Map::new();
        match text {
            Some(t) => line.insert("source".into(), json!(t)),
            None => {
                let reference = source_ref.as_deref().filter(|_| !self.file_names).unwrap_or(name);
                line.insert("source-ref".into(), json!(reference))
            }
        };
        line.insert("dataset-item".into(), json!(seq));
        let mut meta = Map::new();
        let answer = &outcome.answer;
        let label = match self.task {
            TaskType::ImageClassification | TaskType::TextClassification => {
                let class = answer.label.clone().unwrap_or_default();
                meta.insert("class-name".into(), json!(class));
                json!(self.class_id(&class))
            }
            TaskType::ImageMultiLabel | TaskType::TextMultiLabel => {
                let labels = answer.labels.clone().unwrap_or_default();
                meta.insert("class-map".into(), self.class_map(labels.iter()));
                let confidences: BTreeMap<String, f64> = labels
                    .iter()
                    .zip(outcome.confidences.iter())
                    .map(|(l, c)| (self.class_id(l).to_string(), *c))
                    .collect();
                meta.insert("confidence-map".into(), json!(confidences));
                json!(labels.iter().map(|l| self.class_id(l)).collect::<Vec<_>>())
            }
            TaskType::BoundingBox => {
                let boxes = answer.boxes.clone().unwrap_or_default();
                let size = answer.image_size.unwrap_or(ImageSize { width: 0, height: 0 });
                meta.insert("class-map".into(), self.class_map(boxes.iter().map(|b| &b.label)));
                meta.insert(
                    "objects".into(),
                    json!(outcome.confidences.iter().map(|c| json!({"confidence": c})).collect::<Vec<_>>()),
                );
                json!({
                    "image_size": [{"width": size.width, "height": size.height, "depth": 3}],
                    "annotations": boxes.iter().map(|b| json!({
                        "class_id": self.class_id(&b.label),
                        "left": b.left.round(), "top": b.top.round(), "width": b.width.round(), "height": b.height.round(),
                    })).collect::<Vec<_>>(),
                })
            }
            TaskType::NamedEntity => {
                let entities = answer.entities.clone().unwrap_or_default();
                meta.insert(
                    "entities".into(),
                    json!(outcome.confidences.iter().map(|c| json!({"confidence": c})).collect::<Vec<_>>()),
                );
                json!({"annotations": {
                    "entities": entities.iter().map(|e| json!({"label": e.label, "startOffset": e.start, "endOffset": e.end})).collect::<Vec<_>>(),
                    "labels": self.categories.iter().map(|c| json!({"label": c})).collect::<Vec<_>>(),
                }})
            }
        };
        meta.insert("confidence".into(), json!(confidence.unwrap_or(0.0)));
        meta.insert("type".into(), json!(self.task.manifest_type()));
        meta.insert("job-name".into(), json!(self.job_name));
        meta.insert("human-annotated".into(), json!("yes"));
        meta.insert("creation-date".into(), json!(self.creation_date));
        if let Some(review) = review {
            meta.insert("review".into(), json!(review));
        }
        line.insert(self.attribute.clone(), label);
        line.insert(format!("{}-metadata", self.attribute), Value::Object(meta));
        Value::Object(line)
    }
}

/// Most pairs listed.
const MAX_PAIRS: usize = 20;

pub async fn quality(db: &Db, p: &Principal, name: &str) -> CoreResult<(Job, Quality)> {
    let job = ensure_consolidated(db, get_for(db, p, name, Action::GetLabelingJobOutput).await?).await?;
    let task = job.task_type();
    let classes: Vec<String> = job.categories().into_iter().map(|c| c.name).collect();
    // (worker, item, status, gold, answer, leased_at, finished_at, duration_ms)
    type Row = (String, i64, String, i64, Option<String>, i64, Option<i64>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT worker, item_seq, status, gold, answer, leased_at, finished_at, duration_ms FROM labeling_tasks \
         WHERE job_id = $1 AND status <> 'held' ORDER BY worker, item_seq",
    )
    .bind(&job.id)
    .fetch_all(&db.pool)
    .await?;
    let items: Vec<(i64, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT item_seq, gold, result FROM labeling_items WHERE job_id = $1 AND (gold IS NOT NULL OR result IS NOT NULL)")
            .bind(&job.id)
            .fetch_all(&db.pool)
            .await?;
    let gold: HashMap<i64, Answer> =
        items.iter().filter_map(|(s, g, _)| Some((*s, decode_answer(g.as_deref()?)?))).collect();
    let results: HashMap<i64, Answer> = items
        .iter()
        .filter_map(|(s, _, r)| Some((*s, serde_json::from_str::<Outcome>(r.as_deref()?).ok()?.answer)))
        .collect();

    let mut workers: BTreeMap<String, WorkerQuality> = BTreeMap::new();
    let mut spans: HashMap<String, (i64, i64, i64)> = HashMap::new(); // first leased, last finished, ms total
    let mut consensus: HashMap<String, (i64, i64)> = HashMap::new();
    let mut labels: Vec<(i64, String, usize)> = Vec::new();
    for (worker, seq, status, is_gold, answer, leased, finished, duration) in &rows {
        let w = workers.entry(worker.clone()).or_insert_with(|| WorkerQuality {
            worker: worker.clone(),
            annotations: 0,
            skips: 0,
            gold_answers: 0,
            gold_correct: 0,
            gold_accuracy: None,
            consensus_agreement: None,
            mean_seconds: None,
            per_hour: None,
        });
        if status == "skipped" {
            w.skips += 1;
            continue;
        }
        let Some(answer) = answer.as_deref().and_then(decode_answer) else { continue };
        w.annotations += 1;
        let span = spans.entry(worker.clone()).or_insert((i64::MAX, 0, 0));
        span.0 = span.0.min(*leased);
        span.1 = span.1.max(finished.unwrap_or(*leased));
        span.2 += duration.unwrap_or(0);
        if *is_gold == 1 {
            w.gold_answers += 1;
            if gold.get(seq).is_some_and(|g| answers_match(task, g, &answer)) {
                w.gold_correct += 1;
            }
            continue;
        }
        if let Some(result) = results.get(seq) {
            let c = consensus.entry(worker.clone()).or_insert((0, 0));
            c.0 += i64::from(answers_match(task, result, &answer));
            c.1 += 1;
        }
        if task.is_single_label() {
            if let Some(class) = answer.label.as_deref().and_then(|l| classes.iter().position(|c| c == l)) {
                labels.push((*seq, worker.clone(), class));
            }
        }
    }
    for w in workers.values_mut() {
        w.gold_accuracy = (w.gold_answers > 0).then(|| w.gold_correct as f64 / w.gold_answers as f64);
        w.consensus_agreement = consensus.get(&w.worker).filter(|c| c.1 > 0).map(|c| c.0 as f64 / c.1 as f64);
        if let Some((first, last, ms)) = spans.get(&w.worker) {
            if w.annotations > 0 {
                w.mean_seconds = (*ms > 0).then(|| *ms as f64 / 1000.0 / w.annotations as f64);
                // At least a minute, so a burst of two tasks does not read as thousands per hour.
                let hours = ((last - first).max(60)) as f64 / 3600.0;
                w.per_hour = Some(w.annotations as f64 / hours);
            }
        }
    }

    let mut quality = Quality {
        workers: workers.into_values().collect(),
        fleiss_kappa: None,
        krippendorff_alpha: None,
        pairs: vec![],
        confusion: None,
        classes: classes.clone(),
    };
    if task.is_single_label() && !labels.is_empty() {
        let names: Vec<String> = quality.workers.iter().map(|w| w.worker.clone()).collect();
        let index = |w: &str| names.iter().position(|n| n == w).unwrap_or(0);
        let numeric: Vec<agreement::Label> = labels.iter().map(|(s, w, c)| (*s as usize, index(w), *c)).collect();
        quality.fleiss_kappa = agreement::fleiss_kappa(&numeric);
        quality.krippendorff_alpha = agreement::krippendorff_alpha(&numeric);
        quality.pairs = pair_agreement(&labels, &names);
        if !results.is_empty() {
            let mut matrix = vec![vec![0i64; classes.len()]; classes.len()];
            for (seq, _, class) in &labels {
                let consensus =
                    results.get(seq).and_then(|r| r.label.as_deref()).and_then(|l| classes.iter().position(|c| c == l));
                if let Some(row) = consensus {
                    matrix[row][*class] += 1;
                }
            }
            quality.confusion = Some(matrix);
        }
    }
    Ok((job, quality))
}

/// Cohen's kappa for the pairs of workers with the most items in common.
fn pair_agreement(labels: &[(i64, String, usize)], names: &[String]) -> Vec<PairAgreement> {
    let mut by_item: HashMap<i64, Vec<(usize, usize)>> = HashMap::new();
    for (seq, w, c) in labels {
        let n = names.iter().position(|x| x == w).unwrap_or(0);
        by_item.entry(*seq).or_default().push((n, *c));
    }
    let mut pairs: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
    for labels in by_item.values() {
        for (i, &(a, ca)) in labels.iter().enumerate() {
            for &(b, cb) in &labels[i + 1..] {
                let (key, value) = if a < b { ((a, b), (ca, cb)) } else { ((b, a), (cb, ca)) };
                pairs.entry(key).or_default().push(value);
            }
        }
    }
    let mut out: Vec<PairAgreement> = pairs
        .into_iter()
        .map(|((a, b), shared)| PairAgreement {
            first: names[a].clone(),
            second: names[b].clone(),
            shared_items: shared.len() as i64,
            kappa: agreement::cohen_kappa(&shared),
        })
        .collect();
    out.sort_by(|x, y| y.shared_items.cmp(&x.shared_items).then(x.first.cmp(&y.first)).then(x.second.cmp(&y.second)));
    out.truncate(MAX_PAIRS);
    out
}

/// The files a training channel gets from a labeling job, as (artifact id, file name):
/// its output manifest `<job>.manifest` first (stored as a new artifact), then the
/// images it names.
pub async fn channel_files(
    db: &Db,
    store: &ArtifactStore,
    p: &Principal,
    name: &str,
) -> CoreResult<Vec<(String, String)>> {
    let job = ensure_consolidated(db, get_for(db, p, name, Action::GetLabelingJobOutput).await?).await?;
    // The images come from the dataset: its reader only.
    crate::datasets::get(db, p, &job.dataset).await?;
    if job.item_count > MAX_CHANNEL_ITEMS {
        return Err(CoreError::invalid(
            "spec",
            format!("labeling job {name} has {} items; a channel takes at most {MAX_CHANNEL_ITEMS}", job.item_count),
        ));
    }
    let images: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.artifact_id, d.name FROM labeling_items i JOIN dataset_items d ON d.dataset_id = $1 AND d.seq = i.item_seq \
         WHERE i.job_id = $2 AND i.result IS NOT NULL AND d.artifact_id IS NOT NULL ORDER BY i.item_seq",
    )
    .bind(&job.dataset_id)
    .bind(&job.id)
    .fetch_all(&db.pool)
    .await?;
    let mut seen = HashSet::new();
    if let Some((_, file)) = images.iter().find(|(_, file)| !seen.insert(file.as_str())) {
        return Err(CoreError::invalid(
            "spec",
            format!("labeling job {name} has two images named {file}; a channel needs distinct file names"),
        ));
    }
    let manifest_name = format!("{name}.manifest");
    let new = NewArtifact { name: &manifest_name, kind: kind::UPLOAD, job_id: None, created_by: &p.user.username };
    let body = manifest_lines(db, &job, true)?.map_err(|e| e.to_string());
    let stored = store.put(db, new, body, u64::MAX).await?;
    let mut out = vec![(stored.id, manifest_name)];
    out.extend(images);
    Ok(out)
}

/// Whether the job is finished with labeling (its output can be read).
pub fn has_output(job: &Job) -> bool {
    [COMPLETED, REVIEWING, STOPPED].contains(&job.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_protocol::labeling::Category;

    fn job(task: TaskType) -> Job {
        Job {
            id: "j".into(),
            name: "j".into(),
            dataset_id: "d".into(),
            dataset: "d".into(),
            task_type: task.as_str().into(),
            label_attribute: "j".into(),
            categories: serde_json::to_string(&[
                Category { name: "car".into(), hotkey: None },
                Category { name: "person".into(), hotkey: None },
            ])
            .expect("json"),
            instructions: String::new(),
            workers_per_item: 3,
            task_time_limit_secs: 300,
            gold_share: 0.0,
            review_below: None,
            status: IN_PROGRESS.into(),
            item_count: 1,
            remaining: 1,
            created_by: "a".into(),
            created_at: 0,
            completed_at: None,
            consolidated_at: None,
            teams: vec![],
        }
    }

    fn boxes(bs: &[(&str, f64)]) -> Answer {
        Answer {
            boxes: Some(
                bs.iter()
                    .map(|(l, x)| LabeledBox { label: l.to_string(), left: *x, top: 10.0, width: 20.0, height: 20.0 })
                    .collect(),
            ),
            image_size: Some(ImageSize { width: 200, height: 100 }),
            ..Default::default()
        }
    }

    #[test]
    fn boxes_consolidate_with_support() {
        let annotated = vec![
            (1, "a".to_string(), boxes(&[("car", 10.0), ("person", 100.0)])),
            (1, "b".to_string(), boxes(&[("car", 12.0)])),
            (1, "c".to_string(), boxes(&[("car", 14.0), ("person", 150.0)])),
        ];
        let out = consolidate_answers(&job(TaskType::BoundingBox), &annotated);
        let (outcome, confidence) = &out[&1];
        let kept = outcome.answer.boxes.as_ref().expect("boxes");
        // The car, drawn by all three, is kept and averaged; each person box alone is not.
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].label, "car");
        assert!((kept[0].left - 12.0).abs() < 1e-9);
        assert!(*confidence > 0.8 && *confidence <= 1.0, "{confidence}");
        assert!(answers_match(TaskType::BoundingBox, &boxes(&[("car", 12.0)]), &outcome.answer));
        assert!(!answers_match(TaskType::BoundingBox, &boxes(&[("person", 12.0)]), &outcome.answer));
    }

    #[test]
    fn overlapping_spans_keep_the_more_confident() {
        let span = |start, end, confidence| cons::ConsolidatedSpan {
            span: Span { start, end, label: 0 },
            confidence,
            support: 1,
        };
        let kept = without_overlaps(vec![span(0, 5, 0.4), span(3, 8, 0.9), span(10, 12, 0.1)]);
        let starts: Vec<usize> = kept.iter().map(|k| k.span.start).collect();
        assert_eq!(starts, vec![3, 10]);
    }

    #[test]
    fn manifest_lines_follow_ground_truth() {
        let mut j = job(TaskType::NamedEntity);
        j.completed_at = Some(0);
        let writer = ManifestWriter::new(&j, false);
        let outcome = Outcome {
            answer: Answer {
                entities: Some(vec![Entity { label: "person".into(), start: 0, end: 3 }]),
                ..Default::default()
            },
            confidences: vec![0.66],
        };
        let row: ManifestRow = (
            7,
            serde_json::to_string(&outcome).expect("json"),
            Some(0.66),
            None,
            "a.txt line 1".into(),
            Some("Bob ran".into()),
            None,
        );
        let line = writer.line(&row);
        assert_eq!(line["source"], "Bob ran");
        assert_eq!(
            line["j"]["annotations"]["entities"][0],
            json!({"label": "person", "startOffset": 0, "endOffset": 3})
        );
        assert_eq!(line["j-metadata"]["type"], "groundtruth/named-entity-recognition");
        assert_eq!(line["j-metadata"]["entities"][0]["confidence"], 0.66);
        assert_eq!(line["j-metadata"]["creation-date"], "1970-01-01T00:00:00Z");
    }
}
