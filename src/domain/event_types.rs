//! The catalogue of event types and subscription patterns (`chat.completed`, `chat.*`, `*`).

use super::Invalid;

/// Every event type hookd knows, with the description the API shows. The spec lists 27 (it says
/// 26 in one place and 28 in another); its own examples also use `chat.message.received` and
/// `chat.response.sent`; `webhook.test` is what the test endpoint sends; and hookd announces
/// what happens to webhooks themselves with the four of [`ABOUT_WEBHOOKS`]: 34 in all.
pub const CATALOG: &[(&str, &str)] = &[
    (
        "command.executed",
        "Triggered when a command is successfully executed",
    ),
    ("command.failed", "Triggered when a command execution fails"),
    ("chat.started", "Triggered when a chat conversation starts"),
    (
        "chat.completed",
        "Triggered when a chat conversation completes",
    ),
    ("chat.message", "Triggered for each chat message"),
    (
        "chat.message.received",
        "Triggered when a chat message is received",
    ),
    (
        "chat.response.sent",
        "Triggered when an agent's chat response is sent",
    ),
    ("agent.created", "Triggered when an agent is created"),
    ("agent.updated", "Triggered when an agent is updated"),
    ("agent.deleted", "Triggered when an agent is deleted"),
    ("memory.created", "Triggered when a memory is created"),
    ("memory.updated", "Triggered when a memory is updated"),
    ("memory.deleted", "Triggered when a memory is deleted"),
    ("chain.started", "Triggered when a chain execution starts"),
    (
        "chain.step.completed",
        "Triggered when a chain step completes",
    ),
    (
        "chain.completed",
        "Triggered when a chain execution completes",
    ),
    ("chain.failed", "Triggered when a chain execution fails"),
    ("task.created", "Triggered when a task is created"),
    ("task.started", "Triggered when a task starts"),
    ("task.completed", "Triggered when a task completes"),
    ("task.failed", "Triggered when a task fails"),
    (
        "provider.changed",
        "Triggered when provider settings change",
    ),
    (
        "extension.enabled",
        "Triggered when an extension is enabled",
    ),
    (
        "extension.disabled",
        "Triggered when an extension is disabled",
    ),
    ("file.uploaded", "Triggered when a file is uploaded"),
    ("file.processed", "Triggered when a file is processed"),
    (
        "transcription.completed",
        "Triggered when transcription completes",
    ),
    ("training.started", "Triggered when training starts"),
    ("training.completed", "Triggered when training completes"),
    (
        "webhook.test",
        "Sent by the test endpoint to check a webhook's target",
    ),
    (
        "webhook.disabled",
        "Sent by hookd when one of your webhooks is switched off (its target answered 410 Gone, or its owner deactivated it)",
    ),
    (
        "webhook.circuit_opened",
        "Sent by hookd when a webhook's circuit breaker opens after consecutive failures: its deliveries wait",
    ),
    (
        "webhook.circuit_closed",
        "Sent by hookd when a webhook's circuit breaker closes again: its deliveries flow",
    ),
    (
        "webhook.delivery_failed",
        "Sent by hookd when a delivery to one of your webhooks has failed for good (its retries spent)",
    ),
];

/// The events hookd publishes about the tenant's webhooks themselves. Only hookd emits them
/// (publishing one through the API is refused), never to the webhook they are about.
pub const ABOUT_WEBHOOKS: [&str; 4] = [
    "webhook.disabled",
    "webhook.circuit_opened",
    "webhook.circuit_closed",
    "webhook.delivery_failed",
];

/// Whether `event_type` is one hookd publishes about a webhook (see [`ABOUT_WEBHOOKS`]).
pub fn is_about_webhooks(event_type: &str) -> bool {
    ABOUT_WEBHOOKS.contains(&event_type)
}

pub fn is_known(event_type: &str) -> bool {
    CATALOG.iter().any(|(known, _)| *known == event_type)
}

/// Checks one subscription pattern: a known type, `*`, or `prefix.*` where some known type
/// starts with `prefix.`.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" || is_known(pattern) {
        return Ok(());
    }
    if let Some(prefix) = pattern.strip_suffix(".*")
        && !prefix.is_empty()
        && CATALOG.iter().any(|(known, _)| {
            known
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    {
        return Ok(());
    }
    Err(format!(
        "unknown event type {pattern:?}; GET /api/webhooks/event-types lists them, and `*` or `chat.*` subscribe to many"
    ))
}

/// Validates a subscription list as given by a user.
pub fn validate_patterns(field: &str, patterns: &[String]) -> Result<(), Invalid> {
    if patterns.is_empty() {
        return Err(Invalid::new(
            field,
            "must not be empty; omit it or use [\"*\"] to receive every event",
        ));
    }
    for (i, pattern) in patterns.iter().enumerate() {
        validate_pattern(pattern)
            .map_err(|message| Invalid::new(format!("{field}[{i}]"), message))?;
    }
    Ok(())
}

/// Whether `event_type` is covered by `pattern` (validated or not).
pub fn matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix),
        _ => pattern == event_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_every_spec_type_once() {
        let mut names: Vec<_> = CATALOG.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        assert_eq!(CATALOG.len(), 34);
        assert!(ABOUT_WEBHOOKS.iter().all(|t| is_known(t)));
    }

    #[test]
    fn patterns_accept_known_types_and_wildcards() {
        for ok in [
            "*",
            "chat.*",
            "chain.step.*",
            "chat.message",
            "webhook.test",
        ] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["chat", "nope.*", ".*", "chat.unknown", "chat*", ""] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_by_dotted_prefix() {
        assert!(matches("*", "agent.created"));
        assert!(matches("chat.*", "chat.message.received"));
        assert!(!matches("chat.*", "chain.started"));
        assert!(!matches("chat.*", "chat"));
        assert!(matches("task.failed", "task.failed"));
        assert!(!matches("task.failed", "task.failed.x"));
    }

    #[test]
    fn empty_subscription_is_refused_with_field_name() {
        let err = validate_patterns("event_types", &[]).unwrap_err();
        assert_eq!(err.field, "event_types");
        let err = validate_patterns("event_types", &["*".into(), "bad".into()]).unwrap_err();
        assert_eq!(err.field, "event_types[1]");
    }
}
