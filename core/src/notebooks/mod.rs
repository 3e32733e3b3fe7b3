//! Notebooks: nbformat 4 documents owned by a user and shared with others as readers
//! or editors, saved with a version check (two editors never silently overwrite each
//! other), with automatic snapshots and named checkpoints to go back to.
//!
//! Every action is authorized on `atelier:notebooks:notebook/{id}` with the caller's
//! role on it as the `atelier:NotebookRole` condition key, so policies decide what an
//! owner, an editor or a reader may do (the built-in DataScientist policy: owners
//! everything, editors open, save and run, readers open).

pub mod ipynb;
pub mod kernels;

use atelier_protocol::notebooks::{NewNotebook, Notebook, NotebookSummary, Revision, SaveNotebook, Share};
use serde_json::Value;

use crate::authz::{authorize, Action, Principal, Resource};
use crate::db::Db;
use crate::{accounts, now, CoreError, CoreResult};

/// Automatic snapshots are taken on a save at most this often, and this many are kept.
const SNAPSHOT_EVERY_SECS: i64 = 300;
const SNAPSHOTS_KEPT: i64 = 50;

pub const ROLE_OWNER: &str = "owner";
pub const ROLE_EDITOR: &str = "editor";
pub const ROLE_READER: &str = "reader";

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Row {
    id: String,
    name: String,
    owner_id: String,
    owner: String,
    content: String,
    cells: i64,
    version: i64,
    updated_by: String,
    updated_at: i64,
    /// The caller's share, if any.
    shared_role: Option<String>,
}

/// A notebook's row; `{content}` is `n.content`, or `''` where only access is checked
/// (a notebook can be megabytes).
const ROW: &str = "SELECT n.id, n.name, n.owner_id, u.username AS owner, {content} AS content, n.cells, n.version, \
                   n.updated_by, n.updated_at, s.role AS shared_role FROM notebooks n \
                   JOIN users u ON u.id = n.owner_id \
                   LEFT JOIN notebook_shares s ON s.notebook_id = n.id AND s.user_id = $1";

fn row_query(content: bool) -> String {
    ROW.replace("{content}", if content { "n.content" } else { "''" })
}

impl Row {
    fn role(&self, p: &Principal) -> String {
        if self.owner_id == p.user.id {
            ROLE_OWNER.to_string()
        } else {
            self.shared_role.clone().unwrap_or_else(|| "none".to_string())
        }
    }
    fn resource(&self, p: &Principal) -> Resource {
        resource(&self.id).created_by(&self.owner).with_notebook_role(self.role(p))
    }
    fn notebook(self, p: &Principal) -> CoreResult<Notebook> {
        let role = self.role(p);
        Ok(Notebook {
            content: serde_json::from_str(&self.content).map_err(CoreError::internal)?,
            id: self.id,
            name: self.name,
            owner: self.owner,
            role,
            version: self.version,
            updated_by: self.updated_by,
            updated_at: self.updated_at,
        })
    }
}

/// The resource a notebook is authorized as.
pub fn resource(id: &str) -> Resource {
    Resource::new(format!("atelier:notebooks:notebook/{id}"))
}

async fn load(db: &Db, p: &Principal, id: &str, content: bool) -> CoreResult<Row> {
    sqlx::query_as(&format!("{} WHERE n.id = $2", row_query(content)))
        .bind(&p.user.id)
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(CoreError::NotFound("notebook"))
}

/// Loads a notebook (without its content) and checks that the caller may do `action`
/// on it.
pub(crate) async fn open(db: &Db, p: &Principal, id: &str, action: Action) -> CoreResult<Row> {
    let row = load(db, p, id, false).await?;
    authorize(p, action, &row.resource(p))?;
    Ok(row)
}

/// [`open`] with the content.
async fn open_full(db: &Db, p: &Principal, id: &str, action: Action) -> CoreResult<Row> {
    let row = load(db, p, id, true).await?;
    authorize(p, action, &row.resource(p))?;
    Ok(row)
}

