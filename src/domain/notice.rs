//! Notices: what hookd announces about a tenant's webhooks themselves (`webhook.disabled`,
//! `webhook.circuit_opened`, `webhook.circuit_closed`, `webhook.delivery_failed`). A notice is
//! written in the transaction that changes the webhook, then published as an ordinary event to
//! the tenant's other webhooks that subscribe to it (never to the one it is about).

use serde_json::{Value, json};

use super::{event::NewEvent, event_types, new_id, tenant::Tenant, time::iso8601};

/// One announcement waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub id: String,
    pub tenant: Tenant,
    /// The webhook it is about, which never receives it.
    pub webhook_id: String,
    pub event_type: String,
    pub data: Value,
    pub created_at: i64,
}

/// What a notice says about its webhook, with the webhook's name and failure count as found
/// when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct About<'a> {
    pub tenant: &'a Tenant,
    pub webhook_id: &'a str,
    pub webhook_name: &'a str,
    pub consecutive_failures: i64,
}

/// A delivery that failed for good.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedDelivery<'a> {
    pub delivery_id: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub reason: &'a str,
}

impl About<'_> {
    fn notice(&self, event_type: &str, reason: &str, extra: Value, now: i64) -> Notice {
        let mut data = json!({
            "webhook_id": self.webhook_id,
            "webhook_name": self.webhook_name,
            "reason": reason,
            "consecutive_failures": self.consecutive_failures,
            "occurred_at": iso8601(now),
        });
        if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
        Notice {
            id: new_id(),
            tenant: self.tenant.clone(),
            webhook_id: self.webhook_id.to_string(),
            event_type: event_type.to_string(),
            data,
            created_at: now,
        }
    }

    /// Switched off: its target answered 410 Gone, or its owner deactivated it.
    pub fn disabled(&self, reason: &str, now: i64) -> Notice {
        self.notice("webhook.disabled", reason, Value::Null, now)
    }

    /// Its circuit opened after `consecutive_failures` failures in a row (at least `threshold`),
    /// the last for `reason`; deliveries wait until `open_until`.
    pub fn circuit_opened(
        &self,
        reason: &str,
        threshold: i64,
        open_until: i64,
        now: i64,
    ) -> Notice {
        let extra = json!({"failure_threshold": threshold, "open_until": iso8601(open_until)});
        self.notice("webhook.circuit_opened", reason, extra, now)
    }

    /// Its circuit closed: a delivery succeeded after `failures_before` failures in a row.
    pub fn circuit_closed(&self, failures_before: i64, now: i64) -> Notice {
        let extra = json!({"failures_before": failures_before});
        self.notice("webhook.circuit_closed", "a delivery succeeded", extra, now)
    }

    /// One of its deliveries spent its retries.
    pub fn delivery_failed(&self, failed: &FailedDelivery, now: i64) -> Notice {
        let extra = json!({
            "delivery_id": failed.delivery_id,
            "event_id": failed.event_id,
            "event_type": failed.event_type,
            "attempts": failed.attempts,
            "last_status": failed.last_status,
        });
        self.notice("webhook.delivery_failed", failed.reason, extra, now)
    }
}

/// Whether the failure of a delivery of `event_type` is announced. Not when it carried an
/// announcement itself: otherwise two webhooks that fail each other's announcements would
/// announce each other's failures forever (A's `webhook.delivery_failed` about B fails at B… and
/// with more webhooks, each round multiplies). Circuit and switch-off announcements need no such
/// rule: each needs a change of state, and a circuit closes again only after a success, so
/// they come at most twice per cool-down per webhook however the webhooks fail.
pub fn announces_failure_of(event_type: &str) -> bool {
    !event_types::is_about_webhooks(event_type)
}

impl Notice {
    /// The event it is published as.
    pub fn event(&self) -> NewEvent {
        NewEvent {
            event_type: self.event_type.clone(),
            data: self.data.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(tenant: &Tenant) -> About<'_> {
        About {
            tenant,
            webhook_id: "w1",
            webhook_name: "crm",
            consecutive_failures: 5,
        }
    }

    #[test]
    fn notices_name_the_webhook_the_reason_and_the_counts() {
        let tenant = Tenant {
            user_id: "u".into(),
            company_id: "c".into(),
        };
        let opened = about(&tenant).circuit_opened("target answered HTTP 500", 5, 60_000, 0);
        assert_eq!(opened.event_type, "webhook.circuit_opened");
        assert_eq!(opened.webhook_id, "w1");
        assert_eq!(opened.data["webhook_name"], "crm");
        assert_eq!(opened.data["reason"], "target answered HTTP 500");
        assert_eq!(opened.data["consecutive_failures"], 5);
        assert_eq!(opened.data["failure_threshold"], 5);
        assert_eq!(opened.data["open_until"], "1970-01-01T00:01:00.000Z");
        let failed = about(&tenant).delivery_failed(
            &FailedDelivery {
                delivery_id: "d",
                event_id: "e",
                event_type: "task.failed",
                attempts: 4,
                last_status: Some(503),
                reason: "target answered HTTP 503",
            },
            0,
        );
        assert_eq!(failed.data["attempts"], 4);
        assert_eq!(failed.data["last_status"], 503);
        assert_eq!(failed.event().event_type, "webhook.delivery_failed");
        let disabled = about(&tenant).disabled("switched off by its owner", 0);
        assert_eq!(disabled.data["reason"], "switched off by its owner");
        assert_eq!(
            about(&tenant).circuit_closed(7, 0).data["failures_before"],
            7
        );
    }

    #[test]
    fn failures_of_announcements_are_not_announced() {
        assert!(announces_failure_of("task.failed"));
        assert!(announces_failure_of("webhook.test"));
        for about in event_types::ABOUT_WEBHOOKS {
            assert!(!announces_failure_of(about));
        }
    }
}
