//! Outgoing webhooks: where events go, and the rules for their settings.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    Invalid, check_range, check_text, delivery::Health, event::Event, event_types, net::TargetUrl,
    payload::PayloadFormat, rotation::PreviousSecret, template::Template, tenant::Tenant,
};

pub const DEFAULT_RETRY_COUNT: i64 = 3;
pub const DEFAULT_RETRY_DELAY_SECS: i64 = 60;
pub const DEFAULT_TIMEOUT_SECS: i64 = 30;

const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 2_000;
const MAX_SECRET: usize = 512;
const MAX_HEADERS: usize = 50;
const MAX_FILTERS: usize = 50;

/// Headers hookd sets itself on every delivery; a custom header may not claim these names, nor
/// any name of the `X-Webhook-*` and `webhook-*` families hookd signs and identifies deliveries
/// with (hookd may add members to them), so a receiver can trust them.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];
const RESERVED_PREFIXES: &[&str] = &["x-webhook-", "webhook-"];

fn is_reserved(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&name.as_str())
        || RESERVED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// What publishing needs of an active webhook to match events to it: its subscription, not the
/// rest of its settings. Every node keeps the subscriptions of each company that publishes, and
/// a webhook's other settings can be a hundred times larger (a 64 KiB payload template).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub webhook_id: String,
    pub event_types: Vec<String>,
    pub filters: Map<String, Value>,
    pub ordering: Ordering,
}

impl Subscription {
    /// Whether the webhook receives `event` (it is active): as [`OutgoingSettings::wants`].
    pub fn wants(&self, event: &Event) -> bool {
        subscribed(&self.event_types, &self.filters, event)
    }
}

/// Whether `event` is of one of `event_types` and matches every filter.
fn subscribed(event_types: &[String], filters: &Map<String, Value>, event: &Event) -> bool {
    event_types
        .iter()
        .any(|pattern| event_types::matches(pattern, &event.event_type))
        && filters_match(filters, |path| event.field(path))
}

#[derive(Debug, Clone)]
pub struct OutgoingWebhook {
    pub id: String,
    pub tenant: Tenant,
    pub settings: OutgoingSettings,
    pub health: Health,
    /// The secret a rotation replaced, signed with beside the current one until it expires.
    pub previous_secret: Option<PreviousSecret>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl OutgoingWebhook {
    /// The secrets a delivery made at `now` is signed with: the current one first, then the one
    /// a rotation replaced while it is still valid. Empty: deliveries are not signed.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        self.settings
            .secret
            .as_deref()
            .into_iter()
            .chain(
                PreviousSecret::live(self.previous_secret.as_ref(), now).map(|p| p.secret.as_str()),
            )
            .collect()
    }
}

/// Everything a user sets on an outgoing webhook. Only [`OutgoingSettings::create`] and
/// [`OutgoingSettings::apply`] build one, so a value held is always valid.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingSettings {
    pub name: String,
    pub url: TargetUrl,
    pub event_types: Vec<String>,
    pub is_active: bool,
    pub secret: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub description: Option<String>,
    pub agent_id: Option<String>,
    pub retry_count: i64,
    pub retry_delay: i64,
    pub timeout: i64,
    /// Deliveries per minute; `None` is unlimited.
    pub rate_limit: Option<i64>,
    pub filters: Map<String, Value>,
    /// A MiniJinja template for the body (context: the standard envelope's fields and `event`).
    pub payload_template: Option<String>,
    /// The body's shape when there is no template; `None`: chosen from the target's host.
    pub payload_format: Option<PayloadFormat>,
    pub ordering: Ordering,
}

/// In what order a webhook's events are delivered.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Taken in publish order but made concurrently: they arrive close to that order, and a
    /// failing delivery does not hold up the others.
    #[default]
    None,
    /// Strictly one at a time in publish order: a failing delivery holds the ones behind it
    /// until it succeeds or has spent its retries.
    Fifo,
}

impl Ordering {
    pub const ALL: [Ordering; 2] = [Ordering::None, Ordering::Fifo];

    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Fifo => "fifo",
        }
    }

    pub fn parse(name: &str) -> Option<Ordering> {
        Ordering::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// A set of changes: `None` leaves a field as it is; for nullable fields `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct OutgoingChanges {
    pub name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub is_active: Option<bool>,
    pub secret: Option<Option<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub description: Option<Option<String>>,
    pub agent_id: Option<Option<String>>,
    pub retry_count: Option<i64>,
    pub retry_delay: Option<i64>,
    pub timeout: Option<i64>,
    pub rate_limit: Option<Option<i64>>,
    pub filters: Option<Map<String, Value>>,
    pub payload_template: Option<Option<String>>,
    pub payload_format: Option<Option<PayloadFormat>>,
    pub ordering: Option<Ordering>,
}

impl OutgoingSettings {
    /// Whether this webhook receives `event`: active, subscribed to its type, and every filter
    /// matching.
    pub fn wants(&self, event: &Event) -> bool {
        self.is_active && subscribed(&self.event_types, &self.filters, event)
    }

