//! The agent's side of the protocol: one HTTP client, authenticated with the node
//! token, talking to the server's `/agent/v1/` routes.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use atelier_protocol::{
    Assignment, HeartbeatRequest, HeartbeatResponse, LogBatch, RegisterRequest, RegisterResponse, StatusReport,
};
use futures::StreamExt;
use reqwest::{Body, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

/// Why a call failed, as far as the agent's reaction goes.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server refused the node token: retrying will not help.
    #[error("the server refused the node token: {0}")]
    Refused(String),
    /// The server answered with an error about this request (4xx other than 401).
    #[error("server refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Network trouble or a server error: retry later.
    #[error("{0}")]
    Transient(String),
}

pub type CallResult<T> = Result<T, CallError>;

/// What a poll for work got.
#[derive(Debug)]
pub enum Work {
    /// A job to run (200).
    Assigned(Box<Assignment>),
    /// Nothing before the wait ran out (204).
    Nothing,
    /// Something this node should run changed (kernels): heartbeat now to learn what
    /// (202).
    Sync,
}

/// A connection to the server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(server: &str, token: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Client { http, base: server.trim_end_matches('/').to_string(), token: token.to_string() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/agent/v1{path}", self.base)
    }

    async fn check(response: reqwest::Response) -> CallResult<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        Err(match status {
            StatusCode::UNAUTHORIZED => CallError::Refused(message),
            s if s.is_client_error() && s != StatusCode::REQUEST_TIMEOUT && s != StatusCode::TOO_MANY_REQUESTS => {
                CallError::Rejected { status: s.as_u16(), message }
            }
            s => CallError::Transient(format!("server answered {s}: {message}")),
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B, timeout: Duration) -> CallResult<T> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| CallError::Transient(e.to_string()))?;
        Self::check(response).await?.json().await.map_err(|e| CallError::Transient(e.to_string()))
    }

    pub async fn register(&self, request: &RegisterRequest) -> CallResult<RegisterResponse> {
        self.post("/register", request, Duration::from_secs(30)).await
    }

    /// Gives up after `timeout`: a heartbeat that hangs must not delay the next one (or
    /// the fencing decision).
    pub async fn heartbeat(&self, request: &HeartbeatRequest, timeout: Duration) -> CallResult<HeartbeatResponse> {
        self.post("/heartbeat", request, timeout).await
    }

    /// Waits up to `wait` for work.
    pub async fn poll_work(&self, wait: Duration) -> CallResult<Work> {
        let response = self
            .http
            .get(self.url(&format!("/work?wait={}", wait.as_secs())))
            .bearer_auth(&self.token)
            .timeout(wait + Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| CallError::Transient(e.to_string()))?;
        let response = Self::check(response).await?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(Work::Nothing),
            StatusCode::ACCEPTED => Ok(Work::Sync),
            _ => response
                .json()
                .await
                .map(|a| Work::Assigned(Box::new(a)))
                .map_err(|e| CallError::Transient(e.to_string())),
        }
    }

    pub async fn report(&self, job_id: &str, report: &StatusReport) -> CallResult<()> {
        let _: serde_json::Value =
            self.post(&format!("/jobs/{job_id}/status"), report, Duration::from_secs(30)).await?;
        Ok(())
    }

    pub async fn send_logs(&self, job_id: &str, batch: &LogBatch) -> CallResult<()> {
        let _: serde_json::Value = self.post(&format!("/jobs/{job_id}/logs"), batch, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Streams an input artifact of the job into `dest`.
    pub async fn download(&self, job_id: &str, attempt: i64, artifact_id: &str, dest: &Path) -> anyhow::Result<u64> {
        self.fetch(&format!("/jobs/{job_id}/inputs/{artifact_id}?attempt={attempt}"), dest).await
    }

    /// Streams the model artifact of an instance placed on this node into `dest`.
    pub async fn download_model(&self, instance_id: &str, dest: &Path) -> anyhow::Result<u64> {
        self.fetch(&format!("/instances/{instance_id}/artifact"), dest).await
    }

    async fn fetch(&self, path: &str, dest: &Path) -> anyhow::Result<u64> {
        let response = self.http.get(self.url(path)).bearer_auth(&self.token).send().await?;
        let response = Self::check(response).await?;
        let mut file = tokio::fs::File::create(dest).await.with_context(|| format!("creating {}", dest.display()))?;
        let mut stream = response.bytes_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(written)
    }

    /// Uploads a file as the job's checkpoint or one of its outputs (`what` is
    /// `checkpoint`, `outputs/model` or `outputs/output`).
    pub async fn upload(&self, job_id: &str, attempt: i64, what: &str, file: &Path) -> anyhow::Result<()> {
        let handle = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
        let length = handle.metadata().await?.len();
        let body = Body::wrap_stream(tokio_util::io::ReaderStream::new(handle));
        let response = self
            .http
            .put(self.url(&format!("/jobs/{job_id}/{what}?attempt={attempt}")))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .body(body)
            .send()
            .await?;
        Self::check(response).await?;
        Ok(())
    }
}

/// Fails unless the server URL looks usable.
pub fn check_server_url(url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--server must be an http:// or https:// URL, got {url}");
    }
    Ok(())
}
