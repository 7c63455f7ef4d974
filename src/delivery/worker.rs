//! The delivery loop of one node: lease due deliveries, respect each webhook's circuit, rate
//! limit and concurrency bound, send, and record the outcome.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use tokio::sync::{Notify, Semaphore, watch};

use super::sender::{Attempt, Sender};
use crate::{
    config::Config,
    domain::{
        delivery::{CircuitState, Delivery, DeliveryStatus},
        event::Event,
        log::{LogEntry, MAX_LOGGED_BODY, WebhookType, redact_headers, truncate},
        new_id,
        outgoing::OutgoingWebhook,
        time::now_ms,
    },
    store::{AttemptRecord, HealthChange, Store},
};

/// How often a node looks for due work when nothing wakes it (other nodes' publishes, retries
/// coming due).
const POLL: Duration = Duration::from_millis(500);
/// Most deliveries leased in one claim.
const CLAIM_BATCH: usize = 64;

/// Per-webhook limits held in memory: a concurrency bound and a rate limiter.
struct Gates {
    permits: HashMap<String, Arc<Semaphore>>,
    limiters: HashMap<String, (i64, Arc<DefaultDirectRateLimiter>)>,
}

pub struct Worker {
    store: Store,
    sender: Arc<Sender>,
    config: Arc<Config>,
    wake: Arc<Notify>,
    gates: Mutex<Gates>,
    in_flight: Arc<Semaphore>,
}

impl Worker {
    pub fn new(
        store: Store,
        sender: Arc<Sender>,
        config: Arc<Config>,
        wake: Arc<Notify>,
    ) -> Arc<Worker> {
        let in_flight = Arc::new(Semaphore::new(config.delivery_concurrency));
        Arc::new(Worker {
            store,
            sender,
            config,
            wake,
            gates: Mutex::new(Gates {
                permits: HashMap::new(),
                limiters: HashMap::new(),
            }),
            in_flight,
        })
    }

