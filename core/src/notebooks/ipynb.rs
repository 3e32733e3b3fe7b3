//! The nbformat 4 document: reading what users and Jupyter write, the one shape
//! Atelier stores, and writing `.ipynb` and `.py` back out.
//!
//! Stored shape: nbformat 4.5 (every cell has an `id`), `source` and every multi-line
//! text (stream text, `text/*` data, SVG) joined into one string. Outputs are kept as
//! the kernel or the imported file gave them (HTML with its `<style>`, `<script>`,
//! audio, video and iframes): they are made safe where they are shown, in a sandboxed
//! frame without the studio's origin ([`output_document`]). Export splits texts back
//! into lines, as Jupyter writes them. Output types Atelier does not know are kept as
//! they are (the editor shows them raw). A cell's outputs are bounded
//! ([`MAX_STREAM_BYTES_PER_CELL`], [`MAX_OUTPUT_BYTES_PER_CELL`]): beyond, they are
//! truncated with a note saying how much was left out.

use serde_json::{json, Map, Value};

use crate::{CoreError, CoreResult};

/// The largest notebook accepted (imported or saved), in bytes of JSON.
pub const MAX_NOTEBOOK_BYTES: usize = 16 * 1024 * 1024;
/// Cells in one notebook at most.
const MAX_CELLS: usize = 10_000;
/// Stream text (stdout and stderr together) kept per cell. A megabyte is some ten
/// thousand long log lines, more than anyone reads in a notebook; a runaway
/// `while True: print(...)` stops there instead of growing the browser's page and the
/// database without limit.
pub const MAX_STREAM_BYTES_PER_CELL: usize = 1024 * 1024;
/// Every output of one cell together (text, images, HTML, tracebacks), counted as
/// stream text bytes plus the JSON of the other outputs. 8 MiB holds a few large
/// figures, or an interactive figure with its library inlined (plotly's is some 4 MB),
/// and leaves room in a notebook of at most [`MAX_NOTEBOOK_BYTES`].
pub const MAX_OUTPUT_BYTES_PER_CELL: usize = 8 * 1024 * 1024;
/// Room kept under both caps for the truncation note, so that a truncated cell is
/// within the caps with its note, and normalizing it again changes nothing.
const NOTE_ROOM: usize = 128;

/// An empty notebook with one code cell.
pub fn empty() -> Value {
    json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": kernel_metadata(),
        "cells": [new_cell("code", "")],
    })
}

fn kernel_metadata() -> Value {
    json!({
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    })
}

/// A new cell of the given type with a fresh id.
pub fn new_cell(cell_type: &str, source: &str) -> Value {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    match cell_type {
        "code" => json!({"id": id, "cell_type": "code", "metadata": {}, "source": source,
                         "outputs": [], "execution_count": null}),
        other => json!({"id": id, "cell_type": other, "metadata": {}, "source": source}),
    }
}

fn bad(message: impl std::fmt::Display) -> CoreError {
    CoreError::invalid("content", message)
}

/// Parses `.ipynb` bytes (an import or a save), checking the size first.
pub fn parse(bytes: &[u8]) -> CoreResult<Value> {
    if bytes.len() > MAX_NOTEBOOK_BYTES {
        return Err(CoreError::TooLarge(format!(
            "the notebook is {} bytes; the limit is {MAX_NOTEBOOK_BYTES} bytes",
            bytes.len()
        )));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the file is not a notebook: invalid JSON ({e})")))?;
    normalize(value)
}

/// Checks a notebook and brings it into the stored shape. Errors name the cell and
/// field at fault.
pub fn normalize(value: Value) -> CoreResult<Value> {
    let Value::Object(mut nb) = value else {
        return Err(bad("a notebook is a JSON object with nbformat, metadata and cells"));
    };
    match nb.get("nbformat").and_then(Value::as_i64) {
        Some(4) => {}
        Some(v) => return Err(bad(format!("nbformat {v} is not supported; save it as nbformat 4 first"))),
        None => return Err(bad("nbformat is missing: this is not a Jupyter notebook")),
    }
    let metadata = match nb.remove("metadata") {
        None | Some(Value::Null) => kernel_metadata(),
        Some(Value::Object(m)) => Value::Object(m),
        Some(_) => return Err(bad("metadata must be an object")),
    };
    let cells = match nb.remove("cells") {
        Some(Value::Array(cells)) => cells,
        _ => return Err(bad("cells must be a list")),
    };
    if cells.len() > MAX_CELLS {
        return Err(bad(format!("the notebook has {} cells; the limit is {MAX_CELLS}", cells.len())));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(cells.len());
    for (i, cell) in cells.into_iter().enumerate() {
        let mut cell = normalize_cell(cell).map_err(|m| bad(format!("cell {}: {m}", i + 1)))?;
        // Ids must be unique; a copy-pasted cell gets a new one.
        let id = cell.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        if !seen.insert(id) {
            let fresh = new_cell("raw", "")["id"].clone();
            seen.insert(fresh.as_str().unwrap_or_default().to_string());
            cell["id"] = fresh;
        }
        out.push(cell);
    }
    Ok(json!({"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": out}))
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A multi-line string: a string, or a list of strings to join.
fn text(value: Option<&Value>, field: &str) -> Result<String, String> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| p.as_str().ok_or_else(|| format!("{field} must be a string or a list of strings")))
            .collect(),
        Some(_) => Err(format!("{field} must be a string or a list of strings")),
    }
}

