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

/// How often [`admit`] re-reads the counters when other attempts keep changing them
/// between its read and its write, before it gives up and asks the client to retry.
const MAX_ADMIT_TRIES: usize = 64;

/// Checks that no key is waiting and counts this attempt against every key, as one
/// atomic step, *before* the password is checked.
///
/// The counters are read, the decision is made, and the new counts are written only
/// if every counter is still exactly as read (compare-and-swap, all keys in one
/// transaction). If another attempt changed a counter in between, nothing is written
/// and the decision is made again on the new values. So each admitted attempt is
/// counted on the values it was judged by, and a burst of parallel guesses gets no
/// more evaluations than the same guesses one after another. The transaction only
/// writes (its reads happen before it starts), which SQLite serializes with its busy
/// timeout and PostgreSQL with row locks, re-checking the condition after a wait.
pub async fn admit(db: &Db, keys: &Keys) -> CoreResult<()> {
    for _ in 0..MAX_ADMIT_TRIES {
        let now = now();
        let mut seen = Vec::with_capacity(2);
        let mut wait = 0;
        for key in keys.all() {
            let row: Option<(i64, i64)> =
                sqlx::query_as("SELECT failures, last_failure_at FROM sign_in_failures WHERE throttle_key = $1")
                    .bind(key)
                    .fetch_optional(&db.pool)
                    .await?;
            if let Some((failures, last)) = row {
                wait = wait.max(wait_for(key, failures, last, now));
            }
            seen.push((key, row));
        }
        if wait > 0 {
            return Err(CoreError::TooManyAttempts { retry_after: wait });
        }
        let mut tx = db.pool.begin().await?;
        let mut unchanged = true;
        for (key, row) in &seen {
            let written =
                match row {
                    None => sqlx::query(
                        "INSERT INTO sign_in_failures (throttle_key, failures, last_failure_at) VALUES ($1, 1, $2) \
                         ON CONFLICT (throttle_key) DO NOTHING",
                    )
                    .bind(*key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?,
                    Some((failures, last)) => {
                        let counted = if now - last >= FORGET_AFTER_SECS { 1 } else { failures + 1 };
                        sqlx::query(
                            "UPDATE sign_in_failures SET failures = $1, last_failure_at = $2 \
                         WHERE throttle_key = $3 AND failures = $4 AND last_failure_at = $5",
                        )
                        .bind(counted)
                        .bind(now)
                        .bind(*key)
                        .bind(*failures)
                        .bind(*last)
                        .execute(&mut *tx)
                        .await?
                    }
                };
            if written.rows_affected() != 1 {
                unchanged = false;
                break;
            }
        }
        if unchanged {
            tx.commit().await?;
            return Ok(());
        }
        tx.rollback().await?;
    }
    // Only a flood of attempts on the same keys gets here.
    Err(CoreError::TooManyAttempts { retry_after: 1 })
}

/// Seconds `key` must still wait at `now` after `failures` failures, the last at `last`.
fn wait_for(key: &str, failures: i64, last: i64, now: i64) -> i64 {
    let delay = delay_after(key, failures);
    if now - last < FORGET_AFTER_SECS && delay > 0 {
        // Times are whole seconds: the failure happened somewhere in [last, last + 1),
        // so count from the end of that second. Otherwise a failure late in a second
        // would be followed by almost no delay.
        (last + 1 + delay - now).max(0)
    } else {
        0
    }
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
    fn the_wait_counts_from_the_end_of_the_failures_second_and_is_forgotten() {
        assert_eq!(wait_for("user:a", FREE_ATTEMPTS - 1, 100, 100), 0);
        assert_eq!(wait_for("user:a", FREE_ATTEMPTS, 100, 100), 2);
        assert_eq!(wait_for("user:a", FREE_ATTEMPTS, 100, 102), 0);
        assert_eq!(wait_for("user:a", FREE_ATTEMPTS + 4, 100, 100 + FORGET_AFTER_SECS), 0);
    }

    #[test]
    fn usernames_in_keys_are_case_insensitive() {
        let k = keys(" Alice", Some("10.0.0.1"));
        assert_eq!(k.all().collect::<Vec<_>>(), vec!["user:alice", "ip:10.0.0.1"]);
    }
}
