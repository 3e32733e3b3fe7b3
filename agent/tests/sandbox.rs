//! Containment: a training job written by an attacker tries, from real Python in a
//! real sandboxed job, what an ordinary account's job once could do: read the studio's
//! database beside the agent's work directory, read the agent's node token from its
//! environment, signal the agent, write to the system, leave a daemon behind, and use
//! more memory than it asked for. Every attempt fails under the default agent; under
//! `--unsandboxed` the same job succeeds at them, so these tests can fail.

#[path = "../../server/tests/common/mod.rs"]
mod common;
mod support;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::*;

/// Prints one `ATTEMPT <name> <result>` line per escape attempt; "BLOCKED" when the
/// attempt failed, anything else is what it got.
const ESCAPE_SCRIPT: &str = r#"
import argparse, os, subprocess, sys, time
p = argparse.ArgumentParser()
p.add_argument("--studio_db")
p.add_argument("--agent_state")
p.add_argument("--agent_pid", type=int)
p.add_argument("--marker")
a = p.parse_args()

def attempt(name, fn):
    try:
        result = fn()
    except Exception as e:
        result = f"BLOCKED ({type(e).__name__})"
    print(f"ATTEMPT {name} {result}", flush=True)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split()[1]

def walk_up_for_db():
    # What the first exploit did: walk up from the working directory.
    here = os.getcwd()
    while True:
        candidate = os.path.join(here, os.path.basename(a.studio_db))
        if os.path.exists(candidate):
            return open(candidate).read().strip()
        if here == "/":
            raise FileNotFoundError("no database above")
        here = os.path.dirname(here)

def token_in_environ():
    env = open(f"/proc/{a.agent_pid}/environ", "rb").read()
    if b"ATELIER_NODE_TOKEN=" not in env:
        raise PermissionError("no token there")
    return "READ-TOKEN"

def token_anywhere():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if b"ATELIER_NODE_TOKEN=" in open(f"/proc/{pid}/environ", "rb").read():
                    return f"READ-TOKEN-OF-{pid}"
            except OSError:
                pass
    raise PermissionError("no process with the token in view")

def write_system():
    path = "/usr/atelier-escape-test"
    with open(path, "w") as f:
        f.write("x")
    os.remove(path)
    return "WROTE"

def other_jobs():
    jobs = os.path.dirname(os.path.dirname(os.path.dirname(os.getcwd())))
    names = [n for n in os.listdir(jobs) if not os.getcwd().startswith(os.path.join(jobs, n))]
    if not names:
        raise PermissionError("no other job in view")
    return "SAW " + ",".join(names)

attempt("studio_db", lambda: open(a.studio_db).read().strip())
attempt("walk_up", walk_up_for_db)
attempt("agent_state", lambda: open(a.agent_state).read().strip())
attempt("other_jobs", other_jobs)
attempt("agent_environ", token_in_environ)
attempt("token_anywhere", token_anywhere)
attempt("signal_agent", lambda: (os.kill(a.agent_pid, 0), "SIGNALLED")[1])
attempt("write_system", write_system)
print(f"IDENTITY uid={os.getuid()} caps={status('CapEff')} nnp={status('NoNewPrivs')}", flush=True)
# A daemon: double fork, new session, out of the job's process group.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)", a.marker])
    os._exit(0)
time.sleep(0.5)
print("done", flush=True)
"#;

fn attempts(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| l.strip_prefix("ATTEMPT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, result)| (name.to_string(), result.to_string()))
        .collect()
}

/// Whether a process whose command line holds `marker` runs on this machine.
fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(marker))
    })
}

/// How the attacked agent runs: as this process's user with these arguments, or as
/// another (ordinary) user.
enum AgentAs<'a> {
    Args(&'a [&'a str]),
    User(u32),
}

