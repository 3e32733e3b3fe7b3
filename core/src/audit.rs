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
    /// The id (not the secret) of the API token the request authenticated with.
    pub token_id: Option<String>,
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
    /// The id of the API token the request authenticated with, if it did.
    pub token_id: Option<String>,
}

/// Appends an event for a change already made by the system or an agent, outside any
/// user request: a failure is logged, since undoing the change is not possible.
pub async fn record_or_log(db: &Db, event: NewEvent) {
    if let Err(err) = record(db, event).await {
        tracing::error!(error = %err, "audit event could not be written");
    }
}

/// The most characters an event keeps of its resource. Resources come from request
/// paths, which a client chooses: without a bound, anonymous requests with long paths
/// grow the database at the caller's pace.
pub const MAX_RESOURCE_CHARS: usize = 512;
/// The most characters an event keeps of its summary.
pub const MAX_SUMMARY_CHARS: usize = 500;
/// The most characters of the principal (a username, or the name typed at sign-in)
/// and of the action.
pub const MAX_NAME_CHARS: usize = 128;
/// The most characters of the source address and the request id; both may come from
/// headers (`X-Forwarded-For`, `X-Request-Id`).
pub const MAX_TAG_CHARS: usize = 128;

/// Appends an event. Every free-text field is cut to its bound here, so no caller can
/// store an unbounded string.
pub async fn record(db: &Db, event: NewEvent) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_events \
         (id, occurred_at, principal, action, resource, decision, status, source_ip, request_id, summary, token_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(now())
    .bind(bound(event.principal, MAX_NAME_CHARS))
    .bind(bound(event.action, MAX_NAME_CHARS))
    .bind(bound(event.resource, MAX_RESOURCE_CHARS))
    .bind(if event.allowed { "Allow" } else { "Deny" })
    .bind(event.status.map(i64::from))
    .bind(event.source_ip.map(|s| bound(s, MAX_TAG_CHARS)))
    .bind(event.request_id.map(|s| bound(s, MAX_TAG_CHARS)))
    .bind(bound(event.summary, MAX_SUMMARY_CHARS))
    .bind(event.token_id.map(|s| bound(s, MAX_TAG_CHARS)))
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// `s` cut to at most `max` characters (at a character boundary), the last of them
/// `…` when anything was cut, so a reader can tell a cut value from a whole one.
pub fn bound(mut s: String, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    // The byte offset of the character that would be the `max`-th: the cut keeps the
    // characters before it and adds the marker in its place.
    let keep = max.saturating_sub(1);
    let mut chars = s.char_indices();
    let Some((cut, _)) = chars.nth(keep) else {
        return s;
    };
    if chars.next().is_none() {
        // Exactly `max` characters: nothing to cut.
        return s;
    }
    s.truncate(cut);
    s.push('…');
    s
}

/// Limits how many refused unauthenticated requests (no credentials, an unknown or
/// expired token, an ended session) are written to the log per client address.
///
/// Anyone can send these, as fast as they like: written one row each, they would let
/// an anonymous client grow the database and bury the events that matter. Each
/// address gets [`Self::PER_ADDRESS`] events a window and all addresses together
/// [`Self::ALL_ADDRESSES`]; the rest are counted, and when a window has ended one
/// event per address says how many were not recorded (written at the next refused
/// request to arrive, from any address, since nothing runs on a timer here).
///
/// The state is in memory and per server process: with several replicas each keeps
/// its own counts, so the log may hold up to that many times the limit. That is
/// enough for a flood limit, and it keeps the database out of the hot path of the very
/// requests it protects.
#[derive(Debug)]
pub struct UnauthenticatedLimiter {
    inner: std::sync::Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    by_address: std::collections::HashMap<String, Window>,
    /// Everything recorded in the current window, all addresses together.
    all: Window,
    /// When expired windows were last swept out of `by_address`.
    swept_at: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    started: i64,
    recorded: u32,
    dropped: u64,
}

/// What to write for one refused unauthenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Whether the request's own event is written.
    pub record: bool,
    /// Ended windows in which requests were not recorded: one event each.
    pub unrecorded: Vec<Unrecorded>,
}

