//! Admin > Audit log: filter, page through, export.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::format::{format_time, parse_date};

/// An audit event, as the page and the REST API (`/api/v1/audit-events`) show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AuditEventInfo {
    pub id: String,
    /// Unix seconds.
    pub occurred_at: i64,
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// `Allow` or `Deny`.
    pub decision: String,
    pub status: Option<i64>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub summary: String,
    /// The id of the API token the request authenticated with (not its secret); none
    /// for a browser session or a system action.
    pub token_id: Option<String>,
}

/// A page of events, newest first; `next` is the `before` cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub events: Vec<AuditEventInfo>,
    pub next: Option<String>,
}

/// Filters of the audit log (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// Exact username (or `anonymous`).
    pub principal: Option<String>,
    /// Exact action, or a prefix ending in `*` such as `iam:*`.
    pub action: Option<String>,
    /// Resource name prefix.
    pub resource: Option<String>,
    /// `Allow` or `Deny`.
    pub decision: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Cursor: only events older than this event id.
    pub before: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<i64>,
}

#[cfg(feature = "ssr")]
impl From<AuditFilter> for atelier_core::audit::Query {
    fn from(f: AuditFilter) -> Self {
        atelier_core::audit::Query {
            principal: f.principal,
            action: f.action,
            resource: f.resource,
            decision: f.decision.filter(|d| !d.is_empty()),
            since: f.since,
            until: f.until,
            before: f.before,
            limit: f.limit,
        }
    }
}

#[cfg(feature = "ssr")]
impl From<atelier_core::audit::Page> for AuditPage {
    fn from(p: atelier_core::audit::Page) -> Self {
        AuditPage {
            events: p
                .events
                .into_iter()
                .map(|e| AuditEventInfo {
                    id: e.id,
                    occurred_at: e.occurred_at,
                    principal: e.principal,
                    action: e.action,
                    resource: e.resource,
                    decision: e.decision,
                    status: e.status,
                    source_ip: e.source_ip,
                    request_id: e.request_id,
                    summary: e.summary,
                    token_id: e.token_id,
                })
                .collect(),
            next: p.next,
        }
    }
}

#[server]
pub async fn list_audit_events(filter: AuditFilter) -> Result<AuditPage, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::iam::admin::audit_events(&db, &p, &filter.into()).await?.into())
}

/// Admin > Audit log. The filters are a GET form, so a filtered view is a link.
#[component]
pub fn AuditPage() -> impl IntoView {
    let query = use_query_map();
    let filter = move || {
        let q = query.read();
        let get = |k: &str| q.get(k).filter(|v| !v.is_empty());
        AuditFilter {
            principal: get("principal"),
            action: get("action"),
            resource: get("resource"),
            decision: get("decision"),
            // Dates are whole UTC days: from the start of `from` to the end of `to`.
            since: get("from").as_deref().and_then(parse_date),
            until: get("to").as_deref().and_then(parse_date).map(|t| t + 86_400),
            before: get("before"),
            limit: Some(50),
        }
    };
    let events = Resource::new(filter, list_audit_events);
    let value = move |k: &'static str| query.read().get(k).unwrap_or_default();
    view! {
        <h1>"Audit log"</h1>
        <form method="get" class="card filters" action="/admin/audit">
            <input name="principal" type="text" placeholder="principal" aria-label="Principal" value=move || value("principal")/>
            <input name="action" type="text" placeholder="action, e.g. iam:*" aria-label="Action" value=move || value("action")/>
            <input name="resource" type="text" placeholder="resource prefix" aria-label="Resource" value=move || value("resource")/>
            <label>"From "<input name="from" type="date" value=move || value("from")/></label>
            <label>"to "<input name="to" type="date" value=move || value("to")/></label>
            <select name="decision" aria-label="Decision">
                <option value="">"any decision"</option>
                <option value="Allow" selected=move || value("decision") == "Allow">"Allow"</option>
                <option value="Deny" selected=move || value("decision") == "Deny">"Deny"</option>
            </select>
            <button type="submit" class="secondary">"Filter"</button>
            <a href="/api/v1/audit-events/export" class="button-link">"Export JSON Lines"</a>
        </form>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match events.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(page) if page.events.is_empty() => view! { <p class="muted">"No matching events."</p> }.into_any(),
                    Ok(page) => {
                        let next = page.next.clone().map(|cursor| {
                            let q = query.read();
                            let mut params: Vec<String> = ["principal", "action", "resource", "decision", "from", "to"]
                                .iter()
                                .filter_map(|k| q.get(k).filter(|v| !v.is_empty()).map(|v| format!("{k}={}", encode(&v))))
                                .collect();
                            params.push(format!("before={}", encode(&cursor)));
                            format!("/admin/audit?{}", params.join("&"))
                        });
                        view! {
                            <table class="table audit">
                                <thead><tr><th>"Time (UTC)"</th><th>"Principal"</th><th>"Action"</th><th>"Resource"</th><th>"Decision"</th><th>"Status"</th><th>"Source"</th><th>"Summary"</th></tr></thead>
                                <tbody>
                                    {page.events.into_iter().map(|e| view! {
                                        <tr data-decision=e.decision.clone() title=e.request_id.clone().unwrap_or_default()>
                                            <td>{format_time(e.occurred_at)}</td>
                                            <td>{e.principal}</td>
                                            <td><code>{e.action}</code></td>
                                            <td><code>{e.resource}</code></td>
                                            <td class=if e.decision == "Deny" { "deny" } else { "allow" }>{e.decision.clone()}</td>
                                            <td>{e.status.map(|s| s.to_string()).unwrap_or_default()}</td>
                                            <td>{e.source_ip.unwrap_or_default()}</td>
                                            <td>{e.summary}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                            {next.map(|href| view! { <p><A href=href>"Older events →"</A></p> })}
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
