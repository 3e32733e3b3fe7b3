//! Admin > Users: list, create, deactivate, reset passwords, attach policies, groups.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde::{Deserialize, Serialize};

use crate::confirm::ConfirmButton;
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
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Policies attached directly (SelfService applies to everyone and is not listed).
    pub policies: Vec<String>,
    /// Groups the user belongs to (their policies apply too).
    pub groups: Vec<String>,
}

#[cfg(feature = "ssr")]
impl From<atelier_core::iam::admin::UserRecord> for UserInfo {
    fn from(r: atelier_core::iam::admin::UserRecord) -> Self {
        UserInfo {
            active: r.user.is_active(),
            id: r.user.id,
            username: r.user.username,
            display_name: r.user.display_name,
            created_at: r.user.created_at,
            policies: r.policies,
            groups: r.groups,
        }
    }
}

/// Every user.
#[server]
pub async fn list_users() -> Result<Vec<UserInfo>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let users = atelier_core::iam::admin::list_users(&db, &p).await?;
    Ok(users.into_iter().map(UserInfo::from).collect())
}

/// One user, by username.
#[server]
pub async fn get_user(username: String) -> Result<UserInfo, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::iam::admin::get_user(&db, &p, &username).await?.into())
}

/// Creates a user, optionally with one policy and one group (more on the user's page).
#[server]
pub async fn create_user(
    username: String,
    display_name: String,
    password: String,
    policy: Option<String>,
    group: Option<String>,
) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    let policies = policy.into_iter().filter(|p| !p.is_empty()).collect();
    let groups = group.into_iter().filter(|g| !g.is_empty()).collect();
    let new = atelier_core::accounts::NewUser { username, display_name, password, policies, groups };
    atelier_core::iam::admin::create_user(&db, &p, new).await?;
    Ok(())
}

/// Deactivates (ending the user's sessions and tokens at once) or reactivates a user.
#[server]
pub async fn set_user_active(id: String, active: bool) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::set_active(&db, &p, &id, active).await?;
    Ok(())
}

/// Sets a new password for a user; their sessions end.
#[server]
pub async fn reset_password(username: String, password: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::iam::admin::reset_password(&db, &p, &username, &password).await?;
    Ok(())
}

/// Attaches a policy to (or detaches it from) a user.
#[server]
pub async fn set_user_policy(username: String, policy: String, attach: bool) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    crate::iam::policy_chosen(&policy)?;
    atelier_core::iam::admin::set_user_policy(&db, &p, &username, &policy, attach).await?;
    Ok(())
}

/// Admin > Users.
#[component]
pub fn UsersPage() -> impl IntoView {
    let create = ServerAction::<CreateUser>::new();
    let users = Resource::new(move || create.version().get(), |_| list_users());
    let me = expect_context::<CurrentUser>();
    let can_create = move || crate::auth::can(me, crate::auth::Can::CreateUser);

    view! {
        <h1>"Users"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading users…"</p> }>
            {move || Suspend::new(async move {
                match users.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) => {
                        view! {
                        <table class="table">
                            <thead><tr><th>"Username"</th><th>"Name"</th><th>"Policies"</th><th>"Groups"</th><th>"Status"</th><th>"Created"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|u| {
                                    let (key, href) = (u.username.clone(), format!("/admin/users/{}", u.username));
                                    view! {
                                    <tr data-username=key>
                                        <td><A href=href>{u.username}</A></td>
                                        <td>{u.display_name}</td>
                                        <td>{u.policies.join(", ")}</td>
                                        <td>{u.groups.join(", ")}</td>
                                        <td>{if u.active { "active" } else { "deactivated" }}</td>
                                        <td>{format_time(u.created_at)}</td>
                                    </tr>
                                }}).collect_view()}
                            </tbody>
                        </table>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <Transition fallback=|| ()>
            <Show when=can_create>
                <NewUserForm create/>
            </Show>
        </Transition>
    }
}

/// The "New user" form, shown to those who may create users.
#[component]
fn NewUserForm(create: ServerAction<CreateUser>) -> impl IntoView {
    // Fetched only here, so viewers who cannot create users cause no denied lookups.
    let choices = Resource::new(|| (), |_| crate::iam::attach_choices());
    let create_error = Signal::derive(move || create.value().get().and_then(Result::err));
    view! {
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
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let (policies, groups) = choices.await.unwrap_or_default();
                    view! {
                        <label for="new-policy">"Policy"</label>
                        <select id="new-policy" name="policy">
                            <option value="">"(none)"</option>
                            {policies.into_iter().map(|p| view! { <option value=p.clone()>{p.clone()}</option> }).collect_view()}
                        </select>
                        <label for="new-group">"Group"</label>
                        <select id="new-group" name="group">
                            <option value="">"(none)"</option>
                            {groups.into_iter().map(|g| view! { <option value=g.clone()>{g.clone()}</option> }).collect_view()}
                        </select>
                    }
                })}
            </Transition>
            <FieldError error=create_error field="policies"/>
            <FieldError error=create_error field="groups"/>
            <FormError error=create_error/>
            <button type="submit" class="primary">"Create user"</button>
        </ActionForm>
    }
}

