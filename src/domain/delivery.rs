//! Rules of delivery (to outgoing webhooks and agent endpoints): the retry schedule and the
//! circuit breaker.

use serde::{Deserialize, Serialize};

use super::event::Event;

/// Timing knobs. Production values are the defaults; tests shrink the units so that a schedule
/// of 60, 120, 240 "seconds" runs in milliseconds without changing what is asserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Milliseconds per unit of a webhook's `retry_delay` (1000: the setting is in seconds).
    pub retry_unit_ms: i64,
    /// Consecutive failures that open a webhook's circuit.
    pub circuit_threshold: i64,
    /// How long an open circuit stays open before one trial attempt.
    pub circuit_cooldown_ms: i64,
    /// The longest `Retry-After` honoured.
    pub max_retry_after_ms: i64,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            retry_unit_ms: 1_000,
            circuit_threshold: 5,
            circuit_cooldown_ms: 5 * 60 * 1_000,
            max_retry_after_ms: 60 * 60 * 1_000,
        }
    }
}

impl DeliveryPolicy {
    /// Delay before the next attempt after `attempts_made` attempts (the last one failed), or
    /// `None` when the `retry_count` further attempts are spent. Exponential:
    /// `retry_delay · 2^(n-1)`, so 60 s gives 60, 120, 240 s. A `Retry-After` from the target
    /// (429/503) lengthens the wait, up to `max_retry_after_ms`, never shortens it.
    pub fn retry_delay_ms(
        &self,
        attempts_made: i64,
        retry_count: i64,
        retry_delay: i64,
        retry_after_ms: Option<i64>,
    ) -> Option<i64> {
        if attempts_made > retry_count {
            return None;
        }
        let exponent = u32::try_from(attempts_made.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let backoff = retry_delay
            .saturating_mul(self.retry_unit_ms)
            .saturating_mul(1_i64 << exponent);
        let asked = retry_after_ms.map_or(0, |ms| ms.clamp(0, self.max_retry_after_ms));
        Some(backoff.max(asked))
    }

    pub fn circuit(
        &self,
        consecutive_failures: i64,
        open_until: Option<i64>,
        now: i64,
    ) -> CircuitState {
        match open_until {
            Some(until) if until > now => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
            None if consecutive_failures >= self.circuit_threshold => CircuitState::HalfOpen,
            None => CircuitState::Closed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// Too many consecutive failures: deliveries wait (without spending retries) until the
    /// cool-down ends.
    Open,
    /// Cool-down over: the next attempt is a trial that closes or reopens the circuit.
    HalfOpen,
}

/// What deliveries have taught about a target (an outgoing webhook's URL or an agent's
/// endpoint); written by the delivery engine only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub consecutive_failures: i64,
    /// Set while the circuit is open (until then) or half-open (in the past).
    pub circuit_open_until: Option<i64>,
    /// Why hookd switched an outgoing webhook off (e.g. its target answered 410 Gone).
    pub deactivated_reason: Option<String>,
}

impl Health {
    pub fn circuit(&self, policy: &DeliveryPolicy, now: i64) -> CircuitState {
        policy.circuit(self.consecutive_failures, self.circuit_open_until, now)
    }
}

/// What a delivery goes to; its `webhook_id` names a row of the matching table.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// An outgoing webhook (`outgoing_webhooks`).
    Webhook,
    /// An agent's endpoint (`agents`): a message routed to it, pushed.
    Agent,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Webhook => "webhook",
            TargetKind::Agent => "agent",
        }
    }

    pub fn parse(name: &str) -> Option<TargetKind> {
        [TargetKind::Webhook, TargetKind::Agent]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or in flight).
    Pending,
    Delivered,
    /// Retries exhausted; can be replayed.
    Failed,
    /// Its webhook was deleted or deactivated before it could be delivered.
    Cancelled,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One event on its way to one webhook. Its id is stable across attempts: receivers dedupe on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub target: TargetKind,
    /// The outgoing webhook's or the agent's id, as `target` says.
    pub webhook_id: String,
    pub company_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due; while one is being made, when its lease ends.
    pub next_attempt_at: i64,
    /// Who holds the delivery while an attempt is made; `None` when nobody does.
    pub lease_token: Option<String>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Made strictly one at a time in publish order with the other FIFO deliveries of its
    /// webhook (its `ordering` when the event was published, or when it last changed).
    pub fifo: bool,
}

impl Delivery {
    /// A new delivery of `event` to the outgoing webhook or agent `target_id`, due now.
    pub fn pending(event: &Event, target: TargetKind, target_id: &str, now: i64) -> Delivery {
        Delivery {
            id: super::new_id(),
            event_id: event.id.clone(),
            target,
            webhook_id: target_id.to_string(),
            company_id: event.tenant.company_id.clone(),
            event_type: event.event_type.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            lease_token: None,
            last_status: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            fifo: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_60_120_240_then_done() {
        let p = DeliveryPolicy::default();
        let delays: Vec<_> = (1..=4).map(|n| p.retry_delay_ms(n, 3, 60, None)).collect();
        assert_eq!(delays, [Some(60_000), Some(120_000), Some(240_000), None]);
        assert_eq!(p.retry_delay_ms(1, 0, 60, None), None);
    }

    #[test]
    fn retry_after_lengthens_within_bounds() {
        let p = DeliveryPolicy::default();
        assert_eq!(p.retry_delay_ms(1, 3, 1, Some(30_000)), Some(30_000));
        assert_eq!(p.retry_delay_ms(1, 3, 60, Some(1_000)), Some(60_000));
        assert_eq!(p.retry_delay_ms(1, 3, 1, Some(i64::MAX)), Some(3_600_000));
    }

    #[test]
    fn circuit_opens_at_threshold_and_half_opens_after_cooldown() {
        let p = DeliveryPolicy::default();
        assert_eq!(p.circuit(4, None, 0), CircuitState::Closed);
        assert_eq!(p.circuit(5, Some(100), 50), CircuitState::Open);
        assert_eq!(p.circuit(5, Some(100), 100), CircuitState::HalfOpen);
    }
}