/// Requests not recorded in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrecorded {
    /// The client address, or `None` for those refused by the limit on all
    /// addresses together.
    pub source_ip: Option<String>,
    pub count: u64,
    /// Unix seconds.
    pub window_started: i64,
}

impl Default for UnauthenticatedLimiter {
    fn default() -> Self {
        UnauthenticatedLimiter { inner: std::sync::Mutex::new(LimiterState::default()) }
    }
}

impl UnauthenticatedLimiter {
    /// Events recorded per address per window.
    pub const PER_ADDRESS: u32 = 20;
    /// Events recorded per window from all addresses together: a flood from many
    /// addresses is bounded too.
    pub const ALL_ADDRESSES: u32 = 1000;
    /// Window length, seconds.
    pub const WINDOW_SECS: i64 = 60;
    /// Addresses tracked at once. Beyond this, new addresses share one count (under
    /// [`Self::OTHER_ADDRESSES`]) until expired windows are swept out, so memory stays
    /// bounded whatever the number of addresses.
    pub const MAX_ADDRESSES: usize = 10_000;
    /// The key shared by addresses beyond [`Self::MAX_ADDRESSES`].
    pub const OTHER_ADDRESSES: &'static str = "other addresses";

    /// Decides for one refused request from `address` at `now` (Unix seconds).
    pub fn admit(&self, address: &str, now: i64) -> Admission {
        // A poisoned lock only means another request panicked mid-update; the counts
        // are still usable.
        let mut state = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut unrecorded = Vec::new();
        if now - state.all.started >= Self::WINDOW_SECS {
            if state.all.dropped > 0 {
                unrecorded.push(Unrecorded {
                    source_ip: None,
                    count: state.all.dropped,
                    window_started: state.all.started,
                });
            }
            state.all = Window { started: now, ..Window::default() };
        }
        // Sweep once a window, or (at most once a second) when the table is full and
        // ended windows may free room.
        let full = state.by_address.len() >= Self::MAX_ADDRESSES;
        if now - state.swept_at >= Self::WINDOW_SECS || (full && now > state.swept_at) {
            state.swept_at = now;
            state.by_address.retain(|address, window| {
                let ended = now - window.started >= Self::WINDOW_SECS;
                if ended && window.dropped > 0 {
                    unrecorded.push(Unrecorded {
                        source_ip: Some(address.clone()),
                        count: window.dropped,
                        window_started: window.started,
                    });
                }
                !ended
            });
        }
        let key = if state.by_address.contains_key(address) || state.by_address.len() < Self::MAX_ADDRESSES {
            address
        } else {
            Self::OTHER_ADDRESSES
        };
        let all_full = state.all.recorded >= Self::ALL_ADDRESSES;
        let window = state.by_address.entry(key.to_string()).or_insert(Window { started: now, ..Window::default() });
        // This address's window ended since the last sweep: report it and start anew.
        if now - window.started >= Self::WINDOW_SECS {
            if window.dropped > 0 {
                unrecorded.push(Unrecorded {
                    source_ip: Some(key.to_string()),
                    count: window.dropped,
                    window_started: window.started,
                });
            }
            *window = Window { started: now, ..Window::default() };
        }
        let record = if window.recorded >= Self::PER_ADDRESS {
            window.dropped += 1;
            false
        } else if all_full {
            state.all.dropped += 1;
            false
        } else {
            window.recorded += 1;
            state.all.recorded += 1;
            true
        };
        Admission { record, unrecorded }
    }
}

/// The event that says how many refused requests a window left unrecorded.
pub fn unrecorded_event(u: &Unrecorded) -> NewEvent {
    let from = match &u.source_ip {
        Some(ip) => format!("from {ip}"),
        None => format!(
            "beyond the limit of {} a minute from all addresses together",
            UnauthenticatedLimiter::ALL_ADDRESSES
        ),
    };
    NewEvent {
        principal: "anonymous".into(),
        action: "-".into(),
        resource: "-".into(),
        allowed: false,
        status: Some(401),
        source_ip: u.source_ip.clone(),
        request_id: None,
        token_id: None,
        summary: format!(
            "{} further unauthenticated requests {from} were not recorded in the {}-second window from {} \
             (at most {} a window are recorded per address)",
            u.count,
            UnauthenticatedLimiter::WINDOW_SECS,
            u.window_started,
            UnauthenticatedLimiter::PER_ADDRESS,
        ),
    }
}

