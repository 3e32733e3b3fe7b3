//! The one access-control check: may this principal do this action on this resource?
//!
//! Every HTTP route and server function that is not on the public list calls
//! [`authorize`] before acting. The rules here are the foundation's (administrators may
//! do everything; a user may act on their own account); the access-control issue
//! replaces the rule body with policy evaluation behind the same call.

use std::fmt;

use crate::accounts::User;
use crate::{CoreError, CoreResult};

/// Who is acting, and how they proved it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub via: Credential,
}

/// How a principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A browser session cookie.
    Session,
    /// An API token, by token id.
    ApiToken(String),
}

/// Actions, named `service:Verb` as they will appear in policy documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    GetUser,
    ListUsers,
    CreateUser,
    UpdateUser,
    ChangePassword,
    ListAccessTokens,
    CreateAccessToken,
    DeleteAccessToken,
}

impl Action {
    /// Every action, for catalogues and documentation.
    pub const ALL: [Action; 8] = [
        Action::GetUser,
        Action::ListUsers,
        Action::CreateUser,
        Action::UpdateUser,
        Action::ChangePassword,
        Action::ListAccessTokens,
        Action::CreateAccessToken,
        Action::DeleteAccessToken,
    ];

    /// The action's policy name.
    pub fn name(self) -> &'static str {
        match self {
            Action::GetUser => "iam:GetUser",
            Action::ListUsers => "iam:ListUsers",
            Action::CreateUser => "iam:CreateUser",
            Action::UpdateUser => "iam:UpdateUser",
            Action::ChangePassword => "iam:ChangePassword",
            Action::ListAccessTokens => "iam:ListAccessTokens",
            Action::CreateAccessToken => "iam:CreateAccessToken",
            Action::DeleteAccessToken => "iam:DeleteAccessToken",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An Atelier resource name, such as `atelier:iam:user/alice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource(String);

impl Resource {
    /// A user account.
    pub fn user(username: &str) -> Self {
        Resource(format!("atelier:iam:user/{username}"))
    }
    /// The collection of all users (for listing and creating).
    pub fn all_users() -> Self {
        Resource("atelier:iam:user/*".into())
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Allows or refuses `action` on `resource` for `principal`.
pub fn authorize(principal: &Principal, action: Action, resource: &Resource) -> CoreResult<()> {
    let user = &principal.user;
    let allowed = user.is_active()
        && (user.is_admin() || (resource == &Resource::user(&user.username) && action != Action::UpdateUser));
    if allowed {
        Ok(())
    } else {
        tracing::info!(user = %user.username, %action, %resource, "access denied");
        Err(CoreError::Forbidden(format!("{} may not perform {action} on {resource}", user.username)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str, admin: bool) -> Principal {
        Principal {
            user: User {
                id: name.into(),
                username: name.into(),
                display_name: name.into(),
                is_admin: i64::from(admin),
                active: 1,
                created_at: 0,
            },
            via: Credential::Session,
        }
    }

    #[test]
    fn users_manage_their_own_tokens_but_not_others() {
        let alice = principal("alice", false);
        assert!(authorize(&alice, Action::CreateAccessToken, &Resource::user("alice")).is_ok());
        assert!(authorize(&alice, Action::CreateAccessToken, &Resource::user("bob")).is_err());
        assert!(authorize(&alice, Action::ListUsers, &Resource::all_users()).is_err());
    }

    #[test]
    fn users_cannot_reactivate_or_promote_themselves() {
        let alice = principal("alice", false);
        assert!(authorize(&alice, Action::UpdateUser, &Resource::user("alice")).is_err());
    }

    #[test]
    fn admins_may_do_everything_but_not_once_deactivated() {
        let mut admin = principal("root", true);
        for action in Action::ALL {
            assert!(authorize(&admin, action, &Resource::user("bob")).is_ok(), "{action}");
        }
        admin.user.active = 0;
        assert!(authorize(&admin, Action::GetUser, &Resource::user("root")).is_err());
    }
}
