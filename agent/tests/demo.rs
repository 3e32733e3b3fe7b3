//! `atelier demo` end to end: the seeding drives a real server's REST API over HTTP
//! while a real agent (the node `local`) trains and serves, and leaves the whole story
//! in the studio; a second start seeds nothing.

#[path = "../../server/tests/common/mod.rs"]
mod common;
mod support;

use axum::http::{Method, StatusCode};
use common::{Auth, TestApp};
use serde_json::Value;
use support::*;

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let r = app.call(Method::GET, path, Auth::Bearer(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_seeds_the_whole_story_through_the_rest_api_once() {
    let (app, url, admin) = studio().await;
    atelier_server::endpoints::spawn_background(app.state.clone());
    let node_token = add_node(&app, &admin, "local").await;
    let _agent = Agent::start(&url, &node_token, &temp_dir("demo-agent"), &[]);

    let report = atelier_server::demo::seed(&app.state.db, &url)
        .await
        .expect("seeding starts")
        .expect("a fresh studio is seeded");
    assert_eq!(report.failure, None, "{report:#?}");
    assert!(report.warnings.is_empty(), "{report:#?}");
    let names: Vec<&str> = report.people.iter().map(|p| p.username.as_str()).collect();
    assert_eq!(names, ["dana", "lena", "liam", "rita"]);
    for person in &report.people {
        assert_eq!(person.password.len(), 12);
        atelier_core::accounts::verify_credentials(&app.state.db, &person.username, &person.password)
            .await
            .expect("the printed password signs in");
    }
    let dana = report.token_of("dana").expect("dana's token");

    let job = get(&app, dana, "/api/v1/labeling/jobs/demo-shapes-labels").await;
    assert_eq!(job["job"]["status"], "Completed", "{job:#}");
    assert_eq!(job["job"]["item_count"], 30);
    assert_eq!(job["progress"]["annotations"], 60);
    assert_eq!(job["progress"]["workers"], 2);
    // Liam's one disagreement went to review, where rita set the true label.
    assert_eq!(job["progress"]["reviewed"], 1, "{job:#}");

    let training = get(&app, dana, "/api/v1/training-jobs/demo-shapes-1").await;
    assert_eq!(training["job"]["state"], "Completed", "{training:#}");
    let version = get(&app, dana, "/api/v1/model-groups/demo-shapes/versions/1").await;
    assert_eq!(version["status"], "Approved", "{version:#}");
    assert_eq!(version["created_by"], "dana");

    let endpoint = get(&app, dana, "/api/v1/endpoints/demo-shapes").await;
    assert_eq!(endpoint["status"], "InService", "{endpoint:#}");
    assert_eq!(endpoint["data_capture"]["records"], 40, "{endpoint:#}");
    let runs = get(&app, dana, "/api/v1/endpoints/demo-shapes/monitor/runs").await;
    assert_eq!(runs[0]["status"], "Completed", "{runs:#}");
    assert!(runs[0]["drifted"].as_i64().is_some_and(|d| d > 0), "the shifted inputs drift: {runs:#}");

    let notebooks = get(&app, dana, "/api/v1/notebooks").await;
    assert_eq!(notebooks[0]["name"], "Getting started", "{notebooks:#}");
    assert!(notebooks[0]["cells"].as_i64().is_some_and(|c| c >= 5), "{notebooks:#}");

    assert!(atelier_server::demo::seed(&app.state.db, &url).await.expect("second start").is_none());
}