/// Admin > Users > one user.
#[component]
pub fn UserPage() -> impl IntoView {
    let params = use_params_map();
    let username = move || params.read().get("username").unwrap_or_default();
    let toggle = ServerAction::<SetUserActive>::new();
    let reset = ServerAction::<ResetPassword>::new();
    let policy = ServerAction::<SetUserPolicy>::new();
    let group = ServerAction::<crate::iam::SetGroupMember>::new();
    let user = Resource::new(
        move || (username(), toggle.version().get(), policy.version().get(), group.version().get()),
        |(name, ..)| get_user(name),
    );
    let choices = Resource::new(|| (), |_| crate::iam::attach_choices());
    let CurrentUser(me) = expect_context::<CurrentUser>();
    let errors = Signal::derive(move || {
        [toggle.value().get(), policy.value().get(), group.value().get()].into_iter().flatten().find_map(Result::err)
    });
    let reset_error = Signal::derive(move || reset.value().get().and_then(Result::err));

    view! {
        <p><A href="/admin/users">"← Users"</A></p>
        <FormError error=errors/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let my_id = me.await.ok().map(|m| m.id).unwrap_or_default();
                let (all_policies, all_groups) = choices.await.unwrap_or_default();
                match user.await {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(u) => {
                        // StoredValue is Copy: each form's children closure can take it.
                        let name = StoredValue::new(u.username.clone());
                        let is_me = u.id == my_id;
                        let policy_options_empty = all_policies.iter().all(|p| u.policies.contains(p));
                        let group_options_empty = all_groups.iter().all(|g| u.groups.contains(g));
                        let policy_options = all_policies.into_iter().filter(|p| !u.policies.contains(p))
                            .map(|p| { let v = p.clone(); view! { <option value=v>{p}</option> } }).collect_view();
                        let group_options = all_groups.into_iter().filter(|g| !u.groups.contains(g))
                            .map(|g| { let v = g.clone(); view! { <option value=v>{g}</option> } }).collect_view();
                        let policy_rows = u.policies.clone().into_iter().map(|p| {
                            let (href, key) = (format!("/admin/policies/{p}"), p.clone());
                            let username = name.get_value();
                            let title = format!("Detach policy {p} from {username}?");
                            let consequence = format!(
                                "{username} loses what {p} allows them from their next request on, \
                                 unless a policy of one of their groups allows it too."
                            );
                            let target = SetUserPolicy { username, policy: p.clone(), attach: false };
                            view! {
                                <li data-policy=key>
                                    <A href=href>{p}</A>" "
                                    <ConfirmButton
                                        label="Detach"
                                        class="link"
                                        title
                                        consequence
                                        confirm="Detach policy"
                                        on_confirm=Callback::new(move |_| { policy.dispatch(target.clone()); })
                                    />
                                </li>
                            }
                        }).collect_view();
                        let group_rows = u.groups.clone().into_iter().map(|g| {
                            let (href, value) = (format!("/admin/groups/{g}"), g.clone());
                            view! {
                                <li>
                                    <A href=href>{g}</A>" "
                                    <ActionForm action=group attr:class="inline">
                                        <input type="hidden" name="username" value=name.get_value()/>
                                        <input type="hidden" name="group" value=value/>
                                        <input type="hidden" name="member" value="false"/>
                                        <button type="submit" class="link">"Remove"</button>
                                    </ActionForm>
                                </li>
                            }
                        }).collect_view();
                        view! {
                            <h1>{u.display_name.clone()} <span class="muted">" @"{u.username.clone()}</span></h1>
                            <p>{if u.active { "Active" } else { "Deactivated" }}" · created "{format_time(u.created_at)}</p>
                            {(!is_me && u.active).then(|| {
                                let target = SetUserActive { id: u.id.clone(), active: false };
                                view! {
                                    <ConfirmButton
                                        label="Deactivate"
                                        title=format!("Deactivate user {}?", u.username)
                                        consequence=format!(
                                            "{} is signed out everywhere at once, their API tokens stop working and they \
                                             cannot sign in until reactivated. What they made stays.",
                                            u.username
                                        )
                                        confirm="Deactivate user"
                                        testid="deactivate-user"
                                        on_confirm=Callback::new(move |_| { toggle.dispatch(target.clone()); })
                                    />
                                }
                            })}
                            {(!is_me && !u.active).then(|| view! {
                                <ActionForm action=toggle attr:class="inline">
                                    <input type="hidden" name="id" value=u.id.clone()/>
                                    <input type="hidden" name="active" value="true"/>
                                    <button type="submit" class="secondary">"Reactivate"</button>
                                </ActionForm>
                            })}
                            <section class="card">
                                <h2>"Policies"</h2>
                                <p class="muted">"SelfService applies to every user. Policies of the user's groups apply too."</p>
                                <ul data-testid="user-policies">{policy_rows}</ul>
                                <ActionForm action=policy attr:class="inline" attr:hidden=policy_options_empty>
                                    <input type="hidden" name="username" value=name.get_value()/>
                                    <input type="hidden" name="attach" value="true"/>
                                    <select name="policy" aria-label="Policy to attach" data-testid="attach-policy">
                                        <option value="" selected>"Choose a policy…"</option>
                                        {policy_options}
                                    </select>
                                    <button type="submit" class="secondary">"Attach policy"</button>
                                </ActionForm>
                                <FieldError error=errors field="policy"/>
                            </section>
                            <section class="card">
                                <h2>"Groups"</h2>
                                <ul data-testid="user-groups">{group_rows}</ul>
                                <ActionForm action=group attr:class="inline" attr:hidden=group_options_empty>
                                    <input type="hidden" name="username" value=name.get_value()/>
                                    <input type="hidden" name="member" value="true"/>
                                    <select name="group" aria-label="Group to join">{group_options}</select>
                                    <button type="submit" class="secondary">"Add to group"</button>
                                </ActionForm>
                            </section>
                            <ActionForm action=reset attr:class="card form">
                                <h2>"Reset password"</h2>
                                <input type="hidden" name="username" value=name.get_value()/>
                                <label for="reset-password">"New password"</label>
                                <input id="reset-password" name="password" type="password" autocomplete="new-password" required minlength="8"/>
                                <FieldError error=reset_error field="password"/>
                                <FormError error=reset_error/>
                                {move || matches!(reset.value().get(), Some(Ok(()))).then(|| view! { <p class="success" role="status">"Password reset; the user's sessions ended."</p> })}
                                <button type="submit" class="secondary">"Set password"</button>
                            </ActionForm>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}
