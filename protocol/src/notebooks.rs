//! Notebooks: what the server and an agent say about Jupyter kernels, and the shapes
//! the REST API shows.
//!
//! The server decides which kernels run where; each heartbeat answer lists every
//! kernel a node should run ([`KernelOrder`]), and the agent reports the state of those
//! it runs ([`KernelReport`]). A kernel the agent runs that is no longer listed is shut
//! down. The agent speaks the Jupyter messaging protocol to ipykernel on loopback and
//! offers each kernel to the server over HTTP at the reported `url` (the kernel
//! gateway, see `atelier_agent::kernels`), guarded by the order's `secret`:
//!
//! - `POST {url}/execute` `{"code", "silent"?}`: `application/x-ndjson`, one
//!   [`KernelMessage`] per line: the iopub messages the request caused (`status`,
//!   `execute_input`, `stream`, `display_data`, `update_display_data`,
//!   `execute_result`, `error`, `clear_output`), then the shell's `execute_reply`. It
//!   ends once the reply and the kernel's return to idle have both been seen, or with a
//!   `kernel_dead` message (`content.message` holds the last output) if the kernel dies.
//! - `POST {url}/interrupt`: interrupts the running cell (SIGINT, as `interrupt_mode`
//!   "signal").
//! - `POST {url}/restart`: a new kernel process in the same place; answers once it is
//!   ready.
//! - `GET {url}/status`: a [`KernelReport`].

use serde::{Deserialize, Serialize};

/// Kernel states, as the agent reports them and the UI shows them.
pub const KERNEL_STARTING: &str = "starting";
pub const KERNEL_IDLE: &str = "idle";
pub const KERNEL_BUSY: &str = "busy";
pub const KERNEL_DEAD: &str = "dead";

/// A kernel the server wants a node to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelOrder {
    pub kernel_id: String,
    /// The bearer token the kernel gateway demands of the server.
    pub secret: String,
    /// GPU indices reserved for the kernel (`CUDA_VISIBLE_DEVICES`).
    pub gpus: Vec<u32>,
    /// What was reserved for it: its sandbox's limits (0: none).
    #[serde(default)]
    pub memory_mb: u64,
    #[serde(default)]
    pub cpus: u32,
}

/// A kernel's state as its agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelReport {
    pub kernel_id: String,
    /// `starting`, `idle`, `busy` or `dead`.
    pub state: String,
    /// The kernel gateway, once the kernel has started.
    pub url: Option<String>,
    /// Why it is starting slowly or died, with its last output.
    pub message: String,
}

/// One message of an execution, as the gateway streams it (and the server relays it to
/// the browser after sanitizing its HTML and SVG).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelMessage {
    /// The Jupyter `msg_type` (`stream`, `execute_result`, …), or `kernel_dead`.
    pub msg_type: String,
    /// The message's `content`, as the kernel sent it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub content: serde_json::Value,
}

/// `POST {url}/execute` (and the REST API's execute).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    /// Not counted, not echoed (Jupyter's `silent`).
    #[serde(default)]
    pub silent: bool,
}

/// A notebook in a list: no content.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotebookSummary {
    pub id: String,
    pub name: String,
    pub owner: String,
    /// The caller's role: `owner`, `editor`, `reader`, or `none` (seen through a policy).
    pub role: String,
    pub version: i64,
    pub cells: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

/// A notebook with its content (nbformat 4 JSON).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notebook {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub role: String,
    /// Bumped by every save; send it back as `base_version` when saving.
    pub version: i64,
    pub updated_by: String,
    pub updated_at: i64,
    /// The notebook in nbformat 4 (every cell has an `id`; `source` and output texts are
    /// single strings).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub content: serde_json::Value,
}

/// `POST /api/v1/notebooks`: a new notebook, empty or from nbformat 4 JSON.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewNotebook {
    pub name: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub content: Option<serde_json::Value>,
}

/// `PUT /api/v1/notebooks/{id}/content`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveNotebook {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub content: serde_json::Value,
    /// The version the edit started from; the save is refused with 409 if someone saved
    /// since.
    pub base_version: i64,
}

/// `PATCH /api/v1/notebooks/{id}` and `POST /api/v1/notebooks/{id}/duplicate`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotebookName {
    pub name: String,
}

/// An earlier content of a notebook.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub id: String,
    /// The notebook's version this content was.
    pub version: i64,
    /// `auto` (a snapshot taken while saving), `checkpoint` (named by a user) or
    /// `before-restore` (what a restore replaced).
    pub kind: String,
    pub name: String,
    pub created_by: String,
    pub created_at: i64,
}

/// A user a notebook is shared with.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub username: String,
    /// `reader` or `editor`.
    pub role: String,
}

/// `POST /api/v1/notebooks/{id}/kernel`: where to start the caller's kernel.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartKernel {
    /// A compute node's name; any Ready node with room when absent.
    #[serde(default)]
    pub node: Option<String>,
    /// GPUs reserved for the kernel (default 0).
    #[serde(default)]
    pub gpus: u32,
    /// CPUs and memory reserved on the node (default 0: the kernel shares the node).
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub memory_mb: u64,
}

/// A kernel and its state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    pub id: String,
    pub notebook_id: String,
    /// Who started it (only they may use it, unless a policy says otherwise).
    pub username: String,
    pub node: String,
    /// `pending`, `starting`, `idle`, `busy`, `dead` or `stopped`.
    pub state: String,
    pub message: String,
    pub gpus: Vec<u32>,
    pub created_at: i64,
    pub last_activity_at: i64,
}

/// The representations of a rich output (`display_data`, `execute_result`) the studio
/// can show, in the order Jupyter prefers them: the first one present is shown.
const SHOWN_MIMES: [&str; 6] =
    ["application/javascript", "text/html", "image/svg+xml", "image/png", "image/jpeg", "text/plain"];

/// Which representation of a rich output's `data` is shown, if any.
pub fn shown_mime(data: &serde_json::Value) -> Option<&'static str> {
    SHOWN_MIMES.into_iter().find(|mime| data.get(*mime).is_some_and(|v| !v.is_null()))
}

/// Whether a representation is shown in a sandboxed frame (a document of its own,
/// served by `GET /api/v1/notebooks/{id}/outputs/{cell}/{index}` in an opaque origin)
/// rather than in the page: everything that can carry script (HTML, JavaScript, SVG).
/// Text and PNG/JPEG images are shown in the page.
pub fn is_framed(mime: &str) -> bool {
    matches!(mime, "application/javascript" | "text/html" | "image/svg+xml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_is_preferred_and_framed_images_are_not() {
        let data = json!({"text/plain": "df", "text/html": "<table></table>", "image/png": "iVBOR"});
        assert_eq!(shown_mime(&data), Some("text/html"));
        assert!(is_framed("text/html") && is_framed("image/svg+xml") && is_framed("application/javascript"));
        assert_eq!(shown_mime(&json!({"image/png": "iVBOR", "text/plain": "<Figure>"})), Some("image/png"));
        assert!(!is_framed("image/png"));
        assert_eq!(shown_mime(&json!({"application/json": {}})), None);
    }
}
