//! An outgoing webhook's page: settings edited in place, the delivery chart, the attempt log,
//! and the actions (send a test, retry one delivery, replay failures since a time).

use axum::{
    Form, Router,
    extract::Path,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    UiState,
    backend::{ApiFailure, encode},
    chart,
    forms::{self, InPlaceForm, checkbox, field, form_error, input, save_button},
    layout::{Nav, failure_page, notice, page, text_or_dash},
    logs, rotation,
    session::Session,
    tenant_only,
};

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/outgoing/new", get(new_form))
        .route("/ui/outgoing", post(create))
        .route(
            "/ui/outgoing/{id}",
            get(show).post(forms::save::<SettingsForm>),
        )
        .route("/ui/outgoing/{id}/log", get(logs::outgoing_fragment))
        .route("/ui/outgoing/{id}/test", post(send_test))
        .route("/ui/outgoing/{id}/replay", post(replay))
        .route(
            "/ui/outgoing/{id}/deliveries/{delivery_id}/retry",
            post(retry),
        )
}

/// The settings form as the browser sends it: every value a string, a checkbox present or not.
#[derive(Deserialize, Default)]
pub struct SettingsForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    event_types: String,
    #[serde(default)]
    description: String,
    is_active: Option<String>,
    /// The `ordering` as a checkbox: present for `fifo`.
    fifo: Option<String>,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    retry_count: String,
    #[serde(default)]
    retry_delay: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    rate_limit: String,
}

const FIELDS: &[&str] = &[
    "name",
    "url",
    "event_types",
    "description",
    "secret",
    "retry_count",
    "retry_delay",
    "timeout",
    "rate_limit",
];

/// A number as JSON when it parses; otherwise the text, so the API's own message names the field.
fn number(text: &str) -> Value {
    text.trim()
        .parse::<i64>()
        .map_or_else(|_| Value::from(text.trim()), Value::from)
}

