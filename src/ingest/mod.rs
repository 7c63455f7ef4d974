//! The incoming path: what happens to a request sent to a receiving URL, in this order:
//! token → active? → IP allowlist → rate limit → body limit → source signature → dedup → parse →
//! transform → route → durable write (message, dedup record and log entry in one transaction) →
//! 202. Cheap checks come first so a flood of bad requests costs little. HTTP framing and the
//! mapping of refusals to statuses are the API's (`api::receive`); the rules are here.

pub(crate) mod body;
mod limit;
mod refusals;

pub use body::{BodyError, form_fields};
pub use limit::{Decision, RateLimiter};

use std::{
    borrow::Cow,
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::body::{Body, Bytes, HttpBody};
use http::HeaderMap;
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{
    config::Config,
    delivery::publish::Publisher,
    domain::{
        Invalid,
        agent::{Agent, AgentMessage, MessageKind},
        delivery::{Delivery, TargetKind},
        incoming::{CompiledIncoming, IncomingWebhook, Transform},
        log::{LogEntry, LoggedHeaders, MAX_LOGGED_BODY, WebhookType, log_text, redact_headers},
        net::client_ip,
        new_id,
        signature::VerifyError,
        template::Context,
        tenant::Tenant,
        time::{micros_since, now_ms},
    },
    sandbox::{Sandbox, SandboxError},
    server::BodyTimeout,
    store::{Acceptance, Addressed, Store, StoreError},
};
use refusals::RefusalSampler;

/// How many inbox notifications may wait for a slow stream reader (it reads the store then
/// anyway).
const INBOX_CHANNEL: usize = 1024;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no webhook at this URL")]
    UnknownToken,
    #[error("this webhook is inactive")]
    Inactive,
    #[error("address {0} is not in this webhook's allowed_ips")]
    IpNotAllowed(IpAddr),
    #[error("rate limit of this webhook exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("could not read the request body: {0}")]
    Unreadable(String),
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    SlowBody(Duration),
    #[error("source verification failed: {0}")]
    BadSignature(VerifyError),
    #[error(transparent)]
    BadBody(BodyError),
    /// The template or a routing rule failed on this payload; names the field and the line.
    #[error(transparent)]
    Template(Invalid),
    /// No template worker could run the template (the node is overloaded or broken).
    #[error("{0}")]
    TemplatesUnavailable(String),
    #[error(transparent)]
    Store(StoreError),
}

/// What an accepted request is answered with.
pub enum Receipt {
    /// Newly accepted (202): `{"status": "accepted", "id", "agent_id"}`.
    Accepted(Value),
    /// A delivery id seen before (200): the first answer again.
    Duplicate(Value),
    /// A provider's handshake answered (200), e.g. Slack's `url_verification` challenge; nothing
    /// is routed.
    Handshake(Value),
}

/// Which incoming webhook a request is for.
pub enum Address {
    /// The secret token of its receiving URL.
    Token(String),
    /// Its id, with the tenant of an API key the HTTP layer has checked (the spec's
    /// `POST /api/webhook/{incoming_webhook_id}` with `Authorization: Bearer <api key>`).
    Owned { tenant: Tenant, id: String },
}

/// A request to a receiving URL, as the HTTP layer hands it over.
pub struct Request {
    pub webhook: Address,
    /// The TCP peer; `X-Forwarded-For` is believed only from trusted proxies.
    pub peer: IpAddr,
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub body: Body,
}

/// A refused request, with what its log entry needs.
pub struct Rejected {
    pub refusal: Refusal,
    pub trail: Trail,
}

/// What is known about a request so far, for its log entry.
pub struct Trail {
    webhook_id: Option<String>,
    /// The header the webhook's source verification reads, hidden in the log whatever its name.
    signature_header: Option<String>,
    headers: HeaderMap,
    body: Option<Bytes>,
    started: Instant,
}

impl Trail {
    fn refuse(self, refusal: Refusal) -> Rejected {
        Rejected {
            refusal,
            trail: self,
        }
    }