fn validate_name(name: &str) -> CoreResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CoreError::invalid("name", "a notebook needs a name"));
    }
    if name.chars().count() > 200 {
        return Err(CoreError::invalid("name", "a notebook name is at most 200 characters"));
    }
    if name.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(CoreError::invalid("name", "a notebook name cannot contain slashes or control characters"));
    }
    Ok(name.to_string())
}

/// Serializes stored content, refusing what is over the size limit.
fn to_stored(content: &Value) -> CoreResult<String> {
    let text = serde_json::to_string(content).map_err(CoreError::internal)?;
    if text.len() > ipynb::MAX_NOTEBOOK_BYTES {
        return Err(CoreError::TooLarge(format!(
            "the notebook is {} bytes; the limit is {} bytes (clear large outputs first)",
            text.len(),
            ipynb::MAX_NOTEBOOK_BYTES
        )));
    }
    Ok(text)
}

/// The notebooks the caller may open: their own, those shared with them, and any
/// others their policies let them open.
pub async fn list(db: &Db, p: &Principal) -> CoreResult<Vec<NotebookSummary>> {
    authorize(p, Action::ListNotebooks, &resource("*"))?;
    let rows: Vec<Row> = sqlx::query_as(&format!("{} ORDER BY n.updated_at DESC, n.id", row_query(false)))
        .bind(&p.user.id)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter(|r| p.can(Action::GetNotebook, &r.resource(p)))
        .map(|r| NotebookSummary {
            role: r.role(p),
            id: r.id,
            name: r.name,
            owner: r.owner,
            version: r.version,
            cells: r.cells,
            updated_by: r.updated_by,
            updated_at: r.updated_at,
        })
        .collect())
}

/// Creates a notebook, empty or from nbformat 4 JSON (an import).
pub async fn create(db: &Db, p: &Principal, new: &NewNotebook) -> CoreResult<Notebook> {
    authorize(p, Action::CreateNotebook, &resource("*"))?;
    let name = validate_name(&new.name)?;
    let content = match &new.content {
        Some(c) => ipynb::normalize(c.clone())?,
        None => ipynb::empty(),
    };
    let id = insert(db, p, &name, &content).await?;
    p.note_change(format!("created notebook {name} ({id})"));
    get(db, p, &id).await
}

/// Imports an `.ipynb` file (checked for access before it is read).
pub async fn import(db: &Db, p: &Principal, name: &str, bytes: &[u8]) -> CoreResult<Notebook> {
    authorize(p, Action::CreateNotebook, &resource("*"))?;
    let content = ipynb::parse(bytes)?;
    create(db, p, &NewNotebook { name: name.to_string(), content: Some(content) }).await
}

async fn insert(db: &Db, p: &Principal, name: &str, content: &Value) -> CoreResult<String> {
    let stored = to_stored(content)?;
    let id = uuid::Uuid::now_v7().to_string();
    let t = now();
    sqlx::query(
        "INSERT INTO notebooks (id, name, owner_id, content, cells, version, updated_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7)",
    )
    .bind(&id)
    .bind(name)
    .bind(&p.user.id)
    .bind(&stored)
    .bind(ipynb::cell_count(content))
    .bind(&p.user.username)
    .bind(t)
    .execute(&db.pool)
    .await?;
    Ok(id)
}

/// A notebook with its content.
pub async fn get(db: &Db, p: &Principal, id: &str) -> CoreResult<Notebook> {
    open_full(db, p, id, Action::GetNotebook).await?.notebook(p)
}

/// One stored output of a code cell (`index` counts from 0), for whoever may open the
/// notebook: what `GET /api/v1/notebooks/{id}/outputs/{cell}/{index}` shows in a
/// sandboxed frame.
pub async fn output(db: &Db, p: &Principal, id: &str, cell_id: &str, index: usize) -> CoreResult<Value> {
    let mut notebook = get(db, p, id).await?;
    let cell = notebook.content["cells"]
        .as_array_mut()
        .and_then(|cells| cells.iter_mut().find(|c| c["id"] == cell_id))
        .ok_or(CoreError::NotFound("cell"))?;
    match cell.get_mut("outputs").and_then(Value::as_array_mut) {
        Some(outputs) if index < outputs.len() => Ok(outputs.swap_remove(index)),
        _ => Err(CoreError::NotFound("output")),
    }
}

