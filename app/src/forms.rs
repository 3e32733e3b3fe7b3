//! Small pieces every form uses: showing an error next to its field, or for the form.

use leptos::prelude::*;

use crate::error::AppError;

/// The message of `error` when it is about `field`.
#[component]
pub fn FieldError(#[prop(into)] error: Signal<Option<AppError>>, field: &'static str) -> impl IntoView {
    move || {
        error
            .get()
            .and_then(|e| e.for_field(field))
            .map(|message| view! { <p class="field-error" role="alert">{message}</p> })
    }
}

/// The message of `error` when it is about no particular field.
#[component]
pub fn FormError(#[prop(into)] error: Signal<Option<AppError>>) -> impl IntoView {
    move || error.get().filter(|e| e.field.is_none()).map(|e| view! { <p class="error" role="alert">{e.message}</p> })
}
