//! An incoming webhook's page: its receiving URL, allowlist and rate limit, the template editor
//! with a live preview (the API's preview endpoint), and its request log.

use axum::{
    Form, Router,
    extract::Path,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    UiState,
    backend::{ApiFailure, encode},
    forms::{self, InPlaceForm, checkbox, field, form_error, input, save_button},
    layout::{Nav, failure_page, notice, page, text_or_dash},
    logs, rotation,
    session::Session,
    tenant_only,
};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/incoming/new", get(new_form))
        .route("/ui/incoming", post(create))
        .route(
            "/ui/incoming/{id}",
            get(show).post(forms::save::<SettingsForm>),
        )
        .route("/ui/incoming/{id}/log", get(logs::incoming_fragment))
        .route("/ui/incoming/{id}/preview", post(preview))
        .route("/ui/incoming/{id}/template", post(save_template))
}

const SAMPLE_PAYLOAD: &str = "{\n  \"lead_name\": \"Ada Lovelace\",\n  \"company\": \"Analytical Engines\",\n  \"priority\": \"high\"\n}";

/// A template as the editor holds it: a JSON object is a set of templates
/// (`payload_transformation`), anything else one template string.
fn template_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) => object,
        _ => Value::from(text),
    }
}

/// The template the webhook has, as editor text.
fn template_text(hook: &Value) -> String {
    match (&hook["transform_template"], &hook["payload_transformation"]) {
        (Value::String(template), _) => template.clone(),
        (_, object @ Value::Object(_)) => serde_json::to_string_pretty(object).unwrap_or_default(),
        _ => String::new(),
    }
}

fn text_input(name: &str, value: &str, error: Option<&ApiFailure>) -> Markup {
    input(name, "text", value, "", error)
}

#[derive(Deserialize, Default)]
struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    transform_template: String,
}

fn new_page(session: &Session, form: &CreateForm, error: Option<&ApiFailure>) -> Markup {
    const FIELDS: &[&str] = &["name", "agent_id", "transform_template"];
    page(
        "New incoming webhook",
        Some(session.role),
        Nav::Overview,
        html! {
            h1 { "New incoming webhook" }
            section.card {
                form method="post" action="/ui/incoming" novalidate {
                    (form_error(error, FIELDS))
                    (field("Name", text_input("name", &form.name, error), "name", error))
                    (field("Agent (id or name; created if new)", text_input("agent_id", &form.agent_id, error), "agent_id", error))
                    (field("Template (optional; Jinja2, e.g. {{ data | tojson }})",
                        html! { textarea.code #transform_template name="transform_template" { (form.transform_template) } },
                        "transform_template", error))
                    button type="submit" { "Create webhook" }
                }
            }
        },
    )
}

async fn new_form(session: Session) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    new_page(&session, &CreateForm::default(), None).into_response()
}

async fn create(session: Session, Form(form): Form<CreateForm>) -> Response {
    let mut body = json!({"name": form.name.trim(), "agent_id": form.agent_id.trim()});
    if !form.transform_template.trim().is_empty() {
        body["transform_template"] = template_value(&form.transform_template);
    }
    let outcome = session.api.post("/api/webhooks/incoming", &body).await;
    forms::created(outcome, "/ui/incoming", |failure| {
        new_page(&session, &form, Some(failure))
    })
}

/// The access settings as the browser sends them.
#[derive(Deserialize, Default)]
struct SettingsForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    rate_limit: String,
    /// One address or range per line.
    #[serde(default)]
    allowed_ips: String,
    is_active: Option<String>,
}

/// The access settings on the webhook's page, saved in place.
impl InPlaceForm for SettingsForm {
    fn resource(id: &str) -> String {
        format!("/api/webhooks/incoming/{}", encode(id))
    }

