//! Datasets: the list, creating one with an upload (with a progress bar), a dataset's
//! page (batches with what they rejected, a paged grid of thumbnails or text
//! snippets) and an item's page.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};
use serde::{Deserialize, Serialize};

use crate::confirm::ConfirmButton;
use crate::error::AppError;
use crate::format::format_time;
use crate::forms::FormError;

/// Items per page of the grid.
pub const PAGE_SIZE: i64 = 60;

/// A dataset, as pages and `/api/v1/datasets` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DatasetInfo {
    pub name: String,
    pub description: String,
    /// `image` or `text`.
    pub kind: String,
    pub item_count: i64,
    pub total_bytes: i64,
    pub created_by: String,
    pub created_at: i64,
}

/// One upload into a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BatchInfo {
    /// 1 for the first upload, then 2, 3, ...
    pub seq: i64,
    /// What was uploaded.
    pub source: String,
    pub item_count: i64,
    pub total_bytes: i64,
    /// Each file or line left out, with the reason ("a.csv line 7: empty text").
    pub rejected: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// A dataset with its batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DatasetDetail {
    pub dataset: DatasetInfo,
    pub batches: Vec<BatchInfo>,
}

/// An item, as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ItemInfo {
    /// Position in the dataset, from 1.
    pub seq: i64,
    /// The batch that added it.
    pub batch: i64,
    /// The file name, or "file line N".
    pub name: String,
    pub media_type: String,
    pub size: i64,
    /// The start of a text item.
    pub snippet: Option<String>,
    /// The Ground Truth manifest reference it was imported for.
    pub source_ref: Option<String>,
}

#[cfg(feature = "ssr")]
mod convert {
    use super::*;

    /// Characters of a text item shown in lists.
    const SNIPPET_CHARS: usize = 280;
    use atelier_core::datasets::{Batch, Dataset, Item};

    impl From<Dataset> for DatasetInfo {
        fn from(d: Dataset) -> Self {
            DatasetInfo {
                name: d.name,
                description: d.description,
                kind: d.kind,
                item_count: d.item_count,
                total_bytes: d.total_bytes,
                created_by: d.created_by,
                created_at: d.created_at,
            }
        }
    }

    impl From<Batch> for BatchInfo {
        fn from(b: Batch) -> Self {
            BatchInfo {
                rejected: b.rejections(),
                seq: b.seq,
                source: b.source,
                item_count: b.item_count,
                total_bytes: b.total_bytes,
                created_by: b.created_by,
                created_at: b.created_at,
            }
        }
    }

    impl From<Item> for ItemInfo {
        fn from(i: Item) -> Self {
            let snippet = i.text.as_deref().map(|t| {
                let mut s: String = t.chars().take(SNIPPET_CHARS).collect();
                if t.chars().nth(SNIPPET_CHARS).is_some() {
                    s.push('…');
                }
                s
            });
            ItemInfo {
                seq: i.seq,
                batch: i.batch_seq,
                name: i.name,
                media_type: i.media_type,
                size: i.size,
                snippet,
                source_ref: i.source_ref,
            }
        }
    }
}

/// One item with its whole text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemDetail {
    pub dataset: DatasetInfo,
    pub item: ItemInfo,
    pub text: Option<String>,
}

#[server]
pub async fn list_datasets() -> Result<Vec<DatasetInfo>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::datasets::list(&db, &p).await?.into_iter().map(DatasetInfo::from).collect())
}

#[server]
pub async fn create_dataset(name: String, description: String, kind: String) -> Result<String, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let kind = atelier_core::datasets::DatasetKind::parse(&kind)?;
    Ok(atelier_core::datasets::create(&db, &p, &name, &description, kind).await?.name)
}

#[server]
pub async fn get_dataset(name: String) -> Result<DatasetDetail, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let dataset = atelier_core::datasets::get(&db, &p, &name).await?;
    let batches = atelier_core::datasets::batches(&db, &dataset).await?.into_iter().map(BatchInfo::from).collect();
    Ok(DatasetDetail { dataset: dataset.into(), batches })
}