fn object(value: Option<&Value>, field: &str) -> Result<Map<String, Value>, String> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(format!("{field} must be an object")),
    }
}

fn normalize_cell(cell: Value) -> Result<Value, String> {
    let Value::Object(cell) = cell else { return Err("a cell must be an object".into()) };
    let cell_type = cell.get("cell_type").and_then(Value::as_str).unwrap_or_default();
    let id = match cell.get("id").and_then(Value::as_str) {
        Some(id) if valid_id(id) => id.to_string(),
        _ => new_cell("raw", "")["id"].as_str().unwrap_or_default().to_string(),
    };
    let source = text(cell.get("source"), "source")?;
    let metadata = object(cell.get("metadata"), "metadata")?;
    match cell_type {
        "code" => {
            let outputs = match cell.get("outputs") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(outputs)) => bound_outputs(
                    outputs.iter().enumerate().map(|(j, o)| normalize_output(o, j)).collect::<Result<_, _>>()?,
                ),
                Some(_) => return Err("outputs must be a list".into()),
            };
            let count = cell.get("execution_count").and_then(Value::as_i64);
            Ok(json!({"id": id, "cell_type": "code", "metadata": metadata, "source": source,
                      "outputs": outputs, "execution_count": count}))
        }
        "markdown" | "raw" => {
            let mut out = json!({"id": id, "cell_type": cell_type, "metadata": metadata, "source": source});
            if let Some(Value::Object(a)) = cell.get("attachments") {
                out["attachments"] = Value::Object(a.clone());
            }
            Ok(out)
        }
        "" => Err("cell_type is missing".into()),
        other => Err(format!("cell_type {other:?} is not code, markdown or raw")),
    }
}

/// MIME types whose values are texts (joined when stored, split when exported).
fn is_text_mime(mime: &str) -> bool {
    mime.starts_with("text/") || mime == "image/svg+xml" || mime == "application/javascript"
}

fn normalize_data(data: Option<&Value>, at: &str) -> Result<Map<String, Value>, String> {
    let mut data = object(data, &format!("{at} data"))?;
    for (mime, value) in data.iter_mut() {
        if is_text_mime(mime) || mime.starts_with("image/") {
            *value = Value::String(text(Some(value), &format!("{at} {mime}"))?);
        }
    }
    Ok(data)
}

