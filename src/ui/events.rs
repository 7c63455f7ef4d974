//! The event type reference, the company's own types (listed with their schemas, and defined
//! here), and a form that publishes a test event.

use axum::{
    Form, Router,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    UiState,
    backend::ApiFailure,
    forms::{field, form_error, input},
    layout::{Nav, failure_page, notice, page, text_or_dash},
    session::Session,
    tenant_only,
};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/events", get(show).post(publish))
        .route("/ui/events/types", post(define))
}

async fn show(session: Session) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    events_page(&session, &TypeForm::default(), None).await
}

/// The form that defines one of the company's own event types.
#[derive(Deserialize, Default)]
struct TypeForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schema: String,
}

impl TypeForm {
    /// The API's request, or the refusal of a schema that is not JSON, worded as the API words
    /// its own (so it shows beside the field).
    fn to_json(&self) -> Result<Value, ApiFailure> {
        let schema: Option<Value> = match self.schema.trim() {
            "" => None,
            text => Some(serde_json::from_str(text).map_err(|error| ApiFailure {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: format!("schema: not JSON ({error})"),
            })?),
        };
        let description = Some(self.description.trim()).filter(|d| !d.is_empty());
        Ok(json!({ "name": self.name.trim(), "description": description, "schema": schema }))
    }
}

async fn define(session: Session, Form(form): Form<TypeForm>) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    let outcome = match form.to_json() {
        Ok(body) => session.api.post("/api/event-types", &body).await,
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(_) => Redirect::to("/ui/events").into_response(),
        Err(failure) => {
            let mut answer = events_page(&session, &form, Some(&failure)).await;
            *answer.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            answer
        }
    }
}

/// The page: publish a test event, the company's own types (and a form to define one), and
/// the whole catalogue.
async fn events_page(session: &Session, form: &TypeForm, error: Option<&ApiFailure>) -> Response {
    let catalogue = match session.api.get("/api/webhooks/event-types").await {
        Ok(catalogue) => catalogue,
        Err(failure) => return failure_page(session.role, &failure),
    };
    let types = catalogue["event_types"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let own: Vec<&Value> = types.iter().filter(|t| t["builtin"] == false).collect();
    page(
        "Event types",
        Some(session.role),
        Nav::Events,
        html! {
            h1 { "Event types" }
            div.grid {
                section.card {
                    h2 { "Publish a test event" }
                    form hx-post="/ui/events" hx-target="#publish-result" {
                        div.field {
                            label for="event_type" { "Event type" }
                            select #event_type name="event_type" {
                                @for t in types.iter().filter(|t| t["publishable"] != false) {
                                    @let name = t["type"].as_str().unwrap_or_default();
                                    option value=(name) { (name) }
                                }
                            }
                        }
                        div.field {
                            label for="data" { "Data (JSON)" }
                            textarea.code #data name="data" spellcheck="false" { "{\n  \"message\": \"hello from the dashboard\"\n}" }
                        }
                        button type="submit" { "Publish" }
                    }
                    div #publish-result.result aria-live="polite" {}
                }
                section.card {
                    h2 { "Your event types" }
                    @if own.is_empty() {
                        p.muted { "None yet. Types you define here can be published and subscribed to like hookd's own; a schema checks the data of each event." }
                    } @else {
                        ul.types #custom-event-types { @for t in &own {
                            li {
                                code { (text_or_dash(&t["type"])) }
                                @if t["archived"] == true { " " span.badge.off { "archived" } }
                                @if t["description"].as_str().is_some_and(|d| !d.is_empty()) {
                                    p.muted { (text_or_dash(&t["description"])) }
                                }
                                @match t.get("schema") {
                                    Some(schema) if !schema.is_null() => details {
                                        summary { "Schema (version " (text_or_dash(&t["version"])) ")" }
                                        pre { (serde_json::to_string_pretty(schema).unwrap_or_default()) }
                                    },
                                    _ => p.muted { "No schema: any data." },
                                }
                            }
                        } }
                    }
                    h3 { "Define an event type" }
                    form #define-event-type method="post" action="/ui/events/types" novalidate {
                        (form_error(error, &["name", "description", "schema"]))
                        (field("Name (dotted, e.g. billing.invoice.paid)", input("name", "text", &form.name, "billing.invoice.paid", error), "name", error))
                        (field("Description (optional)", input("description", "text", &form.description, "", error), "description", error))
                        (field("JSON Schema for data (optional)", html! {
                            textarea.code #schema name="schema" spellcheck="false"
                                placeholder="{\"type\": \"object\", \"required\": [\"amount\"]}" { (form.schema) }
                        }, "schema", error))
                        button type="submit" { "Define type" }
                    }
                }
                section.card {
                    h2 { "Reference" }
                    p.muted { "Subscribe to a name, a family (" code { "chat.*" } ") or everything (" code { "*" } ")." }
                    div.scroll {
                        table #event-types {
                            thead { tr { th { "Type" } th { "When" } } }
                            tbody { @for t in &types {
                                tr { td { code { (text_or_dash(&t["type"])) } } td { (text_or_dash(&t["description"])) } }
                            } }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
struct PublishForm {
    event_type: String,
    #[serde(default)]
    data: String,
}

async fn publish(session: Session, Form(form): Form<PublishForm>) -> Response {
    let data: Value = match form.data.trim() {
        "" => json!({}),
        text => match serde_json::from_str(text) {
            Ok(data) => data,
            Err(error) => {
                return notice(false, &format!("data: not JSON ({error})")).into_response();
            }
        },
    };
    let body = json!({ "event_type": form.event_type, "data": data });
    match session.api.post("/api/events", &body).await {
        Ok(published) => notice(
            true,
            &format!(
                "Published {} to {} webhook(s).",
                text_or_dash(&published["event_id"]),
                published["deliveries"]
            ),
        ),
        Err(failure) => notice(false, &failure.detail),
    }
    .into_response()
}