    /// New settings from a create request: `url` is required, everything else has a default
    /// (no `event_types` means every event, as with Svix endpoints without a filter).
    pub fn create(changes: OutgoingChanges) -> Result<Self, Invalid> {
        let url = changes.url.as_deref().ok_or_else(|| {
            Invalid::new(
                "url",
                "is required (the spec's `target_url` is accepted too)",
            )
        })?;
        let url = parse_url(url)?;
        let defaults = OutgoingSettings {
            name: url.host().to_string(),
            url,
            event_types: vec!["*".into()],
            is_active: true,
            secret: None,
            headers: BTreeMap::new(),
            description: None,
            agent_id: None,
            retry_count: DEFAULT_RETRY_COUNT,
            retry_delay: DEFAULT_RETRY_DELAY_SECS,
            timeout: DEFAULT_TIMEOUT_SECS,
            rate_limit: None,
            filters: Map::new(),
            payload_template: None,
            payload_format: None,
            ordering: Ordering::None,
        };
        defaults.apply(OutgoingChanges {
            url: None,
            ..changes
        })
    }

    /// These settings with `changes` applied; the result is checked as a whole.
    pub fn apply(&self, changes: OutgoingChanges) -> Result<Self, Invalid> {
        let mut next = self.clone();
        if let Some(url) = changes.url {
            next.url = parse_url(&url)?;
        }
        set(&mut next.name, changes.name);
        set(&mut next.event_types, changes.event_types);
        set(&mut next.is_active, changes.is_active);
        set(&mut next.secret, changes.secret);
        set(&mut next.headers, changes.headers);
        set(&mut next.description, changes.description);
        set(&mut next.agent_id, changes.agent_id);
        set(&mut next.retry_count, changes.retry_count);
        set(&mut next.retry_delay, changes.retry_delay);
        set(&mut next.timeout, changes.timeout);
        set(&mut next.rate_limit, changes.rate_limit);
        set(&mut next.filters, changes.filters);
        set(&mut next.payload_template, changes.payload_template);
        set(&mut next.payload_format, changes.payload_format);
        set(&mut next.ordering, changes.ordering);
        next.validate()?;
        Ok(next)
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_text("name", &self.name, 1, MAX_NAME)?;
        event_types::validate_patterns("event_types", &self.event_types)?;
        if let Some(secret) = &self.secret {
            check_text("secret", secret, 1, MAX_SECRET)?;
        }
        if let Some(description) = &self.description {
            check_text("description", description, 0, MAX_DESCRIPTION)?;
        }
        if let Some(agent_id) = &self.agent_id {
            check_text("agent_id", agent_id, 1, MAX_NAME)?;
        }
        check_headers(&self.headers)?;
        check_delivery_limits("", self.retry_count, self.retry_delay, self.timeout)?;
        if let Some(rate_limit) = self.rate_limit {
            check_range("rate_limit", rate_limit, 1, 1_000_000)?;
        }
        check_filters(&self.filters)?;
        self.compiled_template().map(drop)
    }

    /// The payload template, compiled (`None` without one).
    pub fn compiled_template(&self) -> Result<Option<Template>, Invalid> {
        self.payload_template
            .as_deref()
            .map(|source| {
                Template::compile_text(source)
                    .map_err(|e| Invalid::new("payload_template", e.to_string()))
            })
            .transpose()
    }

    /// The body format deliveries use.
    pub fn effective_format(&self) -> PayloadFormat {
        self.payload_format
            .unwrap_or_else(|| PayloadFormat::for_target(&self.url))
    }
}

fn set<T>(field: &mut T, change: Option<T>) {
    if let Some(value) = change {
        *field = value;
    }
}

fn parse_url(url: &str) -> Result<TargetUrl, Invalid> {
    TargetUrl::parse(url).map_err(|e| Invalid::new("url", e.to_string()))
}

