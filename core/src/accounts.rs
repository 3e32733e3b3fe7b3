//! User accounts: creation, password hashing and verification, activation.
//!
//! Passwords are hashed with Argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1),
//! always on a blocking thread so a sign-in never stalls the async runtime.

use std::sync::OnceLock;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde::Serialize;

use crate::db::Db;
use crate::{now, CoreError, CoreResult};

/// Shortest password accepted (NIST SP 800-63B minimum for user-chosen secrets).
pub const MIN_PASSWORD_LEN: usize = 8;
/// Argon2 inputs beyond this are refused: hashing cost grows with length.
pub const MAX_PASSWORD_LEN: usize = 256;
/// Longest username.
pub const MAX_USERNAME_LEN: usize = 64;

/// At most this many password hashes run at once: each takes 19 MiB, and sign-in is
/// open to anyone, so a burst of attempts must queue rather than exhaust memory.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// The one answer to a failed sign-in, whatever the reason.
pub fn bad_credentials() -> CoreError {
    CoreError::Unauthenticated("Incorrect username or password.".into())
}

/// A user as the rest of the system sees it. The password hash is deliberately not
/// part of this type, so it cannot be serialized into a response or a log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub active: i64,
    pub created_at: i64,
}

impl User {
    pub fn is_active(&self) -> bool {
        self.active != 0
    }
}

const USER_COLUMNS: &str = "id, username, display_name, active, created_at";

/// What it takes to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub password: String,
    /// Names of policies to attach.
    pub policies: Vec<String>,
    /// Names of groups to join.
    pub groups: Vec<String>,
}

/// Lower-cases and checks a username: 2 to 64 of `a-z 0-9 . _ -`, starting with a letter
/// or digit. Usernames appear in resource names and policy variables, hence the
/// conservative alphabet.
pub fn normalize_username(raw: &str) -> CoreResult<String> {
    let name = raw.trim().to_ascii_lowercase();
    let valid_chars =
        name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    let starts_well = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !(2..=MAX_USERNAME_LEN).contains(&name.len()) || !valid_chars || !starts_well {
        return Err(CoreError::invalid(
            "username",
            "username must be 2-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    Ok(name)
}

/// Checks a new password against the length rules.
pub fn validate_password(field: &'static str, password: &str) -> CoreResult<()> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(CoreError::invalid(field, format!("password must be at least {MIN_PASSWORD_LEN} characters")));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(CoreError::invalid(field, format!("password must be at most {MAX_PASSWORD_LEN} bytes")));
    }
    Ok(())
}

/// Hashes a password with Argon2id on a blocking thread.
pub async fn hash_password(password: String) -> CoreResult<String> {
    let _permit = hashing_permits().acquire().await.map_err(CoreError::internal)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CoreError::Internal(e.to_string().into()))
    })
    .await?
}

/// Verifies a password against a stored PHC hash on a blocking thread.
pub async fn verify_password(password: String, hash: String) -> CoreResult<bool> {
    let _permit = hashing_permits().acquire().await.map_err(CoreError::internal)?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| CoreError::Internal(e.to_string().into()))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await?
}

/// A hash of a random secret, verified against when the username is unknown so that
/// "no such user" takes as long as "wrong password" and the two cannot be told apart.
async fn decoy_hash() -> CoreResult<String> {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return Ok(hash.clone());
    }
    let hash = hash_password(uuid::Uuid::new_v4().to_string()).await?;
    Ok(DECOY.get_or_init(|| hash).clone())
}

/// Creates a user. Fails with `Conflict` when the username is taken.
pub async fn create_user(db: &Db, new: NewUser) -> CoreResult<User> {
    let username = normalize_username(&new.username)?;
    validate_password("password", &new.password)?;
    let display_name = match new.display_name.trim() {
        "" => username.clone(),
        name if name.chars().count() > 128 => {
            return Err(CoreError::invalid("display_name", "display name must be at most 128 characters"))
        }
        name => name.to_string(),
    };
    let hash = hash_password(new.password).await?;
    let user = User { id: uuid::Uuid::new_v4().to_string(), username, display_name, active: 1, created_at: now() };
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO users (id, username, display_name, password_hash, active, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $5)",
    )
    .bind(&user.id)
    .bind(&user.username)
    .bind(&user.display_name)
    .bind(&hash)
    .bind(user.created_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| match CoreError::from(e) {
        CoreError::Conflict(_) => CoreError::Conflict(format!("user '{}' already exists", user.username)),
        other => other,
    })?;
    crate::iam::store::grant_new_user(&mut tx, &user.id, &new.policies, &new.groups).await?;
    tx.commit().await?;
    tracing::info!(user = %user.username, policies = ?new.policies, "user created");
    Ok(user)
}

/// Finds a user by id.
pub async fn get_user(db: &Db, id: &str) -> CoreResult<User> {
    sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(CoreError::NotFound("user"))
}

/// Finds a user by username (case-insensitive).
pub async fn find_by_username(db: &Db, username: &str) -> CoreResult<Option<User>> {
    let name = username.trim().to_ascii_lowercase();
    Ok(sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"))
        .bind(name)
        .fetch_optional(&db.pool)
        .await?)
}

/// All users, by username.
pub async fn list_users(db: &Db) -> CoreResult<Vec<User>> {
    Ok(sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"))
        .fetch_all(&db.pool)
        .await?)
}

