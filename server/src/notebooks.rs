//! The relay between browsers (or scripts) and kernels: the server checks access, then
//! talks to the kernel gateway of the agent running the kernel (see
//! `atelier_protocol::notebooks`) and streams what the kernel says back as server-sent
//! events. Outputs go as the kernel gave them (the editor shows rich ones in a
//! sandboxed frame), within a cell's output caps (`ipynb::OutputBudget`): a runaway
//! cell's output is cut, with a note. Kernels never run in this process.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_core::authz::Principal;
use atelier_core::notebooks::{ipynb, kernels};
use atelier_core::CoreError;
use atelier_protocol::notebooks::{ExecuteRequest, KernelMessage, KernelReport, KERNEL_DEAD, KERNEL_IDLE};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};

use crate::state::AppState;

/// The HTTP client for kernel gateways. No overall timeout: a cell runs as long as it
/// runs; connecting must be quick.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).tcp_nodelay(true).build()?)
}

fn unreachable(err: reqwest::Error) -> CoreError {
    CoreError::Upstream { status: 502, message: format!("the kernel's node could not be reached: {err}") }
}

/// The gateway's refusal as an error naming its reason.
async fn refusal(response: reqwest::Response) -> CoreError {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body.get("error").and_then(|e| e.as_str()).unwrap_or("the kernel gateway refused").to_string();
    match status {
        409 => CoreError::Conflict(message),
        _ => CoreError::Upstream { status: 502, message },
    }
}

/// Runs code on a kernel and streams its messages (`data: {"msg_type", "content"}` per
/// event) until the kernel is idle again.
pub async fn execute(
    state: &AppState,
    p: &Principal,
    kernel_id: &str,
    request: ExecuteRequest,
) -> Result<Response, CoreError> {
    if request.code.len() > 1024 * 1024 {
        return Err(CoreError::invalid("code", "a cell's code is at most 1 MiB"));
    }
    let target = kernels::attach_live(&state.db, p, kernel_id).await?;
    kernels::touch(&state.db, &target.id).await?;
    let response = state
        .kernel_client
        .post(format!("{}/execute", target.url))
        .bearer_auth(&target.secret)
        .json(&request)
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let db = state.db.clone();
    let id = target.id.clone();
    // The cell's outputs are counted as they pass: beyond the caps they are cut, and a
    // note on what was left out goes before the message that ends the cell (or at the
    // end of the stream, whatever ended it).
    let budget = Arc::new(Mutex::new(ipynb::OutputBudget::new()));
    let (counting, closing) = (budget.clone(), budget);
    let messages = lines(response.bytes_stream())
        .map(|line| {
            serde_json::from_slice::<KernelMessage>(&line).unwrap_or_else(|err| KernelMessage {
                msg_type: "relay_error".into(),
                content: serde_json::json!({"message": format!("an unreadable message from the kernel: {err}")}),
            })
        })
        .flat_map(move |message| futures::stream::iter(bounded(&counting, message)))
        .chain(futures::stream::once(async move { note(&closing) }).filter_map(futures::future::ready));
    // Activity is noted when the cell ends too, and a death right away (the agent's
    // next heartbeat says the same a little later).
    let events = messages
        .then(move |message| {
            let (db, id) = (db.clone(), id.clone());
            async move {
                let ended = match message.msg_type.as_str() {
                    "kernel_dead" => Some(KERNEL_DEAD),
                    "execute_reply" => Some(KERNEL_IDLE),
                    _ => None,
                };
                if let Some(state) = ended {
                    let _ = kernels::touch(&db, &id).await;
                    if state == KERNEL_DEAD {
                        let why = message.content.get("message").and_then(|m| m.as_str()).unwrap_or_default();
                        let _ = kernels::set_state(&db, &id, KERNEL_DEAD, why).await;
                    }
                }
                let data = serde_json::to_string(&message).unwrap_or_default();
                Ok::<Event, Infallible>(Event::default().data(data))
            }
        })
        // A stopping server does not wait for the cell to end: the stream ends with a
        // word on why, and the kernel goes on running it.
        .take_until(state.shutdown.clone().cancelled_owned())
        .chain(futures::stream::once(stopped_notice(state.shutdown.clone())).filter_map(futures::future::ready))
        .boxed();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// A kernel message within the cell's output caps: as it came, cut (stream text at
/// the cap), or left out; a message that ends the cell is preceded by the note on what
/// was left out, if anything was.
fn bounded(budget: &Mutex<ipynb::OutputBudget>, mut message: KernelMessage) -> Vec<KernelMessage> {
    let Ok(mut budget) = budget.lock() else { return vec![message] };
    if !budget.admit_message(&message.msg_type, &mut message.content) {
        return Vec::new();
    }
    let ends = matches!(message.msg_type.as_str(), "execute_reply" | "kernel_dead" | "kernel_lost" | "relay_error");
    let note = if ends { note_message(&mut budget) } else { None };
    note.into_iter().chain([message]).collect()
}

/// The note on what was left out of the cell's output, as a `stream` message.
fn note(budget: &Mutex<ipynb::OutputBudget>) -> Option<KernelMessage> {
    budget.lock().ok().and_then(|mut b| note_message(&mut b))
}

fn note_message(budget: &mut ipynb::OutputBudget) -> Option<KernelMessage> {
    budget.take_note().map(|note| KernelMessage {
        msg_type: "stream".into(),
        content: serde_json::json!({"name": note["name"], "text": note["text"]}),
    })
}

/// The last event of a cell's stream cut short by the server stopping; none otherwise.
async fn stopped_notice(shutdown: tokio_util::sync::CancellationToken) -> Option<Result<Event, Infallible>> {
    shutdown.is_cancelled().then(|| {
        let message = KernelMessage {
            msg_type: "relay_error".into(),
            content: serde_json::json!({
                "message": "the studio server stopped while this cell ran; the kernel goes on with it, \
                            but its further output is not shown here"
            }),
        };
        Ok(Event::default().data(serde_json::to_string(&message).unwrap_or_default()))
    })
}

/// Splits a byte stream into lines (newline-delimited JSON); a broken connection ends
/// it with a `kernel_lost` line.
fn lines<S>(bytes: S) -> impl Stream<Item = Vec<u8>>
where
    S: Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Unpin,
{
    futures::stream::unfold((bytes, BytesMut::new(), false), |(mut bytes, mut buf, done)| async move {
        loop {
            if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(end).to_vec();
                buf.advance(1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some((line, (bytes, buf, done)));
            }
            if done {
                return None;
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(err)) => {
                    let lost = serde_json::json!({"msg_type": "kernel_lost",
                        "content": {"message": format!("the connection to the kernel broke: {err}")}});
                    return Some((lost.to_string().into_bytes(), (bytes, BytesMut::new(), true)));
                }
                None => {
                    let rest = std::mem::take(&mut buf);
                    if rest.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    return Some((rest.to_vec(), (bytes, BytesMut::new(), true)));
                }
            }
        }
    })
}