#[server]
pub async fn dataset_items(name: String, page: i64) -> Result<Vec<ItemInfo>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let dataset = atelier_core::datasets::get(&db, &p, &name).await?;
    let after = (page.max(1) - 1) * PAGE_SIZE;
    let items = atelier_core::datasets::items(&db, &dataset, after, PAGE_SIZE).await?;
    Ok(items.into_iter().map(ItemInfo::from).collect())
}

#[server]
pub async fn dataset_item(name: String, seq: i64) -> Result<ItemDetail, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let dataset = atelier_core::datasets::get(&db, &p, &name).await?;
    let item = atelier_core::datasets::item(&db, &dataset, seq).await?;
    let text = item.text.clone();
    Ok(ItemDetail { dataset: dataset.into(), item: item.into(), text })
}

#[server]
pub async fn delete_dataset(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let store = crate::context::artifacts()?;
    atelier_core::datasets::delete_dataset(&db, &store, &p, &name).await?;
    leptos_axum::redirect("/datasets");
    Ok(())
}

#[server]
pub async fn remove_dataset_item(name: String, seq: i64) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let store = crate::context::artifacts()?;
    atelier_core::datasets::remove_item(&db, &store, &p, &name, seq).await?;
    Ok(())
}

/// "1.2 MB".
pub fn format_bytes(bytes: i64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// The URL of an item's content (images and texts), served by the REST API.
pub fn content_url(dataset: &str, seq: i64) -> String {
    format!("/api/v1/datasets/{dataset}/items/{seq}/content")
}

/// Sends the chosen files to `POST /api/v1/datasets/{name}/batches` with
/// XMLHttpRequest, whose upload progress events `fetch` lacks. `progress` runs 0-100
/// while the bytes go out; `outcome` gets the stored batch or the refusal.
fn upload_files(
    dataset: &str,
    files: &leptos::web_sys::FileList,
    text_column: &str,
    progress: RwSignal<Option<u32>>,
    outcome: RwSignal<Option<Result<BatchInfo, String>>>,
) -> Result<(), String> {
    use leptos::wasm_bindgen::closure::Closure;
    use leptos::wasm_bindgen::JsCast;
    use leptos::web_sys::{FormData, ProgressEvent, XmlHttpRequest};
    let js = |e: leptos::wasm_bindgen::JsValue| format!("{e:?}");
    let form = FormData::new().map_err(js)?;
    if !text_column.trim().is_empty() {
        form.append_with_str("text_column", text_column.trim()).map_err(js)?;
    }
    for i in 0..files.length() {
        if let Some(file) = files.item(i) {
            form.append_with_blob_and_filename("file", &file, &file.name()).map_err(js)?;
        }
    }
    let xhr = XmlHttpRequest::new().map_err(js)?;
    xhr.open("POST", &format!("/api/v1/datasets/{dataset}/batches")).map_err(js)?;
    let on_progress = Closure::<dyn FnMut(ProgressEvent)>::new(move |e: ProgressEvent| {
        if e.length_computable() && e.total() > 0.0 {
            progress.set(Some((e.loaded() / e.total() * 100.0).round() as u32));
        }
    });
    xhr.upload().map_err(js)?.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
    // Lives as long as the page: one small closure per upload.
    on_progress.forget();
    let request = xhr.clone();
    let on_done = Closure::once_into_js(move || {
        let status = request.status().unwrap_or(0);
        let body = request.response_text().ok().flatten().unwrap_or_default();
        let result = if status == 201 {
            serde_json::from_str::<BatchInfo>(&body).map_err(|e| e.to_string())
        } else if status == 0 {
            Err("the upload did not reach the server".to_string())
        } else {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string));
            Err(message.unwrap_or_else(|| format!("the upload failed (HTTP {status})")))
        };
        // The outcome first: whoever waits for the progress to end sees it.
        outcome.set(Some(result));
        progress.set(None);
    });
    xhr.set_onloadend(Some(on_done.unchecked_ref()));
    progress.set(Some(0));
    xhr.send_with_opt_form_data(Some(&form)).map_err(js)
}

