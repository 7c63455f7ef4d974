//! Agents: the receivers of incoming data. Each has an inbox and, optionally, an endpoint that
//! messages are pushed to. Also the inbox message itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Invalid, check_text,
    delivery::Health,
    event::NewEvent,
    net::TargetUrl,
    outgoing::{
        DEFAULT_RETRY_COUNT, DEFAULT_RETRY_DELAY_SECS, check_delivery_limits, check_headers,
    },
    tenant::Tenant,
};

const MAX_NAME: usize = 200;
const MAX_MODEL: usize = 200;
/// Model servers may think for a while before answering; twice an outgoing webhook's default.
pub const DEFAULT_ENDPOINT_TIMEOUT_SECS: i64 = 60;

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub tenant: Tenant,
    pub settings: AgentSettings,
    /// Of its endpoint.
    pub health: Health,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a user sets on an agent; only [`AgentSettings::create`] and [`AgentSettings::apply`]
/// build one, so a value held is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    pub name: String,
    pub endpoint: Option<Endpoint>,
}

/// Where messages routed to the agent are pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub url: TargetUrl,
    pub format: EndpointFormat,
    /// The model named in OpenAI-compatible calls.
    pub model: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// Further attempts after a failed push, `retry_delay · 2^(n-1)` seconds apart, as for
    /// outgoing webhooks.
    pub retry_count: i64,
    pub retry_delay: i64,
    /// Seconds one push may take.
    pub timeout: i64,
}

/// The wire format of pushes to an agent endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointFormat {
    /// `POST {url}` (an OpenAI-compatible `/v1/chat/completions`) with the message as the user turn.
    OpenaiChat,
    /// `POST {url}` with the message as a JSON body.
    Json,
}

/// An endpoint as given by a user, before checking.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub format: Option<EndpointFormat>,
    pub model: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub retry_count: Option<i64>,
    pub retry_delay: Option<i64>,
    pub timeout: Option<i64>,
}

/// `None` leaves a field as it is; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct AgentChanges {
    pub name: Option<String>,
    pub endpoint: Option<Option<EndpointChanges>>,
}

impl Agent {
    /// A new agent with just a name, as incoming webhooks create the agents they name.
    pub fn named(tenant: Tenant, name: &str, now: i64) -> Agent {
        Agent {
            id: super::new_id(),
            tenant,
            settings: AgentSettings {
                name: name.to_string(),
                endpoint: None,
            },
            health: Health::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The event announcing a change to this agent: `agent.created`, `agent.updated` or
    /// `agent.deleted`, carrying its id and name (what the spec's receivers read).
    pub fn event(&self, event_type: &str) -> NewEvent {
        NewEvent {
            event_type: event_type.to_string(),
            data: json!({"agent_id": self.id, "agent_name": self.settings.name}),
            agent_id: Some(self.id.clone()),
            agent_name: Some(self.settings.name.clone()),
            metadata: None,
        }
    }
}

impl AgentSettings {
    pub fn create(changes: AgentChanges) -> Result<Self, Invalid> {
        let name = changes
            .name
            .clone()
            .ok_or_else(|| Invalid::new("name", "is required"))?;
        AgentSettings {
            name,
            endpoint: None,
        }
        .apply(changes)
    }

    /// An endpoint given replaces the current one as a whole.
    pub fn apply(&self, changes: AgentChanges) -> Result<Self, Invalid> {
        let mut next = self.clone();
        if let Some(name) = changes.name {
            check_text("name", &name, 1, MAX_NAME)?;
            next.name = name;
        }
        if let Some(endpoint) = changes.endpoint {
            next.endpoint = endpoint.map(Endpoint::parse).transpose()?;
        }
        Ok(next)
    }
}

impl Endpoint {
    pub fn parse(given: EndpointChanges) -> Result<Endpoint, Invalid> {
        let url = given
            .url
            .ok_or_else(|| Invalid::new("endpoint.url", "is required"))?;
        let url =
            TargetUrl::parse(&url).map_err(|e| Invalid::new("endpoint.url", e.to_string()))?;
        if let Some(model) = &given.model {
            check_text("endpoint.model", model, 1, MAX_MODEL)?;
        }
        let headers = given.headers.unwrap_or_default();
        check_headers(&headers)
            .map_err(|e| Invalid::new(format!("endpoint.{}", e.field), e.message))?;
        let endpoint = Endpoint {
            url,
            format: given.format.unwrap_or(EndpointFormat::Json),
            model: given.model,
            headers,
            retry_count: given.retry_count.unwrap_or(DEFAULT_RETRY_COUNT),
            retry_delay: given.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY_SECS),
            timeout: given.timeout.unwrap_or(DEFAULT_ENDPOINT_TIMEOUT_SECS),
        };
        check_delivery_limits(
            "endpoint.",
            endpoint.retry_count,
            endpoint.retry_delay,
            endpoint.timeout,
        )?;
        Ok(endpoint)
    }
}

/// What an inbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Data received through an incoming webhook.
    Message,
    /// The agent endpoint's answer to a message.
    Reply,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Message => "message",
            MessageKind::Reply => "reply",
        }
    }

    pub fn parse(text: &str) -> Option<MessageKind> {
        match text {
            "message" => Some(MessageKind::Message),
            "reply" => Some(MessageKind::Reply),
            _ => None,
        }
    }
}

