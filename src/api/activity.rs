//! What webhooks of both directions did: logs and statistics.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    deliveries::{DEFAULT_LIMIT, page},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{LargeAnswer, Path, Query},
};
use crate::{
    domain::{
        delivery::CircuitState,
        log::{LogEntry, Totals, WebhookType, Window, millis, percentile},
        quota,
        tenant::{Scope, Tenant},
        time::{iso8601, now_ms},
    },
    store::{LogQuery, StoreError},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhook_logs))
        .routes(routes!(get_webhook_statistics))
        .routes(routes!(get_tenant_statistics))
}

#[derive(Deserialize, IntoParams)]
pub struct LogParams {
    /// `outgoing`, `incoming` or `agent` (pushes to an agent's endpoint, by the agent's id); when
    /// absent, whichever of the caller's webhooks or agents has this id.
    webhook_type: Option<WebhookType>,
    /// Default 100, at most 1000.
    limit: Option<i64>,
    offset: Option<i64>,
    /// Only entries with this status (`delivered`, `failed`, `accepted`, `rejected`).
    status: Option<String>,
    event_type: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct LogOut {
    pub id: String,
    pub webhook_type: WebhookType,
    pub webhook_id: String,
    pub delivery_id: Option<String>,
    pub event_type: Option<String>,
    pub status: String,
    /// The body sent or received: JSON when it parses, else text.
    #[schema(value_type = Object)]
    pub request_payload: Value,
    /// With credentials shown as `********`.
    pub request_headers: BTreeMap<String, String>,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub error_message: Option<String>,
    pub retry_count: i64,
    /// Milliseconds, with fractions (to the microsecond): `0.412`.
    pub processing_time_ms: f64,
    pub created_at: String,
}

impl From<LogEntry> for LogOut {
    fn from(entry: LogEntry) -> Self {
        let request_payload = entry.request_payload.map_or(Value::Null, |text| {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        });
        LogOut {
            id: entry.id,
            webhook_type: entry.webhook_type,
            webhook_id: entry.webhook_id,
            delivery_id: entry.delivery_id,
            event_type: entry.event_type,
            status: entry.status,
            request_payload,
            // Only a row hookd did not write could fail to read: shown empty, not as an error.
            request_headers: entry.request_headers.to_map().unwrap_or_default(),
            response_status: entry.response_status,
            response_body: entry.response_body,
            error_message: entry.error_message,
            retry_count: entry.retry_count,
            processing_time_ms: millis(entry.processing_time_us),
            created_at: iso8601(entry.created_at),
        }
    }
}

/// The caller's webhook with this id, and its direction. Another tenant's id is a 404.
async fn owned(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
    kind: Option<WebhookType>,
) -> ApiResult<Owned> {
    let not_found = |result: Result<Owned, StoreError>| match result {
        Err(StoreError::NotFound) => Ok(None),
        other => other.map(Some),
    };
    if matches!(kind, None | Some(WebhookType::Outgoing)) {
        let found = state
            .store
            .get_outgoing(tenant, id)
            .await
            .map(|h| Owned::Outgoing(Box::new(h)));
        if let Some(owned) = not_found(found)? {
            return Ok(owned);
        }
    }
    if matches!(kind, None | Some(WebhookType::Incoming)) {
        let found = state
            .store
            .get_incoming(tenant, id)
            .await
            .map(|_| Owned::Incoming);
        if let Some(owned) = not_found(found)? {
            return Ok(owned);
        }
    }
    if matches!(kind, None | Some(WebhookType::Agent)) {
        let found = state
            .store
            .get_agent(tenant, id)
            .await
            .map(|agent| Owned::Agent(Box::new(agent)));
        // Only by id: a name would let the same path mean two things.
        if let Some(owned) =
            not_found(found)?.filter(|o| matches!(o, Owned::Agent(a) if a.id == id))
        {
            return Ok(owned);
        }
    }
    Err(ApiError::NotFound("webhook"))
}

enum Owned {
    Outgoing(Box<crate::domain::outgoing::OutgoingWebhook>),
    Incoming,
    /// The pushes to an agent's endpoint.
    Agent(Box<crate::domain::agent::Agent>),
}

/// A webhook's log, newest first: every delivery attempt (outgoing) or received request
/// (incoming).
#[utoipa::path(get, path = "/api/webhooks/{id}/logs", tag = "logs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id"), LogParams),
    responses((status = 200, body = Vec<LogOut>), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn list_webhook_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Json<Vec<LogOut>>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    owned(&state, tenant, &id, params.webhook_type).await?;
    let (limit, offset) = page(params.limit, params.offset)?;
    // A page of the default size is at most a few MB: only larger ones wait for a turn.
    let _turn = if limit > DEFAULT_LIMIT {
        Some(LargeAnswer::take(&state, tenant).await?)
    } else {
        None
    };
    let query = LogQuery {
        status: params.status,
        event_type: params.event_type,
        limit,
        offset,
    };
    let entries = state.store.list_logs(&id, &query).await?;
    Ok(Json(entries.into_iter().map(LogOut::from).collect()))
}

#[derive(Deserialize, IntoParams)]
pub struct StatsParams {
    /// `outgoing`, `incoming` or `agent` (pushes to an agent's endpoint, by the agent's id); when
    /// absent, whichever of the caller's webhooks or agents has this id.
    webhook_type: Option<WebhookType>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct StatisticsOut {
    pub webhook_id: String,
    pub webhook_type: WebhookType,
    pub total_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    /// Percent of requests that succeeded (0–100); 0 before the first.
    pub success_rate: f64,
    /// Milliseconds, with fractions (to the microsecond), like every duration here.
    pub average_processing_time_ms: f64,
    /// Percentiles over the most recent 1000 entries.
    pub p50_processing_time_ms: Option<f64>,
    pub p95_processing_time_ms: Option<f64>,
    pub p99_processing_time_ms: Option<f64>,
    /// Deliveries waiting (outgoing webhooks and agents).
    pub pending: i64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    /// Of the target (outgoing webhooks and agents).
    pub circuit_state: Option<CircuitState>,
    /// The same figures over the last hour only, from the log.
    pub last_hour: WindowStatisticsOut,
}

/// A webhook's figures over a recent window, computed from its log entries in that window.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WindowStatisticsOut {
    pub total_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    /// Percent (0–100); 0 when there was no request.
    pub success_rate: f64,
    /// Milliseconds, with fractions.
    pub p95_processing_time_ms: Option<f64>,
}

impl From<Window> for WindowStatisticsOut {
    fn from(window: Window) -> Self {
        WindowStatisticsOut {
            total_requests: window.total,
            successful_requests: window.succeeded,
            failed_requests: window.total - window.succeeded,
            success_rate: percent(window.succeeded, window.total),
            p95_processing_time_ms: window.p95_us.map(millis),
        }
    }
}

const HOUR_MS: i64 = 60 * 60 * 1000;

/// `part` of `whole` in percent, to two decimals; 0 when `whole` is.
fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 10_000.0).round() / 100.0
}

