//! Endpoint alarms through the REST API and the page's server functions: a name is
//! taken once, a wrong threshold is a 422 naming the field, and alarms are changed,
//! muted and deleted in place.

mod common;

use axum::http::{Method, StatusCode};
use common::{Auth, TestApp, PASSWORD};
use leptos::server_fn::ServerFn;
use serde_json::{json, Value};

const PUT_ALARM: &str = <app::endpoints::PutAlarm as ServerFn>::PATH;
const DELETE_ALARM: &str = <app::endpoints::DeleteAlarm as ServerFn>::PATH;
const FIRING_ALARMS: &str = <app::endpoints::FiringAlarms as ServerFn>::PATH;

/// An endpoint row to hang alarms on (no agent, no model needed).
async fn endpoint(app: &TestApp, name: &str) {
    sqlx::query(
        "INSERT INTO endpoints (id, name, status, reason, generation, created_by, created_at, updated_at) \
         VALUES ($1, $2, 'InService', '', 1, 'admin', 0, 0)",
    )
    .bind(format!("id-{name}"))
    .bind(name)
    .execute(&app.state.db.pool)
    .await
    .expect("test setup");
}

/// The page's list of firing alarms: (endpoint, alarm, reason).
async fn firing(app: &TestApp, cookie: &str) -> Value {
    let r = app.server_fn(FIRING_ALARMS, &[], Auth::Cookie(cookie), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

fn alarm(name: &str, threshold: Value) -> Value {
    json!({"name": name, "metric": "errors_5xx", "comparison": "ge", "threshold": threshold, "periods": 2})
}

#[tokio::test]
async fn an_alarm_name_already_taken_is_a_409_naming_it_and_the_first_alarm_stays() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    endpoint(&app, "fraud-prod").await;
    let path = "/api/v1/endpoints/fraud-prod/alarms";
    let r = app.call(Method::POST, path, Auth::Bearer(&token), Some(alarm("errors", json!(5)))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let r = app.call(Method::POST, path, Auth::Bearer(&token), Some(alarm("errors", json!(1)))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("errors") && message.contains("fraud-prod"), "{message}");
    // Through the page's server function too, and the first alarm is untouched.
    let cookie = app.sign_in("admin", PASSWORD).await;
    let form = [
        ("name", "fraud-prod"),
        ("alarm", "errors"),
        ("metric", "errors_5xx"),
        ("comparison", "ge"),
        ("threshold", "1"),
        ("periods", "1"),
    ];
    let r = app.server_fn(PUT_ALARM, &form, Auth::Cookie(&cookie), &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let list = app.call(Method::GET, path, Auth::Bearer(&token), None).await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["threshold"], 5.0, "{list}");
}

#[tokio::test]
async fn a_non_numeric_threshold_is_a_422_naming_the_field_never_a_500() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    endpoint(&app, "fraud-prod").await;
    let path = "/api/v1/endpoints/fraud-prod/alarms";
    for threshold in [json!("high"), json!(true), json!([1])] {
        let r = app.call(Method::POST, path, Auth::Bearer(&token), Some(alarm("errors", threshold.clone()))).await;
        assert_eq!(
            (r.status, r.json()["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("threshold")),
            "{threshold}: {}",
            r.text()
        );
    }
    // The page's form sends text: the same answer, not a server error.
    let cookie = app.sign_in("admin", PASSWORD).await;
    for threshold in ["high", "NaN", "1e999", ""] {
        let form = [
            ("name", "fraud-prod"),
            ("alarm", "errors"),
            ("metric", "errors_5xx"),
            ("comparison", "ge"),
            ("threshold", threshold),
            ("periods", "1"),
        ];
        let r = app.server_fn(PUT_ALARM, &form, Auth::Cookie(&cookie), &[]).await;
        assert_eq!(
            (r.status, r.json()["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("threshold")),
            "{threshold:?}: {}",
            r.text()
        );
    }
    let list = app.call(Method::GET, path, Auth::Bearer(&token), None).await.json();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn an_alarm_is_changed_muted_and_deleted_in_place_and_only_an_unmuted_one_fires() {
    let app = TestApp::new().await;
    let admin = app.create_user("admin", true).await;
    let token = app.token_for(&admin, None).await;
    endpoint(&app, "fraud-prod").await;
    endpoint(&app, "other").await;
    let base = "/api/v1/endpoints/fraud-prod/alarms";
    for name in ["errors", "latency"] {
        let r = app.call(Method::POST, base, Auth::Bearer(&token), Some(alarm(name, json!(5)))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }

    // Changed: the condition, then the name; a name in use is refused.
    let r =
        app.call(Method::PUT, &format!("{base}/errors"), Auth::Bearer(&token), Some(alarm("errors", json!(9)))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["threshold"], 9.0);
    let r =
        app.call(Method::PUT, &format!("{base}/errors"), Auth::Bearer(&token), Some(alarm("latency", json!(9)))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let r = app.call(Method::PUT, &format!("{base}/errors"), Auth::Bearer(&token), Some(alarm("5xx", json!(9)))).await;
    assert_eq!((r.status, r.json()["name"].as_str()), (StatusCode::OK, Some("5xx")), "{}", r.text());
    let r = app.call(Method::PUT, &format!("{base}/nope"), Auth::Bearer(&token), Some(alarm("nope", json!(1)))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = app.call(Method::PUT, &format!("{base}/5xx"), Auth::Bearer(&token), Some(alarm("5xx", json!("x")))).await;
    assert_eq!(r.json()["error"]["field"], "threshold", "{}", r.text());

    // Going off: both fire until one is muted.
    sqlx::query("UPDATE endpoint_alarms SET state = 'ALARM', reason = 'errors_5xx was 12'")
        .execute(&app.state.db.pool)
        .await
        .expect("test setup");
    // What the endpoints list shows: (endpoint, alarm, reason) of unmuted alarms in alarm.
    let cookie = app.sign_in("admin", PASSWORD).await;
    assert_eq!(
        firing(&app, &cookie).await,
        json!([["fraud-prod", "5xx", "errors_5xx was 12"], ["fraud-prod", "latency", "errors_5xx was 12"]])
    );
    let r =
        app.call(Method::PUT, &format!("{base}/5xx/mute"), Auth::Bearer(&token), Some(json!({"muted": true}))).await;
    assert_eq!((r.status, r.json()["muted"].as_bool()), (StatusCode::OK, Some(true)), "{}", r.text());
    assert_eq!(firing(&app, &cookie).await, json!([["fraud-prod", "latency", "errors_5xx was 12"]]));
    let r =
        app.call(Method::PUT, &format!("{base}/5xx/mute"), Auth::Bearer(&token), Some(json!({"muted": "yes"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());

    // Deleted, through the page's server function.
    let form = [("name", "fraud-prod"), ("alarm", "5xx")];
    let r = app.server_fn(DELETE_ALARM, &form, Auth::Cookie(&cookie), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let list = app.call(Method::GET, base, Auth::Bearer(&token), None).await.json();
    let names: Vec<&str> = list.as_array().into_iter().flatten().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["latency"]);
}
