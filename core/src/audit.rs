//! The audit log: every state-changing action and every denied request, append-only.
//!
//! Decisions are collected on the request's [`Principal`](crate::authz::Principal) as
//! routes authorize, and written by the server's middleware once the response status is
//! known, so no route can forget to audit. Nothing in the application updates or
//! deletes an event.

use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditEvent {
    /// UUIDv7: sorts by time.
    pub id: String,
    /// Unix seconds.
    pub occurred_at: i64,
    /// Username, or `anonymous`.
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// `Allow` or `Deny`.
    pub decision: String,
    /// HTTP status of the response, when the event came from a request.
    pub status: Option<i64>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub summary: String,
}

/// What a new event records.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub allowed: bool,
    pub status: Option<u16>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub summary: String,
}

/// Appends an event for a change already made by the system or an agent, outside any
/// user request: a failure is logged, since undoing the change is not possible.
pub async fn record_or_log(db: &Db, event: NewEvent) {
    if let Err(err) = record(db, event).await {
        tracing::error!(error = %err, "audit event could not be written");
    }
}

/// Appends an event.
pub async fn record(db: &Db, event: NewEvent) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_events (id, occurred_at, principal, action, resource, decision, status, source_ip, request_id, summary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(now())
    .bind(event.principal)
    .bind(event.action)
    .bind(event.resource)
    .bind(if event.allowed { "Allow" } else { "Deny" })
    .bind(event.status.map(i64::from))
    .bind(event.source_ip)
    .bind(event.request_id)
    .bind(truncate(event.summary, 500))
    .execute(&db.pool)
    .await?;
    Ok(())
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Filters for listing events; all optional. Newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Exact username.
    pub principal: Option<String>,
    /// Exact action, or a prefix ending in `*` (such as `iam:*`).
    pub action: Option<String>,
    /// Resource name prefix.
    pub resource: Option<String>,
    /// `Allow` or `Deny`.
    pub decision: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Only events older than this event id (the previous page's `next`).
    pub before: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<i64>,
}

/// One page of events and the cursor for the next (older) page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    pub next: Option<String>,
}

/// Lists events matching `query`, newest first.
pub async fn list(db: &Db, query: &Query) -> CoreResult<Page> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(CoreError::invalid("limit", "limit must be between 1 and 1000"));
    }
    if let Some(d) = &query.decision {
        if d != "Allow" && d != "Deny" {
            return Err(CoreError::invalid("decision", "decision must be Allow or Deny"));
        }
    }
    let mut sql = String::from(
        "SELECT id, occurred_at, principal, action, resource, decision, status, source_ip, request_id, summary \
         FROM audit_events WHERE 1 = 1",
    );
    let mut binds: Vec<Bind> = Vec::new();
    // Each `?` in a clause becomes that clause's one numbered parameter.
    let mut add = |clause: &str, value: Bind| {
        binds.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
    };
    if let Some(p) = query.principal.as_deref().filter(|s| !s.is_empty()) {
        add(" AND principal = ?", Bind::Text(p.to_string()));
    }
    match query.action.as_deref().filter(|s| !s.is_empty()) {
        Some(a) if a.ends_with('*') => {
            add(" AND substr(action, 1, length(?)) = ?", Bind::Text(a.trim_end_matches('*').to_string()));
        }
        Some(a) => add(" AND action = ?", Bind::Text(a.to_string())),
        None => {}
    }
    if let Some(r) = query.resource.as_deref().filter(|s| !s.is_empty()) {
        add(" AND substr(resource, 1, length(?)) = ?", Bind::Text(r.to_string()));
    }
    if let Some(d) = &query.decision {
        add(" AND decision = ?", Bind::Text(d.clone()));
    }
    if let Some(t) = query.since {
        add(" AND occurred_at >= ?", Bind::Int(t));
    }
    if let Some(t) = query.until {
        add(" AND occurred_at < ?", Bind::Int(t));
    }
    if let Some(b) = query.before.as_deref().filter(|s| !s.is_empty()) {
        add(" AND id < ?", Bind::Text(b.to_string()));
    }
    // One extra row tells whether there is a next page.
    add(" ORDER BY id DESC LIMIT ?", Bind::Int(limit + 1));
    let mut q = sqlx::query_as::<_, AuditEvent>(&sql);
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
        };
    }
    let mut events = q.fetch_all(&db.pool).await?;
    let next = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Page { events, next })
}

enum Bind {
    Text(String),
    Int(i64),
}
