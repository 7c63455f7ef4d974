//! Events: what happened, who it concerns, and which outgoing webhooks want it.

use serde_json::{Map, Value, json};

use super::{
    Invalid, event_types,
    outgoing::{OutgoingSettings, check_text},
    tenant::Tenant,
    time::iso8601,
};

/// Largest `data` + `metadata` accepted for one event, in bytes of JSON.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

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
        let mut body = json!({
            "event_id": self.id,
            "event_type": self.event_type,
            "timestamp": iso8601(self.created_at),
            "webhook_id": webhook_id,
            "user_id": self.tenant.user_id,
            "company_id": self.tenant.company_id,
            "agent_id": self.agent_id,
        });
        let object = body.as_object_mut().expect("built as an object");
        if let Some(name) = &self.agent_name {
            object.insert("agent_name".into(), Value::String(name.clone()));
        }
        object.insert("data".into(), self.data.clone());
        if let Some(metadata) = &self.metadata {
            object.insert("metadata".into(), metadata.clone());
        }
        body
    }

    /// A field for filters: the event's own fields first (`event_type`, `user_id`, `company_id`,
    /// `agent_id`, `agent_name`), then a dotted path into `data` (with or without a leading
    /// `data.`), then into `metadata`.
    fn field(&self, path: &str) -> Option<Value> {
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

    /// Whether a webhook with `settings` receives this event: active, subscribed to its type,
    /// and every filter matching.
    pub fn is_wanted_by(&self, settings: &OutgoingSettings) -> bool {
        settings.is_active
            && settings
                .event_types
                .iter()
                .any(|pattern| event_types::matches(pattern, &self.event_type))
            && filters_match(&settings.filters, |path| self.field(path))
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

/// Every filter must match: equal to the value, or to one of the values of a list. Scalars
/// compare by their text, so a filter `1` matches an agent id `"1"` (the spec writes ids both
/// ways).
fn filters_match(filters: &Map<String, Value>, field: impl Fn(&str) -> Option<Value>) -> bool {
    filters.iter().all(|(path, wanted)| {
        let Some(actual) = field(path) else {
            return false;
        };
        match wanted {
            Value::Array(options) => options.iter().any(|option| same(option, &actual)),
            single => same(single, &actual),
        }
    })
}

fn same(wanted: &Value, actual: &Value) -> bool {
    match (wanted, actual) {
        (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) => {
            *a == b.to_string()
        }
        _ => wanted == actual,
    }
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
    use super::*;
    use crate::domain::outgoing::{OutgoingChanges, OutgoingSettings};

    fn event(event_type: &str, data: Value) -> Event {
        Event::sample(event_type, data)
    }

    fn webhook(types: &[&str], filters: Value) -> OutgoingSettings {
        OutgoingSettings::create(OutgoingChanges {
            url: Some("https://example.com".into()),
            event_types: Some(types.iter().map(|t| t.to_string()).collect()),
            filters: Some(filters.as_object().unwrap().clone()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn spec_monitoring_filter_needs_high_severity() {
        let hook = webhook(
            &["command.failed", "chain.failed"],
            json!({"severity": "high"}),
        );
        assert!(event("command.failed", json!({"severity": "high"})).is_wanted_by(&hook));
        assert!(!event("command.failed", json!({"severity": "low"})).is_wanted_by(&hook));
        assert!(!event("command.failed", json!({})).is_wanted_by(&hook));
        assert!(!event("task.failed", json!({"severity": "high"})).is_wanted_by(&hook));
    }

    #[test]
    fn spec_agent_filter_reads_event_fields_and_data() {
        let hook = webhook(
            &["command.executed"],
            json!({"agent_name": "production_agent", "user_id": "specific_user"}),
        );
        assert!(
            event(
                "command.executed",
                json!({"agent_name": "production_agent"})
            )
            .is_wanted_by(&hook)
        );
        assert!(!event("command.executed", json!({"agent_name": "staging"})).is_wanted_by(&hook));
    }

    #[test]
    fn lists_dotted_paths_and_loose_numbers() {
        let hook = webhook(
            &["*"],
            json!({"data.task.priority": ["high", "urgent"], "attempt": 2}),
        );
        assert!(
            event(
                "task.failed",
                json!({"task": {"priority": "urgent"}, "attempt": "2"})
            )
            .is_wanted_by(&hook)
        );
        assert!(
            !event(
                "task.failed",
                json!({"task": {"priority": "low"}, "attempt": 2})
            )
            .is_wanted_by(&hook)
        );
    }

    #[test]
    fn inactive_webhooks_want_nothing() {
        let mut hook = webhook(&["*"], json!({}));
        hook.is_active = false;
        assert!(!event("task.failed", json!({})).is_wanted_by(&hook));
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
}
