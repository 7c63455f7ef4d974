//! A webhook's deliveries: the synchronous test, the list, retry of one and replay of many.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody, OrNotFound},
    extract::{JsonBody, OptionalJsonBody, Path, Query},
};
use crate::{
    delivery::worker::attempt_log,
    domain::{
        Invalid,
        delivery::{Delivery, DeliveryStatus, TargetKind},
        event::{Event, NewEvent},
        log::millis,
        new_id,
        tenant::Scope,
        time::{iso8601, now_ms},
    },
    store::{DeliveryPage, StoreError},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test_outgoing_webhook))
        .routes(routes!(test_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
        .routes(routes!(replay_failed_deliveries))
}

#[derive(Deserialize, ToSchema, Default)]
pub struct TestIn {
    /// Sent as the event's `data` (default: a short message).
    #[schema(value_type = Option<Object>)]
    test_payload: Option<Value>,
    /// Default `webhook.test`.
    event_type: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TestOut {
    pub success: bool,
    pub status_code: Option<u16>,
    pub response_body: Option<String>,
    /// Milliseconds, with fractions (to the microsecond).
    pub processing_time_ms: f64,
    pub error: Option<String>,
    /// The id sent in `webhook-id` / `X-Webhook-Delivery`.
    pub delivery_id: String,
}

/// Send one test event to this webhook only, now, and report what its target answered. The
/// attempt is logged like any other; it is not retried.
#[utoipa::path(post, path = "/api/webhooks/outgoing/{id}/test", tag = "outgoing", request_body(content = TestIn, description = "optional"),
    security(("bearer" = [])), params(("id" = String, Path, description = "Outgoing webhook id")),
    responses((status = 200, body = TestOut), (status = 404, body = ErrorBody)))]
async fn test_outgoing_webhook(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    body: OptionalJsonBody<TestIn>,
) -> ApiResult<Json<TestOut>> {
    send_test(state, caller, id, body).await
}

/// The same as `POST /api/webhooks/outgoing/{id}/test` (the spec's other spelling).
#[utoipa::path(post, path = "/api/webhooks/test/{id}", tag = "outgoing", request_body(content = TestIn, description = "optional"),
    security(("bearer" = [])), params(("id" = String, Path, description = "Outgoing webhook id")),
    responses((status = 200, body = TestOut), (status = 404, body = ErrorBody)))]
async fn test_webhook(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    body: OptionalJsonBody<TestIn>,
) -> ApiResult<Json<TestOut>> {
    send_test(state, caller, id, body).await
}

async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(input): OptionalJsonBody<TestIn>,
) -> ApiResult<Json<TestOut>> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let hook = state
        .store
        .get_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    let test = NewEvent {
        event_type: input.event_type.unwrap_or_else(|| "webhook.test".into()),
        data: input
            .test_payload
            .unwrap_or_else(|| json!({"message": "Test webhook from hookd"})),
        agent_id: hook.settings.agent_id.clone(),
        ..Default::default()
    };
    // A test carries what a publish of its type would: a type that exists, data its schema takes.
    let test = state
        .catalogue
        .check_events(&tenant.company_id, vec![test], |_| String::new())
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the check returned no event")))?;
    let now = now_ms();
    let event = Event::new(new_id(), tenant.clone(), test, now);
    let delivery = Delivery::pending(&event, TargetKind::Webhook, &hook.id, now);
    let attempt = state.sender.send(&hook, &event, &delivery.id).await;
    state
        .store
        .record_log(attempt_log(&delivery, &attempt, now_ms()))
        .await?;
    Ok(Json(TestOut {
        success: attempt.succeeded(),
        status_code: attempt.response_status,
        response_body: attempt.response_body.clone(),
        processing_time_ms: millis(attempt.elapsed_us),
        error: attempt.failure(),
        delivery_id: delivery.id,
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// `pending`, `delivered`, `failed` or `cancelled`.
    status: Option<String>,
    /// Default 100, at most 1000.
    limit: Option<i64>,
    /// At most 10000; further back, page with `before`.
    offset: Option<i64>,
    /// Only deliveries older than this one (the last id of the previous page).
    before: Option<String>,
}

/// The deepest `offset` of a deliveries listing: a page costs reading `offset + limit` rows per
/// status, so past this, paging goes by `before`, which costs what the page holds.
const MAX_OFFSET: i64 = 10_000;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeliveryOut {
    pub id: String,
    pub event_id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<String>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Delivery> for DeliveryOut {
    fn from(d: Delivery) -> Self {
        DeliveryOut {
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| iso8601(d.next_attempt_at)),
            id: d.id,
            event_id: d.event_id,
            webhook_id: d.webhook_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: iso8601(d.created_at),
            updated_at: iso8601(d.updated_at),
        }
    }
}

/// A listing's page size when the request names none.
pub const DEFAULT_LIMIT: i64 = 100;

/// Page bounds shared by listings: `limit` 1–1000 (default 100), `offset` ≥ 0.
pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), Invalid> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let offset = offset.unwrap_or(0);
    if !(1..=1_000).contains(&limit) {
        return Err(Invalid::new("limit", "must be between 1 and 1000"));
    }
    if offset < 0 {
        return Err(Invalid::new("offset", "must not be negative"));
    }
    Ok((limit, offset))
}

