//! Admin > Users: list, create, deactivate and reactivate accounts.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::format::format_time;
use crate::forms::{FieldError, FormError};
use crate::CurrentUser;

/// A user account as pages and the REST API (`/api/v1/users`) show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
}

#[cfg(feature = "ssr")]
impl From<atelier_core::accounts::User> for UserInfo {
    fn from(u: atelier_core::accounts::User) -> Self {
        UserInfo {
            is_admin: u.is_admin(),
            active: u.is_active(),
            id: u.id,
            username: u.username,
            display_name: u.display_name,
            created_at: u.created_at,
        }
    }
}

/// Every user.
#[server]
pub async fn list_users() -> Result<Vec<UserInfo>, AppError> {
    use atelier_core::authz::{Action, Resource};
    crate::context::authorize(Action::ListUsers, &Resource::all_users())?;
    let users = atelier_core::accounts::list_users(&crate::context::db()?).await?;
    Ok(users.into_iter().map(UserInfo::from).collect())
}

/// Creates a user; `is_admin` is present when the checkbox is ticked.
#[server]
pub async fn create_user(
    username: String,
    display_name: String,
    password: String,
    is_admin: Option<String>,
) -> Result<(), AppError> {
    use atelier_core::authz::{Action, Resource};
    crate::context::authorize(Action::CreateUser, &Resource::all_users())?;
    let new = atelier_core::accounts::NewUser { username, display_name, password, is_admin: is_admin.is_some() };
    atelier_core::accounts::create_user(&crate::context::db()?, new).await?;
    Ok(())
}

/// Deactivates (ending the user's sessions and tokens at once) or reactivates a user.
#[server]
pub async fn set_user_active(id: String, active: bool) -> Result<(), AppError> {
    use atelier_core::authz::{Action, Resource};
    let db = crate::context::db()?;
    let target = atelier_core::accounts::get_user(&db, &id).await?;
    let principal = crate::context::authorize(Action::UpdateUser, &Resource::user(&target.username))?;
    atelier_core::accounts::set_active(&db, &principal.user, &id, active).await?;
    Ok(())
}

/// Admin > Users.
#[component]
pub fn UsersPage() -> impl IntoView {
    let create = ServerAction::<CreateUser>::new();
    let toggle = ServerAction::<SetUserActive>::new();
    let users = Resource::new(move || (create.version().get(), toggle.version().get()), |_| list_users());
    let CurrentUser(me) = expect_context::<CurrentUser>();
    let create_error = Signal::derive(move || create.value().get().and_then(Result::err));
    let toggle_error = Signal::derive(move || toggle.value().get().and_then(Result::err));

    view! {
        <h1>"Users"</h1>
        <FormError error=toggle_error/>
        <Transition fallback=|| view! { <p class="muted">"Loading users…"</p> }>
            {move || Suspend::new(async move {
                let my_id = me.await.ok().map(|m| m.id).unwrap_or_default();
                match users.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table">
                            <thead><tr><th>"Username"</th><th>"Name"</th><th>"Role"</th><th>"Status"</th><th>"Created"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|u| {
                                    let row_name = u.username.clone();
                                    let is_me = u.id == my_id;
                                    view! {
                                    <tr data-username=row_name>
                                        <td>{u.username}</td>
                                        <td>{u.display_name}</td>
                                        <td>{if u.is_admin { "admin" } else { "user" }}</td>
                                        <td>{if u.active { "active" } else { "deactivated" }}</td>
                                        <td>{format_time(u.created_at)}</td>
                                        <td>
                                            // Deactivating yourself is refused anyway; do not offer it.
                                            {(!is_me).then(|| view! {
                                                <ActionForm action=toggle attr:class="inline">
                                                    <input type="hidden" name="id" value=u.id/>
                                                    <input type="hidden" name="active" value=if u.active { "false" } else { "true" }/>
                                                    <button type="submit" class=if u.active { "danger" } else { "secondary" }>
                                                        {if u.active { "Deactivate" } else { "Reactivate" }}
                                                    </button>
                                                </ActionForm>
                                            })}
                                        </td>
                                    </tr>
                                }}).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
        <ActionForm action=create attr:class="card form">
            <h2>"New user"</h2>
            <label for="new-username">"Username"</label>
            <input id="new-username" name="username" type="text" required/>
            <FieldError error=create_error field="username"/>
            <label for="new-display-name">"Display name"</label>
            <input id="new-display-name" name="display_name" type="text"/>
            <FieldError error=create_error field="display_name"/>
            <label for="new-password">"Initial password"</label>
            <input id="new-password" name="password" type="password" autocomplete="new-password" required minlength="8"/>
            <FieldError error=create_error field="password"/>
            <label class="checkbox"><input type="checkbox" name="is_admin"/>" Administrator"</label>
            <FormError error=create_error/>
            <button type="submit" class="primary">"Create user"</button>
        </ActionForm>
    }
}
