//! Labeling: the settings of a labeling job and the answers labelers send. Shared by
//! the server, the labeling page (built for the browser, which checks an answer before
//! sending it) and scripts using the REST API.

use serde::{Deserialize, Serialize};

/// What labelers do with each item.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// One class per image.
    ImageClassification,
    /// Any number of classes per image.
    ImageMultiLabel,
    /// Boxes around objects, each with a class.
    BoundingBox,
    /// One class per text.
    TextClassification,
    /// Any number of classes per text.
    TextMultiLabel,
    /// Labeled character spans of a text (named entity recognition).
    NamedEntity,
}

impl TaskType {
    pub const ALL: [TaskType; 6] = [
        TaskType::ImageClassification,
        TaskType::ImageMultiLabel,
        TaskType::BoundingBox,
        TaskType::TextClassification,
        TaskType::TextMultiLabel,
        TaskType::NamedEntity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::ImageClassification => "image_classification",
            TaskType::ImageMultiLabel => "image_multi_label",
            TaskType::BoundingBox => "bounding_box",
            TaskType::TextClassification => "text_classification",
            TaskType::TextMultiLabel => "text_multi_label",
            TaskType::NamedEntity => "named_entity",
        }
    }

    pub fn parse(s: &str) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == s.trim())
    }

    /// How the UI names it.
    pub fn title(self) -> &'static str {
        match self {
            TaskType::ImageClassification => "Image classification (single label)",
            TaskType::ImageMultiLabel => "Image classification (multi-label)",
            TaskType::BoundingBox => "Bounding boxes",
            TaskType::TextClassification => "Text classification (single label)",
            TaskType::TextMultiLabel => "Text classification (multi-label)",
            TaskType::NamedEntity => "Named entity recognition",
        }
    }

    /// The dataset kind it labels: `image` or `text`.
    pub fn dataset_kind(self) -> &'static str {
        match self {
            TaskType::ImageClassification | TaskType::ImageMultiLabel | TaskType::BoundingBox => "image",
            _ => "text",
        }
    }

    /// Workers per item unless the job says otherwise (boxes vary more, so more).
    pub fn default_workers(self) -> u32 {
        match self {
            TaskType::BoundingBox => 5,
            _ => 3,
        }
    }

    pub fn is_multi_label(self) -> bool {
        matches!(self, TaskType::ImageMultiLabel | TaskType::TextMultiLabel)
    }

    pub fn is_single_label(self) -> bool {
        matches!(self, TaskType::ImageClassification | TaskType::TextClassification)
    }

    /// The `type` written in the output manifest's metadata, as Ground Truth writes it.
    pub fn manifest_type(self) -> &'static str {
        match self {
            TaskType::ImageClassification => "groundtruth/image-classification",
            TaskType::ImageMultiLabel => "groundtruth/image-classification-multilabel",
            TaskType::BoundingBox => "groundtruth/object-detection",
            TaskType::TextClassification => "groundtruth/text-classification",
            TaskType::TextMultiLabel => "groundtruth/text-classification-multilabel",
            TaskType::NamedEntity => "groundtruth/named-entity-recognition",
        }
    }
}

/// A label category, with the key that picks it on the labeling page.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    /// One character; digits 1-9 pick the categories in order when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotkey: Option<String>,
}

/// A box in image pixels.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabeledBox {
    pub label: String,
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// An image's size in pixels.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

/// A labeled span of a text: characters `start..end` (Unicode scalar values, as
/// Ground Truth's offsets), end exclusive.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub label: String,
    pub start: usize,
    pub end: usize,
}

/// What a labeler answers for one task. Which field is used depends on the task type:
/// `label` (single-label), `labels` (multi-label), `boxes` with `image_size`
/// (bounding boxes), `entities` (named entities).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boxes: Option<Vec<LabeledBox>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<ImageSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<Entity>>,
}

/// Most boxes or entities in one answer.
pub const MAX_OBJECTS: usize = 500;

