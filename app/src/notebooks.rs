//! Notebooks: the list (create, import, rename, duplicate, delete, export) and the
//! editor, which runs cells on the user's Jupyter kernel and streams outputs as they
//! come.
//!
//! The editor keeps the notebook in the browser and saves it through the REST API a
//! moment after each change, naming the version it started from; a save refused
//! because someone else saved in between is shown with the choice to reload or
//! overwrite. Kernel operations go through the REST API too (`/api/v1/kernels/...`);
//! an execution's answer is a stream of server-sent events read as it arrives.

use std::cell::RefCell;
use std::rc::Rc;

use atelier_protocol::notebooks::{Kernel, KernelMessage, Notebook, NotebookSummary, Revision, Share};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::AppError;
use crate::format::format_time;

/// What the editor needs: the notebook, what the caller may do, rendered Markdown,
/// their kernel and the nodes to start one on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditorData {
    pub notebook: Notebook,
    pub can_edit: bool,
    pub can_run: bool,
    pub can_share: bool,
    /// Rendered (sanitized) HTML of each Markdown cell, by cell id.
    pub markdown: Vec<(String, String)>,
    pub kernel: Option<Kernel>,
    /// Ready nodes the caller may see: name and GPU count.
    pub nodes: Vec<(String, usize)>,
}

#[server]
pub async fn list_notebooks() -> Result<Vec<NotebookSummary>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::notebooks::list(&db, &p).await?)
}

#[server]
pub async fn create_notebook(name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let new = atelier_protocol::notebooks::NewNotebook { name, content: None };
    let created = atelier_core::notebooks::create(&db, &p, &new).await?;
    leptos_axum::redirect(&format!("/notebooks/{}", created.id));
    Ok(())
}

#[server]
pub async fn rename_notebook(id: String, name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::notebooks::rename(&db, &p, &id, &name).await?;
    Ok(())
}

#[server]
pub async fn duplicate_notebook(id: String, name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::notebooks::duplicate(&db, &p, &id, &name).await?;
    Ok(())
}

#[server]
pub async fn delete_notebook(id: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::notebooks::delete(&db, &p, &id).await?;
    Ok(())
}

#[server]
pub async fn load_notebook(id: String) -> Result<EditorData, AppError> {
    use atelier_core::authz::Action;
    use atelier_core::notebooks::{self, ipynb, kernels};
    let (db, p) = crate::context::db_and_principal()?;
    let notebook = notebooks::get(&db, &p, &id).await?;
    let markdown = notebook.content["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["cell_type"] == "markdown")
        .map(|c| {
            let id = c["id"].as_str().unwrap_or_default().to_string();
            (id, ipynb::render_markdown(c["source"].as_str().unwrap_or_default()))
        })
        .collect();
    let nodes = atelier_core::compute::nodes::list(&db, &p)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.status == "Ready")
        .map(|n| {
            let gpus = n.gpu_list().len();
            (n.name, gpus)
        })
        .collect();
    let [can_edit, can_run, can_share] =
        notebooks::can(&db, &p, &id, [Action::UpdateNotebook, Action::RunCell, Action::ShareNotebook]).await?;
    Ok(EditorData {
        can_edit,
        can_run,
        can_share,
        kernel: kernels::for_notebook(&db, &p, &id).await?,
        notebook,
        markdown,
        nodes,
    })
}

#[server]
pub async fn render_markdown(source: String) -> Result<String, AppError> {
    // Anyone who may list notebooks; the text is theirs and is only rendered.
    crate::context::authorize(atelier_core::authz::Action::ListNotebooks, &atelier_core::notebooks::resource("*"))?;
    Ok(atelier_core::notebooks::ipynb::render_markdown(&source))
}

#[server]
pub async fn kernel_state(notebook: String) -> Result<Option<Kernel>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::notebooks::kernels::for_notebook(&db, &p, &notebook).await?)
}

#[server]
pub async fn list_revisions(id: String) -> Result<Vec<Revision>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::notebooks::revisions(&db, &p, &id).await?)
}

#[server]
pub async fn create_checkpoint(id: String, name: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::notebooks::checkpoint(&db, &p, &id, &name).await?;
    Ok(())
}

#[server]
pub async fn revision_text(id: String, revision: String) -> Result<Vec<(String, String)>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let content = atelier_core::notebooks::revision_content(&db, &p, &id, &revision).await?;
    Ok(content["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let kind = c["cell_type"].as_str().unwrap_or_default().to_string();
            (kind, c["source"].as_str().unwrap_or_default().to_string())
        })
        .collect())
}

#[server]
pub async fn restore_revision(id: String, revision: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::notebooks::restore(&db, &p, &id, &revision).await?;
    Ok(())
}

#[server]
pub async fn list_shares(id: String) -> Result<Vec<Share>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::notebooks::shares(&db, &p, &id).await?)
}

#[server]
pub async fn share_notebook(id: String, username: String, role: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::notebooks::share(&db, &p, &id, &username, &role).await?;
    Ok(())
}

#[server]
pub async fn unshare_notebook(id: String, username: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::notebooks::unshare(&db, &p, &id, &username).await?;
    Ok(())
}