    /// Runs until `shutdown` turns true, then waits (up to `grace`) for attempts in flight.
    /// Attempts still running after that are abandoned: their leases expire and another node
    /// (or this one, restarted) makes them again.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        while !*shutdown.borrow() {
            let claimed = match self.claim().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming deliveries failed; retrying");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                let idle = self.idle_time().await;
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(idle) => {}
                    changed = shutdown.changed() => if changed.is_err() { break },
                }
            }
        }
        let total = u32::try_from(self.config.delivery_concurrency).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, self.in_flight.acquire_many(total)).await;
    }

    /// How long to sleep with nothing due: until the next retry falls due, at most [`POLL`]
    /// (other nodes may publish meanwhile; this node's publishes wake it at once).
    async fn idle_time(&self) -> Duration {
        match self.store.next_due_at().await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                Duration::from_millis(wait).min(POLL)
            }
            _ => POLL,
        }
    }

    /// Leases what is due (as many as there are free slots) and starts each attempt.
    async fn claim(self: &Arc<Self>) -> anyhow::Result<Vec<Delivery>> {
        let free = self.in_flight.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            // Wait for a slot rather than spin.
            drop(self.in_flight.acquire().await?);
            return Ok(vec![]);
        }
        let now = now_ms();
        let token = new_id();
        let claimed = self
            .store
            .claim_due(
                now,
                now + self.config.lease_ms,
                &token,
                i64::try_from(free).unwrap_or(1),
            )
            .await?;
        if claimed.is_empty() {
            return Ok(claimed);
        }
        let event_ids: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
        let hook_ids: Vec<&str> = claimed.iter().map(|d| d.webhook_id.as_str()).collect();
        let events: HashMap<String, Arc<Event>> = self
            .store
            .events_by_id(&dedup(event_ids))
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), Arc::new(e)))
            .collect();
        let hooks: HashMap<String, Arc<OutgoingWebhook>> = self
            .store
            .outgoing_by_id(&dedup(hook_ids))
            .await?
            .into_iter()
            .map(|h| (h.id.clone(), Arc::new(h)))
            .collect();
        for delivery in &claimed {
            let permit = Arc::clone(&self.in_flight).acquire_owned().await?;
            let worker = Arc::clone(self);
            let event = events.get(&delivery.event_id).cloned();
            let hook = hooks.get(&delivery.webhook_id).cloned();
            let delivery = delivery.clone();
            let token = token.clone();
            tokio::spawn(async move {
                if let Err(error) = worker.process(&delivery, &token, event, hook).await {
                    tracing::warn!(delivery = %delivery.id, %error, "delivery attempt not recorded; it will be retried when its lease ends");
                }
                drop(permit);
            });
        }
        Ok(claimed)
    }

    async fn process(
        &self,
        delivery: &Delivery,
        token: &str,
        event: Option<Arc<Event>>,
        hook: Option<Arc<OutgoingWebhook>>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let (Some(event), Some(hook)) = (event, hook) else {
            self.store
                .cancel_delivery(&delivery.id, token, "webhook deleted", now)
                .await?;
            return Ok(());
        };
        if !hook.settings.is_active {
            let reason = hook
                .health
                .deactivated_reason
                .as_deref()
                .unwrap_or("webhook deactivated");
            self.store
                .cancel_delivery(&delivery.id, token, reason, now)
                .await?;
            return Ok(());
        }
        let policy = &self.config.delivery;
        match hook.health.circuit(policy, now) {
            CircuitState::Closed => {}
            CircuitState::Open => {
                let until = hook.health.circuit_open_until.unwrap_or(now) + jitter_ms();
                self.store
                    .defer_delivery(&delivery.id, token, until)
                    .await?;
                return Ok(());
            }
            CircuitState::HalfOpen => {
                let trial_until = now + policy.circuit_cooldown_ms;
                if !self
                    .store
                    .claim_circuit_trial(&hook.id, now, trial_until)
                    .await?
                {
                    self.store
                        .defer_delivery(&delivery.id, token, trial_until + jitter_ms())
                        .await?;
                    return Ok(());
                }
            }
        }
        if let Some(wait_ms) = self.rate_limited(&hook) {
            self.store
                .defer_delivery(&delivery.id, token, now + wait_ms)
                .await?;
            return Ok(());
        }
        let gate = self.target_gate(&hook.id);
        let Ok(Ok(_target_permit)) =
            tokio::time::timeout(Duration::from_secs(1), gate.acquire_owned()).await
        else {
            // The target is slow and already has its share of slots: let others go first.
            self.store
                .defer_delivery(&delivery.id, token, now_ms() + 1_000)
                .await?;
            return Ok(());
        };
        // The lease must outlast the send plus recording it (a quarter of the lease is kept for
        // that), or another node could take the delivery over while it is still being made.
        let lease_ms = self.config.lease_ms;
        let longest = hook.settings.timeout * 1_000 + lease_ms / 4;
        if longest > lease_ms {
            self.store
                .extend_lease(&delivery.id, token, now_ms() + longest)
                .await?;
        }
        let attempt = self.sender.send(&hook, &event, &delivery.id).await;
        self.record(delivery, token, &hook, &attempt).await
    }

    async fn record(
        &self,
        delivery: &Delivery,
        token: &str,
        hook: &OutgoingWebhook,
        attempt: &Attempt,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let policy = &self.config.delivery;
        let attempts = delivery.attempts + 1;
        let failure = attempt.failure();
        let (status, next_attempt_at, health) = if attempt.succeeded() {
            (DeliveryStatus::Delivered, now, HealthChange::Success)
        } else if attempt.gone() {
            (
                DeliveryStatus::Failed,
                now,
                HealthChange::Gone {
                    reason: "target answered 410 Gone",
                },
            )
        } else {
            let health = HealthChange::Failure {
                threshold: policy.circuit_threshold,
                open_until: now + policy.circuit_cooldown_ms,
            };
            match policy.retry_delay_ms(
                attempts,
                hook.settings.retry_count,
                hook.settings.retry_delay,
                attempt.retry_after_ms,
            ) {
                Some(delay) => (DeliveryStatus::Pending, now + delay, health),
                None => (DeliveryStatus::Failed, now, health),
            }
        };
        let log = attempt_log(hook, delivery, attempt, now);
        metrics::counter!("hookd_delivery_attempts_total", "outcome" => outcome_label(attempt))
            .increment(1);
        metrics::histogram!("hookd_delivery_attempt_seconds")
            .record(attempt.elapsed_ms as f64 / 1_000.0);
        self.store
            .record_attempt(AttemptRecord {
                delivery_id: delivery.id.clone(),
                webhook_id: hook.id.clone(),
                lease_token: token.to_string(),
                status,
                attempts,
                next_attempt_at,
                last_status: attempt.response_status.map(i64::from),
                last_error: failure,
                now,
                log,
                health,
            })
            .await?;
        if status == DeliveryStatus::Pending {
            tracing::debug!(delivery = %delivery.id, attempts, next_attempt_at, "attempt failed; retry scheduled");
        }
        Ok(())
    }

    /// Milliseconds to wait when the webhook's `rate_limit` is spent, else `None`.
    fn rate_limited(&self, hook: &OutgoingWebhook) -> Option<i64> {
        let per_minute = hook.settings.rate_limit?;
        let limiter = {
            let mut gates = self.gates.lock().expect("gates lock");
            let entry = gates
                .limiters
                .entry(hook.id.clone())
                .or_insert_with(|| (0, Arc::new(limiter(per_minute))));
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(limiter(per_minute)));
            }
            Arc::clone(&entry.1)
        };
        limiter.check().err().map(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1)
        })
    }

    fn target_gate(&self, webhook_id: &str) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().expect("gates lock");
        let bound = self.config.per_target_concurrency;
        Arc::clone(
            gates
                .permits
                .entry(webhook_id.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(bound))),
        )
    }
}