fn rate_and_average(totals: &Totals) -> (f64, f64) {
    if totals.total == 0 {
        return (0.0, 0.0);
    }
    let rate = percent(totals.succeeded, totals.total);
    // Rounded to the microsecond, the resolution times are kept in.
    let average = millis((totals.total_us as f64 / totals.total as f64).round() as i64);
    (rate, average)
}

/// A webhook's statistics, from running totals (no scan of its log).
#[utoipa::path(get, path = "/api/webhooks/{id}/statistics", tag = "logs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id"), StatsParams),
    responses((status = 200, body = StatisticsOut), (status = 404, body = ErrorBody)))]
async fn get_webhook_statistics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<StatsParams>,
) -> ApiResult<Json<StatisticsOut>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let owned = owned(&state, tenant, &id, params.webhook_type).await?;
    let totals = state.store.webhook_totals(&id).await?;
    let latencies = state.store.recent_latencies(&id).await?;
    let last_hour = state.store.window_since(&id, now_ms() - HOUR_MS).await?;
    let (success_rate, average) = rate_and_average(&totals);
    let (webhook_type, pending, circuit_state) = match owned {
        Owned::Outgoing(hook) => (
            WebhookType::Outgoing,
            state.store.pending_count(&id).await?,
            Some(hook.health.circuit(&state.config.delivery, now_ms())),
        ),
        Owned::Incoming => (WebhookType::Incoming, 0, None),
        Owned::Agent(agent) => (
            WebhookType::Agent,
            state.store.pending_count(&id).await?,
            Some(agent.health.circuit(&state.config.delivery, now_ms())),
        ),
    };
    Ok(Json(StatisticsOut {
        webhook_id: id,
        webhook_type,
        total_requests: totals.total,
        successful_requests: totals.succeeded,
        failed_requests: totals.failed,
        success_rate,
        average_processing_time_ms: average,
        p50_processing_time_ms: percentile(&latencies, 0.50).map(millis),
        p95_processing_time_ms: percentile(&latencies, 0.95).map(millis),
        p99_processing_time_ms: percentile(&latencies, 0.99).map(millis),
        pending,
        last_success_at: totals.last_success_at.map(iso8601),
        last_failure_at: totals.last_failure_at.map(iso8601),
        circuit_state,
        last_hour: WindowStatisticsOut::from(last_hour),
    }))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TenantStatisticsOut {
    pub outgoing_webhooks: i64,
    pub incoming_webhooks: i64,
    pub total_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    pub success_rate: f64,
    /// Milliseconds, with fractions.
    pub average_processing_time_ms: f64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
}

/// The caller's totals over all its webhooks, both directions.
#[utoipa::path(get, path = "/api/webhooks/stats", tag = "logs", security(("bearer" = [])),
    responses((status = 200, body = TenantStatisticsOut)))]
async fn get_tenant_statistics(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<TenantStatisticsOut>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let totals = state.store.tenant_totals(tenant).await?;
    let (success_rate, average) = rate_and_average(&totals);
    Ok(Json(TenantStatisticsOut {
        // Counted, not read: a company's webhooks may take ~100 MB (see `LargeAnswer`).
        outgoing_webhooks: state
            .store
            .count_owned(quota::Owned::OutgoingWebhooks, tenant)
            .await?,
        incoming_webhooks: state
            .store
            .count_owned(quota::Owned::IncomingWebhooks, tenant)
            .await?,
        total_requests: totals.total,
        successful_requests: totals.succeeded,
        failed_requests: totals.failed,
        success_rate,
        average_processing_time_ms: average,
        last_success_at: totals.last_success_at.map(iso8601),
        last_failure_at: totals.last_failure_at.map(iso8601),
    }))
}
