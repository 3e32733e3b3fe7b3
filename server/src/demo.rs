//! `atelier demo`: a studio with the whole story already played out. Once the server
//! listens and the local agent's node is Ready, this module seeds the studio by driving
//! its own public REST API over HTTP with bearer tokens, as a script of the team's
//! would: users and a labeling team, a dataset of generated images, a labeling job two
//! labelers finish (one disagreeing once), a training job on its output, a model version
//! a reviewer approves, an endpoint invoked with typical and then shifted images under
//! a model monitor, and a "Getting started" notebook. Going through HTTP rather than the
//! core functions means the demo exercises the same paths users do.
//!
//! Only the API tokens are made in-process (`atelier_core::tokens`), as
//! `atelier token create` makes them: the REST API creates tokens for their caller only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use app::compute::NodeView;
use app::datasets::BatchInfo;
use app::training::TrainingJobDetail;
use atelier_core::accounts;
use atelier_core::db::Db;
use atelier_protocol::endpoints::Endpoint;
use atelier_protocol::labeling::{LabelingJobDetail, NextTask, ReviewItem, Submitted};
use atelier_protocol::models::ModelVersion;
use atelier_protocol::notebooks::Notebook;
use atelier_protocol::JobState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// The user whose presence means the demo has been seeded already.
const MARKER_USER: &str = "dana";
const TEAM: &str = "demo-labelers";
const DATASET: &str = "demo-shapes";
const LABELING_JOB: &str = "demo-shapes-labels";
const TRAINING_JOB: &str = "demo-shapes-1";
const MODEL_GROUP: &str = "demo-shapes";
const ENDPOINT: &str = "demo-shapes";
const NOTEBOOK: &str = "Getting started";
/// The compute node the seeding waits for (the one `atelier serve` starts beside itself).
const NODE: &str = crate::compute::LOCAL_NODE;

/// Generated images are this many pixels square.
const SIDE: usize = 32;
/// Training images per class.
const PER_CLASS: usize = 10;
/// Invocations like the training images, then invocations from a "changed camera".
const TYPICAL_INVOCATIONS: usize = 25;
const SHIFTED_INVOCATIONS: usize = 15;
/// The classes and their base colours.
const CLASSES: [(&str, [u8; 3]); 3] = [("red", [200, 45, 45]), ("green", [45, 160, 65]), ("blue", [50, 80, 205])];

/// One demo account.
#[derive(Debug, Clone)]
pub struct Person {
    pub username: String,
    pub password: String,
    /// What the person does in the story, with their policy.
    pub role: String,
    /// An API token acting as the person (not printed except dana's).
    pub token: String,
}

/// What the seeding did.
#[derive(Debug)]
pub struct Report {
    /// The accounts it created (every password is random).
    pub people: Vec<Person>,
    /// Steps that went wrong without stopping the story (the model monitor).
    pub warnings: Vec<String>,
    /// The step that stopped the story, if one did; what came before it stays.
    pub failure: Option<String>,
    pub elapsed: Duration,
}

impl Report {
    /// The token of `username`, if the seeding created that user.
    pub fn token_of(&self, username: &str) -> Option<&str> {
        self.people.iter().find(|p| p.username == username).map(|p| p.token.as_str())
    }

    /// Prints the accounts and the outcome for the person who started the demo.
    pub fn print(&self, url: &str) {
        let mut out = String::new();
        out.push_str(&format!("\n==== Atelier demo at {url} ====\n"));
        out.push_str(&format!("  {:<8} {:<14} {}\n", "user", "password", "role"));
        out.push_str(&format!(
            "  {:<8} {:<14} {}\n",
            "admin", "(see above)", "administrator (AdministratorAccess; printed at first start)"
        ));
        for p in &self.people {
            out.push_str(&format!("  {:<8} {:<14} {}\n", p.username, p.password, p.role));
        }
        if let Some(dana) = self.token_of(MARKER_USER) {
            out.push_str(&format!("  API token of {MARKER_USER} (for the \"{NOTEBOOK}\" notebook): {dana}\n"));
        }
        for warning in &self.warnings {
            out.push_str(&format!("  warning: {warning}\n"));
        }
        match &self.failure {
            None => out.push_str(&format!("  seeded in {} s; the studio keeps running\n", self.elapsed.as_secs())),
            Some(failure) => out.push_str(&format!(
                "  SEEDING STOPPED after {} s: {failure}\n  the studio keeps running with what was created\n",
                self.elapsed.as_secs()
            )),
        }
        out.push_str("====\n");
        println!("{out}");
    }
}

