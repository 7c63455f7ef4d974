//! Events: what happened and who it concerns.

use serde_json::Value;

use super::{Invalid, check_text, event_types, tenant::Tenant, time::iso8601};

/// Largest `data` + `metadata` accepted for one event, in bytes of JSON.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The standard body's fields, in the order they are sent.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    event_id: &'a str,
    event_type: &'a str,
    timestamp: String,
    webhook_id: &'a str,
    user_id: &'a str,
    company_id: &'a str,
    agent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_name: Option<&'a str>,
    data: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Value>,
}

/// An event as published, before it is stored.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewEvent {
    pub event_type: String,
    pub data: Value,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub metadata: Option<Value>,
}

impl NewEvent {
    /// Checks the event's form; `field` prefixes field names (`events[3].`) in batch publishes.
    pub fn validate(&self, field: &str) -> Result<(), Invalid> {
        // Whether the type exists (built-in, or one of the tenant's own) is for the caller to
        // ask the tenant's catalogue; here only its form.
        if !event_types::is_dotted_name(&self.event_type) {
            return Err(Invalid::new(
                format!("{field}event_type"),
                format!(
                    "unknown event type {:?}; GET /api/event-types lists them",
                    self.event_type
                ),
            ));
        }
        if event_types::is_about_webhooks(&self.event_type) {
            return Err(Invalid::new(
                format!("{field}event_type"),
                format!(
                    "{:?} is published by hookd itself when a webhook changes; subscribe to it instead",
                    self.event_type
                ),
            ));
        }
        for (name, value) in [
            ("agent_id", &self.agent_id),
            ("agent_name", &self.agent_name),
        ] {
            if let Some(value) = value {
                check_text(&format!("{field}{name}"), value, 1, 200)?;
            }
        }
        let size = serde_json::to_vec(&self.data).map_or(0, |v| v.len())
            + self
                .metadata
                .as_ref()
                .and_then(|m| serde_json::to_vec(m).ok())
                .map_or(0, |v| v.len());
        if size > MAX_EVENT_BYTES {
            return Err(Invalid::new(
                format!("{field}data"),
                format!("event is {size} bytes of JSON; at most {MAX_EVENT_BYTES}"),
            ));
        }
        Ok(())
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub tenant: Tenant,
    pub event_type: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub data: Value,
    pub metadata: Option<Value>,
    pub created_at: i64,
}

impl Event {
    pub fn new(id: String, tenant: Tenant, new: NewEvent, created_at: i64) -> Event {
        Event {
            id,
            tenant,
            event_type: new.event_type,
            agent_id: new.agent_id,
            agent_name: new.agent_name,
            data: new.data,
            metadata: new.metadata,
            created_at,
        }
    }

    /// The standard body sent to `webhook_id`: the spec's payload format plus `event_id`.
    pub fn envelope(&self, webhook_id: &str) -> Value {
        // Serialising to a JSON value cannot fail.
        serde_json::to_value(self.envelope_fields(webhook_id)).unwrap_or_default()
    }

    /// [`Event::envelope`] as the bytes sent, written straight from the event: every delivery
    /// without a template sends one, and building the value first copied the event's data.
    pub fn envelope_bytes(&self, webhook_id: &str) -> Vec<u8> {
        serde_json::to_vec(&self.envelope_fields(webhook_id)).unwrap_or_default()
    }

    fn envelope_fields<'a>(&'a self, webhook_id: &'a str) -> Envelope<'a> {
        Envelope {
            event_id: &self.id,
            event_type: &self.event_type,
            timestamp: iso8601(self.created_at),
            webhook_id,
            user_id: &self.tenant.user_id,
            company_id: &self.tenant.company_id,
            agent_id: self.agent_id.as_deref(),
            agent_name: self.agent_name.as_deref(),
            data: &self.data,
            metadata: self.metadata.as_ref(),
        }
    }

    /// A field for filters: the event's own fields first (`event_type`, `user_id`, `company_id`,
    /// `agent_id`, `agent_name`), then a dotted path into `data` (with or without a leading
    /// `data.`), then into `metadata`.
    pub fn field(&self, path: &str) -> Option<Value> {
        let own = match path {
            "event_type" => Some(self.event_type.clone()),
            "user_id" => Some(self.tenant.user_id.clone()),
            "company_id" => Some(self.tenant.company_id.clone()),
            "agent_id" => self.agent_id.clone(),
            "agent_name" => self.agent_name.clone(),
            _ => None,
        };
        if let Some(value) = own {
            return Some(Value::String(value));
        }
        let in_data = path.strip_prefix("data.").unwrap_or(path);
        lookup(&self.data, in_data)
            .or_else(|| {
                let in_meta = path.strip_prefix("metadata.").unwrap_or(path);
                self.metadata.as_ref().and_then(|m| lookup(m, in_meta))
            })
            .cloned()
    }
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |current, key| match current {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

#[cfg(test)]
impl Event {
    /// An event of `event_type` carrying `data`, published by user `specific_user` of company
    /// `c`: for tests.
    pub(crate) fn sample(event_type: &str, data: Value) -> Event {
        let tenant = Tenant {
            user_id: "specific_user".into(),
            company_id: "c".into(),
        };
        let new = NewEvent {
            event_type: event_type.into(),
            data,
            ..Default::default()
        };
        Event::new("e1".into(), tenant, new, 0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(event_type: &str, data: Value) -> Event {
        Event::sample(event_type, data)
    }

    #[test]
    fn envelope_has_the_spec_fields_in_order() {
        let body = event("chat.completed", json!({"m": 1})).envelope("w1");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "event_id",
                "event_type",
                "timestamp",
                "webhook_id",
                "user_id",
                "company_id",
                "agent_id",
                "data"
            ]
        );
        assert_eq!(body["timestamp"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_bytes_sent_are_the_envelope() {
        let mut full = event(
            "chat.completed",
            json!({"m": [1, {"z": null, "a": "\u{0}"}]}),
        );
        full.agent_name = Some("Ana".into());
        full.metadata = Some(json!({"k": "v"}));
        for event in [event("task.failed", json!("text")), full] {
            let value = event.envelope("w1");
            assert_eq!(
                event.envelope_bytes("w1"),
                serde_json::to_vec(&value).unwrap()
            );
        }
    }
}
