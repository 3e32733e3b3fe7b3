//! Registry webhooks: URLs told when a version is registered or its approval status
//! changes, for one model group or for all of them.
//!
//! Events are written to `webhook_deliveries` in the transaction that made them, then
//! sent by the server's deliverer ([`due`], [`record`]): a JSON body signed with
//! HMAC-SHA256 under the webhook's secret (`X-Atelier-Signature: sha256=<hex>`),
//! retried with exponential backoff until a 2xx answer or the last attempt. Each
//! attempt's outcome is kept, so the history is visible.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use atelier_protocol::models::{Delivery, Webhook};

use super::{group_for, group_resource};
use crate::authz::{authorize, Action, Principal, Resource};
use crate::compute::now_ms;
use crate::db::Db;
use crate::outbound::OutboundPolicy;
use crate::{now, CoreError, CoreResult};

pub const VERSION_CREATED: &str = "model_version.created";
pub const STATUS_CHANGED: &str = "model_version.status_changed";
/// An alarm of an endpoint serving the group's versions changed state.
pub const ALARM_CHANGED: &str = "endpoint.alarm_changed";
const EVENTS: [&str; 3] = [VERSION_CREATED, STATUS_CHANGED, ALARM_CHANGED];

/// The resource of studio-wide webhooks: they see every group's events, so they are
/// not covered by permissions on groups.
pub const STUDIO: &str = "atelier:models:studio";

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 8;

/// A delivery due to be sent, with where and how.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub event: String,
    pub payload: String,
    pub attempts: i64,
}

/// The resource a webhook is managed through: its group, or all groups.
async fn scope(db: &Db, p: &Principal, group: Option<&str>) -> CoreResult<(Option<String>, Resource)> {
    match group {
        Some(name) => {
            let g = group_for(db, p, name, Action::ManageWebhooks).await?;
            Ok((Some(g.id.clone()), group_resource(&g)))
        }
        None => Ok((None, Resource::new(STUDIO))),
    }
}

fn validate_url(url: &str) -> CoreResult<String> {
    let url = url.trim();
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(CoreError::invalid(
            "url",
            format!("url must be an http:// or https:// URL with a host, not {url:?}"),
        ));
    }
    Ok(url.to_string())
}

/// Adds a webhook; returns it with its secret (shown only now). A URL on an internal
/// address is refused unless `outbound` allows it (see [`crate::outbound`]).
pub async fn create(
    db: &Db,
    p: &Principal,
    outbound: &OutboundPolicy,
    group: Option<&str>,
    url: &str,
    events: &[String],
) -> CoreResult<(Webhook, String)> {
    let (group_id, resource) = scope(db, p, group).await?;
    authorize(p, Action::ManageWebhooks, &resource)?;
    let url = validate_url(url)?;
    outbound.check_url("url", &url).await?;
    let events: Vec<String> =
        if events.is_empty() { EVENTS.iter().map(|e| e.to_string()).collect() } else { events.to_vec() };
    if let Some(bad) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(CoreError::invalid("events", format!("unknown event {bad:?}: use {}", EVENTS.join(" or "))));
    }
    let secret = format!("whsec_{}", crate::accounts::random_secret(24));
    let hook = Webhook {
        id: uuid::Uuid::new_v4().to_string(),
        group: group.map(str::to_string),
        url,
        events,
        created_by: p.user.username.clone(),
        created_at: now(),
    };
    sqlx::query(
        "INSERT INTO model_webhooks (id, group_id, url, secret, events, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&hook.id)
    .bind(&group_id)
    .bind(&hook.url)
    .bind(&secret)
    .bind(serde_json::to_string(&hook.events).map_err(CoreError::internal)?)
    .bind(&hook.created_by)
    .bind(hook.created_at)
    .execute(&db.pool)
    .await?;
    p.note_change(format!("added webhook {} for {}", hook.url, group.unwrap_or("every model group")));
    Ok((hook, secret))
}

type HookRow = (String, Option<String>, String, String, String, i64);

fn to_webhook((id, group, url, events, created_by, created_at): HookRow) -> Webhook {
    Webhook { id, group, url, events: serde_json::from_str(&events).unwrap_or_default(), created_by, created_at }
}

/// The webhooks of a group (or the studio-wide ones).
pub async fn list(db: &Db, p: &Principal, group: Option<&str>) -> CoreResult<Vec<Webhook>> {
    let (group_id, resource) = scope(db, p, group).await?;
    authorize(p, Action::ManageWebhooks, &resource)?;
    let rows: Vec<HookRow> = sqlx::query_as(
        "SELECT w.id, g.name, w.url, w.events, w.created_by, w.created_at FROM model_webhooks w \
         LEFT JOIN model_groups g ON g.id = w.group_id \
         WHERE (w.group_id = $1 OR ($1 IS NULL AND w.group_id IS NULL)) ORDER BY w.created_at, w.id",
    )
    .bind(group_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(to_webhook).collect())
}