fn normalize_output(output: &Value, j: usize) -> Result<Value, String> {
    let at = format!("output {}", j + 1);
    let Value::Object(o) = output else { return Err(format!("{at} must be an object")) };
    let kind = o.get("output_type").and_then(Value::as_str).unwrap_or_default();
    Ok(match kind {
        "stream" => {
            let name = if o.get("name").and_then(Value::as_str) == Some("stderr") { "stderr" } else { "stdout" };
            json!({"output_type": "stream", "name": name, "text": text(o.get("text"), &format!("{at} text"))?})
        }
        "display_data" => json!({"output_type": "display_data",
            "data": normalize_data(o.get("data"), &at)?, "metadata": object(o.get("metadata"), &at)?}),
        "execute_result" => json!({"output_type": "execute_result",
            "execution_count": o.get("execution_count").and_then(Value::as_i64),
            "data": normalize_data(o.get("data"), &at)?, "metadata": object(o.get("metadata"), &at)?}),
        "error" => {
            let traceback: Vec<String> = match o.get("traceback") {
                Some(Value::Array(lines)) => lines.iter().map(|l| l.as_str().unwrap_or_default().to_string()).collect(),
                _ => Vec::new(),
            };
            json!({"output_type": "error",
                "ename": o.get("ename").and_then(Value::as_str).unwrap_or_default(),
                "evalue": o.get("evalue").and_then(Value::as_str).unwrap_or_default(),
                "traceback": traceback})
        }
        "" => return Err(format!("{at}: output_type is missing")),
        // Kept as it came: newer or custom output types survive a round trip.
        _ => output.clone(),
    })
}

/// An output message from a kernel (iopub `content` of `stream`, `display_data`,
/// `execute_result`, `error`) as a stored output, as the kernel gave it; `None` for
/// messages that are not outputs.
pub fn output_from_message(msg_type: &str, content: &Value) -> Option<Value> {
    let mut output = match msg_type {
        "stream" | "display_data" | "execute_result" | "error" => content.clone(),
        "update_display_data" => {
            let mut c = content.clone();
            c["output_type"] = json!("display_data");
            return normalize_output(&c, 0).ok();
        }
        _ => return None,
    };
    output["output_type"] = json!(msg_type);
    if let Some(o) = output.as_object_mut() {
        o.remove("transient");
    }
    normalize_output(&output, 0).ok()
}