    fn entry(&self, status: &str, response_status: u16, response_body: Option<String>) -> LogEntry {
        LogEntry {
            id: new_id(),
            webhook_type: WebhookType::Incoming,
            webhook_id: self.webhook_id.clone().unwrap_or_default(),
            delivery_id: None,
            event_type: None,
            status: status.to_string(),
            succeeded: status == "accepted",
            request_payload: self.body.as_ref().map(|b| log_text(b, MAX_LOGGED_BODY)),
            request_headers: LoggedHeaders::redacted(
                header_texts(&self.headers),
                self.signature_header.as_deref(),
            ),
            response_status: Some(i64::from(response_status)),
            response_body,
            error_message: None,
            retry_count: 0,
            processing_time_us: micros_since(self.started),
            created_at: now_ms(),
        }
    }
}

/// The receiving side of a node: rate-limit state, compiled templates, the refusal sampler and
/// the channel that tells inbox streams about new messages.
pub struct Ingest {
    limiter: RateLimiter,
    refusals: RefusalSampler,
    /// Compiled template and rules per webhook, with the `updated_at` they were compiled from.
    compiled: Mutex<HashMap<String, (i64, Arc<CompiledIncoming>)>>,
    /// The ids of agents whose inbox got a message; streams then read the store.
    inbox: broadcast::Sender<String>,
    publisher: Publisher,
    sandbox: Sandbox,
    /// Agents a company may have: a request routed to an agent that no longer exists makes it
    /// again, within the quota.
    most_agents: i64,
}

impl Ingest {
    pub async fn new(
        config: &Config,
        publisher: Publisher,
        sandbox: Sandbox,
    ) -> anyhow::Result<Ingest> {
        Ok(Ingest {
            publisher,
            sandbox,
            limiter: RateLimiter::new(config.redis_url.as_deref()).await?,
            refusals: RefusalSampler::default(),
            compiled: Mutex::new(HashMap::new()),
            inbox: broadcast::channel(INBOX_CHANNEL).0,
            most_agents: config.quotas.agents,
        })
    }

