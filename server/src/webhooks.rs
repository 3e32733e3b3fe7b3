//! Sends the registry's webhook deliveries: every second, each due delivery is POSTed
//! to its URL with its signature; the outcome is recorded (and retried with backoff
//! by `atelier_core::models::webhooks::record`). With several server replicas each
//! may send a due delivery once more than needed; receivers deduplicate by the
//! delivery id in the body and the `X-Atelier-Delivery` header, as with any
//! at-least-once webhook.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use atelier_core::models::webhooks::{self, Due};
use atelier_core::outbound::OutboundPolicy;
use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::state::AppState;

/// Starts the deliverer.
pub fn spawn_deliverer(state: AppState) {
    tokio::spawn(async move {
        // Redirects are not followed: a webhook is the URL its owner gave.
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver { policy: state.outbound.clone() }))
            .build()
        {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(error = %err, "webhook deliveries are off: no HTTP client");
                return;
            }
        };
        let base_ms = state.config.webhook_retry_base_ms.clamp(1, 600_000) as i64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let due = match webhooks::due(&state.db, 50).await {
                Ok(d) => d,
                Err(err) => {
                    tracing::warn!(error = %err, "reading due webhook deliveries failed");
                    continue;
                }
            };
            // Several at once, so one slow receiver does not hold up the others.
            futures::stream::iter(due)
                .for_each_concurrent(8, |delivery| {
                    let (client, state) = (&client, &state);
                    async move {
                        let (status, error) = send(client, &state.outbound, &delivery).await;
                        if let Err(err) = webhooks::record(&state.db, &delivery, status, &error, base_ms).await {
                            tracing::warn!(error = %err, "recording a webhook delivery failed");
                        }
                    }
                })
                .await;
        }
    });
}

/// Resolves host names for deliveries, keeping only the addresses the outbound policy
/// allows; a name left with none fails to resolve, and the delivery is "refused".
struct CheckedResolver {
    policy: Arc<OutboundPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                resolved.into_iter().filter(|addr| policy.refusal(&host, addr.ip()).is_none()).collect();
            if allowed.is_empty() {
                tracing::info!(host, "webhook delivery refused: the name resolves only to internal addresses");
                return Err(std::io::Error::other("refused by the outbound policy").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// What a delivery's history says when the attempt got no answer.
const REFUSED: &str = "refused";
const TIMED_OUT: &str = "timed out";

/// One attempt: the class of the HTTP status if the receiver answered (200, 300, 400
/// or 500), and what went wrong in the history's coarse terms.
async fn send(client: &reqwest::Client, policy: &OutboundPolicy, d: &Due) -> (Option<u16>, String) {
    // A URL naming an address is connected to without resolving, so it is checked
    // here; a name is checked by the resolver.
    let Ok(url) = reqwest::Url::parse(&d.url) else {
        return (None, REFUSED.into());
    };
    let host = url.host_str().unwrap_or_default();
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        if let Some(kind) = policy.refusal(host, ip) {
            tracing::info!(delivery = %d.id, kind, "webhook delivery refused: internal address");
            return (None, REFUSED.into());
        }
    }
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("Atelier-Webhooks/", env!("CARGO_PKG_VERSION")))
        .header("x-atelier-event", &d.event)
        .header("x-atelier-delivery", &d.id)
        .header("x-atelier-signature", webhooks::signature(&d.secret, d.payload.as_bytes()))
        .body(d.payload.clone())
        .send()
        .await;
    match response {
        Ok(r) => {
            let class = r.status().as_u16() / 100;
            let error =
                if r.status().is_success() { String::new() } else { format!("the receiver answered {class}xx") };
            (Some(class * 100), error)
        }
        Err(err) if err.is_timeout() => (None, TIMED_OUT.into()),
        Err(err) => {
            // The detail (which address, refused or reset) stays in the server's log.
            tracing::info!(delivery = %d.id, error = %err, "webhook delivery failed");
            (None, REFUSED.into())
        }
    }
}