/// Seeds the studio in the background once it answers, printing progress and then the
/// accounts to stdout. Errors are printed and logged; the server keeps serving.
/// `api_url` is where this process reaches its own listener; `public_url` what users open.
pub fn spawn(db: Db, api_url: String, public_url: String) {
    tokio::spawn(async move {
        match seed(&db, &api_url).await {
            Ok(None) => {
                progress(format!("demo data already present (user {MARKER_USER} exists); serving it as it is"));
            }
            Ok(Some(report)) => {
                if let Some(failure) = &report.failure {
                    tracing::error!(error = %failure, "demo: seeding stopped");
                }
                report.print(&public_url);
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "demo: seeding failed");
                println!("demo: SEEDING FAILED: {err:#}\ndemo: the studio keeps running at {public_url}");
            }
        }
    });
}

/// Seeds the studio at `url` (whose database is `db`) with the demo story. `None` when
/// it was seeded before (the user `dana` exists). An error means the seeding stopped
/// before the accounts were all made; a failure after that is in the report, with them.
pub async fn seed(db: &Db, url: &str) -> anyhow::Result<Option<Report>> {
    if accounts::find_by_username(db, MARKER_USER).await?.is_some() {
        return Ok(None);
    }
    let started = Instant::now();
    progress(format!("seeding the studio through its REST API at {url} (under a minute)"));
    let admin = accounts::find_by_username(db, "admin")
        .await?
        .context("the demo needs the `admin` account, which this studio does not have")?;
    let admin_token = atelier_core::tokens::create(db, &admin, "demo seeding", Some(1), None).await?.secret;
    let api = Api::new(url)?;
    api.wait_for_node(&admin_token).await?;
    let people = create_people(db, &api, &admin_token).await?;
    progress(format!("users {} created", people.iter().map(|p| p.username.as_str()).collect::<Vec<_>>().join(", ")));
    let mut story = Story { api, url: url.to_string(), people, warnings: Vec::new() };
    let failure = story.play().await.err().map(|err| format!("{err:#}"));
    Ok(Some(Report { people: story.people, warnings: story.warnings, failure, elapsed: started.elapsed() }))
}

/// A progress line on stdout, and the same in the log.
fn progress(line: String) {
    tracing::info!("demo: {line}");
    println!("demo: {line}");
}

/// A random password of 12 letters and digits.
fn password() -> String {
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(12).map(char::from).collect()
}

async fn create_people(db: &Db, api: &Api, admin: &str) -> anyhow::Result<Vec<Person>> {
    api.call::<Value>(
        admin,
        Method::POST,
        "/api/v1/groups",
        Some(json!({"name": TEAM, "description": "labels the demo-shapes images"})),
    )
    .await?;
    let cast: [(&str, &str, &str, &[&str]); 4] = [
        ("dana", "Dana Data", "data scientist (DataScientist)", &[]),
        ("lena", "Lena Labeler", "labeler (Labeler, team demo-labelers)", &[TEAM]),
        ("liam", "Liam Labeler", "labeler (Labeler, team demo-labelers)", &[TEAM]),
        ("rita", "Rita Reviewer", "reviewer (Reviewer)", &[]),
    ];
    let mut people = Vec::new();
    for (username, display_name, role, groups) in cast {
        let policy = match username {
            "dana" => "DataScientist",
            "rita" => "Reviewer",
            _ => "Labeler",
        };
        let password = password();
        api.call::<Value>(
            admin,
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": username, "display_name": display_name, "password": password,
                        "policies": [policy], "groups": groups})),
        )
        .await?;
        let user =
            accounts::find_by_username(db, username).await?.with_context(|| format!("user {username} vanished"))?;
        let token = atelier_core::tokens::create(db, &user, "demo", None, None).await?.secret;
        people.push(Person { username: username.into(), password, role: role.into(), token });
    }
    Ok(people)
}

