//! Atelier's user interface: pages, components and the server functions behind them.
//!
//! Built twice: with `ssr` into the server (rendering pages, running server functions)
//! and with `hydrate` into the browser bundle that makes those pages interactive.

pub mod audit;
pub mod auth;
#[cfg(feature = "ssr")]
pub mod charts;
pub mod compute;
pub mod confirm;
#[cfg(feature = "ssr")]
pub mod context;
pub mod datasets;
pub mod endpoints;
pub mod error;
pub mod format;
pub mod forms;
pub mod iam;
pub mod labeler;
pub mod labeling;
pub mod models;
pub mod notebooks;
pub mod tokens;
pub mod training;
pub mod users;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Outlet, ParentRoute, Route, Router, Routes, A};
use leptos_router::{path, SsrMode};

use crate::audit::AuditPage;
use crate::auth::{can, get_me, Can, LoginPage, PasswordPage, SignOutButton};
use crate::compute::NodesPage;
use crate::datasets::{DatasetItemPage, DatasetPage, DatasetsPage};
use crate::endpoints::{EndpointPage, EndpointsPage};
use crate::iam::{GroupPage, GroupsPage, PoliciesPage, PolicyPage, SimulatorPage};
use crate::labeler::{LabelerPage, MyWorkPage};
use crate::labeling::{LabelingJobPage, LabelingJobsPage, NewLabelingJobPage, ReviewQueuePage};
use crate::models::{ApprovalsCount, ApprovalsPage, CompareVersionsPage, ModelGroupPage, ModelVersionPage, ModelsPage};
use crate::tokens::TokensPage;
use crate::training::{CompareTrainingJobsPage, NewTrainingJobPage, TrainingJobPage, TrainingJobsPage};
use crate::users::{UserPage, UsersPage};

/// Name of the JS/WASM/CSS bundle under `/pkg/`.
pub const BUNDLE_NAME: &str = "atelier";

/// The HTML document around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="data:,"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The root component: routes and the document-wide bits.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser, so this marks the moment the page became
    // interactive; browser tests wait for it before they click.
    Effect::new(move |_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <Stylesheet id="leptos" href=format!("/pkg/{BUNDLE_NAME}.css")/>
        <Title text="Atelier"/>
        <Router>
            <Routes fallback=NotFound>
                <Route path=path!("/login") view=LoginPage/>
                // Signed-in pages render in one piece once their data is ready: their
                // data is local and fast, and one write per page is cheaper than
                // streaming the shell and each resource separately (see the bench).
                // A route with slow data can opt back into streaming.
                <ParentRoute path=path!("") view=AppShell ssr=SsrMode::Async>
                    <Route path=path!("") view=HomePage/>
                    <Route path=path!("account/password") view=PasswordPage/>
                    <Route path=path!("account/tokens") view=TokensPage/>
                    <Route path=path!("datasets") view=DatasetsPage/>
                    <Route path=path!("datasets/:name") view=DatasetPage/>
                    <Route path=path!("datasets/:name/items/:seq") view=DatasetItemPage/>
                    <Route path=path!("labeling") view=LabelingJobsPage/>
                    <Route path=path!("labeling/new") view=NewLabelingJobPage/>
                    <Route path=path!("labeling/:name") view=LabelingJobPage/>
                    <Route path=path!("labeling/:name/review") view=ReviewQueuePage/>
                    <Route path=path!("work") view=MyWorkPage/>
                    <Route path=path!("work/:name") view=LabelerPage/>
                    <Route path=path!("models") view=ModelsPage/>
                    <Route path=path!("models/:group") view=ModelGroupPage/>
                    <Route path=path!("models/:group/compare") view=CompareVersionsPage/>
                    <Route path=path!("models/:group/versions/:version") view=ModelVersionPage/>
                    <Route path=path!("approvals") view=ApprovalsPage/>
                    <Route path=path!("endpoints") view=EndpointsPage/>
                    <Route path=path!("endpoints/:name") view=EndpointPage/>
                    <Route path=path!("training") view=TrainingJobsPage/>
                    <Route path=path!("training/new") view=NewTrainingJobPage/>
                    <Route path=path!("training/compare") view=CompareTrainingJobsPage/>
                    <Route path=path!("training/:name") view=TrainingJobPage/>
                    <Route path=path!("compute") view=NodesPage/>
                    <Route path=path!("notebooks") view=notebooks::NotebooksPage/>
                    <Route path=path!("notebooks/:id") view=notebooks::NotebookPage/>
                    <Route path=path!("admin/users") view=UsersPage/>
                    <Route path=path!("admin/users/:username") view=UserPage/>
                    <Route path=path!("admin/groups") view=GroupsPage/>
                    <Route path=path!("admin/groups/:name") view=GroupPage/>
                    <Route path=path!("admin/policies") view=PoliciesPage/>
                    <Route path=path!("admin/policies/:name") view=PolicyPage/>
                    <Route path=path!("admin/simulator") view=SimulatorPage/>
                    <Route path=path!("admin/audit") view=AuditPage/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}

