//! The delivery loop of one node: lease due deliveries, respect each webhook's circuit, rate
//! limit and concurrency bound, send, and record the outcome.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};

use super::{
    handoff::Handed,
    publish::Publisher,
    sender::{Attempt, Sender},
};
use crate::{
    config::Config,
    domain::{
        agent::{Agent, AgentMessage, Endpoint},
        delivery::{CircuitState, Delivery, DeliveryStatus, Health, TargetKind},
        event::{Event, NewEvent},
        log::{LogEntry, MAX_LOGGED_BODY, WebhookType, log_text},
        new_id,
        outgoing::OutgoingWebhook,
        time::now_ms,
    },
    store::{AttemptRecord, HealthChange, Reply, Store},
};

/// How often a node looks for due work when nothing wakes it (other nodes' publishes, retries
/// coming due).
const POLL: Duration = Duration::from_millis(500);
/// Most deliveries leased in one claim.
const CLAIM_BATCH: usize = 64;
/// When every slot was busy, how many freed slots a claim waits for (at most [`GATHER`]).
const GATHER_SLOTS: u32 = 16;
const GATHER: Duration = Duration::from_millis(5);

/// What a claimed delivery goes to.
#[derive(Clone)]
enum Target {
    Webhook(Arc<OutgoingWebhook>),
    /// An agent with an endpoint (one without has nothing to push to).
    Agent(Arc<(Agent, Endpoint)>),
}

impl Target {
    fn kind(&self) -> TargetKind {
        match self {
            Target::Webhook(_) => TargetKind::Webhook,
            Target::Agent(_) => TargetKind::Agent,
        }
    }

    fn id(&self) -> &str {
        match self {
            Target::Webhook(hook) => &hook.id,
            Target::Agent(agent) => &agent.0.id,
        }
    }

    fn health(&self) -> &Health {
        match self {
            Target::Webhook(hook) => &hook.health,
            Target::Agent(agent) => &agent.0.health,
        }
    }

    /// Why its deliveries end unsent, if they do.
    fn closed(&self) -> Option<&str> {
        match self {
            Target::Webhook(hook) if !hook.settings.is_active => Some(
                hook.health
                    .deactivated_reason
                    .as_deref()
                    .unwrap_or("webhook deactivated"),
            ),
            _ => None,
        }
    }

    fn rate_limit(&self) -> Option<i64> {
        match self {
            Target::Webhook(hook) => hook.settings.rate_limit,
            Target::Agent(_) => None,
        }
    }

    /// `(retry_count, retry_delay, timeout)`.
    fn limits(&self) -> (i64, i64, i64) {
        match self {
            Target::Webhook(hook) => {
                let s = &hook.settings;
                (s.retry_count, s.retry_delay, s.timeout)
            }
            Target::Agent(agent) => {
                let e = &agent.1;
                (e.retry_count, e.retry_delay, e.timeout)
            }
        }
    }
}

/// A leased delivery about to be attempted, in its worker slot.
struct Work {
    delivery: Delivery,
    token: Arc<str>,
    /// `None`: deleted meanwhile.
    event: Option<Arc<Event>>,
    permit: OwnedSemaphorePermit,
}

impl From<Handed> for Work {
    fn from(handed: Handed) -> Work {
        Work {
            delivery: handed.delivery,
            token: handed.token,
            event: Some(handed.event),
            permit: handed.permit,
        }
    }
}

/// Per-target limits held in memory: a concurrency bound and a rate limiter.
struct Gates {
    permits: HashMap<String, Arc<Semaphore>>,
    limiters: HashMap<String, (i64, Arc<DefaultDirectRateLimiter>)>,
}

pub struct Worker {
    store: Store,
    sender: Arc<Sender>,
    config: Arc<Config>,
    wake: Arc<Notify>,
    /// Prepares the `chat.completed` events of agent replies.
    publisher: Publisher,
    /// Where agent replies are announced to this node's inbox streams (by the agent's id).
    inbox: broadcast::Sender<String>,
    gates: Mutex<Gates>,
    in_flight: Arc<Semaphore>,
}

