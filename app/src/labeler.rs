//! The labelers' pages: "My work" (their teams' jobs with their own counts) and the
//! labeling page they live in for hours. The labeling page is hydrated: it moves to the
//! next task without a page load, holds the following task and preloads its image, and
//! works from the keyboard (hotkeys or digits pick categories, Enter submits, S skips,
//! Z undoes, arrows move between boxes or spans, Delete removes one).

use atelier_protocol::labeling::{
    hotkeys, Answer, Entity, ImageSize, LabeledBox, LabelingJob, MyWork, NextTask, Submitted, Task, TaskType,
};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};

use crate::error::{AppError, ErrorKind};
use crate::format::percent;

/// A job as the labeling page needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelerJob {
    pub job: LabelingJob,
    pub instructions_html: String,
}

#[server]
pub async fn list_my_work() -> Result<Vec<MyWork>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::labeling::jobs::my_work(&db, &p).await?)
}

#[server]
pub async fn get_labeler_job(name: String) -> Result<LabelerJob, AppError> {
    use atelier_core::authz::Action;
    let (db, p) = crate::context::db_and_principal()?;
    let job = atelier_core::labeling::jobs::get_for(&db, &p, &name, Action::GetLabelingJob).await?;
    Ok(LabelerJob { instructions_html: crate::labeling::markdown(&job.instructions), job: job.info() })
}

#[server]
pub async fn take_task(name: String, besides: Option<String>) -> Result<NextTask, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let (job, task) = atelier_core::labeling::tasks::next(&db, &p, &name, besides.as_deref()).await?;
    Ok(NextTask { task, job_status: job.status })
}

#[server(input = Json)]
pub async fn submit_answer(
    name: String,
    task: String,
    answer: Answer,
    duration_ms: i64,
) -> Result<Submitted, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::labeling::tasks::submit(&db, &p, &name, &task, &answer, Some(duration_ms)).await?)
}

#[server]
pub async fn skip_task(name: String, task: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::labeling::tasks::skip(&db, &p, &name, &task).await?)
}

/// The image of a job's item.
fn content_url(job: &str, seq: i64) -> String {
    format!("/api/v1/labeling/jobs/{job}/items/{seq}/content")
}

