//! Models: the model registry's groups.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::format::format_time;
use crate::forms::{FieldError, FormError};

/// A model group, as the page and `/api/v1/model-groups` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ModelGroupInfo {
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
}

#[cfg(feature = "ssr")]
impl From<atelier_core::models::ModelGroup> for ModelGroupInfo {
    fn from(g: atelier_core::models::ModelGroup) -> Self {
        ModelGroupInfo { name: g.name, description: g.description, created_by: g.created_by, created_at: g.created_at }
    }
}

#[server]
pub async fn list_model_groups() -> Result<Vec<ModelGroupInfo>, AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    Ok(atelier_core::models::list_groups(&db, &p).await?.into_iter().map(ModelGroupInfo::from).collect())
}

#[server]
pub async fn create_model_group(name: String, description: String) -> Result<(), AppError> {
    let (db, p) = crate::context::db_and_principal()?;
    atelier_core::models::create_group(&db, &p, &name, &description).await?;
    Ok(())
}

/// Models: the registry's model groups.
#[component]
pub fn ModelsPage() -> impl IntoView {
    let create = ServerAction::<CreateModelGroup>::new();
    let groups = Resource::new(move || create.version().get(), |_| list_model_groups());
    let me = expect_context::<crate::CurrentUser>();
    let can_create = move || crate::auth::can(me, crate::auth::Can::CreateModelGroup);
    view! {
        <h1>"Model registry"</h1>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match groups.await {
                    Err(e) => view! { <p class="error" data-testid="models-error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="muted">"No model groups yet."</p> }.into_any(),
                    Ok(list) => {
                        view! {
                        <table class="table">
                            <thead><tr><th>"Model group"</th><th>"Description"</th><th>"Created by"</th><th>"Created"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|g| { let key = g.name.clone(); view! {
                                    <tr data-model-group=key>
                                        <td>{g.name}</td>
                                        <td>{g.description}</td>
                                        <td>{g.created_by}</td>
                                        <td>{format_time(g.created_at)}</td>
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
                <NewModelGroupForm create/>
            </Show>
        </Transition>
    }
}

#[component]
fn NewModelGroupForm(create: ServerAction<CreateModelGroup>) -> impl IntoView {
    let error = Signal::derive(move || create.value().get().and_then(Result::err));
    view! {
        <ActionForm action=create attr:class="card form">
            <h2>"New model group"</h2>
            <label for="model-group-name">"Name"</label>
            <input id="model-group-name" name="name" type="text" required maxlength="128"/>
            <FieldError error field="name"/>
            <label for="model-group-description">"Description"</label>
            <input id="model-group-description" name="description" type="text"/>
            <FormError error/>
            <button type="submit" class="primary">"Create model group"</button>
        </ActionForm>
    }
}