/// The caller's role on a notebook they may open (for the editor: readers get a
/// read-only page).
pub async fn role(db: &Db, p: &Principal, id: &str) -> CoreResult<String> {
    Ok(open(db, p, id, Action::GetNotebook).await?.role(p))
}

/// Whether the caller may do each of `actions` on the notebook (to hide what they
/// cannot do), from one read of it.
pub async fn can<const N: usize>(db: &Db, p: &Principal, id: &str, actions: [Action; N]) -> CoreResult<[bool; N]> {
    let resource = load(db, p, id, false).await?.resource(p);
    Ok(actions.map(|action| p.can(action, &resource)))
}

/// Replaces the content if the notebook is still at `base_version` (a conditional
/// write: two editors never silently overwrite each other). False when it was not.
async fn write_content<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    executor: E,
    id: &str,
    base_version: i64,
    content: &serde_json::Value,
    stored: &str,
    who: &str,
    t: i64,
) -> CoreResult<bool> {
    let updated = sqlx::query(
        "UPDATE notebooks SET content = $1, cells = $2, version = version + 1, updated_by = $3, updated_at = $4 \
         WHERE id = $5 AND version = $6",
    )
    .bind(stored)
    .bind(ipynb::cell_count(content))
    .bind(who)
    .bind(t)
    .bind(id)
    .bind(base_version)
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Saves new content, if nobody saved since `base_version`.
pub async fn save(db: &Db, p: &Principal, id: &str, save: &SaveNotebook) -> CoreResult<Notebook> {
    let row = open(db, p, id, Action::UpdateNotebook).await?;
    let content = ipynb::normalize(save.content.clone())?;
    let stored = to_stored(&content)?;
    let t = now();
    if !write_content(&db.pool, id, save.base_version, &content, &stored, &p.user.username, t).await? {
        let now_row = load(db, p, id, false).await?;
        return Err(CoreError::Conflict(format!(
            "notebook \"{}\" changed while you were editing: version {} was saved by {} after the version {} you started from. \
             Your changes are not saved; reload to see theirs, or overwrite them.",
            row.name, now_row.version, now_row.updated_by, save.base_version
        )));
    }
    let version = save.base_version + 1;
    snapshot_if_due(db, id, version, &stored, &p.user.username, t).await?;
    p.note_change(format!("saved notebook {} (version {version})", row.name));
    get(db, p, id).await
}

/// Takes an automatic snapshot when the last one is older than [`SNAPSHOT_EVERY_SECS`].
async fn snapshot_if_due(db: &Db, id: &str, version: i64, stored: &str, by: &str, t: i64) -> CoreResult<()> {
    let last: Option<(i64,)> = sqlx::query_as(
        "SELECT created_at FROM notebook_revisions WHERE notebook_id = $1 AND kind = 'auto' \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    if last.is_some_and(|(at,)| t - at < SNAPSHOT_EVERY_SECS) {
        return Ok(());
    }
    add_revision(db, id, version, "auto", "autosave", stored, by, t).await?;
    // Only the newest automatic snapshots are kept; checkpoints stay until deleted
    // with the notebook.
    sqlx::query(
        "DELETE FROM notebook_revisions WHERE notebook_id = $1 AND kind = 'auto' AND id NOT IN \
         (SELECT id FROM notebook_revisions WHERE notebook_id = $1 AND kind = 'auto' ORDER BY created_at DESC, id DESC LIMIT $2)",
    )
    .bind(id)
    .bind(SNAPSHOTS_KEPT)
    .execute(&db.pool)
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn add_revision(
    db: &Db,
    id: &str,
    version: i64,
    kind: &str,
    name: &str,
    stored: &str,
    by: &str,
    t: i64,
) -> CoreResult<Revision> {
    let revision = Revision {
        id: uuid::Uuid::now_v7().to_string(),
        version,
        kind: kind.to_string(),
        name: name.to_string(),
        created_by: by.to_string(),
        created_at: t,
    };
    sqlx::query(
        "INSERT INTO notebook_revisions (id, notebook_id, version, kind, name, content, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&revision.id)
    .bind(id)
    .bind(version)
    .bind(kind)
    .bind(name)
    .bind(stored)
    .bind(by)
    .bind(t)
    .execute(&db.pool)
    .await?;
    Ok(revision)
}

/// Renames a notebook.
pub async fn rename(db: &Db, p: &Principal, id: &str, name: &str) -> CoreResult<Notebook> {
    let row = open(db, p, id, Action::UpdateNotebook).await?;
    let name = validate_name(name)?;
    sqlx::query("UPDATE notebooks SET name = $1 WHERE id = $2").bind(&name).bind(id).execute(&db.pool).await?;
    p.note_change(format!("renamed notebook {} to {name}", row.name));
    get(db, p, id).await
}

/// A copy of a notebook, owned by the caller.
pub async fn duplicate(db: &Db, p: &Principal, id: &str, name: &str) -> CoreResult<Notebook> {
    let source = open_full(db, p, id, Action::GetNotebook).await?;
    authorize(p, Action::CreateNotebook, &resource("*"))?;
    let name = validate_name(name)?;
    let content: Value = serde_json::from_str(&source.content).map_err(CoreError::internal)?;
    let new_id = insert(db, p, &name, &content).await?;
    p.note_change(format!("duplicated notebook {} as {name} ({new_id})", source.name));
    get(db, p, &new_id).await
}

/// Deletes a notebook with its revisions and shares; its kernels are shut down.
pub async fn delete(db: &Db, p: &Principal, id: &str) -> CoreResult<()> {
    let row = open(db, p, id, Action::DeleteNotebook).await?;
    kernels::stop_for_notebook(db, id, "the notebook was deleted").await?;
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM notebooks WHERE id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM notebook_revisions WHERE notebook_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM notebook_shares WHERE notebook_id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    p.note_change(format!("deleted notebook {}", row.name));
    Ok(())
}

/// Earlier contents, newest first.
pub async fn revisions(db: &Db, p: &Principal, id: &str) -> CoreResult<Vec<Revision>> {
    open(db, p, id, Action::GetNotebook).await?;
    type R = (String, i64, String, String, String, i64);
    let rows: Vec<R> = sqlx::query_as(
        "SELECT id, version, kind, name, created_by, created_at FROM notebook_revisions WHERE notebook_id = $1 \
         ORDER BY created_at DESC, id DESC",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, version, kind, name, created_by, created_at)| Revision {
            id,
            version,
            kind,
            name,
            created_by,
            created_at,
        })
        .collect())
}

/// A named checkpoint of the notebook as saved now.
pub async fn checkpoint(db: &Db, p: &Principal, id: &str, name: &str) -> CoreResult<Revision> {
    let row = open_full(db, p, id, Action::UpdateNotebook).await?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(CoreError::invalid("name", "a checkpoint needs a name of at most 200 characters"));
    }
    let revision = add_revision(db, id, row.version, "checkpoint", name, &row.content, &p.user.username, now()).await?;
    p.note_change(format!("checkpoint {name} of notebook {}", row.name));
    Ok(revision)
}

