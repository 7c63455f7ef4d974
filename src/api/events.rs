//! Publishing events: `POST /api/events` and `POST /api/events/batch`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{JsonBody, ident, parse_json},
};
use crate::domain::{Invalid, check_text, event::NewEvent, tenant::Scope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_event))
        .routes(routes!(publish_events))
}

/// Most events in one batch.
pub const MAX_BATCH: usize = 1_000;

#[derive(Deserialize, ToSchema)]
pub struct EventIn {
    /// A type from `/api/webhooks/event-types`.
    event_type: Option<String>,
    /// The event's payload, delivered as `data`.
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Value,
    /// The agent concerned (string or integer).
    #[serde(default, deserialize_with = "ident")]
    #[schema(value_type = Option<String>)]
    agent_id: Option<Option<String>>,
    agent_name: Option<String>,
    /// Delivered as `metadata` beside `data`.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

impl EventIn {
    fn into_event(self, field: &str) -> Result<NewEvent, Invalid> {
        let event = NewEvent {
            event_type: self
                .event_type
                .ok_or_else(|| Invalid::new(format!("{field}event_type"), "is required"))?,
            data: self.data,
            agent_id: self.agent_id.flatten(),
            agent_name: self.agent_name,
            metadata: self.metadata,
        };
        event.validate(field)?;
        Ok(event)
    }
}

#[derive(Deserialize, ToSchema)]
pub struct EventBatchIn {
    /// Up to 1000 events, stored together: all or none.
    events: Vec<EventIn>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PublishedOut {
    pub event_id: String,
    /// How many webhooks will receive it.
    pub deliveries: usize,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BatchPublishedOut {
    pub events: Vec<PublishedOut>,
    /// Deliveries over all events.
    pub deliveries: usize,
}

/// The event a `POST /api/events` body holds, refused as the endpoint refuses it: for the other
/// ways in that take the same body (a NATS source's messages).
pub fn parse_event(body: &[u8]) -> ApiResult<NewEvent> {
    Ok(parse_json::<EventIn>(body)?.into_event("")?)
}

/// The `Idempotency-Key` header: a repeated publish with the same key answers the first result.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| Invalid::new("Idempotency-Key", "must be visible ASCII"))?;
    check_text("Idempotency-Key", key, 1, 255)?;
    Ok(Some(key.to_string()))
}

/// Publish an event. It is stored with one delivery per matching webhook before the answer, so
/// a 202 means it will be delivered even if hookd stops the next instant.
#[utoipa::path(post, path = "/api/events", tag = "events", request_body = EventIn,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried publish return the first answer")),
    responses((status = 202, body = PublishedOut), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn publish_event(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(input): JsonBody<EventIn>,
) -> ApiResult<(StatusCode, Json<PublishedOut>)> {
    let publisher = caller.publishing(Scope::EventsPublish)?;
    let key = idempotency_key(&headers)?;
    let events = vec![input.into_event("")?];
    let published = state
        .publisher
        .publish_request(&state.catalogue, publisher, events, key.as_deref(), |_| {
            String::new()
        })
        .await?;
    let first = published
        .events
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("publish returned no event")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishedOut {
            event_id: first.event_id,
            deliveries: first.deliveries,
        }),
    ))
}

/// Publish up to 1000 events at once, atomically. A batch whose events' types have more
/// subscribed webhooks in all than one request may make deliveries (10,000 by default) is a 422.
#[utoipa::path(post, path = "/api/events/batch", tag = "events", request_body = EventBatchIn,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried publish return the first answer")),
    responses((status = 202, body = BatchPublishedOut), (status = 422, body = ErrorBody)))]
async fn publish_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(input): JsonBody<EventBatchIn>,
) -> ApiResult<(StatusCode, Json<BatchPublishedOut>)> {
    let publisher = caller.publishing(Scope::EventsPublish)?;
    let key = idempotency_key(&headers)?;
    if input.events.is_empty() || input.events.len() > MAX_BATCH {
        return Err(Invalid::new("events", format!("must hold 1 to {MAX_BATCH} events")).into());
    }
    let events = input
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_event(&format!("events[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let published = state
        .publisher
        .publish_request(&state.catalogue, publisher, events, key.as_deref(), |i| {
            format!("events[{i}].")
        })
        .await?;
    let events: Vec<PublishedOut> = published
        .events
        .into_iter()
        .map(|e| PublishedOut {
            event_id: e.event_id,
            deliveries: e.deliveries,
        })
        .collect();
    let deliveries = events.iter().map(|e| e.deliveries).sum();
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchPublishedOut { events, deliveries }),
    ))
}
