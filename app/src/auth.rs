//! Signing in and out, the signed-in user, and changing one's password.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::forms::{FieldError, FormError};

/// The signed-in user, as the UI needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub id: String,
    pub username: String,
    pub display_name: String,
    /// What the UI offers this user: links and forms for anything else stay hidden
    /// (the server still checks every request).
    pub can: Vec<Can>,
    /// Model versions waiting for this user's decision (the count beside "Approvals").
    pub approvals_waiting: usize,
}

/// Things the UI shows only to users whose policies allow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Can {
    ListModelGroups,
    CreateModelGroup,
    ListUsers,
    CreateUser,
    ListGroups,
    CreateGroup,
    ListPolicies,
    Simulate,
    ReadAuditLog,
    ListNodes,
    AddNode,
    ListTrainingJobs,
    CreateTrainingJob,
    ListDatasets,
    CreateDataset,
    ListLabelingJobs,
    CreateLabelingJob,
    RegisterModelVersion,
    DecideModelVersions,
    ListEndpoints,
    CreateEndpoint,
    ListNotebooks,
}

impl Can {
    pub const ALL: [Can; 22] = [
        Can::ListModelGroups,
        Can::CreateModelGroup,
        Can::ListUsers,
        Can::CreateUser,
        Can::ListGroups,
        Can::CreateGroup,
        Can::ListPolicies,
        Can::Simulate,
        Can::ReadAuditLog,
        Can::ListNodes,
        Can::AddNode,
        Can::ListTrainingJobs,
        Can::CreateTrainingJob,
        Can::ListDatasets,
        Can::CreateDataset,
        Can::ListLabelingJobs,
        Can::CreateLabelingJob,
        Can::RegisterModelVersion,
        Can::DecideModelVersions,
        Can::ListEndpoints,
        Can::CreateEndpoint,
        Can::ListNotebooks,
    ];
}

/// Whether the signed-in user may do `what` (false until known).
pub fn can(me: crate::CurrentUser, what: Can) -> bool {
    me.0.get().and_then(Result::ok).is_some_and(|m| m.can.contains(&what))
}

/// Only same-site paths are accepted as a place to go after sign-in, so a crafted
/// link cannot bounce a user to another site. Whitespace and control characters are
/// refused too: browsers drop tabs and newlines from URLs, so `/\t/evil.example`
/// would become `//evil.example`, and they are not valid in a `Location` header.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The signed-in user.
#[server]
pub async fn get_me() -> Result<Me, AppError> {
    use atelier_core::authz::{Action, Resource};
    let principal = crate::context::principal()?;
    let can = Can::ALL
        .into_iter()
        .filter(|what| {
            let (action, resource) = match what {
                Can::ListModelGroups => (Action::ListModelGroups, "atelier:models:group/*"),
                Can::CreateModelGroup => (Action::CreateModelGroup, "atelier:models:group/*"),
                Can::ListUsers => (Action::ListUsers, "atelier:iam:user/*"),
                Can::CreateUser => (Action::CreateUser, "atelier:iam:user/*"),
                Can::ListGroups => (Action::ListGroups, "atelier:iam:group/*"),
                Can::CreateGroup => (Action::CreateGroup, "atelier:iam:group/*"),
                Can::ListPolicies => (Action::ListPolicies, "atelier:iam:policy/*"),
                Can::Simulate => (Action::SimulatePolicy, "atelier:iam:user/*"),
                Can::ReadAuditLog => (Action::ListAuditEvents, "atelier:audit:log"),
                Can::ListNodes => (Action::ListNodes, "atelier:compute:node/*"),
                Can::AddNode => (Action::CreateNodeToken, "atelier:compute:node/*"),
                Can::ListTrainingJobs => (Action::ListTrainingJobs, "atelier:training:job/*"),
                Can::CreateTrainingJob => (Action::CreateTrainingJob, "atelier:training:job/*"),
                Can::ListDatasets => (Action::ListDatasets, "atelier:datasets:dataset/*"),
                Can::CreateDataset => (Action::CreateDataset, "atelier:datasets:dataset/*"),
                Can::ListLabelingJobs => (Action::ListLabelingJobs, "atelier:labeling:job/*"),
                Can::CreateLabelingJob => (Action::CreateLabelingJob, "atelier:labeling:job/*"),
                Can::RegisterModelVersion => (Action::RegisterModelVersion, "atelier:models:group/*"),
                Can::DecideModelVersions => (Action::UpdateModelApprovalStatus, "atelier:models:group/*/version/*"),
                Can::ListEndpoints => (Action::ListEndpoints, "atelier:endpoints:endpoint/*"),
                Can::CreateEndpoint => (Action::CreateEndpoint, "atelier:endpoints:endpoint/*"),
                Can::ListNotebooks => (Action::ListNotebooks, "atelier:notebooks:notebook/*"),
            };
            principal.can(action, &Resource::new(resource))
        })
        .collect::<Vec<Can>>();
    // Part of the user's data rather than a resource of its own: the navigation renders
    // it on every page, and a resource created only for some users would shift the
    // others' hydration ids.
    let approvals_waiting = if can.contains(&Can::DecideModelVersions) {
        let db = crate::context::db()?;
        atelier_core::models::approvals::inbox(&db, &principal).await.map(|l| l.len()).unwrap_or(0)
    } else {
        0
    };
    let user = principal.user;
    Ok(Me { can, approvals_waiting, id: user.id, username: user.username, display_name: user.display_name })
}