/// The files input and the progress of an upload into `dataset`.
#[component]
fn UploadFields(kind: String) -> impl IntoView {
    let accept = if kind == "image" { ".png,.jpg,.jpeg,.webp,.manifest" } else { ".txt,.csv,.jsonl,.manifest" };
    let hint = if kind == "image" {
        "PNG, JPEG or WebP images, and optionally a Ground Truth input manifest (.manifest) whose source-ref entries name them."
    } else {
        ".txt files (one item each), CSV (one item per row, from the text column), JSON Lines or a Ground Truth input manifest (source or text per line)."
    };
    let is_text = kind == "text";
    view! {
        <label for="dataset-files">"Files"</label>
        <input id="dataset-files" name="files" type="file" multiple accept=accept/>
        <p class="muted">{hint}</p>
        <Show when=move || is_text>
            <label for="dataset-text-column">"CSV text column (default: text, else the first column)"</label>
            <input id="dataset-text-column" name="text_column" type="text"/>
        </Show>
    }
}

/// The progress bar and the result of the last upload.
#[component]
fn UploadStatus(
    progress: RwSignal<Option<u32>>,
    outcome: RwSignal<Option<Result<BatchInfo, String>>>,
) -> impl IntoView {
    view! {
        {move || progress.get().map(|p| view! {
            <div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=p.to_string()>
                <div class="progress-bar" style=format!("width: {p}%")></div>
                <span>{format!("Uploading… {p}%")}</span>
            </div>
        })}
        {move || match outcome.get() {
            Some(Err(e)) => Some(view! { <p class="error" role="alert" data-testid="upload-error">{e}</p> }.into_any()),
            Some(Ok(b)) => Some(view! { <BatchSummary batch=b/> }.into_any()),
            None => None,
        }}
    }
}

#[component]
fn BatchSummary(batch: BatchInfo) -> impl IntoView {
    let rejected = batch.rejected.clone();
    let n = rejected.len();
    view! {
        <div class="batch" data-testid="batch-summary">
            <p>
                {format!("Batch {}: {} items added ({}), ", batch.seq, batch.item_count, format_bytes(batch.total_bytes))}
                <span class={if n > 0 { "warning" } else { "muted" }}>{format!("{n} rejected")}</span>
            </p>
            <Show when=move || { n > 0 }>
                <ul class="rejections">
                    {rejected.clone().into_iter().map(|r| view! { <li>{r}</li> }).collect_view()}
                </ul>
            </Show>
        </div>
    }
}

/// The form's `<input>` called `name`.
fn form_input(form: &leptos::web_sys::HtmlFormElement, name: &str) -> Option<leptos::web_sys::HtmlInputElement> {
    use leptos::wasm_bindgen::JsCast;
    form.elements().named_item(name).and_then(|e| e.dyn_into::<leptos::web_sys::HtmlInputElement>().ok())
}

/// Reads the form's files and text column, and starts the upload.
fn start_upload(
    form: &leptos::web_sys::HtmlFormElement,
    dataset: &str,
    progress: RwSignal<Option<u32>>,
    outcome: RwSignal<Option<Result<BatchInfo, String>>>,
) -> bool {
    let input = |name: &str| form_input(form, name);
    let Some(files) = input("files").and_then(|i| i.files()).filter(|f| f.length() > 0) else {
        return false;
    };
    let text_column = input("text_column").map(|i| i.value()).unwrap_or_default();
    if let Err(e) = upload_files(dataset, &files, &text_column, progress, outcome) {
        outcome.set(Some(Err(format!("the upload could not start: {e}"))));
    }
    true
}

