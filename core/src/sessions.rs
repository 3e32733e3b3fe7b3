//! Browser sessions: a SQL-backed `tower-sessions` store and the sign-in / sign-out
//! steps that use it.
//!
//! Sessions live in the `sessions` table so they survive restarts and are shared by
//! server replicas. The session id is rotated at sign-in (no fixation); the idle
//! timeout is the record's expiry, pushed forward at most once a minute; the absolute
//! timeout is checked against the sign-in time stored in the session.
//!
//! The table keeps a SHA-256 of each session id, never the id itself: the id is the
//! cookie's value, and a copy of the table (a backup, a read through some other hole)
//! must not be replayable as a signed-in cookie.

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::Session;

use crate::accounts::{self, User};
use crate::db::Db;
use crate::{now, throttle, CoreError, CoreResult};

const USER_ID: &str = "user_id";
const SIGNED_IN_AT: &str = "signed_in_at";
const LAST_SEEN: &str = "last_seen";

/// How often activity pushes the idle expiry forward (each push is a write).
const TOUCH_INTERVAL_SECS: i64 = 60;

/// Stores session records in the `sessions` table.
#[derive(Debug, Clone)]
pub struct SqlSessionStore {
    db: Db,
}

impl SqlSessionStore {
    pub fn new(db: Db) -> Self {
        SqlSessionStore { db }
    }

    /// Deletes expired records; run periodically.
    pub async fn delete_expired(&self) -> CoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now()).execute(&self.db.pool).await?;
        Ok(done.rows_affected())
    }
}

/// The `sessions.id` stored for a session whose cookie carries `cookie_id`.
pub fn stored_id(cookie_id: &str) -> String {
    crate::tokens::hash(cookie_id)
}

fn backend(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

/// The columns of a record: id, user id, JSON data, expiry.
fn columns(record: &Record) -> session_store::Result<(String, Option<String>, String, i64)> {
    let data = serde_json::to_string(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
    let user_id = record.data.get(USER_ID).and_then(|v| v.as_str()).map(str::to_string);
    Ok((stored_id(&record.id.to_string()), user_id, data, record.expiry_date.unix_timestamp()))
}

#[async_trait]
impl SessionStore for SqlSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A plain INSERT, so an id collision is detected instead of overwriting
        // another session; a colliding id is replaced by a fresh one.
        loop {
            let (id, user_id, data, expires_at) = columns(record)?;
            let inserted = sqlx::query("INSERT INTO sessions (id, user_id, data, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(user_id)
                .bind(data)
                .bind(expires_at)
                .execute(&self.db.pool)
                .await;
            match inserted {
                Ok(_) => return Ok(()),
                Err(sqlx::Error::Database(err)) if err.is_unique_violation() => record.id = Id::default(),
                Err(err) => return Err(backend(err)),
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // Only ever an UPDATE: new sessions go through `create`, and a session deleted
        // meanwhile (sign-out elsewhere, password change, deactivation) must stay
        // deleted even if one of its requests was still in flight.
        let (id, user_id, data, expires_at) = columns(record)?;
        sqlx::query("UPDATE sessions SET user_id = $1, data = $2, expires_at = $3 WHERE id = $4")
            .bind(user_id)
            .bind(data)
            .bind(expires_at)
            .bind(id)
            .execute(&self.db.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT data, expires_at FROM sessions WHERE id = $1 AND expires_at > $2")
                .bind(stored_id(&session_id.to_string()))
                .bind(now())
                .fetch_optional(&self.db.pool)
                .await
                .map_err(backend)?;
        let Some((data, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(Record {
            id: *session_id,
            data: serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?,
            expiry_date: time::OffsetDateTime::from_unix_timestamp(expires_at)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?,
        }))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(stored_id(&session_id.to_string()))
            .execute(&self.db.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn session_err(err: tower_sessions::session::Error) -> CoreError {
    CoreError::Internal(err.to_string().into())
}

/// Signs a user in on this browser session: throttle check, credential check, then a
/// fresh session id carrying the user. Every failure looks the same to the caller.
pub async fn sign_in(
    db: &Db,
    session: &Session,
    username: &str,
    password: &str,
    client_ip: Option<&str>,
) -> CoreResult<User> {
    // No account has a longer name; refusing early keeps junk out of the throttle
    // table and the log.
    if username.trim().len() > accounts::MAX_USERNAME_LEN {
        return Err(accounts::bad_credentials());
    }
    let keys = throttle::keys(username, client_ip);
    // Checked and counted in one step before the password is checked, so parallel
    // guesses get no more tries than sequential ones.
    throttle::admit(db, &keys).await?;
    let user = match accounts::verify_credentials(db, username, password).await {
        Ok(user) => user,
        Err(err) => {
            tracing::info!(username = ?username.trim(), client_ip, "sign-in failed");
            return Err(err);
        }
    };
    throttle::record_success(db, &keys).await?;
    session.cycle_id().await.map_err(session_err)?;
    let now = now();
    session.insert(USER_ID, &user.id).await.map_err(session_err)?;
    session.insert(SIGNED_IN_AT, now).await.map_err(session_err)?;
    session.insert(LAST_SEEN, now).await.map_err(session_err)?;
    tracing::info!(user = %user.username, client_ip, "signed in");
    Ok(user)
}

/// Ends the session: the record is deleted and the cookie cleared.
pub async fn sign_out(session: &Session) -> CoreResult<()> {
    session.flush().await.map_err(session_err)
}

/// The signed-in, active user of this session, if any. Ends sessions past the absolute
/// timeout or whose user was deactivated, and keeps the idle expiry moving.
pub async fn current_user(db: &Db, session: &Session, absolute_timeout_secs: i64) -> CoreResult<Option<User>> {
    let Some(user_id) = session.get::<String>(USER_ID).await.map_err(session_err)? else {
        return Ok(None);
    };
    let now = now();
    let signed_in_at = session.get::<i64>(SIGNED_IN_AT).await.map_err(session_err)?.unwrap_or(0);
    if now - signed_in_at > absolute_timeout_secs {
        session.flush().await.map_err(session_err)?;
        return Ok(None);
    }
    let user = match accounts::get_user(db, &user_id).await {
        Ok(user) if user.is_active() => user,
        Ok(_) | Err(CoreError::NotFound(_)) => {
            session.flush().await.map_err(session_err)?;
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let last_seen = session.get::<i64>(LAST_SEEN).await.map_err(session_err)?.unwrap_or(0);
    if now - last_seen >= TOUCH_INTERVAL_SECS {
        // Modifying the session makes the layer save it, which recomputes the
        // inactivity expiry from now.
        session.insert(LAST_SEEN, now).await.map_err(session_err)?;
    }
    Ok(Some(user))
}

/// The client address of a request, as the server determined it (request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp(pub String);