/// The bounds on retries and timeouts of any delivery target; `prefix` names the object holding
/// them (e.g. `endpoint.`).
pub(crate) fn check_delivery_limits(
    prefix: &str,
    retry_count: i64,
    retry_delay: i64,
    timeout: i64,
) -> Result<(), Invalid> {
    check_range(&format!("{prefix}retry_count"), retry_count, 0, 20)?;
    check_range(&format!("{prefix}retry_delay"), retry_delay, 1, 86_400)?;
    check_range(&format!("{prefix}timeout"), timeout, 1, 300)
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

pub(crate) fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if headers.len() > MAX_HEADERS {
        return Err(Invalid::new(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    for (name, value) in headers {
        let field = format!("headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Invalid::new(field, "is not a valid HTTP header name"));
        }
        if is_reserved(name) {
            return Err(Invalid::new(
                field,
                "is set by hookd on every delivery and cannot be overridden",
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(Invalid::new(
                field,
                "is not a valid HTTP header value (no line breaks or control characters)",
            ));
        }
    }
    Ok(())
}

fn check_filters(filters: &Map<String, Value>) -> Result<(), Invalid> {
    if filters.len() > MAX_FILTERS {
        return Err(Invalid::new(
            "filters",
            format!("at most {MAX_FILTERS} filters"),
        ));
    }
    for (key, value) in filters {
        let scalar = |v: &Value| !matches!(v, Value::Object(_) | Value::Array(_));
        let ok = match value {
            Value::Array(items) => !items.is_empty() && items.iter().all(scalar),
            other => scalar(other),
        };
        if key.is_empty() || !ok {
            return Err(Invalid::new(
                format!("filters.{key}"),
                "must be a value or a non-empty list of values to match (strings, numbers, booleans, null)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn webhook(types: &[&str], filters: Value) -> OutgoingSettings {
        OutgoingSettings::create(OutgoingChanges {
            url: Some("https://example.com".into()),
            event_types: Some(types.iter().map(|t| t.to_string()).collect()),
            filters: Some(filters.as_object().unwrap().clone()),
            ..Default::default()
        })
        .unwrap()
    }

    fn event(event_type: &str, data: Value) -> Event {
        Event::sample(event_type, data)
    }

    #[test]
    fn spec_monitoring_filter_needs_high_severity() {
        let hook = webhook(
            &["command.failed", "chain.failed"],
            json!({"severity": "high"}),
        );
        assert!(hook.wants(&event("command.failed", json!({"severity": "high"}))));
        assert!(!hook.wants(&event("command.failed", json!({"severity": "low"}))));
        assert!(!hook.wants(&event("command.failed", json!({}))));
        assert!(!hook.wants(&event("task.failed", json!({"severity": "high"}))));
    }

    #[test]
    fn spec_agent_filter_reads_event_fields_and_data() {
        let hook = webhook(
            &["command.executed"],
            json!({"agent_name": "production_agent", "user_id": "specific_user"}),
        );
        let production = json!({"agent_name": "production_agent"});
        assert!(hook.wants(&event("command.executed", production)));
        let staging = json!({"agent_name": "staging"});
        assert!(!hook.wants(&event("command.executed", staging)));
    }

    #[test]
    fn lists_dotted_paths_and_loose_numbers() {
        let hook = webhook(
            &["*"],
            json!({"data.task.priority": ["high", "urgent"], "attempt": 2}),
        );
        let urgent = json!({"task": {"priority": "urgent"}, "attempt": "2"});
        assert!(hook.wants(&event("task.failed", urgent)));
        let low = json!({"task": {"priority": "low"}, "attempt": 2});
        assert!(!hook.wants(&event("task.failed", low)));
    }

    #[test]
    fn inactive_webhooks_want_nothing() {
        let mut hook = webhook(&["*"], json!({}));
        hook.is_active = false;
        assert!(!hook.wants(&event("task.failed", json!({}))));
    }

    fn create(url: &str) -> OutgoingChanges {
        OutgoingChanges {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn create_fills_the_spec_defaults() {
        let s = OutgoingSettings::create(create("https://example.com/hook")).unwrap();
        assert_eq!((s.retry_count, s.retry_delay, s.timeout), (3, 60, 30));
        assert_eq!(s.event_types, vec!["*"]);
        assert!(s.is_active);
        assert_eq!(s.name, "example.com");
    }

    #[test]
    fn create_requires_a_url() {
        let err = OutgoingSettings::create(OutgoingChanges::default()).unwrap_err();
        assert_eq!(err.field, "url");
    }

    #[test]
    fn apply_changes_only_what_is_given_and_can_clear() {
        let mut changes = create("https://example.com/hook");
        changes.secret = Some(Some("s3cret".into()));
        changes.description = Some(Some("d".into()));
        let s = OutgoingSettings::create(changes).unwrap();
        let next = s
            .apply(OutgoingChanges {
                is_active: Some(false),
                description: Some(None),
                ..Default::default()
            })
            .unwrap();
        assert!(!next.is_active);
        assert_eq!(next.description, None);
        assert_eq!(next.secret.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(OutgoingChanges, &str)> = vec![
            (
                OutgoingChanges {
                    retry_count: Some(-1),
                    ..create("https://a.example")
                },
                "retry_count",
            ),
            (
                OutgoingChanges {
                    retry_delay: Some(0),
                    ..create("https://a.example")
                },
                "retry_delay",
            ),
            (
                OutgoingChanges {
                    timeout: Some(1000),
                    ..create("https://a.example")
                },
                "timeout",
            ),
            (
                OutgoingChanges {
                    rate_limit: Some(Some(0)),
                    ..create("https://a.example")
                },
                "rate_limit",
            ),
            (create("ftp://a.example"), "url"),
            (
                OutgoingChanges {
                    event_types: Some(vec!["x".into()]),
                    ..create("https://a.example")
                },
                "event_types[0]",
            ),
            (
                OutgoingChanges {
                    headers: Some([("X-Webhook-Signature".to_string(), "x".to_string())].into()),
                    ..create("https://a.example")
                },
                "headers.X-Webhook-Signature",
            ),
            (
                OutgoingChanges {
                    filters: Some(
                        serde_json::json!({"a": {"b": 1}})
                            .as_object()
                            .unwrap()
                            .clone(),
                    ),
                    ..create("https://a.example")
                },
                "filters.a",
            ),
        ];
        for (changes, field) in cases {
            assert_eq!(OutgoingSettings::create(changes).unwrap_err().field, field);
        }
    }
}