/// Interrupts the cell a kernel is running.
pub async fn interrupt(state: &AppState, p: &Principal, kernel_id: &str) -> Result<(), CoreError> {
    let target = kernels::attach_live(&state.db, p, kernel_id).await?;
    let response = state
        .kernel_client
        .post(format!("{}/interrupt", target.url))
        .bearer_auth(&target.secret)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    p.note_change(format!("interrupted kernel {kernel_id}"));
    Ok(())
}

/// Restarts a kernel (a dead one too): a fresh process, variables gone.
pub async fn restart(state: &AppState, p: &Principal, kernel_id: &str) -> Result<KernelReport, CoreError> {
    let target = kernels::attach(&state.db, p, kernel_id).await?;
    let response = state
        .kernel_client
        .post(format!("{}/restart", target.url))
        .bearer_auth(&target.secret)
        .timeout(Duration::from_secs(90))
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let report: KernelReport = response.json().await.map_err(|e| CoreError::Upstream {
        status: 502,
        message: format!("the kernel gateway answered the restart with something unreadable: {e}"),
    })?;
    kernels::set_state(&state.db, &target.id, &report.state, &report.message).await?;
    p.note_change(format!("restarted kernel {kernel_id}"));
    Ok(report)
}

/// Shuts down idle and stuck kernels every ten seconds.
pub fn spawn_background(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match kernels::cull(&state.db, state.config.kernel_lifecycle()).await {
                Ok(0) => {}
                // The agents drop them at their next heartbeat.
                Ok(n) => tracing::info!(kernels = n, "shut down idle or stuck kernels"),
                Err(err) => tracing::warn!(error = %err, "kernels could not be culled"),
            }
        }
    });
}