    fn from_resource(hook: &Value) -> Self {
        SettingsForm {
            name: text_or_dash(&hook["name"]),
            agent_id: hook["agent_id"]
                .as_str()
                .or(hook["agent_name"].as_str())
                .unwrap_or_default()
                .to_string(),
            rate_limit: hook["rate_limit"].to_string(),
            allowed_ips: hook["allowed_ips"]
                .as_array()
                .map(|ips| {
                    ips.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default(),
            is_active: hook["is_active"]
                .as_bool()
                .unwrap_or(true)
                .then(String::new),
        }
    }

    fn changes(&self) -> Value {
        let rate_limit = self
            .rate_limit
            .trim()
            .parse::<i64>()
            .map_or_else(|_| Value::from(self.rate_limit.trim()), Value::from);
        let allowed_ips: Vec<&str> = self
            .allowed_ips
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        json!({
            "name": self.name.trim(),
            "agent_id": self.agent_id.trim(),
            "rate_limit": rate_limit,
            "allowed_ips": allowed_ips,
            "is_active": self.is_active.is_some(),
        })
    }

    fn render(&self, id: &str, error: Option<&ApiFailure>, saved: bool) -> Markup {
        const FIELDS: &[&str] = &["name", "agent_id", "rate_limit", "allowed_ips"];
        html! {
            form #settings hx-post={ "/ui/incoming/" (encode(id)) } hx-swap="outerHTML" novalidate {
                (form_error(error, FIELDS))
                (field("Name", text_input("name", &self.name, error), "name", error))
                (field("Agent (id or name)", text_input("agent_id", &self.agent_id, error), "agent_id", error))
                (field("Rate limit (requests per minute)", text_input("rate_limit", &self.rate_limit, error), "rate_limit", error))
                (field("Allowed addresses (one address or CIDR range per line; empty: anyone with the URL)",
                    html! { textarea.code.short #allowed_ips name="allowed_ips" { (self.allowed_ips) } },
                    "allowed_ips", error))
                (checkbox("is_active", "Active: accept requests", self.is_active.is_some()))
                (save_button("Save settings", saved))
            }
        }
    }
}

async fn show(session: Session, Path(id): Path<String>) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    let encoded = encode(&id);
    let hook = match session
        .api
        .get(&format!("/api/webhooks/incoming/{encoded}"))
        .await
    {
        Ok(hook) => hook,
        Err(failure) => return failure_page(session.role, &failure),
    };
    let log = logs::first_page(&session.api, "incoming", &id).await;
    page(
        "Incoming webhook",
        Some(session.role),
        Nav::Overview,
        html! {
            h1 { "Incoming: " (text_or_dash(&hook["name"])) }
            section.card {
                h2 { "Receiving URL" }
                div.url-row {
                    code #receiving-url { (text_or_dash(&hook["url"])) }
                    button.secondary type="button" data-copy="#receiving-url" { "Copy" }
                }
                p.muted { "Anyone holding this URL can post to it: treat it as a secret." }
            }
            section.card {
                h2 { "Template" }
                form #template-editor hx-post={ "/ui/incoming/" (encoded) "/preview" }
                    hx-trigger="load, input changed delay:300ms" hx-target="#preview" {
                    div.split {
                        div.field {
                            label for="payload" { "Sample payload (JSON)" }
                            textarea.code #payload name="payload" spellcheck="false" { (SAMPLE_PAYLOAD) }
                        }
                        div.field {
                            label for="template" { "Template (Jinja2; a JSON object of templates also works)" }
                            textarea.code #template name="template" spellcheck="false" { (template_text(&hook)) }
                        }
                    }
                    div.field {
                        span.muted { "What the agent would receive:" }
                        div #preview.preview aria-live="polite" { pre { " " } }
                    }
                    div.actions {
                        button type="button" hx-post={ "/ui/incoming/" (encoded) "/template" }
                            hx-target="#template-result" { "Save template" }
                        span #template-result.result {}
                    }
                }
            }
            section.card {
                h2 { "Access" }
                (SettingsForm::from_resource(&hook).render(&id, None, false))
            }
            section.card {
                h2 { "Source verification" }
                @match hook["verification"]["type"].as_str() {
                    Some(scheme) => {
                        p.muted { "Requests must be signed (" code { (scheme) } ")." }
                        (rotation::section("incoming", &id, &hook["verification"]["previous_expires_at"]))
                    }
                    None => p.muted { "None: the URL alone admits requests. Set " code { "verification" } " through the API to check the sender's signature." },
                }
            }
            section.card {
                h2 { "Request log" }
                (log)
            }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
struct TemplateForm {
    #[serde(default)]
    payload: String,
    #[serde(default)]
    template: String,
}

async fn preview(
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<TemplateForm>,
) -> Response {
    let payload: Value = match serde_json::from_str(&form.payload) {
        Ok(payload) => payload,
        Err(error) => {
            return html! { p.field-error #preview-error { "The sample payload is not JSON: " (error) } }
                .into_response();
        }
    };
    let mut body = json!({ "payload": payload });
    if !form.template.trim().is_empty() {
        body["template"] = template_value(&form.template);
    }
    let path = format!("/api/webhooks/incoming/{}/preview", encode(&id));
    match session.api.post(&path, &body).await {
        Ok(result) => {
            let output = match &result["output"] {
                Value::String(text) => text.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            };
            html! { pre #preview-output { (output) } }
        }
        Err(failure) => html! { p.field-error #preview-error role="alert" { (failure.message()) } },
    }
    .into_response()
}

async fn save_template(
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<TemplateForm>,
) -> Response {
    let template = match form.template.trim() {
        "" => Value::Null,
        _ => template_value(&form.template),
    };
    // One slot holds either kind: an object sent here is stored as `payload_transformation`.
    let body = json!({ "transform_template": template });
    let path = format!("/api/webhooks/incoming/{}", encode(&id));
    match session.api.put(&path, &body).await {
        Ok(_) => notice(true, "Template saved."),
        Err(failure) => notice(false, &failure.detail),
    }
    .into_response()
}