impl SettingsForm {
    /// The API body. Blank fields are left out (the API's default, or unchanged on edit), except
    /// those an edit clears: a blank description or rate limit means none.
    fn to_json(&self, editing: bool) -> Value {
        let mut body = Map::new();
        let mut text = |name: &str, value: &str| {
            if !value.trim().is_empty() {
                body.insert(name.into(), Value::from(value.trim()));
            }
        };
        text("name", &self.name);
        text("url", &self.url);
        text("secret", &self.secret);
        text("description", &self.description);
        if editing && self.description.trim().is_empty() {
            body.insert("description".into(), Value::Null);
        }
        let event_types: Vec<&str> = self
            .event_types
            .split([',', '\n'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if !event_types.is_empty() {
            body.insert("event_types".into(), json!(event_types));
        }
        body.insert("is_active".into(), Value::from(self.is_active.is_some()));
        let ordering = if self.fifo.is_some() { "fifo" } else { "none" };
        body.insert("ordering".into(), Value::from(ordering));
        for (name, value) in [
            ("retry_count", &self.retry_count),
            ("retry_delay", &self.retry_delay),
            ("timeout", &self.timeout),
        ] {
            if !value.trim().is_empty() {
                body.insert(name.into(), number(value));
            }
        }
        match (self.rate_limit.trim(), editing) {
            ("", true) => {
                body.insert("rate_limit".into(), Value::Null);
            }
            ("", false) => {}
            (limit, _) => {
                body.insert("rate_limit".into(), number(limit));
            }
        }
        Value::Object(body)
    }
}

/// The fields of the form, shared by the create page and the settings editor.
fn settings_fields(form: &SettingsForm, error: Option<&ApiFailure>, editing: bool) -> Markup {
    let input = |name: &str, kind: &str, value: &str, placeholder: &str| {
        input(name, kind, value, placeholder, error)
    };
    html! {
        (form_error(error, FIELDS))
        (field("Target URL", input("url", "text", &form.url, "https://example.com/webhook"), "url", error))
        (field("Name", input("name", "text", &form.name, "defaults to the target's host"), "name", error))
        (field("Event types (comma-separated; * for all, chat.* for a family)",
            input("event_types", "text", &form.event_types, "*"), "event_types", error))
        (field("Description", input("description", "text", &form.description, ""), "description", error))
        (field(if editing { "New signing secret (blank keeps the current one)" } else { "Signing secret (optional)" },
            input("secret", "password", &form.secret, ""), "secret", error))
        div.split {
            (field("Retries (0–20)", input("retry_count", "number", &form.retry_count, "3"), "retry_count", error))
            (field("First retry after (s)", input("retry_delay", "number", &form.retry_delay, "60"), "retry_delay", error))
            (field("Timeout (s, 1–300)", input("timeout", "number", &form.timeout, "30"), "timeout", error))
            (field("Rate limit (per minute, blank: none)", input("rate_limit", "number", &form.rate_limit, ""), "rate_limit", error))
        }
        (checkbox("is_active", "Active: deliver events to this webhook", form.is_active.is_some()))
        (checkbox("fifo", "FIFO: deliver strictly one at a time in publish order (a failing event holds the ones behind it)", form.fifo.is_some()))
    }
}

fn new_page(session: &Session, form: &SettingsForm, error: Option<&ApiFailure>) -> Markup {
    page(
        "New outgoing webhook",
        Some(session.role),
        Nav::Overview,
        html! {
            h1 { "New outgoing webhook" }
            section.card {
                form method="post" action="/ui/outgoing" novalidate {
                    (settings_fields(form, error, false))
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
    let form = SettingsForm {
        is_active: Some(String::new()),
        event_types: "*".into(),
        ..Default::default()
    };
    new_page(&session, &form, None).into_response()
}

async fn create(session: Session, Form(form): Form<SettingsForm>) -> Response {
    let outcome = session
        .api
        .post("/api/webhooks/outgoing", &form.to_json(false))
        .await;
    forms::created(outcome, "/ui/outgoing", |failure| {
        new_page(&session, &form, Some(failure))
    })
}

/// The settings editor on the webhook's page, which replaces itself with the outcome when saved.
impl InPlaceForm for SettingsForm {
    fn resource(id: &str) -> String {
        format!("/api/webhooks/outgoing/{}", encode(id))
    }

    fn from_resource(hook: &Value) -> Self {
        let text = |name: &str| match &hook[name] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        SettingsForm {
            name: text("name"),
            url: text("url"),
            event_types: hook["event_types"]
                .as_array()
                .map(|types| {
                    types
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            description: text("description"),
            is_active: hook["is_active"]
                .as_bool()
                .unwrap_or(true)
                .then(String::new),
            fifo: (hook["ordering"] == "fifo").then(String::new),
            secret: String::new(),
            retry_count: text("retry_count"),
            retry_delay: text("retry_delay"),
            timeout: text("timeout"),
            rate_limit: text("rate_limit"),
        }
    }
    fn changes(&self) -> Value {
        self.to_json(true)
    }

    fn render(&self, id: &str, error: Option<&ApiFailure>, saved: bool) -> Markup {
        html! {
            form #settings hx-post={ "/ui/outgoing/" (encode(id)) } hx-swap="outerHTML" novalidate {
                (settings_fields(self, error, true))
                (save_button("Save settings", saved))
            }
        }
    }
}

async fn show(session: Session, Path(id): Path<String>) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    let api = &session.api;
    let encoded = encode(&id);
    let hook = match api.get(&format!("/api/webhooks/outgoing/{encoded}")).await {
        Ok(hook) => hook,
        Err(failure) => return failure_page(session.role, &failure),
    };
    let stats = api
        .get(&format!(
            "/api/webhooks/{encoded}/statistics?webhook_type=outgoing"
        ))
        .await
        .unwrap_or(Value::Null);
    let recent = api
        .get(&format!(
            "/api/webhooks/{encoded}/logs?webhook_type=outgoing&limit=1000"
        ))
        .await
        .unwrap_or(Value::Null);
    let recent = recent.as_array().map(Vec::as_slice).unwrap_or_default();
    let circuit = hook["circuit_state"].as_str().unwrap_or("closed");
    let log = logs::first_page(api, "outgoing", &id).await;
    page(
        "Outgoing webhook",
        Some(session.role),
        Nav::Overview,
        html! {
            h1 { "Outgoing: " (text_or_dash(&hook["name"])) }
            p.muted {
                code { (text_or_dash(&hook["url"])) } " · circuit "
                span.badge.(circuit) { (circuit) }
                " · " (stats["pending"]) " pending · success rate " (stats["success_rate"]) " % · p95 "
                (text_or_dash(&stats["p95_processing_time_ms"])) " ms"
                @if let Some(reason) = hook["deactivated_reason"].as_str() { " · switched off: " (reason) }
            }
            div.grid {
                section.card {
                    h2 { "Deliveries" }
                    (chart::deliveries(recent, chrono::Utc::now()))
                }
                section.card {
                    h2 { "Actions" }
                    div.actions {
                        button #send-test hx-post={ "/ui/outgoing/" (encoded) "/test" } hx-target="#test-result" { "Send test" }
                    }
                    div #test-result.result aria-live="polite" {}
                    form hx-post={ "/ui/outgoing/" (encoded) "/replay" } hx-target="#replay-result" {
                        div.field {
                            label for="since" { "Replay failed deliveries since (UTC)" }
                            input #since type="datetime-local" name="since" required;
                        }
                        button.secondary type="submit" { "Replay failed since…" }
                    }
                    div #replay-result.result aria-live="polite" {}
                    h3 { "Signing secret" }
                    @if hook["has_secret"] == true {
                        (rotation::section("outgoing", &id, &hook["previous_secret_expires_at"]))
                    } @else {
                        p.muted { "Not set: deliveries are not signed. Rotating sets a first secret." }
                        (rotation::section("outgoing", &id, &Value::Null))
                    }
                }
            }
            section.card {
                h2 { "Settings" }
                (SettingsForm::from_resource(&hook).render(&id, None, false))
            }
            section.card {
                h2 { "Attempt log" }
                (log)
            }
        },
    )
    .into_response()
}

/// Asks the log on the page to reload itself (see `logs`), after an action that adds to it.
fn with_log_refresh(markup: Markup) -> Response {
    ([("hx-trigger", "log-changed")], markup).into_response()
}

async fn send_test(session: Session, Path(id): Path<String>) -> Response {
    let path = format!("/api/webhooks/outgoing/{}/test", encode(&id));
    let outcome = match session.api.post(&path, &json!({})).await {
        Ok(result) if result["success"] == true => notice(
            true,
            &format!(
                "Test delivered: the target answered {} in {} ms.",
                result["status_code"], result["processing_time_ms"]
            ),
        ),
        Ok(result) => notice(
            false,
            &format!(
                "Test failed: {}",
                result["error"].as_str().map_or_else(
                    || format!("the target answered {}", result["status_code"]),
                    str::to_string
                )
            ),
        ),
        Err(failure) => notice(false, &failure.detail),
    };
    with_log_refresh(outcome)
}

async fn retry(session: Session, Path((id, delivery)): Path<(String, String)>) -> Response {
    let path = format!(
        "/api/webhooks/outgoing/{}/deliveries/{}/retry",
        encode(&id),
        encode(&delivery)
    );
    // No log refresh: the attempt happens later, and a refresh would wipe this message.
    match session.api.post(&path, &json!({})).await {
        Ok(_) => notice(true, "Queued again, with a fresh retry budget."),
        Err(failure) => notice(false, &failure.detail),
    }
    .into_response()
}

#[derive(Deserialize)]
struct ReplayForm {
    since: String,
}

async fn replay(
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ReplayForm>,
) -> Response {
    // `datetime-local` sends `2025-01-01T10:00` (no seconds, no zone); the label says UTC.
    let since = match form.since.len() {
        16 => format!("{}:00Z", form.since),
        _ => format!("{}Z", form.since.trim_end_matches('Z')),
    };
    let path = format!("/api/webhooks/outgoing/{}/replay", encode(&id));
    let outcome = match session.api.post(&path, &json!({ "since": since })).await {
        Ok(result) => notice(
            true,
            &format!("{} failed deliveries queued again.", result["replayed"]),
        ),
        Err(failure) => notice(false, &failure.detail),
    };
    with_log_refresh(outcome)
}