/// One entry of an agent's inbox. Ids are time-ordered (UUIDv7) and serve as cursors.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentMessage {
    pub id: String,
    pub agent_id: String,
    pub tenant: Tenant,
    pub incoming_webhook_id: Option<String>,
    pub kind: MessageKind,
    /// The transformed payload.
    pub content: Value,
    pub created_at: i64,
}

impl AgentMessage {
    /// `chat.message.received`: a message reached `agent`'s inbox.
    pub fn received_event(&self, agent: &Agent) -> NewEvent {
        NewEvent {
            event_type: "chat.message.received".to_string(),
            data: json!({
                "message_id": self.id,
                "agent_id": agent.id,
                "agent_name": agent.settings.name,
                "incoming_webhook_id": self.incoming_webhook_id,
                "content": self.content,
            }),
            agent_id: Some(agent.id.clone()),
            agent_name: Some(agent.settings.name.clone()),
            metadata: None,
        }
    }
}

impl Agent {
    /// The reply of this agent's model to the message that `received` (its
    /// `chat.message.received` event) carried, as an inbox entry, and the `chat.completed` event
    /// announcing it with the agent, the message and the reply.
    pub fn reply(&self, received: &Value, reply: String, now: i64) -> (AgentMessage, NewEvent) {
        let message = AgentMessage {
            id: super::new_id(),
            agent_id: self.id.clone(),
            tenant: self.tenant.clone(),
            incoming_webhook_id: received
                .get("incoming_webhook_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            kind: MessageKind::Reply,
            content: Value::String(reply.clone()),
            created_at: now,
        };
        let completed = NewEvent {
            event_type: "chat.completed".to_string(),
            data: json!({
                "agent_id": self.id,
                "agent_name": self.settings.name,
                "message_id": received.get("message_id"),
                "message": received.get("content"),
                "reply_id": message.id,
                "reply": reply,
            }),
            agent_id: Some(self.id.clone()),
            agent_name: Some(self.settings.name.clone()),
            metadata: None,
        };
        (message, completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_needs_a_url_and_checks_headers() {
        let err = AgentSettings::create(AgentChanges {
            name: Some("a".into()),
            endpoint: Some(Some(EndpointChanges::default())),
        })
        .unwrap_err();
        assert_eq!(err.field, "endpoint.url");

        let err = AgentSettings::create(AgentChanges {
            name: Some("a".into()),
            endpoint: Some(Some(EndpointChanges {
                url: Some("https://models.example.com/v1/chat/completions".into()),
                headers: Some([("bad name".to_string(), "v".to_string())].into()),
                ..Default::default()
            })),
        })
        .unwrap_err();
        assert_eq!(err.field, "endpoint.headers.bad name");
    }

    #[test]
    fn endpoint_format_defaults_to_json() {
        let s = AgentSettings::create(AgentChanges {
            name: Some("a".into()),
            endpoint: Some(Some(EndpointChanges {
                url: Some("https://x.example.com/hook".into()),
                ..Default::default()
            })),
        })
        .unwrap();
        assert_eq!(s.endpoint.unwrap().format, EndpointFormat::Json);
    }
}
