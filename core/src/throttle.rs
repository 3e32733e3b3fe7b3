//! Sign-in throttling, per account and per client address.
//!
//! Each failed sign-in counts against two keys, `user:<name>` and `ip:<address>`. After
//! [`FREE_ATTEMPTS`] failures of an account ([`FREE_ATTEMPTS_PER_IP`] of an address, as
//! colleagues behind one NAT share it) the key must wait before the next attempt, and
//! the wait doubles with every further failure up to [`MAX_DELAY_SECS`]. A success clears both
//! keys; failures older than [`FORGET_AFTER_SECS`] are forgotten. Unknown usernames are
//! counted like known ones, so the throttle reveals nothing about which accounts exist.
//! The counters live in the database so every replica enforces the same limits.

use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Failures of one account allowed before any delay applies.
pub const FREE_ATTEMPTS: i64 = 5;
/// Failures from one client address allowed before any delay applies.
pub const FREE_ATTEMPTS_PER_IP: i64 = 20;
/// The longest wait between attempts.
pub const MAX_DELAY_SECS: i64 = 15 * 60;
/// A key's failures are forgotten this long after its last failure.
pub const FORGET_AFTER_SECS: i64 = 60 * 60;

/// Seconds a key must wait after `failures` consecutive failures.
pub fn delay_after(key: &str, failures: i64) -> i64 {
    let free = if key.starts_with("ip:") { FREE_ATTEMPTS_PER_IP } else { FREE_ATTEMPTS };
    if failures < free {
        return 0;
    }
    let doublings = (failures - free).min(20) as u32;
    (1i64 << doublings).min(MAX_DELAY_SECS)
}

/// The throttle keys of one attempt: the account, and the client address if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    user: String,
    ip: Option<String>,
}

impl Keys {
    fn all(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.user).chain(self.ip.as_ref())
    }
}

/// The keys for an attempt on `username` from `client_ip`.
pub fn keys(username: &str, client_ip: Option<&str>) -> Keys {
    Keys { user: format!("user:{}", username.trim().to_ascii_lowercase()), ip: client_ip.map(|ip| format!("ip:{ip}")) }
}

/// Fails with [`CoreError::TooManyAttempts`] when any key is still waiting.
pub async fn check(db: &Db, keys: &Keys) -> CoreResult<()> {
    let now = now();
    let mut wait = 0;
    for key in keys.all() {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT failures, last_failure_at FROM sign_in_failures WHERE throttle_key = $1")
                .bind(key)
                .fetch_optional(&db.pool)
                .await?;
        if let Some((failures, last)) = row {
            let delay = delay_after(key, failures);
            if now - last < FORGET_AFTER_SECS && delay > 0 {
                // Times are whole seconds: the failure happened somewhere in
                // [last, last + 1), so count from the end of that second. Otherwise a
                // failure late in a second would be followed by almost no delay.
                wait = wait.max(last + 1 + delay - now);
            }
        }
    }
    if wait > 0 {
        return Err(CoreError::TooManyAttempts { retry_after: wait });
    }
    Ok(())
}

/// Counts an attempt against every key *before* the password is checked, so a burst
/// of parallel guesses is counted in full rather than all passing [`check`] first.
pub async fn count_attempt(db: &Db, keys: &Keys) -> CoreResult<()> {
    let now = now();
    for key in keys.all() {
        sqlx::query(
            "INSERT INTO sign_in_failures (throttle_key, failures, last_failure_at) VALUES ($1, 1, $2) \
             ON CONFLICT (throttle_key) DO UPDATE SET \
               failures = CASE WHEN sign_in_failures.last_failure_at < $3 THEN 1 \
                               ELSE sign_in_failures.failures + 1 END, \
               last_failure_at = $2",
        )
        .bind(key)
        .bind(now)
        .bind(now - FORGET_AFTER_SECS)
        .execute(&db.pool)
        .await?;
    }
    Ok(())
}

/// After a successful attempt: the account's count is cleared, and the address's count
/// loses only this attempt, so signing in to one's own account cannot wipe out
/// failures made against other accounts from the same address.
pub async fn record_success(db: &Db, keys: &Keys) -> CoreResult<()> {
    sqlx::query("DELETE FROM sign_in_failures WHERE throttle_key = $1").bind(&keys.user).execute(&db.pool).await?;
    if let Some(ip) = &keys.ip {
        sqlx::query("UPDATE sign_in_failures SET failures = failures - 1 WHERE throttle_key = $1 AND failures > 0")
            .bind(ip)
            .execute(&db.pool)
            .await?;
    }
    Ok(())
}

/// Deletes counters nobody has failed against for [`FORGET_AFTER_SECS`].
pub async fn prune(db: &Db) -> CoreResult<u64> {
    let done = sqlx::query("DELETE FROM sign_in_failures WHERE last_failure_at < $1")
        .bind(now() - FORGET_AFTER_SECS)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_starts_after_free_attempts_and_doubles_to_a_cap() {
        assert_eq!(delay_after("user:a", FREE_ATTEMPTS - 1), 0);
        assert_eq!(delay_after("user:a", FREE_ATTEMPTS), 1);
        assert_eq!(delay_after("user:a", FREE_ATTEMPTS + 1), 2);
        assert_eq!(delay_after("user:a", FREE_ATTEMPTS + 4), 16);
        assert_eq!(delay_after("user:a", FREE_ATTEMPTS + 40), MAX_DELAY_SECS);
    }

    #[test]
    fn addresses_get_more_free_attempts_than_accounts() {
        assert_eq!(delay_after("ip:10.0.0.1", FREE_ATTEMPTS), 0);
        assert_eq!(delay_after("ip:10.0.0.1", FREE_ATTEMPTS_PER_IP), 1);
    }

    #[test]
    fn usernames_in_keys_are_case_insensitive() {
        let k = keys(" Alice", Some("10.0.0.1"));
        assert_eq!(k.all().collect::<Vec<_>>(), vec!["user:alice", "ip:10.0.0.1"]);
    }
}