/// The content of an earlier revision.
pub async fn revision_content(db: &Db, p: &Principal, id: &str, revision: &str) -> CoreResult<Value> {
    open(db, p, id, Action::GetNotebook).await?;
    let row: (String,) = sqlx::query_as("SELECT content FROM notebook_revisions WHERE id = $1 AND notebook_id = $2")
        .bind(revision)
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(CoreError::NotFound("revision"))?;
    serde_json::from_str(&row.0).map_err(CoreError::internal)
}

/// Makes an earlier revision the notebook's content; what it replaces is kept as a
/// `before-restore` revision, so a restore can be undone.
pub async fn restore(db: &Db, p: &Principal, id: &str, revision: &str) -> CoreResult<Notebook> {
    let row = open_full(db, p, id, Action::UpdateNotebook).await?;
    let content = revision_content(db, p, id, revision).await?;
    let stored = to_stored(&content)?;
    let t = now();
    let mut tx = db.pool.begin().await?;
    if !write_content(&mut *tx, id, row.version, &content, &stored, &p.user.username, t).await? {
        return Err(CoreError::Conflict(format!("notebook {} changed during the restore; try again", row.name)));
    }
    sqlx::query(
        "INSERT INTO notebook_revisions (id, notebook_id, version, kind, name, content, created_by, created_at) \
         VALUES ($1, $2, $3, 'before-restore', 'before restore', $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(id)
    .bind(row.version)
    .bind(&row.content)
    .bind(&p.user.username)
    .bind(t)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    p.note_change(format!("restored notebook {} to revision {revision}", row.name));
    get(db, p, id).await
}

/// Whom the notebook is shared with.
pub async fn shares(db: &Db, p: &Principal, id: &str) -> CoreResult<Vec<Share>> {
    open(db, p, id, Action::GetNotebook).await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT u.username, s.role FROM notebook_shares s JOIN users u ON u.id = s.user_id \
         WHERE s.notebook_id = $1 ORDER BY u.username",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(username, role)| Share { username, role }).collect())
}

/// Shares the notebook with a user as reader or editor (replacing an earlier role).
pub async fn share(db: &Db, p: &Principal, id: &str, username: &str, role: &str) -> CoreResult<Vec<Share>> {
    let row = open(db, p, id, Action::ShareNotebook).await?;
    if role != ROLE_READER && role != ROLE_EDITOR {
        return Err(CoreError::invalid("role", format!("role must be reader or editor, not {role:?}")));
    }
    let user = accounts::find_by_username(db, username)
        .await?
        .ok_or_else(|| CoreError::invalid("username", format!("there is no user {username:?}")))?;
    if user.id == row.owner_id {
        return Err(CoreError::invalid("username", format!("{} owns this notebook", user.username)));
    }
    let updated = sqlx::query("UPDATE notebook_shares SET role = $1 WHERE notebook_id = $2 AND user_id = $3")
        .bind(role)
        .bind(id)
        .bind(&user.id)
        .execute(&db.pool)
        .await?;
    if updated.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO notebook_shares (notebook_id, user_id, role, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&user.id)
        .bind(role)
        .bind(&p.user.username)
        .bind(now())
        .execute(&db.pool)
        .await?;
    }
    p.note_change(format!("shared notebook {} with {} as {role}", row.name, user.username));
    shares(db, p, id).await
}

