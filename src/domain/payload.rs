//! The body of a delivery: its shape (hookd's envelope, Slack's, Discord's) and what a payload
//! template sees.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{event::Event, net::TargetUrl, template::Context};

/// How the body of a delivery is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// hookd's envelope: `{"event_id", "event_type", "timestamp", "webhook_id", …, "data"}`.
    Standard,
    /// `{"text": …}`, what Slack incoming webhooks accept.
    Slack,
    /// `{"content": …}`, what Discord webhooks accept (at most 2000 characters).
    Discord,
}

impl PayloadFormat {
    pub const ALL: [PayloadFormat; 3] = [
        PayloadFormat::Standard,
        PayloadFormat::Slack,
        PayloadFormat::Discord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Standard => "standard",
            PayloadFormat::Slack => "slack",
            PayloadFormat::Discord => "discord",
        }
    }

    pub fn parse(name: &str) -> Option<PayloadFormat> {
        PayloadFormat::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The format a target needs when none is set: Slack and Discord refuse anything but their
    /// own shapes.
    pub fn for_target(url: &TargetUrl) -> PayloadFormat {
        let host = url.host().to_ascii_lowercase();
        let path = url.url().path();
        if host == "hooks.slack.com" {
            PayloadFormat::Slack
        } else if matches!(
            host.as_str(),
            "discord.com" | "discordapp.com" | "ptb.discord.com" | "canary.discord.com"
        ) && path.starts_with("/api/webhooks/")
        {
            PayloadFormat::Discord
        } else {
            PayloadFormat::Standard
        }
    }
}

/// The bytes sent for `event` to `webhook_id` by a webhook without a payload template.
pub fn render_body(event: &Event, webhook_id: &str, format: PayloadFormat) -> Vec<u8> {
    let body = match format {
        PayloadFormat::Standard => return event.envelope_bytes(webhook_id),
        PayloadFormat::Slack => json!({ "text": summary(event, 3_000) }),
        PayloadFormat::Discord => json!({ "content": summary(event, 2_000) }),
    };
    // Serialising a JSON value cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// What a payload template sees: the envelope's fields, and the whole envelope as `event`.
/// A payload template wins over the format.
pub fn template_context(event: &Event, webhook_id: &str) -> Context<'static> {
    let envelope = event.envelope(webhook_id);
    let mut context = envelope.clone();
    if let Some(object) = context.as_object_mut() {
        object.insert("event".into(), envelope);
    }
    context.into()
}

/// One line for chat targets: the event type and its message (or its data as JSON).
fn summary(event: &Event, max_chars: usize) -> String {
    let detail = match event.data.get("message").or_else(|| event.data.get("text")) {
        Some(Value::String(message)) => message.clone(),
        _ => event.data.to_string(),
    };
    let agent = event
        .agent_name
        .as_deref()
        .or(event.agent_id.as_deref())
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    let line = format!("*{}*{agent}: {detail}", event.event_type);
    if line.chars().count() <= max_chars {
        line
    } else {
        let cut: String = line.chars().take(max_chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::template::Template;

    #[test]
    fn slack_and_discord_targets_get_their_shapes() {
        let slack = TargetUrl::parse("https://hooks.slack.com/services/T/B/X").unwrap();
        let discord = TargetUrl::parse("https://discord.com/api/webhooks/1/abc").unwrap();
        let other = TargetUrl::parse("https://example.com/api/webhooks/1").unwrap();
        assert_eq!(PayloadFormat::for_target(&slack), PayloadFormat::Slack);
        assert_eq!(PayloadFormat::for_target(&discord), PayloadFormat::Discord);
        assert_eq!(PayloadFormat::for_target(&other), PayloadFormat::Standard);

        let event = Event::sample("chat.completed", json!({"message": "done"}));
        let body: Value =
            serde_json::from_slice(&render_body(&event, "w", PayloadFormat::Slack)).unwrap();
        assert_eq!(body, json!({"text": "*chat.completed*: done"}));
        let long = Event {
            data: json!({"message": "x".repeat(5000)}),
            ..event
        };
        let body: Value =
            serde_json::from_slice(&render_body(&long, "w", PayloadFormat::Discord)).unwrap();
        assert_eq!(body["content"].as_str().unwrap().chars().count(), 2000);
    }

    #[test]
    fn templates_see_the_envelope() {
        let event = Event::sample("task.failed", json!({"task": "t1"}));
        let template =
            Template::compile_text(r#"{"text": "{{ event_type }} {{ data.task }}"}"#).unwrap();
        let body = template.render(&template_context(&event, "w")).unwrap();
        assert_eq!(body, json!({"text": "task.failed t1"}));
    }
}