/// "My work": the labeler's in-progress jobs.
#[component]
pub fn MyWorkPage() -> impl IntoView {
    let work = Resource::new(|| (), |_| list_my_work());
    view! {
        <h1>"My work"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match work.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No labeling work for your teams right now."</p> }.into_any(),
                    Ok(list) => view! {
                        <div class="work-list" data-testid="my-work">
                            {list.into_iter().map(|w| {
                                let j = w.job;
                                let done = j.item_count - j.remaining;
                                view! {
                                    <section class="card">
                                        <h2>{j.name.clone()}</h2>
                                        <p class="muted">{format!("{} · teams {}", j.task_type.title(), j.teams.join(", "))}</p>
                                        <progress max=j.item_count value=done></progress>
                                        <p>{format!("{done} of {} items done · you: {} submitted, {} skipped", j.item_count, w.submitted, w.skipped)}</p>
                                        <a class="button primary" href=format!("/work/{}", j.name)>"Start labeling"</a>
                                    </section>
                                }
                            }).collect_view()}
                        </div>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The labeler's work in progress on one task.
#[derive(Debug, Clone, Default, PartialEq)]
struct Draft {
    label: Option<String>,
    labels: Vec<String>,
    boxes: Vec<LabeledBox>,
    entities: Vec<Entity>,
    /// The box or span arrow keys and Delete act on.
    active: Option<usize>,
}

impl Draft {
    fn answer(&self, task: TaskType, size: Option<ImageSize>) -> Answer {
        match task {
            TaskType::ImageClassification | TaskType::TextClassification => {
                Answer { label: self.label.clone(), ..Default::default() }
            }
            TaskType::ImageMultiLabel | TaskType::TextMultiLabel => {
                Answer { labels: Some(self.labels.clone()), ..Default::default() }
            }
            TaskType::BoundingBox => Answer { boxes: Some(self.boxes.clone()), image_size: size, ..Default::default() },
            TaskType::NamedEntity => Answer { entities: Some(self.entities.clone()), ..Default::default() },
        }
    }

    fn objects(&self, task: TaskType) -> usize {
        match task {
            TaskType::BoundingBox => self.boxes.len(),
            TaskType::NamedEntity => self.entities.len(),
            _ => 0,
        }
    }
}

/// A pointer gesture on the image, in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drag {
    Draw { x: f64, y: f64 },
    Move { index: usize, dx: f64, dy: f64 },
    Resize { index: usize },
}

/// Everything the labeling page keeps; all `Copy`, so handlers capture it freely.
#[derive(Clone, Copy)]
struct Labeler {
    job: StoredValue<LabelingJob>,
    current: RwSignal<Option<Task>>,
    upcoming: RwSignal<Option<Task>>,
    /// Why there is no task (job finished, nothing left for you).
    idle: RwSignal<Option<String>>,
    draft: RwSignal<Draft>,
    history: RwSignal<Vec<Draft>>,
    /// A text selection waiting for a label: characters start..end.
    selection: RwSignal<Option<(usize, usize)>>,
    /// The category new boxes get.
    class: RwSignal<usize>,
    size: RwSignal<Option<ImageSize>>,
    shown_at: RwSignal<f64>,
    /// (tasks done this session, milliseconds spent on them)
    session: RwSignal<(u32, f64)>,
    error: RwSignal<Option<String>>,
    busy: RwSignal<bool>,
    drag: RwSignal<Option<Drag>>,
}

fn now_ms() -> f64 {
    leptos::web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

impl Labeler {
    fn new(job: LabelingJob) -> Self {
        Labeler {
            job: StoredValue::new(job),
            current: RwSignal::new(None),
            upcoming: RwSignal::new(None),
            idle: RwSignal::new(None),
            draft: RwSignal::new(Draft::default()),
            history: RwSignal::new(Vec::new()),
            selection: RwSignal::new(None),
            class: RwSignal::new(0),
            size: RwSignal::new(None),
            shown_at: RwSignal::new(0.0),
            session: RwSignal::new((0, 0.0)),
            error: RwSignal::new(None),
            busy: RwSignal::new(false),
            drag: RwSignal::new(None),
        }
    }

    fn name(&self) -> String {
        self.job.with_value(|j| j.name.clone())
    }

    fn task_type(&self) -> TaskType {
        self.job.with_value(|j| j.task_type)
    }

    /// Changes the draft, keeping the previous state for undo.
    fn edit(&self, change: impl FnOnce(&mut Draft)) {
        let before = self.draft.get_untracked();
        self.draft.update(change);
        if self.draft.get_untracked() != before {
            self.history.update(|h| h.push(before));
        }
    }

    fn undo(&self) {
        if let Some(previous) = self.history.try_update(|h| h.pop()).flatten() {
            self.draft.set(previous);
        }
    }

    /// Shows `task` with a fresh draft.
    fn show(&self, task: Option<Task>) {
        self.draft.set(Draft::default());
        self.history.set(Vec::new());
        self.selection.set(None);
        self.size.set(None);
        self.shown_at.set(now_ms());
        self.current.set(task);
    }

    /// Loads the task on screen (one already held comes back) and the one after it.
    fn start(self) {
        leptos::task::spawn_local(self.advance());
    }

    /// Shows the next task: the preloaded one if any (the server renews its hold), else
    /// a new one; then holds the one after it, so its image loads while this one is
    /// labeled. The page may be gone when an answer arrives: then nothing happens.
    async fn advance(self) {
        let Some(name) = self.job.try_with_value(|j| j.name.clone()) else { return };
        match take_task(name.clone(), None).await {
            Ok(next) => {
                self.idle.set(next.task.is_none().then(|| idle_message(&next.job_status)));
                self.show(next.task);
            }
            Err(e) => self.error.set(Some(e.message)),
        }
        self.upcoming.set(None);
        let Some(current) = self.current.try_get_untracked().flatten() else { return };
        match take_task(name, Some(current.id)).await {
            Ok(next) => self.upcoming.set(next.task),
            Err(e) => self.error.set(Some(e.message)),
        }
    }

    /// After a submission or skip: the next task. A conflict means this task is no
    /// longer the labeler's (its time ran out, the job stopped): say so and move on.
    async fn after(self, outcome: Result<(), AppError>) {
        match outcome {
            Ok(()) => self.error.set(None),
            Err(e) if e.kind == ErrorKind::Conflict => self.error.set(Some(e.message)),
            Err(e) => {
                self.error.set(Some(e.message));
                self.busy.set(false);
                return;
            }
        }
        self.advance().await;
        self.busy.set(false);
    }

    fn submit(self) {
        let Some(task) = self.current.get_untracked() else { return };
        if self.busy.get_untracked() {
            return;
        }
        let job = self.job.get_value();
        let answer = self.draft.get_untracked().answer(job.task_type, self.size.get_untracked());
        let chars = task.text.as_ref().map(|t| t.chars().count());
        if let Err(e) = answer.validate(job.task_type, &job.categories, chars) {
            self.error.set(Some(e));
            return;
        }
        let elapsed = (now_ms() - self.shown_at.get_untracked()).max(0.0);
        self.busy.set(true);
        leptos::task::spawn_local(async move {
            let outcome = submit_answer(job.name.clone(), task.id.clone(), answer, elapsed as i64).await;
            if outcome.is_ok() {
                self.session.update(|(n, ms)| {
                    *n += 1;
                    *ms += elapsed;
                });
            }
            self.after(outcome.map(|_| ())).await;
        });
    }

    fn skip(self) {
        let Some(task) = self.current.get_untracked() else { return };
        if self.busy.get_untracked() {
            return;
        }
        self.busy.set(true);
        let name = self.name();
        leptos::task::spawn_local(async move {
            let outcome = skip_task(name, task.id).await;
            self.after(outcome).await;
        });
    }

    /// Category `index` chosen (button or key): its meaning depends on the task type.
    fn pick(&self, index: usize) {
        let Some(name) = self.job.with_value(|j| j.categories.get(index).map(|c| c.name.clone())) else { return };
        match self.task_type() {
            TaskType::ImageClassification | TaskType::TextClassification => self.edit(|d| d.label = Some(name)),
            TaskType::ImageMultiLabel | TaskType::TextMultiLabel => {
                self.edit(|d| match d.labels.iter().position(|l| *l == name) {
                    Some(at) => {
                        d.labels.remove(at);
                    }
                    None => d.labels.push(name),
                })
            }
            TaskType::BoundingBox => {
                self.class.set(index);
                self.edit(|d| {
                    if let Some(b) = d.active.and_then(|a| d.boxes.get_mut(a)) {
                        b.label = name;
                    }
                });
            }
            TaskType::NamedEntity => match self.selection.get_untracked() {
                Some((start, end)) => {
                    self.selection.set(None);
                    clear_dom_selection();
                    self.edit(|d| {
                        if d.entities.iter().all(|e| e.end <= start || e.start >= end) {
                            d.entities.push(Entity { label: name, start, end });
                            d.entities.sort_by_key(|e| e.start);
                            d.active = d.entities.iter().position(|e| e.start == start);
                        }
                    });
                }
                None => self.edit(|d| {
                    if let Some(e) = d.active.and_then(|a| d.entities.get_mut(a)) {
                        e.label = name;
                    }
                }),
            },
        }
    }

    fn step(&self, forward: bool) {
        let count = self.draft.with_untracked(|d| d.objects(self.task_type()));
        if count == 0 {
            return;
        }
        self.draft.update(|d| {
            d.active = Some(match (d.active, forward) {
                (None, true) => 0,
                (None, false) => count - 1,
                (Some(a), true) => (a + 1) % count,
                (Some(a), false) => (a + count - 1) % count,
            })
        });
    }

    fn remove_active(&self) {
        let task = self.task_type();
        self.edit(|d| {
            if let Some(a) = d.active.take() {
                match task {
                    TaskType::BoundingBox if a < d.boxes.len() => {
                        d.boxes.remove(a);
                    }
                    TaskType::NamedEntity if a < d.entities.len() => {
                        d.entities.remove(a);
                    }
                    _ => {}
                }
            }
        });
    }

    fn on_key(&self, ev: leptos::ev::KeyboardEvent) {
        use leptos::wasm_bindgen::JsCast;
        if ev.ctrl_key() || ev.meta_key() || ev.alt_key() || ev.repeat() {
            return;
        }
        let typing = ev
            .target()
            .and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok())
            .is_some_and(|e| matches!(e.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
        if typing || self.current.get_untracked().is_none() {
            return;
        }
        let key = ev.key();
        let keys = self.job.with_value(|j| hotkeys(&j.categories));
        let handled = match key.as_str() {
            "Enter" => {
                self.submit();
                true
            }
            "ArrowRight" | "ArrowDown" => {
                self.step(true);
                true
            }
            "ArrowLeft" | "ArrowUp" => {
                self.step(false);
                true
            }
            "Delete" | "Backspace" => {
                self.remove_active();
                true
            }
            other => {
                let lower = other.to_lowercase();
                if let Some(index) = keys.iter().position(|k| k.as_deref() == Some(lower.as_str())) {
                    self.pick(index);
                    true
                } else if lower == "s" {
                    self.skip();
                    true
                } else if lower == "z" {
                    self.undo();
                    true
                } else {
                    false
                }
            }
        };
        if handled {
            ev.prevent_default();
        }
    }

    /// Image pixels under the pointer.
    fn image_point(&self, ev: &leptos::ev::PointerEvent) -> Option<(f64, f64)> {
        use leptos::wasm_bindgen::JsCast;
        let size = self.size.get_untracked()?;
        let frame = ev.current_target()?.dyn_into::<leptos::web_sys::Element>().ok()?;
        let rect = frame.get_bounding_client_rect();
        if rect.width() <= 0.0 || rect.height() <= 0.0 {
            return None;
        }
        let x = (f64::from(ev.client_x()) - rect.left()) * f64::from(size.width) / rect.width();
        let y = (f64::from(ev.client_y()) - rect.top()) * f64::from(size.height) / rect.height();
        Some((x.clamp(0.0, f64::from(size.width)), y.clamp(0.0, f64::from(size.height))))
    }

    fn pointer_down(&self, ev: leptos::ev::PointerEvent) {
        use leptos::wasm_bindgen::JsCast;
        let Some((x, y)) = self.image_point(&ev) else { return };
        ev.prevent_default();
        let target = ev.target().and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok());
        let index =
            |attr: &str| target.as_ref().and_then(|t| t.get_attribute(attr)).and_then(|v| v.parse::<usize>().ok());
        let before = self.draft.get_untracked();
        if let Some(i) = index("data-handle") {
            self.history.update(|h| h.push(before));
            self.draft.update(|d| d.active = Some(i));
            self.drag.set(Some(Drag::Resize { index: i }));
        } else if let Some(i) = index("data-box") {
            let Some(b) = before.boxes.get(i).cloned() else { return };
            self.history.update(|h| h.push(before));
            self.draft.update(|d| d.active = Some(i));
            self.drag.set(Some(Drag::Move { index: i, dx: x - b.left, dy: y - b.top }));
        } else {
            let label = self.job.with_value(|j| j.categories.get(self.class.get_untracked()).map(|c| c.name.clone()));
            let Some(label) = label else { return };
            self.history.update(|h| h.push(before));
            self.draft.update(|d| {
                d.boxes.push(LabeledBox { label, left: x, top: y, width: 0.0, height: 0.0 });
                d.active = Some(d.boxes.len() - 1);
            });
            self.drag.set(Some(Drag::Draw { x, y }));
        }
        if let Some(frame) = ev.current_target().and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok()) {
            _ = frame.set_pointer_capture(ev.pointer_id());
        }
    }

    fn pointer_move(&self, ev: leptos::ev::PointerEvent) {
        let Some(drag) = self.drag.get_untracked() else { return };
        let Some((x, y)) = self.image_point(&ev) else { return };
        let Some(size) = self.size.get_untracked() else { return };
        let (w, h) = (f64::from(size.width), f64::from(size.height));
        self.draft.update(|d| match drag {
            Drag::Draw { x: x0, y: y0 } => {
                if let Some(b) = d.boxes.last_mut() {
                    b.left = x0.min(x);
                    b.top = y0.min(y);
                    b.width = (x - x0).abs();
                    b.height = (y - y0).abs();
                }
            }
            Drag::Move { index, dx, dy } => {
                if let Some(b) = d.boxes.get_mut(index) {
                    b.left = (x - dx).clamp(0.0, (w - b.width).max(0.0));
                    b.top = (y - dy).clamp(0.0, (h - b.height).max(0.0));
                }
            }
            Drag::Resize { index } => {
                if let Some(b) = d.boxes.get_mut(index) {
                    b.width = (x - b.left).max(1.0);
                    b.height = (y - b.top).max(1.0);
                }
            }
        });
    }

    fn pointer_up(&self) {
        let Some(drag) = self.drag.get_untracked() else { return };
        self.drag.set(None);
        // A click without a drag draws nothing.
        if matches!(drag, Drag::Draw { .. }) {
            let tiny = self.draft.with_untracked(|d| d.boxes.last().is_some_and(|b| b.width < 3.0 || b.height < 3.0));
            if tiny {
                self.undo();
            }
        }
        self.draft.update(|d| {
            for b in &mut d.boxes {
                b.left = b.left.round();
                b.top = b.top.round();
                b.width = b.width.round().max(1.0);
                b.height = b.height.round().max(1.0);
            }
        });
    }

    /// Reads the text selection inside `container` as character offsets.
    fn read_selection(&self, container: &leptos::web_sys::Element) {
        let Some(window) = leptos::web_sys::window() else { return };
        let Ok(Some(selection)) = window.get_selection() else { return };
        if selection.is_collapsed() || selection.range_count() == 0 {
            return;
        }
        let Ok(range) = selection.get_range_at(0) else { return };
        let Ok(start_node) = range.start_container() else { return };
        if !container.contains(Some(&start_node)) {
            return;
        }
        let Some(document) = window.document() else { return };
        let Ok(before) = document.create_range() else { return };
        if before.select_node_contents(container).is_err()
            || before.set_end(&start_node, range.start_offset().unwrap_or(0)).is_err()
        {
            return;
        }
        let lead = String::from(before.to_string()).chars().count();
        let chosen = String::from(range.to_string());
        // Spans start and end on the words, not on the spaces around them.
        let trimmed_start = chosen.chars().take_while(|c| c.is_whitespace()).count();
        let length = chosen.trim().chars().count();
        if length > 0 {
            let start = lead + trimmed_start;
            self.selection.set(Some((start, start + length)));
        }
    }
}

fn clear_dom_selection() {
    if let Some(Ok(Some(selection))) = leptos::web_sys::window().map(|w| w.get_selection()) {
        _ = selection.remove_all_ranges();
    }
}

fn idle_message(job_status: &str) -> String {
    match job_status {
        "InProgress" => {
            "No task for you right now: every item left is done or held by someone else. Check back later.".into()
        }
        other => format!("This job is {other}; there is nothing more to label. Thank you!"),
    }
}

/// The labeling page.
#[component]
pub fn LabelerPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let job = Resource::new(name, get_labeler_job);
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match job.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(j) => view! { <LabelingDesk job=j/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn LabelingDesk(job: LabelerJob) -> impl IntoView {
    let desk = Labeler::new(job.job.clone());
    // In the browser only: the first task, and the keyboard.
    Effect::new(move |started: Option<()>| {
        if started.is_none() {
            desk.start();
        }
    });
    let keys = window_event_listener(leptos::ev::keydown, move |ev| desk.on_key(ev));
    on_cleanup(move || keys.remove());

    let info = job.job.clone();
    let task_type = info.task_type;
    let keys = hotkeys(&info.categories);
    let categories = info.categories.clone();
    let session = move || {
        let (n, ms) = desk.session.get();
        let average = if n == 0 { "–".to_string() } else { format!("{:.1} s", ms / 1000.0 / f64::from(n)) };
        format!("{n} tasks this session · {average} per task")
    };
    let buttons = categories
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = c.name.clone();
            let key = keys[i].clone();
            let chosen = {
                let name = name.clone();
                Signal::derive(move || {
                    let d = desk.draft.get();
                    match task_type {
                        TaskType::ImageClassification | TaskType::TextClassification => {
                            d.label.as_deref() == Some(name.as_str())
                        }
                        TaskType::ImageMultiLabel | TaskType::TextMultiLabel => d.labels.contains(&name),
                        TaskType::BoundingBox => desk.class.get() == i,
                        TaskType::NamedEntity => false,
                    }
                })
            };
            view! {
                <button type="button" class="category" class:chosen=chosen aria-pressed=move || chosen.get().to_string()
                    data-testid="category" on:click=move |_| desk.pick(i)>
                    {key.map(|k| view! { <kbd>{k}</kbd>" " })}{name}
                </button>
            }
        })
        .collect_view();
    let shortcut_help = match task_type {
        TaskType::BoundingBox => "Drag on the image to draw a box in the chosen category; drag a box to move it, its corner to resize it. Arrow keys select a box, Delete removes it, a category key changes its class.",
        TaskType::NamedEntity => "Select text, then press a category key (or click it) to mark a span. Arrow keys select a span, Delete removes it, a category key changes its label.",
        TaskType::ImageMultiLabel | TaskType::TextMultiLabel => "Category keys switch each label on or off.",
        _ => "A category key picks the label.",
    };
    view! {
        <div class="labeler" data-testid="labeler">
            <div class="labeler-main">
                <header class="labeler-head">
                    <h1>{info.name.clone()}</h1>
                    <span class="muted" data-testid="session">{session}</span>
                </header>
                {move || desk.idle.get().map(|m| view! { <p class="notice" data-testid="idle">{m}</p> })}
                {move || desk.current.get().map(|task| view! { <TaskView desk task/> })}
                <div class="categories">{buttons}</div>
                <div class="actions">
                    <button type="button" class="primary" data-testid="submit" disabled=move || desk.busy.get() || desk.current.get().is_none()
                        on:click=move |_| desk.submit()>"Submit "<kbd>"Enter"</kbd></button>
                    <button type="button" disabled=move || desk.busy.get() || desk.current.get().is_none()
                        on:click=move |_| desk.skip()>"Skip "<kbd>"S"</kbd></button>
                    <button type="button" on:click=move |_| desk.undo()>"Undo "<kbd>"Z"</kbd></button>
                </div>
                {move || desk.error.get().map(|e| view! { <p class="error" role="alert" data-testid="labeler-error">{e}</p> })}
                // The next task's image, fetched now so it shows at once.
                {move || desk.upcoming.get().filter(|t| t.text.is_none()).map(|t| view! {
                    <img class="preload" src=content_url(&info.name, t.item_seq) alt="" aria-hidden="true"/>
                })}
            </div>
            <aside class="labeler-side">
                <h2>"Shortcuts"</h2>
                <p>{shortcut_help}</p>
                <p><kbd>"Enter"</kbd>" submit · "<kbd>"S"</kbd>" skip · "<kbd>"Z"</kbd>" undo"</p>
                {(!job.instructions_html.is_empty()).then(|| view! {
                    <h2>"Instructions"</h2>
                    <div class="markdown" inner_html=job.instructions_html.clone()></div>
                })}
            </aside>
        </div>
    }
}

#[component]
fn TaskView(desk: Labeler, task: Task) -> impl IntoView {
    let job = desk.name();
    let task_type = desk.task_type();
    let seq = task.item_seq;
    let title = format!("Item {seq}: {}", task.item_name);
    let body = match (task_type, task.text.clone()) {
        (TaskType::NamedEntity, Some(text)) => view! { <SpanEditor desk text/> }.into_any(),
        (_, Some(text)) => {
            view! { <blockquote class="item-text" data-testid="task-text">{text}</blockquote> }.into_any()
        }
        (TaskType::BoundingBox, None) => view! { <BoxEditor desk src=content_url(&job, seq)/> }.into_any(),
        (_, None) => view! {
            <img class="task-image fit" data-testid="task-image" src=content_url(&job, seq) alt=task.item_name.clone()/>
        }
        .into_any(),
    };
    view! {
        <div class="task" data-testid="task" data-item=seq data-task=task.id.clone()>
            <p class="muted">{title}</p>
            {body}
        </div>
    }
}

/// An image with boxes drawn over it; coordinates are kept in image pixels and shown
/// scaled to the page.
#[component]
fn BoxEditor(desk: Labeler, src: String) -> impl IntoView {
    let on_load = move |ev: leptos::ev::Event| {
        use leptos::wasm_bindgen::JsCast;
        if let Some(img) = ev.target().and_then(|t| t.dyn_into::<leptos::web_sys::HtmlImageElement>().ok()) {
            desk.size.set(Some(ImageSize { width: img.natural_width(), height: img.natural_height() }));
        }
    };
    let boxes = move || {
        let Some(size) = desk.size.get() else { return Vec::new() };
        let draft = desk.draft.get();
        draft
            .boxes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let style = format!(
                    "left:{:.3}%;top:{:.3}%;width:{:.3}%;height:{:.3}%",
                    percent(b.left, f64::from(size.width)),
                    percent(b.top, f64::from(size.height)),
                    percent(b.width, f64::from(size.width)),
                    percent(b.height, f64::from(size.height))
                );
                let active = draft.active == Some(i);
                view! {
                    <div class="box" class:active=active style=style data-box=i data-testid="box">
                        <span class="box-label">{b.label.clone()}</span>
                        <span class="box-handle" data-handle=i></span>
                    </div>
                }
            })
            .collect::<Vec<_>>()
    };
    view! {
        <div class="box-frame" data-testid="box-frame"
            on:pointerdown=move |ev| desk.pointer_down(ev)
            on:pointermove=move |ev| desk.pointer_move(ev)
            on:pointerup=move |_| desk.pointer_up()>
            <img class="task-image" src=src alt="" draggable="false" on:load=on_load data-testid="task-image"/>
            {boxes}
        </div>
    }
}