    /// The ids of agents whose inbox got a message on this node, as each becomes durable.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inbox.subscribe()
    }

    /// Where other parts of the node (the workers, with agent replies) announce inbox messages.
    pub fn inbox(&self) -> broadcast::Sender<String> {
        self.inbox.clone()
    }

    /// Runs a request through the pipeline.
    pub async fn receive(
        &self,
        store: &Store,
        config: &Config,
        request: Request,
    ) -> Result<Receipt, Rejected> {
        let mut trail = Trail {
            webhook_id: None,
            signature_header: None,
            headers: request.headers,
            body: None,
            started: Instant::now(),
        };
        let found = match &request.webhook {
            // Looked up by the token's hash: the comparison never touches the token itself.
            Address::Token(token) => store.addressed_by_token(token).await,
            Address::Owned { tenant, id } => store.addressed_by_id(tenant, id).await,
        };
        let addressed = match found {
            Ok(Some(addressed)) => addressed,
            Ok(None) => return Err(trail.refuse(Refusal::UnknownToken)),
            Err(e) => return Err(trail.refuse(Refusal::Store(e))),
        };
        let hook = &addressed.hook;
        trail.webhook_id = Some(hook.id.clone());
        let s = &hook.settings;
        trail.signature_header = s
            .verification
            .as_ref()
            .map(|v| v.signature_header().to_string());
        if !s.is_active {
            return Err(trail.refuse(Refusal::Inactive));
        }
        let ip = client_addr(request.peer, &trail.headers, &config.trusted_proxies);
        if !s.allowed_ips.allows(ip) {
            return Err(trail.refuse(Refusal::IpNotAllowed(ip)));
        }
        if let Decision::Deny { retry_after_secs } =
            self.limiter.check(&hook.id, s.rate_limit).await
        {
            return Err(trail.refuse(Refusal::RateLimited { retry_after_secs }));
        }
        let body = match read_bounded(request.body, config.max_body_bytes).await {
            Ok(body) => body,
            Err(refusal) => return Err(trail.refuse(refusal)),
        };
        trail.body = Some(body.clone());
        if let Err(e) = hook.verify_source(&trail.headers, &body, now_ms()) {
            return Err(trail.refuse(Refusal::BadSignature(e)));
        }
        if let Some(challenge) = slack_challenge(&body) {
            let answer = json!({ "challenge": challenge });
            let note = "Slack url_verification: answered the challenge";
            return self
                .answer_logged(store, trail, answer, note)
                .await
                .map(Receipt::Handshake);
        }
        let dedup_key = s
            .dedup_header
            .as_ref()
            .and_then(|name| trail.headers.get(name.as_str()))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(key) = &dedup_key {
            match store.find_dedup(&hook.id, key).await {
                Ok(Some(first)) => return self.duplicate(store, trail, first).await,
                Ok(None) => {}
                Err(e) => return Err(trail.refuse(Refusal::Store(e))),
            }
        }
        match self
            .route(
                store,
                &addressed,
                &trail,
                &body,
                request.query.as_deref(),
                dedup_key.as_deref(),
            )
            .await
        {
            Ok(Some(answer)) => Ok(Receipt::Accepted(answer)),
            Ok(None) => {
                // The same delivery id was accepted meanwhile by a concurrent request.
                let key = dedup_key.unwrap_or_default();
                match store.find_dedup(&hook.id, &key).await {
                    Ok(Some(first)) => self.duplicate(store, trail, first).await,
                    Ok(None) => Err(trail.refuse(Refusal::Store(StoreError::NotFound))),
                    Err(e) => Err(trail.refuse(Refusal::Store(e))),
                }
            }
            Err(refusal) => Err(trail.refuse(refusal)),
        }
    }

    /// Parse, transform, route and make durable (in the node's group commit), then publish the
    /// events. `None`: a concurrent request with the same delivery id won.
    async fn route(
        &self,
        store: &Store,
        addressed: &Addressed,
        trail: &Trail,
        body: &[u8],
        query: Option<&str>,
        dedup_key: Option<&str>,
    ) -> Result<Option<Value>, Refusal> {
        let hook = &addressed.hook;
        let content_type = trail
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let payload = body::parse(content_type, body).map_err(Refusal::BadBody)?;
        let compiled = self.compiled(hook)?;
        let context = request_context(hook, &payload, &trail.headers, query);
        let rendered = match &compiled.template {
            Some(template) => {
                let field = transform_field(hook.settings.transform.as_ref());
                let rendered = self.sandbox.render(template, &context).await;
                Some(rendered.map_err(|e| refusal(field, e))?)
            }
            None => None,
        };
        let mut agent_ref = hook.settings.fallback_agent();
        for (i, (condition, agent)) in compiled.routes.iter().enumerate() {
            let hit = self.sandbox.matches(condition, &context).await;
            if hit.map_err(|e| refusal(&format!("routes[{i}].when"), e))? {
                agent_ref = agent;
                break;
            }
        }
        drop(context);
        let content = rendered.unwrap_or(payload);
        let now = now_ms();
        let agent = match &addressed.fallback_agent {
            Some(agent) if agent_ref == hook.settings.fallback_agent() => agent.clone(),
            _ => ensure_agent(
                &self.publisher,
                store,
                &hook.tenant,
                agent_ref,
                self.most_agents,
                now,
            )
            .await
            .map_err(Refusal::Store)?,
        };
        let message = AgentMessage {
            id: new_id(),
            agent_id: agent.id.clone(),
            tenant: hook.tenant.clone(),
            incoming_webhook_id: Some(hook.id.clone()),
            kind: MessageKind::Message,
            content,
            created_at: now,
        };
        let answer = json!({"status": "accepted", "id": message.id, "agent_id": agent.id});
        let (mut publication, _) = self
            .publisher
            .prepare_at(
                &hook.tenant,
                Some(addressed.company_version),
                vec![message.received_event(&agent)],
            )
            .await
            .map_err(Refusal::Store)?;
        if agent.settings.endpoint.is_some()
            && let Some(received) = publication.events.last()
        {
            // The push to the agent is a delivery of the `chat.message.received` event (which
            // carries the message) to the agent's endpoint.
            let push = Delivery::pending(received, TargetKind::Agent, &agent.id, now);
            publication.deliveries.push(push);
        }
        let acceptance = |publication| Acceptance {
            message: message.clone(),
            dedup: dedup_key.map(|key| (key.to_string(), answer.clone())),
            log: LogEntry {
                error_message: (compiled.template.as_ref())
                    .and_then(|_| unparsed_json(&message.content)),
                ..trail.entry("accepted", 202, Some(answer.to_string()))
            },
            publication,
        };
        let accepted = self
            .publisher
            .commit(publication, |publication| {
                store.accept(acceptance(publication))
            })
            .await
            .map_err(Refusal::Store)?;
        if !accepted {
            return Ok(None);
        }
        // Nobody listening is fine: streams catch up from the store.
        let _ = self.inbox.send(message.agent_id);
        Ok(Some(answer))
    }

    /// Answers a repeated delivery id with the first answer, logged as accepted (200).
    async fn duplicate(
        &self,
        store: &Store,
        trail: Trail,
        first: Value,
    ) -> Result<Receipt, Rejected> {
        let note = "duplicate delivery id: answered with the first answer";
        self.answer_logged(store, trail, first, note)
            .await
            .map(Receipt::Duplicate)
    }

    /// Answers 200 with `answer` without routing anything, logged as accepted with `note`.
    async fn answer_logged(
        &self,
        store: &Store,
        trail: Trail,
        answer: Value,
        note: &str,
    ) -> Result<Value, Rejected> {
        let mut log = trail.entry("accepted", 200, Some(answer.to_string()));
        log.error_message = Some(note.to_string());
        match store.record_log(log).await {
            Ok(()) => Ok(answer),
            Err(e) => Err(trail.refuse(Refusal::Store(e))),
        }
    }

    /// The compiled template and rules of `hook`, compiled once per version of its settings.
    fn compiled(&self, hook: &IncomingWebhook) -> Result<Arc<CompiledIncoming>, Refusal> {
        // Poisoning needs a panic while the map is held; nothing in here panics.
        let cached = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((version, compiled)) = cached.get(&hook.id)
            && *version == hook.updated_at
        {
            return Ok(compiled.clone());
        }
        drop(cached);
        // Compiled outside the lock: other webhooks' requests need not wait for it.
        let compiled = Arc::new(hook.settings.compile().map_err(Refusal::Template)?);
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hook.id.clone(), (hook.updated_at, compiled.clone()));
        Ok(compiled)
    }

    /// Logs a refusal, unless it is one of a flood (see [`RefusalSampler`]). The write runs in
    /// the background: a refusal promises nothing durable, and its answer need not wait.
    pub fn log_refusal(&self, store: &Store, trail: Trail, status: u16, detail: String) {
        let now = now_ms();
        let Some(webhook_id) = &trail.webhook_id else {
            // No webhook to log against: counted in the metrics (by the API), and mentioned in
            // the process log at most once a second.
            if let Some(suppressed) = self.refusals.admit("", status, now) {
                tracing::info!(suppressed, "request to an unknown receiving URL");
            }
            return;
        };
        if status >= 500 {
            // The store failing is why we are here; writing to it again would only add load.
            return;
        }
        let Some(suppressed) = self.refusals.admit(webhook_id, status, now) else {
            let took = micros_since(trail.started);
            self.refusals.tally(webhook_id, took, now);
            return;
        };
        let mut entry = trail.entry("rejected", status, None);
        entry.error_message = Some(match suppressed {
            0 => detail,
            n => format!("{detail} ({n} similar refusals suppressed since the last entry)"),
        });
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_log(entry).await {
                tracing::warn!(%error, "could not log a refused incoming request");
            }
        });
    }

    /// Adds the refusals left out of the log since the last call to their webhooks' totals; run
    /// about once a second, and once more at shutdown.
    pub async fn tally_refusals(&self, store: &Store) {
        let tallies = self.refusals.drain();
        if !tallies.is_empty()
            && let Err(error) = store.count_unlogged(tallies).await
        {
            tracing::warn!(%error, "could not count refused incoming requests");
        }
    }

    /// Renders `payload` through `hook`'s template, or through `template` when given, as a
    /// request without headers or query would be; nothing is routed or stored.
    pub async fn preview(
        &self,
        hook: &IncomingWebhook,
        payload: &Value,
        template: Option<&Transform>,
    ) -> Result<Value, Refusal> {
        let context = request_context(hook, payload, &HeaderMap::new(), None);
        let compiled = match template {
            Some(transform) => Some(transform.compile().map_err(Refusal::Template)?),
            None => hook.settings.compile().map_err(Refusal::Template)?.template,
        };
        let field = transform_field(template.or(hook.settings.transform.as_ref()));
        match compiled {
            Some(compiled) => {
                let rendered = self.sandbox.render(&compiled, &context).await;
                rendered.map_err(|e| refusal(field, e))
            }
            None => Ok(payload.clone()),
        }
    }
}