/// Notebooks: own and shared, with create and import.
#[component]
pub fn NotebooksPage() -> impl IntoView {
    let create = ServerAction::<CreateNotebook>::new();
    let rename = ServerAction::<RenameNotebook>::new();
    let duplicate = ServerAction::<DuplicateNotebook>::new();
    let delete = ServerAction::<DeleteNotebook>::new();
    let imported = RwSignal::new(0u32);
    let list = Resource::new(
        move || (rename.version().get(), duplicate.version().get(), delete.version().get(), imported.get()),
        |_| list_notebooks(),
    );
    let create_error = Signal::derive(move || create.value().get().and_then(Result::err));
    let row_error = Signal::derive(move || {
        [rename.value().get(), duplicate.value().get(), delete.value().get()]
            .into_iter()
            .flatten()
            .find_map(Result::err)
    });
    view! {
        <h1>"Notebooks"</h1>
        <AnyError error=row_error/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match list.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(l) if l.is_empty() => view! { <p class="muted">"No notebooks yet. Create one or import an .ipynb file below."</p> }.into_any(),
                    Ok(l) => view! {
                        <table class="table" data-testid="notebooks">
                            <thead><tr><th>"Notebook"</th><th>"Owner"</th><th>"Your role"</th><th>"Cells"</th><th>"Saved"</th><th></th></tr></thead>
                            <tbody>
                                {l.into_iter().map(|n| notebook_row(n, rename, duplicate, delete)).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
        <div class="card-row">
            <ActionForm action=create attr:class="card form" attr:data-testid="new-notebook">
                <h2>"New notebook"</h2>
                <label for="nb-name">"Name"</label>
                <input id="nb-name" name="name" required=true placeholder="Untitled"/>
                <AnyError error=create_error/>
                <button type="submit">"Create"</button>
            </ActionForm>
            <ImportForm imported/>
        </div>
    }
    .into_any()
}

fn notebook_row(
    n: NotebookSummary,
    rename: ServerAction<RenameNotebook>,
    duplicate: ServerAction<DuplicateNotebook>,
    delete: ServerAction<DeleteNotebook>,
) -> impl IntoView {
    let id = n.id.clone();
    let owned_id = StoredValue::new(n.id.clone());
    let copy_name = format!("{} (copy)", n.name);
    let is_owner = n.role == "owner";
    let ask_delete = format!("Delete notebook {}?", n.name);
    let delete_consequence =
        format!("Its {} cells, their outputs and its revisions go for good, for everyone it is shared with.", n.cells);
    view! {
        <tr data-notebook=n.name.clone()>
            <td><a href=format!("/notebooks/{}", n.id)>{n.name.clone()}</a></td>
            <td>{n.owner.clone()}</td>
            <td>{n.role.clone()}</td>
            <td>{n.cells}</td>
            <td>{format!("{} by {}", format_time(n.updated_at), n.updated_by)}</td>
            <td class="actions">
                <a href=format!("/api/v1/notebooks/{}/export?format=ipynb", n.id) download="">".ipynb"</a>
                " "
                <a href=format!("/api/v1/notebooks/{}/export?format=py", n.id) download="">".py"</a>
                <ActionForm action=duplicate attr:class="inline">
                    <input type="hidden" name="id" value=id/>
                    <input type="hidden" name="name" value=copy_name/>
                    <button type="submit" class="secondary">"Duplicate"</button>
                </ActionForm>
                <Show when=move || is_owner>
                    <ActionForm action=rename attr:class="inline">
                        <input type="hidden" name="id" value=owned_id.get_value()/>
                        <input name="name" aria-label="New name" placeholder="New name" required=true size="12"/>
                        <button type="submit" class="secondary">"Rename"</button>
                    </ActionForm>
                    <crate::confirm::ConfirmButton
                        label="Delete"
                        title=ask_delete.clone()
                        consequence=delete_consequence.clone()
                        confirm="Delete notebook"
                        on_confirm=Callback::new(move |_| {
                            delete.dispatch(DeleteNotebook { id: owned_id.get_value() });
                        })
                    />
                </Show>
            </td>
        </tr>
    }
}

/// Imports an `.ipynb` file through `POST /api/v1/notebooks/import`.
#[component]
fn ImportForm(imported: RwSignal<u32>) -> impl IntoView {
    let file_ref = NodeRef::<leptos::html::Input>::new();
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(file) = file_ref.get().and_then(|i| i.files()).and_then(|f| f.get(0)) else {
            error.set(Some("choose an .ipynb file".into()));
            return;
        };
        let mut title = name.get_untracked().trim().to_string();
        if title.is_empty() {
            title = file.name().trim_end_matches(".ipynb").to_string();
        }
        let url = format!("/api/v1/notebooks/import?name={}", encode(&title));
        let body = Body::Blob(file.into());
        request("POST", &url, body, move |status, text| {
            if status == 201 {
                error.set(None);
                imported.update(|n| *n += 1);
            } else {
                error.set(Some(error_message(status, &text)));
            }
        });
    };
    view! {
        <form class="card form" data-testid="import-notebook" on:submit=submit>
            <h2>"Import .ipynb"</h2>
            <label for="import-file">"File"</label>
            <input id="import-file" type="file" accept=".ipynb,application/json" node_ref=file_ref/>
            <label for="import-name">"Name (default: the file's)"</label>
            <input id="import-name" prop:value=name on:input=move |e| name.set(event_target_value(&e))/>
            {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
            <button type="submit">"Import"</button>
        </form>
    }
    .into_any()
}

/// An action's error, whatever field it names (these forms have one or two inputs).
#[component]
fn AnyError(#[prop(into)] error: Signal<Option<AppError>>) -> impl IntoView {
    move || error.get().map(|e| view! { <p class="error" role="alert">{e.message}</p> })
}

/// Percent-encodes a query value.
fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The message of a REST error answer.
fn error_message(status: u16, body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| match status {
            0 => "the server could not be reached".to_string(),
            _ => format!("the request failed (HTTP {status})"),
        })
}

/// A request body for [`request`].
enum Body {
    None,
    Json(String),
    Blob(leptos::web_sys::Blob),
}

/// Sees a streamed answer's body so far, each time more arrives.
type OnChunk = Box<dyn FnMut(&str)>;

/// Sends a REST request with the session cookie and calls `done` with the status and
/// body. `on_chunk`, when given, sees the body so far each time more arrives.
fn send(method: &str, url: &str, body: Body, on_chunk: Option<OnChunk>, done: impl FnOnce(u16, String) + 'static) {
    use leptos::wasm_bindgen::closure::Closure;
    use leptos::wasm_bindgen::JsCast;
    use leptos::web_sys::XmlHttpRequest;
    let Ok(xhr) = XmlHttpRequest::new() else { return done(0, String::new()) };
    if xhr.open(method, url).is_err() {
        return done(0, String::new());
    }
    let progress = on_chunk.map(|mut f| {
        let x = xhr.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Ok(Some(text)) = x.response_text() {
                f(&text);
            }
        })
    });
    if let Some(p) = &progress {
        xhr.set_onprogress(Some(p.as_ref().unchecked_ref()));
    }
    let progress = Rc::new(RefCell::new(progress));
    let x = xhr.clone();
    let on_end = Closure::once_into_js(move || {
        x.set_onprogress(None);
        // The chunk handler is done with; dropping it frees it.
        progress.borrow_mut().take();
        let status = x.status().unwrap_or(0);
        done(status, x.response_text().ok().flatten().unwrap_or_default());
    });
    xhr.set_onloadend(Some(on_end.unchecked_ref()));
    let sent = match body {
        Body::None => xhr.send(),
        Body::Json(text) => {
            let _ = xhr.set_request_header("Content-Type", "application/json");
            xhr.send_with_opt_str(Some(&text))
        }
        Body::Blob(blob) => {
            let _ = xhr.set_request_header("Content-Type", "application/x-ipynb+json");
            xhr.send_with_opt_blob(Some(&blob))
        }
    };
    if sent.is_err() {
        leptos::logging::warn!("request to {url} could not be sent");
    }
}

fn request(method: &str, url: &str, body: Body, done: impl FnOnce(u16, String) + 'static) {
    send(method, url, body, None, done)
}

/// One cell as the editor holds it.
#[derive(Clone, Copy)]
struct Cell {
    id: StoredValue<String>,
    kind: RwSignal<String>,
    source: RwSignal<String>,
    outputs: RwSignal<Vec<Value>>,
    count: RwSignal<Option<i64>>,
    /// Queued or running on the kernel.
    running: RwSignal<bool>,
    /// Rendered Markdown (for Markdown cells).
    html: RwSignal<String>,
    metadata: StoredValue<Value>,
    extra: StoredValue<Value>,
    /// The notebook version whose saved content holds this cell's outputs as shown;
    /// `None` while they are not saved yet (see [`output_view`]).
    stored_at: RwSignal<Option<i64>>,
    /// Counts changes to the outputs, so a save knows whether they changed while it
    /// was on its way.
    changes: StoredValue<u64>,
}