impl Answer {
    /// Checks the answer fits the task: the right field, known categories, boxes with a
    /// positive size inside the image, spans inside the text (`text_chars`), no
    /// duplicates. The message names what is wrong.
    pub fn validate(&self, task: TaskType, categories: &[Category], text_chars: Option<usize>) -> Result<(), String> {
        let known = |label: &str| {
            if categories.iter().any(|c| c.name == label) {
                Ok(())
            } else {
                Err(format!("\"{label}\" is not one of the job's categories"))
            }
        };
        let only = |field: &str| {
            let present = [
                ("label", self.label.is_some()),
                ("labels", self.labels.is_some()),
                ("boxes", self.boxes.is_some()),
                ("image_size", self.image_size.is_some() && field != "boxes"),
                ("entities", self.entities.is_some()),
            ];
            match present.iter().find(|(name, set)| *set && *name != field) {
                Some((name, _)) => Err(format!("a {} answer has no {name}; it needs {field}", task.as_str())),
                None => Ok(()),
            }
        };
        match task {
            TaskType::ImageClassification | TaskType::TextClassification => {
                only("label")?;
                known(self.label.as_deref().ok_or("label is missing")?)
            }
            TaskType::ImageMultiLabel | TaskType::TextMultiLabel => {
                only("labels")?;
                let labels = self.labels.as_ref().ok_or("labels is missing (an empty list means none applies)")?;
                for (n, l) in labels.iter().enumerate() {
                    known(l)?;
                    if labels[..n].contains(l) {
                        return Err(format!("\"{l}\" is listed twice"));
                    }
                }
                Ok(())
            }
            TaskType::BoundingBox => {
                only("boxes")?;
                let boxes = self.boxes.as_ref().ok_or("boxes is missing (an empty list means no object)")?;
                let size = self.image_size.ok_or("image_size is missing")?;
                if size.width == 0 || size.height == 0 {
                    return Err("image_size must be positive".into());
                }
                if boxes.len() > MAX_OBJECTS {
                    return Err(format!("at most {MAX_OBJECTS} boxes"));
                }
                let (w, h) = (f64::from(size.width), f64::from(size.height));
                for (n, b) in boxes.iter().enumerate() {
                    known(&b.label)?;
                    let finite = [b.left, b.top, b.width, b.height].iter().all(|v| v.is_finite());
                    if !finite || b.width < 1.0 || b.height < 1.0 {
                        return Err(format!("box {}: width and height must be at least 1 pixel", n + 1));
                    }
                    // Half a pixel of slack for rounding in the browser.
                    if b.left < -0.5 || b.top < -0.5 || b.left + b.width > w + 0.5 || b.top + b.height > h + 0.5 {
                        return Err(format!("box {} lies outside the {}x{} image", n + 1, size.width, size.height));
                    }
                }
                Ok(())
            }
            TaskType::NamedEntity => {
                only("entities")?;
                let entities = self.entities.as_ref().ok_or("entities is missing (an empty list means none)")?;
                if entities.len() > MAX_OBJECTS {
                    return Err(format!("at most {MAX_OBJECTS} entities"));
                }
                let chars = text_chars.unwrap_or(usize::MAX);
                let mut sorted: Vec<&Entity> = entities.iter().collect();
                sorted.sort_by_key(|e| (e.start, e.end));
                for e in &sorted {
                    known(&e.label)?;
                    if e.start >= e.end || e.end > chars {
                        return Err(format!(
                            "entity {}..{} is not a span of the {chars}-character text",
                            e.start, e.end
                        ));
                    }
                }
                if let Some(pair) = sorted.windows(2).find(|p| p[1].start < p[0].end) {
                    return Err(format!(
                        "entities {}..{} and {}..{} overlap",
                        pair[0].start, pair[0].end, pair[1].start, pair[1].end
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The hotkey of each category: its own, else its position (1-9) when it has none.
pub fn hotkeys(categories: &[Category]) -> Vec<Option<String>> {
    categories
        .iter()
        .enumerate()
        .map(|(n, c)| c.hotkey.clone().or_else(|| (n < 9).then(|| (n + 1).to_string())))
        .collect()
}

/// An item whose answer is known, mixed into the queue to measure labelers' accuracy.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldItem {
    /// The item's position in the dataset.
    pub item: i64,
    pub answer: Answer,
}

/// What creating a labeling job takes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelingJobSpec {
    pub name: String,
    /// The dataset whose items (those it holds now) are labeled.
    pub dataset: String,
    pub task_type: TaskType,
    /// The label's key in the output manifest; defaults to the job name.
    #[serde(default)]
    pub label_attribute: Option<String>,
    pub categories: Vec<Category>,
    /// Markdown shown beside every task.
    #[serde(default)]
    pub instructions: String,
    /// Distinct workers who label each item (default 3, 5 for bounding boxes).
    #[serde(default)]
    pub workers_per_item: Option<u32>,
    /// Work teams (groups) whose members label the job.
    pub teams: Vec<String>,
    /// Seconds a labeler holds a task before it can go to someone else (default 300).
    #[serde(default)]
    pub task_time_limit_secs: Option<u32>,
    /// Items with known answers.
    #[serde(default)]
    pub gold: Vec<GoldItem>,
    /// Share of a labeler's tasks that are gold items (0-0.5, default 0.1 when there
    /// are gold items).
    #[serde(default)]
    pub gold_share: Option<f64>,
    /// Items consolidated with a confidence below this go to a review queue; none: no
    /// review stage.
    #[serde(default)]
    pub review_below: Option<f64>,
}

/// A labeling job, as pages and `/api/v1/labeling/jobs` show it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelingJob {
    pub name: String,
    pub dataset: String,
    pub task_type: TaskType,
    pub label_attribute: String,
    pub categories: Vec<Category>,
    pub instructions: String,
    pub workers_per_item: i64,
    pub task_time_limit_secs: i64,
    pub gold_share: f64,
    pub review_below: Option<f64>,
    /// InProgress, Reviewing, Completed or Stopped.
    pub status: String,
    /// Items to label (gold items excluded).
    pub item_count: i64,
    /// Items that still need annotations.
    pub remaining: i64,
    pub teams: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

/// How far a job is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Items with all their annotations.
    pub items_done: i64,
    pub annotations: i64,
    pub skips: i64,
    /// Tasks held by labelers now.
    pub held: i64,
    pub gold_items: i64,
    pub gold_answers: i64,
    /// Labelers who submitted at least one annotation.
    pub workers: i64,
    /// Items waiting for a reviewer.
    pub review_pending: i64,
    pub reviewed: i64,
}

/// A job with its progress.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelingJobDetail {
    pub job: LabelingJob,
    pub progress: Progress,
}

/// A labeler's own progress in a job of their team.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MyWork {
    pub job: LabelingJob,
    /// Tasks this labeler submitted.
    pub submitted: i64,
    pub skipped: i64,
}

/// A task as the labeling page shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    /// The item's position in the dataset; its content is at
    /// `/api/v1/labeling/jobs/{job}/items/{item_seq}/content`.
    pub item_seq: i64,
    /// When the hold ends (seconds since the epoch).
    pub expires_at: i64,
    /// The item's file name, or "file line N".
    pub item_name: String,
    pub media_type: String,
    /// Text items carry their text.
    pub text: Option<String>,
}

/// The answer to "next task": a task, or none left for the caller now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextTask {
    pub task: Option<Task>,
    /// The job's status: nothing is handed out unless it is InProgress.
    pub job_status: String,
}

