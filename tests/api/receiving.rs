//! Helpers for the incoming path: creating webhooks, posting to their receiving URLs, reading
//! inboxes and logs.

use hookd::{domain::log::LogEntry, store::LogQuery};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, send};

pub struct Hook {
    pub id: String,
    pub token: String,
}

/// Creates an incoming webhook from `settings` (a `name` is added when missing).
pub async fn create_hook(app: &TestApp, key: &str, mut settings: Value) -> Hook {
    if settings.get("name").is_none() {
        settings["name"] = json!("test hook");
    }
    let created = app
        .post("/api/webhooks/incoming", key, &settings)
        .await
        .expect(201);
    Hook {
        id: created["id"].as_str().unwrap().to_string(),
        token: created["token"].as_str().unwrap().to_string(),
    }
}

/// Posts JSON to the receiving URL (no API key: the token is the credential).
pub async fn post_json(app: &TestApp, hook: &Hook, body: &Value) -> Answer {
    post_with(
        app,
        hook,
        "application/json",
        body.to_string(),
        HeaderMap::new(),
    )
    .await
}

/// Posts raw bytes with a content type and extra headers.
pub async fn post_with(
    app: &TestApp,
    hook: &Hook,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    headers: HeaderMap,
) -> Answer {
    let request = app
        .client
        .post(format!("{}/webhook/{}", app.base, hook.token))
        .header("content-type", content_type)
        .headers(headers)
        .body(body);
    send(request).await
}

/// Headers from pairs.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            )
        })
        .collect()
}

/// Every message in an agent's inbox (oldest first), by agent id or name.
pub async fn inbox(app: &TestApp, key: &str, agent: &str) -> Vec<Value> {
    let page = app
        .get(&format!("/api/agents/{agent}/messages?limit=1000"), key)
        .await
        .expect(200);
    page["messages"].as_array().unwrap().clone()
}

/// The content of the only message in an agent's inbox.
pub async fn only_message(app: &TestApp, key: &str, agent: &str) -> Value {
    let messages = inbox(app, key, agent).await;
    assert_eq!(messages.len(), 1, "inbox of {agent}: {messages:?}");
    messages[0]["content"].clone()
}

/// The webhook's log entries, newest first.
pub async fn logs(app: &TestApp, hook: &Hook) -> Vec<LogEntry> {
    let query = LogQuery {
        limit: 1000,
        ..Default::default()
    };
    app.store.list_logs(&hook.id, &query).await.unwrap()
}

/// Waits for background log writes (refusals are logged off the answer path).
pub async fn logs_settled(app: &TestApp, hook: &Hook, expected: usize) -> Vec<LogEntry> {
    for _ in 0..50 {
        let entries = logs(app, hook).await;
        if entries.len() >= expected {
            return entries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    logs(app, hook).await
}