impl Cell {
    fn from_json(c: &Value, html: String, stored_at: Option<i64>) -> Cell {
        let mut extra = json!({});
        if let Some(a) = c.get("attachments") {
            extra["attachments"] = a.clone();
        }
        Cell {
            id: StoredValue::new(c["id"].as_str().unwrap_or_default().to_string()),
            kind: RwSignal::new(c["cell_type"].as_str().unwrap_or("code").to_string()),
            source: RwSignal::new(c["source"].as_str().unwrap_or_default().to_string()),
            outputs: RwSignal::new(c["outputs"].as_array().cloned().unwrap_or_default()),
            count: RwSignal::new(c["execution_count"].as_i64()),
            running: RwSignal::new(false),
            html: RwSignal::new(html),
            metadata: StoredValue::new(c.get("metadata").cloned().unwrap_or(json!({}))),
            extra: StoredValue::new(extra),
            stored_at: RwSignal::new(stored_at),
            changes: StoredValue::new(0),
        }
    }

    /// Notes that the outputs changed: they are not saved as shown any more.
    fn outputs_changed(self) {
        self.changes.update_value(|n| *n += 1);
        if self.stored_at.get_untracked().is_some() {
            self.stored_at.set(None);
        }
    }

    fn set_outputs(self, outputs: Vec<Value>) {
        self.outputs.set(outputs);
        self.outputs_changed();
    }

    fn update_outputs(self, f: impl FnOnce(&mut Vec<Value>)) {
        self.outputs.update(f);
        self.outputs_changed();
    }

    fn new(kind: &str) -> Cell {
        let id = format!("{:x}", (js_random() * 1e15) as u64);
        Cell::from_json(&json!({"id": id, "cell_type": kind, "source": ""}), String::new(), None)
    }

    fn to_json(self) -> Value {
        let kind = self.kind.get_untracked();
        let mut c = json!({"id": self.id.get_value(), "cell_type": kind, "metadata": self.metadata.get_value(),
                           "source": self.source.get_untracked()});
        if kind == "code" {
            c["outputs"] = Value::Array(self.outputs.get_untracked());
            c["execution_count"] = json!(self.count.get_untracked());
        } else if let Some(a) = self.extra.get_value().get("attachments") {
            c["attachments"] = a.clone();
        }
        c
    }
}

fn js_random() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        leptos::web_sys::js_sys::Math::random()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.5
    }
}

/// Whether keys go to the notebook (command mode) or into a cell (edit mode).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Command,
    Edit,
}