/// How much an output counts against a cell's caps: stream text in bytes, any other
/// output as its JSON.
fn output_size(output: &Value) -> usize {
    match output.get("text").and_then(Value::as_str) {
        Some(text) if output["output_type"] == "stream" => text.len(),
        _ => serde_json::to_string(output).map_or(0, |s| s.len()),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What is left of a cell's output caps while its outputs are taken one by one: on
/// saving and importing ([`normalize`]), and in the server's relay of a running cell's
/// messages ([`OutputBudget::admit_message`]), so a browser never holds more than it
/// could save. Stream text beyond [`MAX_STREAM_BYTES_PER_CELL`] is cut (and later
/// stream text dropped); another output that does not fit in
/// [`MAX_OUTPUT_BYTES_PER_CELL`] is dropped; [`OutputBudget::take_note`] then says how
/// much was left out.
#[derive(Debug, Default)]
pub struct OutputBudget {
    stream: usize,
    total: usize,
    /// Bytes left out so far.
    dropped: usize,
    /// Stream text was cut: the stream (`stdout`/`stderr`) it was.
    cut: Option<String>,
    /// Whether the last stream text kept ended a line.
    open_line: bool,
}

impl OutputBudget {
    pub fn new() -> OutputBudget {
        OutputBudget::default()
    }

    /// Takes one output (in the stored shape): kept as it is, kept shortened (stream
    /// text at the cap), or `None` when it is left out.
    pub fn admit(&mut self, mut output: Value) -> Option<Value> {
        let size = output_size(&output);
        let total_room = (MAX_OUTPUT_BYTES_PER_CELL - NOTE_ROOM).saturating_sub(self.total);
        if output["output_type"] != "stream" || output.get("text").and_then(Value::as_str).is_none() {
            if size > total_room {
                self.dropped += size;
                return None;
            }
            self.total += size;
            return Some(output);
        }
        if self.cut.is_some() {
            self.dropped += size;
            return None;
        }
        let room = (MAX_STREAM_BYTES_PER_CELL - NOTE_ROOM).saturating_sub(self.stream).min(total_room);
        let text = output["text"].as_str().unwrap_or_default();
        let kept = prefix(text, room).to_string();
        if kept.len() < text.len() {
            self.dropped += text.len() - kept.len();
            self.cut = Some(output["name"].as_str().unwrap_or("stdout").to_string());
        }
        self.stream += kept.len();
        self.total += kept.len();
        if kept.is_empty() {
            return None;
        }
        self.open_line = !kept.ends_with('\n');
        output["text"] = Value::String(kept);
        Some(output)
    }

    /// A kernel message on its way to a browser: false when it is to be left out (an
    /// output over the caps); stream text at the cap is shortened in place. A
    /// `clear_output` starts the count again: what was counted is gone.
    pub fn admit_message(&mut self, msg_type: &str, content: &mut Value) -> bool {
        if msg_type == "clear_output" {
            *self = OutputBudget::new();
            return true;
        }
        if !matches!(msg_type, "stream" | "display_data" | "execute_result" | "error") {
            return true;
        }
        let Some(output) = output_from_message(msg_type, content) else { return true };
        match self.admit(output) {
            None => false,
            Some(kept) => {
                if msg_type == "stream" {
                    content["text"] = kept["text"].clone();
                }
                true
            }
        }
    }

    /// The note on what was left out, as a stream output (once; `None` when nothing
    /// was). It goes after the outputs kept: on the stream text that was cut, else on
    /// `stdout`.
    pub fn take_note(&mut self) -> Option<Value> {
        if self.dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut self.dropped);
        let name = self.cut.clone().unwrap_or_else(|| "stdout".to_string());
        let start = if self.open_line { "\n" } else { "" };
        self.open_line = false;
        Some(json!({"output_type": "stream", "name": name,
                    "text": format!("{start}[output truncated: {dropped} more bytes not shown]\n")}))
    }
}

/// Appends an output as the editor and Jupyter show it: stream text after stream text
/// of the same name is one output.
fn push_output(outputs: &mut Vec<Value>, output: Value) {
    if output["output_type"] == "stream" {
        if let Some(last) = outputs.last_mut() {
            if last["output_type"] == "stream" && last["name"] == output["name"] {
                if let (Some(a), Some(b)) = (last["text"].as_str(), output["text"].as_str()) {
                    last["text"] = Value::String(format!("{a}{b}"));
                    return;
                }
            }
        }
    }
    outputs.push(output);
}

/// A cell's outputs within its caps: as they are when they fit, else truncated with a
/// note (which fits too, so bounding them again changes nothing).
fn bound_outputs(outputs: Vec<Value>) -> Vec<Value> {
    let (stream, total) = outputs.iter().fold((0, 0), |(stream, total), o| {
        let size = output_size(o);
        (if o["output_type"] == "stream" { stream + size } else { stream }, total + size)
    });
    if stream <= MAX_STREAM_BYTES_PER_CELL && total <= MAX_OUTPUT_BYTES_PER_CELL {
        return outputs;
    }
    let mut budget = OutputBudget::new();
    let mut kept = Vec::with_capacity(outputs.len());
    for output in outputs {
        if let Some(o) = budget.admit(output) {
            kept.push(o);
        }
    }
    if let Some(note) = budget.take_note() {
        push_output(&mut kept, note);
    }
    kept
}

/// The page a rich output is shown in, inside `<iframe sandbox="allow-scripts">` and
/// served with a `sandbox` Content-Security-Policy, so its scripts run in an opaque
/// origin: they reach neither the studio's pages, cookies nor API. The output is
/// inserted as it is (HTML and SVG markup as given; JavaScript in a script element, as
/// Jupyter runs it, with `element` naming a `div` for it); a small script tells the
/// page the document's height (`{atelierOutputHeight: N}` to the parent) at load,
/// whenever it changes, and when the page asks (`"atelierOutputHeight?"`), so the frame
/// fits its content. `None` for outputs not shown in
/// a frame (see `atelier_protocol::notebooks::is_framed`).
pub fn output_document(output: &Value) -> Option<String> {
    use atelier_protocol::notebooks::{is_framed, shown_mime};
    if !matches!(output["output_type"].as_str(), Some("display_data" | "execute_result")) {
        return None;
    }
    let data = output.get("data")?;
    let mime = shown_mime(data).filter(|m| is_framed(m))?;
    let value = text(data.get(mime), mime).ok()?;
    let body = if mime == "application/javascript" {
        format!(
            "<div id=\"output\"></div>\n<script>var element = document.getElementById('output');\n{}\n</script>",
            escape_script(&value)
        )
    } else {
        value
    };
    Some(format!("{OUTPUT_HEAD}{body}\n</body>\n</html>\n"))
}

/// The start of an output's document (see [`output_document`]); the height script is
/// in the head so that markup in the output that never closes cannot swallow it.
const OUTPUT_HEAD: &str = r#"<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<script>
(function () {
  var last = -1;
  function height() {
    var b = document.body;
    return b ? Math.ceil(Math.max(b.scrollHeight, b.getBoundingClientRect().height)) : 0;
  }
  function post(again) {
    var h = height();
    if (h !== last || again === true) { last = h; parent.postMessage({atelierOutputHeight: h}, '*'); }
  }
  addEventListener('DOMContentLoaded', function () {
    post();
    if (window.ResizeObserver) { new ResizeObserver(function () { post(); }).observe(document.body); }
  });
  addEventListener('load', function () { post(); });
  // The editor asks again once it listens (a frame may load before the page is live).
  addEventListener('message', function (e) {
    if (e.source === parent && e.data === 'atelierOutputHeight?') { post(true); }
  });
})();
</script>
<style>
html, body { margin: 0; padding: 0; background: transparent; }
body { display: flow-root; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; text-align: right; border-bottom: 1px solid #e5e7eb; }
img, svg, video { max-width: 100%; height: auto; }
</style>
</head>
<body>
"#;

/// JavaScript as the content of a script element: a `</script` inside it would end the
/// element early.
fn escape_script(js: &str) -> String {
    let lower = js.to_ascii_lowercase();
    let mut out = String::with_capacity(js.len());
    let mut from = 0;
    while let Some(at) = lower[from..].find("</script") {
        out.push_str(&js[from..from + at]);
        out.push_str("<\\/");
        from += at + 2;
    }
    out.push_str(&js[from..]);
    out
}

/// Cleans HTML that the studio shows in its own pages (rendered Markdown): no scripts,
/// no event handlers, no `javascript:` links; tables, formatting and images stay.
pub fn sanitize_html(html: &str) -> String {
    ammonia::Builder::default().add_generic_attributes(["class", "style"]).clean(html).to_string()
}

/// Renders a Markdown cell to sanitized HTML.
pub fn render_markdown(source: &str) -> String {
    let options = pulldown_cmark::Options::ENABLE_TABLES
        | pulldown_cmark::Options::ENABLE_STRIKETHROUGH
        | pulldown_cmark::Options::ENABLE_TASKLISTS;
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new_ext(source, options));
    sanitize_html(&html)
}

/// Splits a text into lines that keep their line ends, as Jupyter writes sources.
fn lines(s: &str) -> Value {
    Value::Array(s.split_inclusive('\n').map(|l| Value::String(l.to_string())).collect())
}

/// The stored notebook as an `.ipynb` file: texts split into lines, as Jupyter does.
pub fn export(content: &Value) -> Value {
    let mut nb = content.clone();
    if let Some(cells) = nb.get_mut("cells").and_then(Value::as_array_mut) {
        for cell in cells {
            if let Some(s) = cell.get("source").and_then(Value::as_str).map(lines) {
                cell["source"] = s;
            }
            for output in cell.get_mut("outputs").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(t) = output.get("text").and_then(Value::as_str).map(lines) {
                    output["text"] = t;
                }
                for (mime, value) in output.get_mut("data").and_then(Value::as_object_mut).into_iter().flatten() {
                    if is_text_mime(mime) {
                        if let Some(l) = value.as_str().map(lines) {
                            *value = l;
                        }
                    }
                }
            }
        }
    }
    nb
}