/// Plants the studio's database beside the agent's work directory (as `atelier serve`
/// lays out its local agent) and a file in the agent's own state, starts an agent with
/// `extra` arguments and runs the escape job on it; the job's log.
async fn escape_job(agent_as: AgentAs<'_>) -> (String, Value, String) {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "attacked").await;
    let data = temp_dir("data");
    let work = data.join("agent");
    std::fs::create_dir_all(&work).expect("work dir");
    let db = data.join("atelier-test.db");
    std::fs::write(&db, "STUDIO-DATABASE-CONTENT").expect("plant the database");
    let state = work.join("agent-state.json");
    std::fs::write(&state, "AGENT-STATE-CONTENT").expect("plant the agent state");
    let agent = match agent_as {
        AgentAs::Args(extra) => Agent::start_with(&url, &node_token, &work, &[], extra),
        AgentAs::User(uid) => {
            // Its work directory is its own; the planted files stay readable to it.
            for path in [&data, &work, &state, &db] {
                std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
            }
            Agent::start_as(uid, &url, &node_token, &work)
        }
    };
    let node = wait_node(&app, &token, "attacked", "Ready").await;

    let marker = format!("atelier-daemon-{}", uuid::Uuid::new_v4().simple());
    let script = upload(&app, &token, "escape.py", ESCAPE_SCRIPT).await;
    let spec = json!({
        "algorithm": {"type": "script", "entry_point": "escape.py", "code": [script]},
        "hyperparameters": {
            "studio_db": db.display().to_string(),
            "agent_state": state.display().to_string(),
            "agent_pid": agent.child.id().to_string(),
            "marker": marker,
        },
        "resources": {"cpus": 1, "memory_mb": 256}
    });
    let r = submit(&app, &token, "escape", spec).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let done = wait_job(&app, &token, "escape", 60, terminal).await;
    let log = logs(&app, &token, "escape").await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}\n{log}");
    // The job is over: a daemon it left would still run now.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let daemon = running_with(&marker);
    if daemon {
        let _ = std::process::Command::new("pkill").args(["-f", &marker]).status();
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&data);
    (log, node, if daemon { "daemon survived".into() } else { "no daemon".into() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_job_cannot_reach_the_studio_the_agent_or_the_system() {
    let (log, node, daemon) = escape_job(AgentAs::Args(&[])).await;
    assert_contained(&log, &node, &daemon);
}

/// The same attempts on an agent that runs as an ordinary user: the sandbox is a user
/// namespace then, with the agent's uid, and still hides and protects everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_an_agent_run_by_an_ordinary_user_is_contained_too() {
    if !nix::unistd::Uid::effective().is_root() {
        // Not root: the test above already ran the agent as an ordinary user.
        return;
    }
    let (log, node, daemon) = escape_job(AgentAs::User(NON_ROOT_AGENT_UID)).await;
    assert!(node["sandbox"].as_str().is_some_and(|s| s.contains("user namespace")), "{node}");
    assert_contained(&log, &node, &daemon);
    let identity = log.lines().find(|l| l.starts_with("IDENTITY")).expect("identity line");
    assert!(identity.contains(&format!("uid={NON_ROOT_AGENT_UID}")), "{identity}");
}

/// A uid no account on a test machine has.
const NON_ROOT_AGENT_UID: u32 = 4_242_424;

/// Every escape attempt in the log failed, the job had no capabilities and
/// `no_new_privs`, and its daemon died with it.
fn assert_contained(log: &str, node: &Value, daemon: &str) {
    let sandbox = node["sandbox"].as_str().unwrap_or_default();
    assert!(sandbox.starts_with("bubblewrap"), "the node reports its sandbox: {node}");
    let tried = attempts(log);
    assert_eq!(tried.len(), 8, "every attempt ran:\n{log}");
    for (name, result) in &tried {
        assert!(result.starts_with("BLOCKED"), "{name} got through: {result}\n{log}");
    }
    let identity = log.lines().find(|l| l.starts_with("IDENTITY")).expect("identity line");
    let uid: u32 =
        identity.split_whitespace().find_map(|w| w.strip_prefix("uid=")).and_then(|u| u.parse().ok()).expect("uid");
    if sandbox.contains("a uid per sandbox") {
        // A root agent gives each sandbox a uid of its own.
        assert!(uid >= atelier_agent::sandbox::DEFAULT_UID_BASE, "{identity}");
    }
    assert!(identity.contains("caps=0000000000000000"), "no capabilities: {identity}");
    assert!(identity.contains("nnp=1"), "no_new_privs: {identity}");
    assert_eq!(daemon, "no daemon", "a daemonized process dies with its sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsandboxed_the_same_job_escapes_and_the_node_says_so() {
    let (log, node, daemon) = escape_job(AgentAs::Args(&["--unsandboxed"])).await;
    assert_eq!(node["sandbox"], "unsandboxed", "{node}");
    let tried: std::collections::BTreeMap<String, String> = attempts(&log).into_iter().collect();
    assert_eq!(tried.get("studio_db").map(String::as_str), Some("STUDIO-DATABASE-CONTENT"), "{log}");
    assert_eq!(tried.get("walk_up").map(String::as_str), Some("STUDIO-DATABASE-CONTENT"), "{log}");
    assert_eq!(tried.get("agent_state").map(String::as_str), Some("AGENT-STATE-CONTENT"), "{log}");
    assert_eq!(tried.get("agent_environ").map(String::as_str), Some("READ-TOKEN"), "{log}");
    assert_eq!(tried.get("signal_agent").map(String::as_str), Some("SIGNALLED"), "{log}");
    assert_eq!(daemon, "daemon survived");
}

/// Memory beyond the request ends the job with the reason, and the agent goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_memory_fails_with_the_limit_and_the_agent_goes_on() {
    let (app, url, token) = studio().await;
    let node_token = add_node(&app, &token, "small").await;
    let work = temp_dir("agent");
    let _agent = Agent::start(&url, &node_token, &work, &[]);
    let node = wait_node(&app, &token, "small", "Ready").await;
    if !node["sandbox"].as_str().unwrap_or_default().contains("cgroup") {
        eprintln!("skipped: this agent cannot make cgroups here ({})", node["sandbox"]);
        return;
    }
    let hog = upload(&app, &token, "hog.py", "x = b'x' * (400 * 1024 * 1024)\nprint('allocated', len(x))\n").await;
    let spec = json!({"algorithm": {"type": "script", "entry_point": "hog.py", "code": [hog]}, "resources": {"memory_mb": 100}});
    assert_eq!(submit(&app, &token, "hog", spec).await.status, StatusCode::CREATED);
    let failed = wait_job(&app, &token, "hog", 60, terminal).await;
    assert_eq!(failed["job"]["state"], "Failed", "{failed:#}");
    let message = failed["job"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exceeded its memory limit of 100 MB"), "{message}");

    // The agent and its next job are unaffected.
    let ok = upload(&app, &token, "ok.py", "print('fine')\n").await;
    let spec =
        json!({"algorithm": {"type": "script", "entry_point": "ok.py", "code": [ok]}, "resources": {"memory_mb": 100}});
    assert_eq!(submit(&app, &token, "after", spec).await.status, StatusCode::CREATED);
    let done = wait_job(&app, &token, "after", 60, terminal).await;
    assert_eq!(done["job"]["state"], "Completed", "{done:#}");
    let _ = std::fs::remove_dir_all(work);
}

/// A node token in the wrong hands: registering the node again with more CPUs, GPUs it
/// never had, or another address is refused and audited; a kernel URL off the node's
/// address is not recorded, so no cell (and no kernel secret) is ever sent there.
#[tokio::test]
async fn a_rogue_agent_cannot_grow_its_node_or_redirect_a_kernel() {
    use axum::http::Method;
    use common::{Auth, TestApp};
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    let node_token = add_node(&app, &token, "gpu-node").await;
    let info = |cpus: u32, gpus: &[&str], host: &str| {
        let gpus: Vec<Value> = gpus
            .iter()
            .enumerate()
            .map(|(i, uuid)| json!({"index": i, "uuid": uuid, "model": "Test GPU", "memory_mb": 16000}))
            .collect();
        json!({"node": {"name": "gpu-node", "hostname": "h", "os": "linux", "cpus": cpus, "memory_mb": 8000,
            "disk_free_mb": 1000, "gpus": gpus, "labels": {}, "agent_version": "test", "sandbox": "bubblewrap",
            "advertise_host": host}})
    };
    let register = |body: Value| app.call(Method::POST, "/agent/v1/register", Auth::Bearer(&node_token), Some(body));
    assert_eq!(register(info(8, &["GPU-a"], "10.0.0.5")).await.status, StatusCode::OK);
    // The same again (an agent restart), or less, is fine.
    assert_eq!(register(info(8, &["GPU-a"], "10.0.0.5")).await.status, StatusCode::OK);
    assert_eq!(register(info(4, &[], "10.0.0.5")).await.status, StatusCode::OK);
    for (body, what) in [
        (info(512, &["GPU-a"], "10.0.0.5"), "512 CPUs"),
        (info(8, &["GPU-a", "GPU-invented"], "10.0.0.5"), "GPU-invented"),
        (info(8, &["GPU-a"], "203.0.113.9"), "the address 203.0.113.9"),
    ] {
        let r = register(body).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        assert!(r.text().contains(what) && r.text().contains("deregister"), "{}", r.text());
    }
    let node = wait_node(&app, &token, "gpu-node", "Ready").await;
    assert_eq!(node["cpus"], 4, "the refused registrations changed nothing: {node}");
    let audit = app.call(Method::GET, "/api/v1/audit-events?action=agent:Register", Auth::Bearer(&token), None).await;
    let refused = audit.json()["events"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["decision"] == "Deny").count())
        .unwrap_or_default();
    assert_eq!(refused, 3, "{}", audit.text());

    // A kernel placed on the node, reported by the rogue at an address of its own.
    let r = app.call(Method::POST, "/api/v1/notebooks", Auth::Bearer(&token), Some(json!({"name": "n"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().expect("notebook id").to_string();
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/notebooks/{id}/kernel"),
            Auth::Bearer(&token),
            Some(json!({"node": "gpu-node", "gpus": 0})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let beat = |kernels: Value| {
        app.call(
            Method::POST,
            "/agent/v1/heartbeat",
            Auth::Bearer(&node_token),
            Some(json!({"usage": {"cpu_pct": 0.0, "memory_used_mb": 0, "gpus": []}, "running": [], "instances": [],
                "kernels": kernels})),
        )
    };
    let orders = beat(json!([])).await;
    assert_eq!(orders.status, StatusCode::OK, "{}", orders.text());
    let kernel_id = orders.json()["kernels"][0]["kernel_id"].as_str().expect("a kernel order").to_string();
    let r =
        beat(json!([{"kernel_id": kernel_id, "state": "idle", "url": "http://203.0.113.9:4444", "message": ""}])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let kernel = app.call(Method::GET, &format!("/api/v1/notebooks/{id}/kernel"), Auth::Bearer(&token), None).await;
    let text = kernel.text();
    assert!(!text.contains("203.0.113.9:4444\""), "{text}");
    assert!(text.contains("off the node's address"), "{text}");
}