/// The notebook editor.
#[component]
pub fn NotebookPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let data = Resource::new(id, load_notebook);
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => view! { <h1>"Notebook"</h1><p class="error">{e.message}</p> }.into_any(),
                    Ok(d) => view! { <Editor data=d/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// Everything the editor's parts share.
#[derive(Clone, Copy)]
struct Ed {
    id: StoredValue<String>,
    cells: RwSignal<Vec<Cell>>,
    selected: RwSignal<usize>,
    mode: RwSignal<Mode>,
    version: RwSignal<i64>,
    metadata: StoredValue<Value>,
    /// Bumped by every edit; the autosave saves when it settles.
    edits: RwSignal<u64>,
    saved_edits: RwSignal<u64>,
    saving: RwSignal<bool>,
    conflict: RwSignal<Option<String>>,
    save_error: RwSignal<Option<String>>,
    kernel: RwSignal<Option<Kernel>>,
    /// The kernel's execution state as its messages say (busy/idle).
    activity: RwSignal<String>,
    notice: RwSignal<Option<String>>,
    can_edit: bool,
    can_run: bool,
}

impl Ed {
    fn changed(self) {
        if self.can_edit {
            self.edits.update(|n| *n += 1);
        }
    }

    fn content(self) -> Value {
        let cells: Vec<Value> = self.cells.get_untracked().into_iter().map(Cell::to_json).collect();
        json!({"nbformat": 4, "nbformat_minor": 5, "metadata": self.metadata.get_value(), "cells": cells})
    }

    /// Saves now, naming the version the edits started from.
    fn save(self, base: Option<i64>) {
        if !self.can_edit || self.saving.get_untracked() {
            return;
        }
        let upto = self.edits.get_untracked();
        let base_version = base.unwrap_or_else(|| self.version.get_untracked());
        let body = json!({"content": self.content(), "base_version": base_version}).to_string();
        // Outputs not saved yet, as they are in this save: once it is stored, they are.
        let unsaved: Vec<(Cell, u64)> = self
            .cells
            .get_untracked()
            .into_iter()
            .filter(|c| c.stored_at.get_untracked().is_none())
            .map(|c| (c, c.changes.get_value()))
            .collect();
        self.saving.set(true);
        let url = format!("/api/v1/notebooks/{}/content", self.id.get_value());
        request("PUT", &url, Body::Json(body), move |status, text| {
            self.saving.set(false);
            match status {
                200 => {
                    if let Ok(nb) = serde_json::from_str::<Notebook>(&text) {
                        self.version.set(nb.version);
                        for (cell, changes) in unsaved {
                            if cell.changes.get_value() == changes {
                                cell.stored_at.set(Some(nb.version));
                            }
                        }
                    }
                    self.saved_edits.set(upto);
                    self.conflict.set(None);
                    self.save_error.set(None);
                    // Edits made while this save was on its way go out now.
                    if self.edits.get_untracked() != upto {
                        self.save(None);
                    }
                }
                409 => self.conflict.set(Some(error_message(status, &text))),
                _ => self.save_error.set(Some(error_message(status, &text))),
            }
        });
    }

    /// Saves over whatever was saved since: reads the current version first.
    fn overwrite(self) {
        let url = format!("/api/v1/notebooks/{}", self.id.get_value());
        request("GET", &url, Body::None, move |status, text| match serde_json::from_str::<Notebook>(&text) {
            Ok(nb) if status == 200 => self.save(Some(nb.version)),
            _ => self.save_error.set(Some(error_message(status, &text))),
        });
    }

    fn kernel_id(self) -> Option<String> {
        self.kernel.get_untracked().filter(|k| k.state != "stopped").map(|k| k.id)
    }

    fn refresh_kernel(self) {
        let id = self.id.get_value();
        leptos::task::spawn_local(async move {
            if let Ok(k) = kernel_state(id).await {
                // With no cell of this page running, the server's state is the truth
                // (an interrupted or restarted kernel's last message may say busy).
                if !self.cells.get_untracked().iter().any(|c| c.running.get_untracked()) {
                    self.activity.set(String::new());
                }
                self.kernel.set(k);
            }
        });
    }

    fn kernel_call(self, what: &'static str) {
        let Some(kernel) = self.kernel_id() else { return };
        let (method, url) = match what {
            "shutdown" => ("DELETE", format!("/api/v1/kernels/{kernel}")),
            _ => ("POST", format!("/api/v1/kernels/{kernel}/{what}")),
        };
        if what == "restart" {
            self.notice.set(Some("Restarting the kernel…".into()));
        }
        request(method, &url, Body::None, move |status, text| {
            if (200..300).contains(&status) {
                self.notice.set(match what {
                    "restart" => Some("Kernel restarted: variables are gone, execution counts start over.".into()),
                    "interrupt" => Some("Interrupt sent.".into()),
                    _ => None,
                });
            } else {
                self.notice.set(Some(error_message(status, &text)));
            }
            self.refresh_kernel();
        });
    }

    /// Runs cell `i` (Markdown is rendered instead).
    fn run(self, i: usize) {
        self.run_in_order(vec![i]);
    }

    /// Runs cells one after another, as Jupyter does: each waits for the one before,
    /// and an error stops the rest (they are left unrun).
    fn run_in_order(self, indices: Vec<usize>) {
        let all = self.cells.get_untracked();
        let queue: Vec<Cell> = indices.into_iter().filter_map(|i| all.get(i).copied()).collect();
        if queue.iter().any(|c| c.kind.get_untracked() == "code") && self.kernel_id().is_none() {
            self.notice.set(Some("Start a kernel first (Kernel, above).".into()));
            return;
        }
        // Queued cells show [*] until their turn, as in Jupyter.
        for c in &queue {
            if c.kind.get_untracked() == "code" && self.can_run {
                c.running.set(true);
            }
        }
        self.run_next(queue.into());
    }

    fn run_next(self, mut queue: std::collections::VecDeque<Cell>) {
        let Some(cell) = queue.pop_front() else { return };
        self.run_cell(
            cell,
            Box::new(move |ok| {
                if ok {
                    self.run_next(queue);
                } else {
                    for c in queue {
                        c.running.set(false);
                    }
                }
            }),
        );
    }

    /// Runs one cell and calls `then` with whether it succeeded.
    fn run_cell(self, cell: Cell, then: Box<dyn FnOnce(bool)>) {
        if cell.kind.get_untracked() == "markdown" {
            let source = cell.source.get_untracked();
            leptos::task::spawn_local(async move {
                if let Ok(html) = render_markdown(source).await {
                    cell.html.set(html);
                }
                then(true);
            });
            return;
        }
        let Some(kernel) = self.kernel_id().filter(|_| cell.kind.get_untracked() == "code" && self.can_run) else {
            cell.running.set(false);
            return then(cell.kind.get_untracked() != "code");
        };
        cell.set_outputs(Vec::new());
        cell.running.set(true);
        let seen = Rc::new(RefCell::new(0usize));
        let clear_pending = Rc::new(RefCell::new(false));
        let ok = Rc::new(std::cell::Cell::new(true));
        let (cp, ok_seen) = (clear_pending.clone(), ok.clone());
        let on_chunk = move |text: &str| {
            let mut from = seen.borrow_mut();
            // Whole events only: they end with a blank line.
            while let Some(end) = text[*from..].find("\n\n") {
                let event = &text[*from..*from + end];
                *from += end + 2;
                for line in event.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Ok(message) = serde_json::from_str::<KernelMessage>(data.trim_start()) {
                            let failed = matches!(
                                message.msg_type.as_str(),
                                "error" | "kernel_dead" | "kernel_lost" | "relay_error"
                            ) || (message.msg_type == "execute_reply"
                                && message.content["status"] != "ok");
                            if failed {
                                ok_seen.set(false);
                            }
                            self.apply(cell, &message, &cp);
                        }
                    }
                }
            }
        };
        let body = json!({"code": cell.source.get_untracked()}).to_string();
        let url = format!("/api/v1/kernels/{kernel}/execute");
        send("POST", &url, Body::Json(body), Some(Box::new(on_chunk)), move |status, text| {
            cell.running.set(false);
            if status != 200 {
                let message = error_message(status, &text);
                cell.update_outputs(|o| {
                    o.push(json!({"output_type": "error", "ename": "Not run", "evalue": message, "traceback": []}))
                });
                self.refresh_kernel();
                ok.set(false);
            }
            self.changed();
            then(ok.get());
        });
    }

    fn apply(self, cell: Cell, message: &KernelMessage, clear_pending: &Rc<RefCell<bool>>) {
        let c = &message.content;
        let push = |output: Value| {
            if std::mem::take(&mut *clear_pending.borrow_mut()) {
                cell.set_outputs(Vec::new());
            }
            cell.update_outputs(|outs| {
                // Consecutive stream text of one name is one output, as in Jupyter.
                if output["output_type"] == "stream" {
                    if let Some(last) = outs.last_mut() {
                        if last["output_type"] == "stream" && last["name"] == output["name"] {
                            let joined = format!(
                                "{}{}",
                                last["text"].as_str().unwrap_or_default(),
                                output["text"].as_str().unwrap_or_default()
                            );
                            last["text"] = Value::String(joined);
                            return;
                        }
                    }
                }
                outs.push(output);
            });
        };
        match message.msg_type.as_str() {
            "status" => {
                if let Some(state) = c["execution_state"].as_str() {
                    self.activity.set(state.to_string());
                }
            }
            "execute_input" => cell.count.set(c["execution_count"].as_i64()),
            "stream" => push(json!({"output_type": "stream", "name": c["name"], "text": c["text"]})),
            "display_data" => push(
                json!({"output_type": "display_data", "data": c["data"], "metadata": c.get("metadata").cloned().unwrap_or(json!({}))}),
            ),
            "execute_result" => push(
                json!({"output_type": "execute_result", "execution_count": c["execution_count"], "data": c["data"], "metadata": c.get("metadata").cloned().unwrap_or(json!({}))}),
            ),
            "error" => push(
                json!({"output_type": "error", "ename": c["ename"], "evalue": c["evalue"], "traceback": c["traceback"]}),
            ),
            "clear_output" => {
                if c["wait"].as_bool() == Some(true) {
                    *clear_pending.borrow_mut() = true;
                } else {
                    cell.set_outputs(Vec::new());
                }
            }
            "execute_reply" => {
                if let Some(n) = c["execution_count"].as_i64() {
                    cell.count.set(Some(n));
                }
            }
            "kernel_dead" | "kernel_lost" | "relay_error" => {
                let why = c["message"].as_str().unwrap_or_default().to_string();
                let ename = if message.msg_type == "relay_error" { "Output lost" } else { "Kernel died" };
                push(json!({"output_type": "error", "ename": ename, "evalue": why, "traceback": []}));
                self.refresh_kernel();
            }
            _ => {}
        }
    }

    fn insert(self, at: usize, kind: &str) {
        let cell = Cell::new(kind);
        self.cells.update(|c| c.insert(at.min(c.len()), cell));
        self.selected.set(at);
        self.changed();
    }
}