/// Stops sharing the notebook with a user.
pub async fn unshare(db: &Db, p: &Principal, id: &str, username: &str) -> CoreResult<()> {
    let row = open(db, p, id, Action::ShareNotebook).await?;
    let removed = sqlx::query(
        "DELETE FROM notebook_shares WHERE notebook_id = $1 AND user_id = (SELECT id FROM users WHERE username = $2)",
    )
    .bind(id)
    .bind(username.trim().to_ascii_lowercase())
    .execute(&db.pool)
    .await?;
    if removed.rows_affected() == 0 {
        return Err(CoreError::NotFound("share"));
    }
    p.note_change(format!("stopped sharing notebook {} with {username}", row.name));
    Ok(())
}

/// An export: file name, content type and bytes. `format` is `ipynb` or `py`.
pub async fn export(db: &Db, p: &Principal, id: &str, format: &str) -> CoreResult<(String, &'static str, Vec<u8>)> {
    let notebook = get(db, p, id).await?;
    let stem: String =
        notebook.name.trim_end_matches(".ipynb").chars().filter(|c| !c.is_control() && *c != '"').collect();
    match format {
        "ipynb" => {
            let mut bytes =
                serde_json::to_vec_pretty(&ipynb::export(&notebook.content)).map_err(CoreError::internal)?;
            bytes.push(b'\n');
            Ok((format!("{stem}.ipynb"), "application/x-ipynb+json", bytes))
        }
        "py" => {
            Ok((format!("{stem}.py"), "text/x-python; charset=utf-8", ipynb::to_python(&notebook.content).into_bytes()))
        }
        other => Err(CoreError::invalid("format", format!("format must be ipynb or py, not {other:?}"))),
    }
}