/// The agent `reference` names (its id, else its name); when there is none, an agent named
/// `reference` is created, in one transaction with its `agent.created` event, as the Agents API
/// does (so the event is never lost, whatever happens to the request that caused it).
/// A company holding `most` agents already gets [`StoreError::QuotaReached`].
pub async fn ensure_agent(
    publisher: &Publisher,
    store: &Store,
    tenant: &Tenant,
    reference: &str,
    most: i64,
    now: i64,
) -> Result<Agent, StoreError> {
    match store.get_agent(tenant, reference).await {
        Err(StoreError::NotFound) => {}
        found => return found,
    }
    let agent = Agent::named(tenant.clone(), reference, now);
    let (announcement, _) = publisher
        .prepare(tenant, vec![agent.event("agent.created")])
        .await?;
    let insert = |announcement| async {
        store
            .insert_agent(&agent, announcement, most)
            .await
            .map(|()| true)
    };
    match publisher.commit(announcement, insert).await {
        Ok(_) => Ok(agent),
        // A concurrent request created it first (and announced it).
        Err(StoreError::Conflict(_)) => store.get_agent(tenant, reference).await,
        Err(error) => Err(error),
    }
}

/// The challenge of a Slack Events API `url_verification` request, which Slack expects echoed
/// before it sends any event (checked after source verification, as Slack signs it too).
fn slack_challenge(body: &[u8]) -> Option<String> {
    // Cheap test first: most bodies are not handshakes and need not be parsed twice.
    let needle = b"url_verification";
    if !body.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let payload: Value = serde_json::from_slice(body).ok()?;
    (payload.get("type")? == "url_verification")
        .then(|| payload.get("challenge")?.as_str().map(str::to_string))
        .flatten()
}