#[component]
fn Editor(data: EditorData) -> impl IntoView {
    let EditorData { notebook, can_edit, can_run, can_share, markdown, kernel, nodes } = data;
    let markdown: std::collections::HashMap<String, String> = markdown.into_iter().collect();
    let cells: Vec<Cell> = notebook.content["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let html = markdown.get(c["id"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
            Cell::from_json(c, html, Some(notebook.version))
        })
        .collect();
    let ed = Ed {
        id: StoredValue::new(notebook.id.clone()),
        cells: RwSignal::new(cells),
        selected: RwSignal::new(0),
        mode: RwSignal::new(Mode::Command),
        version: RwSignal::new(notebook.version),
        metadata: StoredValue::new(notebook.content["metadata"].clone()),
        edits: RwSignal::new(0),
        saved_edits: RwSignal::new(0),
        saving: RwSignal::new(false),
        conflict: RwSignal::new(None),
        save_error: RwSignal::new(None),
        kernel: RwSignal::new(kernel),
        activity: RwSignal::new(String::new()),
        notice: RwSignal::new(None),
        can_edit,
        can_run,
    };
    // Autosave a second after the last edit (and while the conflict is unresolved, not
    // at all: the user chooses).
    Effect::new(move |_| {
        let n = ed.edits.get();
        if n == 0 {
            return;
        }
        set_timeout(
            move || {
                if ed.edits.get_untracked() == n && ed.conflict.get_untracked().is_none() {
                    ed.save(None);
                }
            },
            std::time::Duration::from_millis(1000),
        );
    });
    // The kernel's state, while the page is open.
    Effect::new(move |_| {
        let handle = set_interval_with_handle(move || ed.refresh_kernel(), std::time::Duration::from_secs(2));
        on_cleanup(move || {
            if let Ok(h) = handle {
                h.clear();
            }
        });
    });
    // Keys work at once, without a click into the notebook first.
    Effect::new(move |_| request_animation_frame(focus_notebook));
    // Leaving with edits not yet saved asks first (the autosave waits a second).
    let unload = window_event_listener(leptos::ev::beforeunload, move |ev| {
        if ed.edits.get_untracked() != ed.saved_edits.get_untracked() {
            ev.prevent_default();
            ev.set_return_value("unsaved changes");
        }
    });
    on_cleanup(move || unload.remove());
    // Output frames say how tall their documents are; those that loaded before this
    // listened are asked again.
    let frames = window_event_listener(leptos::ev::message, |ev| size_output_frame(&ev));
    on_cleanup(move || frames.remove());
    Effect::new(move |_| ask_output_heights());
    let last_key = StoredValue::new(String::new());
    let on_key = move |ev: leptos::ev::KeyboardEvent| command_key(ed, &ev, last_key);
    let save_state = move || {
        if !ed.can_edit {
            "Read-only"
        } else if ed.conflict.get().is_some() {
            "Not saved"
        } else if ed.saving.get() {
            "Saving…"
        } else if ed.edits.get() != ed.saved_edits.get() {
            "Unsaved changes"
        } else {
            "All changes saved"
        }
    };
    let title = notebook.name.clone();
    let nb_id = notebook.id.clone();
    view! {
        <div class="notebook-head">
            <h1 data-testid="notebook-name">{title}</h1>
            <span class="muted">{format!("owner {} · your role: {}", notebook.owner, notebook.role)}</span>
            <span class="save-state" data-testid="save-state">{save_state}</span>
        </div>
        {move || ed.conflict.get().map(|message| view! {
            <div class="error conflict" role="alert" data-testid="conflict">
                <p>{message}</p>
                <button on:click=move |_| { let _ = window().location().reload(); }>"Reload (discard my changes)"</button>
                " "
                <button class="danger" on:click=move |_| ed.overwrite()>"Overwrite with my version"</button>
            </div>
        })}
        {move || ed.save_error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        <KernelBar ed nodes/>
        <Toolbar ed nb_id/>
        {move || ed.notice.get().map(|m| view! { <p class="notice" data-testid="notice">{m}</p> })}
        <div class="notebook" tabindex="0" data-testid="notebook" data-mode=move || format!("{:?}", ed.mode.get()).to_lowercase() on:keydown=on_key>
            <For each=move || ed.cells.get() key=|c| c.id.get_value() let:cell>
                <CellView ed cell/>
            </For>
        </div>
        <Show when=move || can_edit>
            <p>
                <button class="secondary" on:click=move |_| ed.insert(ed.cells.get_untracked().len(), "code")>"+ Code"</button>
                " "
                <button class="secondary" on:click=move |_| ed.insert(ed.cells.get_untracked().len(), "markdown")>"+ Markdown"</button>
            </p>
        </Show>
        <p class="muted small" class:hidden=!can_edit>"Keys: Shift+Enter run and advance · Ctrl+Enter run · Esc leave the cell · Enter edit · A/B insert above/below · D,D delete · M/Y Markdown/code · ↑/↓ or K/J move · I,I interrupt."</p>
        <Revisions id=notebook.id.clone() can_edit/>
        <Show when=move || can_share><Sharing id=notebook.id.clone()/></Show>
    }
    .into_any()
}

/// Command-mode keys, as in Jupyter.
fn command_key(ed: Ed, ev: &leptos::ev::KeyboardEvent, last_key: StoredValue<String>) {
    use leptos::wasm_bindgen::JsCast;
    let key = ev.key();
    // A cell's own controls (type select, buttons, inputs) keep their keys.
    let target = ev.target().and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok()).map(|e| e.tag_name());
    if matches!(target.as_deref(), Some("INPUT" | "SELECT" | "BUTTON" | "A")) {
        return;
    }
    let n = ed.cells.get_untracked().len();
    let i = ed.selected.get_untracked().min(n.saturating_sub(1));
    if key == "Enter" && (ev.shift_key() || ev.ctrl_key()) {
        ev.prevent_default();
        ed.run(i);
        if ev.shift_key() {
            if i + 1 >= n && ed.can_edit {
                ed.insert(n, "code");
            } else {
                ed.selected.set((i + 1).min(n.saturating_sub(1)));
            }
            if ed.mode.get_untracked() == Mode::Edit {
                focus_cell(ed, ed.selected.get_untracked());
            }
        }
        return;
    }
    if key == "Escape" {
        ed.mode.set(Mode::Command);
        focus_notebook();
        return;
    }
    if ed.mode.get_untracked() == Mode::Edit {
        return;
    }
    let previous = last_key.get_value();
    last_key.set_value(key.clone());
    match key.as_str() {
        "Enter" if ed.can_edit => {
            ev.prevent_default();
            ed.mode.set(Mode::Edit);
            focus_cell(ed, i);
        }
        "ArrowUp" | "k" => {
            ev.prevent_default();
            ed.selected.set(i.saturating_sub(1));
        }
        "ArrowDown" | "j" => {
            ev.prevent_default();
            ed.selected.set((i + 1).min(n.saturating_sub(1)));
        }
        "a" if ed.can_edit => ed.insert(i, "code"),
        "b" if ed.can_edit => ed.insert(i + 1, "code"),
        "m" if ed.can_edit => set_kind(ed, i, "markdown"),
        "y" if ed.can_edit => set_kind(ed, i, "code"),
        "d" if ed.can_edit && previous == "d" => {
            last_key.set_value(String::new());
            delete_cell(ed, i);
        }
        "i" if previous == "i" => {
            last_key.set_value(String::new());
            ed.kernel_call("interrupt");
        }
        _ => {}
    }
}

fn set_kind(ed: Ed, i: usize, kind: &str) {
    if let Some(cell) = ed.cells.get_untracked().get(i) {
        cell.kind.set(kind.to_string());
        if kind != "code" {
            cell.set_outputs(Vec::new());
            cell.count.set(None);
        }
        ed.changed();
    }
}

fn delete_cell(ed: Ed, i: usize) {
    ed.cells.update(|c| {
        if i < c.len() {
            c.remove(i);
        }
    });
    let n = ed.cells.get_untracked().len();
    ed.selected.set(i.min(n.saturating_sub(1)));
    ed.changed();
}

fn move_cell(ed: Ed, i: usize, up: bool) {
    ed.cells.update(|c| {
        let j = if up { i.checked_sub(1) } else { Some(i + 1).filter(|j| *j < c.len()) };
        if let Some(j) = j {
            c.swap(i, j);
            ed.selected.set(j);
        }
    });
    ed.changed();
}

