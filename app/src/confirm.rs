//! Asking before a destructive or privileged action. One modal dialog lives in the
//! app shell, outside every page's live-refreshing parts (a node card or a job page
//! re-renders every few seconds, which would remove a dialog drawn inside it); a
//! [`ConfirmButton`] fills it with what will happen and opens it.
//!
//! The dialog is the native `<dialog>` opened with `showModal()`: the browser keeps
//! focus inside it, Escape cancels, and the rest of the page is inert. Cancel has the
//! focus when it opens, so Enter or Space never confirms by default; on close focus
//! goes back to the button that opened it. Only Confirm runs the action.

use leptos::html;
use leptos::prelude::*;

/// What the dialog asks, and what it does on confirm.
#[derive(Clone)]
struct Request {
    title: String,
    consequence: String,
    confirm: String,
    on_confirm: Callback<()>,
    trigger: NodeRef<html::Button>,
}

/// The shell's dialog, as context for the buttons that open it.
#[derive(Clone, Copy)]
struct Confirmer(RwSignal<Option<Request>>);

/// The one confirmation dialog of the app shell; provides the context the
/// [`ConfirmButton`]s under it open. Call it in the shell, before the pages render.
pub fn confirm_dialog() -> impl IntoView {
    let request = RwSignal::new(None::<Request>);
    provide_context(Confirmer(request));
    let dialog = NodeRef::<html::Dialog>::new();
    let cancel = NodeRef::<html::Button>::new();
    // Opened once the request is drawn into it; Cancel takes the focus.
    Effect::new(move |_| {
        if request.with(Option::is_none) {
            return;
        }
        if let Some(d) = dialog.get() {
            if !d.open() {
                let _ = d.show_modal();
            }
            if let Some(c) = cancel.get() {
                let _ = c.focus();
            }
        }
    });
    let close = move || {
        if let Some(d) = dialog.get_untracked() {
            d.close();
        }
    };
    // Escape, Cancel and Confirm all end here.
    let on_close = move |_| {
        if let Some(r) = request.get_untracked() {
            request.set(None);
            if let Some(trigger) = r.trigger.get_untracked() {
                let _ = trigger.focus();
            }
        }
    };
    let confirm = move |_| {
        let asked = request.get_untracked();
        close();
        if let Some(r) = asked {
            r.on_confirm.run(());
        }
    };
    let text = move |f: fn(&Request) -> String| move || request.with(|r| r.as_ref().map(f).unwrap_or_default());
    view! {
        <dialog
            node_ref=dialog
            class="confirm"
            role="alertdialog"
            aria-modal="true"
            aria-labelledby="confirm-title"
            aria-describedby="confirm-consequence"
            data-testid="confirm-dialog"
            on:close=on_close
        >
            <h2 id="confirm-title">{text(|r| r.title.clone())}</h2>
            <p id="confirm-consequence">{text(|r| r.consequence.clone())}</p>
            <div class="confirm-actions">
                <button type="button" class="secondary" node_ref=cancel autofocus data-testid="confirm-cancel" on:click=move |_| close()>
                    "Cancel"
                </button>
                <button type="button" class="danger-solid" data-testid="confirm-ok" on:click=confirm>
                    {text(|r| r.confirm.clone())}
                </button>
            </div>
        </dialog>
    }
}

/// A button that asks before it acts: it opens the shell's dialog with `title` ("Delete
/// endpoint fraud-prod?"), `consequence` ("It serves 3 variants; traffic stops.") and a
/// danger button labelled `confirm` ("Delete endpoint"), and runs `on_confirm` only when
/// that is pressed. Outside the shell it falls back to the browser's own confirm box.
#[component]
pub fn ConfirmButton(
    /// The button's own text.
    #[prop(into)]
    label: String,
    /// The dialog's question, naming the resource.
    #[prop(into)]
    title: String,
    /// What will happen.
    #[prop(into)]
    consequence: String,
    /// The confirm button's text, naming the action.
    #[prop(into)]
    confirm: String,
    /// The action, run on confirm only.
    on_confirm: Callback<()>,
    /// The button's class (default `danger`).
    #[prop(optional, into)]
    class: Option<String>,
    /// A `data-testid` for the button.
    #[prop(optional, into)]
    testid: Option<String>,
) -> impl IntoView {
    let confirmer = use_context::<Confirmer>();
    let trigger = NodeRef::<html::Button>::new();
    let open = move |_| {
        let request = Request {
            title: title.clone(),
            consequence: consequence.clone(),
            confirm: confirm.clone(),
            on_confirm,
            trigger,
        };
        match confirmer {
            Some(Confirmer(signal)) => signal.set(Some(request)),
            None => {
                let asked = format!("{}\n\n{}", request.title, request.consequence);
                if window().confirm_with_message(&asked).unwrap_or(false) {
                    on_confirm.run(());
                }
            }
        }
    };
    view! {
        <button
            type="button"
            class=class.unwrap_or_else(|| "danger".into())
            aria-haspopup="dialog"
            data-testid=testid
            node_ref=trigger
            on:click=open
        >
            {label}
        </button>
    }
}