/// The notebook as a Python script in the percent format (`# %%` cells) that VS Code,
/// Spyder and jupytext read; Markdown becomes comments.
pub fn to_python(content: &Value) -> String {
    let mut out = String::from("# ---\n# jupyter:\n#   kernelspec:\n#     name: python3\n# ---\n");
    for cell in content.get("cells").and_then(Value::as_array).into_iter().flatten() {
        let source = cell.get("source").and_then(Value::as_str).unwrap_or_default();
        match cell.get("cell_type").and_then(Value::as_str).unwrap_or_default() {
            "code" => {
                out.push_str("\n# %%\n");
                out.push_str(source);
            }
            kind => {
                out.push_str(&format!("\n# %% [{kind}]\n"));
                for line in source.lines() {
                    out.push_str(if line.is_empty() { "#" } else { "# " });
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Cells in a stored notebook.
pub fn cell_count(content: &Value) -> i64 {
    content.get("cells").and_then(Value::as_array).map_or(0, |c| c.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_joined_ids_added_and_outputs_kept_as_given() {
        let raw = json!({"nbformat": 4, "nbformat_minor": 2, "metadata": {}, "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "text"]},
            {"cell_type": "code", "metadata": {}, "execution_count": 3, "source": ["print(1)\n", "1+1"],
             "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["1\n"]},
                {"output_type": "execute_result", "execution_count": 3, "metadata": {},
                 "data": {"text/plain": ["2"], "text/html": "<b onclick=\"x()\">2</b><script>alert(1)</script>"}},
                {"output_type": "future_output", "payload": 1}
             ]}
        ]});
        let nb = normalize(raw).expect("valid");
        assert_eq!(nb["nbformat_minor"], 5);
        let cells = nb["cells"].as_array().expect("cells");
        assert_eq!(cells[0]["source"], "# Title\ntext");
        assert!(valid_id(cells[0]["id"].as_str().expect("id")));
        assert_ne!(cells[0]["id"], cells[1]["id"]);
        assert_eq!(cells[1]["outputs"][0]["text"], "1\n");
        assert_eq!(
            cells[1]["outputs"][1]["data"]["text/html"], "<b onclick=\"x()\">2</b><script>alert(1)</script>",
            "HTML is stored as given"
        );
        assert_eq!(cells[1]["outputs"][2]["payload"], 1, "unknown outputs are kept");
        let exported = export(&nb);
        assert_eq!(exported["cells"][1]["source"], json!(["print(1)\n", "1+1"]));
        assert_eq!(normalize(exported).expect("round trip"), nb);
    }

    #[test]
    fn bad_notebooks_name_the_problem() {
        let msg = |v: Value| normalize(v).expect_err("invalid").to_string();
        assert!(msg(json!([1])).contains("JSON object"));
        assert!(msg(json!({"nbformat": 3, "cells": []})).contains("nbformat 3"));
        assert!(msg(json!({"nbformat": 4, "cells": [{"cell_type": "code", "source": 5}]})).contains("cell 1: source"));
        assert!(msg(json!({"nbformat": 4, "cells": [{"cell_type": "sql"}]})).contains("\"sql\""));
        assert!(parse(b"{not json").expect_err("invalid").to_string().contains("invalid JSON"));
        let huge = vec![b' '; MAX_NOTEBOOK_BYTES + 1];
        assert!(matches!(parse(&huge), Err(CoreError::TooLarge(_))));
    }

    #[test]
    fn python_export_uses_percent_cells() {
        let nb = normalize(json!({"nbformat": 4, "cells": [
            {"cell_type": "markdown", "source": "# Hi\n\nthere"},
            {"cell_type": "code", "source": "x = 1\nprint(x)"}]}))
        .expect("valid");
        let py = to_python(&nb);
        assert!(py.contains("# %% [markdown]\n# # Hi\n#\n# there\n"), "{py}");
        assert!(py.contains("# %%\nx = 1\nprint(x)\n"), "{py}");
    }

    #[test]
    fn markdown_is_rendered_without_scripts() {
        let html = render_markdown("**bold** <img src=x onerror=alert(1)> [a](javascript:alert(1))");
        assert!(html.contains("<strong>bold</strong>"));
        assert!(!html.contains("onerror") && !html.contains("javascript:"), "{html}");
    }

    #[test]
    fn a_runaway_stream_is_cut_with_a_note_and_cutting_again_changes_nothing() {
        let line = "x".repeat(9_999) + "\n";
        let outputs: Vec<Value> =
            (0..300).map(|_| json!({"output_type": "stream", "name": "stdout", "text": line})).collect();
        let nb = normalize(json!({"nbformat": 4, "cells": [{"cell_type": "code", "source": "", "outputs": outputs}]}))
            .expect("valid");
        let kept = nb["cells"][0]["outputs"].as_array().expect("outputs");
        let text: String = kept.iter().filter_map(|o| o["text"].as_str()).collect();
        let kept_len = MAX_STREAM_BYTES_PER_CELL - NOTE_ROOM;
        let note = format!("\n[output truncated: {} more bytes not shown]\n", 300 * 10_000 - kept_len);
        assert_eq!(text.len(), kept_len + note.len());
        assert!(text.ends_with(&note), "{}", &text[text.len() - 100..]);
        assert!(text.len() <= MAX_STREAM_BYTES_PER_CELL);
        assert_eq!(normalize(nb.clone()).expect("again"), nb, "a cut cell is within the caps");
        assert_eq!(normalize(export(&nb)).expect("round trip"), nb);
    }

    #[test]
    fn outputs_over_the_cell_cap_are_left_out_and_later_ones_that_fit_kept() {
        let big = "A".repeat(3 * 1024 * 1024);
        let image = |data: &str| json!({"output_type": "display_data", "metadata": {}, "data": {"image/png": data}});
        let outputs = vec![
            image(&big),
            image(&big),
            image(&big),
            json!({"output_type": "stream", "name": "stdout", "text": "done\n"}),
        ];
        let nb = normalize(json!({"nbformat": 4, "cells": [{"cell_type": "code", "source": "", "outputs": outputs}]}))
            .expect("valid");
        let kept = nb["cells"][0]["outputs"].as_array().expect("outputs");
        assert_eq!(kept.len(), 3, "two images, then the text with the note");
        let dropped = serde_json::to_string(&image(&big)).expect("json").len();
        assert_eq!(kept[2]["text"], format!("done\n[output truncated: {dropped} more bytes not shown]\n"));
        assert_eq!(normalize(nb.clone()).expect("again"), nb);
    }

    #[test]
    fn the_relay_cuts_a_running_cell_s_stream_and_notes_it_before_the_reply() {
        let mut budget = OutputBudget::new();
        let chunk = "y".repeat(100_000);
        let mut seen = String::new();
        let mut passed = 0;
        for _ in 0..30 {
            let mut content = json!({"name": "stdout", "text": chunk});
            if budget.admit_message("stream", &mut content) {
                passed += 1;
                seen.push_str(content["text"].as_str().expect("text"));
            }
        }
        assert_eq!(passed, 11, "ten whole chunks and a cut one");
        assert_eq!(seen.len(), MAX_STREAM_BYTES_PER_CELL - NOTE_ROOM);
        let mut status = json!({"execution_state": "busy"});
        assert!(budget.admit_message("status", &mut status), "other messages pass");
        let note = budget.take_note().expect("a note");
        assert_eq!(note["name"], "stdout");
        let note_text = note["text"].as_str().expect("text");
        assert_eq!(note_text, format!("\n[output truncated: {} more bytes not shown]\n", 3_000_000 - seen.len()));
        assert!(budget.take_note().is_none(), "once");
        // What the browser then saves is within the caps as it is.
        let saved = vec![json!({"output_type": "stream", "name": "stdout", "text": seen + note_text})];
        assert_eq!(bound_outputs(saved.clone()), saved);
        // A cleared output starts over.
        budget.admit_message("clear_output", &mut json!({"wait": false}));
        let mut content = json!({"name": "stdout", "text": chunk});
        assert!(budget.admit_message("stream", &mut content));
        assert_eq!(content["text"].as_str().map(str::len), Some(chunk.len()));
    }

    #[test]
    fn rich_outputs_get_a_document_of_their_own_with_the_output_as_given() {
        let html = json!({"output_type": "display_data", "metadata": {},
            "data": {"text/html": "<style>td{color:red}</style><table><tr><td>1</td></tr></table><script>go()</script>",
                     "text/plain": "df"}});
        let doc = output_document(&html).expect("framed");
        assert!(doc.starts_with("<!DOCTYPE html>"));
        assert!(doc.contains("<style>td{color:red}</style><table><tr><td>1</td></tr></table><script>go()</script>"));
        assert!(doc.contains("atelierOutputHeight"));
        let js = json!({"output_type": "display_data", "metadata": {},
            "data": {"application/javascript": "element.textContent = '</script><b>x</b>';"}});
        let doc = output_document(&js).expect("framed");
        assert!(doc.contains("element.textContent = '<\\/script><b>x</b>';\n</script>"), "{doc}");
        let png = json!({"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR"}});
        assert!(output_document(&png).is_none());
        assert!(output_document(&json!({"output_type": "stream", "name": "stdout", "text": "<b>"})).is_none());
    }
}