/// Records a request refused for want of a principal, within `limiter`'s limits
/// (keyed by the event's source address), and the counts of windows that ended with
/// requests left unrecorded. Failures are logged: the request is refused either way.
pub async fn record_unauthenticated(db: &Db, limiter: &UnauthenticatedLimiter, event: NewEvent) {
    let address = bound(event.source_ip.clone().unwrap_or_else(|| "unknown".into()), MAX_TAG_CHARS);
    let admission = limiter.admit(&address, now());
    for unrecorded in &admission.unrecorded {
        record_or_log(db, unrecorded_event(unrecorded)).await;
    }
    if admission.record {
        record_or_log(db, event).await;
    }
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
        "SELECT id, occurred_at, principal, action, resource, decision, status, source_ip, request_id, summary, token_id \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_cuts_long_values_at_a_character_boundary_with_a_marker() {
        assert_eq!(bound("short".into(), 10), "short");
        assert_eq!(bound("exactly10!".into(), 10), "exactly10!");
        assert_eq!(bound("abcdefghijk".into(), 10), "abcdefghi…");
        let long = "é".repeat(50_000);
        let cut = bound(long, MAX_RESOURCE_CHARS);
        assert_eq!(cut.chars().count(), MAX_RESOURCE_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(bound("abc".into(), 0), "");
    }

    #[test]
    fn an_address_gets_its_quota_a_window_and_the_rest_is_counted_once_the_window_ends() {
        let limiter = UnauthenticatedLimiter::default();
        let start = 1_000;
        let recorded = (0..200).filter(|_| limiter.admit("10.0.0.1", start).record).count();
        assert_eq!(recorded, UnauthenticatedLimiter::PER_ADDRESS as usize);
        // Another address is not held back by the first one's flood.
        assert!(limiter.admit("10.0.0.2", start + 1).record);

        let next = limiter.admit("10.0.0.3", start + UnauthenticatedLimiter::WINDOW_SECS);
        assert!(next.record);
        assert_eq!(
            next.unrecorded,
            vec![Unrecorded { source_ip: Some("10.0.0.1".into()), count: 180, window_started: start }]
        );
        // The count is reported once, and the address starts a fresh window.
        let again = limiter.admit("10.0.0.1", start + UnauthenticatedLimiter::WINDOW_SECS);
        assert!(again.record && again.unrecorded.is_empty(), "{again:?}");
    }

    #[test]
    fn all_addresses_together_are_bounded_and_tracked_addresses_are_capped() {
        let limiter = UnauthenticatedLimiter::default();
        let mut recorded = 0;
        for i in 0..(UnauthenticatedLimiter::MAX_ADDRESSES + 500) {
            if limiter.admit(&format!("addr-{i}"), 5).record {
                recorded += 1;
            }
        }
        assert_eq!(recorded, UnauthenticatedLimiter::ALL_ADDRESSES as usize);
        let tracked = limiter.inner.lock().map(|s| s.by_address.len()).unwrap_or_default();
        // New addresses beyond the cap share one entry.
        assert_eq!(tracked, UnauthenticatedLimiter::MAX_ADDRESSES + 1);

        let later = limiter.admit("addr-0", 5 + UnauthenticatedLimiter::WINDOW_SECS);
        let all = later.unrecorded.iter().find(|u| u.source_ip.is_none()).map(|u| u.count);
        assert_eq!(all, Some((UnauthenticatedLimiter::MAX_ADDRESSES + 500 - 1000) as u64));
        assert!(unrecorded_event(&later.unrecorded[0]).summary.contains("were not recorded"));
    }
}
