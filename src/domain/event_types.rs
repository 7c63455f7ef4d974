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

/// Whether `event_type` is one of hookd's own types (see [`CATALOG`]).
pub fn is_builtin(event_type: &str) -> bool {
    CATALOG.iter().any(|(known, _)| *known == event_type)
}

/// Longest event type name, built-in or a tenant's own.
pub const MAX_NAME: usize = 100;

/// Whether `name` has the dotted form of every event type: two or more segments of lowercase
/// letters, digits, `_` or `-` (`chat.completed`, `billing.invoice.paid`).
pub fn is_dotted_name(name: &str) -> bool {
    name.len() <= MAX_NAME && name.contains('.') && is_dotted_prefix(name)
}

/// One or more dot-separated segments of the characters names use: what precedes `.*`.
fn is_dotted_prefix(prefix: &str) -> bool {
    prefix.split('.').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    })
}

/// Checks the name of a type a tenant defines: the dotted form, outside the `webhook.` family,
/// which hookd keeps for the events it publishes itself. (A built-in name is the caller's to
/// refuse, as a conflict rather than a malformed name.)
pub fn validate_custom_name(field: &str, name: &str) -> Result<(), Invalid> {
    if !is_dotted_name(name) {
        return Err(Invalid::new(
            field,
            format!(
                "{name:?} is not an event type name: two or more dot-separated segments of \
                 lowercase letters, digits, `_` or `-`, at most {MAX_NAME} characters \
                 (e.g. `billing.invoice.paid`)"
            ),
        ));
    }
    if name.starts_with("webhook.") {
        return Err(Invalid::new(
            field,
            "the `webhook.` family is reserved for the events hookd publishes itself",
        ));
    }
    Ok(())
}

/// Checks the form of one subscription pattern: `*`, an event type name, or `prefix.*`.
fn validate_pattern_form(pattern: &str) -> Result<(), String> {
    let well_formed = pattern == "*"
        || is_dotted_name(pattern)
        || pattern
            .strip_suffix(".*")
            .is_some_and(|prefix| prefix.len() < MAX_NAME && is_dotted_prefix(prefix));
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "{pattern:?} is not an event type pattern: a name like `chat.completed`, a family \
             like `chat.*`, or `*`"
        ))
    }
}

/// Checks the form of a subscription list as given by a user. Whether each pattern names a type
/// that exists depends on the tenant's own types: see [`check_known_patterns`].
pub fn validate_patterns(field: &str, patterns: &[String]) -> Result<(), Invalid> {
    if patterns.is_empty() {
        return Err(Invalid::new(
            field,
            "must not be empty; omit it or use [\"*\"] to receive every event",
        ));
    }
    for (i, pattern) in patterns.iter().enumerate() {
        validate_pattern_form(pattern)
            .map_err(|message| Invalid::new(format!("{field}[{i}]"), message))?;
    }
    Ok(())
}

/// Checks that every pattern covers at least one type: a built-in one or one of `custom` (the
/// tenant's own, archived ones included, since subscriptions to them keep working). A typo in a
/// subscription is refused rather than left to receive nothing.
pub fn check_known_patterns(
    field: &str,
    patterns: &[String],
    custom: &[String],
) -> Result<(), Invalid> {
    let names = CATALOG
        .iter()
        .map(|(name, _)| *name)
        .chain(custom.iter().map(String::as_str));
    match patterns
        .iter()
        .position(|pattern| !names.clone().any(|name| matches(pattern, name)))
    {
        None => Ok(()),
        Some(i) => Err(Invalid::new(
            format!("{field}[{i}]"),
            format!(
                "unknown event type {:?}; GET /api/event-types lists the built-in types and \
                 yours, and `*` or `chat.*` subscribe to many",
                patterns[i]
            ),
        )),
    }
}

/// Whether every pattern covers a built-in type, so that no tenant's own types need reading.
pub fn all_builtin(patterns: &[String]) -> bool {
    check_known_patterns("", patterns, &[]).is_ok()
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
        assert!(ABOUT_WEBHOOKS.iter().all(|t| is_builtin(t)));
        assert!(CATALOG.iter().all(|(name, _)| is_dotted_name(name)));
    }

    #[test]
    fn patterns_accept_known_types_and_wildcards() {
        let known = |p: &str| check_known_patterns("f", &[p.to_string()], &[]);
        for ok in [
            "*",
            "chat.*",
            "chain.step.*",
            "chat.message",
            "webhook.test",
        ] {
            assert!(validate_pattern_form(ok).is_ok(), "{ok}");
            assert!(known(ok).is_ok(), "{ok}");
        }
        for malformed in ["chat", ".*", "chat*", "", "Chat.x", "a..b", "a.*.b"] {
            assert!(validate_pattern_form(malformed).is_err(), "{malformed}");
        }
        for unknown in ["nope.*", "chat.unknown", "billing.invoice.paid"] {
            assert!(validate_pattern_form(unknown).is_ok(), "{unknown}");
            assert!(known(unknown).is_err(), "{unknown}");
        }
    }

    #[test]
    fn tenant_types_make_their_names_and_families_known() {
        let custom = ["billing.invoice.paid".to_string()];
        for ok in ["billing.*", "billing.invoice.*", "billing.invoice.paid"] {
            assert!(check_known_patterns("f", &[ok.into()], &custom).is_ok());
        }
        let err =
            check_known_patterns("f", &["*".into(), "billing.refund".into()], &custom).unwrap_err();
        assert_eq!(err.field, "f[1]");
        assert!(all_builtin(&["chat.*".into(), "*".into()]));
        assert!(!all_builtin(&["billing.*".into()]));
    }

    #[test]
    fn custom_names_are_dotted_and_outside_the_webhook_family() {
        for ok in ["billing.invoice.paid", "crm.lead-created", "v2.x_1"] {
            assert!(validate_custom_name("name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "billing",
            "Billing.paid",
            "a..b",
            "a.b.",
            "a.*",
            "webhook.mine",
            "",
        ] {
            assert_eq!(validate_custom_name("name", bad).unwrap_err().field, "name");
        }
        assert!(validate_custom_name("name", &format!("a.{}", "b".repeat(MAX_NAME))).is_err());
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
