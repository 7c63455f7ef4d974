//! Agents: the list, and each agent's endpoint settings and inbox as a live list. The inbox is
//! the API's Server-Sent Events stream, passed through under the session cookie.

use axum::{
    Router,
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
    forms::{self, InPlaceForm, field, form_error, input, save_button},
    layout::{Nav, failure_page, page, text_or_dash},
    session::Session,
    tenant_only,
};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/agents", get(list))
        .route(
            "/ui/agents/{id}",
            get(show).post(forms::save::<EndpointForm>),
        )
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
    /// Named after the API field its messages name (`endpoint.url`), so they show beside it.
    #[serde(default, rename = "endpoint")]
    url: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    model: String,
}

/// The agent's endpoint, saved in place on its page.
impl InPlaceForm for EndpointForm {
    fn resource(id: &str) -> String {
        format!("/api/agents/{}", encode(id))
    }

    fn from_resource(agent: &Value) -> Self {
        let endpoint = &agent["endpoint"];
        let text = |name: &str| endpoint[name].as_str().unwrap_or_default().to_string();
        EndpointForm {
            url: text("url"),
            format: text("format"),
            model: text("model"),
        }
    }

    /// A blank URL removes the endpoint.
    fn changes(&self) -> Value {
        if self.url.trim().is_empty() {
            return json!({ "endpoint": null });
        }
        let mut endpoint = json!({ "url": self.url.trim(), "format": self.format });
        if !self.model.trim().is_empty() {
            endpoint["model"] = Value::from(self.model.trim());
        }
        json!({ "endpoint": endpoint })
    }

    fn render(&self, id: &str, error: Option<&ApiFailure>, saved: bool) -> Markup {
        html! {
            form #endpoint-form hx-post={ "/ui/agents/" (encode(id)) } hx-swap="outerHTML" novalidate {
                (form_error(error, &["endpoint"]))
                (field("Endpoint URL (blank: inbox only)",
                    input("endpoint", "text", &self.url, "https://agent.example.com/v1/chat/completions", error),
                    "endpoint", error))
                div.split {
                    div.field {
                        label for="endpoint-format" { "Format" }
                        select #endpoint-format name="format" {
                            option value="json" selected[self.format != "openai_chat"] { "JSON" }
                            option value="openai_chat" selected[self.format == "openai_chat"] { "OpenAI chat" }
                        }
                    }
                    div.field {
                        label for="endpoint-model" { "Model (OpenAI chat)" }
                        input #endpoint-model name="model" type="text" value=(self.model);
                    }
                }
                (save_button("Save endpoint", saved))
            }
        }
    }
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
                p.muted { "Messages routed to this agent are also pushed here; the inbox always receives them." }
                (EndpointForm::from_resource(&agent).render(&id, None, false))
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
