//! Rotating a webhook's secret from its page (outgoing signing secret, incoming verification
//! secret): a button that shows the new secret once, and while the replaced secret is still
//! valid, until when.

use axum::{
    Form, Router,
    extract::Path,
    response::{IntoResponse, Response},
    routing::post,
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    UiState,
    backend::encode,
    layout::{notice, text_or_dash},
    session::Session,
};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route(
            "/ui/outgoing/{id}/rotate-secret",
            post(|session, Path(id), Form(form)| rotate(session, "outgoing", id, form)),
        )
        .route(
            "/ui/incoming/{id}/rotate-secret",
            post(|session, Path(id), Form(form)| rotate(session, "incoming", id, form)),
        )
}

/// The rotation controls of webhook `id` (`direction`: `outgoing` or `incoming`), and while an
/// overlap lasts, until when the replaced secret is valid (`previous_expires_at`).
pub fn section(direction: &str, id: &str, previous_expires_at: &Value) -> Markup {
    html! {
        form #rotate-form hx-post={ "/ui/" (direction) "/" (encode(id)) "/rotate-secret" } novalidate
            hx-target="#rotate-result" {
            div.field {
                label for="previous_valid_for" { "Keep the current secret valid beside the new one for (seconds)" }
                input #previous_valid_for type="number" name="previous_valid_for" value="86400" min="0";
            }
            button.secondary #rotate-secret type="submit" { "Rotate secret" }
        }
        div #rotate-result.result aria-live="polite" {
            @if let Some(until) = previous_expires_at.as_str() {
                p.muted #previous-secret { "The previous secret stays valid until " (until) "." }
            }
        }
    }
}

#[derive(Deserialize)]
struct RotateForm {
    #[serde(default)]
    previous_valid_for: String,
}

async fn rotate(session: Session, direction: &str, id: String, form: RotateForm) -> Response {
    let mut body = Map::new();
    let valid_for = form.previous_valid_for.trim();
    if !valid_for.is_empty() {
        // Not a number: sent as text, so the API's message names the field.
        let value = valid_for
            .parse::<i64>()
            .map_or_else(|_| Value::from(valid_for), Value::from);
        body.insert("previous_valid_for".into(), value);
    }
    let path = format!("/api/webhooks/{direction}/{}/rotate-secret", encode(&id));
    match session.api.post(&path, &Value::Object(body)).await {
        Ok(rotated) => html! {
            div.secret-once #new-secret {
                p { "New secret; copy it now: it is shown only this once." }
                div.url-row {
                    code #rotated-secret { (text_or_dash(&rotated["secret"])) }
                    button.secondary type="button" data-copy="#rotated-secret" { "Copy" }
                }
                p.muted #previous-secret {
                    @match rotated["previous_expires_at"].as_str() {
                        Some(until) => { "The previous secret stays valid until " (until) "." }
                        None => { "The previous secret is no longer valid." }
                    }
                }
            }
        },
        Err(failure) => notice(false, &failure.detail),
    }
    .into_response()
}