/// The signed-in user, loaded once by the app shell for every page under it.
#[derive(Clone, Copy)]
pub struct CurrentUser(pub Resource<Result<auth::Me, error::AppError>>);

/// The frame of every signed-in page: top bar, navigation, content.
#[component]
fn AppShell() -> impl IntoView {
    let me = Resource::new(|| (), |_| get_me());
    provide_context(CurrentUser(me));
    // The navigation shows what the user may open; the server checks every request.
    let may = move |what: Can| can(CurrentUser(me), what);
    let any_admin = move || {
        [Can::ListUsers, Can::ListGroups, Can::ListPolicies, Can::Simulate, Can::ReadAuditLog].into_iter().any(may)
    };
    // Before the pages: they open it.
    let confirm_dialog = confirm::confirm_dialog();

    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">"Atelier"</A>
            <div class="spacer"></div>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    me.await.ok().map(|m| view! {
                        <span class="user" data-testid="current-user" title=m.username.clone()>{m.display_name}</span>
                    })
                })}
            </Transition>
            <SignOutButton/>
        </header>
        <div class="layout">
            <nav class="sidebar" aria-label="Main">
                <A href="/" exact=true>"Home"</A>
                <Transition fallback=|| ()>
                    <Show when=move || may(Can::ListDatasets)>
                        <A href="/datasets">"Datasets"</A>
                    </Show>
                    <Show when=move || may(Can::ListLabelingJobs)>
                        <A href="/work">"My work"</A>
                        <A href="/labeling">"Labeling jobs"</A>
                    </Show>
                    <Show when=move || may(Can::ListNotebooks)>
                        <A href="/notebooks">"Notebooks"</A>
                    </Show>
                    <Show when=move || may(Can::ListTrainingJobs)>
                        <A href="/training">"Training"</A>
                    </Show>
                    <Show when=move || may(Can::ListModelGroups)>
                        <A href="/models">"Models"</A>
                    </Show>
                    <Show when=move || may(Can::DecideModelVersions)>
                        <A href="/approvals">"Approvals" <ApprovalsCount/></A>
                    </Show>
                    <Show when=move || may(Can::ListEndpoints)>
                        <A href="/endpoints">"Endpoints"</A>
                    </Show>
                    <Show when=move || may(Can::ListNodes)>
                        <A href="/compute">"Compute"</A>
                    </Show>
                </Transition>
                <p class="nav-heading">"Account"</p>
                <A href="/account/password">"Password"</A>
                <A href="/account/tokens">"API tokens"</A>
                <Transition fallback=|| ()>
                    <Show when=any_admin>
                        <p class="nav-heading">"Admin"</p>
                    </Show>
                    <Show when=move || may(Can::ListUsers)><A href="/admin/users">"Users"</A></Show>
                    <Show when=move || may(Can::ListGroups)><A href="/admin/groups">"Groups"</A></Show>
                    <Show when=move || may(Can::ListPolicies)><A href="/admin/policies">"Policies"</A></Show>
                    <Show when=move || may(Can::Simulate)><A href="/admin/simulator">"Simulator"</A></Show>
                    <Show when=move || may(Can::ReadAuditLog)><A href="/admin/audit">"Audit log"</A></Show>
                </Transition>
            </nav>
            <main class="content">
                <Outlet/>
            </main>
        </div>
        {confirm_dialog}
    }
}

/// The landing page after sign-in.
#[component]
fn HomePage() -> impl IntoView {
    let CurrentUser(me) = expect_context::<CurrentUser>();
    let clicks = RwSignal::new(0u32);
    view! {
        <Title text="Home · Atelier"/>
        <Transition fallback=|| view! { <h1>"Welcome"</h1> }>
            {move || Suspend::new(async move {
                let name = me.await.map(|m| m.display_name).unwrap_or_default();
                view! { <h1>"Welcome, " {name}</h1> }
            })}
        </Transition>
        <p class="muted">
            "Atelier is your team's ML studio: datasets, labeling, training, the model registry, endpoints and notebooks. "
            "The areas appear in the navigation as they arrive."
        </p>
        <section class="card">
            <h2>"Get started"</h2>
            <ul>
                <li><A href="/account/tokens">"Create an API token"</A>" to script Atelier through "<code>"/api/v1/"</code>"."</li>
                <li>"The REST API is described at "<a href="/api/v1/openapi.json">"/api/v1/openapi.json"</a>"."</li>
            </ul>
            <button type="button" class="secondary" data-testid="hello" on:click=move |_| clicks.update(|n| *n += 1)>
                {move || match clicks.get() { 0 => "Say hello".to_string(), n => format!("Hello ×{n}") }}
            </button>
        </section>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <main class="content">
            <h1>"Page not found"</h1>
            <p><A href="/">"Back to the studio"</A></p>
        </main>
    }
}
