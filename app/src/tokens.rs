//! Account > API tokens: create (shown once), list, revoke.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::format::format_time;
use crate::forms::{FieldError, FormError};

/// An API token as its owner sees it, never with the secret. Shared by the page and
/// the REST API (`/api/v1/tokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// The first characters of the secret, to tell tokens apart.
    pub token_prefix: String,
    /// Unix seconds, like every time in the API.
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The inline policy that narrows the token, if any.
    pub policy: Option<String>,
}

#[cfg(feature = "ssr")]
impl From<atelier_core::tokens::ApiToken> for TokenInfo {
    fn from(t: atelier_core::tokens::ApiToken) -> Self {
        TokenInfo {
            id: t.id,
            name: t.name,
            token_prefix: t.token_prefix,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            policy: t.policy,
        }
    }
}

/// The signed-in user's tokens.
#[server]
pub async fn list_tokens() -> Result<Vec<TokenInfo>, AppError> {
    use atelier_core::authz::Action;
    let me = crate::context::authorize_own_account(Action::ListAccessTokens)?.user;
    let tokens = atelier_core::tokens::list(&crate::context::db()?, &me.id).await?;
    Ok(tokens.into_iter().map(TokenInfo::from).collect())
}

/// Creates a token for the signed-in user and returns its secret, once.
#[server]
pub async fn create_token(name: String, expires_in_days: String, policy: Option<String>) -> Result<String, AppError> {
    use atelier_core::authz::Action;
    use atelier_core::CoreError;
    let principal = crate::context::authorize_own_account(Action::CreateAccessToken)?;
    principal.refuse_if_narrowed("create tokens")?;
    let me = principal.user.clone();
    let days = match expires_in_days.trim() {
        "" => None,
        raw => Some(
            raw.parse::<i64>()
                .map_err(|_| CoreError::invalid("expires_in_days", "expiry must be a whole number of days"))?,
        ),
    };
    let created = atelier_core::tokens::create(&crate::context::db()?, &me, &name, days, policy.as_deref()).await?;
    principal.note_change(format!("created API token {} ({})", created.token.name, created.token.id));
    Ok(created.secret)
}

/// Revokes one of the signed-in user's tokens.
#[server]
pub async fn revoke_token(id: String) -> Result<(), AppError> {
    use atelier_core::authz::Action;
    let principal = crate::context::authorize_own_account(Action::DeleteAccessToken)?;
    atelier_core::tokens::revoke(&crate::context::db()?, &principal.user.id, &id).await?;
    principal.note_change(format!("revoked API token {id}"));
    Ok(())
}

/// Account > API tokens.
#[component]
pub fn TokensPage() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let tokens = Resource::new(move || (create.version().get(), revoke.version().get()), |_| list_tokens());
    let create_error = Signal::derive(move || create.value().get().and_then(Result::err));
    let revoke_error = Signal::derive(move || revoke.value().get().and_then(Result::err));

    view! {
        <h1>"API tokens"</h1>
        <p class="muted">
            "Scripts use a token as " <code>"Authorization: Bearer <token>"</code>
            " on the REST API under " <code>"/api/v1/"</code> ". A token acts as you, optionally narrowed by an inline policy."
        </p>
        <ActionForm action=create attr:class="card form">
            <h2>"New token"</h2>
            <label for="token-name">"Name"</label>
            <input id="token-name" name="name" type="text" required maxlength="100" placeholder="ci-pipeline"/>
            <FieldError error=create_error field="name"/>
            <label for="token-expiry">"Expires after (days, empty for never)"</label>
            <input id="token-expiry" name="expires_in_days" type="number" min="1" max="3650"/>
            <FieldError error=create_error field="expires_in_days"/>
            <details>
                <summary>"Narrow with an inline policy (optional)"</summary>
                <p class="muted">"The token may then do only what both this policy and your own policies allow."</p>
                <textarea id="token-policy" name="policy" rows="8" class="code"
                    placeholder=r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:List*", "Resource": "*"}]}"#></textarea>
            </details>
            <FieldError error=create_error field="document"/>
            <FormError error=create_error/>
            <button type="submit" class="primary">"Create token"</button>
        </ActionForm>
        {move || create.value().get().and_then(Result::ok).map(|secret| view! {
            <div class="card notice" role="status">
                <p>"Copy your new token now. It will not be shown again."</p>
                <code class="secret" data-testid="new-token">{secret}</code>
            </div>
        })}
        <FormError error=revoke_error/>
        <Transition fallback=|| view! { <p class="muted">"Loading tokens…"</p> }>
            {move || Suspend::new(async move {
                match tokens.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No tokens yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table">
                            <thead><tr><th>"Name"</th><th>"Token"</th><th>"Created"</th><th>"Last used"</th><th>"Expires"</th><th>"Status"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|t| {
                                    let revoked = t.revoked_at.is_some();
                                    let id = t.id;
                                    view! {
                                        <tr>
                                            <td>{t.name}</td>
                                            <td><code>{t.token_prefix}"…"</code></td>
                                            <td>{format_time(t.created_at)}</td>
                                            <td>{t.last_used_at.map(format_time).unwrap_or_else(|| "never".into())}</td>
                                            <td>{t.expires_at.map(format_time).unwrap_or_else(|| "never".into())}</td>
                                            <td>{if revoked { "revoked" } else { "active" }}{t.policy.is_some().then_some(" · narrowed")}</td>
                                            <td>
                                                {(!revoked).then(|| view! {
                                                    <ActionForm action=revoke attr:class="inline">
                                                        <input type="hidden" name="id" value=id/>
                                                        <button type="submit" class="danger">"Revoke"</button>
                                                    </ActionForm>
                                                })}
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}
