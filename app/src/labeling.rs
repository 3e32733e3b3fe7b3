//! Labeling jobs for the people who run them: the list, the form to start one, a job's
//! page (progress, instructions, quality report with charts, output manifest) and the
//! review queue. The labelers' own pages are in `labeler`.

use atelier_protocol::labeling::{
    Answer, Category, GoldItem, LabelingJob, LabelingJobDetail, LabelingJobSpec, Quality, ReviewItem, TaskType,
};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::format::{format_time, percent};

/// What the new-job form offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelingChoices {
    /// (name, kind, items)
    pub datasets: Vec<(String, String, i64)>,
    pub teams: Vec<String>,
}

/// A job's page: the job, its progress, its rendered instructions and quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPageData {
    pub detail: LabelingJobDetail,
    pub instructions_html: String,
    /// For those who may read the job's output (labelers see only the progress).
    pub quality: Option<Quality>,
    /// SVG charts (gold accuracy and agreement, throughput).
    pub charts: Vec<String>,
    pub can_stop: bool,
    pub can_review: bool,
}

#[server]
pub async fn list_labeling_jobs() -> Result<Vec<LabelingJob>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::labeling::jobs::list(&db, &p).await?.iter().map(|j| j.info()).collect())
}

#[server]
pub async fn get_labeling_choices() -> Result<LabelingChoices, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let datasets = atelier_core::datasets::list(&db, &p).await?;
    // Choosing a team needs the group names; a user who may not list groups types them.
    let teams = atelier_core::iam::admin::list_groups(&db, &p).await.map(|g| g.into_iter().map(|g| g.name).collect());
    Ok(LabelingChoices {
        datasets: datasets.into_iter().map(|d| (d.name, d.kind, d.item_count)).collect(),
        teams: teams.unwrap_or_default(),
    })
}

#[server(input = Json)]
pub async fn create_labeling_job(spec: LabelingJobSpec) -> Result<String, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::labeling::jobs::create(&db, &p, &spec).await?.name)
}

#[server]
pub async fn get_labeling_job(name: String) -> Result<JobPageData, AppError> {
    use atelier_core::authz::Action;
    use atelier_core::labeling::{jobs, output};
    let (db, p) = crate::context::db_and_principal()?;
    let job = jobs::get_for(&db, &p, &name, Action::GetLabelingJob).await?;
    let (job, quality) = if jobs::can_job(&p, Action::GetLabelingJobOutput, &job) {
        let (job, quality) = output::quality(&db, &p, &name).await?;
        (job, Some(quality))
    } else {
        (job, None)
    };
    let progress = jobs::progress(&db, &job).await?;
    let charts = quality.as_ref().map(quality_charts).unwrap_or_default();
    Ok(JobPageData {
        instructions_html: markdown(&job.instructions),
        can_stop: jobs::can_job(&p, Action::StopLabelingJob, &job),
        can_review: jobs::can_job(&p, Action::ReviewAnnotations, &job),
        detail: LabelingJobDetail { job: job.info(), progress },
        quality,
        charts,
    })
}

#[server]
pub async fn stop_labeling_job(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::labeling::jobs::stop(&db, &p, &name).await?;
    Ok(())
}

#[server]
pub async fn review_queue(name: String) -> Result<(LabelingJob, Vec<ReviewItem>), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let (job, items) = atelier_core::labeling::output::review_queue(&db, &p, &name, 50).await?;
    Ok((job.info(), items))
}

#[server(input = Json)]
pub async fn review_labeling_item(name: String, seq: i64, answer: Answer) -> Result<String, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::labeling::output::review(&db, &p, &name, seq, &answer).await?.to_string())
}