/// What a submission did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// False when the task had been submitted already (a retried request): nothing
    /// more was recorded.
    pub recorded: bool,
    /// The job's status afterwards (the last annotation completes the job).
    pub job_status: String,
}

/// A consolidated (or reviewed) label: the answer and a confidence per label, box or
/// entity in it (multi-label, boxes, entities).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub answer: Answer,
    #[serde(default)]
    pub confidences: Vec<f64>,
}

/// One worker's answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerAnswer {
    pub worker: String,
    pub answer: Answer,
}

/// An item waiting for a reviewer, with what each worker said.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    pub item_seq: i64,
    pub item_name: String,
    pub text: Option<String>,
    pub outcome: Outcome,
    pub confidence: f64,
    pub annotations: Vec<WorkerAnswer>,
}

/// One labeler's numbers in a job.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerQuality {
    pub worker: String,
    pub annotations: i64,
    pub skips: i64,
    pub gold_answers: i64,
    pub gold_correct: i64,
    /// Share of gold items answered right.
    pub gold_accuracy: Option<f64>,
    /// Share of annotations that match the consolidated label.
    pub consensus_agreement: Option<f64>,
    /// Mean time per task, as the labeling page measured it.
    pub mean_seconds: Option<f64>,
    /// Annotations per hour of active time (first task taken to last submitted).
    pub per_hour: Option<f64>,
}

