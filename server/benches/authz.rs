//! Authorization cost: `cargo bench -p atelier-server --bench authz` (also run by
//! `cargo xtask bench`). Prints figures for the issue note; asserts nothing.
//!
//! One principal holds 50 customer policies of 20 statements each (1,000 statements)
//! mixing wildcard actions, resource patterns, conditions and Deny statements. It
//! measures the policy compilation (once per principal per IAM change), the decision
//! for a cached principal, and a whole in-process REST call that authorizes, to put the
//! decision's cost in proportion.

mod support;
use support::percentile;

use std::time::{Duration, Instant};

use atelier_core::accounts::{self, NewUser};
use atelier_core::authz::{Credential, Principal, Resource};
use atelier_core::iam::{store, Action};
use atelier_server::config::Config;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;

const SERVICES: [(&str, &str); 5] = [
    ("models", "atelier:models:group"),
    ("datasets", "atelier:datasets:dataset"),
    ("training", "atelier:training:job"),
    ("endpoints", "atelier:endpoints:endpoint"),
    ("notebooks", "atelier:notebooks:notebook"),
];

fn policy(p: usize) -> String {
    let statements: Vec<String> = (0..20)
        .map(|s| {
            let (service, prefix) = SERVICES[(p + s) % SERVICES.len()];
            let verb = ["List*", "Get*", "Create*", "*", "?et*"][s % 5];
            let effect = if s % 10 == 9 { "Deny" } else { "Allow" };
            let condition = if s % 3 == 0 {
                format!(r#","Condition":{{"StringEquals":{{"atelier:ResourceTag/team":["t{p}","t{s}"]}}}}"#)
            } else if s % 3 == 1 {
                r#","Condition":{"StringNotEquals":{"atelier:ResourceCreator":"${atelier:username}"}}"#.to_string()
            } else {
                String::new()
            };
            format!(
                r#"{{"Sid":"S{s}","Effect":"{effect}","Action":"{service}:{verb}","Resource":"{prefix}/team{p}-{s}-*"{condition}}}"#
            )
        })
        .collect();
    format!(r#"{{"Version":"2012-10-17","Statement":[{}]}}"#, statements.join(","))
}

fn report(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let p50 = percentile(&samples, 0.50);
    println!(
        "| {label} | {} | {:.1} µs | {:.1} µs | {:.1} µs |",
        samples.len(),
        p50.as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
    p50
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("atelier-bench-{}", uuid::Uuid::new_v4().simple()));
    let state = atelier_server::AppState::new(Config::for_data_dir(dir.clone(), None)).await.expect("state");
    let db = state.db.clone();
    let mut names = Vec::new();
    for p in 0..50 {
        let name = format!("P{p}");
        store::create_policy(&db, "bench", &name, "", &policy(p)).await.expect("policy");
        names.push(name);
    }
    names.push("ReadOnly".into());
    let user = accounts::create_user(
        &db,
        NewUser {
            username: "bench".into(),
            display_name: String::new(),
            password: "bench-password-1".into(),
            policies: names,
            groups: Vec::new(),
        },
    )
    .await
    .expect("user");

    println!("| measurement | samples | p50 | p99 | max |");
    println!("|---|---|---|---|---|");

    let mut compile = Vec::new();
    let mut compiled = None;
    for _ in 0..20 {
        let start = Instant::now();
        compiled = Some(store::compile_for_user(&db, &user).await.expect("compile"));
        compile.push(start.elapsed());
    }
    let compiled = compiled.expect("compiled");
    let statements = compiled.len();
    report(&format!("compile {statements} statements (load + translate + parse)"), compile);

    let principal = Principal::new(user.clone(), Credential::Session, compiled.into(), None, Some("10.0.0.1".into()));
    let requests: Vec<(Action, Resource)> = (0..64)
        .map(|i| {
            let (action, prefix) = [
                (Action::GetModelGroup, "atelier:models:group"),
                (Action::ListDatasets, "atelier:datasets:dataset"),
                (Action::CreateTrainingJob, "atelier:training:job"),
                (Action::InvokeEndpoint, "atelier:endpoints:endpoint"),
            ][i % 4];
            let resource = Resource::new(format!("{prefix}/team{}-{}-x", i % 50, i % 20))
                .created_by("someone")
                .tagged("team", format!("t{}", i % 50));
            (action, resource)
        })
        .collect();
    let mut allowed = 0;
    for (a, r) in &requests {
        allowed += usize::from(principal.can(*a, r));
    }
    let mut decide = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let (a, r) = &requests[i % requests.len()];
        let start = Instant::now();
        let d = principal.decide(*a, r).expect("decision");
        decide.push(start.elapsed());
        std::hint::black_box(d);
    }
    let decision_p50 = report(&format!("decision, cached principal ({allowed}/64 request kinds allowed)"), decide);

    // Worst case for the index: 1,000 statements that all name the requested action and
    // every resource (`"Resource": "*"`), so all of them must be evaluated.
    let flat: Vec<(String, atelier_core::iam::PolicyDocument)> = (0..50)
        .map(|p| {
            let statements: Vec<String> = (0..20)
                .map(|s| format!(r#"{{"Effect":"Allow","Action":"models:Get*","Resource":"*","Condition":{{"StringEquals":{{"atelier:ResourceTag/team":"t{p}-{s}"}}}}}}"#))
                .collect();
            let text = format!(r#"{{"Version":"2012-10-17","Statement":[{}]}}"#, statements.join(","));
            (format!("F{p}"), atelier_core::iam::document::parse(&text).expect("flat policy"))
        })
        .collect();
    let vars =
        atelier_core::iam::engine::Vars { username: "bench".into(), userid: user.id.clone(), groups: Vec::new() };
    let flat = atelier_core::iam::CompiledPolicies::compile(flat.iter().map(|(n, d)| (n.as_str(), d)), &vars)
        .expect("compile");
    let flat = Principal::new(user.clone(), Credential::Session, flat.into(), None, None);
    let resource = Resource::new("atelier:models:group/fraud").tagged("team", "t49-19");
    let mut worst = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        let start = Instant::now();
        std::hint::black_box(flat.decide(Action::GetModelGroup, &resource).expect("decision"));
        worst.push(start.elapsed());
    }
    report("decision, worst case: 1,000 statements on the same action and `*`", worst);

    // A whole REST call: authentication (token lookup), the cached policies, the
    // decision, a query, the audit hook and JSON.
    let token = atelier_core::tokens::create(&db, &user, "bench", None, None).await.expect("token").secret;
    let router = atelier_server::app(state.clone());
    let call = || {
        let router = router.clone();
        let token = token.clone();
        async move {
            let request = Request::get("/api/v1/model-groups")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request");
            let start = Instant::now();
            let response = router.oneshot(request).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            start.elapsed()
        }
    };
    for _ in 0..200 {
        call().await;
    }
    let mut calls = Vec::new();
    for _ in 0..3000 {
        calls.push(call().await);
    }
    let call_p50 = report("GET /api/v1/model-groups in process (same principal)", calls);
    println!();
    println!(
        "The decision is {:.2}% of a typical authorized call (p50 against p50).",
        decision_p50.as_secs_f64() / call_p50.as_secs_f64() * 100.0
    );
    let _ = std::fs::remove_dir_all(dir);
}