/// Datasets: the list and the form to create one.
#[component]
pub fn DatasetsPage() -> impl IntoView {
    let datasets = Resource::new(|| (), |_| list_datasets());
    let me = expect_context::<crate::CurrentUser>();
    let can_create = move || crate::auth::can(me, crate::auth::Can::CreateDataset);
    view! {
        <h1>"Datasets"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match datasets.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No datasets yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="datasets">
                            <thead><tr><th>"Dataset"</th><th>"Kind"</th><th>"Items"</th><th>"Size"</th><th>"Created by"</th><th>"Created"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|d| view! {
                                    <tr>
                                        <td><a href=format!("/datasets/{}", d.name)>{d.name.clone()}</a>
                                            <div class="muted">{d.description}</div></td>
                                        <td>{d.kind}</td>
                                        <td>{d.item_count}</td>
                                        <td>{format_bytes(d.total_bytes)}</td>
                                        <td>{d.created_by}</td>
                                        <td>{format_time(d.created_at)}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            <Show when=can_create>
                <NewDatasetForm/>
            </Show>
        </Transition>
    }
}

#[component]
fn NewDatasetForm() -> impl IntoView {
    let kind = RwSignal::new("image".to_string());
    let error = RwSignal::new(None::<String>);
    let progress = RwSignal::new(None::<u32>);
    let outcome = RwSignal::new(None::<Result<BatchInfo, String>>);
    let created = RwSignal::new(None::<String>);
    let navigate = leptos_router::hooks::use_navigate();
    // Once the dataset exists and its upload (if any) succeeded, open it.
    Effect::new(move |_| {
        if let Some(name) = created.get() {
            if progress.get().is_none() && !matches!(outcome.get(), Some(Err(_))) {
                navigate(&format!("/datasets/{name}"), Default::default());
            }
        }
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        use leptos::wasm_bindgen::JsCast;
        ev.prevent_default();
        let Some(form) = ev.target().and_then(|t| t.dyn_into::<leptos::web_sys::HtmlFormElement>().ok()) else {
            return;
        };
        let field = |name: &str| form_input(&form, name).map(|i| i.value()).unwrap_or_default();
        let (name, description) = (field("name"), field("description"));
        error.set(None);
        outcome.set(None);
        leptos::task::spawn_local(async move {
            match create_dataset(name.clone(), description, kind.get_untracked()).await {
                Err(e) => error.set(Some(e.message)),
                Ok(name) => {
                    // The files go up only once the dataset exists.
                    start_upload(&form, &name, progress, outcome);
                    created.set(Some(name));
                }
            }
        });
    };
    view! {
        <form class="card form" on:submit=on_submit data-testid="new-dataset">
            <h2>"New dataset"</h2>
            <label for="dataset-name">"Name"</label>
            <input id="dataset-name" name="name" type="text" required maxlength="128"/>
            <label for="dataset-description">"Description"</label>
            <input id="dataset-description" name="description" type="text"/>
            <label for="dataset-kind">"Kind"</label>
            <select id="dataset-kind" name="kind" on:change=move |ev| kind.set(event_target_value(&ev))>
                <option value="image">"Images"</option>
                <option value="text">"Texts"</option>
            </select>
            {move || view! { <UploadFields kind=kind.get()/> }}
            {move || error.get().map(|e| view! { <p class="error" role="alert" data-testid="form-error">{e}</p> })}
            <UploadStatus progress outcome/>
            <button type="submit" class="primary" disabled=move || progress.get().is_some()>"Create dataset"</button>
        </form>
    }
}

/// One dataset: counts, batches, and a page of items.
#[component]
pub fn DatasetPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let page = move || query.read().get("page").and_then(|p| p.parse::<i64>().ok()).unwrap_or(1).max(1);
    let progress = RwSignal::new(None::<u32>);
    let outcome = RwSignal::new(None::<Result<BatchInfo, String>>);
    let remove = ServerAction::<RemoveDatasetItem>::new();
    let removed = move || remove.version().get();
    let remove_error = Signal::derive(move || remove.value().get().and_then(Result::err));
    let uploads = move || outcome.get().map(|o| o.is_ok()).unwrap_or(false);
    let detail = Resource::new(move || (name(), uploads(), removed()), |(n, _, _)| get_dataset(n));
    let items = Resource::new(move || (name(), page(), uploads(), removed()), |(n, p, _, _)| dataset_items(n, p));
    let me = expect_context::<crate::CurrentUser>();
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => {
                        // Awaited, not read, so hydration sees what the server rendered.
                        let can_add = me.0.await.is_ok_and(|m| m.can.contains(&crate::auth::Can::CreateDataset));
                        view! { <DatasetSummary detail=d can_add progress outcome/> }.into_any()
                    }
                }
            })}
        </Transition>
        <h2>"Items"</h2>
        <FormError error=remove_error/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let dataset = name();
                match items.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) => {
                        let full = list.len() as i64 == PAGE_SIZE;
                        let p = page();
                        view! {
                            <div class="item-grid" data-testid="items">
                                {list.into_iter().map(|i| view! { <ItemCard dataset=dataset.clone() item=i remove/> }).collect_view()}
                            </div>
                            <nav class="pager">
                                <Show when=move || { p > 1 }>
                                    <a href=format!("?page={}", p - 1)>"← Previous"</a>
                                </Show>
                                <span>{format!("Page {p}")}</span>
                                <Show when=move || full>
                                    <a href=format!("?page={}", p + 1)>"Next →"</a>
                                </Show>
                            </nav>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

#[component]
fn DatasetSummary(
    detail: DatasetDetail,
    can_add: bool,
    progress: RwSignal<Option<u32>>,
    outcome: RwSignal<Option<Result<BatchInfo, String>>>,
) -> impl IntoView {
    let d = detail.dataset;
    let name = d.name.clone();
    let kind = d.kind.clone();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        use leptos::wasm_bindgen::JsCast;
        ev.prevent_default();
        if let Some(form) = ev.target().and_then(|t| t.dyn_into::<leptos::web_sys::HtmlFormElement>().ok()) {
            outcome.set(None);
            if !start_upload(&form, &name, progress, outcome) {
                outcome.set(Some(Err("choose one or more files first".into())));
            }
        }
    };
    view! {
        <h1>{d.name.clone()}</h1>
        <p class="muted">{d.description.clone()}</p>
        <dl class="facts">
            <dt>"Kind"</dt><dd>{d.kind.clone()}</dd>
            <dt>"Items"</dt><dd data-testid="item-count">{d.item_count}</dd>
            <dt>"Size"</dt><dd>{format_bytes(d.total_bytes)}</dd>
            <dt>"Created"</dt><dd>{format!("{} by {}", format_time(d.created_at), d.created_by)}</dd>
        </dl>
        <h2>"Batches"</h2>
        <p class="muted">"Items never change; each upload appends a batch."</p>
        <table class="table" data-testid="batches">
            <thead><tr><th>"Batch"</th><th>"From"</th><th>"Items"</th><th>"Rejected"</th><th>"Added"</th></tr></thead>
            <tbody>
                {detail.batches.into_iter().map(|b| {
                    let n = b.rejected.len();
                    view! {
                        <tr>
                            <td>{b.seq}</td>
                            <td>{b.source}</td>
                            <td>{b.item_count}</td>
                            <td>
                                {if n == 0 { view! { <span class="muted">"none"</span> }.into_any() } else { view! {
                                    <details><summary>{format!("{n} rejected")}</summary>
                                        <ul class="rejections">{b.rejected.into_iter().map(|r| view! { <li>{r}</li> }).collect_view()}</ul>
                                    </details>
                                }.into_any() }}
                            </td>
                            <td>{format!("{} by {}", format_time(b.created_at), b.created_by)}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        <Show when=move || can_add>
            <form class="card form" on:submit=on_submit.clone() data-testid="add-files">
                <h2>"Add files"</h2>
                <UploadFields kind=kind.clone()/>
                <UploadStatus progress outcome/>
                <button type="submit" class="primary" disabled=move || progress.get().is_some()>"Upload"</button>
            </form>
        </Show>
        <DeleteDataset dataset=d/>
    }
}

/// What deleting the dataset removes, for the confirmation.
fn delete_consequence(d: &DatasetInfo) -> String {
    format!(
        "Its {} item{} and their files ({}) are removed for good; training jobs and model versions that used it \
         keep its name. A dataset a labeling job or an unfinished training job reads cannot be deleted.",
        d.item_count,
        if d.item_count == 1 { "" } else { "s" },
        format_bytes(d.total_bytes)
    )
}

/// Deleting the dataset: at the page's end, asked first; then back to the list.
#[component]
fn DeleteDataset(dataset: DatasetInfo) -> impl IntoView {
    let delete = ServerAction::<DeleteDataset>::new();
    let error = Signal::derive(move || delete.value().get().and_then(Result::err));
    let navigate = leptos_router::hooks::use_navigate();
    // The server function redirects; a client-side dispatch follows it here.
    Effect::new(move |_| {
        if matches!(delete.value().get(), Some(Ok(()))) {
            navigate("/datasets", Default::default());
        }
    });
    let name = dataset.name.clone();
    let target = name.clone();
    view! {
        <section class="card danger-zone" data-testid="danger-zone">
            <h2>"Danger zone"</h2>
            <ConfirmButton
                label="Delete dataset…"
                title=format!("Delete dataset {name}?")
                consequence=delete_consequence(&dataset)
                confirm="Delete dataset"
                testid="delete-dataset"
                on_confirm=Callback::new(move |_| { delete.dispatch(DeleteDataset { name: target.clone() }); })
            />
            <FormError error/>
        </section>
    }
}

#[component]
fn ItemCard(dataset: String, item: ItemInfo, remove: ServerAction<RemoveDatasetItem>) -> impl IntoView {
    let href = format!("/datasets/{dataset}/items/{}", item.seq);
    let input = RemoveDatasetItem { name: dataset.clone(), seq: item.seq };
    let body = match item.snippet {
        Some(text) => view! { <p class="snippet">{text}</p> }.into_any(),
        None => view! { <img src=content_url(&dataset, item.seq) alt=item.name.clone() loading="lazy"/> }.into_any(),
    };
    view! {
        <div class="item-cell">
            <a class="item-card" href=href data-item=item.seq>
                {body}
                <span class="item-name">{format!("#{} {}", item.seq, item.name)}</span>
            </a>
            <ConfirmButton
                label="Remove"
                title=format!("Remove item {} ({}) from dataset {dataset}?", item.seq, item.name)
                consequence="The item and its file are removed for good; the other items keep their numbers."
                confirm="Remove item"
                class="danger item-remove"
                testid="remove-item"
                on_confirm=Callback::new(move |_| { remove.dispatch(input.clone()); })
            />
        </div>
    }
}

/// One item: the whole image or text, and where it came from.
#[component]
pub fn DatasetItemPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let seq = move || params.read().get("seq").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let detail = Resource::new(move || (name(), seq()), |(n, s)| dataset_item(n, s));
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => {
                        let dataset = d.dataset.name.clone();
                        let i = d.item;
                        let content = match d.text {
                            Some(text) => view! { <pre class="item-text" data-testid="item-text">{text}</pre> }.into_any(),
                            None => view! { <img class="item-image" src=content_url(&dataset, i.seq) alt=i.name.clone()/> }.into_any(),
                        };
                        let previous = (i.seq > 1).then(|| format!("/datasets/{dataset}/items/{}", i.seq - 1));
                        let next = (i.seq < d.dataset.item_count).then(|| format!("/datasets/{dataset}/items/{}", i.seq + 1));
                        view! {
                            <p><a href=format!("/datasets/{dataset}")>{format!("← {dataset}")}</a></p>
                            <h1>{format!("Item {} · {}", i.seq, i.name)}</h1>
                            <dl class="facts">
                                <dt>"Type"</dt><dd>{i.media_type}</dd>
                                <dt>"Size"</dt><dd>{format_bytes(i.size)}</dd>
                                <dt>"Batch"</dt><dd>{i.batch}</dd>
                                {i.source_ref.map(|r| view! { <dt>"Manifest source-ref"</dt><dd>{r}</dd> })}
                            </dl>
                            {content}
                            <nav class="pager">
                                {previous.map(|h| view! { <a href=h>"← Previous"</a> })}
                                {next.map(|h| view! { <a href=h>"Next →"</a> })}
                            </nav>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}
