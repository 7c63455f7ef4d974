//! Forms: fields that show the API's validation message beside them, and settings forms that
//! are saved in place (a PUT to the API, answered with the form re-rendered).

use axum::{
    Form,
    extract::Path,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    backend::{ApiFailure, encode},
    layout::notice,
    session::Session,
};

/// The answer to a create form sent on to the API: the new resource's page (`{page}/{id}`), or
/// the form again (`again`) with the API's message.
pub fn created(
    outcome: Result<Value, ApiFailure>,
    page: &str,
    again: impl FnOnce(&ApiFailure) -> Markup,
) -> Response {
    match outcome {
        Ok(created) => {
            let id = encode(created["id"].as_str().unwrap_or_default());
            Redirect::to(&format!("{page}/{id}")).into_response()
        }
        Err(failure) => (StatusCode::UNPROCESSABLE_ENTITY, again(&failure)).into_response(),
    }
}

/// A labelled input; `error` is the API's message when it named this field.
pub fn field(label: &str, input: Markup, name: &str, error: Option<&ApiFailure>) -> Markup {
    let message = error
        .filter(|e| e.field() == Some(name))
        .map(ApiFailure::message);
    html! {
        div.field.invalid[message.is_some()] {
            label for=(name) { (label) }
            (input)
            @if let Some(message) = message {
                p.field-error id={ (name) "-error" } role="alert" { (message) }
            }
        }
    }
}

/// An API failure that names no field of the form at hand, shown above it.
pub fn form_error(error: Option<&ApiFailure>, fields: &[&str]) -> Markup {
    match error {
        Some(e) if e.field().is_none_or(|f| !fields.contains(&f)) => {
            html! { p.notice.bad role="alert" { (e.detail) } }
        }
        _ => html! {},
    }
}

/// An input named `name` (also its id), marked invalid when the API's message names it.
pub fn input(
    name: &str,
    kind: &str,
    value: &str,
    placeholder: &str,
    error: Option<&ApiFailure>,
) -> Markup {
    let invalid = error.and_then(ApiFailure::field) == Some(name);
    html! {
        input id=(name) name=(name) type=(kind) value=(value) placeholder=(placeholder)
            aria-invalid=[invalid.then_some("true")]
            aria-describedby=[invalid.then(|| format!("{name}-error"))];
    }
}

/// A checkbox named `name` that the browser sends only when ticked.
pub fn checkbox(name: &str, label: &str, checked: bool) -> Markup {
    html! {
        div.field.check {
            input id=(name) type="checkbox" name=(name) checked[checked];
            " " label for=(name) { (label) }
        }
    }
}

/// The submit button of a form saved in place, with "Saved." once it was.
pub fn save_button(label: &str, saved: bool) -> Markup {
    html! {
        div.actions {
            button type="submit" { (label) }
            @if saved { (notice(true, "Saved.")) }
        }
    }
}

/// A resource's settings form, edited in place on its page.
pub trait InPlaceForm: Sized {
    /// The API path of the resource with this id.
    fn resource(id: &str) -> String;
    /// The form filled from the resource as the API shows it.
    fn from_resource(resource: &Value) -> Self;
    /// The PUT body: the changes the form asks for.
    fn changes(&self) -> Value;
    /// The form, with the API's complaint or a "Saved." line.
    fn render(&self, id: &str, error: Option<&ApiFailure>, saved: bool) -> Markup;
}

/// `POST` of an in-place form: saved through the API, answered with the form as it now stands
/// (or as sent, with the API's message beside the field it names).
pub async fn save<F: InPlaceForm + DeserializeOwned>(
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<F>,
) -> Response {
    match session.api.put(&F::resource(&id), &form.changes()).await {
        Ok(saved) => F::from_resource(&saved).render(&id, None, true),
        Err(failure) => form.render(&id, Some(&failure), false),
    }
    .into_response()
}