/// The client behind `peer`: its `X-Forwarded-For` headers (joined in arrival order) are
/// believed only from `trusted` proxies. The API's failed-authentication count uses it too, so
/// both see the same client.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = (!values.is_empty()).then(|| values.join(","));
    client_ip(peer, forwarded.as_deref(), trusted)
}

/// The body, up to `limit` bytes. A declared length over the limit is refused before anything is
/// read; a body arriving too slowly is cut by the connection layer's deadline
/// ([`BodyTimeout`]).
pub async fn read_bounded(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(Refusal::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            return Refusal::TooLarge(limit);
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*inner);
        while let Some(error) = cause {
            if let Some(BodyTimeout(after)) = error.downcast_ref() {
                return Refusal::SlowBody(*after);
            }
            cause = error.source();
        }
        Refusal::Unreadable(inner.to_string())
    })
}

/// Received headers whose values are text: what logs and templates see, once redacted.
fn header_texts(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
}

/// The template context of a request: the payload's keys, `data`, `headers` (lowercase names,
/// credentials and the signature redacted), `query` and `webhook`.
fn request_context<'a>(
    hook: &IncomingWebhook,
    payload: &'a Value,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Context<'a> {
    let signature_header = hook.settings.verification.as_ref();
    let headers = redact_headers(
        header_texts(headers),
        signature_header.map(|v| v.signature_header()),
    );
    let headers = headers.into_iter().map(|(k, v)| (k, Value::String(v)));
    let query = query
        .and_then(|q| form_fields(q.as_bytes()).ok())
        .unwrap_or_else(|| json!({}));
    let webhook = json!({
        "id": hook.id,
        "name": hook.settings.name,
        "agent_id": hook.settings.fallback_agent(),
    });
    Context::request(Cow::Borrowed(payload), headers.collect(), query, webhook)
}

/// A note for the log when a string template's output looks like JSON but does not parse: it is
/// kept as a string (as documented), which is rarely what its author meant. (Only a string
/// template renders to a string; an object template's leaves sit inside an object.)
fn unparsed_json(rendered: &Value) -> Option<String> {
    let text = rendered.as_str()?;
    if !matches!(text.trim_start().chars().next(), Some('{' | '[')) {
        return None;
    }
    let error = serde_json::from_str::<Value>(text).err()?;
    Some(format!(
        "transform_template output is not valid JSON ({error}); the message holds it as a string"
    ))
}

/// The field holding a webhook's template.
fn transform_field(transform: Option<&Transform>) -> &'static str {
    match transform {
        Some(Transform::Object(_)) => "payload_transformation",
        _ => "transform_template",
    }
}

/// A render failure, named after the field holding the template (or rule).
fn refusal(field: &str, error: SandboxError) -> Refusal {
    match error {
        SandboxError::Template(e) => Refusal::Template(Invalid::new(field, e.to_string())),
        SandboxError::Unavailable(why) => Refusal::TemplatesUnavailable(why),
    }
}