/// The story after the accounts exist, step by step.
struct Story {
    api: Api,
    url: String,
    people: Vec<Person>,
    warnings: Vec<String>,
}

impl Story {
    fn token(&self, username: &str) -> anyhow::Result<String> {
        self.people
            .iter()
            .find(|p| p.username == username)
            .map(|p| p.token.clone())
            .with_context(|| format!("no demo account {username}"))
    }

    fn warn(&mut self, warning: String) {
        tracing::warn!("demo: {warning}");
        println!("demo: warning: {warning}");
        self.warnings.push(warning);
    }

    async fn play(&mut self) -> anyhow::Result<()> {
        let mut rng = StdRng::seed_from_u64(2024);
        let truth = self.dataset(&mut rng).await?;
        self.labeling(&truth).await?;
        self.training().await?;
        let version = self.registry().await?;
        self.endpoint(version, &mut rng).await?;
        self.notebook().await
    }

    /// Step 3: the dataset, as dana. Answers each image's true class by file name.
    async fn dataset(&self, rng: &mut StdRng) -> anyhow::Result<HashMap<String, &'static str>> {
        let dana = self.token("dana")?;
        let mut classes: Vec<&'static str> =
            CLASSES.iter().flat_map(|(name, _)| std::iter::repeat_n(*name, PER_CLASS)).collect();
        // Shuffled, so neither the dataset grid nor the labeling queue is sorted by class.
        for i in (1..classes.len()).rev() {
            classes.swap(i, rng.gen_range(0..=i));
        }
        let mut files = Vec::new();
        for (i, class) in classes.iter().enumerate() {
            let pixels = shape_image(rng, colour_of(class));
            files.push((format!("shape-{:02}.png", i + 1), encode_png(&pixels)?));
        }
        self.api
            .call::<Value>(
                &dana,
                Method::POST,
                "/api/v1/datasets",
                Some(json!({"name": DATASET, "kind": "image",
                            "description": "Red, green and blue circles and squares on grey (generated by atelier demo)"})),
            )
            .await?;
        let mut items = 0;
        for chunk in files.chunks(10) {
            let (content_type, body) = multipart(chunk);
            let path = format!("/api/v1/datasets/{DATASET}/batches");
            let request = self.api.request(&dana, Method::POST, &path).header("content-type", content_type).body(body);
            let batch: BatchInfo = answer(request, &format!("POST {path}")).await?;
            if !batch.rejected.is_empty() {
                bail!("the dataset refused images: {}", batch.rejected.join("; "));
            }
            items += batch.item_count;
        }
        progress(format!("dataset {DATASET} uploaded ({items} images in {} batches)", files.len().div_ceil(10)));
        Ok(files.iter().map(|(name, _)| name.clone()).zip(classes).collect())
    }

    /// Step 4: the labeling job, as dana; lena and liam label every item, rita reviews
    /// the item they disagreed on.
    async fn labeling(&self, truth: &HashMap<String, &'static str>) -> anyhow::Result<()> {
        let dana = self.token("dana")?;
        let instructions = "Pick the **colour of the shape** (circle or square), not of the background:\n\n\
                            - `r`: red\n- `g`: green\n- `b`: blue\n\n\
                            Press Enter to submit, S to skip, Z to undo.";
        self.api
            .call::<LabelingJobDetail>(
                &dana,
                Method::POST,
                "/api/v1/labeling/jobs",
                Some(json!({
                    "name": LABELING_JOB, "dataset": DATASET, "task_type": "image_classification",
                    "categories": [{"name": "red", "hotkey": "r"}, {"name": "green", "hotkey": "g"},
                                   {"name": "blue", "hotkey": "b"}],
                    "instructions": instructions, "teams": [TEAM], "workers_per_item": 2, "review_below": 0.6,
                })),
            )
            .await?;
        let mut rng = StdRng::seed_from_u64(7);
        for labeler in ["lena", "liam"] {
            let token = self.token(labeler)?;
            let mut done = 0;
            loop {
                let next: NextTask = self
                    .api
                    .call(&token, Method::POST, &format!("/api/v1/labeling/jobs/{LABELING_JOB}/tasks/next"), None)
                    .await?;
                let Some(task) = next.task else { break };
                let true_class = truth
                    .get(&task.item_name)
                    .with_context(|| format!("task for an unknown item {}", task.item_name))?;
                // Liam gets his first item wrong, so agreement and confidence have something to show.
                let label = if labeler == "liam" && done == 0 { other_class(true_class) } else { true_class };
                let path = format!("/api/v1/labeling/jobs/{LABELING_JOB}/tasks/{}/submit", task.id);
                let body = json!({"answer": {"label": label}, "duration_ms": rng.gen_range(900..4000)});
                let _: Submitted = self.api.call(&token, Method::POST, &path, Some(body)).await?;
                done += 1;
                if done > truth.len() {
                    bail!("{labeler} was handed more tasks than the dataset has items");
                }
            }
            tracing::info!(labeler, tasks = done, "demo: labeler finished");
        }
        let job_path = format!("/api/v1/labeling/jobs/{LABELING_JOB}");
        let mut job: LabelingJobDetail = self.api.call(&dana, Method::GET, &job_path, None).await?;
        // Where the two disagreed, consolidation is unsure: rita settles it in review.
        let mut verdicts = Vec::new();
        if job.job.status == "Reviewing" {
            let rita = self.token("rita")?;
            let queue: Vec<ReviewItem> =
                self.api.call(&rita, Method::GET, &format!("{job_path}/review?limit=200"), None).await?;
            for item in queue {
                let true_class = truth
                    .get(&item.item_name)
                    .with_context(|| format!("review of an unknown item {}", item.item_name))?;
                let reviewed: Reviewed = self
                    .api
                    .call(
                        &rita,
                        Method::POST,
                        &format!("{job_path}/review/{}", item.item_seq),
                        Some(json!({"answer": {"label": true_class}})),
                    )
                    .await?;
                verdicts.push(format!("{} {}", item.item_name, reviewed.verdict));
            }
            job = self.api.call(&dana, Method::GET, &job_path, None).await?;
        }
        if job.job.status != "Completed" {
            bail!("labeling job {LABELING_JOB} is {} after both labelers and the review finished", job.job.status);
        }
        let review =
            if verdicts.is_empty() { String::new() } else { format!("; rita reviewed {}", verdicts.join(", ")) };
        progress(format!("labeling done (2 labelers, {} items{review})", job.job.item_count));
        Ok(())
    }

    /// Step 5: the built-in image classifier on the labeling output, as dana.
    async fn training(&self) -> anyhow::Result<()> {
        let dana = self.token("dana")?;
        let spec = json!({
            "algorithm": {"type": "builtin", "name": "image_classification"},
            "hyperparameters": {"epochs": "30", "batch_size": "8", "learning_rate": "0.003", "image_size": "16",
                                "channels": "8"},
            "channels": [{"name": "train", "labeling_job": LABELING_JOB}],
            "resources": {"cpus": 1, "memory_mb": 1024},
        });
        self.api
            .call::<Value>(
                &dana,
                Method::POST,
                "/api/v1/training-jobs",
                Some(json!({"name": TRAINING_JOB, "spec": spec})),
            )
            .await?;
        let started = Instant::now();
        let path = format!("/api/v1/training-jobs/{TRAINING_JOB}");
        let mut last = None;
        let detail = loop {
            let detail: TrainingJobDetail = self.api.call(&dana, Method::GET, &path, None).await?;
            if last != Some(detail.job.state) {
                tracing::info!(state = ?detail.job.state, "demo: training job {TRAINING_JOB}");
                last = Some(detail.job.state);
            }
            match detail.job.state {
                JobState::Completed => break detail,
                JobState::Failed | JobState::Stopped => {
                    bail!("training job {TRAINING_JOB} {:?}: {}", detail.job.state, detail.job.message)
                }
                _ if started.elapsed() > Duration::from_secs(900) => {
                    bail!("training job {TRAINING_JOB} is still {:?} after 15 minutes", detail.job.state)
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        let accuracy = detail
            .job
            .final_metrics
            .get("validation_accuracy")
            .map(|a| format!(", validation_accuracy {a:.2}"))
            .unwrap_or_default();
        progress(format!("training job {TRAINING_JOB} completed in {} s{accuracy}", started.elapsed().as_secs()));
        Ok(())
    }

    /// Step 6: registered by dana, approved by rita. Answers the version number.
    async fn registry(&self) -> anyhow::Result<i64> {
        let (dana, rita) = (self.token("dana")?, self.token("rita")?);
        self.api
            .call::<Value>(
                &dana,
                Method::POST,
                "/api/v1/model-groups",
                Some(json!({"name": MODEL_GROUP, "description": "The colour of the shape in an image"})),
            )
            .await?;
        let version: ModelVersion = self
            .api
            .call(
                &dana,
                Method::POST,
                &format!("/api/v1/model-groups/{MODEL_GROUP}/versions"),
                Some(json!({"training_job": TRAINING_JOB,
                            "description": format!("small CNN trained on {LABELING_JOB}")})),
            )
            .await?;
        let v = version.version;
        self.api
            .call::<Value>(
                &rita,
                Method::POST,
                &format!("/api/v1/model-groups/{MODEL_GROUP}/versions/{v}/approval"),
                Some(json!({"status": "Approved", "expected_status": "PendingManualApproval",
                            "comment": "Separates the three colours on held-out images; fine for the demo endpoint."})),
            )
            .await?;
        progress(format!("model {MODEL_GROUP} version {v} registered by dana and approved by rita"));
        Ok(v)
    }

    /// Step 7: the endpoint, its data capture, invocations and the model monitor, as dana.
    async fn endpoint(&mut self, version: i64, rng: &mut StdRng) -> anyhow::Result<()> {
        let dana = self.token("dana")?;
        let path = format!("/api/v1/endpoints/{ENDPOINT}");
        self.api
            .call::<Endpoint>(
                &dana,
                Method::POST,
                "/api/v1/endpoints",
                Some(json!({"name": ENDPOINT, "variants": [{"model_group": MODEL_GROUP, "model_version": version,
                             "instance_count": 1, "cpus": 1, "memory_mb": 512}]})),
            )
            .await?;
        let started = Instant::now();
        loop {
            let endpoint: Endpoint = self.api.call(&dana, Method::GET, &path, None).await?;
            match endpoint.status.as_str() {
                "InService" => break,
                "Failed" => bail!("endpoint {ENDPOINT} failed: {}", endpoint.reason),
                status if started.elapsed() > Duration::from_secs(300) => {
                    bail!("endpoint {ENDPOINT} is still {status} after 5 minutes")
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        progress(format!("endpoint {ENDPOINT} InService after {} s", started.elapsed().as_secs()));
        self.api
            .call::<Value>(&dana, Method::PUT, &format!("{path}/data-capture"), Some(json!({"percent": 100})))
            .await?;
        let monitor = self
            .api
            .call::<Value>(&dana, Method::PUT, &format!("{path}/monitor"), Some(json!({"frequency": "manual"})))
            .await;
        let monitored = match monitor {
            Ok(_) => true,
            Err(err) => {
                self.warn(format!("the model monitor of {ENDPOINT} could not be set up: {err:#}"));
                false
            }
        };

        let mut correct = 0;
        for i in 0..TYPICAL_INVOCATIONS + SHIFTED_INVOCATIONS {
            let (class, colour) = CLASSES[rng.gen_range(0..CLASSES.len())];
            let mut pixels = shape_image(rng, colour);
            if i >= TYPICAL_INVOCATIONS {
                // A changed camera: every other image much darker, the rest purple-tinted.
                if i % 2 == 0 {
                    darken(&mut pixels);
                } else {
                    tint_purple(&mut pixels);
                }
            }
            let request = self
                .api
                .request(&dana, Method::POST, &format!("/endpoints/{ENDPOINT}/invocations"))
                .header("content-type", "image/png")
                .body(encode_png(&pixels)?);
            let prediction: Value = answer(request, &format!("POST /endpoints/{ENDPOINT}/invocations")).await?;
            if i < TYPICAL_INVOCATIONS && prediction["predictions"][0]["label"] == class {
                correct += 1;
            }
        }
        progress(format!(
            "{} invocations of {ENDPOINT}: {TYPICAL_INVOCATIONS} typical ({correct} predicted right), \
             {SHIFTED_INVOCATIONS} shifted (darker or purple)",
            TYPICAL_INVOCATIONS + SHIFTED_INVOCATIONS
        ));
        if monitored {
            self.monitor_run(&dana, &path).await;
        }
        Ok(())
    }

    /// Runs the model monitor once the captured invocations are stored (they are
    /// flushed every few seconds). Problems are warnings: the endpoint serves anyway.
    async fn monitor_run(&mut self, dana: &str, path: &str) {
        let wanted = (TYPICAL_INVOCATIONS + SHIFTED_INVOCATIONS) as i64;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut records = 0;
        while records < wanted && Instant::now() < deadline {
            match self.api.call::<Endpoint>(dana, Method::GET, path, None).await {
                Ok(endpoint) => records = endpoint.data_capture.records,
                Err(err) => tracing::debug!(error = %format!("{err:#}"), "demo: reading the endpoint"),
            }
            if records < wanted {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if records < wanted {
            self.warn(format!("only {records} of {wanted} invocations were captured after a minute"));
        }
        let run =
            self.api.call::<RunSummary>(dana, Method::POST, &format!("{path}/monitor/runs"), Some(json!({}))).await;
        match run {
            Ok(run) => progress(format!(
                "model monitor run {}: {} captured inputs, {} drifted features, {} violations ({})",
                run.status, run.rows, run.drifted, run.violations, run.message
            )),
            Err(err) => self.warn(format!("the model monitor of {ENDPOINT} could not run: {err:#}")),
        }
    }

    /// Step 8: a notebook reading the labeling output with Python's standard library.
    async fn notebook(&self) -> anyhow::Result<()> {
        let dana = self.token("dana")?;
        let created: Notebook =
            self.api.call(&dana, Method::POST, "/api/v1/notebooks", Some(json!({"name": NOTEBOOK}))).await?;
        let content = getting_started(&self.url);
        self.api
            .call::<Notebook>(
                &dana,
                Method::PUT,
                &format!("/api/v1/notebooks/{}/content", created.id),
                Some(json!({"content": content, "base_version": created.version})),
            )
            .await?;
        progress(format!("notebook \"{NOTEBOOK}\" created for dana (open it under Notebooks)"));
        Ok(())
    }
}

/// What a review did (`confirmed` or `corrected`).
#[derive(Debug, Deserialize)]
struct Reviewed {
    verdict: String,
}

/// The fields of a monitor run the demo reports.
#[derive(Debug, Deserialize)]
struct RunSummary {
    status: String,
    message: String,
    rows: i64,
    drifted: i64,
    violations: i64,
}

/// The "Getting started" notebook: Markdown and code cells that count the labels of the
/// labeling output, through the REST API, with nothing but Python's standard library.
fn getting_started(url: &str) -> Value {
    let markdown = |source: &str| json!({"cell_type": "markdown", "metadata": {}, "source": source});
    let code = |source: String| json!({"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": null});
    let intro = format!(
        "# Getting started\n\n\
         `atelier demo` played the whole loop in this studio:\n\n\
         1. **dana** uploaded the dataset `{DATASET}`: 30 generated images of red, green and blue shapes;\n\
         2. **lena** and **liam** (team `{TEAM}`) labeled each image in the labeling job `{LABELING_JOB}` \
         (liam got one wrong, so that item went to the review queue and **rita** settled it);\n\
         3. the training job `{TRAINING_JOB}` trained the built-in image classifier on the job's output manifest;\n\
         4. dana registered it as `{MODEL_GROUP}` version 1 and **rita** approved it;\n\
         5. the endpoint `{ENDPOINT}` serves it; the last invocations came from a \"changed camera\" \
         (darker, purple), which the model monitor reports as drift.\n\n\
         This notebook reads the labeling job's **output manifest** through the REST API, with Python's \
         standard library only, and counts the labels per class. Start a kernel, then run the cells \
         with Shift+Enter."
    );
    let setup = format!(
        "import json, os, urllib.request\n\
         from collections import Counter\n\n\
         BASE = os.environ.get(\"ATELIER_URL\", {url:?})\n\
         # An API token of yours (Account > API tokens); `atelier demo` printed one of dana's.\n\
         TOKEN = os.environ.get(\"ATELIER_TOKEN\") or \"paste-your-token-here\"\n\n\
         def get(path):\n    \
             request = urllib.request.Request(BASE + path, headers={{\"Authorization\": \"Bearer \" + TOKEN}})\n    \
             with urllib.request.urlopen(request) as response:\n        \
                 return response.read()"
    );
    let read = format!(
        "JOB = {LABELING_JOB:?}\n\
         manifest = [json.loads(line) for line in get(f\"/api/v1/labeling/jobs/{{JOB}}/output\").decode().splitlines() if line]\n\
         print(len(manifest), \"labeled items\")\n\
         manifest[0]"
    );
    let count = "counts = Counter(line[f\"{JOB}-metadata\"][\"class-name\"] for line in manifest)\n\
                 for label, n in sorted(counts.items()):\n    \
                     print(f\"{label:6} {n:3} {'#' * n}\")"
        .to_string();
    let reviewed = "# Items the labelers disagreed on, as a reviewer settled them (`confirmed` or `corrected`).\n\
                    for line in manifest:\n    \
                        meta = line[f\"{JOB}-metadata\"]\n    \
                        if meta.get(\"review\"):\n        \
                            print(line[\"source-ref\"], meta[\"class-name\"], meta[\"review\"])"
        .to_string();
    json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            markdown(&intro),
            code(setup),
            markdown("## The output manifest\n\nGround Truth's JSON Lines: one line per item, with `source-ref` \
                      (the image), the label attribute (the class index) and `<attribute>-metadata` \
                      (`class-name`, `confidence`, `human-annotated`, ...)."),
            code(read),
            markdown("## Labels per class"),
            code(count),
            code(reviewed),
            markdown(&format!(
                "## Next\n\n\
                 - Invoke the endpoint: `POST /endpoints/{ENDPOINT}/invocations` with a PNG body \
                 (`content-type: image/png`).\n\
                 - Endpoints > {ENDPOINT}: metrics, data capture and the model monitor's drift report.\n\
                 - Labeling jobs > {LABELING_JOB}: the quality report (agreement, kappa, confusion matrix)."
            )),
        ],
    })
}

/// This process's own REST API, reached over HTTP.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> anyhow::Result<Api> {
        // Generous: setting up the model monitor profiles the training images.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        Ok(Api { http, base: base.trim_end_matches('/').to_string() })
    }

    fn request(&self, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token)
    }

    /// `method path` with an optional JSON body; the answer decoded as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {path}");
        let mut request = self.request(token, method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request, &what).await
    }

    /// Waits until the compute node the demo trains and serves on is Ready.
    async fn wait_for_node(&self, admin: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let path = format!("/api/v1/compute/nodes/{NODE}");
        loop {
            let status = match self.call::<NodeView>(admin, Method::GET, &path, None).await {
                Ok(node) => node.status,
                Err(err) => format!("not registered ({err:#})"),
            };
            if status == "Ready" {
                progress(format!("compute node {NODE} is Ready"));
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the compute node `{NODE}` is not Ready after 2 minutes ({status}); the demo trains and serves on \
                     the local agent, so run it without --no-local-agent"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Sends the request; a 2xx answer is decoded as `T` (an empty body as JSON `null`),
/// anything else is an error naming the request and the API's message.
async fn answer<T: DeserializeOwned>(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<T> {
    let response = request.send().await.with_context(|| format!("{what}: no answer"))?;
    let status = response.status();
    let bytes = response.bytes().await.with_context(|| format!("{what}: reading the answer"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
        bail!("{what} answered {status}: {message}");
    }
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).with_context(|| format!("{what}: unexpected answer"))
}

/// A `multipart/form-data` body with each file as a `file` part: the content type
/// (with its boundary) and the bytes.
fn multipart(files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = format!("atelier-demo-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn colour_of(class: &str) -> [u8; 3] {
    CLASSES.iter().find(|(name, _)| *name == class).map(|(_, rgb)| *rgb).unwrap_or([128, 128, 128])
}

fn other_class(class: &str) -> &'static str {
    let at = CLASSES.iter().position(|(name, _)| *name == class).unwrap_or(0);
    CLASSES[(at + 1) % CLASSES.len()].0
}

/// RGB pixels (`SIDE` × `SIDE`) of a filled circle or square of `colour`, its shade,
/// size and position varied, on a light grey background with a little noise.
fn shape_image(rng: &mut StdRng, colour: [u8; 3]) -> Vec<u8> {
    let shade: i32 = rng.gen_range(-30..=30);
    let fill: Vec<i32> =
        colour.iter().map(|&c| (i32::from(c) + shade + rng.gen_range(-10..=10)).clamp(0, 255)).collect();
    let background: i32 = rng.gen_range(195..=235);
    let circle = rng.gen_bool(0.5);
    let side = SIDE as i32;
    let half: i32 = rng.gen_range(7..=12);
    // Off centre by a few pixels at most, so every shape covers the middle of the image.
    let (cx, cy) = (side / 2 + rng.gen_range(-4..=4), side / 2 + rng.gen_range(-4..=4));
    let mut pixels = Vec::with_capacity(SIDE * SIDE * 3);
    for y in 0..side {
        for x in 0..side {
            let (dx, dy) = (x - cx, y - cy);
            let inside = if circle { dx * dx + dy * dy <= half * half } else { dx.abs() <= half && dy.abs() <= half };
            let noise: i32 = rng.gen_range(-5..=5);
            for &shape in &fill {
                let value = if inside { shape } else { background } + noise;
                pixels.push(value.clamp(0, 255) as u8);
            }
        }
    }
    pixels
}

/// A much darker exposure.
fn darken(pixels: &mut [u8]) {
    for p in pixels {
        *p = (f32::from(*p) * 0.35) as u8;
    }
}

/// A purple colour cast.
fn tint_purple(pixels: &mut [u8]) {
    const PURPLE: [f32; 3] = [150.0, 40.0, 170.0];
    for (i, p) in pixels.iter_mut().enumerate() {
        *p = (f32::from(*p) * 0.45 + PURPLE[i % 3] * 0.55) as u8;
    }
}

/// Encodes `SIDE` × `SIDE` RGB pixels as a PNG.
fn encode_png(pixels: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, SIDE as u32, SIDE as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_images_are_pngs_of_the_right_size() {
        let mut rng = StdRng::seed_from_u64(1);
        for (_, colour) in CLASSES {
            let png = encode_png(&shape_image(&mut rng, colour)).expect("encode");
            assert_eq!(&png[1..4], b"PNG");
            // IHDR: width and height big-endian at bytes 16..24.
            assert_eq!(&png[16..24], &[0, 0, 0, 32, 0, 0, 0, 32]);
        }
    }

    #[test]
    fn shifted_images_are_darker_or_purple() {
        let mut rng = StdRng::seed_from_u64(2);
        let pixels = shape_image(&mut rng, colour_of("green"));
        let mean = |p: &[u8], c: usize| p.iter().skip(c).step_by(3).map(|&v| f64::from(v)).sum::<f64>() / 1024.0;
        let mut dark = pixels.clone();
        darken(&mut dark);
        assert!(mean(&dark, 1) < mean(&pixels, 1) * 0.5);
        let mut purple = pixels.clone();
        tint_purple(&mut purple);
        assert!(mean(&purple, 1) < mean(&pixels, 1) && mean(&purple, 2) > mean(&purple, 1));
    }

    #[test]
    fn a_multipart_body_has_one_file_part_per_image() {
        let files = vec![("a.png".to_string(), vec![1, 2]), ("b.png".to_string(), vec![3])];
        let (content_type, body) = multipart(&files);
        let boundary = content_type.split("boundary=").nth(1).expect("boundary");
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2);
        assert!(text.contains("filename=\"b.png\"") && text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