impl Worker {
    /// `in_flight` bounds the attempts made at once (the slots that handed-off deliveries take
    /// theirs from).
    pub fn new(
        store: Store,
        sender: Arc<Sender>,
        config: Arc<Config>,
        wake: Arc<Notify>,
        publisher: Publisher,
        inbox: broadcast::Sender<String>,
        in_flight: Arc<Semaphore>,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            store,
            sender,
            config,
            wake,
            publisher,
            inbox,
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
    pub async fn run(
        self: Arc<Self>,
        handed: mpsc::UnboundedReceiver<Handed>,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let taking = tokio::spawn(Arc::clone(&self).take_handed(handed, shutdown.clone()));
        while !*shutdown.borrow() {
            let looked = now_ms();
            let claimed = match self.claim().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming deliveries failed; retrying");
                    0
                }
            };
            if claimed == 0 {
                let idle = self.idle_time(looked).await;
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(idle) => {}
                    changed = shutdown.changed() => if changed.is_err() { break },
                }
            }
        }
        let _ = taking.await;
        let total = u32::try_from(self.config.delivery_concurrency).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, self.in_flight.acquire_many(total)).await;
    }

    /// Starts the deliveries handed off by this node's publishes until `shutdown`. Those handed
    /// off after that are released (due again at once) rather than left for their leases to end.
    async fn take_handed(
        self: Arc<Self>,
        mut handed: mpsc::UnboundedReceiver<Handed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut batch = Vec::with_capacity(CLAIM_BATCH);
        while !*shutdown.borrow() {
            tokio::select! {
                taken = handed.recv_many(&mut batch, CLAIM_BATCH) => {
                    if taken == 0 {
                        return;
                    }
                    let work = batch.drain(..).map(Work::from).collect();
                    if let Err(error) = self.start(work).await {
                        tracing::warn!(%error, "starting handed-off deliveries failed; they are made when their leases end");
                    }
                }
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
        handed.close();
        let now = now_ms();
        while let Some(left) = handed.recv().await {
            let released = self
                .store
                .defer_delivery(&left.delivery.id, &left.token, now)
                .await;
            if let Err(error) = released {
                tracing::warn!(delivery = %left.delivery.id, %error, "releasing a handed-off delivery failed; it is made when its lease ends");
            }
        }
    }

    /// How long to sleep after a claim at `looked` found nothing to take: until the next retry
    /// falls due, at most [`POLL`] (other nodes may publish meanwhile; this node's publishes,
    /// and the end of its FIFO attempts, wake it at once).
    async fn idle_time(&self, looked: i64) -> Duration {
        match self.store.next_due_at(looked).await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                Duration::from_millis(wait).min(POLL)
            }
            _ => POLL,
        }
    }

    /// Leases what is due (as many as there are free slots) and starts each attempt.
    /// How many were claimed.
    async fn claim(self: &Arc<Self>) -> anyhow::Result<usize> {
        if self.in_flight.available_permits() == 0 {
            // Every slot is busy: wait for one rather than spin, then claim at once (going back
            // to the loop as if nothing were due slept up to a poll interval with work waiting:
            // seen as fan-out stalling behind its own backlog). A claim costs about as much for
            // one delivery as for a batch, so give a few more slots a moment to free first.
            drop(self.in_flight.acquire().await?);
            let gather = self.in_flight.acquire_many(GATHER_SLOTS);
            if let Ok(Ok(gathered)) = tokio::time::timeout(GATHER, gather).await {
                drop(gathered);
            }
        }
        // At least one: the slot freed above may have gone to a handed-off delivery meanwhile;
        // what is claimed then waits for its slot in `start`.
        let free = self.in_flight.available_permits().clamp(1, CLAIM_BATCH);
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
            return Ok(0);
        }
        let event_ids: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
        let events: HashMap<String, Arc<Event>> = self
            .store
            .events_by_id(&dedup(event_ids))
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), Arc::new(e)))
            .collect();
        let token: Arc<str> = token.into();
        let mut work = Vec::with_capacity(claimed.len());
        for delivery in claimed {
            work.push(Work {
                event: events.get(&delivery.event_id).cloned(),
                token: Arc::clone(&token),
                permit: Arc::clone(&self.in_flight).acquire_owned().await?,
                delivery,
            });
        }
        let claimed = work.len();
        self.start(work).await?;
        Ok(claimed)
    }

    /// Starts an attempt for each of `work`.
    async fn start(self: &Arc<Self>, work: Vec<Work>) -> anyhow::Result<()> {
        let deliveries: Vec<&Delivery> = work.iter().map(|w| &w.delivery).collect();
        let targets = self.targets(&deliveries).await?;
        for Work {
            delivery,
            token,
            event,
            permit,
        } in work
        {
            let worker = Arc::clone(self);
            let target = targets
                .get(&(delivery.target, delivery.webhook_id.clone()))
                .cloned();
            tokio::spawn(async move {
                if let Err(error) = worker.process(&delivery, &token, event, target).await {
                    tracing::warn!(delivery = %delivery.id, %error, "delivery attempt not recorded; it will be retried when its lease ends");
                }
                drop(permit);
                // The next FIFO delivery of this webhook may be claimed now, not at the next poll.
                if delivery.fifo {
                    worker.wake.notify_one();
                }
            });
        }
        Ok(())
    }

    /// The targets of `claimed`, keyed by kind and id; a deleted one (or an agent without an
    /// endpoint) is missing.
    async fn targets(
        &self,
        claimed: &[&Delivery],
    ) -> anyhow::Result<HashMap<(TargetKind, String), Target>> {
        let ids = |kind: TargetKind| {
            dedup(
                claimed
                    .iter()
                    .filter(|d| d.target == kind)
                    .map(|d| d.webhook_id.as_str())
                    .collect(),
            )
        };
        let hooks = self.store.outgoing_by_id(&ids(TargetKind::Webhook)).await?;
        let agents = self.store.agents_by_id(&ids(TargetKind::Agent)).await?;
        let mut targets: HashMap<_, _> = hooks
            .into_iter()
            .map(|h| {
                (
                    (TargetKind::Webhook, h.id.clone()),
                    Target::Webhook(Arc::new(h)),
                )
            })
            .collect();
        targets.extend(agents.into_iter().filter_map(|agent| {
            let endpoint = agent.settings.endpoint.clone()?;
            Some((
                (TargetKind::Agent, agent.id.clone()),
                Target::Agent(Arc::new((agent, endpoint))),
            ))
        }));
        Ok(targets)
    }

    async fn process(
        &self,
        delivery: &Delivery,
        token: &str,
        event: Option<Arc<Event>>,
        target: Option<Target>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let (Some(event), Some(target)) = (event, target) else {
            let reason = match delivery.target {
                TargetKind::Webhook => "webhook deleted",
                TargetKind::Agent => "agent deleted, or its endpoint removed",
            };
            self.store
                .cancel_delivery(&delivery.id, token, reason, now)
                .await?;
            return Ok(());
        };
        if let Some(reason) = target.closed() {
            self.store
                .cancel_delivery(&delivery.id, token, reason, now)
                .await?;
            return Ok(());
        }
        let policy = &self.config.delivery;
        let health = target.health();
        match health.circuit(policy, now) {
            CircuitState::Closed => {}
            CircuitState::Open => {
                let until = health.circuit_open_until.unwrap_or(now) + jitter_ms();
                self.store
                    .defer_delivery(&delivery.id, token, until)
                    .await?;
                return Ok(());
            }
            CircuitState::HalfOpen => {
                let trial_until = now + policy.circuit_cooldown_ms;
                if !self
                    .store
                    .claim_circuit_trial(target.kind(), target.id(), now, trial_until)
                    .await?
                {
                    self.store
                        .defer_delivery(&delivery.id, token, trial_until + jitter_ms())
                        .await?;
                    return Ok(());
                }
            }
        }
        if let Some(wait_ms) = self.rate_limited(target.id(), target.rate_limit()) {
            self.store
                .defer_delivery(&delivery.id, token, now + wait_ms)
                .await?;
            return Ok(());
        }
        let gate = self.target_gate(target.id());
        let Ok(Ok(target_permit)) =
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
        let (_, _, timeout) = target.limits();
        let longest = timeout * 1_000 + lease_ms / 4;
        if longest > lease_ms {
            self.store
                .extend_lease(&delivery.id, token, now_ms() + longest)
                .await?;
        }
        let (attempt, reply) = match &target {
            Target::Webhook(hook) => (self.sender.send(hook, &event, &delivery.id).await, None),
            Target::Agent(agent) => {
                let (agent, endpoint) = &**agent;
                let (attempt, reply) = self
                    .sender
                    .push(agent, endpoint, &event, &delivery.id)
                    .await;
                let reply = reply.map(|text| agent.reply(&event.data, text, now_ms()));
                (attempt, reply)
            }
        };
        // The target's share bounds requests in flight to it, not attempts waiting to be
        // recorded: holding it through the group commit would halve what a target can take.
        drop(target_permit);
        self.record(delivery, token, &target, &attempt, reply).await
    }

    async fn record(
        &self,
        delivery: &Delivery,
        token: &str,
        target: &Target,
        attempt: &Attempt,
        reply: Option<(AgentMessage, NewEvent)>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let policy = &self.config.delivery;
        let attempts = delivery.attempts + 1;
        let failure = attempt.failure();
        let (retry_count, retry_delay, _) = target.limits();
        let (status, next_attempt_at, health) = if attempt.succeeded() {
            (DeliveryStatus::Delivered, now, HealthChange::Success)
        } else if attempt.gone() && target.kind() == TargetKind::Webhook {
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
            match policy.retry_delay_ms(attempts, retry_count, retry_delay, attempt.retry_after_ms)
            {
                Some(delay) => (DeliveryStatus::Pending, now + delay, health),
                None => (DeliveryStatus::Failed, now, health),
            }
        };
        let log = attempt_log(delivery, attempt, now);
        metrics::counter!("hookd_delivery_attempts_total", "outcome" => outcome_label(attempt))
            .increment(1);
        metrics::histogram!("hookd_delivery_attempt_seconds")
            .record(attempt.elapsed_us as f64 / 1_000_000.0);
        let record = |reply| AttemptRecord {
            delivery_id: delivery.id.clone(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            target: target.kind(),
            webhook_id: target.id().to_string(),
            lease_token: token.to_string(),
            status,
            attempts,
            next_attempt_at,
            last_status: attempt.response_status.map(i64::from),
            last_error: failure,
            now,
            log,
            health,
            reply,
        };
        match reply {
            // The reply's `chat.completed` deliveries start once it is written; a lost lease
            // writes neither (the node that took the delivery over records its own).
            Some((message, completed)) => {
                let (publication, _) = self
                    .publisher
                    .prepare(&message.tenant, vec![completed])
                    .await?;
                let agent_id = message.agent_id.clone();
                let held = self
                    .publisher
                    .commit(publication, |publication| {
                        self.store.record_attempt(record(Some(Reply {
                            message,
                            publication,
                        })))
                    })
                    .await?;
                if held {
                    // Streams may show the reply.
                    let _ = self.inbox.send(agent_id);
                }
            }
            None => {
                self.store.record_attempt(record(None)).await?;
            }
        }
        if status == DeliveryStatus::Pending {
            tracing::debug!(delivery = %delivery.id, attempts, next_attempt_at, "attempt failed; retry scheduled");
        }
        Ok(())
    }

    /// Milliseconds to wait when the target's `rate_limit` is spent, else `None`.
    fn rate_limited(&self, target_id: &str, per_minute: Option<i64>) -> Option<i64> {
        let per_minute = per_minute?;
        let limiter = {
            let mut gates = self.gates.lock().expect("gates lock");
            let entry = gates
                .limiters
                .entry(target_id.to_string())
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

/// The log entry of one attempt, logged under its target (the outgoing webhook, or the agent).
pub fn attempt_log(delivery: &Delivery, attempt: &Attempt, now: i64) -> LogEntry {
    LogEntry {
        id: new_id(),
        webhook_type: match delivery.target {
            TargetKind::Webhook => WebhookType::Outgoing,
            TargetKind::Agent => WebhookType::Agent,
        },
        webhook_id: delivery.webhook_id.clone(),
        delivery_id: Some(delivery.id.clone()),
        event_type: Some(delivery.event_type.clone()),
        status: if attempt.succeeded() {
            "delivered"
        } else {
            "failed"
        }
        .to_string(),
        succeeded: attempt.succeeded(),
        request_payload: Some(attempt.request_payload.clone()),
        request_headers: attempt.request_headers.clone(),
        response_status: attempt.response_status.map(i64::from),
        // The receiver's answer is kept as it came for reading a reply; only its log copy is
        // made storable.
        response_body: attempt
            .response_body
            .as_deref()
            .map(|body| log_text(body.as_bytes(), MAX_LOGGED_BODY)),
        error_message: attempt.failure(),
        retry_count: delivery.attempts,
        processing_time_us: attempt.elapsed_us,
        created_at: now,
    }
}