/// A text in which spans are marked by selecting them.
#[component]
fn SpanEditor(desk: Labeler, text: String) -> impl IntoView {
    let container = NodeRef::<leptos::html::Div>::new();
    let chars: Vec<char> = text.chars().collect();
    let segments = move || {
        let draft = desk.draft.get();
        let mut out = Vec::new();
        let mut at = 0;
        for (i, e) in draft.entities.iter().enumerate() {
            if e.start > at {
                out.push(
                    view! { <span>{chars[at..e.start.min(chars.len())].iter().collect::<String>()}</span> }.into_any(),
                );
            }
            let piece: String = chars[e.start.min(chars.len())..e.end.min(chars.len())].iter().collect();
            let active = draft.active == Some(i);
            out.push(
                view! {
                    <mark class="entity" class:active=active data-label=e.label.clone() data-testid="entity"
                        on:click=move |_| desk.draft.update(|d| d.active = Some(i))>{piece}</mark>
                }
                .into_any(),
            );
            at = e.end.min(chars.len());
        }
        if at < chars.len() {
            out.push(view! { <span>{chars[at..].iter().collect::<String>()}</span> }.into_any());
        }
        out
    };
    view! {
        <div class="item-text span-text" node_ref=container data-testid="task-text"
            on:mouseup=move |_| {
                if let Some(el) = container.get() {
                    desk.read_selection(&el);
                }
            }>
            {segments}
        </div>
        {move || desk.selection.get().map(|(s, e)| view! { <p class="muted">{format!("Selected characters {s}–{e}: press a category key")}</p> })}
    }
}