/// `per_minute` deliveries a minute, in bursts of at most that many.
fn limiter(per_minute: i64) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(u32::try_from(per_minute).unwrap_or(u32::MAX).max(1))
        .unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_minute(rate))
}

/// Spreads the deliveries of a reopening circuit a little so they don't all wake at once.
fn jitter_ms() -> i64 {
    rand::random_range(0..250)
}

fn dedup(mut ids: Vec<&str>) -> Vec<&str> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn outcome_label(attempt: &Attempt) -> &'static str {
    match (attempt.succeeded(), attempt.response_status) {
        (true, _) => "delivered",
        (false, Some(_)) => "http_error",
        (false, None) => "no_response",
    }
}

/// The log entry of one outgoing attempt.
pub fn attempt_log(
    hook: &OutgoingWebhook,
    delivery: &Delivery,
    attempt: &Attempt,
    now: i64,
) -> LogEntry {
    LogEntry {
        id: new_id(),
        webhook_type: WebhookType::Outgoing,
        webhook_id: hook.id.clone(),
        delivery_id: Some(delivery.id.clone()),
        event_type: Some(delivery.event_type.clone()),
        status: if attempt.succeeded() {
            "delivered"
        } else {
            "failed"
        }
        .to_string(),
        succeeded: attempt.succeeded(),
        request_payload: Some(truncate(
            &String::from_utf8_lossy(&attempt.request_body),
            MAX_LOGGED_BODY,
        )),
        request_headers: redact_headers(
            attempt
                .request_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        ),
        response_status: attempt.response_status.map(i64::from),
        response_body: attempt.response_body.clone(),
        error_message: attempt.failure(),
        retry_count: delivery.attempts,
        processing_time_ms: attempt.elapsed_ms,
        created_at: now,
    }
}