fn focus_cell(ed: Ed, i: usize) {
    use leptos::wasm_bindgen::JsCast;
    let Some(cell) = ed.cells.get_untracked().get(i).copied() else { return };
    let id = format!("cell-input-{}", cell.id.get_value());
    // After the view has switched to the editor.
    request_animation_frame(move || {
        if let Some(el) =
            document().get_element_by_id(&id).and_then(|e| e.dyn_into::<leptos::web_sys::HtmlElement>().ok())
        {
            let _ = el.focus();
        }
    });
}

fn focus_notebook() {
    use leptos::wasm_bindgen::JsCast;
    if let Some(el) = document()
        .query_selector("[data-testid=notebook]")
        .ok()
        .flatten()
        .and_then(|e| e.dyn_into::<leptos::web_sys::HtmlElement>().ok())
    {
        let _ = el.focus();
    }
}

#[component]
fn KernelBar(ed: Ed, nodes: Vec<(String, usize)>) -> impl IntoView {
    let node = RwSignal::new(String::new());
    let gpus = RwSignal::new(String::from("0"));
    let start = move |_| {
        let gpus: u32 = gpus.get_untracked().trim().parse().unwrap_or(0);
        let chosen = node.get_untracked();
        let body =
            json!({"node": if chosen.is_empty() { Value::Null } else { json!(chosen) }, "gpus": gpus}).to_string();
        let url = format!("/api/v1/notebooks/{}/kernel", ed.id.get_value());
        ed.notice.set(None);
        request("POST", &url, Body::Json(body), move |status, text| match serde_json::from_str::<Kernel>(&text) {
            Ok(k) if status == 201 => ed.kernel.set(Some(k)),
            _ => ed.notice.set(Some(error_message(status, &text))),
        });
    };
    let state = move || {
        let k = ed.kernel.get();
        match k {
            None => "no kernel".to_string(),
            Some(k) if k.state == "idle" || k.state == "busy" => {
                let live = ed.activity.get();
                if live.is_empty() {
                    k.state
                } else {
                    live
                }
            }
            Some(k) => k.state,
        }
    };
    let live = move || ed.kernel.get().is_some_and(|k| k.state != "stopped");
    let detail = move || {
        ed.kernel.get().map(|k| {
            let gpus = if k.gpus.is_empty() { String::new() } else { format!(", GPUs {:?}", k.gpus) };
            format!(
                "on {}{gpus}{}",
                k.node,
                if k.message.is_empty() { String::new() } else { format!(" — {}", k.message) }
            )
        })
    };
    view! {
        <div class="kernel-bar card">
            <strong>"Kernel: "</strong>
            <span class=move || format!("kernel-state state-{}", state()) data-testid="kernel-state">{state}</span>
            " "
            <span class="muted" data-testid="kernel-detail">{detail}</span>
            <Show when=move || ed.can_run && !live()>
                <label for="kernel-node">" Node "</label>
                <select id="kernel-node" on:change=move |e| node.set(event_target_value(&e))>
                    <option value="">"any node with room"</option>
                    {nodes.iter().map(|(name, g)| view! { <option value=name.clone()>{format!("{name} ({g} GPUs)")}</option> }).collect_view()}
                </select>
                <label for="kernel-gpus">" GPUs "</label>
                <input id="kernel-gpus" type="number" min="0" size="3" prop:value=gpus on:input=move |e| gpus.set(event_target_value(&e))/>
                " "
                <button on:click=start data-testid="start-kernel">"Start kernel"</button>
            </Show>
            <Show when=live>
                " "
                <Show when=move || ed.kernel.get().is_some_and(|k| k.state == "idle" || k.state == "busy")>
                    <button class="secondary" on:click=move |_| ed.kernel_call("interrupt")>"Interrupt"</button>
                </Show>
                " "
                <button class="secondary" on:click=move |_| ed.kernel_call("restart")>"Restart"</button>
                " "
                <button class="secondary" on:click=move |_| ed.kernel_call("shutdown")>"Shut down"</button>
            </Show>
        </div>
    }
    .into_any()
}

#[component]
fn Toolbar(ed: Ed, nb_id: String) -> impl IntoView {
    let run_range = move |from: usize, to: usize| ed.run_in_order((from..to).collect());
    let clear = move |_| {
        for c in ed.cells.get_untracked() {
            c.set_outputs(Vec::new());
            c.count.set(None);
        }
        ed.changed();
    };
    view! {
        <div class="toolbar">
            <Show when=move || ed.can_run>
                <button on:click=move |_| run_range(0, ed.cells.get_untracked().len()) data-testid="run-all">"Run all"</button>
                <button class="secondary" on:click=move |_| run_range(0, ed.selected.get_untracked())>"Run above"</button>
                <button class="secondary" on:click=move |_| run_range(ed.selected.get_untracked(), ed.cells.get_untracked().len())>"Run below"</button>
            </Show>
            <Show when=move || ed.can_edit>
                <button class="secondary" on:click=clear>"Clear outputs"</button>
                <button class="secondary" on:click=move |_| ed.save(None)>"Save now"</button>
            </Show>
            <a class="button secondary" href=format!("/api/v1/notebooks/{nb_id}/export?format=ipynb") download="" data-testid="export-ipynb">"Download .ipynb"</a>
            <a class="button secondary" href=format!("/api/v1/notebooks/{nb_id}/export?format=py") download="">"Download .py"</a>
        </div>
    }
    .into_any()
}

#[component]
fn CellView(ed: Ed, cell: Cell) -> impl IntoView {
    let index = move || ed.cells.get().iter().position(|c| c.id.get_value() == cell.id.get_value()).unwrap_or(0);
    let selected = move || ed.selected.get() == index();
    let editing = move || selected() && ed.mode.get() == Mode::Edit;
    let input_id = format!("cell-input-{}", cell.id.get_value());
    let rows = move || cell.source.get().lines().count().max(1) + 1;
    let prompt = move || match (cell.kind.get().as_str(), cell.running.get(), cell.count.get()) {
        ("code", true, _) => "[*]:".to_string(),
        ("code", false, Some(n)) => format!("[{n}]:"),
        ("code", false, None) => "[ ]:".to_string(),
        _ => String::new(),
    };
    let show_markdown = move || cell.kind.get() == "markdown" && !editing() && !cell.html.get().is_empty();
    view! {
        <div class="cell" class:selected=selected class:running=move || cell.running.get()
            data-testid="cell" data-kind=move || cell.kind.get()
            on:click=move |_| ed.selected.set(index())>
            <div class="prompt">{prompt}</div>
            <div class="cell-body">
                <Show when=move || selected() && ed.can_edit>
                    <div class="cell-tools">
                        <Show when=move || ed.can_run>
                            <button class="icon" title="Run (Shift+Enter)" on:click=move |_| ed.run(index()) data-testid="run-cell">"▶"</button>
                        </Show>
                        <button class="icon" title="Move up" on:click=move |_| move_cell(ed, index(), true)>"↑"</button>
                        <button class="icon" title="Move down" on:click=move |_| move_cell(ed, index(), false)>"↓"</button>
                        <select aria-label="Cell type" prop:value=move || cell.kind.get() on:change=move |e| set_kind(ed, index(), &event_target_value(&e))>
                            <option value="code">"Code"</option>
                            <option value="markdown">"Markdown"</option>
                            <option value="raw">"Raw"</option>
                        </select>
                        <button class="icon danger" title="Delete (D,D)" on:click=move |_| delete_cell(ed, index())>"✕"</button>
                    </div>
                </Show>
                <Show when=show_markdown fallback=move || view! {
                    <textarea id=input_id.clone() class="source" spellcheck="false" rows=rows readonly=!ed.can_edit
                        prop:value=move || cell.source.get()
                        on:focus=move |_| { ed.selected.set(index()); ed.mode.set(Mode::Edit); }
                        on:blur=move |_| ed.mode.set(Mode::Command)
                        on:input=move |e| { cell.source.set(event_target_value(&e)); ed.changed(); }></textarea>
                }>
                    <div class="markdown" inner_html=move || cell.html.get() on:dblclick=move |_| { ed.mode.set(Mode::Edit); focus_cell(ed, index()); }></div>
                </Show>
                <div class="outputs" data-testid="outputs">
                    {move || {
                        let stored_at = cell.stored_at.get();
                        let (notebook, cell_id) = (ed.id.get_value(), cell.id.get_value());
                        cell.outputs
                            .get()
                            .into_iter()
                            .enumerate()
                            .map(|(index, output)| {
                                let at = OutputAt { notebook: notebook.clone(), cell: cell_id.clone(), index, stored_at };
                                output_view(output, at)
                            })
                            .collect_view()
                    }}
                </div>
            </div>
        </div>
    }
    .into_any()
}

