//! Prometheus metrics, served at `GET /metrics` in the text exposition format:
//! request counts and latency histograms by route; endpoint invocations, errors and
//! model/overhead latency by endpoint and variant (counted by this replica: a scraper
//! sums replicas); and, read from the database, instance counts and the utilization
//! the compute nodes last reported.
//!
//! Routes are labelled by their pattern (`/api/v1/tokens/{id}`), never the raw path, so
//! the number of series stays bounded whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, n) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// One endpoint variant's invocations as this replica answered them.
#[derive(Default)]
struct Invocations {
    total: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    model: Histogram,
    overhead: Histogram,
}

/// In-process metric values.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
    invocations: Mutex<BTreeMap<(String, String), Invocations>>,
    /// Captured records dropped because an endpoint's buffer was full, by endpoint.
    capture_dropped: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut durations) = self.durations.lock() {
            durations.entry((method.to_string(), route.to_string())).or_default().observe(seconds);
        }
    }

    /// Counts a captured record dropped for want of buffer space.
    pub fn capture_dropped(&self, endpoint: &str) {
        if let Ok(mut dropped) = self.capture_dropped.lock() {
            *dropped.entry(endpoint.to_string()).or_default() += 1;
        }
    }

    /// Records one endpoint invocation (endpoint names are bounded: they must exist).
    pub fn observe_invocation(&self, endpoint: &str, variant: &str, status: u16, model_us: u64, overhead_us: u64) {
        let Ok(mut invocations) = self.invocations.lock() else { return };
        let i = invocations.entry((endpoint.to_string(), variant.to_string())).or_default();
        i.total += 1;
        match status {
            400..=499 => i.errors_4xx += 1,
            500..=599 => i.errors_5xx += 1,
            _ => {}
        }
        i.model.observe(model_us as f64 / 1e6);
        i.overhead.observe(overhead_us as f64 / 1e6);
    }

    /// The text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP atelier_http_requests_total HTTP requests handled, by method, route and status.\n");
        out.push_str("# TYPE atelier_http_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((method, route, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "atelier_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP atelier_http_request_duration_seconds Time to produce the response head.\n");
        out.push_str("# TYPE atelier_http_request_duration_seconds histogram\n");
        if let Ok(durations) = self.durations.lock() {
            for ((method, route), h) in durations.iter() {
                let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
                h.render(&mut out, "atelier_http_request_duration_seconds", &labels);
            }
        }
        if let Ok(invocations) = self.invocations.lock() {
            let labels = |(endpoint, variant): &(String, String)| {
                format!("endpoint=\"{}\",variant=\"{}\"", escape(endpoint), escape(variant))
            };
            help(&mut out, "atelier_endpoint_invocations_total", "counter", "Endpoint invocations answered.");
            for (key, i) in invocations.iter() {
                let _ = writeln!(out, "atelier_endpoint_invocations_total{{{}}} {}", labels(key), i.total);
            }
            help(&mut out, "atelier_endpoint_errors_total", "counter", "Invocations answered with a 4xx or 5xx.");
            for (key, i) in invocations.iter() {
                let _ =
                    writeln!(out, "atelier_endpoint_errors_total{{{},class=\"4xx\"}} {}", labels(key), i.errors_4xx);
                let _ =
                    writeln!(out, "atelier_endpoint_errors_total{{{},class=\"5xx\"}} {}", labels(key), i.errors_5xx);
            }
            help(&mut out, "atelier_endpoint_model_latency_seconds", "histogram", "Time the model server took.");
            for (key, i) in invocations.iter() {
                i.model.render(&mut out, "atelier_endpoint_model_latency_seconds", &labels(key));
            }
            help(
                &mut out,
                "atelier_endpoint_overhead_latency_seconds",
                "histogram",
                "Time the studio added to an invocation (its total less the model's).",
            );
            for (key, i) in invocations.iter() {
                i.overhead.render(&mut out, "atelier_endpoint_overhead_latency_seconds", &labels(key));
            }
        }
        if let Ok(dropped) = self.capture_dropped.lock() {
            help(
                &mut out,
                "atelier_endpoint_capture_dropped_total",
                "counter",
                "Captured invocations dropped because the replica's buffer for the endpoint was full.",
            );
            for (endpoint, n) in dropped.iter() {
                let _ =
                    writeln!(out, "atelier_endpoint_capture_dropped_total{{endpoint=\"{}\"}} {n}", escape(endpoint));
            }
        }
        out
    }
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What the database says now: endpoint instance counts and node utilization.
async fn render_gauges(state: &AppState) -> anyhow::Result<String> {
    let mut out = String::new();
    let gauges = atelier_core::endpoints::metrics::instance_gauges(&state.db).await?;
    help(
        &mut out,
        "atelier_endpoint_instances",
        "gauge",
        "Instances of a serving variant, by state (desired or healthy).",
    );
    for g in &gauges {
        let labels = format!("endpoint=\"{}\",variant=\"{}\"", escape(&g.endpoint), escape(&g.variant));
        let _ = writeln!(out, "atelier_endpoint_instances{{{labels},state=\"desired\"}} {}", g.desired);
        let _ = writeln!(out, "atelier_endpoint_instances{{{labels},state=\"healthy\"}} {}", g.healthy);
    }
    let nodes = atelier_core::compute::nodes::all_for_export(&state.db).await?;
    let node_metrics = [
        ("atelier_node_ready", "1 while the node's agent sends heartbeats."),
        ("atelier_node_cpu_utilization_percent", "CPU use the agent last reported, 0-100."),
        ("atelier_node_memory_used_bytes", "Memory in use the agent last reported."),
        ("atelier_node_memory_bytes", "The node's memory."),
        ("atelier_node_gpu_utilization_percent", "Each GPU's utilization, 0-100."),
        ("atelier_node_gpu_memory_used_bytes", "Each GPU's memory in use."),
    ];
    let mut lines: Vec<Vec<String>> = vec![Vec::new(); node_metrics.len()];
    for n in &nodes {
        let node = format!("node=\"{}\"", escape(&n.name));
        let usage = n.latest_usage();
        let mb = 1_048_576u64;
        lines[0].push(format!("{{{node}}} {}", u8::from(n.status == "Ready")));
        lines[1].push(format!("{{{node}}} {}", usage.cpu_pct));
        lines[2].push(format!("{{{node}}} {}", usage.memory_used_mb * mb));
        lines[3].push(format!("{{{node}}} {}", n.memory_mb.max(0) as u64 * mb));
        for g in &usage.gpus {
            lines[4].push(format!("{{{node},gpu=\"{}\"}} {}", g.index, g.utilization_pct));
            lines[5].push(format!("{{{node},gpu=\"{}\"}} {}", g.index, g.memory_used_mb * mb));
        }
    }
    for ((name, text), lines) in node_metrics.iter().zip(lines) {
        help(&mut out, name, "gauge", text);
        for line in lines {
            let _ = writeln!(out, "{name}{line}");
        }
    }
    Ok(out)
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Middleware: times every request and records it under its route pattern.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Clients can send any method token; only the standard ones become label values
    // so the number of series stays bounded.
    let method = match *request.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS => {
            request.method().as_str().to_string()
        }
        _ => "OTHER".to_string(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    state.metrics.observe(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    match render_gauges(&state).await {
        Ok(gauges) => text.push_str(&gauges),
        // The in-process counters are still worth scraping when the database is down.
        Err(err) => tracing::warn!(error = %err, "endpoint and node gauges could not be read"),
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe("GET", "/healthz", 200, 0.003);
        m.observe("GET", "/healthz", 200, 0.2);
        let text = m.render();
        assert!(text.contains("atelier_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"));
        assert!(text.contains("le=\"0.0025\"} 0"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.25\"} 2"));
        assert!(text.contains("atelier_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\"} 2"));
    }

    #[test]
    fn invocations_are_counted_by_endpoint_and_variant() {
        let m = Metrics::default();
        m.observe_invocation("churn", "primary", 200, 2_000, 300);
        m.observe_invocation("churn", "primary", 400, 1_000, 300);
        m.observe_invocation("churn", "canary", 503, 0, 100);
        let text = m.render();
        assert!(text.contains("atelier_endpoint_invocations_total{endpoint=\"churn\",variant=\"primary\"} 2"));
        assert!(text.contains("atelier_endpoint_errors_total{endpoint=\"churn\",variant=\"primary\",class=\"4xx\"} 1"));
        assert!(text.contains("atelier_endpoint_errors_total{endpoint=\"churn\",variant=\"canary\",class=\"5xx\"} 1"));
        assert!(text.contains(
            "atelier_endpoint_model_latency_seconds_bucket{endpoint=\"churn\",variant=\"primary\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "atelier_endpoint_model_latency_seconds_bucket{endpoint=\"churn\",variant=\"primary\",le=\"0.0025\"} 2"
        ));
    }
}
