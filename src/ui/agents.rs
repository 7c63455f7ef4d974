//! Agents: the list, and each agent's endpoint settings and inbox as a live list. The inbox is
//! the API's Server-Sent Events stream, passed through under the session cookie.

use axum::{
    Form, Router,
    extract::Path,
    http::{HeaderMap, Method, header::HeaderName},
    response::{IntoResponse, Response},
    routing::get,
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    UiState,
    backend::{ApiFailure, encode},
    layout::{Nav, failure_page, field, form_error, notice, page, text_or_dash},
    session::Session,
    tenant_only,
};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/agents", get(list))
        .route("/ui/agents/{id}", get(show).post(save_endpoint))
        .route("/ui/agents/{id}/stream", get(stream))
}

async fn list(session: Session) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    let agents = match session.api.get("/api/agents").await {
        Ok(agents) => agents,
        Err(failure) => return failure_page(session.role, &failure),
    };
    let agents = agents.as_array().cloned().unwrap_or_default();
    page(
        "Agents",
        Some(session.role),
        Nav::Agents,
        html! {
            h1 { "Agents" }
            section.card {
                @if agents.is_empty() {
                    p.muted { "No agents yet. An incoming webhook that names an agent creates it." }
                } @else {
                    table #agents {
                        thead { tr { th { "Agent" } th { "Endpoint" } th { "Created" } } }
                        tbody { @for agent in &agents {
                            tr {
                                td { a href={ "/ui/agents/" (encode(agent["id"].as_str().unwrap_or_default())) } { (text_or_dash(&agent["name"])) } }
                                td { (text_or_dash(&agent["endpoint"]["url"])) }
                                td.muted { (text_or_dash(&agent["created_at"])) }
                            }
                        } }
                    }
                }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize, Default)]
struct EndpointForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    model: String,
}

impl EndpointForm {
    fn from_agent(agent: &Value) -> Self {
        let endpoint = &agent["endpoint"];
        let text = |name: &str| endpoint[name].as_str().unwrap_or_default().to_string();
        EndpointForm {
            url: text("url"),
            format: text("format"),
            model: text("model"),
        }
    }

    /// A blank URL removes the endpoint.
    fn to_json(&self) -> Value {
        if self.url.trim().is_empty() {
            return json!({ "endpoint": null });
        }
        let mut endpoint = json!({ "url": self.url.trim(), "format": self.format });
        if !self.model.trim().is_empty() {
            endpoint["model"] = Value::from(self.model.trim());
        }
        json!({ "endpoint": endpoint })
    }
}

fn endpoint_editor(
    id: &str,
    form: &EndpointForm,
    error: Option<&ApiFailure>,
    saved: bool,
) -> Markup {
    html! {
        form #endpoint hx-post={ "/ui/agents/" (encode(id)) } hx-swap="outerHTML" novalidate {
            (form_error(error, &["endpoint"]))
            (field("Endpoint URL (blank: inbox only)",
                html! { input #endpoint-url name="url" type="text" value=(form.url) placeholder="https://agent.example.com/v1/chat/completions"; },
                "endpoint", error))
            div.split {
                div.field {
                    label for="endpoint-format" { "Format" }
                    select #endpoint-format name="format" {
                        option value="json" selected[form.format != "openai_chat"] { "JSON" }
                        option value="openai_chat" selected[form.format == "openai_chat"] { "OpenAI chat" }
                    }
                }
                div.field {
                    label for="endpoint-model" { "Model (OpenAI chat)" }
                    input #endpoint-model name="model" type="text" value=(form.model);
                }
            }
            div.actions {
                button type="submit" { "Save endpoint" }
                @if saved { (notice(true, "Saved.")) }
            }
        }
    }
}

async fn save_endpoint(
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<EndpointForm>,
) -> Response {
    let path = format!("/api/agents/{}", encode(&id));
    match session.api.put(&path, &form.to_json()).await {
        Ok(agent) => endpoint_editor(&id, &EndpointForm::from_agent(&agent), None, true),
        Err(failure) => endpoint_editor(&id, &form, Some(&failure), false),
    }
    .into_response()
}

async fn show(session: Session, Path(id): Path<String>) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    let encoded = encode(&id);
    let agent = match session.api.get(&format!("/api/agents/{encoded}")).await {
        Ok(agent) => agent,
        Err(failure) => return failure_page(session.role, &failure),
    };
    page(
        "Agent",
        Some(session.role),
        Nav::Agents,
        html! {
            h1 { "Agent: " (text_or_dash(&agent["name"])) }
            section.card {
                h2 { "Inbox " span #inbox-status.badge.pending { "connecting…" } }
                p.muted { "Newest first. Messages appear as they arrive, without reloading." }
                ul #inbox.inbox data-stream={ "/ui/agents/" (encoded) "/stream" } data-status="#inbox-status" {
                    li.empty.muted { "No messages yet." }
                }
            }
            section.card {
                h2 { "Endpoint" }
                p.muted { "Where messages will also be pushed (pushing is not built yet; the inbox always receives them)." }
                (endpoint_editor(&id, &EndpointForm::from_agent(&agent), None, false))
            }
        },
    )
    .into_response()
}

/// The API's inbox stream under the session cookie: `EventSource` cannot send a bearer header.
async fn stream(session: Session, Path(id): Path<String>, headers: HeaderMap) -> Response {
    const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
    let resume: Vec<_> = headers
        .get(&LAST_EVENT_ID)
        .map(|value| (LAST_EVENT_ID, value.clone()))
        .into_iter()
        .collect();
    let path = format!("/api/agents/{}/messages/stream", encode(&id));
    session.api.send(Method::GET, &path, None, &resume).await
}
