//! Agents and their inboxes: `/api/agents`. In paths, `{id}` is an agent's id or its name.

use std::{
    collections::BTreeMap, collections::VecDeque, convert::Infallible, future::Future,
    time::Duration,
};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{
    broadcast::{self, error::TryRecvError},
    watch,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody, OrNotFound},
    extract::{JsonBody, LargeAnswer, Path, Query, nullable},
};
use crate::{
    domain::{
        Invalid,
        agent::{
            Agent, AgentChanges, AgentMessage, AgentSettings, EndpointChanges, EndpointFormat,
            MessageKind,
        },
        delivery::Health,
        event::NewEvent,
        log::{REDACTED, is_sensitive_header},
        new_id,
        tenant::{Scope, Tenant},
        time::{iso8601, now_ms},
    },
    store::{InboxPosition, Publication, Store, StoreError},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(list_agent_messages))
        .routes(routes!(stream_agent_messages))
}

/// An agent's settings. On create `name` is required; on update only the fields sent change,
/// and `"endpoint": null` removes the endpoint.
#[derive(Deserialize, ToSchema)]
pub struct AgentIn {
    /// Unique within the tenant; incoming webhooks may name the agent by it.
    name: Option<String>,
    /// Where routed messages are pushed, besides the inbox.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<EndpointIn>)]
    endpoint: Option<Option<EndpointIn>>,
}

#[derive(Deserialize, ToSchema)]
pub struct EndpointIn {
    /// http(s) URL; private addresses are refused unless allowed by HOOKD_ALLOWED_TARGET_CIDRS.
    url: Option<String>,
    /// `openai_chat` (an OpenAI-compatible `/v1/chat/completions`) or `json` (default).
    format: Option<EndpointFormat>,
    /// The model named in `openai_chat` calls.
    model: Option<String>,
    /// Extra headers, e.g. `Authorization`; credential values show as `********` after creation.
    headers: Option<BTreeMap<String, String>>,
    /// Further attempts after a failed push (default 3, 0–20).
    retry_count: Option<i64>,
    /// Seconds before the first retry, doubling after each (default 60).
    retry_delay: Option<i64>,
    /// Seconds a push may take (default 60, 1–300).
    timeout: Option<i64>,
}

