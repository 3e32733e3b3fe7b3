//! The nbformat 4 document: reading what users and Jupyter write, the one shape
//! Atelier stores, and writing `.ipynb` and `.py` back out.
//!
//! Stored shape: nbformat 4.5 (every cell has an `id`), `source` and every multi-line
//! text (stream text, `text/*` data, SVG) joined into one string, and HTML outputs
//! sanitized. Export splits texts back into lines, as Jupyter writes them. Output
//! types Atelier does not know are kept as they are (the editor shows them raw).

use serde_json::{json, Map, Value};

use crate::{CoreError, CoreResult};

/// The largest notebook accepted (imported or saved), in bytes of JSON.
pub const MAX_NOTEBOOK_BYTES: usize = 16 * 1024 * 1024;
/// Cells in one notebook at most.
const MAX_CELLS: usize = 10_000;

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
                Some(Value::Array(outputs)) => {
                    outputs.iter().enumerate().map(|(j, o)| normalize_output(o, j)).collect::<Result<_, _>>()?
                }
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
            let joined = text(Some(value), &format!("{at} {mime}"))?;
            *value = Value::String(if mime == "text/html" { sanitize_html(&joined) } else { joined });
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
/// `execute_result`, `error`) as a stored output, sanitized; `None` for messages that
/// are not outputs.
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

/// Sanitizes a kernel message's content before it goes to a browser: HTML outputs are
/// cleaned. SVG is left as it is because the editor only ever shows it as an image
/// (`<img src="data:…">`), where scripts do not run.
pub fn sanitize_message(content: &mut Value) {
    if let Some(html) = content.get_mut("data").and_then(|d| d.get_mut("text/html")) {
        if let Ok(joined) = text(Some(html), "text/html") {
            *html = Value::String(sanitize_html(&joined));
        }
    }
}

/// Cleans HTML from a kernel or a user: no scripts, no event handlers, no
/// `javascript:` links; tables, formatting and images stay.
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
    fn lists_are_joined_ids_added_and_html_sanitized() {
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
        assert_eq!(cells[1]["outputs"][1]["data"]["text/html"], "<b>2</b>");
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
}
