//! Sends the registry's webhook deliveries: every second, each due delivery is POSTed
//! to its URL with its signature; the outcome is recorded (and retried with backoff
//! by `atelier_core::models::webhooks::record`). With several server replicas each
//! may send a due delivery once more than needed; receivers deduplicate by the
//! delivery id in the body and the `X-Atelier-Delivery` header, as with any
//! at-least-once webhook.

use std::time::Duration;

use atelier_core::models::webhooks::{self, Due};
use futures::StreamExt;

use crate::state::AppState;

/// Starts the deliverer.
pub fn spawn_deliverer(state: AppState) {
    tokio::spawn(async move {
        // Redirects are not followed: a webhook is the URL its owner gave.
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
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
                        let (status, error) = send(client, &delivery).await;
                        if let Err(err) = webhooks::record(&state.db, &delivery, status, &error, base_ms).await {
                            tracing::warn!(error = %err, "recording a webhook delivery failed");
                        }
                    }
                })
                .await;
        }
    });
}

/// One attempt: the HTTP status if the receiver answered, and what went wrong.
async fn send(client: &reqwest::Client, d: &Due) -> (Option<u16>, String) {
    let response = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("Atelier-Webhooks/", env!("CARGO_PKG_VERSION")))
        .header("x-atelier-event", &d.event)
        .header("x-atelier-delivery", &d.id)
        .header("x-atelier-signature", webhooks::signature(&d.secret, d.payload.as_bytes()))
        .body(d.payload.clone())
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), String::new()),
        Ok(r) => (Some(r.status().as_u16()), format!("the receiver answered {}", r.status())),
        Err(err) => (None, format!("could not deliver: {err}")),
    }
}