impl AgentIn {
    /// `current`: the agent being updated, whose hidden header values `********` stands for.
    fn into_changes(self, current: Option<&AgentSettings>) -> AgentChanges {
        let endpoint = self.endpoint.map(|endpoint| {
            endpoint.map(|e| EndpointChanges {
                url: e.url,
                format: e.format,
                model: e.model,
                retry_count: e.retry_count,
                retry_delay: e.retry_delay,
                timeout: e.timeout,
                headers: e.headers.map(|mut headers| {
                    let kept = current
                        .and_then(|s| s.endpoint.as_ref())
                        .map(|e| &e.headers);
                    for (name, value) in headers.iter_mut() {
                        if value == REDACTED
                            && let Some(stored) = kept.and_then(|k| k.get(name))
                        {
                            value.clone_from(stored);
                        }
                    }
                    headers
                }),
            })
        });
        AgentChanges {
            name: self.name,
            endpoint,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AgentOut {
    pub id: String,
    pub name: String,
    pub endpoint: Option<EndpointOut>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EndpointOut {
    pub url: String,
    pub format: EndpointFormat,
    pub model: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub retry_count: i64,
    pub retry_delay: i64,
    pub timeout: i64,
}

impl AgentOut {
    /// `reveal`: the answer to a create, which shows header values once.
    fn new(agent: Agent, reveal: bool) -> Self {
        let endpoint = agent.settings.endpoint.map(|e| EndpointOut {
            url: e.url.as_str().to_string(),
            format: e.format,
            model: e.model,
            retry_count: e.retry_count,
            retry_delay: e.retry_delay,
            timeout: e.timeout,
            headers: e
                .headers
                .into_iter()
                .map(
                    |(name, value)| match reveal || !is_sensitive_header(&name) {
                        true => (name, value),
                        false => (name, REDACTED.to_string()),
                    },
                )
                .collect(),
        });
        AgentOut {
            id: agent.id,
            name: agent.settings.name,
            endpoint,
            created_at: iso8601(agent.created_at),
            updated_at: iso8601(agent.updated_at),
        }
    }
}

/// An inbox entry.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
pub struct MessageOut {
    /// Also the cursor: `after`, and the SSE event id (`Last-Event-ID`).
    pub id: String,
    pub agent_id: String,
    /// `message` (received) or `reply` (the agent endpoint's answer).
    pub kind: MessageKind,
    /// The transformed payload.
    #[schema(value_type = Object)]
    pub content: Value,
    pub incoming_webhook_id: Option<String>,
    pub created_at: String,
}

impl From<AgentMessage> for MessageOut {
    fn from(m: AgentMessage) -> Self {
        MessageOut {
            id: m.id,
            agent_id: m.agent_id,
            kind: m.kind,
            content: m.content,
            incoming_webhook_id: m.incoming_webhook_id,
            created_at: iso8601(m.created_at),
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageOut>,
    /// The id of the page's last message: pass it as `after` for the next page. `null` when
    /// this page is empty (keep the cursor you had).
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct MessageQuery {
    /// Only messages after this one (a message id of this agent), in commit order: a message
    /// committed later is after it, whatever its id.
    after: Option<String>,
    /// Page size, 1–1000 (default 100).
    limit: Option<i64>,
}

/// Refuses endpoints that resolve to addresses pushes may not reach.
async fn check_endpoint(state: &AppState, settings: &AgentSettings) -> ApiResult<()> {
    match &settings.endpoint {
        Some(endpoint) => state
            .config
            .target_policy
            .check_target(&endpoint.url)
            .await
            .map_err(|e| Invalid::new("endpoint.url", e.to_string()).into()),
        None => Ok(()),
    }
}

async fn find_agent(store: &Store, tenant: &Tenant, id: &str) -> ApiResult<Agent> {
    store.get_agent(tenant, id).await.or_not_found("agent")
}

/// Where the cursor `after` (a message id, from `field`) stands in the agent's inbox; no cursor,
/// or an empty one, is the start.
async fn cursor(
    store: &Store,
    agent: &Agent,
    field: &str,
    after: Option<&str>,
) -> ApiResult<Option<InboxPosition>> {
    let Some(after) = after.filter(|after| !after.is_empty()) else {
        return Ok(None);
    };
    match store.inbox_position(&agent.id, after).await? {
        Some(position) => Ok(Some(position)),
        None => Err(Invalid::new(field, "no message of this agent has this id").into()),
    }
}

/// Create an agent. Emits `agent.created`.
#[utoipa::path(post, path = "/api/agents", tag = "agents", request_body = AgentIn,
    security(("bearer" = [])),
    responses((status = 201, body = AgentOut), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The tenant has an agent of this name"),
        (status = 422, body = ErrorBody)))]
async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<AgentIn>,
) -> ApiResult<(StatusCode, Json<AgentOut>)> {
    let tenant = caller.tenant(Scope::AgentsWrite)?;
    let settings = AgentSettings::create(input.into_changes(None))?;
    check_endpoint(&state, &settings).await?;
    let now = now_ms();
    let agent = Agent {
        id: new_id(),
        tenant: tenant.clone(),
        settings,
        health: Health::default(),
        created_at: now,
        updated_at: now,
    };
    announce(
        &state,
        tenant,
        agent.event("agent.created"),
        |announcement| {
            let most = state.config.quotas.agents;
            state.store.insert_agent(&agent, announcement, most)
        },
    )
    .await
    .map_err(name_taken)?;
    Ok((StatusCode::CREATED, Json(AgentOut::new(agent, true))))
}

/// Writes a change to an agent with the publication of `event` that announces it, in one
/// transaction (so that neither is kept without the other), and starts the event's deliveries.
async fn announce<W, F>(
    state: &AppState,
    tenant: &Tenant,
    event: NewEvent,
    write: W,
) -> Result<(), StoreError>
where
    W: FnOnce(Publication) -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    let (publication, _) = state.publisher.prepare(tenant, vec![event]).await?;
    let write = |publication| async { write(publication).await.map(|()| true) };
    state.publisher.commit(publication, write).await.map(drop)
}

fn name_taken(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(_) => {
            ApiError::Conflict("name: this tenant already has an agent of this name".into())
        }
        other => other.into(),
    }
}

/// List the caller's agents.
#[utoipa::path(get, path = "/api/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = Vec<AgentOut>), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<AgentOut>>> {
    let tenant = caller.tenant(Scope::AgentsRead)?;
    // Up to the company's quota of agents, each with its endpoint's headers.
    let _turn = LargeAnswer::take(&state, tenant).await?;
    let agents = state.store.list_agents(tenant).await?;
    Ok(Json(
        agents
            .into_iter()
            .map(|a| AgentOut::new(a, false))
            .collect(),
    ))
}

/// Get an agent by id or name.
#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = AgentOut), (status = 404, body = ErrorBody)))]
async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentOut>> {
    let tenant = caller.tenant(Scope::AgentsRead)?;
    let agent = find_agent(&state.store, tenant, &id).await?;
    Ok(Json(AgentOut::new(agent, false)))
}

/// Change an agent: only the fields sent change. Emits `agent.updated`.
#[utoipa::path(put, path = "/api/agents/{id}", tag = "agents", request_body = AgentIn,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = AgentOut), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<AgentIn>,
) -> ApiResult<Json<AgentOut>> {
    let tenant = caller.tenant(Scope::AgentsWrite)?;
    let mut agent = find_agent(&state.store, tenant, &id).await?;
    let endpoint_changed = input.endpoint.is_some();
    agent.settings = agent
        .settings
        .apply(input.into_changes(Some(&agent.settings)))?;
    if endpoint_changed {
        check_endpoint(&state, &agent.settings).await?;
    }
    agent.updated_at = now_ms();
    announce(
        &state,
        tenant,
        agent.event("agent.updated"),
        |announcement| state.store.update_agent(&agent, announcement),
    )
    .await
    .map_err(name_taken)?;
    Ok(Json(AgentOut::new(agent, false)))
}