/// Checks a username and password. Unknown user, wrong password and deactivated account
/// all give the same error, after the same amount of work.
pub async fn verify_credentials(db: &Db, username: &str, password: &str) -> CoreResult<User> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(bad_credentials());
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        password_hash: String,
        #[sqlx(flatten)]
        user: User,
    }
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT password_hash, {USER_COLUMNS} FROM users WHERE username = $1"))
            .bind(username.trim().to_ascii_lowercase())
            .fetch_optional(&db.pool)
            .await?;
    let (hash, user) = match row {
        Some(Row { password_hash, user }) => (password_hash, Some(user)),
        None => (decoy_hash().await?, None),
    };
    let matches = verify_password(password.to_string(), hash).await?;
    match user {
        Some(user) if matches && user.is_active() => Ok(user),
        _ => Err(bad_credentials()),
    }
}

/// Changes a user's own password after checking the current one. Ends every other
/// session of the user and keeps `keep_session` (the cookie's id of the session making
/// the change).
pub async fn change_password(
    db: &Db,
    user: &User,
    current: &str,
    new: &str,
    keep_session: Option<&str>,
) -> CoreResult<()> {
    // Guessing the current password through a stolen session or token is throttled
    // like guessing it at sign-in.
    let keys = crate::throttle::keys(&user.username, None);
    crate::throttle::admit(db, &keys).await?;
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1").bind(&user.id).fetch_one(&db.pool).await?;
    if current.len() > MAX_PASSWORD_LEN || !verify_password(current.to_string(), hash).await? {
        return Err(CoreError::invalid("current_password", "current password is incorrect"));
    }
    crate::throttle::record_success(db, &keys).await?;
    validate_password("new_password", new)?;
    if new == current {
        return Err(CoreError::invalid("new_password", "new password must differ from the current one"));
    }
    let new_hash = hash_password(new.to_string()).await?;
    let mut tx = db.pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(&new_hash)
        .bind(now())
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
        .bind(&user.id)
        .bind(keep_session.map(crate::sessions::stored_id).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(user = %user.username, "password changed");
    Ok(())
}

/// Activates or deactivates a user. Deactivation ends the user's sessions in the same
/// transaction; their API tokens stop working because every token lookup checks the
/// owner is active.
/// `actor` may not deactivate themselves (it would lock the last admin out).
pub async fn set_active(db: &Db, actor: &User, id: &str, active: bool) -> CoreResult<User> {
    if actor.id == id && !active {
        return Err(CoreError::Conflict("you cannot deactivate your own account".into()));
    }
    let mut tx = db.pool.begin().await?;
    let updated = sqlx::query("UPDATE users SET active = $1, updated_at = $2 WHERE id = $3")
        .bind(i64::from(active))
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(CoreError::NotFound("user"));
    }
    if !active {
        if !crate::iam::store::administrator_remains(&mut tx).await? {
            let name: String =
                sqlx::query_scalar("SELECT username FROM users WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
            return Err(crate::iam::store::last_administrator(&format!("deactivating {name}")));
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let user = get_user(db, id).await?;
    tracing::info!(user = %user.username, active, "user activation changed");
    Ok(user)
}

/// The built-in policy that makes a user an administrator.
pub const ADMIN_POLICY: &str = "AdministratorAccess";

/// Sets another user's password (an administrator's reset) and ends all of that
/// user's sessions. The user's API tokens keep working; revoke them separately.
pub async fn reset_password(db: &Db, id: &str, new_password: &str) -> CoreResult<User> {
    validate_password("password", new_password)?;
    let user = get_user(db, id).await?;
    let hash = hash_password(new_password.to_string()).await?;
    let mut tx = db.pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(user = %user.username, "password reset by an administrator");
    Ok(user)
}

/// Outcome of [`ensure_admin`].
#[derive(Debug, PartialEq, Eq)]
pub enum AdminBootstrap {
    /// An admin already existed; nothing was done.
    Existing,
    /// The `admin` account was created with this password.
    Created { password: String },
}

/// Creates the `admin` account on first start, when no administrator exists yet.
/// The password is `preset` (from `ATELIER_ADMIN_PASSWORD`) or a new random one.
pub async fn ensure_admin(db: &Db, preset: Option<String>) -> CoreResult<AdminBootstrap> {
    // Administrators hold AdministratorAccess directly or through a group.
    let admins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users u WHERE \
         EXISTS (SELECT 1 FROM user_policies up WHERE up.user_id = u.id AND up.policy_id = $1) \
         OR EXISTS (SELECT 1 FROM group_members m JOIN group_policies gp ON gp.group_id = m.group_id \
                    WHERE m.user_id = u.id AND gp.policy_id = $1)",
    )
    .bind(crate::iam::builtin::id(ADMIN_POLICY))
    .fetch_one(&db.pool)
    .await?;
    if admins > 0 {
        return Ok(AdminBootstrap::Existing);
    }
    let password = match preset.filter(|p| !p.is_empty()) {
        Some(p) => p,
        None => random_secret(18),
    };
    create_user(
        db,
        NewUser {
            username: "admin".into(),
            display_name: "Administrator".into(),
            password: password.clone(),
            policies: vec![ADMIN_POLICY.into()],
            groups: Vec::new(),
        },
    )
    .await?;
    Ok(AdminBootstrap::Created { password })
}

/// `bytes` random bytes, URL-safe base64 without padding.
pub fn random_secret(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalize_username(" Alice ").ok().as_deref(), Some("alice"));
        assert!(normalize_username("a").is_err());
        assert!(normalize_username("-bob").is_err());
        assert!(normalize_username("bob smith").is_err());
        assert!(normalize_username(&"x".repeat(65)).is_err());
    }

    #[test]
    fn short_passwords_are_rejected_with_the_field_name() {
        match validate_password("new_password", "short") {
            Err(CoreError::Invalid { field, .. }) => assert_eq!(field, "new_password"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(validate_password("password", "long enough").is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let hash = hash_password("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse".into(), hash.clone()).await.expect("verify"));
        assert!(!verify_password("wrong horse".into(), hash).await.expect("verify"));
    }
}
