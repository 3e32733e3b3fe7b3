//! Test harness: a real router over a real, fresh database per test, driven without a
//! socket. SQLite by default; PostgreSQL when `ATELIER_TEST_POSTGRES_URL` is set (a
//! new database is created on that server for each test).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;

use atelier_core::accounts::{self, NewUser, User};
use atelier_server::config::Config;
use atelier_server::AppState;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use leptos::server_fn::ServerFn;
use serde_json::Value;
use sqlx::Connection;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    data_dir: PathBuf,
}

/// A response, read in full.
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    /// The `name=value` of the session cookie this response sets.
    pub fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("atelier_session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
    }
}

/// Which database the tests run against.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("ATELIER_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())
}

/// The S3-compatible bucket the tests keep artifacts in, when set
/// (`ATELIER_TEST_S3_URL=s3://bucket`, with `AWS_ENDPOINT` and credentials); each test
/// gets its own prefix there.
pub fn s3_test_url() -> Option<String> {
    std::env::var("ATELIER_TEST_S3_URL").ok().filter(|u| !u.is_empty())
}

async fn fresh_database_url() -> Option<String> {
    let admin = postgres_admin_url()?;
    let name = format!("atelier_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&admin).await.expect("connect to the test PostgreSQL server");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    let base = admin.split('?').next().unwrap_or(&admin);
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    Some(format!("{base}/{name}"))
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with_config(|_| {}).await
    }

    /// A test app whose settings `adjust` may change.
    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let data_dir = std::env::temp_dir().join(format!("atelier-test-{}", uuid::Uuid::new_v4().simple()));
        let database_url = fresh_database_url().await;
        let mut config = Config::for_data_dir(data_dir.clone(), database_url);
        config.artifact_store = s3_test_url().map(|base| format!("{base}/{}", uuid::Uuid::new_v4().simple()));
        adjust(&mut config);
        let state = AppState::new(config).await.expect("app state");
        let router = atelier_server::app(state.clone());
        TestApp { state, router, data_dir }
    }

    /// Serves the app on a loopback port, with the compute sweeper running, for real
    /// agent processes to talk to. Returns the base URL.
    pub async fn listen(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let app = self.router.clone().into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        atelier_server::compute::spawn_sweeper(self.state.clone());
        format!("http://{addr}")
    }

    /// The database URL this app uses (for running the CLI against it).
    pub fn database_url(&self) -> String {
        self.state.config.database_url()
    }

    /// A user; `admin` attaches AdministratorAccess.
    pub async fn create_user(&self, username: &str, admin: bool) -> User {
        let policies = if admin { vec![accounts::ADMIN_POLICY.to_string()] } else { Vec::new() };
        self.create_user_with(username, &policies).await
    }

    /// A user with these policies attached.
    pub async fn create_user_with(&self, username: &str, policies: &[String]) -> User {
        accounts::create_user(
            &self.state.db,
            NewUser {
                username: username.into(),
                display_name: String::new(),
                password: PASSWORD.into(),
                policies: policies.to_vec(),
                groups: Vec::new(),
            },
        )
        .await
        .expect("create user")
    }

    /// An API token of `user`, optionally narrowed by an inline policy.
    pub async fn token_for(&self, user: &User, policy: Option<&str>) -> String {
        atelier_core::tokens::create(&self.state.db, user, "test", None, policy).await.expect("token").secret
    }

    /// Adds a batch to a dataset: `POST /api/v1/datasets/{dataset}/batches` with a
    /// multipart body of (field, file name, bytes).
    pub async fn upload_batch(
        &self,
        token: &str,
        dataset: &str,
        parts: &[(&str, Option<&str>, &[u8])],
    ) -> TestResponse {
        let request = Request::builder()
            .method(axum::http::Method::POST)
            .uri(format!("/api/v1/datasets/{dataset}/batches"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(Body::from(multipart(parts)))
            .expect("request");
        self.send(request).await
    }

    /// Sends a request through the whole router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
        TestResponse { status, headers, body }
    }

    /// `method path` with optional cookie / bearer token and JSON body.
    pub async fn call(&self, method: Method, path: &str, auth: Auth<'_>, json: Option<Value>) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        builder = auth.apply(builder);
        let body = match json {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).expect("request")).await
    }

    /// Posts the sign-in form the way the browser's server function call does.
    pub async fn sign_in_response(&self, username: &str, password: &str, auth: Auth<'_>) -> TestResponse {
        self.server_fn(
            <app::auth::SignIn as ServerFn>::PATH,
            &[("username", username), ("password", password)],
            auth,
            &[],
        )
        .await
    }

    /// Posts the sign-in form from client address `ip`.
    pub async fn sign_in_from(&self, ip: [u8; 4], username: &str, password: &str) -> TestResponse {
        let body = format!("username={}&password={}", urlencode(username), urlencode(password));
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(<app::auth::SignIn as ServerFn>::PATH)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Body::from(body))
            .expect("request");
        request.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
        self.send(request).await
    }

    /// Signs in and returns the session cookie.
    pub async fn sign_in(&self, username: &str, password: &str) -> String {
        let response = self.sign_in_response(username, password, Auth::None).await;
        assert_eq!(response.status, StatusCode::OK, "sign-in failed: {}", response.text());
        response.session_cookie().expect("session cookie")
    }

    /// Calls a server function with form fields and extra headers.
    pub async fn server_fn(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        auth: Auth<'_>,
        extra_headers: &[(&str, &str)],
    ) -> TestResponse {
        let body = fields.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !extra_headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            // What the hydrated page's server function client sends.
            builder = builder.header(header::ACCEPT, "application/json");
        }
        for (k, v) in extra_headers {
            builder = builder.header(*k, *v);
        }
        builder = auth.apply(builder);
        self.send(builder.body(Body::from(body)).expect("request")).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// How a test request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Cookie(&'a str),
    Bearer(&'a str),
}

impl Auth<'_> {
    fn apply(self, builder: axum::http::request::Builder) -> axum::http::request::Builder {
        match self {
            Auth::None => builder,
            Auth::Cookie(c) => builder.header(header::COOKIE, c),
            Auth::Bearer(t) => builder.header(header::AUTHORIZATION, format!("Bearer {t}")),
        }
    }
}

fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The boundary `multipart` puts between parts.
pub const BOUNDARY: &str = "atelier-test-boundary";

/// A multipart body of (field, file name, bytes); a `None` file name is a plain field.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, file, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => {
                body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{field}\"\r\n\r\n").as_bytes())
            }
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}