/// Delete an agent and its inbox; emits `agent.deleted`. Incoming webhooks that name it create it afresh on their next
/// message.
#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::AgentsWrite)?;
    let agent = find_agent(&state.store, tenant, &id).await?;
    announce(
        &state,
        tenant,
        agent.event("agent.deleted"),
        |announcement| state.store.delete_agent(&agent, announcement),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// An agent's inbox in commit order, one page after the cursor `after`.
#[utoipa::path(get, path = "/api/agents/{id}/messages", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id or name"), MessageQuery),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn list_agent_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<MessageQuery>,
) -> ApiResult<Json<MessagePage>> {
    let tenant = caller.tenant(Scope::AgentsRead)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Invalid::new("limit", format!("must be between 1 and {MAX_PAGE}")).into());
    }
    let agent = find_agent(&state.store, tenant, &id).await?;
    let after = cursor(&state.store, &agent, "after", query.after.as_deref()).await?;
    let page = state.store.list_messages(&agent.id, after, limit).await?;
    let next_cursor = page.messages.last().map(|m| m.id.clone());
    Ok(Json(MessagePage {
        messages: page.messages.into_iter().map(MessageOut::from).collect(),
        next_cursor,
    }))
}

/// How often a stream also looks in the store: messages accepted by other nodes reach it so.
const STREAM_POLL: Duration = Duration::from_secs(2);

/// An agent's inbox as Server-Sent Events (`event: message`, `id`: the message id, `data`: the
/// message as JSON), in commit order: first what is stored after `Last-Event-ID` (or `after`;
/// neither: from the start), then new messages as they arrive.
#[utoipa::path(get, path = "/api/agents/{id}/messages/stream", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id or name"),
        ("after" = Option<String>, Query, description = "Resume after this message id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this message id (wins over `after`)")),
    responses((status = 200, content_type = "text/event-stream", description = "The stream"),
        (status = 404, body = ErrorBody)))]
async fn stream_agent_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<MessageQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let tenant = caller.tenant(Scope::AgentsRead)?;
    let agent = find_agent(&state.store, tenant, &id).await?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after = match last_event_id {
        Some(id) => cursor(&state.store, &agent, "Last-Event-ID", Some(id)).await?,
        None => cursor(&state.store, &agent, "after", query.after.as_deref()).await?,
    };
    // Subscribed before the first read, so nothing accepted in between is missed.
    let feed = Feed {
        live: state.ingest.subscribe(),
        store: state.store.clone(),
        agent_id: agent.id,
        after,
        pending: VecDeque::new(),
        read: true,
        poll: tokio::time::interval(STREAM_POLL),
        stopping: state.stopping.clone(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let message = feed.next().await?;
        let event = Event::default()
            .event("message")
            .id(message.id.clone())
            .json_data(MessageOut::from(message))
            .unwrap_or_else(|_| Event::default().comment("unserialisable message"));
        Some((Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One stream's position. Messages come only from reads of the store, in commit order, after
/// the position of the last one read; this node's notifications (an agent's id when its inbox
/// got a message) and a poll tick only say when to read. Notifications are sent by the writers
/// as each commit returns, so two of them may arrive in the other order than their commits:
/// taken as they came, the later one would move the cursor past the earlier one for good.
struct Feed {
    live: broadcast::Receiver<String>,
    store: Store,
    agent_id: String,
    after: Option<InboxPosition>,
    pending: VecDeque<AgentMessage>,
    /// Read the store before waiting again.
    read: bool,
    poll: tokio::time::Interval,
    stopping: watch::Receiver<bool>,
}

impl Feed {
    /// The next message; `None` ends the stream (the node is shutting down, or the store failed).
    async fn next(&mut self) -> Option<AgentMessage> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            if self.read {
                // Notifications already waiting are answered by this read too.
                while !matches!(
                    self.live.try_recv(),
                    Err(TryRecvError::Empty | TryRecvError::Closed)
                ) {}
                let page = self
                    .store
                    .list_messages(&self.agent_id, self.after, DEFAULT_PAGE)
                    .await;
                match page {
                    Ok(page) => {
                        self.read = page.messages.len() as i64 == DEFAULT_PAGE;
                        self.after = page.last.or(self.after);
                        self.pending.extend(page.messages);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "inbox stream ends: store read failed");
                        return None;
                    }
                }
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(agent_id) => self.read = agent_id == self.agent_id,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.read = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.poll.tick() => self.read = true,
                _ = self.stopping.wait_for(|stopping| *stopping) => return None,
            }
        }
    }
}
