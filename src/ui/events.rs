//! The event type reference and a form that publishes a test event.

use axum::{
    Form, Router,
    response::{IntoResponse, Response},
    routing::get,
};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    UiState,
    layout::{Nav, failure_page, notice, page, text_or_dash},
    session::Session,
    tenant_only,
};

pub fn routes() -> Router<UiState> {
    Router::new().route("/ui/events", get(show).post(publish))
}

async fn show(session: Session) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    let catalogue = match session.api.get("/api/webhooks/event-types").await {
        Ok(catalogue) => catalogue,
        Err(failure) => return failure_page(session.role, &failure),
    };
    let types = catalogue["event_types"]
        .as_array()
        .cloned()
        .unwrap_or_default();
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