/// A webhook by id, for someone who may manage it.
async fn get_for(db: &Db, p: &Principal, id: &str) -> CoreResult<Webhook> {
    let row: Option<HookRow> = sqlx::query_as(
        "SELECT w.id, g.name, w.url, w.events, w.created_by, w.created_at FROM model_webhooks w \
         LEFT JOIN model_groups g ON g.id = w.group_id WHERE w.id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let hook = row.map(to_webhook);
    let resource = match hook.as_ref().and_then(|h| h.group.as_deref()) {
        Some(g) => scope(db, p, Some(g)).await?.1,
        None => Resource::new(STUDIO),
    };
    authorize(p, Action::ManageWebhooks, &resource)?;
    hook.ok_or(CoreError::NotFound("webhook"))
}

pub async fn delete(db: &Db, p: &Principal, id: &str) -> CoreResult<()> {
    let hook = get_for(db, p, id).await?;
    sqlx::query("DELETE FROM model_webhooks WHERE id = $1").bind(id).execute(&db.pool).await?;
    p.note_change(format!("removed webhook {}", hook.url));
    Ok(())
}

/// A webhook's deliveries, newest first.
pub async fn deliveries(db: &Db, p: &Principal, id: &str, limit: i64) -> CoreResult<Vec<Delivery>> {
    get_for(db, p, id).await?;
    type Row = (String, String, String, String, i64, i64, Option<i64>, String, i64, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, event, payload, status, attempts, next_attempt_at, last_status, last_error, created_at, delivered_at \
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at DESC, id LIMIT $2",
    )
    .bind(id)
    .bind(limit.clamp(1, 500))
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                event,
                payload,
                status,
                attempts,
                next_attempt_at,
                last_status,
                last_error,
                created_at,
                delivered_at,
            )| {
                Delivery {
                    id,
                    event,
                    payload,
                    status,
                    attempts,
                    next_attempt_at,
                    last_status,
                    last_error,
                    created_at,
                    delivered_at,
                }
            },
        )
        .collect())
}

/// Queues `event` for every webhook of the group (and every studio-wide one) that
/// wants it, in the transaction of the change itself: the event exists exactly when
/// the change does.
pub async fn enqueue(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    group_id: &str,
    event: &str,
    payload: &serde_json::Value,
) -> CoreResult<()> {
    let hooks: Vec<(String, String)> =
        sqlx::query_as("SELECT id, events FROM model_webhooks WHERE group_id = $1 OR group_id IS NULL")
            .bind(group_id)
            .fetch_all(&mut **tx)
            .await?;
    let at = now_ms();
    for (id, events) in hooks {
        let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
        if !events.iter().any(|e| e == event) {
            continue;
        }
        let delivery = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({"id": delivery, "event": event, "created_at_ms": at, "data": payload});
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, status, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
        )
        .bind(&delivery)
        .bind(&id)
        .bind(event)
        .bind(body.to_string())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Deliveries whose next attempt is due.
pub async fn due(db: &Db, limit: i64) -> CoreResult<Vec<Due>> {
    Ok(sqlx::query_as(
        "SELECT d.id, w.url, w.secret, d.event, d.payload, d.attempts FROM webhook_deliveries d \
         JOIN model_webhooks w ON w.id = d.webhook_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at LIMIT $2",
    )
    .bind(now_ms())
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Records an attempt: delivered on a 2xx status, else retried after
/// `base_ms * 2^attempts` (at most an hour) until [`MAX_ATTEMPTS`].
pub async fn record(db: &Db, due: &Due, status: Option<u16>, error: &str, base_ms: i64) -> CoreResult<()> {
    let attempts = due.attempts + 1;
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let (state, next) = if ok {
        ("delivered", now_ms())
    } else if attempts >= MAX_ATTEMPTS {
        ("failed", now_ms())
    } else {
        let wait = base_ms.saturating_mul(1 << attempts.min(20)).min(3_600_000);
        ("pending", now_ms() + wait)
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, last_status = $4, \
         last_error = $5, delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE delivered_at END WHERE id = $6",
    )
    .bind(state)
    .bind(attempts)
    .bind(next)
    .bind(status.map(i64::from))
    .bind(error.chars().take(500).collect::<String>())
    .bind(&due.id)
    .execute(&db.pool)
    .await?;
    Ok(())
}