/// A webhook's deliveries, newest first. Page with `before` (the last id of the previous page)
/// or, up to 10,000 deep, `offset`.
#[utoipa::path(get, path = "/api/webhooks/outgoing/{id}/deliveries", tag = "outgoing",
    security(("bearer" = [])), params(("id" = String, Path, description = "Outgoing webhook id"), DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryOut>), (status = 404, body = ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> ApiResult<Json<Vec<DeliveryOut>>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let hook = state
        .store
        .get_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    let status = query
        .status
        .map(|s| {
            DeliveryStatus::parse(&s).ok_or_else(|| {
                Invalid::new("status", "must be pending, delivered, failed or cancelled")
            })
        })
        .transpose()?;
    let (limit, offset) = page(query.limit, query.offset)?;
    if offset > MAX_OFFSET {
        let detail = format!(
            "must be at most {MAX_OFFSET}; to page further, pass the last id of a page as `before`"
        );
        return Err(Invalid::new("offset", detail).into());
    }
    let page = DeliveryPage {
        status,
        before: query.before.as_deref(),
        limit,
        offset,
    };
    let deliveries = match state.store.list_deliveries(&hook.id, &page).await {
        Err(StoreError::NotFound) => {
            let detail = "is not the id of one of this webhook's deliveries";
            return Err(Invalid::new("before", detail).into());
        }
        listed => listed?,
    };
    Ok(Json(
        deliveries.into_iter().map(DeliveryOut::from).collect(),
    ))
}

/// Queue one delivery again (failed, cancelled or even delivered), with a fresh retry budget.
#[utoipa::path(post, path = "/api/webhooks/outgoing/{id}/deliveries/{delivery_id}/retry", tag = "outgoing",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Outgoing webhook id"), ("delivery_id" = String, Path, description = "Delivery id")),
    responses((status = 202), (status = 404, body = ErrorBody)))]
async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let hook = state
        .store
        .get_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    state
        .store
        .retry_delivery(&hook.id, &delivery_id, now_ms())
        .await
        .or_not_found("delivery (or it is still pending)")?;
    state.publisher.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "queued", "delivery_id": delivery_id})),
    ))
}

#[derive(Deserialize, ToSchema, Default)]
pub struct ReplayIn {
    /// Replay failed deliveries created at or after this time (ISO 8601).
    since: Option<String>,
}

/// Queue again every failed delivery of this webhook since a time.
#[utoipa::path(post, path = "/api/webhooks/outgoing/{id}/replay", tag = "outgoing", request_body = ReplayIn,
    security(("bearer" = [])), params(("id" = String, Path, description = "Outgoing webhook id")),
    responses((status = 202), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replay_failed_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<ReplayIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let hook = state
        .store
        .get_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    let since = input
        .since
        .ok_or_else(|| Invalid::new("since", "is required (ISO 8601 time)"))?;
    let since = chrono::DateTime::parse_from_rfc3339(&since)
        .map_err(|e| Invalid::new("since", format!("is not an ISO 8601 time: {e}")))?
        .timestamp_millis();
    let replayed = state.store.replay_failed(&hook.id, since, now_ms()).await?;
    state.publisher.wake();
    Ok((StatusCode::ACCEPTED, Json(json!({"replayed": replayed}))))
}