/// Markdown to HTML with raw HTML shown as text and only web, mail and relative links,
/// so instructions cannot run script in the labelers' browsers.
#[cfg(feature = "ssr")]
pub fn markdown(text: &str) -> String {
    use pulldown_cmark::{CowStr, Event, Parser, Tag};
    fn safe(url: CowStr<'_>) -> CowStr<'_> {
        let scheme = url.split_once(':').map(|(s, _)| s).filter(|s| !s.contains('/'));
        match scheme {
            None => url,
            Some(s) if ["http", "https", "mailto"].contains(&s.to_ascii_lowercase().as_str()) => url,
            Some(_) => CowStr::Borrowed("#"),
        }
    }
    let events = Parser::new(text).map(|event| match event {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            Event::Start(Tag::Link { link_type, dest_url: safe(dest_url), title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            Event::Start(Tag::Image { link_type, dest_url: safe(dest_url), title, id })
        }
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

#[cfg(feature = "ssr")]
fn quality_charts(quality: &Quality) -> Vec<String> {
    use crate::charts::bar_chart;
    if quality.workers.is_empty() {
        return vec![];
    }
    let names: Vec<String> = quality.workers.iter().map(|w| w.worker.clone()).collect();
    let share = |f: fn(&atelier_protocol::labeling::WorkerQuality) -> Option<f64>| -> Vec<f64> {
        quality.workers.iter().map(|w| f(w).unwrap_or(0.0) * 100.0).collect()
    };
    vec![
        bar_chart(
            "Accuracy per labeler",
            "% of answers",
            &names,
            &[
                ("gold items right".to_string(), share(|w| w.gold_accuracy)),
                ("agrees with consolidated label".to_string(), share(|w| w.consensus_agreement)),
            ],
            Some((0.0, 100.0)),
        ),
        bar_chart(
            "Throughput per labeler",
            "annotations per hour",
            &names,
            &[("annotations / hour".to_string(), quality.workers.iter().map(|w| w.per_hour.unwrap_or(0.0)).collect())],
            None,
        ),
    ]
}

/// The fields of the new-job form, as typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobForm {
    pub name: String,
    pub dataset: String,
    pub task_type: String,
    /// One category per line: `name`, or `name = key` for a hotkey.
    pub categories: String,
    pub instructions: String,
    pub workers_per_item: String,
    pub teams: Vec<String>,
    pub time_limit: String,
    /// One gold item per line: the item number, then its label (labels, comma-separated,
    /// for multi-label jobs).
    pub gold: String,
    pub gold_share: String,
    pub review_below: String,
}

impl JobForm {
    /// The job specification, or what is wrong with the form.
    pub fn to_spec(&self) -> Result<LabelingJobSpec, String> {
        let task_type = TaskType::parse(&self.task_type).ok_or("choose a task type")?;
        let categories = self
            .categories
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| match line.rsplit_once('=') {
                Some((name, key)) => Category { name: name.trim().to_string(), hotkey: Some(key.trim().to_string()) },
                None => Category { name: line.to_string(), hotkey: None },
            })
            .collect();
        fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, String> {
            let t = text.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse().map(Some).map_err(|_| format!("{what} must be a number, not \"{t}\""))
        }
        let mut gold = Vec::new();
        for line in self.gold.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (item, label) =
                line.split_once(char::is_whitespace).ok_or(format!("gold line \"{line}\": item number, then label"))?;
            let item = item.parse().map_err(|_| format!("gold line \"{line}\": \"{item}\" is not an item number"))?;
            let label = label.trim().to_string();
            let answer = if task_type.is_single_label() {
                Answer { label: Some(label), ..Default::default() }
            } else if task_type.is_multi_label() {
                let labels = label.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
                Answer { labels: Some(labels), ..Default::default() }
            } else {
                return Err(
                    "gold items can be typed here for classification jobs; use the API for boxes and entities".into()
                );
            };
            gold.push(GoldItem { item, answer });
        }
        Ok(LabelingJobSpec {
            name: self.name.trim().to_string(),
            dataset: self.dataset.clone(),
            task_type,
            label_attribute: None,
            categories,
            instructions: self.instructions.clone(),
            workers_per_item: number(&self.workers_per_item, "workers per item")?,
            teams: self.teams.clone(),
            task_time_limit_secs: number(&self.time_limit, "the time limit")?,
            gold,
            gold_share: number(&self.gold_share, "the gold share")?,
            review_below: number(&self.review_below, "the review threshold")?,
        })
    }
}

/// A short description of an answer, for lists.
pub fn describe(answer: &Answer, text: Option<&str>) -> String {
    if let Some(l) = &answer.label {
        return l.clone();
    }
    if let Some(ls) = &answer.labels {
        return if ls.is_empty() { "(none)".into() } else { ls.join(", ") };
    }
    if let Some(bs) = &answer.boxes {
        let names: Vec<String> = bs
            .iter()
            .map(|b| format!("{} at {:.0},{:.0} {:.0}×{:.0}", b.label, b.left, b.top, b.width, b.height))
            .collect();
        return if names.is_empty() { "no boxes".into() } else { names.join("; ") };
    }
    if let Some(es) = &answer.entities {
        let chars: Vec<char> = text.unwrap_or("").chars().collect();
        let names: Vec<String> = es
            .iter()
            .map(|e| {
                let span: String = chars.get(e.start..e.end.min(chars.len())).unwrap_or(&[]).iter().collect();
                format!("{} “{span}”", e.label)
            })
            .collect();
        return if names.is_empty() { "no entities".into() } else { names.join("; ") };
    }
    String::new()
}

fn status_class(status: &str) -> &'static str {
    match status {
        "Completed" => "badge ok",
        "Stopped" => "badge muted",
        "Reviewing" => "badge warn",
        _ => "badge",
    }
}

/// Labeling jobs: the list and, for those who may, the form to start one.
#[component]
pub fn LabelingJobsPage() -> impl IntoView {
    let jobs = Resource::new(|| (), |_| list_labeling_jobs());
    let me = expect_context::<crate::CurrentUser>();
    view! {
        <h1>"Labeling jobs"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <Show when=move || crate::auth::can(me, crate::auth::Can::CreateLabelingJob)>
                <p><a class="button primary" href="/labeling/new">"New labeling job"</a></p>
            </Show>
            {move || Suspend::new(async move {
                match jobs.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No labeling jobs yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="labeling-jobs">
                            <thead><tr><th>"Job"</th><th>"Dataset"</th><th>"Task"</th><th>"Teams"</th><th>"Progress"</th><th>"Status"</th><th>"Created"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|j| {
                                    let done = j.item_count - j.remaining;
                                    view! {
                                        <tr>
                                            <td><a href=format!("/labeling/{}", j.name)>{j.name.clone()}</a></td>
                                            <td>{j.dataset.clone()}</td>
                                            <td>{j.task_type.title()}</td>
                                            <td>{j.teams.join(", ")}</td>
                                            <td>
                                                <progress max="100" value=percent(done as f64, j.item_count as f64)></progress>
                                                " "{format!("{done} / {}", j.item_count)}
                                            </td>
                                            <td><span class=status_class(&j.status)>{j.status.clone()}</span></td>
                                            <td>{format_time(j.created_at)}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The form that starts a labeling job.
#[component]
pub fn NewLabelingJobPage() -> impl IntoView {
    let choices = Resource::new(|| (), |_| get_labeling_choices());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = leptos_router::hooks::use_navigate();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        use leptos::wasm_bindgen::JsCast;
        ev.prevent_default();
        let Some(form) = ev.target().and_then(|t| t.dyn_into::<leptos::web_sys::HtmlFormElement>().ok()) else {
            return;
        };
        let Ok(data) = leptos::web_sys::FormData::new_with_form(&form) else { return };
        let field = |name: &str| data.get(name).as_string().unwrap_or_default();
        let teams: Vec<String> = data.get_all("teams").iter().filter_map(|v| v.as_string()).collect();
        let typed_teams = field("other_teams");
        let form = JobForm {
            name: field("name"),
            dataset: field("dataset"),
            task_type: field("task_type"),
            categories: field("categories"),
            instructions: field("instructions"),
            workers_per_item: field("workers_per_item"),
            teams: teams
                .into_iter()
                .chain(typed_teams.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
                .collect(),
            time_limit: field("time_limit"),
            gold: field("gold"),
            gold_share: field("gold_share"),
            review_below: field("review_below"),
        };
        let spec = match form.to_spec() {
            Ok(spec) => spec,
            Err(e) => return error.set(Some(e)),
        };
        error.set(None);
        busy.set(true);
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match create_labeling_job(spec).await {
                Ok(name) => navigate(&format!("/labeling/{name}"), Default::default()),
                Err(e) => {
                    busy.set(false);
                    error.set(Some(match e.field {
                        Some(f) => format!("{f}: {}", e.message),
                        None => e.message,
                    }));
                }
            }
        });
    };
    view! {
        <h1>"New labeling job"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
            let on_submit = on_submit.clone();
            Suspend::new(async move {
                match choices.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(c) => view! {
                        <form class="card form" on:submit=on_submit data-testid="new-labeling-job">
                            <label for="lj-name">"Name"</label>
                            <input id="lj-name" name="name" type="text" required maxlength="128"/>
                            <label for="lj-dataset">"Dataset"</label>
                            <select id="lj-dataset" name="dataset" required>
                                {c.datasets.iter().map(|(name, kind, items)| view! {
                                    <option value=name.clone()>{format!("{name} ({items} {kind}s)")}</option>
                                }).collect_view()}
                            </select>
                            <label for="lj-type">"Task type"</label>
                            <select id="lj-type" name="task_type">
                                {TaskType::ALL.into_iter().map(|t| view! { <option value=t.as_str()>{t.title()}</option> }).collect_view()}
                            </select>
                            <label for="lj-categories">"Label categories"</label>
                            <textarea id="lj-categories" name="categories" rows="4" required
                                placeholder="one per line; name = key sets a hotkey (digits 1-9 otherwise)"></textarea>
                            <label for="lj-instructions">"Instructions (Markdown; images by URL)"</label>
                            <textarea id="lj-instructions" name="instructions" rows="5"></textarea>
                            <fieldset>
                                <legend>"Work teams"</legend>
                                {c.teams.iter().map(|t| view! {
                                    <label class="check"><input type="checkbox" name="teams" value=t.clone()/>" "{t.clone()}</label>
                                }).collect_view()}
                                <label for="lj-other-teams">"Other teams (comma-separated)"</label>
                                <input id="lj-other-teams" name="other_teams" type="text"/>
                            </fieldset>
                            <label for="lj-workers">"Workers per item"</label>
                            <input id="lj-workers" name="workers_per_item" type="number" min="1" max="10" placeholder="3 (5 for boxes)"/>
                            <label for="lj-time">"Task time limit (seconds)"</label>
                            <input id="lj-time" name="time_limit" type="number" min="30" max="86400" placeholder="300"/>
                            <label for="lj-gold">"Gold items (classification): item number, then the right label"</label>
                            <textarea id="lj-gold" name="gold" rows="3" placeholder="12 cat"></textarea>
                            <label for="lj-gold-share">"Share of gold tasks (0-0.5)"</label>
                            <input id="lj-gold-share" name="gold_share" type="number" step="0.05" min="0" max="0.5" placeholder="0.1 with gold items"/>
                            <label for="lj-review">"Review items consolidated below this confidence (0-1; empty: no review)"</label>
                            <input id="lj-review" name="review_below" type="number" step="0.05" min="0" max="1"/>
                            {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="form-error">{e}</p> })}
                            <button type="submit" class="primary" disabled=move || busy.get()>"Start labeling job"</button>
                        </form>
                    }.into_any(),
                }
            })}}
        </Transition>
    }
}

/// One job: progress, settings, instructions, quality, output.
#[component]
pub fn LabelingJobPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let stop = ServerAction::<StopLabelingJob>::new();
    let page = Resource::new(move || (name(), stop.version().get()), |(n, _)| get_labeling_job(n));
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match page.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(data) => view! { <JobView data stop/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn JobView(data: JobPageData, stop: ServerAction<StopLabelingJob>) -> impl IntoView {
    let job = data.detail.job.clone();
    let progress = data.detail.progress.clone();
    let name = job.name.clone();
    let done = progress.items_done;
    let output =
        (job.status != "InProgress" && data.quality.is_some()).then(|| format!("/api/v1/labeling/jobs/{name}/output"));
    let review = (data.can_review && progress.review_pending > 0).then(|| format!("/labeling/{name}/review"));
    let stop_name = name.clone();
    let can_stop = data.can_stop && job.status == "InProgress";
    // Sections are type-erased (`into_any`): one nested view type for the whole page
    // overflows the compiler's query depth in release builds.
    let categories = view! {
        <section class="card">
            <h2>"Categories"</h2>
            <p>{job.categories.iter().zip(atelier_protocol::labeling::hotkeys(&job.categories)).map(|(c, k)| match k {
                Some(k) => format!("{} ({k})", c.name),
                None => c.name.clone(),
            }).collect::<Vec<_>>().join(" · ")}</p>
            {(!job.instructions.is_empty()).then(|| view! { <h2>"Instructions"</h2><div class="markdown" inner_html=data.instructions_html.clone()></div> })}
        </section>
    }
    .into_any();
    let quality = data.quality.map(|quality| view! { <QualityView quality charts=data.charts/> }.into_any());
    let actions = view! {
        <div class="actions">
            {output.map(|href| view! { <a class="button primary" href=href download=format!("{name}.manifest") data-testid="download-output">"Download output manifest"</a> })}
            {review.map(|href| view! { <a class="button" href=href>"Open review queue"</a> })}
            {can_stop.then(|| view! {
                <crate::confirm::ConfirmButton
                    label="Stop job"
                    title=format!("Stop labeling job {name}?")
                    consequence=format!(
                        "Labelers can no longer take its tasks; {} of {} items are labeled and the rest stay unlabeled. \
                         The output is made from the answers so far. A stopped job cannot be restarted.",
                        done, job.item_count
                    )
                    confirm="Stop labeling job"
                    testid="stop-job"
                    on_confirm=Callback::new(move |_| { stop.dispatch(StopLabelingJob { name: stop_name.clone() }); })
                />
            })}
        </div>
    }
    .into_any();
    view! {
        <h1>{job.name.clone()}" "<span class=status_class(&job.status) data-testid="job-status">{job.status.clone()}</span></h1>
        <p class="muted">
            {format!("{} over ", job.task_type.title())}
            <a href=format!("/datasets/{}", job.dataset)>{job.dataset.clone()}</a>
            {format!(" · teams {} · {} workers per item · created by {} {}", job.teams.join(", "), job.workers_per_item, job.created_by, format_time(job.created_at))}
        </p>
        <section class="card">
            <h2>"Progress"</h2>
            <progress max="100" value=percent(done as f64, job.item_count as f64)></progress>
            <p data-testid="job-progress">{format!("{done} of {} items labeled · {} annotations · {} skips · {} held now · {} labelers", job.item_count, progress.annotations, progress.skips, progress.held, progress.workers)}</p>
            {(progress.gold_items > 0).then(|| view! { <p>{format!("{} gold items, answered {} times", progress.gold_items, progress.gold_answers)}</p> })}
            {(progress.review_pending + progress.reviewed > 0).then(|| view! { <p>{format!("Review: {} waiting, {} done", progress.review_pending, progress.reviewed)}</p> })}
            {actions}
            {move || stop.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error">{e.message}</p> })}
        </section>
        {categories}
        {quality}
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map(|v| format!("{:.0}%", v * 100.0)).unwrap_or_else(|| "–".into())
}

fn stat(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

#[component]
fn QualityView(quality: Quality, charts: Vec<String>) -> impl IntoView {
    let classes = quality.classes.clone();
    view! {
        <section class="card" data-testid="quality">
            <h2>"Quality"</h2>
            {quality.workers.is_empty().then(|| view! { <p class="muted">"No annotations yet."</p> })}
            {(!quality.workers.is_empty()).then(|| view! {
                <table class="table">
                    <thead><tr><th>"Labeler"</th><th>"Annotations"</th><th>"Skips"</th><th>"Gold right"</th><th>"Agrees with consolidated"</th><th>"Seconds per task"</th><th>"Per hour"</th></tr></thead>
                    <tbody>
                        {quality.workers.iter().map(|w| view! {
                            <tr>
                                <td>{w.worker.clone()}</td>
                                <td>{w.annotations}</td>
                                <td>{w.skips}</td>
                                <td>{format!("{} ({} of {})", ratio(w.gold_accuracy), w.gold_correct, w.gold_answers)}</td>
                                <td>{ratio(w.consensus_agreement)}</td>
                                <td>{w.mean_seconds.map(|s| format!("{s:.1}")).unwrap_or_else(|| "–".into())}</td>
                                <td>{w.per_hour.map(|s| format!("{s:.0}")).unwrap_or_else(|| "–".into())}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any())}
            {(quality.fleiss_kappa.is_some() || quality.krippendorff_alpha.is_some()).then(|| view! {
                <p data-testid="agreement">{format!("Fleiss' kappa {} · Krippendorff's alpha {}", stat(quality.fleiss_kappa), stat(quality.krippendorff_alpha))}</p>
            })}
            {(!quality.pairs.is_empty()).then(|| view! {
                <h3>"Agreement between pairs (Cohen's kappa)"</h3>
                <table class="table">
                    <thead><tr><th>"Labelers"</th><th>"Shared items"</th><th>"Kappa"</th></tr></thead>
                    <tbody>
                        {quality.pairs.iter().map(|p| view! {
                            <tr><td>{format!("{} & {}", p.first, p.second)}</td><td>{p.shared_items}</td><td>{stat(p.kappa)}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any())}
            {quality.confusion.clone().map(|matrix| view! {
                <h3>"Confusion (rows: consolidated label, columns: labeler's answer)"</h3>
                <table class="table confusion" data-testid="confusion">
                    <thead><tr><th></th>{classes.iter().map(|c| view! { <th>{c.clone()}</th> }).collect_view()}</tr></thead>
                    <tbody>
                        {matrix.into_iter().zip(classes.clone()).map(|(row, class)| view! {
                            <tr><th>{class}</th>{row.into_iter().map(|n| view! { <td>{n}</td> }).collect_view()}</tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any())}
            {charts.into_iter().map(|svg| view! { <div class="chart" inner_html=svg></div> }).collect_view()}
        </section>
    }
    .into_any()
}

/// The review queue: low-confidence items, each with every labeler's answer; the
/// reviewer keeps one of them (or, for classification, picks any category).
#[component]
pub fn ReviewQueuePage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let decided = RwSignal::new(0u32);
    let error = RwSignal::new(None::<String>);
    let queue = Resource::new(move || (name(), decided.get()), |(n, _)| review_queue(n));
    let decide = move |seq: i64, answer: Answer| {
        let job = name();
        leptos::task::spawn_local(async move {
            match review_labeling_item(job, seq, answer).await {
                Ok(_) => {
                    error.set(None);
                    decided.update(|d| *d += 1);
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    view! {
        <h1>"Review queue"</h1>
        {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match queue.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok((job, items)) if items.is_empty() => view! {
                        <p>"Nothing to review in "<a href=format!("/labeling/{}", job.name)>{job.name.clone()}</a>"."</p>
                    }.into_any(),
                    Ok((job, items)) => {
                        let job_name = job.name.clone();
                        view! {
                            <p class="muted">{format!("{} items below confidence {:.2} in {}", items.len(), job.review_below.unwrap_or(0.0), job.name)}</p>
                            {items.into_iter().map(|item| {
                                let seq = item.item_seq;
                                let text = item.text.clone();
                                let media = match &item.text {
                                    Some(t) => view! { <blockquote class="item-text">{t.clone()}</blockquote> }.into_any(),
                                    None => view! { <img class="review-image" src=format!("/api/v1/labeling/jobs/{job_name}/items/{seq}/content") alt=item.item_name.clone()/> }.into_any(),
                                };
                                let consolidated = item.outcome.answer.clone();
                                let single = job.task_type.is_single_label();
                                let categories = job.categories.clone();
                                view! {
                                    <section class="card review-item" data-testid="review-item">
                                        <h2>{format!("Item {seq}: {}", item.item_name)}</h2>
                                        {media}
                                        <p>{format!("Consolidated ({:.0}% confidence): {}", item.confidence * 100.0, describe(&consolidated, text.as_deref()))}" "
                                            <button on:click=move |_| decide(seq, consolidated.clone())>"Confirm"</button></p>
                                        <ul>
                                            {item.annotations.into_iter().map(|a| {
                                                let answer = a.answer.clone();
                                                view! { <li>{format!("{}: {}", a.worker, describe(&a.answer, text.as_deref()))}" "
                                                    <button on:click=move |_| decide(seq, answer.clone())>"Use this"</button></li> }
                                            }).collect_view()}
                                        </ul>
                                        {single.then(|| view! {
                                            <p>"Or label it: "{categories.into_iter().map(|c| {
                                                let answer = Answer { label: Some(c.name.clone()), ..Default::default() };
                                                view! { <button on:click=move |_| decide(seq, answer.clone())>{c.name.clone()}</button>" " }
                                            }).collect_view()}</p>
                                        })}
                                    </section>
                                }
                            }).collect_view()}
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_a_spec() {
        let form = JobForm {
            name: " birds ".into(),
            dataset: "photos".into(),
            task_type: "image_multi_label".into(),
            categories: "sparrow = q\n\nrobin\n".into(),
            teams: vec!["watchers".into()],
            workers_per_item: "2".into(),
            gold: "4 sparrow, robin\n".into(),
            review_below: "0.6".into(),
            ..Default::default()
        };
        let spec = form.to_spec().expect("valid");
        assert_eq!(spec.name, "birds");
        assert_eq!(spec.categories[0], Category { name: "sparrow".into(), hotkey: Some("q".into()) });
        assert_eq!(spec.categories[1].hotkey, None);
        assert_eq!(spec.workers_per_item, Some(2));
        assert_eq!(spec.task_time_limit_secs, None);
        assert_eq!(spec.gold[0].item, 4);
        assert_eq!(spec.gold[0].answer.labels, Some(vec!["sparrow".to_string(), "robin".to_string()]));
        assert_eq!(spec.review_below, Some(0.6));
        let bad = JobForm { workers_per_item: "three".into(), ..form.clone() };
        assert_eq!(bad.to_spec().expect_err("refused"), "workers per item must be a number, not \"three\"");
        let bad = JobForm { gold: "x cat".into(), ..form };
        assert!(bad.to_spec().expect_err("refused").contains("not an item number"));
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn instructions_cannot_carry_script() {
        let html = markdown(
            "**Label** <script>alert(1)</script> [x](javascript:alert(1)) ![ex](/img.png) [ok](https://a.example/x)",
        );
        assert!(html.contains("<strong>Label</strong>"));
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("src=\"/img.png\""));
        assert!(html.contains("href=\"https://a.example/x\""));
    }
}