/// Where an output is shown from: its notebook, cell and position, and the version
/// whose saved content holds it (`None` while it is not saved).
struct OutputAt {
    notebook: String,
    cell: String,
    index: usize,
    stored_at: Option<i64>,
}

/// One output. Outputs are as the kernel gave them: text is shown as text, PNG and JPEG
/// as images, and whatever can carry script (HTML, JavaScript, SVG) only in a sandboxed
/// frame ([`framed`]).
fn output_view(output: Value, at: OutputAt) -> AnyView {
    match output["output_type"].as_str().unwrap_or_default() {
        "stream" => {
            let class = format!("output stream {}", output["name"].as_str().unwrap_or("stdout"));
            view! { <pre class=class>{ansi(output["text"].as_str().unwrap_or_default())}</pre> }.into_any()
        }
        "display_data" | "execute_result" => rich(&output["data"], at),
        "error" => {
            let tb: Vec<&str> =
                output["traceback"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let text = if tb.is_empty() {
                format!(
                    "{}: {}",
                    output["ename"].as_str().unwrap_or_default(),
                    output["evalue"].as_str().unwrap_or_default()
                )
            } else {
                tb.join("\n")
            };
            view! { <pre class="output error">{ansi(&text)}</pre> }.into_any()
        }
        other => {
            let raw = serde_json::to_string_pretty(&output).unwrap_or_default();
            view! { <pre class="output raw" title=format!("output type {other:?}, shown as it is")>{raw}</pre> }
                .into_any()
        }
    }
}

fn rich(data: &Value, at: OutputAt) -> AnyView {
    use atelier_protocol::notebooks::{is_framed, shown_mime};
    let text = |mime: &str| data.get(mime).and_then(Value::as_str).map(str::to_string);
    match shown_mime(data) {
        Some(mime) if is_framed(mime) => framed(mime, text("text/plain"), at),
        Some(mime @ ("image/png" | "image/jpeg")) => {
            let src = format!("data:{mime};base64,{}", text(mime).unwrap_or_default().trim());
            view! { <img class="output image" alt="image output" src=src/> }.into_any()
        }
        _ => {
            let plain = text("text/plain").unwrap_or_default();
            view! { <pre class="output result">{ansi(&plain)}</pre> }.into_any()
        }
    }
}

/// A rich output that can carry script, in `<iframe sandbox="allow-scripts">`: its
/// scripts run, in an opaque origin, and reach neither this page nor the studio's
/// cookies and API. The frame's document comes from the server
/// (`GET /api/v1/notebooks/{id}/outputs/{cell}/{index}`, with a `sandbox`
/// Content-Security-Policy of its own); a `srcdoc` frame would not do, as it inherits
/// this page's policy, under which the output's inline scripts do not run.
///
/// The server serves the notebook as saved. An output that arrives while its cell runs
/// is not saved yet: it shows its plain text with a note until the editor's autosave
/// (a second after the cell ends) has stored it, then its frame (`stored_at` names the
/// version that holds it, and is in the frame's address so that outputs saved anew
/// load anew). A user who may run cells but not save shows plain text only.
///
/// The document posts its height (`{atelierOutputHeight: N}`), and the editor sizes the
/// frame to it ([`size_output_frame`]), up to [`MAX_FRAME_HEIGHT`]; beyond, the frame
/// scrolls. Frames load lazily, so a notebook with many outputs stays fast.
fn framed(mime: &str, plain: Option<String>, at: OutputAt) -> AnyView {
    let what = match mime {
        "application/javascript" => "JavaScript",
        "image/svg+xml" => "SVG",
        _ => "HTML",
    };
    match at.stored_at {
        Some(version) => {
            let src = format!("/api/v1/notebooks/{}/outputs/{}/{}?v={version}", at.notebook, at.cell, at.index);
            // `loading` is not among the iframe attributes the view macro knows.
            use leptos::tachys::html::attribute::custom::CustomAttribute;
            view! {
                <iframe class="output output-frame" referrerpolicy="no-referrer"
                    title=format!("{what} output") src=src sandbox="allow-scripts"></iframe>
            }
            .attr("loading", "lazy")
            .into_any()
        }
        None => view! {
            <div class="output pending">
                {plain.map(|p| view! { <pre class="output result">{ansi(&p)}</pre> })}
                <p class="muted small">{format!("{what} output: shown once the notebook is saved.")}</p>
            </div>
        }
        .into_any(),
    }
}

/// The tallest an output frame grows to fit its document; a taller document scrolls
/// in it.
const MAX_FRAME_HEIGHT: f64 = 1200.0;

/// Asks every output frame on the page for its document's height again (answered
/// through [`size_output_frame`]): a frame that loaded before the page was hydrated
/// told no one.
fn ask_output_heights() {
    use leptos::wasm_bindgen::JsCast;
    let frames = document().get_elements_by_class_name("output-frame");
    for i in 0..frames.length() {
        let window = frames
            .item(i)
            .and_then(|e| e.dyn_into::<leptos::web_sys::HtmlIFrameElement>().ok())
            .and_then(|f| f.content_window());
        if let Some(window) = window {
            let _ = window.post_message(&"atelierOutputHeight?".into(), "*");
        }
    }
}

/// Sizes an output frame to the height its document says (see [`framed`]). Only a
/// message from one of the page's output frames counts: its sender must be that
/// frame's window.
fn size_output_frame(ev: &leptos::web_sys::MessageEvent) {
    use leptos::wasm_bindgen::JsCast;
    use leptos::web_sys::js_sys::{Object, Reflect};
    let Some(height) = Reflect::get(&ev.data(), &"atelierOutputHeight".into()).ok().and_then(|h| h.as_f64()) else {
        return;
    };
    let Some(source) = ev.source() else { return };
    if !height.is_finite() {
        return;
    }
    let frames = document().get_elements_by_class_name("output-frame");
    for i in 0..frames.length() {
        let Some(frame) = frames.item(i).and_then(|e| e.dyn_into::<leptos::web_sys::HtmlIFrameElement>().ok()) else {
            continue;
        };
        if frame.content_window().is_some_and(|w| Object::is(&w, &source)) {
            let px = height.clamp(16.0, MAX_FRAME_HEIGHT).ceil();
            let _ = frame.set_attribute("style", &format!("height: {px}px"));
            return;
        }
    }
}

/// Text with ANSI colour codes (IPython's tracebacks) as coloured spans.
fn ansi(text: &str) -> Vec<AnyView> {
    ansi_segments(text)
        .into_iter()
        .map(|(class, s)| match class {
            Some(c) => view! { <span class=c>{s}</span> }.into_any(),
            None => s.into_any(),
        })
        .collect()
}

/// Splits text at ANSI SGR sequences: each piece with its colour class.
pub fn ansi_segments(text: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut class: Option<String> = None;
    let mut rest = text;
    while let Some(start) = rest.find("\x1b[") {
        if start > 0 {
            out.push((class.clone(), rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find(|c: char| c.is_ascii_alphabetic()) else {
            rest = "";
            break;
        };
        if &after[end..end + 1] == "m" {
            for code in after[..end].split(';') {
                match code.parse::<u32>().unwrap_or(0) {
                    0 | 39 => class = None,
                    n @ (30..=37 | 90..=97) => class = Some(format!("ansi-{}", n)),
                    _ => {}
                }
            }
        }
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push((class, rest.to_string()));
    }
    out
}

#[component]
fn Revisions(id: String, can_edit: bool) -> impl IntoView {
    let checkpoint = ServerAction::<CreateCheckpoint>::new();
    let restore = ServerAction::<RestoreRevision>::new();
    let idc = id.clone();
    let list = Resource::new(move || checkpoint.version().get(), move |_| list_revisions(idc.clone()));
    let viewing = RwSignal::new(None::<(String, Vec<(String, String)>)>);
    // A restore replaced the content: load it.
    Effect::new(move |_| {
        if matches!(restore.value().get(), Some(Ok(()))) {
            let _ = window().location().reload();
        }
    });
    let error = Signal::derive(move || {
        checkpoint.value().get().and_then(Result::err).or_else(|| restore.value().get().and_then(Result::err))
    });
    let nb = StoredValue::new(id.clone());
    view! {
        <section class="card" data-testid="revisions">
            <h2>"Revisions"</h2>
            <AnyError error/>
            <Show when=move || can_edit>
                <ActionForm action=checkpoint attr:class="inline">
                    <input type="hidden" name="id" value=nb.get_value()/>
                    <input name="name" aria-label="Checkpoint name" placeholder="Checkpoint name" required=true/>
                    <button type="submit">"Save checkpoint"</button>
                </ActionForm>
            </Show>
            <Transition fallback=|| ()>
                {move || {
                    Suspend::new(async move {
                        let revisions = list.await.unwrap_or_default();
                        if revisions.is_empty() {
                            return view! { <p class="muted">"No revisions yet: snapshots are taken as you save, at most every five minutes."</p> }.into_any();
                        }
                        view! {
                            <table class="table">
                                <thead><tr><th>"When"</th><th>"Kind"</th><th>"Name"</th><th>"Version"</th><th>"By"</th><th></th></tr></thead>
                                <tbody>
                                    {revisions.into_iter().map(|r| {
                                        let rid = StoredValue::new(r.id.clone());
                                        let label = format!("{} ({})", r.name, format_time(r.created_at));
                                        let show = move |_| {
                                            let label = label.clone();
                                            leptos::task::spawn_local(async move {
                                                if let Ok(cells) = revision_text(nb.get_value(), rid.get_value()).await {
                                                    viewing.set(Some((label, cells)));
                                                }
                                            });
                                        };
                                        view! {
                                            <tr data-revision=r.name.clone()>
                                                <td>{format_time(r.created_at)}</td>
                                                <td>{r.kind.clone()}</td>
                                                <td>{r.name.clone()}</td>
                                                <td>{r.version}</td>
                                                <td>{r.created_by.clone()}</td>
                                                <td>
                                                    <button class="secondary" on:click=show>"View"</button>
                                                    <Show when=move || can_edit>
                                                        <ActionForm action=restore attr:class="inline">
                                                            <input type="hidden" name="id" value=nb.get_value()/>
                                                            <input type="hidden" name="revision" value=rid.get_value()/>
                                                            <button type="submit" class="secondary">"Restore"</button>
                                                        </ActionForm>
                                                    </Show>
                                                </td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any()
                    })
                }}
            </Transition>
            {move || viewing.get().map(|(label, cells)| view! {
                <div class="revision-view" data-testid="revision-view">
                    <h3>{format!("Revision {label}")} " " <button class="secondary" on:click=move |_| viewing.set(None)>"Close"</button></h3>
                    {cells.into_iter().map(|(kind, source)| view! { <pre class=format!("revision-cell {kind}")>{source}</pre> }).collect_view()}
                </div>
            })}
        </section>
    }
    .into_any()
}

#[component]
fn Sharing(id: String) -> impl IntoView {
    let share = ServerAction::<ShareNotebook>::new();
    let unshare = ServerAction::<UnshareNotebook>::new();
    let idc = id.clone();
    let list =
        Resource::new(move || (share.version().get(), unshare.version().get()), move |_| list_shares(idc.clone()));
    let error = Signal::derive(move || {
        share.value().get().and_then(Result::err).or_else(|| unshare.value().get().and_then(Result::err))
    });
    let nb = StoredValue::new(id.clone());
    view! {
        <section class="card" data-testid="sharing">
            <h2>"Sharing"</h2>
            <Transition fallback=|| ()>
                {move || {
                    Suspend::new(async move {
                        let shares = list.await.unwrap_or_default();
                        if shares.is_empty() {
                            return view! { <p class="muted">"Only you can open this notebook (and whoever a policy allows)."</p> }.into_any();
                        }
                        view! {
                            <ul class="shares">
                                {shares.into_iter().map(|s| {
                                    let user = s.username.clone();
                                    view! {
                                    <li data-share=s.username.clone()>
                                        {format!("{} — {}", s.username, s.role)}
                                        <ActionForm action=unshare attr:class="inline">
                                            <input type="hidden" name="id" value=nb.get_value()/>
                                            <input type="hidden" name="username" value=user/>
                                            <button type="submit" class="secondary">"Remove"</button>
                                        </ActionForm>
                                    </li>
                                }}).collect_view()}
                            </ul>
                        }.into_any()
                    })
                }}
            </Transition>
            <ActionForm action=share attr:class="inline">
                <input type="hidden" name="id" value=nb.get_value()/>
                <input name="username" aria-label="Username" placeholder="username" required=true/>
                <select name="role" aria-label="Role">
                    <option value="reader">"reader"</option>
                    <option value="editor">"editor"</option>
                </select>
                <button type="submit">"Share"</button>
            </ActionForm>
            <AnyError error/>
        </section>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_codes_become_classes() {
        let segments = ansi_segments("\x1b[0;31mZeroDivisionError\x1b[0m: division by zero");
        assert_eq!(
            segments,
            vec![
                (Some("ansi-31".to_string()), "ZeroDivisionError".to_string()),
                (None, ": division by zero".to_string())
            ]
        );
        assert_eq!(ansi_segments("plain"), vec![(None, "plain".to_string())]);
    }
}
