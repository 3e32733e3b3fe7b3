//! API tokens: long random secrets that act as their user on the REST API
//! (`Authorization: Bearer atl_...`).
//!
//! A token has 256 bits of entropy, so a fast SHA-256 of it is a safe lookup key; the
//! plain token is returned once, at creation, and never stored.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::{random_secret, User};
use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Every Atelier token starts with this, so secret scanners can recognise leaked ones.
pub const TOKEN_PREFIX: &str = "atl_";

/// A token as listed to its owner (never includes the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiToken {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the secret, to tell tokens apart.
    pub token_prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Inline policy narrowing what the token may do (JSON policy document).
    pub policy: Option<String>,
}

/// A freshly created token together with its secret, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    pub token: ApiToken,
    pub secret: String,
}

pub(crate) fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a token for `user`. `expires_in_days` of `None` means no expiry; `policy`,
/// an inline policy document, narrows what the token may do.
pub async fn create(
    db: &Db,
    user: &User,
    name: &str,
    expires_in_days: Option<i64>,
    policy: Option<&str>,
) -> CoreResult<CreatedToken> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(CoreError::invalid("name", "token name must be 1-100 characters"));
    }
    if let Some(days) = expires_in_days {
        if !(1..=3650).contains(&days) {
            return Err(CoreError::invalid("expires_in_days", "expiry must be between 1 and 3650 days"));
        }
    }
    let policy = policy.map(str::trim).filter(|p| !p.is_empty());
    if let Some(p) = policy {
        crate::iam::document::parse(p)?;
    }
    let secret = format!("{TOKEN_PREFIX}{}", random_secret(32));
    let created_at = now();
    let token = ApiToken {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id.clone(),
        name: name.to_string(),
        token_prefix: secret[..TOKEN_PREFIX.len() + 6].to_string(),
        created_at,
        last_used_at: None,
        expires_at: expires_in_days.map(|d| created_at + d * 86_400),
        revoked_at: None,
        policy: policy.map(str::to_string),
    };
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, token_prefix, created_at, expires_at, policy) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&token.id)
    .bind(&token.user_id)
    .bind(&token.name)
    .bind(hash(&secret))
    .bind(&token.token_prefix)
    .bind(token.created_at)
    .bind(token.expires_at)
    .bind(&token.policy)
    .execute(&db.pool)
    .await?;
    tracing::info!(user = %user.username, token = %token.id, "API token created");
    Ok(CreatedToken { token, secret })
}

/// The tokens of one user, newest first, revoked ones included.
pub async fn list(db: &Db, user_id: &str) -> CoreResult<Vec<ApiToken>> {
    Ok(sqlx::query_as::<_, ApiToken>(
        "SELECT id, user_id, name, token_prefix, created_at, last_used_at, expires_at, revoked_at, policy \
         FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?)
}

/// Revokes a token of `user_id`. Revoking twice is not an error.
pub async fn revoke(db: &Db, user_id: &str, token_id: &str) -> CoreResult<()> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3")
            .bind(now())
            .bind(token_id)
            .bind(user_id)
            .execute(&db.pool)
            .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::NotFound("token"));
    }
    tracing::info!(token = %token_id, "API token revoked");
    Ok(())
}

/// A token that authenticated a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub token_id: String,
    pub policy: Option<String>,
    /// The IAM generation read with the token (see `iam::store::generation`), so a
    /// request costs one database round trip.
    pub iam_generation: i64,
}

/// Resolves a presented secret to its active user, token id and inline policy. Revoked
/// or expired tokens and tokens of deactivated users resolve to `Unauthenticated`.
pub async fn authenticate(db: &Db, secret: &str) -> CoreResult<Authenticated> {
    let rejected = || CoreError::Unauthenticated("invalid or revoked API token".into());
    if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 128 {
        return Err(rejected());
    }
    let now = now();
    #[derive(sqlx::FromRow)]
    struct Row {
        token_id: String,
        last_used_at: Option<i64>,
        policy: Option<String>,
        iam_generation: i64,
        #[sqlx(flatten)]
        user: User,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.id AS token_id, t.last_used_at, t.policy, u.id, u.username, u.display_name, u.active, u.created_at, \
         (SELECT generation FROM iam_state WHERE id = 1) AS iam_generation \
         FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.active = 1 \
           AND (t.expires_at IS NULL OR t.expires_at > $2)",
    )
    .bind(hash(secret))
    .bind(now)
    .fetch_optional(&db.pool)
    .await?;
    let Row { token_id, last_used_at, policy, iam_generation, user } = row.ok_or_else(rejected)?;
    // Record use at minute granularity: enough to spot stale tokens, without a write
    // on every request.
    if last_used_at.is_none_or(|t| now - t >= 60) {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&token_id)
            .execute(&db.pool)
            .await?;
    }
    Ok(Authenticated { user, token_id, policy, iam_generation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
