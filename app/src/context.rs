//! Server-side access to what the request carries: the database, the authenticated
//! principal, the browser session and the client address. The server's middleware
//! puts these in the request; leptos_axum hands the request parts to every server
//! function and page render.

use atelier_core::authz::{self, Action, Principal, Resource};
use atelier_core::db::Db;
use atelier_core::sessions::ClientIp;
use http::request::Parts;
use leptos::prelude::*;

use crate::error::{AppError, ErrorKind};

fn parts() -> Result<Parts, AppError> {
    use_context::<Parts>().ok_or_else(|| AppError::new(ErrorKind::Internal, "request context missing"))
}

/// The database pool.
pub fn db() -> Result<Db, AppError> {
    use_context::<Db>().ok_or_else(|| AppError::new(ErrorKind::Internal, "database context missing"))
}

/// The authenticated principal, or an `Unauthenticated` error.
/// The artifact store.
pub fn artifacts() -> Result<atelier_core::artifacts::ArtifactStore, AppError> {
    use_context::<atelier_core::artifacts::ArtifactStore>()
        .ok_or_else(|| AppError::new(ErrorKind::Internal, "artifact store context missing"))
}

pub fn principal() -> Result<Principal, AppError> {
    parts()?
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| AppError::new(ErrorKind::Unauthenticated, "You are not signed in."))
}

/// The database and the principal: what a server function that delegates its
/// authorization to a core operation needs.
pub fn db_and_principal() -> Result<(Db, Principal), AppError> {
    Ok((db()?, principal()?))
}

/// The principal, once allowed to perform `action` on `resource`.
pub fn authorize(action: Action, resource: &Resource) -> Result<Principal, AppError> {
    let principal = principal()?;
    authz::authorize(&principal, action, resource)?;
    Ok(principal)
}

/// The principal, once allowed to perform `action` on their own account.
pub fn authorize_own_account(action: Action) -> Result<Principal, AppError> {
    let principal = principal()?;
    authz::authorize(&principal, action, &Resource::user(&principal.user.username))?;
    Ok(principal)
}

/// The browser session of this request.
pub fn session() -> Result<tower_sessions::Session, AppError> {
    parts()?
        .extensions
        .get::<tower_sessions::Session>()
        .cloned()
        .ok_or_else(|| AppError::new(ErrorKind::Internal, "session context missing"))
}

/// The client's address, as the server determined it.
pub fn client_ip() -> Option<String> {
    parts().ok()?.extensions.get::<ClientIp>().map(|ip| ip.0.clone())
}
