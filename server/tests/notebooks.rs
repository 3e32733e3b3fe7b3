//! Notebooks through the REST API: import and export (nbformat 4), saving with
//! conflict detection, revisions, sharing by role, and bad input. Kernels are tested
//! with a real agent in `agent/tests/notebooks.rs`.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{Auth, TestApp};
use serde_json::{json, Value};

/// Rich HTML as pandas, IPython and widgets write it: a `<style>`, a `<script>`, audio,
/// video and an iframe, as lines.
fn rich_html() -> Value {
    json!([
        "<style scoped>.dataframe td { color: red; }</style>\n",
        "<table class=\"dataframe\"><tr><td>1</td></tr></table>\n",
        "<script>document.title = 'ran'; steal()</script>\n",
        "<audio controls src=\"data:audio/wav;base64,UklGRg==\"></audio>\n",
        "<video controls><source src=\"data:video/mp4;base64,AAAA\" type=\"video/mp4\"></video>\n",
        "<iframe src=\"https://example.com/embed\" width=\"300\"></iframe>"
    ])
}

/// A notebook as Jupyter writes it: sources and texts as lists of lines, nbformat 4.4
/// without cell ids, an image, an error with ANSI colours, HTML with a style and a
/// script, audio, video and an iframe.
fn jupyter_notebook() -> Value {
    json!({
        "nbformat": 4, "nbformat_minor": 4,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Churn\n", "A *first* look."]},
            {"cell_type": "code", "metadata": {"tags": ["setup"]}, "execution_count": 1,
             "source": ["import pandas as pd\n", "df = pd.DataFrame({'a': [1]})\n", "df"],
             "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                          "data": {"text/plain": ["   a\n", "0  1"], "text/html": rich_html()}}]},
            {"cell_type": "code", "metadata": {}, "execution_count": 2, "source": "plot()",
             "outputs": [{"output_type": "display_data", "metadata": {},
                          "data": {"image/png": "iVBORw0KGgo=\n", "text/plain": ["<Figure>"]}},
                         {"output_type": "stream", "name": "stderr", "text": ["warn\n"]}]},
            {"cell_type": "code", "metadata": {}, "execution_count": 3, "source": "1/0",
             "outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                          "traceback": ["\u{1b}[0;31mZeroDivisionError\u{1b}[0m: division by zero"]}]},
            {"cell_type": "raw", "metadata": {}, "source": "raw text"}
        ]
    })
}

async fn import(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> common::TestResponse {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/notebooks/import?name={name}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/x-ipynb+json")
        .body(Body::from(bytes))
        .expect("request");
    app.send(request).await
}

#[tokio::test]
async fn an_imported_notebook_exports_to_the_same_notebook_with_outputs_as_given() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let token = app.token_for(&dana, None).await;

    let r = import(&app, &token, "churn", serde_json::to_vec(&jupyter_notebook()).expect("json")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let nb = r.json();
    let id = nb["id"].as_str().expect("id").to_string();
    assert_eq!(nb["owner"], "dana");
    assert_eq!(nb["role"], "owner");
    let cells = nb["content"]["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 5);
    assert!(cells.iter().all(|c| c["id"].as_str().is_some_and(|s| !s.is_empty())), "ids were added");
    assert_eq!(cells[1]["source"], "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\ndf");
    assert_eq!(cells[1]["metadata"]["tags"][0], "setup");
    // Outputs are stored as the file gave them: style, script, audio, video and iframe.
    let html = cells[1]["outputs"][0]["data"]["text/html"].as_str().expect("html");
    let given: String = rich_html().as_array().expect("lines").iter().filter_map(Value::as_str).collect();
    assert_eq!(html, given);

    // The export is nbformat 4.5 with texts split into lines, as Jupyter writes them.
    let r = app.call(Method::GET, &format!("/api/v1/notebooks/{id}/export"), Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("application/x-ipynb+json"));
    assert!(r.header("content-disposition").is_some_and(|d| d.contains("churn.ipynb")));
    let exported = r.json();
    assert_eq!(exported["nbformat"], 4);
    assert_eq!(exported["nbformat_minor"], 5);
    assert_eq!(exported["cells"][0]["source"], json!(["# Churn\n", "A *first* look."]));
    // Every output's data is exported as it was imported.
    let original = jupyter_notebook();
    for c in [1, 2, 3] {
        assert_eq!(exported["cells"][c]["outputs"], original["cells"][c]["outputs"], "cell {c}");
    }
    assert_eq!(exported["cells"][2]["outputs"][0]["data"]["image/png"], "iVBORw0KGgo=\n");
    assert_eq!(exported["cells"][3]["outputs"][0]["ename"], "ZeroDivisionError");
    assert!(exported["cells"][4].get("outputs").is_none(), "raw cells have no outputs");

    // Re-importing the export gives the same cells.
    let r = import(&app, &token, "again", r.body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["content"]["cells"], nb["content"]["cells"]);

    // The .py download is a percent-format script.
    let r =
        app.call(Method::GET, &format!("/api/v1/notebooks/{id}/export?format=py"), Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let py = r.text();
    assert!(py.contains("# %% [markdown]\n# # Churn\n# A *first* look.\n"), "{py}");
    assert!(py.contains("# %%\n1/0\n"), "{py}");
}

/// What `GET .../outputs/{cell}/{index}` answers.
async fn output(app: &TestApp, auth: Auth<'_>, id: &str, cell: &str, index: usize) -> common::TestResponse {
    app.call(Method::GET, &format!("/api/v1/notebooks/{id}/outputs/{cell}/{index}"), auth, None).await
}

#[tokio::test]
async fn rich_outputs_are_served_as_sandboxed_documents_to_those_who_may_open_the_notebook() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    app.create_user_with("erin", &["DataScientist".into()]).await;
    let token = app.token_for(&dana, None).await;
    let r = import(&app, &token, "churn", serde_json::to_vec(&jupyter_notebook()).expect("json")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let nb = r.json();
    let id = nb["id"].as_str().expect("id").to_string();
    let cell = |i: usize| nb["content"]["cells"][i]["id"].as_str().expect("cell id").to_string();

    // The HTML output as a document of its own, as given, in an opaque origin: the
    // sandbox policy is the response's own, not the pages' (no allow-same-origin), and
    // it may be framed by the studio only.
    let r = output(&app, Auth::Bearer(&token), &id, &cell(1), 0).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").expect("a policy");
    assert!(csp.starts_with("sandbox allow-scripts;"), "{csp}");
    assert!(!csp.contains("allow-same-origin") && !csp.contains("allow-top-navigation"), "{csp}");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'self'"), "{csp}");
    assert!(!csp.contains("nonce-"), "not the pages' policy: {csp}");
    assert_eq!(r.header("x-frame-options").as_deref(), Some("SAMEORIGIN"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
    let document = r.text();
    let given: String = rich_html().as_array().expect("lines").iter().filter_map(Value::as_str).collect();
    assert!(document.contains(&given), "{document}");
    assert!(document.contains("atelierOutputHeight"), "it tells the editor its height");

    // A browser's session cookie works as well (the editor's frame sends it).
    let cookie = app.sign_in("dana", common::PASSWORD).await;
    let r = output(&app, Auth::Cookie(&cookie), &id, &cell(1), 0).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Outputs shown in the page (an image, stream text, an error) have no document; nor
    // do cells and positions that do not exist.
    for (c, i) in [(2, 0), (2, 1), (3, 0), (1, 1), (0, 0)] {
        let r = output(&app, Auth::Bearer(&token), &id, &cell(c), i).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "cell {c} output {i}: {}", r.text());
    }
    assert_eq!(output(&app, Auth::Bearer(&token), &id, "nope", 0).await.status, StatusCode::NOT_FOUND);

    // Only those who may open the notebook: not anonymously, not another user until it
    // is shared with them.
    let r = output(&app, Auth::None, &id, &cell(1), 0).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let erin = app.sign_in("erin", common::PASSWORD).await;
    let r = output(&app, Auth::Cookie(&erin), &id, &cell(1), 0).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(!r.text().contains("steal"));
    let share = format!("/api/v1/notebooks/{id}/shares/erin");
    let r = app.call(Method::PUT, &share, Auth::Bearer(&token), Some(json!({"role": "reader"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = output(&app, Auth::Cookie(&erin), &id, &cell(1), 0).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // JavaScript and SVG outputs get documents too.
    let content = json!({"nbformat": 4, "cells": [{"cell_type": "code", "id": "js", "source": "", "outputs": [
        {"output_type": "display_data", "metadata": {},
         "data": {"application/javascript": "element.innerText = 'hi';", "text/plain": "<Javascript>"}},
        {"output_type": "display_data", "metadata": {},
         "data": {"image/svg+xml": "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>x()</script></svg>"}}]}]});
    let r = save(&app, &token, &id, &content, nb["version"].as_i64().expect("version")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let js = output(&app, Auth::Bearer(&token), &id, "js", 0).await;
    assert!(js.text().contains("<script>var element = document.getElementById('output');\nelement.innerText = 'hi';"));
    let svg = output(&app, Auth::Bearer(&token), &id, "js", 1).await;
    assert!(svg.text().contains("<svg xmlns=\"http://www.w3.org/2000/svg\"><script>x()</script></svg>"));
}

#[tokio::test]
async fn a_cell_s_stored_outputs_are_bounded_with_a_note_on_what_was_left_out() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let token = app.token_for(&dana, None).await;
    let r = app.call(Method::POST, "/api/v1/notebooks", Auth::Bearer(&token), Some(json!({"name": "loud"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();

    // What `while True: print('x' * 10000)` leaves behind: 3 MB of stdout.
    let line = "x".repeat(9_999) + "\n";
    let outputs: Vec<Value> =
        (0..300).map(|_| json!({"output_type": "stream", "name": "stdout", "text": line})).collect();
    let content = json!({"nbformat": 4, "cells": [
        {"cell_type": "code", "id": "loud", "source": "while True: print('x' * 10000)", "outputs": outputs},
        {"cell_type": "code", "id": "quiet", "source": "print(1)",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}]});
    let r = save(&app, &token, &id, &content, 1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let saved = r.json();
    let kept: String = saved["content"]["cells"][0]["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .filter_map(|o| o["text"].as_str())
        .collect();
    assert!(kept.len() <= 1024 * 1024, "at most 1 MiB of stream text: {}", kept.len());
    let shown = kept.bytes().filter(|b| *b == b'x' || *b == b'\n').count() - 2;
    let note = format!("\n[output truncated: {} more bytes not shown]\n", 3_000_000 - shown);
    assert!(kept.ends_with(&note), "{}", &kept[kept.len() - 80..]);
    assert_eq!(saved["content"]["cells"][1]["outputs"][0]["text"], "1\n", "other cells are untouched");

    // Saving, exporting and importing it again changes nothing more.
    let r = save(&app, &token, &id, &saved["content"], 2).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["content"], saved["content"]);
    let r = app.call(Method::GET, &format!("/api/v1/notebooks/{id}/export"), Auth::Bearer(&token), None).await;
    let again = import(&app, &token, "again", r.body.clone()).await;
    assert_eq!(again.json()["content"]["cells"], saved["content"]["cells"]);
}

#[tokio::test]
async fn bad_notebooks_are_refused_with_the_reason_and_nothing_is_stored() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let token = app.token_for(&dana, None).await;
    for (bytes, expected) in [
        (b"{not json".to_vec(), "invalid JSON"),
        (br#"{"nbformat": 3, "cells": []}"#.to_vec(), "nbformat 3"),
        (br#"{"nbformat": 4, "cells": [{"cell_type": "code", "source": 7}]}"#.to_vec(), "cell 1: source"),
        (br#"{"nbformat": 4, "cells": {}}"#.to_vec(), "cells must be a list"),
    ] {
        let r = import(&app, &token, "bad", bytes).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
        assert!(r.text().contains(expected), "{expected}: {}", r.text());
    }
    // Over the size limit: 413 before anything is parsed.
    let huge = vec![b' '; 17 * 1024 * 1024];
    let r = import(&app, &token, "huge", huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    let r = app.call(Method::POST, "/api/v1/notebooks", Auth::Bearer(&token), Some(json!({"name": "a/b"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "name");
    let r = app.call(Method::GET, "/api/v1/notebooks", Auth::Bearer(&token), None).await;
    assert_eq!(r.json(), json!([]), "nothing was stored");
}

async fn save(app: &TestApp, token: &str, id: &str, content: &Value, base: i64) -> common::TestResponse {
    let body = json!({"content": content, "base_version": base});
    app.call(Method::PUT, &format!("/api/v1/notebooks/{id}/content"), Auth::Bearer(token), Some(body)).await
}

#[tokio::test]
async fn two_editors_never_silently_overwrite_each_other_and_revisions_restore() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let erin = app.create_user_with("erin", &["DataScientist".into()]).await;
    let rita = app.create_user_with("rita", &["DataScientist".into()]).await;
    let (dt, et, rt) =
        (app.token_for(&dana, None).await, app.token_for(&erin, None).await, app.token_for(&rita, None).await);
    let r = app.call(Method::POST, "/api/v1/notebooks", Auth::Bearer(&dt), Some(json!({"name": "shared"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let nb = r.json();
    let id = nb["id"].as_str().expect("id").to_string();
    assert_eq!(nb["version"], 1);

    // Not shared yet: others get 403 and do not see it listed.
    let r = app.call(Method::GET, &format!("/api/v1/notebooks/{id}"), Auth::Bearer(&et), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(app.call(Method::GET, "/api/v1/notebooks", Auth::Bearer(&et), None).await.json(), json!([]));

    // erin edits, rita reads.
    let share = |user: &str, role: &str| {
        let path = format!("/api/v1/notebooks/{id}/shares/{user}");
        (path, json!({"role": role}))
    };
    let (path, body) = share("erin", "editor");
    assert_eq!(app.call(Method::PUT, &path, Auth::Bearer(&dt), Some(body)).await.status, StatusCode::OK);
    let (path, body) = share("rita", "reader");
    let r = app.call(Method::PUT, &path, Auth::Bearer(&dt), Some(body)).await;
    assert_eq!(r.json(), json!([{"username": "erin", "role": "editor"}, {"username": "rita", "role": "reader"}]));
    let (path, body) = share("rita", "owner");
    let r = app.call(Method::PUT, &path, Auth::Bearer(&dt), Some(body)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Only the owner shares.
    let (path, body) = share("rita", "editor");
    assert_eq!(app.call(Method::PUT, &path, Auth::Bearer(&et), Some(body)).await.status, StatusCode::FORBIDDEN);
    let listed = app.call(Method::GET, "/api/v1/notebooks", Auth::Bearer(&rt), None).await.json();
    assert_eq!(listed[0]["role"], "reader");

    let with_source = |text: &str| {
        let mut content = nb["content"].clone();
        content["cells"][0]["source"] = json!(text);
        content
    };
    // Both start from version 1; dana saves first, erin's save is refused and names
    // who saved.
    let r = save(&app, &dt, &id, &with_source("dana's line"), 1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    let r = save(&app, &et, &id, &with_source("erin's line"), 1).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("saved by dana"), "{}", r.text());
    let now = app.call(Method::GET, &format!("/api/v1/notebooks/{id}"), Auth::Bearer(&et), None).await.json();
    assert_eq!(now["content"]["cells"][0]["source"], "dana's line", "the refused save changed nothing");
    // With the current version, erin's save goes through.
    let r = save(&app, &et, &id, &with_source("erin's line"), 2).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["updated_by"], "erin");
    // A reader cannot save; a bad save changes nothing.
    assert_eq!(save(&app, &rt, &id, &with_source("x"), 3).await.status, StatusCode::FORBIDDEN);
    let r = save(&app, &dt, &id, &json!({"nbformat": 4, "cells": [{"cell_type": "nope"}]}), 3).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // The first save took an automatic snapshot; a checkpoint names the current state.
    let path = format!("/api/v1/notebooks/{id}/revisions");
    let r = app.call(Method::POST, &path, Auth::Bearer(&dt), Some(json!({"name": "before cleanup"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let revisions = app.call(Method::GET, &path, Auth::Bearer(&rt), None).await.json();
    let kinds: Vec<&str> = revisions.as_array().expect("list").iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["checkpoint", "auto"], "{revisions:#}");
    let auto = revisions[1]["id"].as_str().expect("id").to_string();
    let old = app.call(Method::GET, &format!("{path}/{auto}"), Auth::Bearer(&rt), None).await.json();
    assert_eq!(old["cells"][0]["source"], "dana's line");
    // Restoring brings dana's line back and keeps erin's as a revision.
    let r = app.call(Method::POST, &format!("{path}/{auto}/restore"), Auth::Bearer(&rt), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "readers do not restore");
    let r = app.call(Method::POST, &format!("{path}/{auto}/restore"), Auth::Bearer(&et), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["content"]["cells"][0]["source"], "dana's line");
    assert_eq!(r.json()["version"], 4);
    let revisions = app.call(Method::GET, &path, Auth::Bearer(&dt), None).await.json();
    assert_eq!(revisions[0]["kind"], "before-restore");
    let kept = revisions[0]["id"].as_str().expect("id");
    let kept = app.call(Method::GET, &format!("{path}/{kept}"), Auth::Bearer(&dt), None).await.json();
    assert_eq!(kept["cells"][0]["source"], "erin's line");

    // Rename, duplicate (the copy is the caller's), delete.
    let r = app
        .call(Method::PATCH, &format!("/api/v1/notebooks/{id}"), Auth::Bearer(&et), Some(json!({"name": "renamed"})))
        .await;
    assert_eq!(r.json()["name"], "renamed");
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/notebooks/{id}/duplicate"),
            Auth::Bearer(&rt),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!((r.json()["owner"].as_str(), r.json()["role"].as_str()), (Some("rita"), Some("owner")));
    assert_eq!(r.json()["content"]["cells"][0]["source"], "dana's line");
    let r = app.call(Method::DELETE, &format!("/api/v1/notebooks/{id}"), Auth::Bearer(&et), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "editors do not delete");
    let r = app.call(Method::DELETE, &format!("/api/v1/notebooks/{id}"), Auth::Bearer(&dt), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.call(Method::GET, &format!("/api/v1/notebooks/{id}/revisions"), Auth::Bearer(&dt), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