/// Signs in with a username and password, then goes to `next`.
#[server]
pub async fn sign_in(username: String, password: String, next: Option<String>) -> Result<(), AppError> {
    use crate::context::{client_ip, db, session};
    let (db, session) = (db()?, session()?);
    let ip = client_ip();
    // Whatever was typed, bounded: it is recorded even when no such user exists.
    let name: String = username.trim().to_ascii_lowercase().chars().take(64).collect();
    let outcome = atelier_core::sessions::sign_in(&db, &session, &username, &password, ip.as_deref()).await;
    let event = atelier_core::audit::NewEvent {
        resource: atelier_core::authz::Resource::user(&name).name,
        principal: name,
        action: "iam:SignIn".into(),
        allowed: outcome.is_ok(),
        source_ip: ip,
        summary: match &outcome {
            Ok(_) => "signed in".into(),
            Err(e) => format!("sign-in refused: {e}"),
        },
        ..Default::default()
    };
    atelier_core::audit::record(&db, event).await?;
    outcome?;
    leptos_axum::redirect(&safe_next(next.as_deref()));
    Ok(())
}

/// Ends the browser session.
#[server]
pub async fn sign_out() -> Result<(), AppError> {
    let session = crate::context::session()?;
    if let Ok((db, p)) = crate::context::db_and_principal() {
        let event = atelier_core::audit::NewEvent {
            principal: p.user.username.clone(),
            action: "iam:SignOut".into(),
            resource: atelier_core::authz::Resource::user(&p.user.username).name,
            allowed: true,
            source_ip: p.source_ip.clone(),
            summary: "signed out".into(),
            ..Default::default()
        };
        atelier_core::audit::record(&db, event).await?;
    }
    atelier_core::sessions::sign_out(&session).await?;
    leptos_axum::redirect("/login");
    Ok(())
}

/// Changes the signed-in user's password; other sessions of the user end.
#[server]
pub async fn change_password(
    current_password: String,
    new_password: String,
    confirm_password: String,
) -> Result<(), AppError> {
    use atelier_core::authz::Action;
    use atelier_core::CoreError;
    let principal = crate::context::authorize_own_account(Action::ChangePassword)?;
    if new_password != confirm_password {
        return Err(CoreError::invalid("confirm_password", "the two new passwords differ").into());
    }
    let session = crate::context::session()?;
    let keep = session.id().map(|id| id.to_string());
    atelier_core::accounts::change_password(
        &crate::context::db()?,
        &principal.user,
        &current_password,
        &new_password,
        keep.as_deref(),
    )
    .await?;
    Ok(())
}

/// The sign-in page: the only page a signed-out visitor sees.
#[component]
pub fn LoginPage() -> impl IntoView {
    let action = ServerAction::<SignIn>::new();
    let query = use_query_map();
    let next = move || query.read().get("next").unwrap_or_default();
    let show_password = RwSignal::new(false);
    let error = Signal::derive(move || action.value().get().and_then(Result::err));

    view! {
        <main class="login">
            <section class="login-card">
                <h1 class="brand">"Atelier"</h1>
                <p class="muted">"Sign in to your studio"</p>
                <ActionForm action=action>
                    <input type="hidden" name="next" value=next/>
                    <label for="username">"Username"</label>
                    <input id="username" name="username" type="text" autocomplete="username" required autofocus/>
                    <label for="password">"Password"</label>
                    <div class="password-row">
                        <input
                            id="password"
                            name="password"
                            type=move || if show_password.get() { "text" } else { "password" }
                            autocomplete="current-password"
                            required
                        />
                        <button
                            type="button"
                            class="secondary"
                            aria-label="Show password"
                            aria-pressed=move || show_password.get().to_string()
                            on:click=move |_| show_password.update(|s| *s = !*s)
                        >
                            {move || if show_password.get() { "Hide" } else { "Show" }}
                        </button>
                    </div>
                    <FormError error/>
                    <button type="submit" class="primary" disabled=move || action.pending().get()>
                        {move || if action.pending().get() { "Signing in…" } else { "Sign in" }}
                    </button>
                </ActionForm>
            </section>
        </main>
    }
}

/// The sign-out button of the top bar.
#[component]
pub fn SignOutButton() -> impl IntoView {
    let action = ServerAction::<SignOut>::new();
    view! {
        <ActionForm action=action attr:class="inline">
            <button type="submit" class="secondary">"Sign out"</button>
        </ActionForm>
    }
}

/// Account > Password.
#[component]
pub fn PasswordPage() -> impl IntoView {
    let action = ServerAction::<ChangePassword>::new();
    let error = Signal::derive(move || action.value().get().and_then(Result::err));
    let done = move || matches!(action.value().get(), Some(Ok(())));

    view! {
        <h1>"Change password"</h1>
        <ActionForm action=action attr:class="card form">
            <label for="current_password">"Current password"</label>
            <input id="current_password" name="current_password" type="password" autocomplete="current-password" required/>
            <FieldError error field="current_password"/>
            <label for="new_password">"New password"</label>
            <input id="new_password" name="new_password" type="password" autocomplete="new-password" required minlength="8"/>
            <FieldError error field="new_password"/>
            <label for="confirm_password">"Repeat new password"</label>
            <input id="confirm_password" name="confirm_password" type="password" autocomplete="new-password" required/>
            <FieldError error field="confirm_password"/>
            <FormError error/>
            <Show when=done>
                <p class="success" role="status">"Password changed. Your other sessions were signed out."</p>
            </Show>
            <button type="submit" class="primary" disabled=move || action.pending().get()>"Change password"</button>
        </ActionForm>
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_never_leads_off_site() {
        assert_eq!(safe_next(Some("//evil.example/x")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\r\nSet-Cookie: x")), "/");
        assert_eq!(safe_next(Some("/account/tokens?x=1")), "/account/tokens?x=1");
        assert_eq!(safe_next(None), "/");
    }
}