/// Cohen's kappa of two labelers over the items both labeled.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairAgreement {
    pub first: String,
    pub second: String,
    pub shared_items: i64,
    pub kappa: Option<f64>,
}

/// The quality report of a job.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub workers: Vec<WorkerQuality>,
    /// Single-label jobs: Fleiss' kappa and Krippendorff's alpha over all items.
    pub fleiss_kappa: Option<f64>,
    pub krippendorff_alpha: Option<f64>,
    /// The pairs with the most shared items (at most 20).
    pub pairs: Vec<PairAgreement>,
    /// Single-label jobs, once consolidated: rows are the consolidated class, columns
    /// the class a worker gave, over every annotation.
    pub confusion: Option<Vec<Vec<i64>>>,
    pub classes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats() -> Vec<Category> {
        vec![Category { name: "cat".into(), hotkey: None }, Category { name: "dog".into(), hotkey: Some("d".into()) }]
    }

    #[test]
    fn answers_are_checked_against_the_task() {
        let single = Answer { label: Some("cat".into()), ..Default::default() };
        assert_eq!(single.validate(TaskType::ImageClassification, &cats(), None), Ok(()));
        let unknown = Answer { label: Some("cow".into()), ..Default::default() };
        assert!(unknown
            .validate(TaskType::ImageClassification, &cats(), None)
            .expect_err("refused")
            .contains("\"cow\""));
        assert!(single
            .validate(TaskType::ImageMultiLabel, &cats(), None)
            .expect_err("refused")
            .contains("needs labels"));
        let twice = Answer { labels: Some(vec!["cat".into(), "cat".into()]), ..Default::default() };
        assert!(twice.validate(TaskType::TextMultiLabel, &cats(), None).expect_err("refused").contains("twice"));

        let b = |left, width| LabeledBox { label: "dog".into(), left, top: 0.0, width, height: 5.0 };
        let boxes = |bs: Vec<LabeledBox>| Answer {
            boxes: Some(bs),
            image_size: Some(ImageSize { width: 100, height: 50 }),
            ..Default::default()
        };
        assert_eq!(boxes(vec![b(0.0, 100.0)]).validate(TaskType::BoundingBox, &cats(), None), Ok(()));
        assert!(boxes(vec![b(50.0, 60.0)])
            .validate(TaskType::BoundingBox, &cats(), None)
            .expect_err("refused")
            .contains("outside"));
        assert!(boxes(vec![b(5.0, 0.0)])
            .validate(TaskType::BoundingBox, &cats(), None)
            .expect_err("refused")
            .contains("box 1"));

        let e = |start, end| Entity { label: "cat".into(), start, end };
        let spans = |es: Vec<Entity>| Answer { entities: Some(es), ..Default::default() };
        assert_eq!(spans(vec![e(0, 3), e(3, 5)]).validate(TaskType::NamedEntity, &cats(), Some(5)), Ok(()));
        assert!(spans(vec![e(0, 3), e(2, 5)])
            .validate(TaskType::NamedEntity, &cats(), Some(5))
            .expect_err("refused")
            .contains("overlap"));
        assert!(spans(vec![e(4, 6)]).validate(TaskType::NamedEntity, &cats(), Some(5)).is_err());
    }

    #[test]
    fn hotkeys_default_to_positions() {
        assert_eq!(hotkeys(&cats()), vec![Some("1".to_string()), Some("d".to_string())]);
    }
}
