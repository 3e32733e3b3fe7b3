//! Notebooks end to end: a real server on a loopback port, a real agent running real
//! ipykernel processes, cells executed through the REST API a browser or script uses.

#[path = "../../server/tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{Auth, TestApp};
use serde_json::{json, Value};
use support::*;

/// The `data:` payloads of a server-sent event stream.
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim_start()).expect("each event is a JSON message"))
        .collect()
}

fn of_type<'a>(events: &'a [Value], msg_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["msg_type"] == msg_type).collect()
}

fn execute_request(kernel: &str, token: &str, code: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/kernels/{kernel}/execute"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"code": code}).to_string()))
        .expect("request")
}

/// Runs `code` and answers with every message of the execution.
async fn run(app: &TestApp, kernel: &str, token: &str, code: &str) -> Vec<Value> {
    let r = app.send(execute_request(kernel, token, code)).await;
    assert_eq!(r.status, StatusCode::OK, "{code}: {}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("text/event-stream"));
    let all = events(&r.text());
    // It ends once the reply and the return to idle were both seen (they race: one is
    // on the shell channel, the other on iopub), or with the kernel's death.
    let ended = |e: &Value| {
        e["msg_type"] == "execute_reply" || e["msg_type"] == "kernel_dead" || e["content"]["execution_state"] == "idle"
    };
    assert!(all.last().is_some_and(ended), "{code}: the stream ends with the reply or idle: {all:#?}");
    let dead = all.iter().any(|e| e["msg_type"] == "kernel_dead");
    assert!(dead || of_type(&all, "execute_reply").len() == 1, "{code}: one reply: {all:#?}");
    all
}

fn stdout(events: &[Value]) -> String {
    of_type(events, "stream").iter().filter_map(|e| e["content"]["text"].as_str()).collect()
}

async fn kernel_of(app: &TestApp, token: &str, notebook: &str) -> Value {
    let r = app.call(Method::GET, &format!("/api/v1/notebooks/{notebook}/kernel"), Auth::Bearer(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

/// Polls the caller's kernel of a notebook until its state is `state`.
async fn wait_kernel(app: &TestApp, token: &str, notebook: &str, state: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let k = kernel_of(app, token, notebook).await;
        if k["state"] == state {
            return k;
        }
        assert!(Instant::now() < deadline, "the kernel did not become {state} in {secs} s: {k:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn new_notebook(app: &TestApp, token: &str, name: &str) -> String {
    let r = app.call(Method::POST, "/api/v1/notebooks", Auth::Bearer(token), Some(json!({"name": name}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["id"].as_str().expect("id").to_string()
}

async fn start_kernel(app: &TestApp, token: &str, notebook: &str) -> String {
    let path = format!("/api/v1/notebooks/{notebook}/kernel");
    let r = app.call(Method::POST, &path, Auth::Bearer(token), Some(json!({"node": "cpu-1"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["id"].as_str().expect("kernel id").to_string()
}

/// A Python with the official `nbformat` package (a virtualenv made once per checkout).
fn nbformat_python() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let env = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nbformat-env");
            let python = env.join("bin").join("python");
            let ready = |p: &std::path::Path| {
                std::process::Command::new(p).args(["-c", "import nbformat"]).output().is_ok_and(|o| o.status.success())
            };
            if !ready(&python) {
                let made =
                    std::process::Command::new("python3").arg("-m").arg("venv").arg(&env).status().expect("python3");
                assert!(made.success(), "creating {}", env.display());
                let pip = std::process::Command::new(&python)
                    .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "nbformat"])
                    .status()
                    .expect("pip");
                assert!(pip.success() && ready(&python), "installing nbformat");
            }
            python
        })
        .clone()
}

/// Validates `exported` with nbformat and compares its cells with `original`'s (types,
/// sources, outputs as given, HTML included, and attachments). Answers what the
/// script printed: the cell count and output types.
fn nbformat_check(original: &std::path::Path, exported: &std::path::Path) -> String {
    let script = r#"
import nbformat, sys
a = nbformat.read(sys.argv[1], as_version=4)
b = nbformat.read(sys.argv[2], as_version=4)
nbformat.validate(b)
assert b.nbformat == 4 and b.nbformat_minor >= 5, (b.nbformat, b.nbformat_minor)
assert len(a.cells) == len(b.cells), (len(a.cells), len(b.cells))
def plain(outputs):
    for o in outputs:
        yield dict(o)
for x, y in zip(a.cells, b.cells):
    assert x.cell_type == y.cell_type and x.source == y.source, (x, y)
    assert list(plain(x.get('outputs', []))) == list(plain(y.get('outputs', []))), (x.get('outputs'), y.get('outputs'))
    assert x.get('attachments') == y.get('attachments')
    assert x.metadata == y.metadata, (x.metadata, y.metadata)
print(len(b.cells), sorted({o.output_type for c in b.cells for o in c.get('outputs', [])}))
"#;
    let out = std::process::Command::new(nbformat_python())
        .args(["-c", script])
        .arg(original)
        .arg(exported)
        .output()
        .expect("python");
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nbformat refused {}: {said}", exported.display());
    said
}

/// A studio with one agent and the kernel culler running.
async fn notebook_studio(idle_secs: u32) -> (TestApp, String, Agent) {
    let app = TestApp::with_config(|c| {
        c.heartbeat_secs = 1;
        c.lease_secs = 6;
        c.node_lost_after_secs = 4;
        c.kernel_idle_secs = idle_secs;
    })
    .await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let url = app.listen().await;
    atelier_server::notebooks::spawn_background(app.state.clone());
    let node_token = add_node(&app, &token, "cpu-1").await;
    let agent = Agent::start(&url, &node_token, &temp_dir("agent"), &[]);
    wait_node(&app, &token, "cpu-1", "Ready").await;
    (app, token, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_run_on_a_real_kernel_with_streams_results_errors_images_interrupt_and_restart() {
    let (app, admin_token, _agent) = notebook_studio(3600).await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let erin = app.create_user_with("erin", &["DataScientist".into()]).await;
    let (dt, et) = (app.token_for(&dana, None).await, app.token_for(&erin, None).await);
    let nb = new_notebook(&app, &dt, "analysis").await;

    // No kernel yet; starting one places it on the node (the first start in a fresh
    // checkout also creates the kernel environment).
    let r = app.call(Method::GET, &format!("/api/v1/notebooks/{nb}/kernel"), Auth::Bearer(&dt), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let path = format!("/api/v1/notebooks/{nb}/kernel");
    let r = app.call(Method::POST, &path, Auth::Bearer(&dt), Some(json!({"node": "gpu-9"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("gpu-9 is not a Ready compute node"), "{}", r.text());
    let r = app.call(Method::POST, &path, Auth::Bearer(&dt), Some(json!({"gpus": 1}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let kernel = start_kernel(&app, &dt, &nb).await;
    assert_eq!(start_kernel(&app, &dt, &nb).await, kernel, "a live kernel is answered as it is");
    let k = wait_kernel(&app, &dt, &nb, "idle", 600).await;
    assert_eq!(k["node"], "cpu-1");
    assert_eq!(k["username"], "dana");

    // Streams, results and the execution count.
    let out = run(&app, &kernel, &dt, "print('hello')\n1+1").await;
    assert_eq!(stdout(&out), "hello\n");
    let result = of_type(&out, "execute_result");
    assert_eq!(result.len(), 1, "{out:#?}");
    assert_eq!(result[0]["content"]["data"]["text/plain"], "2");
    let reply = of_type(&out, "execute_reply");
    assert_eq!(reply[0]["content"]["status"], "ok");
    assert_eq!(reply[0]["content"]["execution_count"], 1);
    assert!(of_type(&out, "status").iter().any(|s| s["content"]["execution_state"] == "busy"));

    // An error with its traceback.
    let out = run(&app, &kernel, &dt, "1/0").await;
    let error = of_type(&out, "error");
    assert_eq!(error[0]["content"]["ename"], "ZeroDivisionError", "{out:#?}");
    assert!(!error[0]["content"]["traceback"].as_array().expect("traceback").is_empty());
    assert_eq!(of_type(&out, "execute_reply")[0]["content"]["status"], "error");

    // HTML arrives as the kernel gave it (the editor shows it in a sandboxed frame); a
    // matplotlib figure arrives as a PNG.
    let out = run(&app, &kernel, &dt, "from IPython.display import HTML, display\ndisplay(HTML('<b onclick=\"x()\">bold</b><script>alert(1)</script>'))").await;
    assert_eq!(
        of_type(&out, "display_data")[0]["content"]["data"]["text/html"],
        "<b onclick=\"x()\">bold</b><script>alert(1)</script>",
        "{out:#?}"
    );
    let out = run(&app, &kernel, &dt, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()").await;
    let images: Vec<&str> =
        of_type(&out, "display_data").iter().filter_map(|d| d["content"]["data"]["image/png"].as_str()).collect();
    assert_eq!(images.len(), 1, "{out:#?}");
    assert!(images[0].trim_start().starts_with("iVBORw0KGgo"), "a PNG");

    // A runaway cell's output is cut at 1 MiB, with a note on how much was left out,
    // before the reply.
    let out = run(&app, &kernel, &dt, "for _ in range(300):\n    print('x' * 9999)").await;
    let text = stdout(&out);
    assert!(text.len() <= 1024 * 1024, "{}", text.len());
    let (shown, note) = text.rsplit_once("[output truncated: ").expect("a note");
    let left_out: usize = note.strip_suffix(" more bytes not shown]\n").and_then(|n| n.parse().ok()).expect("a count");
    assert!((3_000_000..=3_000_001).contains(&(shown.len() + left_out)), "{} + {left_out}", shown.len());
    assert_eq!(of_type(&out, "execute_reply")[0]["content"]["status"], "ok");

    // Interrupt a loop of sleeps: KeyboardInterrupt, long before the loop would end.
    let started = Instant::now();
    let request = execute_request(&kernel, &dt, "import time\nfor i in range(300):\n    time.sleep(0.1)");
    let router = app.router.clone();
    let running = tokio::spawn(async move {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let response = router.oneshot(request).await.expect("router");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    });
    wait_kernel(&app, &dt, &nb, "busy", 10).await;
    let r = app.call(Method::POST, &format!("/api/v1/kernels/{kernel}/interrupt"), Auth::Bearer(&dt), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let out = events(&running.await.expect("execution"));
    assert_eq!(of_type(&out, "error")[0]["content"]["ename"], "KeyboardInterrupt", "{out:#?}");
    assert!(started.elapsed() < Duration::from_secs(25), "interrupted after {:?}", started.elapsed());

    // Another user may not use dana's kernel, even as an editor of the notebook; an
    // administrator's policy allows it.
    let share = format!("/api/v1/notebooks/{nb}/shares/erin");
    let r = app.call(Method::PUT, &share, Auth::Bearer(&dt), Some(json!({"role": "editor"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app.send(execute_request(&kernel, &et, "1")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = app.call(Method::POST, &format!("/api/v1/kernels/{kernel}/interrupt"), Auth::Bearer(&et), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let out = run(&app, &kernel, &admin_token, "6*7").await;
    assert_eq!(of_type(&out, "execute_result")[0]["content"]["data"]["text/plain"], "42");

    // Restart: a fresh process, variables gone, counting from 1 again.
    run(&app, &kernel, &dt, "x = 41").await;
    let r = app.call(Method::POST, &format!("/api/v1/kernels/{kernel}/restart"), Auth::Bearer(&dt), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "idle");
    let out = run(&app, &kernel, &dt, "x").await;
    assert_eq!(of_type(&out, "error")[0]["content"]["ename"], "NameError", "{out:#?}");
    assert_eq!(of_type(&out, "execute_reply")[0]["content"]["execution_count"], 1);

    // A kernel that dies mid-cell: the stream says so, the kernel is reported dead with
    // its last output, executions are refused until it is restarted.
    let out =
        run(&app, &kernel, &dt, "import os, time\nprint('last words', flush=True)\ntime.sleep(0.5)\nos._exit(3)").await;
    assert_eq!(out.last().expect("messages")["msg_type"], "kernel_dead", "{out:#?}");
    let k = wait_kernel(&app, &dt, &nb, "dead", 20).await;
    assert!(k["message"].as_str().is_some_and(|m| m.contains("last words")), "{k:#}");
    let r = app.send(execute_request(&kernel, &dt, "1")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let r = app.call(Method::POST, &format!("/api/v1/kernels/{kernel}/restart"), Auth::Bearer(&dt), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let out = run(&app, &kernel, &dt, "'alive'").await;
    assert_eq!(of_type(&out, "execute_result")[0]["content"]["data"]["text/plain"], "'alive'");

    // erin starts her own kernel for the same notebook.
    let hers = start_kernel(&app, &et, &nb).await;
    assert_ne!(hers, kernel);
    wait_kernel(&app, &et, &nb, "idle", 60).await;
    let out = run(&app, &hers, &et, "'erin'").await;
    assert_eq!(of_type(&out, "execute_result")[0]["content"]["data"]["text/plain"], "'erin'");

    // A server told to stop ends a running cell's stream at once, saying why, rather
    // than hold the stop until the cell ends.
    let stop = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        app.state.shutdown.cancel();
    };
    let long_cell = app.send(execute_request(&hers, &et, "import time\ntime.sleep(60)"));
    let (r, ()) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(long_cell, stop) })
        .await
        .expect("the stream ended well before the cell");
    let out = events(&r.text());
    let last = out.last().expect("messages");
    assert_eq!(last["msg_type"], "relay_error", "{out:#?}");
    assert!(last["content"]["message"].as_str().is_some_and(|m| m.contains("server stopped")), "{out:#?}");
    assert!(of_type(&out, "execute_reply").is_empty(), "{out:#?}");

    // Shutting down: the kernel is stopped and can no longer run cells.
    let r = app.call(Method::DELETE, &format!("/api/v1/kernels/{kernel}"), Auth::Bearer(&dt), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = app.send(execute_request(&kernel, &dt, "1")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("shut down by dana"), "{}", r.text());
    let listed = app.call(Method::GET, "/api/v1/kernels", Auth::Bearer(&dt), None).await.json();
    assert_eq!(listed, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kernel_is_shut_down_but_never_a_busy_one() {
    let (app, token, _agent) = notebook_studio(4).await;
    let nb = new_notebook(&app, &token, "idle").await;
    let kernel = start_kernel(&app, &token, &nb).await;
    wait_kernel(&app, &token, &nb, "idle", 600).await;
    // Busy for three times the idle limit: not culled.
    let out = run(&app, &kernel, &token, "import time\ntime.sleep(12)\n'done'").await;
    assert_eq!(of_type(&out, "execute_result")[0]["content"]["data"]["text/plain"], "'done'", "{out:#?}");
    // Then idle: shut down within the limit plus a culling period.
    let k = wait_kernel(&app, &token, &nb, "stopped", 30).await;
    assert!(k["message"].as_str().is_some_and(|m| m.contains("without activity")), "{k:#}");
    let r = app.send(execute_request(&kernel, &token, "1")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
}

/// Outputs from a real kernel saved into a notebook export to a file the official
/// `nbformat` package validates, and import back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_with_real_outputs_exports_valid_nbformat_and_round_trips() {
    let (app, token, _agent) = notebook_studio(3600).await;
    let nb = new_notebook(&app, &token, "report").await;
    let kernel = start_kernel(&app, &token, &nb).await;
    wait_kernel(&app, &token, &nb, "idle", 600).await;
    let codes = [
        "print('rows: 3')\nimport sys\nprint('careful', file=sys.stderr)",
        "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()",
        "from IPython.display import HTML\nHTML('<table><tr><td>1</td></tr></table>')",
        "raise ValueError('bad value')",
        "{'a': 1}",
    ];
    let mut cells = vec![json!({"cell_type": "markdown", "source": "# Report\nWith *real* outputs."})];
    for (i, code) in codes.iter().enumerate() {
        let out = run(&app, &kernel, &token, code).await;
        let outputs: Vec<Value> = out
            .iter()
            .filter(|m| {
                ["stream", "display_data", "execute_result", "error"].contains(&m["msg_type"].as_str().unwrap_or(""))
            })
            .map(|m| {
                let mut o = m["content"].clone();
                o["output_type"] = m["msg_type"].clone();
                if let Some(o) = o.as_object_mut() {
                    o.remove("transient");
                }
                o
            })
            .collect();
        cells.push(json!({"cell_type": "code", "source": code, "execution_count": i + 1, "outputs": outputs}));
    }
    let content = json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells});
    let body = json!({"content": content, "base_version": 1});
    let r = app.call(Method::PUT, &format!("/api/v1/notebooks/{nb}/content"), Auth::Bearer(&token), Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let saved = r.json()["content"].clone();

    let r = app.call(Method::GET, &format!("/api/v1/notebooks/{nb}/export"), Auth::Bearer(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let file = temp_dir("export").join("report.ipynb");
    std::fs::write(&file, &r.body).expect("write export");

    let said = nbformat_check(&file, &file);
    assert!(said.contains("6 ['display_data', 'error', 'execute_result', 'stream']"), "{said}");

    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/notebooks/import?name=again")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(r.body.clone()))
        .expect("request");
    let again = app.send(request).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    assert_eq!(again.json()["content"]["cells"], saved["cells"]);
}

/// Notebooks as Jupyter, JupyterLab and VS Code write them (lists of lines, no cell ids,
/// attachments, SVG, JSON and widget outputs, errors with ANSI colours) import, export
/// as valid nbformat with the same cells, and import again unchanged.
#[tokio::test]
async fn real_world_notebooks_round_trip_and_validate_with_nbformat() {
    let app = TestApp::new().await;
    let dana = app.create_user_with("dana", &["DataScientist".into()]).await;
    let token = app.token_for(&dana, None).await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures");
    let out_dir = temp_dir("round-trip");
    for name in ["classic.ipynb", "attachments.ipynb", "vscode.ipynb"] {
        let original = fixtures.join(name);
        let import = |bytes: Vec<u8>| {
            Request::builder()
                .method(Method::POST)
                .uri(format!("/api/v1/notebooks/import?name={name}"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from(bytes))
                .expect("request")
        };
        let first = app.send(import(std::fs::read(&original).expect("fixture"))).await;
        assert_eq!(first.status, StatusCode::CREATED, "{name}: {}", first.text());
        let id = first.json()["id"].as_str().expect("id").to_string();
        let r = app.call(Method::GET, &format!("/api/v1/notebooks/{id}/export"), Auth::Bearer(&token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        let exported = out_dir.join(name);
        std::fs::write(&exported, &r.body).expect("write export");
        nbformat_check(&original, &exported);
        let again = app.send(import(r.body.clone())).await;
        assert_eq!(again.status, StatusCode::CREATED, "{name}: {}", again.text());
        assert_eq!(again.json()["content"]["cells"], first.json()["content"]["cells"], "{name}");
    }
}
